//! migrate's and rollback2's pre-flight refusals on data written by real etcd 3.4.23 / 3.5.1:
//! etcd2 data, a stale version.txt, peer TLS from ETCD_CREDS, member identity, a running etcd,
//! `member/` given as the data dir, a torn last WAL record, progress while waiting, bad flag
//! values, and the cause of an etcd failure kept in the message. Every refusal must leave the
//! data dir (and its parent) unchanged byte for byte, a lock file aside.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use etcdtools::base64 as b64;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{free_ports, run_tool, EtcdProcess, EtcdSpec, ProcessError};

const FAST: &[&str] = &["--heartbeat-interval=10", "--election-timeout=100"];
const NAME: &str = "etcd-h";

/// A temp root holding `data/` (the data dir), a bin dir of links to the real binaries, and
/// the member's ports.
struct Member {
    tmp: TempDir,
    data: PathBuf,
    bin: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// `http` or `https`.
    scheme: &'static str,
    /// Peer TLS flags etcd runs with (and ETCD_CREDS carries).
    tls: Vec<String>,
}

impl Member {
    fn new(label: &str) -> Member {
        let tmp = TempDir::new(&format!("preflight-{label}"));
        let bin = link_etcd_bin_dir(tmp.path());
        let ports = free_ports(2).unwrap();
        Member {
            data: tmp.path().join("data"),
            bin,
            client_port: ports[0],
            peer_port: ports[1],
            scheme: "http",
            tls: Vec::new(),
            tmp,
        }
    }

    fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.peer_port)
    }

    fn spec(&self, version: &str) -> EtcdSpec {
        let mut spec = EtcdSpec::single(
            &etcd_bin(version),
            NAME,
            &self.data,
            self.client_port,
            self.peer_port,
        );
        spec.peer_url = self.peer_url();
        spec.extra_args = FAST.iter().map(|s| s.to_string()).collect();
        spec.extra_args.extend(self.tls.iter().cloned());
        spec
    }

    fn start(&self, version: &str, extra: &[&str]) -> TestEtcd {
        let mut spec = self.spec(version);
        spec.extra_args.extend(extra.iter().map(|s| s.to_string()));
        TestEtcd::start_spec(version, spec)
    }

    /// `n` v3 keys written by etcd `version`, version.txt `<version>/etcd3`.
    fn seed(&self, version: &str, n: usize) -> BTreeMap<String, String> {
        let etcd = self.start(version, &[]);
        let kv: BTreeMap<String, String> = (0..n)
            .map(|i| (format!("/registry/k{i}"), format!("v{i}-{version}")))
            .collect();
        for (k, v) in &kv {
            put(&etcd.client_url, k, v);
        }
        drop(etcd);
        fs::write(self.data.join("version.txt"), format!("{version}/etcd3")).unwrap();
        kv
    }

    /// The env a manifest sets for this member, peer URLs included.
    fn env(&self, target: &str) -> Vec<(String, String)> {
        let (version, storage) = target.split_once('/').unwrap();
        let mut creds: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
        creds.extend(self.tls.iter().cloned());
        [
            ("TARGET_VERSION", version.to_string()),
            ("TARGET_STORAGE", storage.to_string()),
            ("DATA_DIRECTORY", self.data.display().to_string()),
            ("ETCD_NAME", NAME.to_string()),
            ("INITIAL_CLUSTER", format!("{NAME}={}", self.peer_url())),
            ("LISTEN_PEER_URLS", self.peer_url()),
            ("INITIAL_ADVERTISE_PEER_URLS", self.peer_url()),
            ("ETCD_CREDS", creds.join(" ")),
            ("DO_NOT_MOVE_BINARIES", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// migrate with the manifest env; `env` entries override it (an empty value unsets).
    fn migrate(&self, target: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_migrate"));
        self.configure(&mut cmd, target, env, args);
        run(cmd)
    }

    fn configure(&self, cmd: &mut Command, target: &str, env: &[(&str, &str)], args: &[&str]) {
        cmd.args([
            "--bin-dir",
            &self.bin.display().to_string(),
            "--port",
            &self.client_port.to_string(),
            "--peer-port",
            &self.peer_port.to_string(),
        ]);
        cmd.args(args).env_clear().stdin(Stdio::null());
        for (k, v) in self.env(target) {
            cmd.env(k, v);
        }
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
    }

    fn version_txt(&self) -> String {
        fs::read_to_string(self.data.join("version.txt")).unwrap_or_default()
    }

    /// Everything under the temp root except the bin dir and lock files.
    fn snapshot(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut t = file_tree(self.tmp.path());
        t.retain(|p, _| {
            !p.starts_with("bin")
                && !p.starts_with("certs")
                && !p.to_string_lossy().ends_with(".lock")
        });
        t
    }
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "--- {:?}: {}\n{}{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn put(url: &str, key: &str, value: &str) {
    HttpClient::plain()
        .post_json(
            &format!("{url}/v3/kv/put"),
            &serde_json::json!({"key": b64::encode(key.as_bytes()), "value": b64::encode(value.as_bytes())}),
            Duration::from_secs(10),
        )
        .unwrap();
}

fn get(url: &str, key: &str) -> Option<String> {
    let r = HttpClient::plain()
        .post_json(
            &format!("{url}/v3/kv/range"),
            &serde_json::json!({"key": b64::encode(key.as_bytes())}),
            Duration::from_secs(10),
        )
        .unwrap();
    let v = r["kvs"].as_array()?.first()?["value"].as_str()?.to_string();
    Some(String::from_utf8(b64::decode(&v).unwrap()).unwrap())
}

/// Refused with exit 1, `needles` in the message, nothing changed.
fn assert_refused(
    m: &Member,
    before: &BTreeMap<PathBuf, Option<Vec<u8>>>,
    out: &Output,
    needles: &[&str],
) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(m.snapshot() == *before, "a refused run changed files");
}

/// v2 keys written by etcd 3.4.23 --enable-v2 through etcdctl's v2 API.
fn put_v2(etcd: &TestEtcd, keys: &[(&str, &str)]) {
    for (k, v) in keys {
        run_tool(
            &etcdctl_bin(V3_4),
            &[
                "--endpoints".into(),
                etcd.client_url.clone(),
                "set".into(),
                k.to_string(),
                v.to_string(),
            ],
            &[("ETCDCTL_API", "2")],
            Duration::from_secs(10),
        )
        .unwrap();
    }
}

fn rollback2(dir: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollback2"));
    cmd.arg("--data-dir").arg(dir);
    run(cmd)
}

/// etcd2 data (3 v2 keys, no v3 key) is refused by rollback2 and by migrate's etcd3 -> etcd2
/// path with what it is and what to do, unchanged and without a backup; with v3 keys too, the
/// v2 keys that will be dropped are counted in a WARN line and the conversion runs.
#[test]
fn etcd2_data_is_refused_by_rollback2_and_migrate_and_dropped_v2_keys_are_counted() {
    let m = Member::new("etcd2");
    let v2_keys = [
        ("/registry/a", "1"),
        ("/registry/b", "2"),
        ("/registry/c/d", "3"),
    ];
    {
        let etcd = m.start(V3_4, &["--enable-v2"]);
        put_v2(&etcd, &v2_keys);
    }
    fs::write(m.data.join("version.txt"), "3.4.23/etcd3").unwrap();
    let before = m.snapshot();
    let out = rollback2(&m.data);
    assert_refused(
        &m,
        &before,
        &out,
        &[
            "holds etcd2 data: 3 key(s) in the v2 store and no v3 key",
            "no backup made",
            "--target-storage etcd3",
        ],
    );
    assert!(!stderr(&out).contains("Finished successfully"));

    // migrate's etcd3 -> etcd2 step: stand-in 2.2.1 binaries satisfy the bundle check only.
    for tool in ["etcd-2.2.1", "etcdctl-2.2.1"] {
        let p = m.bin.join(tool);
        fs::remove_file(&p).ok();
        fs::write(&p, "#!/bin/sh\nexit 1\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = m.migrate("2.2.1/etcd2", &[], &["--bundled-versions", "2.2.1,3.4.23"]);
    assert_refused(
        &m,
        &before,
        &out,
        &["holds etcd2 data: 3 key(s) in the v2 store"],
    );

    // v3 keys as well: the 3 v2 keys are counted before anything changes, then converted.
    {
        let etcd = m.start(V3_4, &["--enable-v2"]);
        put(&etcd.client_url, "/registry/v3", "x");
    }
    let out = rollback2(&m.data);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("3 key(s) of the old v2 store will be dropped"),
        "{err}"
    );
}

/// 3.5 data labelled 3.4.23/etcd3 with target 3.4.23 (today "already at the target", and
/// etcd 3.4.23 then dies): refused naming both and the fix; the fix then works.
#[test]
fn files_newer_than_version_txt_are_refused_and_the_named_fix_works() {
    let m = Member::new("stale");
    let kv = m.seed(V3_5_1, 3);
    fs::write(m.data.join("version.txt"), "3.4.23/etcd3").unwrap();
    let before = m.snapshot();
    let vt = m.data.join("version.txt").display().to_string();
    // migrate names the highest bundled 3.5 (the bin dir holds several, scripts/fetch-etcd.sh).
    let fix = format!("printf {}/etcd3 > {vt}", highest_in_bin_dir("3.5"));
    for args in [&[][..], &["--dry-run"][..]] {
        let out = m.migrate("3.4.23/etcd3", &[], args);
        assert_refused(
            &m,
            &before,
            &out,
            &[
                "says 3.4.23/etcd3",
                "written by etcd 3.5",
                "/0/version is 3.5.0",
                &fix,
            ],
        );
    }
    fs::write(m.data.join("version.txt"), "3.5.1/etcd3").unwrap();
    let out = m.migrate("3.4.23/etcd3", &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(m.version_txt(), "3.4.23/etcd3");
    let etcd = m.start(V3_4, &[]);
    for (k, v) in &kv {
        assert_eq!(get(&etcd.client_url, k).as_deref(), Some(v.as_str()), "{k}");
    }
}

/// A self-signed peer certificate (its own CA) for 127.0.0.1, as the Go original's test used.
fn peer_certs(dir: &Path) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "peer.key",
            "-out",
            "peer.crt",
            "-days",
            "2",
            "-subj",
            "/CN=peer",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "extendedKeyUsage=serverAuth,clientAuth",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        ],
    );
    let f = |n: &str| dir.join(n).display().to_string();
    // The manifest's spelling: `--flag value`, space separated.
    vec![
        "--peer-trusted-ca-file".into(),
        f("peer.crt"),
        "--peer-cert-file".into(),
        f("peer.crt"),
        "--peer-key-file".into(),
        f("peer.key"),
        "--peer-client-cert-auth".into(),
    ]
}

