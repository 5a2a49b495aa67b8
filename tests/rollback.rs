//! rollback2 on data made by real etcd 3.4.23 and 3.5.1, proven by starting real etcd on the
//! result and reading the v2 API. There is no etcd 2.x here; 3.4/3.5 load v2 snapshots and
//! WALs with the same code. Only in these tests, the original `member/snap/db` is copied back
//! into the rolled-back dir with `consistent_index` set to the snapshot index, because 3.x
//! refuses to start without a v3 backend at least that far (etcd-observed.md section 6).
mod common;
mod rollback_support;

use common::*;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{EtcdProcess, EtcdSpec};
use rollback_support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn unb64(s: &str) -> Vec<u8> {
    etcdtools::base64::decode(s).expect("base64 from etcd")
}

struct Gw {
    url: String,
    http: HttpClient,
}

impl Gw {
    fn new(url: &str) -> Gw {
        Gw {
            url: url.to_string(),
            http: HttpClient::plain(),
        }
    }
    fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post_json(&format!("{}{path}", self.url), &body, T)
            .unwrap()
    }
    fn put(&self, key: &[u8], value: &[u8]) -> i64 {
        let r = self.post("/v3/kv/put", json!({"key": b64(key), "value": b64(value)}));
        r["header"]["revision"].as_str().unwrap().parse().unwrap()
    }
    fn put_lease(&self, key: &[u8], value: &[u8], lease: &str) {
        self.post(
            "/v3/kv/put",
            json!({"key": b64(key), "value": b64(value), "lease": lease}),
        );
    }
    fn del(&self, key: &[u8]) {
        let r = self.post("/v3/kv/deleterange", json!({"key": b64(key)}));
        assert_eq!(r["deleted"], "1", "{r}");
    }
    fn txn_puts(&self, kvs: &[(Vec<u8>, Vec<u8>)]) {
        let ops: Vec<Value> = kvs
            .iter()
            .map(|(k, v)| json!({"request_put": {"key": b64(k), "value": b64(v)}}))
            .collect();
        let r = self.post("/v3/kv/txn", json!({"success": ops}));
        assert_eq!(r["succeeded"], true, "{r}");
    }
    /// Every live key and value.
    fn all(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let r = self.post(
            "/v3/kv/range",
            json!({"key": b64(b"\0"), "range_end": b64(b"\0")}),
        );
        r["kvs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|kv| {
                        (
                            unb64(kv["key"].as_str().unwrap()),
                            unb64(kv["value"].as_str().unwrap_or("")),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    /// (hex id, name, peer URLs) of every member.
    fn members(&self) -> BTreeSet<(String, String, Vec<String>)> {
        let r = self.post("/v3/cluster/member/list", json!({}));
        r["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let id: u64 = m["ID"].as_str().unwrap().parse().unwrap();
                let peers = m["peerURLs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u.as_str().unwrap().to_string())
                    .collect();
                (
                    format!("{id:x}"),
                    m["name"].as_str().unwrap_or("").to_string(),
                    peers,
                )
            })
            .collect()
    }
    fn get(&self, path: &str) -> String {
        self.http
            .get_text(&format!("{}{path}", self.url), T, 1 << 28)
            .unwrap()
    }
}

/// What the data dir held while etcd ran.
struct Made {
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    members: BTreeSet<(String, String, Vec<String>)>,
}

/// Writes the interesting cases: nested paths, many overwrites, deletes before and after a
/// compaction, a delete-then-recreate, a leased key, a key without a leading `/`, escaping,
/// and enough bulk keys (txns of 128 puts) for a multi-page B+tree.
fn make_data(gw: &Gw, bulk: usize) {
    gw.put(
        b"/registry/pods/ns/name",
        br#"{"kind":"Pod","metadata":{"name":"name"}}"#,
    );
    for i in 0..20 {
        gw.put(b"/registry/over", format!("v{i}").as_bytes());
    }
    gw.put(b"/registry/del-before-compact", b"x");
    gw.del(b"/registry/del-before-compact");
    gw.put(b"/recreated", b"first");
    gw.del(b"/recreated");
    let rev = gw.put(b"compact_rev_key", b"7");
    gw.post(
        "/v3/kv/compaction",
        json!({"revision": rev.to_string(), "physical": true}),
    );
    gw.put(b"/registry/del-after-compact", b"y");
    gw.del(b"/registry/del-after-compact");
    gw.put(b"/recreated", b"second");
    let lease = gw.post("/v3/lease/grant", json!({"TTL": 3000}));
    let id = lease["ID"].as_str().unwrap().to_string();
    gw.put_lease(b"/registry/events/ns/ev1", b"event", &id);
    gw.put(b"/html/<&> \"q\"\n", "ü 值 \u{2028}".as_bytes());
    gw.put(b"/deep/a/b/c/d/e", b"deep");
    gw.put(b"/empty-value", b"");
    let mut n = 0;
    while n < bulk {
        let batch: Vec<_> = (n..(n + 128).min(bulk))
            .map(|i| {
                (
                    format!("/bulk/{i:05}").into_bytes(),
                    vec![b'a' + (i % 26) as u8; 500],
                )
            })
            .collect();
        n += batch.len();
        gw.txn_puts(&batch);
    }
}

fn backup_of(dir: &Path) -> PathBuf {
    dir.join(".rollback.backup")
}

/// Starts etcd on a rolled-back dir and waits until the v2 API answers.
fn start_v2(spec: &EtcdSpec) -> EtcdProcess {
    let p = EtcdProcess::start(spec).unwrap();
    wait_v2(spec.client_url(), &p);
    p
}

/// The v2 keyspace as path -> (value, ttl), files only.
fn v2_files(gw: &Gw) -> BTreeMap<String, (String, Option<i64>)> {
    fn walk(n: &Value, out: &mut BTreeMap<String, (String, Option<i64>)>) {
        if n["dir"] == true {
            for c in n["nodes"].as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
                walk(c, out);
            }
        } else {
            out.insert(
                n["key"].as_str().unwrap().to_string(),
                (n["value"].as_str().unwrap().to_string(), n["ttl"].as_i64()),
            );
        }
    }
    let body: Value =
        serde_json::from_str(&gw.get("/v2/keys/?recursive=true&sorted=true")).unwrap();
    let mut out = BTreeMap::new();
    walk(&body["node"], &mut out);
    out
}

fn v2_members(gw: &Gw) -> BTreeSet<(String, String, Vec<String>)> {
    let body: Value = serde_json::from_str(&gw.get("/v2/members")).unwrap();
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let peers = m["peerURLs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_string())
                .collect();
            (
                m["id"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
                peers,
            )
        })
        .collect()
}

/// Every v3 key with a leading `/` is in v2 with its value; nothing else is; leases became
/// TTLs close to 600 s; the member list is the same; and etcd takes a v2 write.
fn check_v2(gw: &Gw, made: &Made) {
    let files = v2_files(gw);
    let want: BTreeMap<String, String> = made
        .live
        .iter()
        .filter(|(k, _)| k.first() == Some(&b'/'))
        .map(|(k, v)| {
            (
                String::from_utf8(k.clone()).unwrap(),
                String::from_utf8(v.clone()).unwrap(),
            )
        })
        .collect();
    let got: BTreeMap<String, String> = files
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "v2 content differs from the v3 keys");
    assert_eq!(got["/registry/over"], "v19");
    assert_eq!(got["/recreated"], "second");
    assert!(!got.contains_key("/registry/del-before-compact"));
    assert!(!got.contains_key("/registry/del-after-compact"));
    assert!(!got.keys().any(|k| k.contains("compact_rev_key")));
    assert_eq!(
        got["/registry/pods/ns/name"],
        r#"{"kind":"Pod","metadata":{"name":"name"}}"#
    );
    let ttl = files["/registry/events/ns/ev1"]
        .1
        .expect("leased key has a ttl");
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
    assert_eq!(files["/registry/pods/ns/name"].1, None);
    assert_eq!(v2_members(gw), made.members);
    // a v2 write (POST = create in order) and reading it back
    let r = gw
        .http
        .post_json(
            &format!("{}/v2/keys/after-rollback?value=ok", gw.url),
            &json!({}),
            T,
        )
        .unwrap();
    assert_eq!(r["action"], "create", "{r}");
    let key = r["node"]["key"].as_str().unwrap();
    let back: Value = serde_json::from_str(&gw.get(&format!("/v2/keys{key}"))).unwrap();
    assert_eq!(back["node"]["value"], "ok");
}

