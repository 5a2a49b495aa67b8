//! Every move users make between the six real versions (3.3.25, 3.4.23, 3.5.0, 3.5.1, 3.5.16,
//! 3.5.30), through the code users run: scripts/migrate-if-needed.sh with a manifest's env,
//! rollback2, etcd-inspect. Each test compares EVERYTHING the member serves before and after:
//! every key, value, create/mod revision, version and lease of the live keyspace, the same at
//! every revision from the compaction on (and that older ones stay compacted), every lease
//! with its granted TTL and keys, and the members.
//!
//! Speed: each version's data dir is written once per test binary ([`fixture`]) and copied
//! per test; etcd runs with fast elections (10 ms heartbeat).
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use etcdtools::base64 as b64;
use etcdtools::etcd::client::{gateway_prefix, HttpClient};
use etcdtools::etcd::process::{free_ports, run_tool, EtcdSpec};
use serde_json::{json, Value};

const FAST: &[&str] = &["--heartbeat-interval=10", "--election-timeout=100"];
const NAME: &str = "etcd-h";

fn gw(version: &str) -> &'static str {
    let v: semver::Version = version.parse().unwrap();
    gateway_prefix(v.major, v.minor)
}

fn post(url: &str, version: &str, path: &str, body: Value) -> Result<Value, String> {
    HttpClient::plain()
        .post_json(
            &format!("{url}{}{path}", gw(version)),
            &body,
            Duration::from_secs(20),
        )
        .map_err(|e| e.to_string())
}

fn num(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or(0)
}

fn bytes(v: &Value) -> Vec<u8> {
    b64::decode(v.as_str().unwrap_or("")).unwrap()
}

/// One key as the gateway serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kv {
    key: Vec<u8>,
    value: Vec<u8>,
    create: i64,
    modrev: i64,
    version: i64,
    lease: i64,
}

/// Everything a member serves that a migration must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    revision: i64,
    live: Vec<Kv>,
    /// The whole keyspace at every revision from the compaction to `revision`.
    history: BTreeMap<i64, Vec<Kv>>,
    /// Lease ID -> (granted TTL, attached keys).
    leases: BTreeMap<i64, (i64, Vec<Vec<u8>>)>,
    /// (name, peer URLs, ID), sorted.
    members: Vec<(String, Vec<String>, String)>,
}

impl Served {
    /// Members by name only: a downgrade rebuilds the membership from `--initial-cluster`.
    fn without_member_ids(mut self) -> Served {
        self.members = self
            .members
            .into_iter()
            .map(|(n, _, _)| (n, vec![], String::new()))
            .collect();
        self
    }
}

fn range_all(url: &str, version: &str, revision: i64) -> Result<(i64, Vec<Kv>), String> {
    let r = post(
        url,
        version,
        "/kv/range",
        json!({"key": "AA==", "range_end": "AA==", "revision": revision.to_string()}),
    )?;
    let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
    let kvs = kvs.iter().map(kv_of).collect();
    Ok((num(&r["header"]["revision"]), kvs))
}

/// A key as the gateway and `etcd-inspect db --json` show it (same field names).
fn kv_of(kv: &Value) -> Kv {
    Kv {
        key: bytes(&kv["key"]),
        value: bytes(&kv["value"]),
        create: num(&kv["create_revision"]),
        modrev: num(&kv["mod_revision"]),
        version: num(&kv["version"]),
        lease: num(&kv["lease"]),
    }
}