/// https peer URLs: without ETCD_CREDS refused before any step; with the member's peer TLS
/// flags in ETCD_CREDS a real 3.5.1 -> 3.4.23 downgrade runs and keeps every key.
#[test]
fn peer_tls_from_etcd_creds_carries_a_real_downgrade() {
    let mut m = Member::new("tls");
    m.scheme = "https";
    m.tls = peer_certs(&m.tmp.path().join("certs"));
    let kv = m.seed(V3_5_1, 5);
    let before = m.snapshot();
    let out = m.migrate("3.4.23/etcd3", &[("ETCD_CREDS", &FAST.join(" "))], &[]);
    assert_refused(
        &m,
        &before,
        &out,
        &[
            "peer URLs are https",
            &m.peer_url(),
            "ETCD_CREDS",
            "--peer-cert-file",
        ],
    );
    assert!(!stderr(&out).contains("starting "), "an etcd was started");
    let out = m.migrate("3.4.23/etcd3", &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--peer-cert-file"),
        "TLS flags not passed"
    );
    assert_eq!(m.version_txt(), "3.4.23/etcd3");
    let etcd = m.start(V3_4, &[]);
    for (k, v) in &kv {
        assert_eq!(get(&etcd.client_url, k).as_deref(), Some(v.as_str()), "{k}");
    }
}

/// The member and cluster IDs `etcd-inspect version` reads from the data dir.
fn ids(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_etcd-inspect"))
        .arg("version")
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (v["member_id"].clone(), v["cluster_id"].clone())
}