/// The result, read by the team's own `storage` readers (independent of rollback's private
/// ones): checks clean, the WAL's snapshot record and HardState match the .snap, and the v2
/// store loads with the members and the cluster version.
fn cross_check_with_storage(dir: &Path, made: &Made) {
    use etcdtools::storage::{snap, v2store, wal};
    let wal_dir = dir.join("member/wal");
    let snap_dir = dir.join("member/snap");
    assert_eq!(
        wal::check(&wal_dir).unwrap(),
        vec![],
        "storage::wal::check findings"
    );
    assert_eq!(
        snap::check(&snap_dir).unwrap(),
        vec![],
        "storage::snap::check findings"
    );
    let files = snap::list_snap_files(&snap_dir).unwrap();
    assert_eq!(files.len(), 1);
    let s = snap::read_snap_file(&files[0]).unwrap();
    let start = etcdtools::storage::proto::WalSnapshot {
        index: s.metadata.index,
        term: s.metadata.term,
        conf_state: None,
    };
    let contents = wal::read_all(&wal_dir, &start).unwrap();
    let hs = contents.hard_state.unwrap();
    assert_eq!(hs.commit, s.metadata.index);
    assert!(hs.term >= s.metadata.term);
    assert!(contents
        .snapshots
        .iter()
        .any(|w| (w.index, w.term) == (s.metadata.index, s.metadata.term)));
    let store = v2store::Store::load(&s.data).unwrap();
    assert_eq!(store.problems(), Vec::<String>::new());
    assert_eq!(store.cluster_version(), Some("2.2.0"));
    let mut ids: Vec<String> = store
        .member_ids()
        .iter()
        .map(|i| format!("{i:x}"))
        .collect();
    ids.sort();
    let want: Vec<String> = made.members.iter().map(|m| m.0.clone()).collect();
    assert_eq!(ids, want);
    let mut voters: Vec<String> = s
        .metadata
        .conf_state
        .voters
        .iter()
        .map(|i| format!("{i:x}"))
        .collect();
    voters.sort();
    assert_eq!(voters, want);
}

