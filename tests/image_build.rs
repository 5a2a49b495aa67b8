//! The parts of Dockerfile.busybox that can run without a Docker engine:
//! image/download-etcd.sh against a local mirror of etcd's release layout (real etcd binaries
//! in a real tarball, a real SHA256SUMS), and the Dockerfile's agreement with
//! image/layout.txt (the file both it and scripts/rootfs.sh install from).
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sh(script: &str) -> Output {
    Command::new("bash").arg("-c").arg(script).output().unwrap()
}

/// A mirror laid out like etcd's GitHub releases: v<V>/etcd-v<V>-linux-amd64.tar.gz and
/// v<V>/SHA256SUMS, made from the real 3.5.1 binaries.
fn release_mirror(dir: &Path) {
    let v = V3_5_1;
    let name = format!("etcd-v{v}-linux-amd64");
    let stage = dir.join("stage").join(&name);
    std::fs::create_dir_all(&stage).unwrap();
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        std::fs::copy(etcd_bin_dir().join(format!("{tool}-{v}")), stage.join(tool)).unwrap();
    }
    std::fs::write(stage.join("README.md"), "etcd release\n").unwrap();
    let rel = dir.join(format!("v{v}"));
    std::fs::create_dir_all(&rel).unwrap();
    let out = sh(&format!(
        "set -e; cd {stage_parent} && tar -cf - {name} | gzip -1 > {rel}/{name}.tar.gz && \
         cd {rel} && sha256sum {name}.tar.gz > SHA256SUMS && \
         echo '0000  etcd-v{v}-linux-arm64.tar.gz' >> SHA256SUMS",
        stage_parent = dir.join("stage").display(),
        rel = rel.display()
    ));
    assert!(out.status.success(), "{}", text(&out));
}

fn download(mirror: &Path, arch: &str, out_dir: &Path, versions: &str) -> Output {
    Command::new(Path::new(REPO).join("image/download-etcd.sh"))
        .arg(arch)
        .arg(out_dir)
        .args(versions.split_whitespace())
        .env("ETCD_RELEASE_URL", format!("file://{}", mirror.display()))
        .output()
        .unwrap()
}

#[test]
fn download_etcd_checks_sha256_and_installs_versioned_binaries() {
    let temp = TempDir::new("download-etcd");
    let mirror = temp.path().join("mirror");
    release_mirror(&mirror);

    let out_dir = temp.path().join("bin");
    let out = download(&mirror, "amd64", &out_dir, V3_5_1);
    assert!(out.status.success(), "{}", text(&out));
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        let p = out_dir.join(format!("{tool}-{V3_5_1}"));
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(etcd_bin_dir().join(format!("{tool}-{V3_5_1}"))).unwrap(),
            "{}",
            p.display()
        );
    }
    let version = Command::new(out_dir.join("etcd-3.5.1"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("etcd Version: 3.5.1"));

    // A corrupted tarball is refused before anything is extracted.
    let tarball = mirror.join("v3.5.1/etcd-v3.5.1-linux-amd64.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&tarball, &bytes).unwrap();
    let bad_dir = temp.path().join("bad");
    let out = download(&mirror, "amd64", &bad_dir, V3_5_1);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not match sha256"),
        "{}",
        text(&out)
    );
    assert!(!bad_dir.join("etcd-3.5.1").exists());

    // A version the mirror does not have fails, naming it.
    let out = download(&mirror, "amd64", &bad_dir, "3.9.9");
    assert!(!out.status.success(), "{}", text(&out));

    // arm: no release binaries upstream; the message says what to do instead.
    let out = download(&mirror, "arm", &bad_dir, V3_5_1);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--build-context etcd-bin="),
        "{}",
        text(&out)
    );
}