/// A downgrade with the default peer URL (http://localhost:<peer-port>) or another name would
/// give the member new IDs: refused naming the stored name and URL; ALLOW_MEMBER_ID_CHANGE=true
/// through migrate-if-needed.sh accepts it.
#[test]
fn a_downgrade_that_changes_member_identity_is_refused_unless_allowed() {
    let m = Member::new("identity");
    m.seed(V3_5_1, 2);
    let before = m.snapshot();
    let stored = m.peer_url();
    let unset = [
        ("INITIAL_CLUSTER", ""),
        ("LISTEN_PEER_URLS", ""),
        ("INITIAL_ADVERTISE_PEER_URLS", ""),
    ];
    let out = m.migrate("3.4.23/etcd3", &unset, &[]);
    let want_cluster = format!("INITIAL_CLUSTER={NAME}={stored}");
    let want_adv = format!("INITIAL_ADVERTISE_PEER_URLS={stored}");
    assert_refused(
        &m,
        &before,
        &out,
        &[
            "http://localhost:",
            "new member ID",
            &want_cluster,
            &want_adv,
            "ETCD_NAME=etcd-h",
            "ALLOW_MEMBER_ID_CHANGE=true",
        ],
    );
    let out = m.migrate("3.4.23/etcd3", &[("ETCD_NAME", "other")], &[]);
    assert_refused(&m, &before, &out, &["name \"other\" (stored \"etcd-h\")"]);
    // Same name and URL, but another cluster token than the one the cluster was made with.
    let creds = format!("{} --initial-cluster-token=other", FAST.join(" "));
    let out = m.migrate("3.4.23/etcd3", &[("ETCD_CREDS", &creds)], &[]);
    assert_refused(
        &m,
        &before,
        &out,
        &["cluster token \"other\"", "--initial-cluster-token=TOKEN"],
    );

    // Through the wrapper script with the env var: accepted, the IDs change.
    let old_ids = ids(&m.data);
    let script = install_migrate_script(m.tmp.path());
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(&script);
    let mut env = unset.to_vec();
    env.push(("ALLOW_MEMBER_ID_CHANGE", "true"));
    env.push(("PATH", "/usr/bin:/bin"));
    m.configure(&mut cmd, "3.4.23/etcd3", &env, &[]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("new IDs"), "{}", stderr(&out));
    assert_eq!(m.version_txt(), "3.4.23/etcd3");
    assert_ne!(ids(&m.data), old_ids, "the IDs were expected to change");
}

/// A WAL whose member the db does not list (here the WAL of another real member, copied
/// over): the db and the WAL disagree, so a downgrade is refused naming both IDs and what to
/// do, nothing changed; --allow-member-id-change lets it pass the pre-flight (a dry run).
#[test]
fn a_wal_member_missing_from_the_db_is_refused_naming_both_unless_allowed() {
    let m = Member::new("unlisted");
    m.seed(V3_5_1, 2);
    let other = Member::new("unlisted-other");
    other.seed(V3_5_1, 1);
    let id = |dir: &Path| ids(dir).0.as_str().unwrap().to_string();
    let (own, foreign) = (id(&m.data), id(&other.data));
    assert_ne!(own, foreign);
    fs::remove_dir_all(m.data.join("member/wal")).unwrap();
    copy_tree(&other.data.join("member/wal"), &m.data.join("member/wal"));
    let before = m.snapshot();
    let out = m.migrate("3.4.23/etcd3", &[], &[]);
    assert_refused(
        &m,
        &before,
        &out,
        &[
            &format!("the WAL belongs to member {foreign}"),
            &format!("lists only {own}"),
            "different members",
            "ALLOW_MEMBER_ID_CHANGE=true",
        ],
    );
    let dry = m.migrate("3.4.23/etcd3", &[], &["--dry-run"]);
    assert_refused(&m, &before, &dry, &[&format!("member {foreign}")]);
    let allowed = [("ALLOW_MEMBER_ID_CHANGE", "true")];
    let out = m.migrate("3.4.23/etcd3", &allowed, &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("the WAL belongs to member {foreign}")));
    assert!(m.snapshot() == before, "a dry run changed files");
}

