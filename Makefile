# Thin wrappers over scripts/, with the original image's verbs: make build, make test,
# make push ARCH=...  (see docs/image.md).
SHELL := /bin/bash
ARCH ?= amd64
ALL_ARCH := amd64 arm arm64 ppc64le s390x
BUNDLED_ETCD_VERSIONS ?= 3.4.37 3.5.26 3.6.5
LATEST_ETCD_VERSION ?= $(lastword $(BUNDLED_ETCD_VERSIONS))
REVISION ?= 0
IMAGE_TAG ?= $(LATEST_ETCD_VERSION)-$(REVISION)
# No default registry: pushing somewhere by accident is worse than a clear error.
REGISTRY ?=
ROOTFS ?= target/rootfs
# A dir with etcd-<v>/etcdctl-<v>/etcdutl-<v> to use instead of downloading the releases
# (needed for arm: etcd publishes no linux-arm binaries).
ETCD_BIN_CONTEXT ?=
DOCKER_ARGS = -f Dockerfile.busybox --platform linux/$(ARCH) \
	--build-arg BUNDLED_ETCD_VERSIONS="$(BUNDLED_ETCD_VERSIONS)" \
	$(if $(ETCD_BIN_CONTEXT),--build-context etcd-bin=$(ETCD_BIN_CONTEXT))

.PHONY: all build rootfs test test-all-arch demo image image-local push check-docker check-registry

all: build test

## build: our static binaries for ARCH, and (amd64) the image's filesystem in $(ROOTFS)
build:
	./scripts/build-static.sh $(ARCH)
	@if [ "$(ARCH)" = amd64 ]; then ./scripts/rootfs.sh $(ROOTFS); fi

## rootfs: the image's filesystem in $(ROOTFS), testable with chroot
rootfs:
	./scripts/rootfs.sh $(ROOTFS)

## test: every test (sets the machine up first), as CI runs it
test:
	./scripts/test.sh

## test-all-arch: build every arch that can be built here and run the qemu tests on each
test-all-arch:
	@. scripts/arch.sh; ok=""; for a in $(ALL_ARCH); do \
	    [ $$a = amd64 ] && continue; \
	    arch_info $$a; \
	    if [ -n "$$ARCH_PROBLEM" ]; then echo "test-all-arch: skipping $$a: $$ARCH_PROBLEM" >&2; continue; fi; \
	    ./scripts/build-static.sh $$a >/dev/null || exit 1; ok="$$ok $$a"; \
	done; \
	CROSS_ARCHES="$$ok" cargo test --locked --test cross_arch

## demo: the main job end to end on real etcd
demo:
	./scripts/demo.sh

check-docker:
	@command -v docker >/dev/null || { echo "make: needs Docker (with buildx); no docker command here" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make: needs a running Docker engine; 'docker info' failed (only the client is here?). Without one: make rootfs, and the chroot tests in tests/rootfs.rs" >&2; exit 1; }

check-registry:
	@[ -n "$(REGISTRY)" ] || { echo "make push: set REGISTRY=<registry/path> (there is no default)" >&2; exit 1; }

## image: build the image for ARCH with Docker (Dockerfile.busybox)
image: check-docker
	docker buildx build $(DOCKER_ARGS) --load -t etcd-$(ARCH):$(IMAGE_TAG) .

## image-local: the amd64 image with podman and no registry (scripts/image.sh prints its id and size)
image-local:
	./scripts/image.sh

## push: build and push $(REGISTRY)/etcd-$(ARCH):$(IMAGE_TAG) (and etcd:$(IMAGE_TAG) for amd64)
push: check-registry check-docker
	docker buildx build $(DOCKER_ARGS) \
	    -t $(REGISTRY)/etcd-$(ARCH):$(IMAGE_TAG) \
	    $(if $(filter amd64,$(ARCH)),-t $(REGISTRY)/etcd:$(IMAGE_TAG)) \
	    --push .