#[test]
fn dockerfile_installs_from_the_layout_file() {
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile.busybox")).unwrap();
    let layout = std::fs::read_to_string(Path::new(REPO).join("image/layout.txt")).unwrap();
    // The one install step, shared with scripts/rootfs.sh.
    assert!(dockerfile.contains("/src/image/install-layout.sh /rootfs"));
    let rootfs_sh = std::fs::read_to_string(Path::new(REPO).join("scripts/rootfs.sh")).unwrap();
    assert!(rootfs_sh.contains("image/install-layout.sh"));
    // Our binaries are copied from the build stage by reading the layout, not by a list.
    assert!(dockerfile.contains("awk '$1 == \"bin\" { print $2 }' image/layout.txt"));
    // Every script the layout names is copied into the assemble stage.
    for line in layout.lines().filter(|l| l.starts_with("script")) {
        let src = line.split_whitespace().nth(1).unwrap();
        assert!(
            dockerfile.contains(&format!("COPY {src} /src/{src}")),
            "Dockerfile.busybox does not copy {src}"
        );
    }
    assert!(dockerfile.contains("EXPOSE 2379 2380 9101"));
    assert!(dockerfile.contains("ENV ETCD_UNSUPPORTED_ARCH=arm"));
    // Every arch of the original has a final stage.
    for arch in ["amd64", "arm", "arm64", "ppc64le", "s390x"] {
        assert!(
            dockerfile.contains(&format!("AS final-{arch}")),
            "no final stage for {arch}"
        );
    }
}

/// install-layout.sh refuses a missing etcd binary and a malformed layout line, and with
/// ALLOW_MISSING=1 reports (not hides) each of our missing binaries.
#[test]
fn install_layout_fails_clearly() {
    let temp = TempDir::new("install-layout");
    let empty = temp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = |allow: &str, etcd_dir: &Path| {
        Command::new(Path::new(REPO).join("image/install-layout.sh"))
            .arg(temp.path().join("root"))
            .arg(&empty)
            .arg(REPO)
            .arg(etcd_dir)
            .arg("3.4.23 3.5.1")
            .env("ALLOW_MISSING", allow)
            .output()
            .unwrap()
    };
    let out = run("0", &etcd_bin_dir());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/migrate does not exist"),
        "{}",
        text(&out)
    );
    let out = run("1", &etcd_bin_dir());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("INCOMPLETE: missing: migrate rollback2 etcd-inspect etcd-version-monitor"),
        "{}",
        text(&out)
    );
    let root = temp.path().join("root/usr/local/bin");
    assert!(root.join("etcdutl-3.5.1").exists());
    assert!(!root.join("etcdutl-3.4.23").exists());
    let out = run("1", &empty);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("etcd-3.4.23 does not exist"),
        "{}",
        text(&out)
    );
}

/// scripts/rootfs.sh never touches a dir it did not make, and refuses a dynamically linked
/// binary of ours (the image has no libc for it).
#[test]
fn rootfs_script_refuses_foreign_dirs_and_dynamic_binaries_of_ours() {
    let temp = TempDir::new("rootfs-refusals");
    let foreign = temp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious"), "keep me").unwrap();
    let rootfs = |out: &Path, bins: &Path| {
        Command::new(Path::new(REPO).join("scripts/rootfs.sh"))
            .arg(out)
            .env("STATIC_BIN_DIR", bins)
            .env("ETCD_BIN_DIR", etcd_bin_dir())
            .output()
            .unwrap()
    };
    let bins = temp.path().join("bins");
    std::fs::create_dir_all(&bins).unwrap();
    let out = rootfs(&foreign, &bins);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("refusing"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(foreign.join("precious")).unwrap(),
        "keep me"
    );

    // A dynamically linked "migrate" (the host's own `true`) is refused.
    std::fs::copy("/bin/true", bins.join("migrate")).unwrap();
    let out = rootfs(&temp.path().join("root"), &bins);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("/usr/local/bin/migrate is ours and must be static"),
        "{}",
        text(&out)
    );
}
