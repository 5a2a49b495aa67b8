//! Shared harness for integration tests: real etcd binaries from `scripts/fetch-etcd.sh`,
//! temp dirs, and members/clusters on 127.0.0.1 with free ports that stop when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{free_ports, EtcdProcess, EtcdSpec, ProcessError};

/// The etcd versions this machine can have (see scripts/fetch-etcd.sh).
pub const V3_3: &str = "3.3.25";
pub const V3_4: &str = "3.4.23";
pub const V3_5_0: &str = "3.5.0";
pub const V3_5_1: &str = "3.5.1";
pub const V3_5_16: &str = "3.5.16";
pub const V3_5_30: &str = "3.5.30";
/// Every version scripts/fetch-etcd.sh puts in the bin dir.
pub const ALL_VERSIONS: [&str; 6] = [V3_3, V3_4, V3_5_0, V3_5_1, V3_5_16, V3_5_30];

/// The highest version of `minor` (`"3.5"`) in the bin dir: what migrate picks when the files
/// name only the minor and the bundle is the whole bin dir.
pub fn highest_in_bin_dir(minor: &str) -> String {
    let mut found: Vec<semver::Version> = std::fs::read_dir(etcd_bin_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v: semver::Version = name.strip_prefix("etcd-")?.parse().ok()?;
            (format!("{}.{}", v.major, v.minor) == minor).then_some(v)
        })
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no etcd {minor}.x in the bin dir"))
        .to_string()
}

/// The dir holding `etcd-<v>`, `etcdctl-<v>`, `etcdutl-<v>`: `$ETCD_BIN_DIR` or `.cache/etcd-bin`.
pub fn etcd_bin_dir() -> PathBuf {
    let dir = std::env::var_os("ETCD_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/etcd-bin"));
    for v in ALL_VERSIONS {
        assert!(
            dir.join(format!("etcd-{v}")).exists(),
            "no etcd-{v} in {}: run ./scripts/fetch-etcd.sh (./scripts/test.sh does)",
            dir.display()
        );
    }
    dir
}

/// `root/bin`: a symlink to every real etcd binary (a bin dir of the image's shape).
pub fn link_etcd_bin_dir(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for entry in std::fs::read_dir(etcd_bin_dir()).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name())).unwrap();
    }
    bin
}

/// `root/sbin`: `migrate-if-needed.sh` beside a `migrate` symlink, as the image has them.
/// Returns the script's path.
pub fn install_migrate_script(root: &Path) -> PathBuf {
    let sbin = root.join("sbin");
    std::fs::create_dir(&sbin).unwrap();
    let script = sbin.join("migrate-if-needed.sh");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/migrate-if-needed.sh"),
        &script,
    )
    .unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_migrate"), sbin.join("migrate")).unwrap();
    script
}

pub fn etcd_bin(version: &str) -> PathBuf {
    etcd_bin_dir().join(format!("etcd-{version}"))
}

pub fn etcdctl_bin(version: &str) -> PathBuf {
    etcd_bin_dir().join(format!("etcdctl-{version}"))
}

pub fn etcdutl_bin(version: &str) -> PathBuf {
    etcd_bin_dir().join(format!("etcdutl-{version}"))
}

/// Runs the openssl CLI in `dir` (test certificates), failing with its stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory under the system temp dir, removed on drop (kept when `KEEP_TEST_DIRS` is set).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("etcdtools-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One real etcd member on 127.0.0.1 with a temp data dir (unless given one). Stops on drop.
pub struct TestEtcd {
    pub process: Option<EtcdProcess>,
    pub version: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    _temp: Option<TempDir>,
}

impl TestEtcd {
    /// Starts etcd `version` with a fresh data dir and waits until it serves.
    pub fn start(version: &str, extra_args: &[&str]) -> TestEtcd {
        let temp = TempDir::new(&format!("etcd-{version}"));
        let data_dir = temp.path().join("data");
        let mut etcd = TestEtcd::start_on(version, &data_dir, "default", extra_args);
        etcd._temp = Some(temp);
        etcd
    }

