//! Podman for the image tests: the image built once per test run by scripts/image.sh (no
//! registry; reused across runs while its inputs are unchanged), containers and pods that are
//! removed when dropped, and names that cannot clash with a concurrent or earlier run
//! (`etcdtools-test-<pid>-<n>-<label>`; those of dead test processes are removed first).
//! Podman always runs with the repo's image/containers.conf. A missing podman fails the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::etcd_bin_dir;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The etcd versions the test image bundles (what the manifests name).
pub const BUNDLED: &str = "3.4.23 3.5.1";
/// The repo name test builds are tagged under (never the one `make image-local` uses).
pub const TEST_IMAGE_REPO: &str = "localhost/etcdtools-test/etcd";
const NAME_PREFIX: &str = "etcdtools-test-";

pub fn containers_conf() -> PathBuf {
    Path::new(REPO).join("image/containers.conf")
}

/// `podman ARGS` with our containers.conf.
pub fn podman(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", containers_conf()).args(args);
    c
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`; a podman that is not installed fails here, naming the fix.
pub fn output(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (podman, buildah, runc, catatonit: ./scripts/setup.sh installs them)")
    })
}

pub fn ok(cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = output(cmd);
    assert!(out.status.success(), "{shown} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A name no other run uses: `etcdtools-test-<pid>-<n>-<label>`.
pub fn unique_name(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{NAME_PREFIX}{}-{n}-{label}", std::process::id())
}

/// Our static binaries: those scripts/test.sh built (`$STATIC_BIN_DIR`), else the usual
/// place. Never scripts/build-static.sh from inside a test (cargo holds the target dir); the
/// scripts name a missing binary.
pub fn static_bin_dir() -> PathBuf {
    std::env::var_os("STATIC_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target/x86_64-unknown-linux-musl/release"))
}

/// scripts/image.sh with the test image's settings.
pub fn image_sh() -> Output {
    let mut cmd = Command::new(Path::new(REPO).join("scripts/image.sh"));
    cmd.env("CONTAINERS_CONF", containers_conf())
        .env("STATIC_BIN_DIR", static_bin_dir())
        .env("IMAGE_REPO", TEST_IMAGE_REPO)
        .env("BUNDLED_ETCD_VERSIONS", BUNDLED)
        .env("ETCD_BIN_DIR", etcd_bin_dir());
    output(cmd)
}

/// The image scripts/image.sh built (once per test process).
pub struct Image {
    pub tag: String,
    pub id: String,
    pub size: u64,
}

pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        remove_leftovers();
        let started = Instant::now();
        let out = image_sh();
        assert!(out.status.success(), "scripts/image.sh: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} ")))
                .unwrap_or_else(|| panic!("no {k} line from scripts/image.sh: {stdout}"))
                .to_string()
        };
        let size = field("size");
        let image = Image {
            tag: field("image"),
            id: field("id"),
            size: size.split_whitespace().next().unwrap().parse().unwrap(),
        };
        eprintln!(
            "image {} ({size}), ready in {:.1} s",
            image.tag,
            started.elapsed().as_secs_f64()
        );
        image
    })
}

/// Whether `name` is one of ours left by an earlier test process: its pid is gone, or is
/// this process's own (a fresh CI container hands out the same pids every run, and nothing
/// of this process exists yet when this runs, before the image is ready).
fn is_leftover(name: &str, own_pid: u32, running: &dyn Fn(u32) -> bool) -> bool {
    name.strip_prefix(NAME_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse().ok())
        .is_some_and(|pid| pid == own_pid || !running(pid))
}

/// Containers and pods of earlier test processes (killed mid-test, or of an earlier CI run).
fn remove_leftovers() {
    let running = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let dead = |name: &str| is_leftover(name, std::process::id(), &running);
    let names = |args: &[&str]| {
        let out = output(podman(args));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let filter = format!("name=^{NAME_PREFIX}");
    for pod in names(&["pod", "ps", "--filter", &filter, "--format", "{{.Name}}"]) {
        if dead(&pod) {
            let _ = output(podman(&["pod", "rm", "-f", &pod]));
        }
    }
    for ctr in names(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]) {
        if dead(&ctr) {
            let _ = output(podman(&["rm", "-f", &ctr]));
        }
    }
}

/// A container started with `podman run -d`; removed (with its logs) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `podman run -d --name <unique> ARGS` (ARGS: options, the image, the command).
    pub fn run(label: &str, args: &[String]) -> Container {
        let name = unique_name(label);
        let mut cmd = podman(&["run", "-d", "--name", &name]);
        cmd.args(args);
        // Made first: a run that created the container and then failed still removes it.
        let container = Container { name };
        ok(cmd);
        container
    }

    /// `Some(exit code)` once the container has exited.
    pub fn exit_code(&self) -> Option<i32> {
        let out = ok(podman(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.name,
        ]));
        let (status, code) = out.trim().split_once(' ').unwrap();
        (status == "exited" || status == "stopped").then(|| code.parse().unwrap())
    }

    /// Waits up to `timeout` for the container to exit; its exit code.
    pub fn wait(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs after {timeout:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// stdout and stderr of the container, as `podman logs` keeps them.
    pub fn logs(&self) -> String {
        let out = output(podman(&["logs", &self.name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// SIGTERM (etcd then stops cleanly), SIGKILL after 20 s; the exit code.
    pub fn stop(&self) -> i32 {
        ok(podman(&["stop", "-t", "20", &self.name]));
        self.wait(Duration::from_secs(5))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(podman(&["rm", "-f", "-t", "5", &self.name]));
    }
}

/// A pod from `podman kube play FILE`; `podman kube down FILE` when dropped.
pub struct KubePod {
    pub file: PathBuf,
    up: bool,
}

impl KubePod {
    pub fn play(file: &Path) -> KubePod {
        // Made first: a play that created the pod and then failed still takes it down.
        let pod = KubePod {
            file: file.to_path_buf(),
            up: true,
        };
        ok(podman(&["kube", "play", &file.display().to_string()]));
        pod
    }

    pub fn down(&mut self) {
        if self.up {
            ok(podman(&["kube", "down", &self.file.display().to_string()]));
            // Only now: a down that failed is tried again when dropped.
            self.up = false;
        }
    }
}

impl Drop for KubePod {
    fn drop(&mut self) {
        if self.up {
            let _ = output(podman(&["kube", "down", &self.file.display().to_string()]));
        }
    }
}

/// `podman image mount` of an image; unmounted when dropped (also when the test fails).
pub struct MountedImage {
    tag: String,
    pub path: PathBuf,
}

impl MountedImage {
    pub fn mount(tag: &str) -> MountedImage {
        let path = ok(podman(&["image", "mount", tag]));
        MountedImage {
            tag: tag.to_string(),
            path: PathBuf::from(path.trim()),
        }
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        let _ = output(podman(&["image", "unmount", &self.tag]));
    }
}

/// `text` with each `(from, to)` replaced; each `from` must occur (a manifest that changed
/// under the test fails it instead of being tested half-filled).
pub fn fill(text: &str, replacements: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replacements {
        assert!(out.contains(from), "{from:?} is not in the manifest");
        out = out.replace(from, to);
    }
    out
}

#[test]
fn leftovers_are_of_gone_processes_or_of_an_earlier_process_with_this_pid() {
    let running = |pid: u32| pid == 7 || pid == 42;
    assert!(is_leftover("etcdtools-test-9-0-boot-3.5.1", 42, &running));
    assert!(is_leftover("etcdtools-test-42-3-etcd", 42, &running));
    assert!(!is_leftover("etcdtools-test-7-3-etcd", 42, &running));
    assert!(!is_leftover("etcdtools-test-x-3-etcd", 42, &running));
    assert!(!is_leftover("someone-else-9", 42, &running));
}
