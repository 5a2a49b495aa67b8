//! The image's filesystem, built by `scripts/rootfs.sh` (the same layout as Dockerfile.busybox)
//! and exercised with `chroot ROOT /bin/sh -c ...`: busybox's `sh`, our static binaries, real
//! etcd binaries inside the chroot. Needs root for chroot: where chroot is not permitted the
//! tests say so and skip, except under CI (`CI` set), where that is a failure.
//!
//! Our binaries come from `$STATIC_BIN_DIR` (scripts/test.sh sets it) or
//! target/x86_64-unknown-linux-musl/release (`scripts/build-static.sh` fills it); etcd's from
//! `$ETCD_BIN_DIR` or .cache/etcd-bin.
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{free_ports, EtcdProcess, EtcdSpec};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Our four binaries, as image/layout.txt installs them.
const OURS: [&str; 4] = [
    "migrate",
    "rollback2",
    "etcd-inspect",
    "etcd-version-monitor",
];

fn static_bin_dir() -> PathBuf {
    std::env::var_os("STATIC_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target/x86_64-unknown-linux-musl/release"))
}

/// The rootfs, built once per test run; `None` (after saying why) where chroot is not
/// permitted. Stale rootfs dirs of earlier runs whose process is gone are removed first.
fn rootfs() -> Option<&'static Path> {
    static ROOTFS: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
            if let Ok(entries) = std::fs::read_dir(base) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = name.strip_prefix("rootfs-") {
                        if !Path::new(&format!("/proc/{pid}")).exists() {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
            }
            let dir = base.join(format!("rootfs-{}", std::process::id()));
            let out = Command::new(Path::new(REPO).join("scripts/rootfs.sh"))
                .arg(&dir)
                .env("STATIC_BIN_DIR", static_bin_dir())
                .env("ETCD_BIN_DIR", etcd_bin_dir())
                // The bin dir holds six versions (scripts/fetch-etcd.sh); this image layout test
                // bundles the three it checks.
                .env("BUNDLED_ETCD_VERSIONS", format!("{V3_4} {V3_5_0} {V3_5_1}"))
                .output()
                .expect("run scripts/rootfs.sh");
            assert!(
                out.status.success(),
                "scripts/rootfs.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let probe = Command::new("chroot").arg(&dir).arg("/bin/true").output();
            match probe {
                Ok(o) if o.status.success() => Some(dir),
                other => {
                    let why = match other {
                        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                        Err(e) => e.to_string(),
                    };
                    let _ = std::fs::remove_dir_all(&dir);
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "chroot is not permitted here ({why}), and CI must run the rootfs tests (run them as root)"
                    );
                    eprintln!("SKIPPED: chroot is not permitted here ({why}); run as root to test the rootfs");
                    None
                }
            }
        })
        .as_deref()
}

/// Fails the test, naming each of our binaries (or scripts) the rootfs lacks.
fn require(root: &Path, names: &[&str]) {
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !root.join("usr/local/bin").join(n).is_file())
        .map(|n| format!("/usr/local/bin/{n}"))
        .collect();
    assert!(
        missing.is_empty(),
        "the rootfs lacks {} (not built yet, or not in {}: src/bin/ and scripts/ must provide them; \
         scripts/rootfs.sh printed what it left out)",
        missing.join(", "),
        static_bin_dir().display()
    );
}

/// `chroot ROOT /bin/sh -c SCRIPT` with exactly `env` as the environment (plus PATH), as a
/// container would start it.
fn chroot_sh(root: &Path, script: &str, env: &[(&str, String)]) -> Output {
    Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run chroot")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh dir inside the rootfs: (path inside the chroot, path outside).
fn dir_in(root: &Path, label: &str) -> (String, PathBuf) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let inside = format!("/var/etcd/{label}-{n}");
    let outside = root.join(inside.trim_start_matches('/'));
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).unwrap();
    (inside, outside)
}

/// etcd `version` running inside the chroot on `data_dir` (a path inside it), serving.
fn start_etcd_in(root: &Path, version: &str, data_dir: &str, name: &str) -> EtcdProcess {
    let ports = free_ports(2).unwrap();
    let spec = EtcdSpec::single(
        Path::new(&format!("/usr/local/bin/etcd-{version}")),
        name,
        Path::new(data_dir),
        ports[0],
        ports[1],
    );
    let wrapper = ["chroot".to_string(), root.display().to_string()];
    let mut etcd = EtcdProcess::start_wrapped(&spec, &wrapper).unwrap();
    etcd.wait_ready(&HttpClient::plain(), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("etcd {version} inside the chroot did not get ready: {e}"));
    etcd
}

fn stop(etcd: EtcdProcess) {
    stop_cleanly(etcd, "in the chroot");
}