    /// Starts etcd `version` on `data_dir` (created by etcd if missing) as member `name`.
    ///
    /// The ports are free when chosen, but another test may take one before etcd binds it:
    /// etcd then exits with "address already in use" before writing any data, and it is
    /// started again on other ports (for a data dir that did not exist yet: an existing one
    /// may remember its peer URL).
    pub fn start_on(version: &str, data_dir: &Path, name: &str, extra_args: &[&str]) -> TestEtcd {
        let fresh = !data_dir.exists();
        for attempt in 1.. {
            let ports = free_ports(2).expect("free ports");
            let mut spec = EtcdSpec::single(&etcd_bin(version), name, data_dir, ports[0], ports[1]);
            spec.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
            let mut process = EtcdProcess::start(&spec).expect("start etcd");
            match process.wait_ready(&HttpClient::plain(), READY_TIMEOUT) {
                Ok(_) => return Self::from_process(version, &spec, process),
                Err(ProcessError::ExitedEarly { output, .. })
                    if fresh
                        && attempt < 3
                        && output.iter().any(|l| l.contains("address already in use")) =>
                {
                    eprintln!("etcd {version}: a port was taken meanwhile; other ports");
                    let _ = std::fs::remove_dir_all(data_dir);
                }
                Err(e) => panic!("etcd {version} did not get ready: {e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    pub fn start_spec(version: &str, spec: EtcdSpec) -> TestEtcd {
        let mut process = EtcdProcess::start(&spec).expect("start etcd");
        process
            .wait_ready(&HttpClient::plain(), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("etcd {version} did not get ready: {e}"));
        Self::from_process(version, &spec, process)
    }

    fn from_process(version: &str, spec: &EtcdSpec, process: EtcdProcess) -> TestEtcd {
        TestEtcd {
            client_url: spec.client_url().to_string(),
            peer_url: spec.peer_url.clone(),
            data_dir: spec.data_dir.clone(),
            process: Some(process),
            version: version.to_string(),
            _temp: None,
        }
    }

    /// `host:port` of the client URL, for `etcdctl --endpoints`.
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// Stops etcd gracefully (SIGTERM) and keeps the data dir for inspection by the test.
    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            let status = p.stop(STOP_GRACE).expect("stop etcd");
            assert_stopped_cleanly(&self.version, status);
        }
    }
}

/// How long a stop waits after SIGTERM before SIGKILL. etcd stops in milliseconds; on a
/// loaded CI machine it can take seconds, and a SIGKILL leaves writes that the db has not
/// committed yet only in the WAL (which the tools then rightly refuse as a lagging db).
pub const STOP_GRACE: Duration = Duration::from_secs(90);

/// etcd exits on SIGTERM after closing its db (it re-raises SIGTERM: "signal 15"). Killed by
/// SIGKILL, it did not get there: the data dir is not what a clean stop leaves. (An etcd that
/// had exited by itself is the test's business.)
fn assert_stopped_cleanly(version: &str, status: std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() != Some(libc::SIGKILL),
        "etcd {version} did not stop cleanly within {STOP_GRACE:?} of SIGTERM ({status}): \
         its data dir may hold writes only in the WAL"
    );
}

/// Stops `p` (SIGTERM, [`STOP_GRACE`]) and fails if it had to be SIGKILLed (see
/// [`assert_stopped_cleanly`]): for tests that read the data dir afterwards.
pub fn stop_cleanly(p: EtcdProcess, version: &str) {
    let status = p.stop(STOP_GRACE).expect("stop etcd");
    assert_stopped_cleanly(version, status);
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        if let Some(p) = self.process.take() {
            let status = p.stop(STOP_GRACE);
            // A test that goes on with the data dir must not see an unclean stop as its own bug.
            if let (Ok(status), false) = (status, std::thread::panicking()) {
                assert_stopped_cleanly(&self.version, status);
            }
        }
    }
}

/// A cluster of `n` members of one version on loopback, all started together.
pub struct TestCluster {
    pub members: Vec<TestEtcd>,
    /// `--initial-cluster` the members run with (`m0=http://127.0.0.1:<peer>,...`).
    pub initial_cluster: String,
    _temp: TempDir,
}