/// A real member removed from a real 3-member cluster (`member remove` through the gateway):
/// its data dir's WAL names it, its db lists it as removed. A downgrade of that data dir is
/// refused saying the member was removed and what to do, nothing changed.
#[test]
fn a_removed_members_data_dir_is_refused_saying_so() {
    let mut cluster = TestCluster::start(V3_5_1, 3, FAST);
    let gone = cluster.members.pop().unwrap();
    let url = &cluster.members[0].client_url;
    let http = HttpClient::plain();
    let list = http
        .post_json(
            &format!("{url}/v3/cluster/member/list"),
            &serde_json::json!({}),
            Duration::from_secs(10),
        )
        .unwrap();
    let id = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m2")
        .unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    // etcd refuses a removal ("unhealthy cluster") until every member was connected 5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = http.post_json(
        &format!("{url}/v3/cluster/member/remove"),
        &serde_json::json!({ "ID": id }),
        Duration::from_secs(10),
    ) {
        assert!(std::time::Instant::now() < deadline, "member remove: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let dir = gone.data_dir.clone();
    // The removed member stops by itself once it applied its removal.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while etcdtools::storage::member::Member::at(&dir, None)
        .locked_by_etcd()
        .is_some()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(gone);
    let m = Member::new("removed");
    copy_tree(&dir, &m.data);
    fs::write(m.data.join("version.txt"), "3.5.1/etcd3").unwrap();
    let hex = format!("{:x}", id.parse::<u64>().unwrap());
    assert_eq!(ids(&m.data).0, hex.as_str());
    let before = m.snapshot();
    let out = m.migrate("3.4.23/etcd3", &[], &[]);
    assert_refused(
        &m,
        &before,
        &out,
        &[
            &format!("the WAL belongs to member {hex}"),
            "was removed from the cluster",
            "etcdctl member add",
        ],
    );
}

/// A running etcd is named as such with the path once; `member/` as the data dir gets "did
/// you mean <parent>?" from migrate and rollback2; bad --target-version/--target-storage values
/// exit 2.
#[test]
fn running_etcd_member_dir_and_bad_values_get_plain_answers() {
    let m = Member::new("running");
    m.seed(V3_5_1, 1);
    {
        let _etcd = m.start(V3_5_1, &[]);
        let out = m.migrate("3.4.23/etcd3", &[], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("etcd is running on this data dir: stop it first"),
            "{err}"
        );
        let path = m.data.display().to_string();
        assert_eq!(err.matches(&path).count(), 1, "path not named once: {err}");
        assert!(!err.contains("integrity check"), "{err}");
    }
    let before = m.snapshot();
    let member = m.data.join("member");
    let parent = format!("did you mean {}?", m.data.display());
    let member_s = member.display().to_string();
    let out = m.migrate("3.4.23/etcd3", &[("DATA_DIRECTORY", &member_s)], &[]);
    assert_refused(&m, &before, &out, &[&parent]);
    assert!(!stderr(&out).contains("version.txt"), "{}", stderr(&out));
    let out = rollback2(&member);
    assert_refused(&m, &before, &out, &[&parent]);
    for (var, value) in [("TARGET_VERSION", "v3.5"), ("TARGET_STORAGE", "etcd4")] {
        let out = m.migrate("3.4.23/etcd3", &[(var, value)], &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value}: {}",
            stderr(&out)
        );
    }
    assert!(m.snapshot() == before);
}

/// A torn last WAL record (a frame whose body holds a zero sector, as a power cut leaves it)
/// blocks a downgrade with the remedy; following it (one start of the etcd that wrote the
/// data, which truncates the record) lets the downgrade run.
#[test]
fn a_torn_last_wal_record_is_explained_and_the_remedy_works() {
    use std::io::{Seek, SeekFrom, Write};
    let m = Member::new("torn");
    let kv = m.seed(V3_5_1, 3);
    let wal_dir = m.data.join("member/wal");
    let mut r = etcdtools::storage::wal::WalReader::open(&wal_dir, 0).unwrap();
    while r.next_record().unwrap().is_some() {}
    let Some(etcdtools::storage::wal::WalTail::Clean { file, offset }) = r.tail().cloned() else {
        panic!("no clean WAL end");
    };
    let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&1024u64.to_le_bytes()).unwrap();
    f.write_all(&[0x08, 0x02, 0x10]).unwrap();
    drop(f);
    let before = m.snapshot();
    let out = m.migrate("3.4.23/etcd3", &[], &[]);
    assert_refused(
        &m,
        &before,
        &out,
        &[
            "torn",
            "never acknowledged",
            "Start the etcd that wrote this data",
        ],
    );
    drop(m.start(V3_5_1, &[]));
    let out = m.migrate("3.4.23/etcd3", &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let etcd = m.start(V3_4, &[]);
    for (k, v) in &kv {
        assert_eq!(get(&etcd.client_url, k).as_deref(), Some(v.as_str()), "{k}");
    }
}