/// What the member at `url` serves; `compacted` is the revision the workload compacted at.
fn served(url: &str, version: &str, compacted: i64) -> Served {
    let (revision, live) = range_all(url, version, 0).unwrap();
    let mut history = BTreeMap::new();
    for rev in compacted..=revision {
        history.insert(rev, range_all(url, version, rev).unwrap().1);
    }
    if compacted > 1 {
        let e = range_all(url, version, compacted - 1).unwrap_err();
        assert!(e.contains("compacted"), "{version}: {e}");
    }
    let mut leases = BTreeMap::new();
    let list = post(url, version, "/kv/lease/leases", json!({})).unwrap();
    for l in list["leases"].as_array().cloned().unwrap_or_default() {
        let t = post(
            url,
            version,
            "/kv/lease/timetolive",
            json!({"ID": l["ID"], "keys": true}),
        )
        .unwrap();
        let mut keys: Vec<Vec<u8>> = t["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(bytes)
            .collect();
        keys.sort();
        leases.insert(num(&l["ID"]), (num(&t["grantedTTL"]), keys));
    }
    let m = post(url, version, "/cluster/member/list", json!({})).unwrap();
    let mut members: Vec<_> = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut peers: Vec<String> = m["peerURLs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            peers.sort();
            (
                m["name"].as_str().unwrap_or("").to_string(),
                peers,
                m["ID"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    members.sort();
    Served {
        revision,
        live,
        history,
        leases,
        members,
    }
}

/// Puts, overwrites, leases (one with keys, one without), deletes, a binary key, a physical
/// compaction, writes after it and a txn. Returns the compaction revision.
fn write_workload(url: &str, version: &str) -> i64 {
    let put = |k: &[u8], v: &[u8], lease: Option<&Value>| {
        let mut body = json!({"key": b64::encode(k), "value": b64::encode(v)});
        if let Some(l) = lease {
            body["lease"] = l.clone();
        }
        num(&post(url, version, "/kv/put", body).unwrap()["header"]["revision"])
    };
    let key = |i: usize| format!("/registry/k{i:02}").into_bytes();
    for i in 0..30 {
        put(&key(i), format!("v{i}-1 {version}").as_bytes(), None);
    }
    for i in 0..10 {
        put(&key(i), format!("v{i}-2 ü✓\n\"").as_bytes(), None);
    }
    let lease = post(url, version, "/lease/grant", json!({"TTL": "3600"}))
        .or_else(|_| post(url, version, "/kv/lease/grant", json!({"TTL": "3600"})))
        .unwrap()["ID"]
        .clone();
    post(url, version, "/lease/grant", json!({"TTL": "7200"}))
        .or_else(|_| post(url, version, "/kv/lease/grant", json!({"TTL": "7200"})))
        .unwrap();
    for i in 0..4 {
        put(
            format!("/registry/leased/{i}").as_bytes(),
            b"l",
            Some(&lease),
        );
    }
    for i in 20..25 {
        post(
            url,
            version,
            "/kv/deleterange",
            json!({"key": b64::encode(&key(i))}),
        )
        .unwrap();
    }
    let rev = put(b"/registry/bin\x00\xff", &[0, 1, 2, 255, 254], None);
    let compacted = rev - 3;
    post(
        url,
        version,
        "/kv/compaction",
        json!({"revision": compacted.to_string(), "physical": true}),
    )
    .unwrap();
    for i in 25..30 {
        put(&key(i), format!("v{i}-3").as_bytes(), None);
    }
    post(
        url,
        version,
        "/kv/txn",
        json!({"success": [
        {"request_put": {"key": b64::encode(b"/registry/txn"), "value": b64::encode(b"t")}},
        {"request_delete_range": {"key": b64::encode(&key(29))}}]}),
    )
    .unwrap();
    compacted
}

/// A data dir written by etcd `version` (member `etcd-h`), once per test binary.
struct Fixture {
    data: PathBuf,
    before: Served,
    compacted: i64,
}

fn fixture(version: &'static str) -> &'static Fixture {
    static FIXTURES: [OnceLock<Fixture>; 6] = [const { OnceLock::new() }; 6];
    let i = ALL_VERSIONS.iter().position(|v| *v == version).unwrap();
    FIXTURES[i].get_or_init(|| {
        // Under target/ (statics are never dropped): replaced by the next run.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("versions-{version}"));
        let _ = fs::remove_dir_all(&root);
        let data = root.join("data");
        let etcd = TestEtcd::start_on(version, &data, NAME, FAST);
        let compacted = write_workload(&etcd.client_url, version);
        let before = served(&etcd.client_url, version, compacted);
        // Not vacuous: 30 live keys, 6+ revisions since the compaction, both leases, a member.
        assert_eq!(
            before.live.len(),
            30 - 5 - 1 + 4 + 2,
            "{version}: {before:?}"
        );
        assert!(
            before.history.len() >= 6,
            "{version}: {:?}",
            before.history.keys()
        );
        assert_eq!(before.leases.len(), 2, "{version}: {:?}", before.leases);
        assert_eq!(before.members.len(), 1, "{version}");
        drop(etcd);
        fs::write(data.join("version.txt"), format!("{version}/etcd3")).unwrap();
        Fixture {
            data,
            before,
            compacted,
        }
    })
}

/// One member's world: a bin dir of symlinks to every real binary, the wrapper script beside
/// a `migrate` symlink, the data dir and the member's ports.
struct Site {
    tmp: TempDir,
    bin: PathBuf,
    data: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    extra: String,
}

impl Site {
    fn new(label: &str) -> Site {
        let tmp = TempDir::new(&format!("versions-{label}"));
        let bin = link_etcd_bin_dir(tmp.path());
        install_migrate_script(tmp.path());
        let ports = free_ports(2).unwrap();
        let data = tmp.path().join("var/etcd/data");
        Site {
            bin,
            data,
            name: NAME.into(),
            client_port: ports[0],
            peer_port: ports[1],
            initial_cluster: format!("{NAME}=http://127.0.0.1:{}", ports[1]),
            extra: FAST.join(" "),
            tmp,
        }
    }

    /// A site with a copy of `version`'s fixture data dir.
    fn with_fixture(label: &str, version: &'static str) -> (Site, &'static Fixture) {
        let site = Site::new(label);
        let f = fixture(version);
        copy_tree(&f.data, &site.data);
        (site, f)
    }

    /// A downgrade of copied fixture data: the fixture ran on other ports, so the restore
    /// gives the member new IDs (the tests compare members by name after a downgrade).
    fn migrate_down(&self, target: &str) -> String {
        let out = self.migrate_with(target, &[], &["--allow-member-id-change"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "migrate -> {target}: {err}");
        assert_eq!(self.version_txt(), target);
        err
    }

    /// The wrapper with what the GCE etcd.manifest sets, `env` on top, then `args`.
    fn migrate_with(&self, target: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let (version, storage) = target.split_once('/').unwrap();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(self.tmp.path().join("sbin/migrate-if-needed.sh"))
            .args(["--bin-dir", self.bin.to_str().unwrap()])
            .args(["--port", &self.client_port.to_string()])
            .args(["--peer-port", &self.peer_port.to_string()])
            .args(args)
            .env_clear()
            .envs([
                ("TARGET_STORAGE", storage),
                ("TARGET_VERSION", version),
                ("DO_NOT_MOVE_BINARIES", "true"),
                ("DATA_DIRECTORY", self.data.to_str().unwrap()),
                ("ETCD_NAME", &self.name),
                ("INITIAL_CLUSTER", &self.initial_cluster),
                ("LISTEN_PEER_URLS", &peer),
                ("INITIAL_ADVERTISE_PEER_URLS", &peer),
                ("ETCD_CREDS", &self.extra),
                ("ETCD_SNAPSHOT_COUNT", "10000"),
                ("ETCDCTL_API", "3"),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        eprintln!(
            "--- {} migrate -> {target}: {}\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn migrate(&self, target: &str) -> String {
        let out = self.migrate_with(target, &[], &[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "migrate -> {target}: {err}");
        assert_eq!(self.version_txt(), target);
        err
    }

    fn version_txt(&self) -> String {
        fs::read_to_string(self.data.join("version.txt")).unwrap_or_default()
    }

    fn start(&self, version: &str) -> TestEtcd {
        let mut spec = EtcdSpec::single(
            &etcd_bin(version),
            &self.name,
            &self.data,
            self.client_port,
            self.peer_port,
        );
        spec.initial_cluster = Some(self.initial_cluster.clone());
        spec.extra_args = self.extra.split(' ').map(str::to_string).collect();
        TestEtcd::start_spec(version, spec)
    }

    /// Starts `version` on the data and returns what it serves.
    fn served_by(&self, version: &str, compacted: i64) -> Served {
        let etcd = self.start(version);
        let s = served(&etcd.client_url, version, compacted);
        let v = HttpClient::plain()
            .get_text(
                &format!("{}/version", etcd.client_url),
                Duration::from_secs(5),
                4096,
            )
            .unwrap();
        assert!(v.contains(&format!("\"etcdserver\":\"{version}\"")), "{v}");
        s
    }
}

#[test]
fn member_of_3_3_25_upgrades_through_3_4_23_to_3_5_30_keeping_everything() {
    let (site, f) = Site::with_fixture("up33", V3_3);
    let log = site.migrate("3.5.30/etcd3");
    assert!(log.contains("step 1: upgrade: start etcd 3.4.23"), "{log}");
    // The step proved itself (src/migrate/verify.rs), with the figures in the log.
    for line in [
        "step 1: before the step, etcd 3.3.25 serves 30 keys at revision",
        "step 1: after the step, etcd 3.4.23 serves 30 keys at revision",
        "step 1: the data is the same after the step",
    ] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }
    assert_eq!(site.served_by(V3_5_30, f.compacted), f.before);
}

/// A stopped 3-member cluster of `version` with the workload: one site per member, and what
/// the cluster served.
fn cluster_sites(label: &str, version: &str) -> (TestCluster, Vec<Site>, Served, i64) {
    let mut cluster = TestCluster::start(version, 3, FAST);
    let url0 = cluster.members[0].client_url.clone();
    let compacted = write_workload(&url0, version);
    let before = served(&url0, version, compacted);
    assert_eq!(before.members.len(), 3);
    let sites = stopped_sites(&mut cluster, label, &format!("{version}/etcd3"));
    (cluster, sites, before, compacted)
}

/// Stops every member of `cluster`, writes `version_txt` into its data dir and gives a site
/// per member (the cluster's ports, names and token).
fn stopped_sites(cluster: &mut TestCluster, label: &str, version_txt: &str) -> Vec<Site> {
    let port = |u: &str| u.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let initial_cluster = cluster.initial_cluster.clone();
    cluster
        .members
        .iter_mut()
        .enumerate()
        .map(|(i, m)| {
            m.stop();
            fs::write(m.data_dir.join("version.txt"), version_txt).unwrap();
            let mut s = Site::new(&format!("{label}-m{i}"));
            s.data = m.data_dir.clone();
            s.name = format!("m{i}");
            s.client_port = port(&m.client_url);
            s.peer_port = port(&m.peer_url);
            s.initial_cluster = initial_cluster.clone();
            s.extra = format!("{} --initial-cluster-token=test-cluster", FAST.join(" "));
            s
        })
        .collect()
}

/// Starts `version` on every site's data (each as its member of the cluster) and waits until
/// all are ready (a member alone has no quorum); they stop when dropped.
fn start_all(sites: &[Site], version: &str) -> Vec<etcdtools::etcd::process::EtcdProcess> {
    let mut started: Vec<_> = sites
        .iter()
        .map(|s| {
            let mut spec = EtcdSpec::single(
                &etcd_bin(version),
                &s.name,
                &s.data,
                s.client_port,
                s.peer_port,
            );
            spec.initial_cluster = Some(s.initial_cluster.clone());
            spec.extra_args = s.extra.split(' ').map(str::to_string).collect();
            etcdtools::etcd::process::EtcdProcess::start(&spec).unwrap()
        })
        .collect();
    for p in started.iter_mut() {
        p.wait_ready(&HttpClient::plain(), READY_TIMEOUT).unwrap();
    }
    started
}

/// Runs migrate on every site at once (a step that starts etcd needs a quorum); `env` goes
/// to the member `hooked` only. Returns each member's output.
fn migrate_all(
    sites: &[Site],
    target: &str,
    hooked: Option<usize>,
    env: &[(&str, &str)],
) -> Vec<Output> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let env = if hooked == Some(i) { env } else { &[] };
                scope.spawn(move || s.migrate_with(target, env, &[]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// The offline proof of a member of several (src/migrate/verify/offline.rs): the db before
/// the step at its revision R, the db after it at R.
fn assert_offline_proof(log: &str, keys: usize) {
    for line in [
        format!("step 1: before the step, the db holds {keys} keys at revision"),
        format!("step 1: after the step, the db holds {keys} keys at revision"),
        "step 1: the data is the same after the step".to_string(),
    ] {
        assert!(log.contains(&line), "{line:?} not in {log}");
    }
    assert!(!log.contains("not verified"), "{log}");
}

#[test]
fn cluster_of_three_3_3_25_members_upgrades_through_3_4_23_to_3_5_16() {
    let (_cluster, sites, before, compacted) = cluster_sites("cluster", V3_3);
    let outs = migrate_all(&sites, "3.5.16/etcd3", None, &[]);
    for (s, out) in sites.iter().zip(&outs) {
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "member {}: {log}", s.name);
        assert_eq!(s.version_txt(), "3.5.16/etcd3");
        // Each member's step proved itself offline, with the same figures on every member.
        assert_offline_proof(&log, before.live.len());
    }
    let started = start_all(&sites, V3_5_16);
    // All run while each is checked: a member alone has no quorum.
    for s in &sites {
        let url = format!("http://127.0.0.1:{}", s.client_port);
        assert_eq!(
            served(&url, V3_5_16, compacted),
            before,
            "member {}",
            s.name
        );
    }
    drop(started);
}

/// A member of several whose step loses a key fails and puts its data dir back: the test
/// hook ETCDTOOLS_MIGRATE_CRASH_AT=offline-lose-first-key (read by the release binary too,
/// like the crash points) drops the first key from the offline read after the step on member
/// m1 only. m1 must fail with `step 1 changed the data (...)`, exit 1, and hold its data dir
/// byte for byte as before (besides the backup `.bak`, kept); m0 and m2 prove their step and
/// finish.
#[test]
fn cluster_member_whose_step_loses_a_key_fails_and_puts_its_data_dir_back() {
    let (_cluster, sites, before, _) = cluster_sites("lossy", V3_3);
    let keys = before.live.len();
    let trees: Vec<_> = sites.iter().map(|s| file_tree(&s.data)).collect();
    let hook = [("ETCDTOOLS_MIGRATE_CRASH_AT", "offline-lose-first-key")];
    let outs = migrate_all(&sites, "3.5.16/etcd3", Some(1), &hook);
    let err = String::from_utf8_lossy(&outs[1].stderr);
    assert_eq!(outs[1].status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "Migration failed: step 1 changed the data ({keys} keys before, {} after, keyspace \
             hash",
            keys - 1
        )) && err.contains("the data from before the step is back in"),
        "{err}"
    );
    let mut after = file_tree(&sites[1].data);
    after.retain(|p, _| !p.starts_with(".bak"));
    assert!(after == trees[1], "the data dir of m1 was not put back");
    assert_eq!(sites[1].version_txt(), "3.3.25/etcd3");
    assert!(sites[1].data.join(".bak/member/snap/db").exists());
    for i in [0, 2] {
        let log = String::from_utf8_lossy(&outs[i].stderr);
        assert!(outs[i].status.success(), "m{i}: {log}");
        assert_offline_proof(&log, keys);
    }
}

/// A 3-member 3.4.23 cluster downgraded to 3.3.25 (each member: snapshot with 3.4.23, restore
/// with etcdctl-3.3.25): each member proves its restore offline before the swap (its db before
/// the step at revision R against the restored db at R), and the restored cluster serves
/// everything it served before.
#[test]
fn cluster_of_three_3_4_23_members_downgrades_to_3_3_25_proving_each_restore() {
    let (_cluster, sites, before, compacted) = cluster_sites("down-cluster", V3_4);
    let keys = before.live.len();
    let outs = migrate_all(&sites, "3.3.25/etcd3", None, &[]);
    for (s, out) in sites.iter().zip(&outs) {
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "member {}: {log}", s.name);
        assert_eq!(s.version_txt(), "3.3.25/etcd3");
        for line in [
            format!("step 1: before the step, the db holds {keys} keys at revision"),
            format!("step 1: after the restore, the db holds {keys} keys at revision"),
            "step 1: the data is the same after the step".to_string(),
        ] {
            assert!(log.contains(&line), "{line:?} not in {log}");
        }
    }
    let _started = start_all(&sites, V3_3);
    for s in &sites {
        let url = format!("http://127.0.0.1:{}", s.client_port);
        assert_eq!(
            served(&url, V3_3, compacted).without_member_ids(),
            before.clone().without_member_ids(),
            "member {}",
            s.name
        );
    }
}

/// The offline fingerprint (src/migrate/verify/offline.rs) that proves a cluster member's
/// step is what etcd serves: on real 3.4.23 and 3.5.16 data the gateway's fingerprint (key
/// count, revision, hash over every field) equals the db's read offline after a clean stop;
/// after more puts, an overwrite and a delete, the db read at that revision still equals it
/// (and the newest keyspace does not); below the compaction the read refuses.
#[test]
fn the_offline_fingerprint_is_what_etcd_serves_on_3_4_and_3_5_data() {
    use etcdtools::migrate::verify::offline::{db_fingerprint, OfflineError};
    for version in [V3_4, V3_5_16] {
        let (site, f) = Site::with_fixture(&format!("offline-{version}"), version);
        let mut etcd = site.start(version);
        let url = etcd.client_url.clone();
        let v = version.parse().unwrap();
        let served = etcdtools::migrate::verify::fingerprint(&HttpClient::plain(), &url, &v);
        let served = served.unwrap();
        assert_eq!(served.keys as usize, f.before.live.len());
        gateway_put(&url, gw(version), b"/later/new", b"1");
        gateway_put(&url, gw(version), &f.before.live[0].key, b"overwritten");
        let gone = b64::encode(&f.before.live[1].key);
        post(&url, version, "/kv/deleterange", json!({"key": gone})).unwrap();
        etcd.stop();
        let db = site.data.join("member/snap/db");
        let then = db_fingerprint(&db, Some(served.revision)).unwrap();
        let same = |a: &etcdtools::migrate::verify::Fingerprint| (a.keys, a.revision, a.hash);
        assert_eq!(same(&then), same(&served), "{version}");
        let now = db_fingerprint(&db, None).unwrap();
        assert_eq!(now.revision, served.revision + 3, "{version}");
        assert_ne!(now.hash, served.hash, "{version}");
        let below = db_fingerprint(&db, Some(f.compacted - 1)).unwrap_err();
        assert!(
            matches!(below, OfflineError::Compacted { at, compacted }
                if at == f.compacted - 1 && compacted == f.compacted),
            "{version}: {below}"
        );
    }
}

#[test]
fn downgrade_3_5_30_to_3_4_23_is_served_by_3_4_23() {
    let (site, f) = Site::with_fixture("down35", V3_5_30);
    let log = site.migrate_down("3.4.23/etcd3");
    assert!(
        log.contains("snapshot with etcd 3.5.30, restore with etcdctl-3.4.23"),
        "{log}"
    );
    for line in [
        "step 1: before the step, etcd 3.5.30 serves 30 keys at revision",
        "step 1: after the restore, etcd 3.4.23 serves 30 keys at revision",
        "step 1: the data is the same after the step",
    ] {
        assert!(log.contains(line), "{line:?} not in {log}");
    }
    assert!(log.contains(", HashKV "), "3.5.30 serves HashKV: {log}");

    assert_eq!(
        site.served_by(V3_4, f.compacted).without_member_ids(),
        f.before.clone().without_member_ids()
    );
}

#[test]
fn downgrade_3_4_23_to_3_3_25_is_served_by_3_3_25() {
    let (site, f) = Site::with_fixture("down34", V3_4);
    let log = site.migrate_down("3.3.25/etcd3");
    assert!(
        log.contains("snapshot with etcd 3.4.23, restore with etcdctl-3.3.25"),
        "{log}"
    );
    assert_eq!(
        site.served_by(V3_3, f.compacted).without_member_ids(),
        f.before.clone().without_member_ids()
    );
}

/// 3.5.0 data -> 3.5.30 (started) -> 3.5.0 (3.5.30's data started by 3.5.0) -> 3.5.16; and
/// 3.5.30's own data down to 3.5.1. Patch moves only rewrite version.txt.
#[test]
fn patch_moves_inside_3_5_both_ways_are_served_by_each_patch() {
    std::thread::scope(|s| {
        s.spawn(|| {
            let (site, f) = Site::with_fixture("patch-up", V3_5_0);
            for v in [V3_5_30, V3_5_0, V3_5_16] {
                let log = site.migrate(&format!("{v}/etcd3"));
                assert!(log.contains("step 1: write"), "{log}");
                assert_eq!(site.served_by(v, f.compacted), f.before, "at {v}");
            }
        });
        s.spawn(|| {
            let (site, f) = Site::with_fixture("patch-down", V3_5_30);
            site.migrate("3.5.1/etcd3");
            assert_eq!(site.served_by(V3_5_1, f.compacted), f.before);
        });
    });
}

fn inspect(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-inspect"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "etcd-inspect {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// etcd-inspect on a stopped data dir of every version: `check` clean, `version` names the
/// minor and the member etcd served, `db` holds exactly the live keys etcd served (every field),
/// `wal` ends clean at the last index, `snap` answers.
#[test]
fn etcd_inspect_reads_a_data_dir_of_every_version() {
    std::thread::scope(|s| {
        for v in ALL_VERSIONS {
            s.spawn(move || {
                let f = fixture(v);
                let dir = f.data.to_str().unwrap();
                let (_, text) = inspect(&["check", dir]);
                assert!(text.contains("no problems found"), "{v}: {text}");
                let version = &json_lines(&inspect(&["version", dir, "--json"]).1)[0];
                let minor = format!("{}.0", &v[..3]);
                assert_eq!(version["storage"], "etcd3", "{v}: {version}");
                assert_eq!(
                    version["cluster_version_db"],
                    minor.as_str(),
                    "{v}: {version}"
                );
                assert_eq!(version["version_txt"], format!("{v}/etcd3"), "{v}");
                let id = u64::from_str_radix(version["member_id"].as_str().unwrap(), 16).unwrap();
                assert_eq!(f.before.members[0].2, id.to_string(), "{v}: member ID");
                let mut db: Vec<Kv> = json_lines(&inspect(&["db", dir, "--json"]).1)
                    .iter()
                    .map(kv_of)
                    .collect();
                db.sort_by(|a, b| a.key.cmp(&b.key));
                assert_eq!(db, f.before.live, "{v}: etcd-inspect db");
                let wal = json_lines(&inspect(&["wal", dir, "--json"]).1);
                let end = wal.last().unwrap();
                assert_eq!(end["record"], "end", "{v}");
                assert_eq!(end["tail"], "clean", "{v}");
                assert_eq!(end["last_index"], version["last_index"], "{v}");
                assert!(end["entries"].as_u64().unwrap() > 40, "{v}: {end}");
                inspect(&["snap", dir, "--json"]);
            });
        }
    });
}

/// Bad input: a data dir of a version that is not bundled, 3.3 asked to jump to 3.5 without
/// 3.4 in the bundle, targets that do not parse: `Migration failed: ...`, non-zero exit, and
/// the data dir the same byte for byte.
#[test]
fn bad_input_fails_clearly_and_leaves_the_data_dir_untouched() {
    let (site, _) = Site::with_fixture("bad", V3_3);
    let before = file_tree(&site.data);
    let check = |target: &str, env: &[(&str, &str)], args: &[&str], needle: &str| {
        let out = site.migrate_with(target, env, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{target}: {err}");
        assert!(err.contains("Migration failed: "), "{err}");
        assert!(err.contains(needle), "expected {needle:?}: {err}");
        assert!(
            file_tree(&site.data) == before,
            "{target} {args:?} changed the data dir"
        );
    };
    check(
        "3.5.30/etcd3",
        &[],
        &["--bundled-versions", "3.3.25,3.5.30"],
        "no etcd 3.4.x is bundled",
    );
    for bad in ["3.5", "latest", "v3.5.30", "3.5.30.1", ""] {
        check(&format!("{bad}/etcd3"), &[], &[], "target");
    }
    check("3.5.30/etcd4", &[], &[], "etcd4");
    // Data of a version that is not bundled: 3.6 (a downgrade must start it) and 3.2.
    fs::write(site.data.join("version.txt"), "3.6.0/etcd3").unwrap();
    let before = file_tree(&site.data);
    let out = site.migrate_with("3.5.30/etcd3", &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Migration failed: "),
        "{err}"
    );
    assert!(
        err.contains("no etcd 3.6.x is bundled (the downgrade runs etcdutl 3.6 migrate"),
        "{err}"
    );
    assert!(file_tree(&site.data) == before, "3.6 data changed");
    fs::write(site.data.join("version.txt"), "3.1.20/etcd3").unwrap();
    let before = file_tree(&site.data);
    let out = site.migrate_with("3.5.30/etcd3", &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Refused before planning: the files (3.3) contradict version.txt (3.1.20).
    assert!(
        !out.status.success() && err.contains("Migration failed: ") && err.contains("3.1.20"),
        "{err}"
    );
    assert!(file_tree(&site.data) == before, "3.1 data changed");
}

fn etcdctl(version: &str, api: &str, url: &str, args: &[&str]) -> String {
    let mut argv = vec!["--endpoints".to_string(), url.to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    run_tool(
        &etcdctl_bin(version),
        &argv,
        &[("ETCDCTL_API", api)],
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("etcdctl-{version} {args:?}: {e}"))
    .stdout
}

/// Every file node of the v2 store as etcd serves it: key -> (value, TTL or 0).
fn v2_files(url: &str) -> BTreeMap<String, (String, i64)> {
    let text = HttpClient::plain()
        .get_text(
            &format!("{url}/v2/keys/?recursive=true"),
            Duration::from_secs(10),
            1 << 24,
        )
        .unwrap();
    let mut out = BTreeMap::new();
    fn walk(n: &Value, out: &mut BTreeMap<String, (String, i64)>) {
        if n["dir"] == true {
            for c in n["nodes"].as_array().cloned().unwrap_or_default() {
                walk(&c, out);
            }
        } else if let Some(v) = n["value"].as_str() {
            let key = n["key"].as_str().unwrap().to_string();
            out.insert(key, (v.to_string(), n["ttl"].as_i64().unwrap_or(0)));
        }
    }
    walk(
        &serde_json::from_str::<Value>(&text).unwrap()["node"],
        &mut out,
    );
    out
}

/// etcd2 data of a 3-member 3.4.23 cluster (v2 API: plain keys, TTL keys under
/// /registry/events) -> etcd3, all members at once. Each member proves its conversion offline
/// once its etcd stopped (its v2 files before against the live keys of its converted db).
/// First with the hook `offline-lose-first-key` on every member: each fails with `step 1
/// changed the data (...)` and holds its data dir byte for byte as before (besides `.bak`);
/// then without it: each converts, and the cluster serves every v2 file through v3.
#[test]
fn cluster_of_three_3_4_23_members_converts_etcd2_data_proving_each_member() {
    let extra: Vec<&str> = FAST.iter().copied().chain(["--enable-v2"]).collect();
    let mut cluster = TestCluster::start(V3_4, 3, &extra);
    let url0 = cluster.members[0].client_url.clone();
    let v2 = |args: &[&str]| etcdctl(V3_4, "2", &url0, args);
    for i in 0..5 {
        v2(&[
            "set",
            &format!("/registry/pods/ns/p{i}"),
            &format!("pod-{i}"),
        ]);
    }
    for i in 0..20 {
        v2(&[
            "set",
            "--ttl",
            "3600",
            &format!("/registry/events/e{i}"),
            "event",
        ]);
    }
    let files = v2_files(&url0);
    assert_eq!(files.len(), 25);
    let sites = stopped_sites(&mut cluster, "v2v3-cluster", "3.4.23/etcd2");
    let trees: Vec<_> = sites.iter().map(|s| file_tree(&s.data)).collect();
    let hook = [("ETCDTOOLS_MIGRATE_CRASH_AT", "offline-lose-first-key")];
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let runs: Vec<_> = sites
            .iter()
            .map(|s| scope.spawn(move || s.migrate_with("3.4.23/etcd3", &hook, &[])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for ((s, out), before) in sites.iter().zip(&outs).zip(&trees) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", s.name);
        assert!(
            err.contains(
                "Migration failed: step 1 changed the data (25 v2 files before, 24 v3 keys \
                 after, first differing key \"/registry/events/e0\": missing after)"
            ),
            "{}: {err}",
            s.name
        );
        let mut after = file_tree(&s.data);
        after.retain(|p, _| !p.starts_with(".bak"));
        assert!(
            after == *before,
            "{}: the data dir was not put back",
            s.name
        );
    }
    let outs = migrate_all(&sites, "3.4.23/etcd3", None, &[]);
    for (s, out) in sites.iter().zip(&outs) {
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {log}", s.name);
        for line in [
            "step 1: before the step, the v2 store holds 25 files",
            "step 1: after the step, the db holds 25 keys (20 with a lease)",
            "every v2 file is served through v3 with its value and revisions",
        ] {
            assert!(log.contains(line), "{}: {line:?} not in {log}", s.name);
        }
        assert!(!log.contains("not verified"), "{log}");
    }
    let _started = start_all(&sites, V3_4);
    for s in &sites {
        let url = format!("http://127.0.0.1:{}", s.client_port);
        let (_, kvs) = range_all(&url, V3_4, 0).unwrap();
        assert_eq!(texts(&kvs), values(&files), "member {}", s.name);
    }
}

/// Keys and values as text.
fn texts(kvs: &[Kv]) -> BTreeMap<String, String> {
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    kvs.iter().map(|kv| (s(&kv.key), s(&kv.value))).collect()
}

/// The values of [`v2_files`].
fn values(files: &BTreeMap<String, (String, i64)>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// etcd2 data written through etcd 3.3.25's v2 API (dirs, an empty dir, a TTL key under
/// /registry/events, compare-and-swap by value and by index, a deleted key) -> etcd3 at 3.4.23
/// and at 3.5.30 (etcdctl-3.3.25 migrate, 3.3.25 leases the TTL keys, 3.4.23 started for
/// 3.5): every v2 file is a v3 key with the same value; only the TTL key has the 1 h lease.
#[test]
fn etcd2_data_written_by_3_3_25_becomes_etcd3_at_3_4_and_3_5() {
    let seed = Site::new("v2seed");
    let etcd = seed.start(V3_3);
    let url = etcd.client_url.clone();
    let v2 = |args: &[&str]| etcdctl(V3_3, "2", &url, args);
    v2(&["mkdir", "/registry/empty"]);
    v2(&["set", "/registry/pods/ns/a", "{\"kind\":\"Pod\"}"]);
    v2(&["set", "/registry/pods/ns/b", "x y\nz ü"]);
    v2(&["set", "--ttl", "3600", "/registry/events/e1", "event"]);
    v2(&["set", "/registry/cas", "old"]);
    v2(&[
        "set",
        "--swap-with-value",
        "old",
        "/registry/cas",
        "by-value",
    ]);
    let got: Value = serde_json::from_str(&v2(&["-o", "json", "get", "/registry/cas"])).unwrap();
    let index = got["node"]["modifiedIndex"].as_u64().unwrap().to_string();
    v2(&[
        "set",
        "--swap-with-index",
        &index,
        "/registry/cas",
        "by-index",
    ]);
    v2(&["set", "/registry/gone", "g"]);
    v2(&["rm", "/registry/gone"]);
    let files = v2_files(&url);
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(files["/registry/cas"].0, "by-index");
    assert!(files["/registry/events/e1"].1 > 3000, "{files:?}");
    drop(etcd);
    fs::write(seed.data.join("version.txt"), "3.3.25/etcd2").unwrap();
    std::thread::scope(|s| {
        for target in [V3_4, V3_5_30] {
            let (seed, files) = (&seed, &files);
            s.spawn(move || {
                let site = Site::new(&format!("v2to{target}"));
                copy_tree(&seed.data, &site.data);
                let log = site.migrate(&format!("{target}/etcd3"));
                assert!(log.contains("storage etcd2 -> etcd3 at 3.3.25"), "{log}");
                // The conversion proved itself (src/migrate/verify.rs): 4 v2 files, 4 v3 keys.
                assert!(
                    log.contains("step 1: before the step, the v2 store holds 4 files")
                        && log.contains("etcd 3.3.25 serves 4 keys (1 with a lease)")
                        && log.contains("every v2 file is served through v3"),
                    "{log}"
                );
                let etcd = site.start(target);
                let (_, kvs) = range_all(&etcd.client_url, target, 0).unwrap();
                assert_eq!(texts(&kvs), values(files), "{target}");
                let leased: Vec<&str> = kvs
                    .iter()
                    .filter(|kv| kv.lease != 0)
                    .map(|kv| std::str::from_utf8(&kv.key).unwrap())
                    .collect();
                assert_eq!(leased, ["/registry/events/e1"], "{target}");
                let s = served(&etcd.client_url, target, 1);
                assert_eq!(s.leases.len(), 1, "{target}: {:?}", s.leases);
                assert_eq!(s.leases.values().next().unwrap().0, 3600, "{target}");
            });
        }
    });
}

/// rollback2 on data written by 3.4.23 and by 3.5.30; its output read by real etcd code:
/// etcd 3.3.25's `etcdctl migrate` (etcd's own v2 snap and WAL reader) on a copy, then etcd
/// 3.3.25 started on that copy serves every key and value through v2 and v3.
#[test]
fn rollback2_output_of_3_4_23_and_3_5_30_data_is_served_by_3_3_25() {
    std::thread::scope(|s| {
        for v in [V3_4, V3_5_30] {
            s.spawn(move || {
                let (site, _) = Site::with_fixture(&format!("rb{v}"), v);
                // rollback2 refuses values a v2 store cannot hold: drop the binary key first.
                let etcd = site.start(v);
                post(
                    &etcd.client_url,
                    v,
                    "/kv/deleterange",
                    json!({"key": b64::encode(b"/registry/bin\x00\xff")}),
                )
                .unwrap();
                let (_, live) = range_all(&etcd.client_url, v, 0).unwrap();
                drop(etcd);
                let want: BTreeMap<String, String> = live
                    .iter()
                    .map(|kv| {
                        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                        (s(&kv.key), s(&kv.value))
                    })
                    .collect();
                let out = Command::new(env!("CARGO_BIN_EXE_rollback2"))
                    .args(["--data-dir", site.data.to_str().unwrap()])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{v}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(text.contains("Finished successfully"), "{text}");
                // The copy etcd 3.3.25 reads; rollback2's own output stays as it wrote it.
                let reader = Site::new(&format!("rb{v}-33"));
                copy_tree(&site.data, &reader.data);
                etcdctl(
                    V3_3,
                    "3",
                    "",
                    &["migrate", "--data-dir", reader.data.to_str().unwrap()],
                );
                let etcd = reader.start(V3_3);
                let files: BTreeMap<String, String> = v2_files(&etcd.client_url)
                    .into_iter()
                    .map(|(k, (v, _))| (k, v))
                    .collect();
                assert_eq!(files, want, "{v}: v2");
                let (_, v3) = range_all(&etcd.client_url, V3_3, 0).unwrap();
                let v3: BTreeMap<String, String> = v3
                    .iter()
                    .map(|kv| {
                        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                        (s(&kv.key), s(&kv.value))
                    })
                    .collect();
                assert_eq!(v3, want, "{v}: v3");
            });
        }
    });
}

/// etcd 3.6 for real, with an `etcd-3.6.x` (and etcdctl/etcdutl) in the bin dir: 3.5.30 data
/// -> 3.6 (3.6 does the hop itself on start) -> back to 3.5.30 (`etcdutl-3.6.x migrate
/// --target-version 3.5`), each served in full. No etcd 3.6 can be fetched here (see
/// docs/migrate.md), so it is ignored by default: `cargo test --test versions -- --ignored`
/// with a 3.6 binary in ETCD_BIN_DIR runs it, and without one it fails. The 3.6 rules are
/// covered by plan tests and a stand-in test in tests/migrate.rs.
#[test]
#[ignore = "needs an etcd-3.6.x in ETCD_BIN_DIR; none can be fetched here"]
fn etcd_3_6_up_and_down_when_a_3_6_binary_is_in_the_bin_dir() {
    let found = fs::read_dir(etcd_bin_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let patch: u64 = n.strip_prefix("etcd-3.6.")?.parse().ok()?;
            Some(patch)
        })
        .max();
    let Some(patch) = found else {
        panic!("no etcd-3.6.x in {}", etcd_bin_dir().display());
    };
    let v36 = format!("3.6.{patch}");
    let v36: &'static str = Box::leak(v36.into_boxed_str());
    let (site, f) = Site::with_fixture("v36", V3_5_30);
    site.migrate(&format!("{v36}/etcd3"));
    assert_eq!(site.served_by(v36, f.compacted), f.before);
    let log = site.migrate("3.5.30/etcd3");
    assert!(log.contains("migrate --target-version 3.5"), "{log}");
    assert_eq!(site.served_by(V3_5_30, f.compacted), f.before);
}

/// Every step proves itself (src/migrate/verify.rs): `etcd-3.4.99` here is a STAND-IN that
/// runs the real etcd 3.4.23 on an empty dir beside the data instead of the data, as an etcd
/// that lost everything would. The upgrade step through it must fail with `step 1 changed the
/// data (...)`, put the data dir back byte for byte and keep the backup.
#[test]
fn a_step_that_changes_the_data_fails_and_puts_the_data_dir_back() {
    let (site, f) = Site::with_fixture("verify", V3_3);
    let fake = site.bin.join("etcd-3.4.99");
    fs::write(
        &fake,
        format!(
            "#!/bin/bash\nargs=(\"$@\")\nfor i in \"${{!args[@]}}\"; do\n  \
             [ \"${{args[$i]}}\" = --data-dir ] && args[$((i+1))]=\"${{args[$((i+1))]}}.fake\"\n\
             done\nexec '{}' \"${{args[@]}}\"\n",
            etcd_bin(V3_4).display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(etcdctl_bin(V3_4), site.bin.join("etcdctl-3.4.99")).unwrap();
    let before = file_tree(&site.data);
    let out = site.migrate_with(
        "3.5.30/etcd3",
        &[],
        &["--bundled-versions", "3.3.25,3.4.99,3.5.30"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let keys = f.before.live.len();
    assert!(
        err.contains(&format!(
            "Migration failed: step 1 changed the data ({keys} keys before, 0 after"
        )),
        "{err}"
    );
    assert!(err.contains("etcd 3.3.25 serves"), "{err}");
    // Byte for byte, besides the backup kept inside the data dir.
    let mut after = file_tree(&site.data);
    after.retain(|p, _| !p.starts_with(".bak"));
    assert!(after == before, "the data dir was not put back");
    assert_eq!(site.version_txt(), "3.3.25/etcd3");
    assert!(site.data.join(".bak/member/snap/db").exists());
}