impl TestCluster {
    pub fn start(version: &str, n: usize, extra_args: &[&str]) -> TestCluster {
        let temp = TempDir::new(&format!("cluster-{version}"));
        let ports = free_ports(2 * n).expect("free ports");
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        // Start every process first: a member only becomes ready once a quorum is up.
        let mut started = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut spec = EtcdSpec::single(
                &etcd_bin(version),
                name,
                &temp.path().join(name),
                ports[2 * i],
                ports[2 * i + 1],
            );
            spec.initial_cluster = Some(initial_cluster.clone());
            spec.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
            spec.extra_args
                .push("--initial-cluster-token=test-cluster".into());
            started.push((EtcdProcess::start(&spec).expect("start etcd"), spec));
        }
        let client = HttpClient::plain();
        let members = started
            .into_iter()
            .map(|(mut process, spec)| {
                process
                    .wait_ready(&client, READY_TIMEOUT)
                    .unwrap_or_else(|e| panic!("cluster member {} not ready: {e}", spec.name));
                TestEtcd {
                    client_url: spec.client_url().to_string(),
                    peer_url: spec.peer_url.clone(),
                    data_dir: spec.data_dir.clone(),
                    process: Some(process),
                    version: version.to_string(),
                    _temp: None,
                }
            })
            .collect();
        TestCluster {
            members,
            initial_cluster,
            _temp: temp,
        }
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Every entry under `dir` (relative path -> file contents; directories map to `None`), to
/// prove that a command changed nothing.
pub fn file_tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// A writable copy of the tree at `from` (fixture files may be read-only) at `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            let mut perm = std::fs::metadata(&dest).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&dest, perm).unwrap();
        }
    }
}

/// [`file_tree`] of what etcd and the version file own: entries whose first component does
/// not start with `.` (the tools keep their backups and staging there, see
/// `etcdtools::datadir::names`).
pub fn etcd_tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    file_tree(dir)
        .into_iter()
        .filter(|(p, _)| {
            !p.components()
                .next()
                .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// `mount -t tmpfs` on a dir (as root), unmounted on drop, also when the test fails.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mount -t tmpfs on {} failed: these tests need root (a mount point as data dir)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for args in [&[][..], &["-l"]] {
            let ok = std::process::Command::new("umount")
                .args(args)
                .arg(&self.0)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The spellings of one data dir that the tools must treat as that dir: an absolute and a
/// relative symlink to it, `.` from inside it, `..` from inside its `member/`.
pub const SPELLINGS: &[&str] = &["abs-link", "rel-link", "dot", "dotdot"];

/// Sets up `spelling` for the data dir `dir` (for a link: the data moves to `real`, `dir`
/// becomes the link) and returns the `--data-dir` value and the directory to run in.
pub fn spell(dir: &Path, real: &Path, spelling: &str) -> (PathBuf, PathBuf) {
    match spelling {
        "abs-link" | "rel-link" => {
            std::fs::create_dir_all(real.parent().unwrap()).unwrap();
            std::fs::rename(dir, real).unwrap();
            let to = if spelling == "abs-link" {
                real.to_path_buf()
            } else {
                relative(dir.parent().unwrap(), real)
            };
            std::os::unix::fs::symlink(&to, dir).unwrap();
            (dir.to_path_buf(), dir.parent().unwrap().to_path_buf())
        }
        "dot" => (PathBuf::from("."), dir.to_path_buf()),
        "dotdot" => (PathBuf::from(".."), dir.join("member")),
        other => panic!("no spelling {other}"),
    }
}

/// `to` as seen from the directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

pub fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
}

/// Keys and values as etcd serves them.
pub type Kv = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// One put through etcd's JSON gateway at `url` under `prefix` (`/v3`; `/v3beta` on 3.3).
pub fn gateway_put(url: &str, prefix: &str, key: &[u8], value: &[u8]) {
    HttpClient::plain()
        .post_json(
            &format!("{url}{prefix}/kv/put"),
            &serde_json::json!({
                "key": etcdtools::base64::encode(key),
                "value": etcdtools::base64::encode(value),
            }),
            Duration::from_secs(10),
        )
        .unwrap();
}

/// Every key in the keyspace with its value, through the `/v3` gateway at `url`.
pub fn gateway_all_keys(url: &str) -> Kv {
    let r = HttpClient::plain()
        .post_json(
            &format!("{url}/v3/kv/range"),
            &serde_json::json!({"key": "AA==", "range_end": "AA=="}),
            Duration::from_secs(10),
        )
        .unwrap();
    let decode = |kv: &serde_json::Value, n: &str| {
        etcdtools::base64::decode(kv.get(n).and_then(|v| v.as_str()).unwrap_or("")).unwrap()
    };
    r.get("kvs")
        .and_then(|k| k.as_array())
        .map(|kvs| {
            kvs.iter()
                .map(|kv| (decode(kv, "key"), decode(kv, "value")))
                .collect()
        })
        .unwrap_or_default()
}