// Base64 for the JSON gateway (bytes fields).
fn b64(data: &[u8]) -> String {
    etcdtools::base64::encode(data)
}

fn unb64(s: &str) -> Vec<u8> {
    etcdtools::base64::decode(s).expect("base64 from etcd")
}

fn put(client: &HttpClient, url: &str, key: &str, value: &str) {
    client
        .post_json(
            &format!("{url}/v3/kv/put"),
            &serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())}),
            Duration::from_secs(5),
        )
        .unwrap();
}

/// Every live key and value, read over the gateway (a linearizable range over everything).
fn all_keys(client: &HttpClient, url: &str) -> BTreeMap<String, String> {
    let resp = client
        .post_json(
            &format!("{url}/v3/kv/range"),
            &serde_json::json!({"key": "AA==", "range_end": "AA=="}),
            Duration::from_secs(5),
        )
        .unwrap();
    resp.get("kvs")
        .and_then(|k| k.as_array())
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    let field = |f: &str| {
                        String::from_utf8(unb64(kv.get(f).and_then(|v| v.as_str()).unwrap_or("")))
                            .unwrap()
                    };
                    (field("key"), field("value"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Makes a data dir with etcd 3.5.1 inside the chroot: nested keys, overwrites, a delete.
/// Returns the keys that must survive.
fn make_3_5_1_data(root: &Path, data_dir: &str, name: &str) -> BTreeMap<String, String> {
    let etcd = start_etcd_in(root, V3_5_1, data_dir, name);
    let client = HttpClient::plain();
    let url = etcd.client_url().to_string();
    for i in 0..40 {
        put(
            &client,
            &url,
            &format!("/registry/pods/ns{}/pod-{i}", i % 3),
            &format!("v{i}"),
        );
    }
    put(&client, &url, "/registry/pods/ns0/pod-0", "overwritten");
    put(&client, &url, "/registry/gone", "soon deleted");
    client
        .post_json(
            &format!("{url}/v3/kv/deleterange"),
            &serde_json::json!({"key": b64(b"/registry/gone")}),
            Duration::from_secs(5),
        )
        .unwrap();
    let keys = all_keys(&client, &url);
    assert_eq!(keys.len(), 40);
    assert_eq!(keys["/registry/pods/ns0/pod-0"], "overwritten");
    stop(etcd);
    keys
}

/// `migrate-if-needed.sh` as the GCE static-pod manifest runs it (reference section 3.0): its
/// env vars, with loopback peer URLs on free ports; `--port`/`--peer-port` pick free ports for
/// the etcd migrate starts instead of the fixed 18629/2380 (the manifest sets no
/// LISTEN_CLIENT_URLS either). Returns the script line and the environment.
fn migrate_if_needed(data_dir: &str, target: &str) -> (String, Vec<(&'static str, String)>) {
    let ports = free_ports(2).unwrap();
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let script = format!(
        "/usr/local/bin/migrate-if-needed.sh --port {} --peer-port {}",
        ports[0], ports[1]
    );
    let env = vec![
        ("TARGET_STORAGE", "etcd3".into()),
        ("TARGET_VERSION", target.into()),
        ("DATA_DIRECTORY", data_dir.into()),
        ("DO_NOT_MOVE_BINARIES", "true".into()),
        ("ETCD_HOSTNAME", "test".into()),
        ("INITIAL_CLUSTER", format!("etcd-test={peer}")),
        ("LISTEN_PEER_URLS", peer.clone()),
        ("INITIAL_ADVERTISE_PEER_URLS", peer),
        ("ETCD_CREDS", String::new()),
        ("ETCD_SNAPSHOT_COUNT", "10000".into()),
        ("ETCDCTL_API", "3".into()),
    ];
    (script, env)
}

/// The layout holds without any of our binaries: busybox, etcd binaries (incl. Debian's
/// dynamic 3.4.23 with its libraries), modes, and etcd/etcdctl = the newest version.
#[test]
fn rootfs_has_the_image_layout_and_etcd_runs_inside() {
    let Some(root) = rootfs() else { return };
    let layout = std::fs::read_to_string(Path::new(REPO).join("image/layout.txt")).unwrap();
    let mut checked = 0;
    for line in layout
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (kind, dest, mode) = (cols[0], cols[2], u32::from_str_radix(cols[3], 8).unwrap());
        let dests: Vec<String> = match kind {
            "bin" | "script" => continue, // checked where they are required
            "etcd" => [V3_4, V3_5_0, V3_5_1]
                .iter()
                .map(|v| dest.replace("@V@", v))
                .collect(),
            "etcd35" => [V3_5_0, V3_5_1]
                .iter()
                .map(|v| dest.replace("@V@", v))
                .collect(),
            _ => vec![dest.to_string()],
        };
        for d in dests {
            let meta = std::fs::metadata(root.join(d.trim_start_matches('/')))
                .unwrap_or_else(|e| panic!("{d} missing from the rootfs: {e}"));
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode of {d}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} layout entries checked");
    assert!(
        !root.join("usr/local/bin/etcdutl-3.4.23").exists(),
        "3.4 has no etcdutl"
    );
    let bin = root.join("usr/local/bin");
    assert_eq!(
        std::fs::read(bin.join("etcd")).unwrap(),
        std::fs::read(bin.join("etcd-3.5.1")).unwrap(),
        "etcd must be a copy of the newest, 3.5.1"
    );
    // Inside: busybox sh (a symlink to /bin/busybox), and every etcd binary starts.
    let out = chroot_sh(
        root,
        "set -e; [ \"$(readlink /bin/sh)\" = /bin/busybox ]; \
         for v in 3.4.23 3.5.0 3.5.1; do etcd-$v --version | head -n 1; \
         etcdctl-$v version | head -n 1; done; etcd --version | head -n 1",
        &[("ETCDCTL_API", "3".into())],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for v in [V3_4, V3_5_0, V3_5_1] {
        assert!(t.contains(&format!("etcd Version: {v}")), "{t}");
        assert!(t.contains(&format!("etcdctl version: {v}")), "{t}");
    }
}

/// Each of our four binaries is static and answers --help and --version inside the rootfs.
#[test]
fn our_binaries_are_static_and_start_inside_the_rootfs() {
    let Some(root) = rootfs() else { return };
    let mut names: Vec<&str> = OURS.to_vec();
    names.push("migrate-if-needed.sh");
    require(root, &names);
    for name in OURS {
        let path = root.join("usr/local/bin").join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o555, "mode of {name}");
        let file = Command::new("file").arg("-b").arg(&path).output().unwrap();
        let desc = String::from_utf8_lossy(&file.stdout).into_owned();
        assert!(
            desc.contains("statically linked") || desc.contains("static-pie linked"),
            "{name} is not static: {desc}"
        );
        assert!(
            !desc.contains("interpreter"),
            "{name} needs an interpreter: {desc}"
        );
        let out = chroot_sh(root, &format!("/usr/local/bin/{name} --help"), &[]);
        let t = text(&out);
        assert!(out.status.success(), "{name} --help inside the rootfs: {t}");
        assert!(t.contains(name), "{name} --help does not name itself: {t}");
        let out = chroot_sh(root, &format!("/usr/local/bin/{name} --version"), &[]);
        let t = text(&out);
        assert!(
            out.status.success(),
            "{name} --version inside the rootfs: {t}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("{name} {}", env!("CARGO_PKG_VERSION"))),
            "{name} --version: {t}"
        );
    }
    let mode = std::fs::metadata(root.join("usr/local/bin/migrate-if-needed.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o555);
}

#[test]
fn migrate_if_needed_writes_version_txt_into_an_empty_data_dir() {
    let Some(root) = rootfs() else { return };
    require(root, &["migrate", "migrate-if-needed.sh"]);
    let (inside, outside) = dir_in(root, "empty");
    let data = format!("{inside}/data");
    let (script, env) = migrate_if_needed(&data, V3_5_1);
    let out = chroot_sh(root, &script, &env);
    assert!(out.status.success(), "{}", text(&out));
    let version = std::fs::read_to_string(outside.join("data/version.txt"))
        .unwrap_or_else(|e| panic!("no version.txt ({e}): {}", text(&out)));
    assert_eq!(version.trim(), "3.5.1/etcd3");
}

/// A real 3.5.1 data dir is downgraded to 3.4.23 by migrate-if-needed.sh under busybox sh,
/// inside the chroot, and etcd-3.4.23 (Debian's, dynamic) then serves every key.
#[test]
fn migrate_if_needed_downgrades_real_3_5_1_data_inside_the_chroot() {
    let Some(root) = rootfs() else { return };
    require(root, &["migrate", "migrate-if-needed.sh"]);
    let (inside, outside) = dir_in(root, "downgrade");
    let data = format!("{inside}/data");
    let keys = make_3_5_1_data(root, &data, "etcd-test");
    // What an earlier run of migrate-if-needed.sh for 3.5.1 left.
    std::fs::write(outside.join("data/version.txt"), "3.5.1/etcd3").unwrap();

    let (script, mut env) = migrate_if_needed(&data, V3_4);
    // The data was made on other free ports: the restored member gets new IDs, accepted.
    env.push(("ALLOW_MEMBER_ID_CHANGE", "true".into()));
    let out = chroot_sh(root, &script, &env);
    assert!(out.status.success(), "{}", text(&out));
    let version = std::fs::read_to_string(outside.join("data/version.txt")).unwrap();
    assert_eq!(version.trim(), "3.4.23/etcd3", "{}", text(&out));

    let etcd = start_etcd_in(root, V3_4, &data, "etcd-test");
    let served = all_keys(&HttpClient::plain(), etcd.client_url());
    stop(etcd);
    assert_eq!(
        served, keys,
        "etcd 3.4.23 must serve exactly the keys 3.5.1 had"
    );
}

#[test]
fn monitor_once_scrapes_an_etcd_inside_the_chroot() {
    let Some(root) = rootfs() else { return };
    require(root, &["etcd-version-monitor"]);
    let (inside, _outside) = dir_in(root, "monitor");
    let etcd = start_etcd_in(root, V3_5_1, &format!("{inside}/data"), "mon");
    let url = etcd.client_url().to_string();
    let out = chroot_sh(
        root,
        &format!(
            "/usr/local/bin/etcd-version-monitor --once \
             --etcd-version-scrape-uri={url}/version --etcd-metrics-scrape-uri={url}/metrics"
        ),
        &[],
    );
    stop(etcd);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("etcd_version_info{binary_version=\"3.5.1\"} 1"),
        "{t}"
    );
    assert!(stdout.contains("etcd_server_has_leader 1"), "{t}");
    assert!(stdout.contains("etcd_grpc_requests_total{"), "{t}");
}

/// etcd-inspect check finds a real data dir sound, inside the chroot, and changes nothing.
#[test]
fn inspect_check_on_real_data_inside_the_chroot() {
    let Some(root) = rootfs() else { return };
    require(root, &["etcd-inspect"]);
    let (inside, outside) = dir_in(root, "inspect");
    let data = format!("{inside}/data");
    make_3_5_1_data(root, &data, "in");
    let before = file_tree(&outside);
    let out = chroot_sh(
        root,
        &format!("/usr/local/bin/etcd-inspect check {data}"),
        &[],
    );
    assert!(out.status.success(), "etcd-inspect check: {}", text(&out));
    // And it does fail inside the chroot: a flipped byte in the db is found.
    let db = outside.join("data/member/snap/db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert_eq!(file_tree(&outside), before, "check changed files");
    // Inside the checksummed part of the second meta page (page header 16 bytes, then the
    // meta fields up to the checksum at 16 + 56): a bad meta is always reported.
    bytes[4096 + 16 + 24] ^= 0xff;
    std::fs::write(&db, &bytes).unwrap();
    let out = chroot_sh(
        root,
        &format!("/usr/local/bin/etcd-inspect check {data}"),
        &[],
    );
    // Exit 3: the data is damaged (src/error.rs).
    assert_eq!(
        out.status.code(),
        Some(3),
        "etcd-inspect check on a corrupted db: {}",
        text(&out)
    );
}

/// rollback2 --dry-run on a real data dir, inside the chroot: it reports the keys it would
/// write and changes nothing.
#[test]
fn rollback2_dry_run_on_real_data_inside_the_chroot() {
    let Some(root) = rootfs() else { return };
    require(root, &["rollback2"]);
    let (inside, outside) = dir_in(root, "rollback");
    let data = format!("{inside}/data");
    let keys = make_3_5_1_data(root, &data, "rb");
    let before = file_tree(&outside);
    let out = chroot_sh(
        root,
        &format!("/usr/local/bin/rollback2 --data-dir {data} --dry-run"),
        &[],
    );
    let t = text(&out);
    assert!(out.status.success(), "rollback2 --dry-run: {t}");
    assert!(
        t.contains(&format!("keys: {} ", keys.len())),
        "the dry run should report the {} keys it would write: {t}",
        keys.len()
    );
    assert_eq!(file_tree(&outside), before, "the dry run changed files");
}

#[test]
fn base64_round_trips() {
    for s in ["", "a", "ab", "abc", "abcd", "/registry/pods/ns0/pod-0"] {
        assert_eq!(unb64(&b64(s.as_bytes())), s.as_bytes());
    }
    assert_eq!(b64(b"\0"), "AA==");
    assert_eq!(b64(b"foo"), "Zm9v");
}

/// etcd started through chroot is etcd itself (chroot execs it): it serves, and stopping it
/// leaves no process behind.
#[test]
fn etcd_inside_the_chroot_serves_and_stops() {
    let Some(root) = rootfs() else { return };
    let (inside, outside) = dir_in(root, "plain");
    let data = format!("{inside}/data");
    let etcd = start_etcd_in(root, V3_4, &data, "plain");
    let pid = etcd.pid().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.ends_with("usr/local/bin/etcd-3.4.23"),
        "{}",
        exe.display()
    );
    put(&HttpClient::plain(), etcd.client_url(), "/k", "v");
    assert_eq!(all_keys(&HttpClient::plain(), etcd.client_url())["/k"], "v");
    stop(etcd);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd still running"
    );
    assert!(outside.join("data/member/snap/db").exists());
}