/// While it waits for etcd, migrate says so every 10 s: here a lone member of a 2-member
/// cluster never gets ready and --ready-timeout is 12s.
#[test]
fn waiting_for_etcd_is_reported_every_10s() {
    let mut cluster = TestCluster::start(V3_5_1, 2, FAST);
    for member in cluster.members.iter_mut() {
        member.stop();
    }
    let m0 = &cluster.members[0];
    fs::write(m0.data_dir.join("version.txt"), "3.5.1/etcd3").unwrap();
    let m = Member::new("wait");
    let data = m0.data_dir.display().to_string();
    let creds = format!("{} --initial-cluster-token=test-cluster", FAST.join(" "));
    let out = m.migrate(
        "3.4.23/etcd3",
        &[
            ("ETCD_CREDS", &creds),
            ("ETCD_NAME", "m0"),
            ("DATA_DIRECTORY", &data),
            ("INITIAL_CLUSTER", &cluster.initial_cluster),
            ("LISTEN_PEER_URLS", &m0.peer_url),
            ("INITIAL_ADVERTISE_PEER_URLS", &m0.peer_url),
        ],
        &["--ready-timeout", "12s"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let url = format!(
        "still waiting for etcd m0 to serve at http://127.0.0.1:{}",
        m.client_port
    );
    assert!(err.contains(&url), "{err}");
    assert!(
        err.contains(": 10s of 12s (--ready-timeout) so far"),
        "{err}"
    );
    assert!(err.contains("not ready at"), "{err}");
}

/// etcd 3.5.1 on a data dir whose db is a directory panics early in a long output: the error
/// quotes the panic line, not only the first and last lines.
#[test]
fn a_failed_etcd_is_quoted_with_its_cause() {
    let tmp = TempDir::new("preflight-cause");
    let data = tmp.path().join("data");
    fs::create_dir_all(data.join("member/snap/db")).unwrap();
    fs::create_dir_all(data.join("member/wal")).unwrap();
    let ports = free_ports(2).unwrap();
    let spec = EtcdSpec::single(&etcd_bin(V3_5_1), "m", &data, ports[0], ports[1]);
    let mut p = EtcdProcess::start(&spec).unwrap();
    let e = p
        .wait_ready(&HttpClient::plain(), Duration::from_secs(30))
        .unwrap_err();
    let ProcessError::ExitedEarly { output, .. } = &e else {
        panic!("expected an early exit: {e}");
    };
    let msg = e.to_string();
    let cause = output
        .iter()
        .find(|l| etcdtools::etcd::process::is_cause_line(l))
        .unwrap_or_else(|| panic!("no cause line in: {msg}"));
    assert!(msg.contains(cause.as_str()), "{msg}");
    assert!(
        cause.contains("panic") || cause.contains("fatal"),
        "{cause}"
    );
}

/// The one case where files newer than version.txt are no guess: an upgrade step killed after
/// etcd of the next minor ran and before version.txt recorded it. Real 3.4.23 data, target
/// 3.6.0 (a stand-in that never runs: the plan starts the real 3.5.30, as 3.6 needs 3.5.26+
/// first, then writes 3.6.0); killed when the first etcd is ready, then 3.5.30 run so its version is surely in the log:
/// the rerun goes on from 3.5.30 and ends at the target with every key.
#[test]
fn an_upgrade_killed_after_etcd_ran_goes_on_from_the_files() {
    use std::os::unix::process::ExitStatusExt;
    let m = Member::new("upgrade-crash");
    let kv = m.seed(V3_4, 3);
    for tool in ["etcd", "etcdctl", "etcdutl"] {
        let p = m.bin.join(format!("{tool}-3.6.0"));
        fs::write(&p, "#!/bin/sh\necho never >&2\nexit 1\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bundle = ["--bundled-versions", "3.4.23,3.5.30,3.6.0"];
    let out = m.migrate(
        "3.6.0/etcd3",
        &[("ETCDTOOLS_MIGRATE_CRASH_AT", "etcd-ready")],
        &bundle,
    );
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    assert_eq!(m.version_txt(), "3.4.23/etcd3");
    drop(m.start(V3_5_30, &[]));
    let out = m.migrate("3.6.0/etcd3", &[], &bundle);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("going on from 3.5.30/etcd3"), "{err}");
    assert!(
        !err.contains("etcd-3.5.30 --name"),
        "3.5.30 started again: {err}"
    );
    assert_eq!(m.version_txt(), "3.6.0/etcd3");
    let etcd = m.start(V3_5_30, &[]);
    for (k, v) in &kv {
        assert_eq!(get(&etcd.client_url, k).as_deref(), Some(v.as_str()), "{k}");
    }
}