/// `snapshot_count`: when set, etcd cuts .snap files, so the cluster state comes from a
/// snapshot plus the WAL after it (in the 3.5 format, whose snapshot records carry a
/// ConfState).
fn single_member(version: &str, snapshot_count: Option<u32>) {
    let temp = TempDir::new(&format!("rb-{version}"));
    let dir = temp.path().join("data");
    let extra = snapshot_count.map(|n| format!("--snapshot-count={n}"));
    let args: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
    let mut etcd = TestEtcd::start_on(version, &dir, "rb", &args);
    let gw = Gw::new(&etcd.client_url);
    make_data(&gw, 300);
    let made = Made {
        live: gw.all(),
        members: gw.members(),
    };
    // etcd holds the db lock: refused, nothing changed
    let (ok, _, err) = rollback2(&dir, &[]);
    assert!(
        !ok && err.contains("etcd is running on this data dir: stop it first"),
        "{err}"
    );
    let (client, peer) = (etcd.client_url.clone(), etcd.peer_url.clone());
    etcd.stop();
    let before = file_tree(&dir);

    let (ok, out, err) = rollback2(&dir, &["--dry-run", "--ttl", "10m"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("keys: 307 under "), "{out}");
    assert!(out.contains("(1 with a lease"), "{out}");
    assert!(
        out.contains("leased keys: \"/registry/events/ns/ev1\"\n"),
        "{out}"
    );
    assert!(
        out.contains("skipped keys without a leading '/': 1 (\"compact_rev_key\")"),
        "{out}"
    );
    assert!(out.contains("deleted keys left out: 1"), "{out}");
    assert!(!out.contains("Finished successfully"), "{out}");
    let from_snap = out.contains(".snap + WAL");
    assert_eq!(from_snap, snapshot_count.is_some(), "{out}");
    assert_eq!(file_tree(&dir), before, "dry run changed files");

    let (ok, out, err) = rollback2(&dir, &["--ttl", "10m"]);
    assert!(ok, "{out}{err}");
    assert!(out.trim_end().ends_with("Finished successfully"), "{out}");
    assert_eq!(
        file_tree(&backup_of(&dir)),
        before,
        "the backup is not the untouched original"
    );
    cross_check_with_storage(&dir, &made);
    restore_db_for_3x(&dir, &backup_of(&dir).join("member/snap/db"));

    let mut spec = EtcdSpec::single(&etcd_bin(version), "rb", &dir, port(&client), port(&peer));
    spec.extra_args.push("--enable-v2".into());
    let etcd = start_v2(&spec);
    check_v2(&Gw::new(spec.client_url()), &made);
    etcd.stop(Duration::from_secs(20)).unwrap();
}

#[test]
fn single_member_3_4_23() {
    single_member(V3_4, None);
}

#[test]
fn single_member_3_5_1() {
    single_member(V3_5_1, Some(20));
}

#[test]
fn three_member_cluster_3_4_23() {
    three_member_cluster(V3_4);
}

#[test]
fn three_member_cluster_3_5_1() {
    three_member_cluster(V3_5_1);
}

fn three_member_cluster(version: &str) {
    let mut cluster = TestCluster::start(version, 3, &[]);
    let gw = Gw::new(&cluster.members[0].client_url);
    make_data(&gw, 0);
    let made = Made {
        live: gw.all(),
        members: gw.members(),
    };
    assert_eq!(made.members.len(), 3);
    let initial: Vec<String> = made
        .members
        .iter()
        .map(|(_, n, p)| format!("{n}={}", p[0]))
        .collect();
    let initial = initial.join(",");
    let mut specs = Vec::new();
    for (i, m) in cluster.members.iter_mut().enumerate() {
        let (client, peer, dir) = (m.client_url.clone(), m.peer_url.clone(), m.data_dir.clone());
        m.stop();
        let mut spec = EtcdSpec::single(
            &etcd_bin(version),
            &format!("m{i}"),
            &dir,
            port(&client),
            port(&peer),
        );
        spec.initial_cluster = Some(initial.clone());
        spec.extra_args = vec![
            "--enable-v2".into(),
            "--initial-cluster-token=test-cluster".into(),
        ];
        specs.push(spec);
    }
    for spec in &specs {
        let (ok, out, err) = rollback2(
            &spec.data_dir,
            &["--ttl", "10m", "--target-version", "2.3.7"],
        );
        assert!(ok, "{out}{err}");
        assert!(out.contains("cluster version: 2.3.0"), "{out}");
        assert!(out.contains("members: "), "{out}");
        restore_db_for_3x(
            &spec.data_dir,
            &backup_of(&spec.data_dir).join("member/snap/db"),
        );
    }
    let mut procs = Vec::new();
    for spec in &specs {
        procs.push(EtcdProcess::start(spec).unwrap());
    }
    for (p, spec) in procs.iter().zip(&specs) {
        wait_v2(spec.client_url(), p);
    }
    let mut contents = Vec::new();
    for spec in &specs {
        let gw = Gw::new(spec.client_url());
        assert_eq!(v2_members(&gw), made.members);
        // values only: a TTL read a second later may be one lower
        let files: BTreeMap<String, String> = v2_files(&gw)
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect();
        contents.push(files);
    }
    assert!(
        contents.windows(2).all(|w| w[0] == w[1]),
        "members serve different v2 data"
    );
    check_v2(&Gw::new(specs[1].client_url()), &made);
    for p in procs {
        p.stop(Duration::from_secs(20)).unwrap();
    }
}
