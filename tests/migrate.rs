//! migrate on real etcd 3.4.23 / 3.5.0 / 3.5.1, always through scripts/migrate-if-needed.sh
//! (run by busybox ash when present) with the env a static-pod manifest sets.
//!
//! The etcd started by migrate and by these tests gets `--heartbeat-interval=10
//! --election-timeout=100` (through ETCD_CREDS, as a manifest passes extra flags) so a single
//! member elects itself in ~0.2 s instead of ~1 s; scripts/bench-migrate.sh uses defaults.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use etcdtools::base64 as b64;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{free_ports, run_tool, EtcdSpec};

const FAST: &[&str] = &["--heartbeat-interval=10", "--election-timeout=100"];

/// One member's world: a temp root with a bin dir of symlinks to the real binaries, the
/// wrapper script beside a `migrate` symlink, the data dir and the member's ports.
struct Site {
    tmp: TempDir,
    bin: PathBuf,
    script: PathBuf,
    data: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Site {
    fn new(label: &str) -> Site {
        let tmp = TempDir::new(&format!("migrate-{label}"));
        let bin = link_etcd_bin_dir(tmp.path());
        let script = install_migrate_script(tmp.path());
        let ports = free_ports(2).unwrap();
        let data = tmp.path().join("var/etcd/data");
        Site {
            bin,
            script,
            data,
            client_port: ports[0],
            peer_port: ports[1],
            tmp,
        }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn name(&self) -> &'static str {
        "etcd-h"
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// What the GCE etcd.manifest sets (plus ETCD_CREDS for fast elections).
    fn manifest_env(&self, target: &str) -> Vec<(String, String)> {
        let (version, storage) = target.split_once('/').unwrap();
        let peer = self.peer_url();
        [
            ("TARGET_STORAGE", storage.to_string()),
            ("TARGET_VERSION", version.to_string()),
            ("DO_NOT_MOVE_BINARIES", "true".into()),
            ("DATA_DIRECTORY", self.data.display().to_string()),
            ("INITIAL_CLUSTER", format!("{}={peer}", self.name())),
            ("LISTEN_PEER_URLS", peer.clone()),
            ("INITIAL_ADVERTISE_PEER_URLS", peer),
            ("ETCD_CREDS", FAST.join(" ")),
            ("ETCD_SNAPSHOT_COUNT", "10000".into()),
            ("ETCD_HOSTNAME", "h".into()),
            ("ETCDCTL_API", "3".into()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The script with the manifest env (overridden by `env`) and `--bin-dir`/ports + `args`.
    fn command(&self, target: &str, env: &[(&str, &str)], args: &[&str]) -> Command {
        let mut cmd = if Path::new("/usr/bin/busybox").exists() {
            let mut c = Command::new("/usr/bin/busybox");
            c.arg("sh");
            c
        } else {
            Command::new("/bin/sh")
        };
        cmd.arg(&self.script);
        cmd.args([
            "--bin-dir",
            &self.bin.display().to_string(),
            "--port",
            &self.client_port.to_string(),
            "--peer-port",
            &self.peer_port.to_string(),
        ]);
        cmd.args(args);
        cmd.env_clear();
        for (k, v) in self.manifest_env(target) {
            cmd.env(k, v);
        }
        // Tests here run copies of a template member on other peer ports, so new member IDs
        // are expected (the identity refusal itself: tests/migrate_preflight.rs).
        cmd.env("ALLOW_MEMBER_ID_CHANGE", "true");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn migrate_with(&self, target: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let out = self.command(target, env, args).output().unwrap();
        eprintln!(
            "--- migrate -> {target} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn migrate(&self, target: &str) -> Output {
        self.migrate_with(target, &[], &[])
    }

    fn spec(&self, version: &str) -> EtcdSpec {
        let mut spec = EtcdSpec::single(
            &etcd_bin(version),
            self.name(),
            &self.data,
            self.client_port,
            self.peer_port,
        );
        spec.extra_args = FAST.iter().map(|s| s.to_string()).collect();
        spec
    }

    fn start(&self, version: &str) -> TestEtcd {
        TestEtcd::start_spec(version, self.spec(version))
    }

    /// Real data written by etcd `version`: `n` keys (one with binary bytes), version.txt.
    fn seed(&self, version: &str, n: usize, extra_args: &[&str]) -> Kv {
        let mut spec = self.spec(version);
        spec.extra_args
            .extend(extra_args.iter().map(|s| s.to_string()));
        let etcd = TestEtcd::start_spec(version, spec);
        let minor: u64 = version.split('.').nth(1).unwrap().parse().unwrap();
        let prefix = etcdtools::etcd::client::gateway_prefix(3, minor);
        let mut kv = Kv::new();
        for i in 0..n {
            let k = format!("/registry/k{i:04}").into_bytes();
            let v = format!("value-{i}-{version}").into_bytes();
            gateway_put(&etcd.client_url, prefix, &k, &v);
            kv.insert(k, v);
        }
        let (k, v) = (b"/registry/bin\x00\xff".to_vec(), vec![0u8, 1, 2, 255, 254]);
        gateway_put(&etcd.client_url, prefix, &k, &v);
        kv.insert(k, v);
        drop(etcd);
        fs::write(self.data.join("version.txt"), format!("{version}/etcd3")).unwrap();
        kv
    }

    fn version_txt(&self) -> String {
        fs::read_to_string(self.data.join("version.txt")).unwrap_or_default()
    }
}

fn http() -> HttpClient {
    HttpClient::plain()
}

fn put(url: &str, key: &[u8], value: &[u8]) {
    gateway_put(url, "/v3", key, value)
}

fn delete(url: &str, key: &[u8]) {
    let r = http()
        .post_json(
            &format!("{url}/v3/kv/deleterange"),
            &serde_json::json!({"key": b64::encode(key)}),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(r["deleted"], "1", "{r}");
}

fn all_keys(url: &str) -> Kv {
    gateway_all_keys(url)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every path under `root` with its mode and content (files) or link target. Nothing is left
/// out: the lock is a flock on the data dir itself, so a refused run leaves no file at all.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, root: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        let m = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                (
                    0,
                    fs::read_link(p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ),
            );
        } else if m.is_dir() {
            out.insert(rel, (m.permissions().mode(), vec![]));
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), root, out);
            }
        } else {
            out.insert(rel, (m.permissions().mode(), fs::read(p).unwrap()));
        }
    }
    walk(root, root, &mut out);
    out
}

fn assert_failed_with(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure: {err}");
    assert!(err.contains("Migration failed: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// The `Migration failed: ...` line of a run.
fn failure_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .find(|l| l.starts_with("Migration failed: "))
        .unwrap_or_default()
        .to_string()
}

/// `--dry-run` with the same env and args refuses with exactly the message and exit code
/// of the real run `real`, and changes nothing.
fn assert_dry_run_refuses_alike(
    site: &Site,
    target: &str,
    env: &[(&str, &str)],
    args: &[&str],
    real: &Output,
) {
    let before = tree(site.root());
    let mut dry_args = args.to_vec();
    dry_args.push("--dry-run");
    let dry = site.migrate_with(target, env, &dry_args);
    assert_eq!(dry.status.code(), real.status.code(), "{}", stderr(&dry));
    assert_eq!(failure_line(&dry), failure_line(real));
    assert_eq!(tree(site.root()), before, "--dry-run changed something");
}

fn port_is_free(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn empty_or_missing_dir_gets_the_target_and_nothing_starts() {
    let site = Site::new("empty");
    let out = site.migrate("3.5.1/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
    assert!(!stderr(&out).contains("starting "), "no etcd may start");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The data dir 0700 (what etcd wants; the original made it 0777 & umask and etcd warned);
    // version.txt 0666 & umask (0644 under the usual 022, as the original's test checks).
    let umask = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    assert_eq!(mode(&site.data), 0o700);
    assert_eq!(mode(&site.data.join("version.txt")), 0o666 & !umask);
    // Rerun: no change at all.
    let before = tree(site.root());
    assert!(site.migrate("3.5.1/etcd3").status.success());
    assert_eq!(tree(site.root()), before);
    // An existing empty dir.
    let site = Site::new("empty2");
    fs::create_dir_all(&site.data).unwrap();
    assert!(site.migrate("3.4.23/etcd3").status.success());
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
    // A fresh volume: nothing but the lost+found mkfs.ext4 leaves is empty too.
    let site = Site::new("empty3");
    fs::create_dir_all(site.data.join("lost+found")).unwrap();
    let dry = site.migrate_with("3.4.23/etcd3", &[], &["--dry-run"]);
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("is empty: would write 3.4.23/etcd3"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    let out = site.migrate("3.4.23/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
    assert!(site.data.join("lost+found").is_dir());
}

#[test]
fn upgrade_3_4_to_3_5_then_etcd_3_5_1_serves_the_data() {
    let site = Site::new("up");
    let kv = site.seed(V3_4, 50, &[]);
    let out = site.migrate("3.5.1/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    // One minor behind: only version.txt changes; etcd 3.5.1 does the last hop itself.
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
    assert!(!stderr(&out).contains("starting "));
    let etcd = site.start(V3_5_1);
    assert_eq!(all_keys(&etcd.client_url), kv);
}

#[test]
fn downgrade_3_5_1_to_3_4_23_keeps_every_key() {
    let site = Site::new("down");
    let kv = site.seed(V3_5_1, 200, &[]);
    fs::set_permissions(&site.data, fs::Permissions::from_mode(0o700)).unwrap();
    let out = site.migrate("3.4.23/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
    let d = etcdtools::datadir::DataDir::resolve(&site.data).unwrap();
    assert_eq!(
        fs::read_to_string(d.backup_path().join("version.txt")).unwrap(),
        "3.5.1/etcd3"
    );
    assert!(!d.snapshot_path().exists() && !d.restore_path().exists());
    assert_eq!(
        fs::metadata(&site.data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(port_is_free(site.client_port), "migrate left etcd running");
    // No probe key was written: the keyspace is exactly what we put.
    let etcd = site.start(V3_4);
    assert_eq!(all_keys(&etcd.client_url), kv);
    let version = http()
        .get_text(
            &format!("{}/version", etcd.client_url),
            Duration::from_secs(5),
            4096,
        )
        .unwrap();
    assert!(version.contains("\"etcdserver\":\"3.4.23\""), "{version}");
}

#[test]
fn patch_moves_between_3_5_0_and_3_5_1() {
    let site = Site::new("patch");
    let kv = site.seed(V3_5_0, 20, &[]);
    assert!(site.migrate("3.5.1/etcd3").status.success());
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
    let mut etcd = site.start(V3_5_1);
    assert_eq!(all_keys(&etcd.client_url), kv);
    etcd.stop();
    let out = site.migrate("3.5.0/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.version_txt(), "3.5.0/etcd3");
    let etcd = site.start(V3_5_0);
    assert_eq!(all_keys(&etcd.client_url), kv);
}

#[test]
fn three_member_cluster_upgraded_member_by_member_while_serving() {
    let mut cluster = TestCluster::start(V3_4, 3, FAST);
    let initial_cluster = cluster.initial_cluster.clone();
    let site = Site::new("cluster"); // for the bin dir and the script only
    let mut expected = Kv::new();
    for (i, m) in cluster.members.iter().enumerate() {
        fs::write(m.data_dir.join("version.txt"), "3.4.23/etcd3").unwrap();
        let k = format!("/registry/before-{i}").into_bytes();
        put(&m.client_url, &k, b"v");
        expected.insert(k, b"v".to_vec());
    }
    for i in 0..3 {
        let (data_dir, peer_url, client_url) = {
            let m = &mut cluster.members[i];
            m.stop();
            (m.data_dir.clone(), m.peer_url.clone(), m.client_url.clone())
        };
        // The cluster keeps serving with one member down.
        let other = &cluster.members[(i + 1) % 3];
        let k = format!("/registry/while-{i}-down").into_bytes();
        put(&other.client_url, &k, b"w");
        expected.insert(k, b"w".to_vec());
        let name = format!("m{i}");
        let data = data_dir.display().to_string();
        let out = site.migrate_with(
            "3.5.1/etcd3",
            &[
                ("ETCD_NAME", &name),
                ("DATA_DIRECTORY", &data),
                ("INITIAL_CLUSTER", &initial_cluster),
                ("LISTEN_PEER_URLS", &peer_url),
                ("INITIAL_ADVERTISE_PEER_URLS", &peer_url),
            ],
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            fs::read_to_string(data_dir.join("version.txt")).unwrap(),
            "3.5.1/etcd3"
        );
        let port = |u: &str| u.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        let mut spec = EtcdSpec::single(
            &etcd_bin(V3_5_1),
            &name,
            &data_dir,
            port(&client_url),
            port(&peer_url),
        );
        spec.initial_cluster = Some(initial_cluster.clone());
        spec.extra_args = FAST.iter().map(|s| s.to_string()).collect();
        spec.extra_args
            .push("--initial-cluster-token=test-cluster".into());
        cluster.members[i] = TestEtcd::start_spec(V3_5_1, spec);
    }
    for m in &cluster.members {
        let got: Kv = all_keys(&m.client_url);
        assert_eq!(got, expected, "member {}", m.client_url);
        let v = http()
            .get_text(
                &format!("{}/version", m.client_url),
                Duration::from_secs(5),
                4096,
            )
            .unwrap();
        assert!(v.contains("\"etcdserver\":\"3.5.1\""), "{v}");
    }
}

/// v2 data written by etcd 3.4.23 --enable-v2 through etcdctl's v2 API; version.txt etcd2.
fn seed_v2(site: &Site) -> Kv {
    let etcd = TestEtcd::start_spec(V3_4, {
        let mut s = site.spec(V3_4);
        s.extra_args.push("--enable-v2".into());
        s
    });
    let v2 = |args: &[&str]| {
        let mut a = vec!["--endpoints".to_string(), etcd.client_url.clone()];
        a.extend(args.iter().map(|s| s.to_string()));
        run_tool(
            &etcdctl_bin(V3_4),
            &a,
            &[("ETCDCTL_API", "2")],
            Duration::from_secs(10),
        )
        .unwrap();
    };
    v2(&["set", "/registry/pods/p1", "pod-1"]);
    v2(&["set", "/registry/events/e1", "event-1", "--ttl", "3600"]);
    v2(&["set", "/registry/events/e2", "event-2"]);
    let mut expect: Kv = [
        ("/registry/events/e1", "event-1"),
        ("/registry/events/e2", "event-2"),
        ("/registry/pods/p1", "pod-1"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect();
    // More events than one lease page (1000) and batch (100): in-order keys through the v2
    // HTTP API (POST on the dir; the value in the query string, as Go's FormValue reads it).
    for i in 0..1234 {
        let r = http()
            .post_json(
                &format!(
                    "{}/v2/keys/registry/events?value=ev-{i}&ttl=3600",
                    etcd.client_url
                ),
                &serde_json::json!({}),
                Duration::from_secs(10),
            )
            .unwrap();
        let node = &r["node"];
        expect.insert(
            node["key"].as_str().unwrap().as_bytes().to_vec(),
            node["value"].as_str().unwrap().as_bytes().to_vec(),
        );
    }
    drop(etcd);
    fs::write(site.data.join("version.txt"), "3.4.23/etcd2").unwrap();
    expect
}

#[test]
fn etcd2_to_etcd3_converts_v2_data_and_leases_ttl_keys() {
    let site = Site::new("v2v3");
    let expect = seed_v2(&site);
    check_v2_converted(&site, &site.migrate("3.4.23/etcd3"), &expect);
}

/// Killed right after `etcdctl migrate` (before the leases): the rerun restores the backup,
/// converts again and leases the keys.
#[test]
fn etcd2_to_etcd3_interrupted_is_redone_from_the_backup() {
    let site = Site::new("v2v3-crash");
    let expect = seed_v2(&site);
    let out = site.migrate_with(
        "3.4.23/etcd3",
        &[("ETCDTOOLS_MIGRATE_CRASH_AT", "v2v3-migrated")],
        &[],
    );
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(site.version_txt(), "3.4.23/etcd2");
    let (said, out) = dry_run_then_run(&site, "3.4.23/etcd3", "v2v3-migrated");
    assert!(
        said.iter()
            .any(|l| l.contains("etcd2 -> etcd3 conversion was interrupted")),
        "{said:?}"
    );
    assert!(stderr(&out).contains("restoring the data from its backup"));
    check_v2_converted(&site, &out, &expect);
    assert!(!site.data.join(".v2v3-backup").exists());
    assert!(!site.data.join(".discard").exists());
}

/// The etcd2 -> etcd3 step proves itself: `etcdctl-3.4.23` here is a STAND-IN, a script
/// that runs the real etcdctl 3.4.23 with `migrate --no-ttl` (a real flag: keys with a v2 TTL
/// are not converted), so the conversion loses every TTL key as a broken conversion would. The
/// step must fail with `step 1 changed the data (...)` naming the counts and the first lost
/// key, exit 1, and put the data dir back byte for byte (besides the kept `.bak`).
#[test]
fn etcd2_to_etcd3_that_loses_keys_fails_and_puts_the_data_dir_back() {
    let site = Site::new("v2v3-lossy");
    let expect = seed_v2(&site);
    let stand_in = site.bin.join(format!("etcdctl-{V3_4}"));
    fs::remove_file(&stand_in).unwrap();
    fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\n[ \"$1\" = migrate ] && set -- \"$@\" --no-ttl\nexec '{}' \"$@\"\n",
            etcdctl_bin(V3_4).display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
    let before = tree(&site.data);
    let out = site.migrate("3.4.23/etcd3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = failure_line(&out);
    // 1235 keys have a TTL (e1 and the 1234 posted events); e2 and the pod key survive.
    assert!(
        line.starts_with(&format!(
            "Migration failed: step 1 changed the data ({} v2 files before, 2 v3 keys after, \
             first differing key \"/registry/events/",
            expect.len()
        )) && line.contains("\": missing after)")
            && line.contains("is back in"),
        "{line}"
    );
    let mut after = tree(&site.data);
    after.retain(|p, _| !p.starts_with(".bak"));
    assert!(after == before, "the data dir was not put back");
    assert_eq!(site.version_txt(), "3.4.23/etcd2");
    assert!(site.data.join(".bak/member/wal").exists());
}

fn check_v2_converted(site: &Site, out: &Output, expect: &Kv) {
    assert!(out.status.success(), "{}", stderr(out));
    // The step proved itself (src/migrate/verify.rs): every v2 file, counted, through v3.
    let err = stderr(out);
    assert!(
        err.contains(&format!(
            "step 1: before the step, the v2 store holds {} files",
            expect.len()
        )) && err.contains(&format!("etcd 3.4.23 serves {} keys", expect.len()))
            && err.contains("every v2 file is served through v3 with its value and revisions"),
        "{err}"
    );
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
    let d = etcdtools::datadir::DataDir::resolve(&site.data).unwrap();
    assert_eq!(
        fs::read_to_string(d.backup_path().join("version.txt")).unwrap(),
        "3.4.23/etcd2"
    );
    let etcd = site.start(V3_4);
    let kv = all_keys(&etcd.client_url);
    assert_eq!(&kv, expect);
    // Every event key shares one lease of 1 h; the pod key has none.
    let r = http()
        .post_json(
            &format!("{}/v3/kv/range", etcd.client_url),
            &serde_json::json!({"key": b64::encode(b"/registry/"), "range_end": b64::encode(b"/registry0")}),
            Duration::from_secs(5),
        )
        .unwrap();
    let leases: BTreeMap<String, String> = r["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let k = String::from_utf8(b64::decode(kv["key"].as_str().unwrap()).unwrap()).unwrap();
            (
                k,
                kv.get("lease")
                    .and_then(|l| l.as_str())
                    .unwrap_or("0")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(leases["/registry/pods/p1"], "0");
    let lease = &leases["/registry/events/e1"];
    assert_ne!(lease, "0");
    let events: Vec<_> = leases
        .iter()
        .filter(|(k, _)| k.starts_with("/registry/events/"))
        .collect();
    assert_eq!(events.len(), 1236);
    assert!(
        events.iter().all(|(_, l)| *l == lease),
        "an event key without the lease"
    );
    let ttl = http()
        .post_json(
            &format!("{}/v3/lease/timetolive", etcd.client_url),
            &serde_json::json!({"ID": lease}),
            Duration::from_secs(5),
        )
        .unwrap();
    let granted: u64 = ttl["grantedTTL"].as_str().unwrap().parse().unwrap();
    assert_eq!(granted, 3600);
}

/// etcd3 -> etcd2 is rollback2's job (3.x data -> an etcd 2.2.1/2.3.7 dir), run in-process.
/// No etcd 2.x exists here: `etcd-2.2.1`/`etcdctl-2.2.1` are stand-in scripts that only
/// satisfy the bundle check and must never run. The result is read back with our v2 store
/// reader (real etcd reading such a dir is proven in tests/rollback.rs).
#[test]
fn etcd3_to_etcd2_converts_with_rollback2_and_refuses_binary_values() {
    let site = Site::new("v3v2");
    let mut kv = site.seed(V3_4, 3, &[]);
    let ran = site.root().join("stand-in-ran");
    for tool in ["etcd-2.2.1", "etcdctl-2.2.1"] {
        let p = site.bin.join(tool);
        fs::write(
            &p,
            format!("#!/bin/sh\ntouch '{}'\nexit 1\n", ran.display()),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bundle = ["--bundled-versions", "2.2.1,3.4.23"];
    let dry_args = [&bundle[..], &["--dry-run"]].concat();

    // A 3.x target with etcd2 storage is nothing rollback2 makes: refused, nothing changed.
    let before = tree(site.root());
    let out = site.migrate("3.4.23/etcd2");
    assert_failed_with(&out, "etcd 2.x data only");
    assert_eq!(tree(site.root()), before, "changed");

    // The seeded binary value cannot live in a v2 store: refused, naming the key, by the dry
    // run (its pre-flight runs rollback2's refusals) as by the real run.
    let member_before = tree(&site.data.join("member"));
    let dry = site.migrate_with("2.2.1/etcd2", &[], &dry_args);
    assert_failed_with(&dry, "/registry/bin");
    let out = site.migrate_with("2.2.1/etcd2", &[], &bundle);
    assert_failed_with(&out, "/registry/bin");
    assert_eq!(tree(&site.data.join("member")), member_before, "changed");
    assert_eq!(site.version_txt(), "3.4.23/etcd3");

    // Without it, the conversion runs and the v2 store holds every key under /1. One key
    // gets a lease: rollback2 gives it an expiry, and the proof checks exactly that.
    let leased = b"/registry/leases/kube-node-lease/n1".to_vec();
    {
        let etcd = site.start(V3_4);
        let key = b"/registry/bin\x00\xff".to_vec();
        delete(&etcd.client_url, &key);
        kv.remove(&key);
        let url = &etcd.client_url;
        let grant = http()
            .post_json(
                &format!("{url}/v3/lease/grant"),
                &serde_json::json!({"TTL": "3600"}),
                Duration::from_secs(10),
            )
            .unwrap();
        let put = serde_json::json!({"key": b64::encode(&leased), "value": b64::encode(b"l"),
            "lease": grant["ID"]});
        http()
            .post_json(&format!("{url}/v3/kv/put"), &put, Duration::from_secs(10))
            .unwrap();
        kv.insert(leased.clone(), b"l".to_vec());
    }
    let dry = site.migrate_with("2.2.1/etcd2", &[], &dry_args);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        plan.contains("storage etcd3 -> etcd2: rollback2 converts 3.4.23"),
        "{plan}"
    );
    let out = site.migrate_with("2.2.1/etcd2", &[], &bundle);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.version_txt(), "2.2.1/etcd2");
    // The step proved itself offline (src/migrate/verify.rs): every live v3 key read back
    // from the v2 store rollback2 wrote.
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "step 1: before the step, the db holds {} live keys under / (1 with a lease)",
            kv.len()
        )) && err.contains(&format!(
            "step 1: after the step, the v2 store holds {} keys under /1 (1 with an expiry)",
            kv.len()
        )) && err.contains("every live v3 key is in the v2 store under /1 with its value"),
        "{err}"
    );
    let got = etcdtools::storage::member::Member::at(&site.data, None)
        .recover(0)
        .unwrap();
    for (k, v) in &kv {
        let path = format!("/1{}", String::from_utf8(k.clone()).unwrap());
        let node = got
            .store
            .get(&path)
            .unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(node.value, std::str::from_utf8(v).unwrap(), "{path}");
        assert_eq!(node.expire_unix_nanos().is_some(), *k == leased, "{path}");
    }
    assert_eq!(got.store.cluster_version(), Some("2.2.0"));
    assert!(!ran.exists(), "a stand-in 2.2.1 binary ran");
}

/// 3.4.23 data that rollback2 converts (the seeded binary value deleted) and stand-ins for
/// the 2.2.1 binaries, which must exist and never run. Returns the site and its keys.
fn v3v2_site(label: &str) -> (Site, Kv) {
    let site = Site::new(label);
    let mut kv = site.seed(V3_4, 3, &[]);
    {
        let etcd = site.start(V3_4);
        let key = b"/registry/bin\x00\xff".to_vec();
        delete(&etcd.client_url, &key);
        kv.remove(&key);
    }
    for tool in ["etcd-2.2.1", "etcdctl-2.2.1"] {
        let p = site.bin.join(tool);
        fs::write(&p, "#!/bin/sh\nexit 1\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    (site, kv)
}

/// The etcd3 -> etcd2 step proves itself: with the test hook ETCDTOOLS_MIGRATE_CRASH_AT=
/// v3v2-lose-first-key (read by the release binary too, like the crash points) the first key
/// of the v2 store rollback2 wrote is dropped from what the proof reads back, as if the
/// conversion had lost it. The step must fail with `step 1 changed the data (...)` naming the
/// counts and that key, exit 1, and put the data dir back byte for byte (besides `.bak`).
#[test]
fn etcd3_to_etcd2_that_loses_a_key_fails_and_puts_the_data_dir_back() {
    let (site, kv) = v3v2_site("v3v2-lossy");
    let before = tree(&site.data);
    let first = String::from_utf8(kv.keys().next().unwrap().clone()).unwrap();
    let out = site.migrate_with(
        "2.2.1/etcd2",
        &[("ETCDTOOLS_MIGRATE_CRASH_AT", "v3v2-lose-first-key")],
        &["--bundled-versions", "2.2.1,3.4.23"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = failure_line(&out);
    assert!(
        line.starts_with(&format!(
            "Migration failed: step 1 changed the data ({} v3 keys before, {} v2 keys after, \
             first differing key {first:?}: missing after)",
            kv.len(),
            kv.len() - 1
        )) && line.contains("is back in"),
        "{line}"
    );
    let mut after = tree(&site.data);
    after.retain(|p, _| !p.starts_with(".bak"));
    assert!(after == before, "the data dir was not put back");
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
    assert!(site.data.join(".bak/member/snap/db").exists());
}

/// A crash inside the etcd3 -> etcd2 step after rollback2 swapped its output in, before the
/// proof passed (`v3v2-converted`), after a failed proof (`v3v2-proof-failed`) or anywhere in
/// the put-back of the backup (`member-dropped`: the changed member/ is removed first,
/// `put-back-marked`, `member-swapped`): the
/// step journal `.step-backup` makes the rerun put the backup back first (leftovers scan,
/// `Leftover::PutBack`; the dry run shows it) and redo the step, never taking rollback2's
/// unproved output. A rerun whose proof fails again (hook `v3v2-lose-first-key`) leaves the
/// data dir byte for byte as before (besides `.bak`); one without the hook converts.
#[test]
fn etcd3_to_etcd2_crash_in_the_put_back_is_finished_by_the_rerun() {
    let (site, _) = v3v2_site("v3v2-crash");
    let bundle = ["--bundled-versions", "2.2.1,3.4.23"];
    let before = tree(&site.data);
    let hook = "ETCDTOOLS_MIGRATE_CRASH_AT";
    for point in [
        "v3v2-converted",
        "v3v2-proof-failed",
        "member-dropped",
        "put-back-marked",
        "member-swapped",
    ] {
        let crash = format!("v3v2-lose-first-key,{point}");
        let out = site.migrate_with("2.2.1/etcd2", &[(hook, &crash)], &bundle);
        assert_eq!(out.status.signal(), Some(9), "{point}: {}", stderr(&out));
        assert!(site.data.join(".step-backup").exists(), "{point}");
        let dry = site.migrate_with("2.2.1/etcd2", &[], &[&bundle[..], &["--dry-run"]].concat());
        let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
        assert!(plan.contains("put its backup"), "{point}: {plan}");
        assert!(
            plan.contains("current 3.4.23/etcd3"),
            "{point}: {plan}{}",
            stderr(&dry)
        );
        let out = site.migrate_with("2.2.1/etcd2", &[(hook, "v3v2-lose-first-key")], &bundle);
        assert_eq!(out.status.code(), Some(1), "{point}: {}", stderr(&out));
        assert!(
            failure_line(&out).starts_with("Migration failed: step 1 changed the data"),
            "{point}: {}",
            stderr(&out)
        );
        let mut after = tree(&site.data);
        after.retain(|p, _| !p.starts_with(".bak"));
        assert!(after == before, "{point}: the data dir was not put back");
    }
    let out = site.migrate_with("2.2.1/etcd2", &[(hook, "v3v2-converted")], &bundle);
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    let out = site.migrate_with("2.2.1/etcd2", &[], &bundle);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("put its backup"), "{err}");
    assert!(
        err.contains("every live v3 key is in the v2 store under /1 with its value"),
        "{err}"
    );
    assert_eq!(site.version_txt(), "2.2.1/etcd2");
    assert!(!site.data.join(".step-backup").exists());
}

/// Real data of every version without (or with an empty) version.txt: migrate reads the
/// minor from the files (bbolt `cluster/clusterVersion`), logs it and goes on to the target.
/// When the files cannot tell (here: a db whose meta pages are unreadable, so etcd2 data and
/// etcd3 data converted from it look alike), it refuses, says what to write, changes nothing.
#[test]
fn missing_or_empty_version_txt_is_detected_or_refused_with_instructions() {
    let handles: Vec<_> = [V3_4, V3_5_0, V3_5_1]
        .into_iter()
        .map(|v| {
            std::thread::spawn(move || {
                let site = Site::new(&format!("nover-{v}"));
                site.seed(v, 2, &[]);
                let minor = &v[..3];
                for content in [None, Some("")] {
                    match content {
                        None => fs::remove_file(site.data.join("version.txt")).unwrap(),
                        Some(c) => fs::write(site.data.join("version.txt"), c).unwrap(),
                    }
                    let out = site.migrate("3.5.1/etcd3");
                    assert!(out.status.success(), "{v}: {}", stderr(&out));
                    let err = stderr(&out);
                    assert!(
                        err.contains(&format!(
                            "detected etcd {minor} from the files (etcd3 data, bbolt cluster/clusterVersion = {minor}.0"
                        )),
                        "{v}: {err}"
                    );
                    // The files name the minor only: the highest bundled patch of it.
                    let bundled = highest_in_bin_dir(minor);
                    assert!(
                        err.contains(&format!("going on as {bundled}/etcd3")),
                        "{v}: {err}"
                    );
                    assert_eq!(site.version_txt(), "3.5.1/etcd3");
                }
                // etcd 3.5.1 serves what was detected and migrated.
                let etcd = site.start(V3_5_1);
                assert_eq!(all_keys(&etcd.client_url).len(), 3, "{v}");
                drop(etcd);
                // Both meta pages unreadable: the storage kind cannot be told.
                fs::remove_file(site.data.join("version.txt")).unwrap();
                let db = site.data.join("member/snap/db");
                let mut bytes = fs::read(&db).unwrap();
                let page = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
                for meta in [0, page] {
                    bytes[meta + 16] ^= 0xff; // the magic
                }
                fs::write(&db, &bytes).unwrap();
                let before = tree(site.root());
                let out = site.migrate("3.5.1/etcd3");
                assert_failed_with(&out, "printf 3.5.1/etcd3 >");
                let err = stderr(&out);
                assert!(err.contains("the bbolt db cannot be read"), "{v}: {err}");
                assert!(
                    err.contains(&site.data.join("version.txt").display().to_string()),
                    "{v}: {err}"
                );
                assert_eq!(tree(site.root()), before, "{v}: changed");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// A real 3.5.1 data dir whose bbolt db has damaged bytes in a page of its tree (the root
/// page of bucket `key`, found through the newest meta page and the root bucket page): the
/// downgrade stops in pre-flight, the message names the db and an offset inside that page
/// (once: the bbolt walk and the mvcc decoding meet the same damage), no etcd starts, nothing
/// changes.
#[test]
fn a_corrupted_db_refuses_a_downgrade_in_preflight_with_file_and_offset() {
    let site = Site::new("baddb");
    site.seed(V3_5_1, 100, &[]);
    let db = site.data.join("member/snap/db");
    let mut bytes = fs::read(&db).unwrap();
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let page = u32_at(&bytes, 24);
    // Meta: 16-byte page header, magic, version, page size, flags, root {pgid, seq},
    // freelist, pgid, txid. The newer of the two metas is the one bbolt uses.
    let meta = [0, page]
        .into_iter()
        .max_by_key(|&m| u64_at(&bytes, m + 64))
        .unwrap();
    let root = u64_at(&bytes, meta + 32) * page;
    assert_eq!(u16_at(&bytes, root + 8), 0x02, "root bucket page is a leaf");
    // Leaf elements: flags, pos (from the element), key size, value size; a bucket's value
    // starts with its root page id.
    let key_bucket = (0..u16_at(&bytes, root + 10))
        .map(|i| root + 16 + 16 * i)
        .find_map(|e| {
            let (pos, ksize) = (u32_at(&bytes, e + 4), u32_at(&bytes, e + 8));
            (&bytes[e + pos..e + pos + ksize] == b"key").then(|| u64_at(&bytes, e + pos + ksize))
        })
        .unwrap();
    assert_ne!(key_bucket, 0, "bucket key is inline; seed more keys");
    let target = key_bucket * page;
    // The first element header (pos, key size) of that page.
    for b in &mut bytes[target + 20..target + 28] {
        *b ^= 0xff;
    }
    fs::write(&db, &bytes).unwrap();
    let before = tree(site.root());
    let out = site.migrate("3.4.23/etcd3");
    assert_failed_with(&out, "integrity check of");
    assert_dry_run_refuses_alike(&site, "3.4.23/etcd3", &[], &[], &out);
    let err = stderr(&out);
    assert!(err.contains("failed: 1 problem(s): "), "{err}");
    let needle = format!("{}: offset ", db.display());
    let at = err
        .find(&needle)
        .unwrap_or_else(|| panic!("no {needle:?} in: {err}"));
    let offset: usize = err[at + needle.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (target..target + page).contains(&offset),
        "offset {offset} is not in page {}: {err}",
        key_bucket
    );
    assert!(!err.contains("starting "), "an etcd was started: {err}");
    assert_eq!(tree(site.root()), before, "changed");
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
}

#[test]
fn bad_inputs_fail_clearly_and_change_nothing() {
    let site = Site::new("bad");
    site.seed(V3_5_1, 3, &[]);
    let vt = site.data.join("version.txt");
    let check = |target: &str, env: &[(&str, &str)], args: &[&str], needle: &str| {
        let before = tree(site.root());
        let out = site.migrate_with(target, env, args);
        assert_failed_with(&out, needle);
        assert_eq!(tree(site.root()), before, "{needle}: something changed");
        assert_dry_run_refuses_alike(&site, target, env, args, &out);
        out
    };
    // Malformed and binary version.txt: the file is named and its content quoted.
    for (content, quoted) in [
        (&b"garbage"[..], "\"garbage\""),
        (b"3.5/etcd3", "\"3.5/etcd3\""),
        (b"\x00\xff\x01binary", "not UTF-8"),
    ] {
        fs::write(&vt, content).unwrap();
        let out = check("3.4.23/etcd3", &[], &[], quoted);
        assert!(stderr(&out).contains(&vt.display().to_string()));
    }
    fs::write(&vt, "3.5.1/etcd3").unwrap();
    // Target not bundled; bad target strings (the original panicked).
    check("3.6.0/etcd3", &[], &[], "not one of the bundled versions");
    check(
        "3.5.1/etcd3",
        &[("TARGET_VERSION", "v3.5")],
        &[],
        "--target-version",
    );
    check(
        "3.5.1/etcd3",
        &[("TARGET_STORAGE", "etcd4")],
        &[],
        "unrecognized storage version: etcd4",
    );
    check(
        "3.5.1/etcd3",
        &[("TARGET_VERSION", "")],
        &[],
        "TARGET_VERSION variable unset",
    );
    // Two minors down (data claims 3.6.0; the message is the original's).
    fs::write(&vt, "3.6.0/etcd3").unwrap();
    check(
        "3.4.23/etcd3",
        &[],
        &[],
        "only rollbacks to the previous minor version are supported",
    );
    fs::write(&vt, "3.5.1/etcd3").unwrap();
    // Bad flags (the original exited 0).
    let out = check("3.4.23/etcd3", &[], &["--bogus"], "--bogus");
    assert_eq!(out.status.code(), Some(2));
    check("3.4.23/etcd3", &[], &["--port", "abc"], "--port");
    check(
        "3.4.23/etcd3",
        &[],
        &["--ready-timeout", "soon"],
        "--ready-timeout",
    );
    // A missing and a non-executable binary in --bin-dir.
    fs::remove_file(site.bin.join("etcdctl-3.4.23")).unwrap();
    check("3.4.23/etcd3", &[], &[], "etcdctl-3.4.23");
    fs::copy(etcdctl_bin(V3_4), site.bin.join("etcdctl-3.4.23")).unwrap();
    fs::set_permissions(
        site.bin.join("etcdctl-3.4.23"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    check("3.4.23/etcd3", &[], &[], "not executable");
    fs::set_permissions(
        site.bin.join("etcdctl-3.4.23"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::remove_file(site.bin.join("etcdutl-3.5.1")).unwrap();
    check(
        "3.5.1/etcd3",
        &[],
        &["--bundled-versions", "3.5.1"],
        "etcdutl-3.5.1",
    );
    // A data dir that is a regular file.
    let file = site.root().join("file");
    fs::write(&file, "not a dir").unwrap();
    check(
        "3.4.23/etcd3",
        &[("DATA_DIRECTORY", &file.display().to_string())],
        &["--bundled-versions", "3.4.23"],
        "exists but is not a directory",
    );
    // An unwritable parent dir: root ignores modes, so then the parent is a regular file.
    let parent = site.root().join("ro");
    let data = parent.join("data");
    if unsafe { libc::geteuid() } == 0 {
        fs::write(&parent, "not a dir").unwrap();
    } else {
        fs::create_dir(&parent).unwrap();
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let d = data.display().to_string();
    check(
        "3.4.23/etcd3",
        &[("DATA_DIRECTORY", &d)],
        &["--bundled-versions", "3.4.23"],
        &parent.display().to_string(),
    );
}

/// The crash points of a downgrade (ETCDTOOLS_MIGRATE_CRASH_AT), in order.
const DOWNGRADE_POINTS: &[&str] = &[
    "etcd-started",
    "etcd-ready",
    "snapshot-saved",
    "etcd-stopped",
    "restored",
    "restore-complete",
    "old-backup-removed",
    "moved-to-backup",
    "member-swapped",
    "swapped",
    "after-version-write",
];

/// Every crash point, then kills at fractions of `full` (inside etcd start, snapshot, restore).
fn crash_cases(points: &[&str], full: Duration) -> Vec<(String, Option<Duration>)> {
    let mut cases: Vec<(String, Option<Duration>)> =
        points.iter().map(|p| (p.to_string(), None)).collect();
    for f in [0.2, 0.4, 0.6, 0.8, 0.95] {
        cases.push((format!("timed {f}"), Some(full.mul_f64(f))));
    }
    cases
}

/// Kills migrate -> `target` on `site` at `label` (a crash point, or after `delay`), checks
/// that no etcd outlived it, reruns it and checks that it ends at `target`; etcd `serve` then
/// serves exactly `kv`.
fn crash_and_rerun(
    site: &Site,
    label: &str,
    delay: Option<Duration>,
    target: &str,
    serve: &str,
    kv: &Kv,
) {
    let status = match delay {
        None => {
            site.migrate_with(target, &[("ETCDTOOLS_MIGRATE_CRASH_AT", label)], &[])
                .status
        }
        Some(d) => {
            let mut child = site
                .command(target, &[], &[])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(d);
            let _ = child.kill();
            child.wait().unwrap()
        }
    };
    if delay.is_none() {
        assert_eq!(status.signal(), Some(9), "{label}: the hook did not fire");
    }
    // Both ports: the peer listener can outlive the client one by a few ms while the killed
    // etcd exits, and the rerun binds both.
    assert!(
        port_is_free(site.client_port) && port_is_free(site.peer_port),
        "{label}: etcd outlived migrate"
    );
    let out = site.migrate(target);
    assert!(
        out.status.success(),
        "{label}: rerun failed: {}",
        stderr(&out)
    );
    assert_eq!(site.version_txt(), target, "{label}");
    let etcd = site.start(serve);
    assert_eq!(all_keys(&etcd.client_url), *kv, "{label}: keys differ");
}

/// Runs `case` for every (label, delay), four at a time.
fn in_parallel(
    cases: Vec<(String, Option<Duration>)>,
    case: impl Fn(&str, Option<Duration>) + Send + Sync + 'static,
) {
    let case = std::sync::Arc::new(case);
    let n = cases.len();
    let mut done = 0;
    for chunk in cases.chunks(4) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(label, delay)| {
                let case = case.clone();
                std::thread::spawn(move || case(&label, delay))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
            done += 1;
        }
    }
    assert_eq!(done, n);
}

/// SIGKILL of migrate at every point between two effects of a real 3.5.1 -> 3.4.23 downgrade
/// (test hook ETCDTOOLS_MIGRATE_CRASH_AT) and at timed moments (inside etcd start, snapshot,
/// restore); each rerun must end at 3.4.23 with every key, and no etcd may outlive migrate.
#[test]
fn crash_at_any_point_of_a_downgrade_then_rerun_ends_at_target_with_all_keys() {
    let template = Site::new("crash-template");
    let kv = template.seed(V3_5_1, 100, &[]);
    // One full run to time the phases for the timed kills.
    let timing = Site::new("crash-timing");
    copy_data(&template, &timing);
    let t0 = Instant::now();
    assert!(timing.migrate("3.4.23/etcd3").status.success());
    let cases = crash_cases(DOWNGRADE_POINTS, t0.elapsed());
    in_parallel(cases, move |label, delay| {
        let site = Site::new("crash");
        copy_data(&template, &site);
        crash_and_rerun(&site, label, delay, "3.4.23/etcd3", V3_4, &kv);
    });
}

fn copy_data(from: &Site, to: &Site) {
    fs::create_dir_all(to.data.parent().unwrap()).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&from.data)
        .arg(&to.data)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// The lock belongs to the real directory: a run through a symlink holds it, a second run
/// through a relative spelling with `.` and a trailing `/` is refused naming the holder, a
/// third through the real path waits and then finds the work done (one downgrade, not two).
#[test]
fn a_second_run_through_another_spelling_waits_or_refuses_naming_the_holder() {
    let site = Site::new("concurrent");
    let kv = site.seed(V3_5_1, 10, &[]);
    // The real etcd 3.5.1 behind a 2 s delay, so the first run surely holds the lock while
    // the others try.
    let slow = site.bin.join("etcd-3.5.1");
    fs::remove_file(&slow).unwrap();
    fs::write(
        &slow,
        format!(
            "#!/bin/sh\nsleep 2\nexec '{}' \"$@\"\n",
            etcd_bin(V3_5_1).display()
        ),
    )
    .unwrap();
    fs::set_permissions(&slow, fs::Permissions::from_mode(0o755)).unwrap();
    let link = site.root().join("link-to-data");
    std::os::unix::fs::symlink(&site.data, &link).unwrap();
    let link = link.display().to_string();
    let mut first = site
        .command("3.4.23/etcd3", &[("DATA_DIRECTORY", &link)], &[])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    // Wait until the first run holds the lock and works on the data.
    for line in lines.by_ref() {
        if line
            .unwrap()
            .contains("Performing etcd 3.5.1 -> 3.4.23 rollback")
        {
            break;
        }
    }
    let t0 = Instant::now();
    let second = site
        .command(
            "3.4.23/etcd3",
            &[("DATA_DIRECTORY", "var/etcd/./data/")],
            &["--lock-timeout", "300ms"],
        )
        .current_dir(site.root())
        .output()
        .unwrap();
    assert_failed_with(&second, "is working on this data dir");
    assert!(
        stderr(&second).contains(&format!("pid {} (", first.id())),
        "holder not named: {}",
        stderr(&second)
    );
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let third = site
        .command("3.4.23/etcd3", &[], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in lines {}
    assert!(first.wait().unwrap().success());
    let third = third.wait_with_output().unwrap();
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(
        stderr(&third).contains("is locked by pid"),
        "{}",
        stderr(&third)
    );
    assert!(
        stderr(&third).contains("already at the target"),
        "{}",
        stderr(&third)
    );
    assert_eq!(site.version_txt(), "3.4.23/etcd3");
    assert_eq!(
        fs::read_to_string(site.data.join(".bak/version.txt")).unwrap(),
        "3.5.1/etcd3",
        "downgraded twice"
    );
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let etcd = site.start(V3_4);
    assert_eq!(all_keys(&etcd.client_url), kv);
}

/// Upgrades across three minors need more minors than exist here, so for the step SEQUENCING
/// only, the data is real 3.4.23 data and the minors above are stand-ins: `etcd-3.5.30` logs
/// its call and execs the real 3.5.30 (3.6 needs 3.5.26+ first), `etcd-3.6.0` logs and execs
/// the real 3.5.30 too (so the
/// data stays 3.5 data, which version.txt then calls 3.6.0: version.txt is never older than the
/// files, which migrate checks), `etcd-3.7.0` is the target and never runs. The hops themselves
/// are real-etcd-tested above.
#[test]
fn multi_minor_upgrade_starts_each_intermediate_minor_in_order_and_resumes() {
    let site = Site::new("multistep");
    site.seed(V3_4, 5, &[]);
    let log = site.root().join("calls.log");
    let never = "#!/bin/sh\necho never >&2\nexit 1\n".to_string();
    for v in ["3.5.30", "3.6.0", "3.7.0"] {
        for tool in ["etcd", "etcdctl", "etcdutl"] {
            let p = site.bin.join(format!("{tool}-{v}"));
            let _ = fs::remove_file(&p);
            let script = match (tool, v) {
                ("etcd", "3.5.30" | "3.6.0") => format!(
                    "#!/bin/sh\necho \"{tool}-{v}\" >> '{}'\nexec '{}' \"$@\"\n",
                    log.display(),
                    etcd_bin(V3_5_30).display()
                ),
                _ => never.clone(),
            };
            fs::write(&p, script).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let bundle = ["--bundled-versions", "3.4.23,3.5.30,3.6.0,3.7.0"];
    let dry = site.migrate_with("3.7.0/etcd3", &[], &[&bundle[..], &["--dry-run"]].concat());
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        plan.contains("step 1: upgrade: start etcd 3.5.30")
            && plan.contains("step 2: upgrade: start etcd 3.6.0")
            && plan.contains("step 3: write 3.7.0/etcd3"),
        "{plan}"
    );
    assert!(!log.exists(), "--dry-run ran something");
    // Crash right after the first step recorded 3.5.30: the rerun starts 3.6.0 next.
    let out = site.migrate_with(
        "3.7.0/etcd3",
        &[("ETCDTOOLS_MIGRATE_CRASH_AT", "after-version-write")],
        &bundle,
    );
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(site.version_txt(), "3.5.30/etcd3");
    assert_eq!(fs::read_to_string(&log).unwrap(), "etcd-3.5.30\n");
    let out = site.migrate_with("3.7.0/etcd3", &[], &bundle);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(site.version_txt(), "3.7.0/etcd3");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        // Each upgrade step first reads the data with the etcd that wrote it
        // (src/migrate/verify.rs): the rerun starts the 3.5.30 stand-in once more.
        "etcd-3.5.30\netcd-3.5.30\netcd-3.6.0\n"
    );
}

#[test]
fn wrapper_passes_flags_and_exit_status_through() {
    let site = Site::new("wrapper");
    let out = site.migrate_with("3.5.1/etcd3", &[], &["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("migrate "));
    let out = site.migrate_with("3.5.1/etcd3", &[], &["--nope"]);
    assert_eq!(out.status.code(), Some(2));
    // Without DO_NOT_MOVE_BINARIES=true, etcd-<target>/etcdctl-<target> are copied to
    // etcd/etcdctl in --bin-dir (here on an empty data dir).
    let out = site.migrate_with("3.5.1/etcd3", &[("DO_NOT_MOVE_BINARIES", "")], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for tool in ["etcd", "etcdctl"] {
        let copied = fs::read(site.bin.join(tool)).unwrap();
        assert!(copied == fs::read(site.bin.join(format!("{tool}-3.5.1"))).unwrap());
        let mode = fs::metadata(site.bin.join(tool))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "{tool} not executable");
    }
    // Without a migrate beside it, the script falls back to /usr/local/bin/migrate.
    fs::remove_file(site.script.with_file_name("migrate")).unwrap();
    let out = site.migrate_with("3.5.1/etcd3", &[], &["--version"]);
    if !Path::new("/usr/local/bin/migrate").exists() {
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("/usr/local/bin/migrate"),
            "{}",
            stderr(&out)
        );
    }
}

/// etcd2 data without a bbolt db (as etcd 2.x leaves it) and without version.txt: the version
/// comes from the v2 store in the snap + WAL (`/0/version`), and the plan converts it.
/// The data is the repository's 3.4.23 v2 fixture with its db removed; --dry-run only.
#[test]
fn detects_etcd2_data_from_the_v2_store_when_version_txt_is_missing() {
    let site = Site::new("detect-v2");
    fs::create_dir_all(site.data.parent().unwrap()).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/3.4.23/v2-rollback-minimal");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(&site.data)
        .status()
        .unwrap()
        .success());
    fs::remove_file(site.data.join("member/snap/db")).unwrap();
    let _ = fs::remove_file(site.data.join("version.txt"));
    let before = tree(site.root());
    let out = site.migrate_with("3.4.23/etcd3", &[], &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("detected etcd 3.4 from the files (etcd2 data, v2 store /0/version = 3.4.0)"),
        "{}",
        stderr(&out)
    );
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        plan.contains("current 3.4.23/etcd2, target 3.4.23/etcd3"),
        "{plan}"
    );
    assert!(plan.contains("storage etcd2 -> etcd3 at 3.4.23"), "{plan}");
    assert_eq!(tree(site.root()), before, "--dry-run changed something");
}

/// One member of a stopped 3-member cluster cannot get a ready etcd alone: the downgrade fails
/// after --ready-timeout with the quorum hint, kills its etcd and changes nothing.
#[test]
fn a_lone_member_of_a_cluster_times_out_with_a_clear_message_and_nothing_changed() {
    let mut cluster = TestCluster::start(V3_5_1, 3, FAST);
    let initial_cluster = cluster.initial_cluster.clone();
    for m in cluster.members.iter_mut() {
        m.stop();
    }
    let m0 = &cluster.members[0];
    fs::write(m0.data_dir.join("version.txt"), "3.5.1/etcd3").unwrap();
    let site = Site::new("lone");
    let data = m0.data_dir.display().to_string();
    let before = tree(&m0.data_dir);
    let started = Instant::now();
    // The cluster's token, or the restore would give it other IDs (refused before any step).
    let creds = format!("{} --initial-cluster-token=test-cluster", FAST.join(" "));
    let out = site.migrate_with(
        "3.4.23/etcd3",
        &[
            ("ETCD_CREDS", &creds),
            ("ETCD_NAME", "m0"),
            ("DATA_DIRECTORY", &data),
            ("INITIAL_CLUSTER", &initial_cluster),
            ("LISTEN_PEER_URLS", &m0.peer_url),
            ("INITIAL_ADVERTISE_PEER_URLS", &m0.peer_url),
        ],
        &["--ready-timeout", "2s"],
    );
    assert_failed_with(&out, "not ready at");
    assert!(stderr(&out).contains("lists 3 members"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(port_is_free(site.client_port), "etcd left running");
    // etcd itself may touch its WAL/db while it runs; what matters is that migrate did not
    // swap anything: same version.txt, no .restore/.bak/.snapshot.db in the data dir.
    assert_eq!(
        fs::read_to_string(m0.data_dir.join("version.txt")).unwrap(),
        "3.5.1/etcd3"
    );
    for name in [".bak", ".restore", ".snapshot.db", ".restore.complete"] {
        assert!(!m0.data_dir.join(name).exists(), "{name} left behind");
    }
    let after = tree(&m0.data_dir);
    assert!(before.keys().all(|k| after.contains_key(k)), "files lost");
}

/// 3.6 -> 3.5 is `etcdutl-<3.6> migrate --data-dir <dir> --target-version 3.5` on the
/// stopped data dir (etcd's 3.6 downgrade guide), after a backup. No etcd 3.6 exists here, so
/// `etcd-3.6.0`/`etcdctl-3.6.0`/`etcdutl-3.6.0` are STAND-INS: etcd/etcdctl exec the real
/// 3.5.1 ones (verify reads the data before the step with "3.6.0"); the etcdutl one records
/// its argv and changes nothing (on real 3.5.1 data, labelled 3.6.0, the real one would find
/// the storage version already 3.5). Real etcd 3.5.1 must serve every key afterwards.
/// tests/versions.rs runs the real thing wherever an etcd-3.6.x is in the bin dir.
#[test]
fn downgrade_from_3_6_runs_etcdutl_migrate_on_the_stopped_data_dir() {
    let site = Site::new("etcdutl");
    let kv = site.seed(V3_5_1, 30, &[]);
    fs::write(site.data.join("version.txt"), "3.6.0/etcd3").unwrap();
    let argv = site.root().join("etcdutl-argv");
    for (tool, body) in [
        (
            "etcd",
            format!("exec '{}' \"$@\"", etcd_bin(V3_5_1).display()),
        ),
        (
            "etcdctl",
            format!("exec '{}' \"$@\"", etcdctl_bin(V3_5_1).display()),
        ),
        ("etcdutl", format!("echo \"$@\" >> '{}'", argv.display())),
    ] {
        let p = site.bin.join(format!("{tool}-3.6.0"));
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = site.migrate_with(
        "3.5.1/etcd3",
        &[],
        &["--bundled-versions", "3.5.1,3.6.0", "--log-level", "debug"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(&argv).unwrap(),
        format!(
            "migrate --data-dir {} --target-version 3.5\n",
            site.data.display()
        )
    );
    assert_eq!(site.version_txt(), "3.5.1/etcd3");
    assert!(site.data.join(".bak/member/snap/db").exists());
    let etcd = site.start(V3_5_1);
    assert_eq!(all_keys(&etcd.client_url), kv);
}

/// kubeadm's layout: the data dir `/var/lib/etcd` is itself a mount point (the hostPath, or
/// a dedicated disk), holding `lost+found` as mkfs.ext4 leaves it. The mount goes first on
/// drop, then the site's temp dir.
struct Mounted {
    _mnt: Tmpfs,
    site: Site,
}

impl Mounted {
    fn new(label: &str, size: &str) -> Mounted {
        let mut site = Site::new(label);
        site.data = site.root().join("var/lib/etcd");
        let mnt = Tmpfs::mount(&site.data, size);
        fs::create_dir(site.data.join("lost+found")).unwrap();
        Mounted { _mnt: mnt, site }
    }

    /// A copy of `from`'s data into the mount (the mount point itself stays).
    fn copy_from(&self, from: &Site) {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(from.data.join("."))
            .arg(&self.site.data)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// What must hold after any run: still a mount point, nothing in the parent but the data
    /// dir, nothing in the data dir but etcd's, ours and lost+found.
    fn check_layout(&self, label: &str) {
        use std::os::unix::fs::MetadataExt;
        let data = &self.site.data;
        let parent = data.parent().unwrap();
        assert_ne!(
            fs::metadata(data).unwrap().dev(),
            fs::metadata(parent).unwrap().dev(),
            "{label}: no longer a mount point"
        );
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(parent), vec!["etcd"], "{label}: left in the parent");
        for n in names(data) {
            assert!(
                ["member", "version.txt", "lost+found", ".bak"].contains(&n.as_str()),
                "{label}: {n} left in the data dir"
            );
        }
    }
}

/// kubeadm's layout survives a downgrade (the rename of a mount point fails with EBUSY: the
/// swap moves member/ inside it), a SIGKILL at every crash point and at timed moments, and
/// leaves nothing in the parent directory.
#[test]
fn a_mount_point_data_dir_is_downgraded_and_survives_a_kill_at_every_point() {
    let template = Site::new("mnt-template");
    let kv = template.seed(V3_5_1, 100, &[]);
    let timing = Mounted::new("mnt-timing", "400m");
    timing.copy_from(&template);
    let t0 = Instant::now();
    let out = timing.site.migrate("3.4.23/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    let full = t0.elapsed();
    timing.check_layout("plain run");
    assert_eq!(
        fs::read_to_string(timing.site.data.join(".bak/version.txt")).unwrap(),
        "3.5.1/etcd3"
    );
    let etcd = timing.site.start(V3_4);
    assert_eq!(all_keys(&etcd.client_url), kv);
    drop(etcd);
    drop(timing);
    in_parallel(crash_cases(DOWNGRADE_POINTS, full), move |label, delay| {
        let m = Mounted::new("mnt-crash", "400m");
        m.copy_from(&template);
        crash_and_rerun(&m.site, label, delay, "3.4.23/etcd3", V3_4, &kv);
        m.check_layout(label);
    });
}

/// The same for an upgrade that starts etcd: real etcd 3.3.25 data to 3.5.1, so migrate
/// starts etcd 3.4.23 on the mount point, then writes 3.5.1; killed at every crash point of
/// that and at timed moments.
#[test]
fn a_mount_point_data_dir_is_upgraded_through_a_minor_and_survives_a_kill_at_every_point() {
    let template = Site::new("mntup-template");
    let kv = template.seed(V3_3, 50, &[]);
    let timing = Mounted::new("mntup-timing", "600m");
    timing.copy_from(&template);
    let t0 = Instant::now();
    let out = timing.site.migrate("3.5.1/etcd3");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("upgrading etcd to 3.4.23"),
        "{}",
        stderr(&out)
    );
    let full = t0.elapsed();
    timing.check_layout("plain run");
    drop(timing);
    let points = &[
        "etcd-started",
        "etcd-ready",
        "etcd-stopped",
        "after-version-write",
    ];
    in_parallel(crash_cases(points, full), move |label, delay| {
        let m = Mounted::new("mntup-crash", "600m");
        m.copy_from(&template);
        crash_and_rerun(&m.site, label, delay, "3.5.1/etcd3", V3_5_1, &kv);
        m.check_layout(label);
    });
}

/// The message of each log line (after simple_logger's `... LEVEL [target] `).
fn log_messages(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, m)| m.to_string()))
        .collect()
}

/// What a run does, from `--dry-run`'s stdout or the real run's log: the recovery lines,
/// the steps, and whether there is nothing to do.
fn recovery_and_steps(lines: &[String], real: bool) -> (Vec<String>, Vec<String>, bool) {
    let recover = lines
        .iter()
        .filter(|l| l.starts_with("recover: "))
        .cloned()
        .collect();
    let steps = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("step ") && l.contains(": "))
        .filter(|l| !real || l.starts_with("  step "))
        .map(|l| l.trim().to_string())
        .collect();
    let nothing = lines
        .iter()
        .any(|l| l == "nothing to do" || l.starts_with("data is already at the target"));
    (recover, steps, nothing)
}

/// Runs `--dry-run` (which must change nothing), then the real run (which must succeed),
/// and checks that the dry run printed exactly the recovery and the steps the run logged.
/// Returns the recovery lines and the real run.
fn dry_run_then_run(site: &Site, target: &str, label: &str) -> (Vec<String>, Output) {
    let before = tree(site.root());
    let dry = site.migrate_with(target, &[], &["--dry-run"]);
    assert!(dry.status.success(), "{label}: {}", stderr(&dry));
    assert_eq!(
        tree(site.root()),
        before,
        "{label}: --dry-run changed something"
    );
    let printed: Vec<String> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let real = site.migrate(target);
    assert!(real.status.success(), "{label}: {}", stderr(&real));
    let said = recovery_and_steps(&printed, false);
    let did = recovery_and_steps(&log_messages(&real), true);
    assert_eq!(said, did, "{label}: --dry-run said {printed:#?}");
    (said.0, real)
}

/// For each state an interrupted run can leave (killed at a crash point, or an older
/// release's swap beside a missing data dir), `--dry-run` changes nothing and prints exactly
/// the recovery and the plan the real run then logs; the real run ends at the target.
#[test]
fn dry_run_prints_what_the_real_run_then_does_for_every_leftover_state() {
    let template = Site::new("dry-template");
    let kv = template.seed(V3_5_1, 30, &[]);
    let target = "3.4.23/etcd3";
    let crash = |p: &'static str| {
        move |site: &Site| {
            let out = site.migrate_with(target, &[("ETCDTOOLS_MIGRATE_CRASH_AT", p)], &[]);
            assert_eq!(out.status.signal(), Some(9), "{p}");
        }
    };
    let beside = |site: &Site, suffix: &str| {
        let mut s = site.data.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    let done = |site: &Site| assert!(site.migrate(target).status.success());
    type Prepare = Box<dyn Fn(&Site)>;
    let states: Vec<(&str, Prepare)> = vec![
        ("clean", Box::new(|_: &Site| {})),
        ("snapshot-saved", Box::new(crash("snapshot-saved"))),
        ("restore-complete", Box::new(crash("restore-complete"))),
        ("moved-to-backup", Box::new(crash("moved-to-backup"))),
        ("member-swapped", Box::new(crash("member-swapped"))),
        (
            "legacy restore swap",
            Box::new(move |site: &Site| {
                done(site);
                fs::rename(&site.data, beside(site, ".restore")).unwrap();
                fs::write(beside(site, ".restore.complete"), "").unwrap();
            }),
        ),
        (
            "legacy rollback2 swap",
            Box::new(move |site: &Site| {
                done(site);
                fs::rename(&site.data, beside(site, ".rollback.new")).unwrap();
                fs::create_dir(beside(site, ".rollback.backup")).unwrap();
                fs::write(beside(site, ".snapshot.db"), "stale").unwrap();
            }),
        ),
    ];
    for (label, prepare) in states {
        let site = Site::new("dry");
        copy_data(&template, &site);
        prepare(&site);
        let (said, _) = dry_run_then_run(&site, target, label);
        assert_eq!(said.is_empty(), label == "clean", "{label}: {said:?}");
        assert_eq!(site.version_txt(), target, "{label}");
        let etcd = site.start(V3_4);
        assert_eq!(all_keys(&etcd.client_url), kv, "{label}");
    }
}

/// A symlinked data dir (absolute and relative link) is downgraded at its target and the
/// link stays a link; `.` (run from inside the data dir) and `..` (from inside member/) name
/// the same real dir. Nothing is left beside the data dir or the link.
#[test]
fn symlinked_and_dot_spellings_are_migrated_at_the_real_dir() {
    let template = Site::new("spell-template");
    let kv = template.seed(V3_5_1, 20, &[]);
    for label in SPELLINGS {
        let site = Site::new(label);
        copy_data(&template, &site);
        let (given, cwd) = spell(&site.data, &site.root().join("disk/etcd"), label);
        let given = given.display().to_string();
        let out = site
            .command("3.4.23/etcd3", &[("DATA_DIRECTORY", &given)], &[])
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{label}: {}", stderr(&out));
        let link = is_symlink(&site.data);
        assert_eq!(
            link,
            label.ends_with("link"),
            "{label}: the link was replaced"
        );
        let dir = fs::canonicalize(&site.data).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(".bak/version.txt")).unwrap(),
            "3.5.1/etcd3",
            "{label}"
        );
        let beside: Vec<_> = fs::read_dir(site.data.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec!["data"], "{label}: left beside the data dir");
        assert_eq!(site.version_txt(), "3.4.23/etcd3", "{label}");
        let etcd = site.start(V3_4);
        assert_eq!(all_keys(&etcd.client_url), kv, "{label}");
    }
}

/// The pre-flight of `--dry-run` is the real run's: too little space on the data dir's own
/// file system (a 100 MB tmpfs mounted as the data dir, holding etcd 3.5.1's 64 MB WAL), a
/// missing data dir on a read-only file system and an etcd running on the data dir are
/// refused by both with the same message, nothing changed.
#[test]
fn dry_run_refuses_what_the_real_run_refuses_with_the_same_message() {
    // Seeded elsewhere and copied in: etcd 3.5.1 preallocates its next 64 MB WAL segment in
    // the background, which on the 100 MB tmpfs itself made the seeding etcd exit at random.
    let template = Site::new("nospace-template");
    template.seed(V3_5_1, 10, &[]);
    let m = Mounted::new("nospace", "100m");
    m.copy_from(&template);
    let before = tree(m.site.root());
    let out = m.site.migrate("3.4.23/etcd3");
    assert_failed_with(&out, "not enough free disk space on the file system of");
    assert!(failure_line(&out).contains(&m.site.data.display().to_string()));
    assert_eq!(tree(m.site.root()), before);
    assert_dry_run_refuses_alike(&m.site, "3.4.23/etcd3", &[], &[], &out);
    drop(m);

    // A missing data dir on a read-only file system cannot be created.
    let site = Site::new("ro");
    let ro = site.data.parent().unwrap().to_path_buf();
    let mnt = Tmpfs::mount(&ro, "1m");
    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&ro)
        .status()
        .unwrap()
        .success();
    assert!(ok, "remount,ro failed");
    let out = site.migrate("3.4.23/etcd3");
    assert_failed_with(&out, "failed to create data directory");
    assert!(
        failure_line(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert_dry_run_refuses_alike(&site, "3.4.23/etcd3", &[], &[], &out);
    drop(mnt);

    let site = Site::new("running");
    site.seed(V3_5_1, 10, &[]);
    let etcd = site.start(V3_5_1);
    let out = site.migrate_with(
        "3.4.23/etcd3",
        &[],
        &["--port", &free_ports(1).unwrap()[0].to_string()],
    );
    assert!(!out.status.success(), "migrated under a running etcd");
    assert_dry_run_refuses_alike(
        &site,
        "3.4.23/etcd3",
        &[],
        &["--port", &free_ports(1).unwrap()[0].to_string()],
        &out,
    );
    drop(etcd);
}

/// Bytes of the regular files under `p` (what a copy of it takes).
fn bytes_under(p: &Path) -> u64 {
    let m = fs::symlink_metadata(p).unwrap();
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(p)
        .unwrap()
        .map(|e| bytes_under(&e.unwrap().path()))
        .sum()
}

/// A tmpfs data dir holding `template`'s data plus `extra` bytes of room; with `old_bak`, a
/// copy of the data as `.bak` (what an earlier migrate left).
fn mounted_copy(label: &str, template: &Site, extra: u64, old_bak: bool) -> Mounted {
    let size = bytes_under(&template.data);
    let copies = if old_bak { 2 } else { 1 };
    let m = Mounted::new(label, &format!("{}k", (copies * size + extra) / 1024));
    m.copy_from(template);
    if old_bak {
        let bak = m.site.data.join(".bak");
        copy_tree(&template.data.join("member"), &bak.join("member"));
        fs::copy(template.data.join("version.txt"), bak.join("version.txt")).unwrap();
    }
    m
}

/// The free-space pre-flight asks for what the steps write: an upgrade step needs room for one
/// backup copy, and an old `.bak` is removed first (the old check wanted twice the data
/// free besides it); a rerun after a crash inside the upgrade on the nearly full file system
/// drops the changed member/ before putting the backup back, and finishes; data that really
/// does not fit is refused, saying what each part needs, the data dir byte for byte as before.
#[test]
fn free_space_is_what_the_steps_write_and_a_crashed_upgrade_reruns_on_a_full_disk() {
    // 3.3 -> 3.5: an upgrade step to 3.4, then version.txt.
    let template = Site::new("space-template");
    let kv = template.seed(V3_3, 10, &[]);
    let size = bytes_under(&template.data);
    let target = "3.5.1/etcd3";
    // Room for one copy and etcd's preallocated 64 MB WAL segment, not for two copies.
    let room = 96 << 20;
    assert!(
        2 * size > room + (16 << 20),
        "the seeded data is {size} bytes"
    );

    // `room` besides the data and an old .bak: the upgrade passes.
    let m = mounted_copy("space-once", &template, room, true);
    let out = m.site.migrate(target);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(m.site.version_txt(), target);
    let etcd = m.site.start(V3_5_1);
    assert_eq!(all_keys(&etcd.client_url), kv);
    drop(etcd);
    drop(m);

    // A crash inside the upgrade (its first etcd is ready, the backup made), then a rerun
    // with less than `room` left besides the data and that backup: it finishes.
    let m = mounted_copy("space-rerun", &template, size + room, false);
    let env = [("ETCDTOOLS_MIGRATE_CRASH_AT", "etcd-ready")];
    let out = m.site.migrate_with(target, &env, &[]);
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    assert!(m.site.data.join(".bak/member").is_dir());
    // The killed migrate's etcd dies with it (PDEATHSIG) but may take a moment to exit and
    // let go of the data dir; the rerun would rightly refuse a running etcd.
    assert!(
        port_is_free(m.site.client_port) && port_is_free(m.site.peer_port),
        "etcd outlived migrate"
    );
    // The rerun dies again right after it dropped the changed member/: the next one puts
    // the backup back from the scan.
    let env = [("ETCDTOOLS_MIGRATE_CRASH_AT", "member-dropped")];
    let out = m.site.migrate_with(target, &env, &[]);
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    assert!(!m.site.data.join("member").exists());
    let crashed = tree(m.site.root());
    let dry = m.site.migrate_with(target, &[], &["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(plan.contains("put its backup"), "{plan}");
    assert_eq!(tree(m.site.root()), crashed, "--dry-run changed files");
    let out = m.site.migrate(target);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("put its backup"), "{}", stderr(&out));
    assert_eq!(m.site.version_txt(), target);
    m.check_layout("space-rerun");
    let etcd = m.site.start(V3_5_1);
    assert_eq!(all_keys(&etcd.client_url), kv);
    drop(etcd);
    drop(m);

    // No room for a backup copy: refused, naming what it needs, nothing changed.
    let m = mounted_copy("space-none", &template, size / 2, false);
    let before = tree(m.site.root());
    let out = m.site.migrate(target);
    assert_failed_with(&out, "not enough free disk space on the file system of");
    let line = failure_line(&out);
    let member = bytes_under(&template.data.join("member"));
    assert!(
        line.contains(&format!("backup copy of member/ {member}")),
        "{line}"
    );
    assert!(line.contains("make room there"), "{line}");
    assert_eq!(tree(m.site.root()), before);
    assert_dry_run_refuses_alike(&m.site, target, &[], &[], &out);
}
