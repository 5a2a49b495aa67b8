//! bbolt + mvcc reading on dbs written by real etcd 3.4.23 and 3.5.1 in the test, compared with
//! what etcdctl says while etcd runs; then corrupted copies of such a db.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use etcdtools::base64::encode as b64;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::run_tool;
use etcdtools::inspect::db::{check_db, print_db, DbOptions};
use etcdtools::inspect::InspectError as DbError;
use etcdtools::storage::bolt::BoltDb;
use etcdtools::storage::member::{Member, MemberError};
use etcdtools::storage::mvcc;
use serde_json::{json, Value};

const PAGE: u64 = 4096;

fn post(etcd: &TestEtcd, path: &str, body: Value) -> Value {
    HttpClient::plain()
        .post_json(
            &format!("{}{path}", etcd.client_url),
            &body,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn revision_of(answer: &Value) -> i64 {
    answer["header"]["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn put(etcd: &TestEtcd, key: &[u8], value: &[u8], lease: Option<&str>) -> i64 {
    let mut body = json!({"key": b64(key), "value": b64(value)});
    if let Some(l) = lease {
        body["lease"] = json!(l);
    }
    revision_of(&post(etcd, "/v3/kv/put", body))
}

fn delete(etcd: &TestEtcd, key: &[u8]) -> i64 {
    revision_of(&post(etcd, "/v3/kv/deleterange", json!({"key": b64(key)})))
}

fn etcdctl(etcd: &TestEtcd, args: &[&str]) -> String {
    let mut all = vec!["--endpoints".to_string(), etcd.client_url.clone()];
    all.extend(args.iter().map(|s| s.to_string()));
    run_tool(
        &etcdctl_bin(&etcd.version),
        &all,
        &[("ETCDCTL_API", "3")],
        Duration::from_secs(30),
    )
    .unwrap()
    .stdout
}

/// What a workload left behind, recorded while etcd ran.
struct Recorded {
    _dir: TempDir,
    data_dir: PathBuf,
    snapshot: PathBuf,
    /// `etcdctl get --prefix '' -w json` kvs, by base64 key.
    kvs: BTreeMap<String, Value>,
    lease_id: i64,
    compacted_at: i64,
    deleted_after_compaction: Vec<u8>,
}

/// Runs the workload on real etcd `version`: a few thousand keys in txns of 128 (a multi-level
/// B+tree), overwrites, deletes before and after a compaction, a txn mixing put and delete,
/// leased keys, a value larger than a page, binary bytes. Stops etcd cleanly.
fn record(version: &str) -> Recorded {
    let dir = TempDir::new(&format!("db-{version}"));
    let data_dir = dir.path().join("data");
    let mut etcd = TestEtcd::start_on(version, &data_dir, "default", &[]);
    for batch in 0..40 {
        let ops: Vec<Value> = (0..128)
            .map(|i| {
                let n = batch * 128 + i;
                json!({"request_put": {
                    "key": b64(format!("/registry/pods/ns-{}/pod-{n:05}", n % 7).as_bytes()),
                    "value": b64(format!("{n:0>200}").as_bytes()),
                }})
            })
            .collect();
        post(&etcd, "/v3/kv/txn", json!({"success": ops}));
    }
    for n in 0..50 {
        put(
            &etcd,
            b"/registry/overwritten",
            format!("v{n}").as_bytes(),
            None,
        );
    }
    put(&etcd, b"/registry/deleted-before", b"x", None);
    delete(&etcd, b"/registry/deleted-before");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    put(&etcd, b"/registry/big", &big, None);
    put(&etcd, b"/registry/deleted-after", b"y", None);
    put(&etcd, b"compact_rev_key", b"k8s", None);
    let compacted_at = put(&etcd, b"/registry/overwritten", b"final", None);
    post(
        &etcd,
        "/v3/kv/compaction",
        json!({"revision": compacted_at.to_string(), "physical": true}),
    );
    delete(&etcd, b"/registry/deleted-after");
    let grant = post(&etcd, "/v3/lease/grant", json!({"TTL": "600"}));
    let lease = grant["ID"].as_str().unwrap().to_string();
    put(&etcd, b"/registry/leases/a", b"leased-a", Some(&lease));
    put(&etcd, b"/registry/leases/b", b"leased-b", Some(&lease));
    post(
        &etcd,
        "/v3/kv/txn",
        json!({
            "compare": [{"key": b64(b"/registry/overwritten"), "target": "VALUE",
                         "result": "EQUAL", "value": b64(b"final")}],
            "success": [
                {"request_put": {"key": b64(b"/registry/txn/x"), "value": b64(b"tx")}},
                {"request_put": {"key": b64(b"/registry/txn/y"), "value": b64(b"ty")}},
                {"request_delete_range": {"key": b64(b"/registry/pods/ns-0/pod-00000")}},
            ],
        }),
    );
    put(
        &etcd,
        b"\x00\xffbinary\n key",
        b"\x00\x01\x02 \xc3\x28",
        None,
    );
    put(&etcd, b"/registry/empty", b"", None);

    let got: Value =
        serde_json::from_str(&etcdctl(&etcd, &["get", "--prefix", "", "-w", "json"])).unwrap();
    let kvs: BTreeMap<String, Value> = got["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv.clone()))
        .collect();
    assert!(kvs.len() > 5000, "{}", kvs.len());
    let snapshot = dir.path().join("snapshot.db");
    etcdctl(&etcd, &["snapshot", "save", snapshot.to_str().unwrap()]);
    etcd.stop();
    Recorded {
        _dir: dir,
        data_dir,
        snapshot,
        kvs,
        lease_id: lease.parse().unwrap(),
        compacted_at,
        deleted_after_compaction: b"/registry/deleted-after".to_vec(),
    }
}

/// The 3.5.1 recording, shared by the comparison and the corruption tests.
fn recorded_3_5() -> &'static Recorded {
    static R: OnceLock<Recorded> = OnceLock::new();
    R.get_or_init(|| record(V3_5_1))
}

fn run(path: &Path, opts: &DbOptions) -> Result<String, DbError> {
    let mut out = Vec::new();
    print_db(path, opts, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn int(v: &Value, field: &str) -> i64 {
    v.get(field).map(|n| n.as_i64().unwrap()).unwrap_or(0)
}

/// Our live-key JSON must equal etcdctl's kvs: same keys, values, revisions, versions, leases.
fn assert_same_as_etcdctl(ours: &str, rec: &Recorded) {
    let lines = json_lines(ours);
    assert_eq!(lines.len(), rec.kvs.len(), "number of live keys");
    let mut last_mod = i64::MAX;
    for line in &lines {
        let key = line["key"].as_str().unwrap();
        let want = rec
            .kvs
            .get(key)
            .unwrap_or_else(|| panic!("key {key} not live per etcdctl"));
        assert_eq!(
            line["value"].as_str().unwrap(),
            want.get("value").and_then(Value::as_str).unwrap_or(""),
            "value of {key}"
        );
        for field in ["create_revision", "mod_revision", "version", "lease"] {
            assert_eq!(int(line, field), int(want, field), "{field} of {key}");
        }
        // Newest first, as documented.
        assert!(int(line, "mod_revision") <= last_mod);
        last_mod = int(line, "mod_revision");
    }
}

fn check_version(rec: &Recorded, cluster_version: &str) {
    let opts = DbOptions {
        json: true,
        ..Default::default()
    };
    // A data dir, the db file, and an `etcdctl snapshot save` file all read the same.
    let from_dir = run(&rec.data_dir, &opts).unwrap();
    assert_same_as_etcdctl(&from_dir, rec);
    let db_file = rec.data_dir.join("member/snap/db");
    assert_eq!(run(&db_file, &opts).unwrap(), from_dir);
    assert_eq!(std::fs::metadata(&rec.snapshot).unwrap().len() % 512, 32);
    assert_same_as_etcdctl(&run(&rec.snapshot, &opts).unwrap(), rec);

    let leased = &b64(b"/registry/leases/a");
    let line = json_lines(&from_dir)
        .into_iter()
        .find(|l| l["key"] == leased.as_str())
        .unwrap();
    assert_eq!(int(&line, "lease"), rec.lease_id);

    let db = BoltDb::open(&db_file).unwrap();
    assert_eq!(db.page_size(), 4096);
    // The same live keys when nearly every key's hash collides (exactness does not hang on
    // the hash).
    let mut collided = Vec::new();
    mvcc::for_each_live_with_hash(&db, |k| k.len() as u64 % 3, &mut |e| {
        collided.push((e.kv.key.to_vec(), e.revision));
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(collided.len(), rec.kvs.len());
    for (key, rev) in &collided {
        let want = &rec.kvs[&b64(key)];
        assert_eq!(rev.main, int(want, "mod_revision"));
    }
    assert_eq!(db.check(), vec![], "bbolt check of a sound db");
    assert_eq!(check_db(&rec.data_dir).unwrap(), vec![]);
    assert_eq!(check_db(&rec.snapshot).unwrap(), vec![]);
    assert_eq!(mvcc::check(&db), vec![], "mvcc check of a sound db");
    let meta = mvcc::read_meta(&db).unwrap();
    assert!(meta.consistent_index.unwrap() > 40, "{meta:?}");
    assert_eq!(meta.finished_compact_rev, Some(rec.compacted_at));
    assert_eq!(meta.scheduled_compact_rev, Some(rec.compacted_at));
    if cluster_version.starts_with("3.5") {
        assert!(meta.term.unwrap() >= 2);
        assert!(meta.conf_state.unwrap().contains("voters"));
    }
    assert_eq!(
        mvcc::cluster_version(&db).unwrap().as_deref(),
        Some(cluster_version)
    );
    let members = mvcc::members(&db).unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0]
        .json
        .contains(&format!("\"id\":{}", members[0].id)));
    let leases = mvcc::leases(&db).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].id, leases[0].ttl), (rec.lease_id, 600));
    let max_mod = rec
        .kvs
        .values()
        .map(|kv| int(kv, "mod_revision"))
        .max()
        .unwrap();
    assert_eq!(mvcc::current_revision(&db).unwrap(), max_mod);
    // What version detection reads from the db, through the member.
    let member = Member::at(&rec.data_dir, None);
    let facts = member.db_facts().unwrap();
    assert_eq!(facts.cluster_version.as_deref(), Some(cluster_version));
    assert_eq!(facts.member_ids, vec![members[0].id]);
    assert!(facts.has_v3_keys);
    assert_eq!(db.page_size(), 4096);
    let buckets: Vec<String> = db
        .bucket_names()
        .unwrap()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    for b in ["key", "meta", "lease", "members", "cluster"] {
        assert!(buckets.iter().any(|n| n == b), "{buckets:?}");
    }

    // Every revision: ascending, tombstones included, nothing below the compaction except
    // the newest revision of keys live then; the delete after the compaction is kept.
    let revs = json_lines(
        &run(
            &rec.data_dir,
            &DbOptions {
                revisions: true,
                json: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let pairs: Vec<(i64, i64)> = revs
        .iter()
        .map(|r| (int(r, "revision"), int(r, "sub")))
        .collect();
    assert!(pairs.windows(2).all(|w| w[0] < w[1]), "ascending revisions");
    let deleted = b64(&rec.deleted_after_compaction);
    let of_deleted: Vec<&Value> = revs
        .iter()
        .filter(|r| r["key"] == deleted.as_str())
        .collect();
    assert_eq!(of_deleted.len(), 2, "{of_deleted:?}");
    assert_eq!(of_deleted[1]["tombstone"], true);
    assert!(!revs
        .iter()
        .any(|r| r["key"] == b64(b"/registry/deleted-before").as_str()));
    let overwritten = revs
        .iter()
        .filter(|r| r["key"] == b64(b"/registry/overwritten").as_str())
        .count();
    assert_eq!(overwritten, 1, "older revisions compacted away");
    let tombstones = revs.iter().filter(|r| r["tombstone"] == true).count();
    assert_eq!(tombstones, 2, "deleted-after and the txn delete");

    // Raw buckets and text output.
    let meta_raw = run(
        &rec.data_dir,
        &DbOptions {
            bucket: Some("meta".into()),
            json: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(meta_raw.contains(&b64(b"consistent_index")), "{meta_raw}");
    let cluster_text = run(
        &rec.data_dir,
        &DbOptions {
            bucket: Some("cluster".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        cluster_text.contains(&format!("clusterVersion = {cluster_version}\n")),
        "{cluster_text}"
    );
    let text = run(&rec.data_dir, &DbOptions::default()).unwrap();
    assert_eq!(text.lines().count(), rec.kvs.len());
    assert!(
        text.contains("/registry/txn/x = tx  (create_revision "),
        "{text:.300}"
    );
    assert!(text.contains("\\u{0}\\xffbinary\\n key = \\u{0}\\u{1}\\u{2} \\xc3("));
    assert!(matches!(
        run(
            &rec.data_dir,
            &DbOptions {
                bucket: Some("nope".into()),
                ..Default::default()
            }
        ),
        Err(DbError::Member(MemberError::Db(_)))
    ));
}

#[test]
fn etcd_3_4_db_reads_like_etcdctl() {
    let rec = record(V3_4);
    check_version(&rec, "3.4.0");
}

#[test]
fn etcd_3_5_db_reads_like_etcdctl() {
    check_version(recorded_3_5(), "3.5.0");
}

#[test]
fn a_running_etcd_db_is_refused_while_locked() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let err = run(&etcd.data_dir, &DbOptions::default()).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
}

// ---- corruption ----------------------------------------------------------------------------

/// A private copy of the recorded 3.5.1 db, to damage.
fn copy_db(label: &str) -> (TempDir, PathBuf, Vec<u8>) {
    let dir = TempDir::new(label);
    let bytes = std::fs::read(recorded_3_5().data_dir.join("member/snap/db")).unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

fn live_json(path: &Path) -> Result<String, DbError> {
    run(
        path,
        &DbOptions {
            json: true,
            ..Default::default()
        },
    )
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Page ids whose header has `flags` (0x01 branch, 0x02 leaf) and names itself.
fn pages_with_flags(bytes: &[u8], flags: u16) -> Vec<u64> {
    (2..bytes.len() as u64 / PAGE)
        .filter(|&id| {
            let at = (id * PAGE) as usize;
            u64_at(bytes, at) == id && u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]) == flags
        })
        .collect()
}

/// Meta txids of pages 0 and 1.
fn txids(bytes: &[u8]) -> [u64; 2] {
    [
        u64_at(bytes, 16 + 48),
        u64_at(bytes, PAGE as usize + 16 + 48),
    ]
}

/// `check` must report a problem at `offset` (within `slack` bytes after it) in `path`.
fn assert_reported(path: &Path, offset: u64, slack: u64) -> Vec<String> {
    let db = BoltDb::open(path).unwrap();
    let findings = db.check();
    assert!(
        findings
            .iter()
            .any(|f| f.file == path && f.offset.is_some_and(|o| o >= offset && o < offset + slack)),
        "nothing reported at {offset}: {findings:#?}"
    );
    findings.iter().map(|f| f.to_string()).collect()
}

fn assert_clear_error(path: &Path, result: Result<String, DbError>) -> String {
    let err = result
        .expect_err("damaged db read without error")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("offset"),
        "error must name file and offset: {err}"
    );
    err
}

#[test]
fn a_newer_but_invalid_meta_falls_back_to_the_other() {
    let (_dir, path, mut bytes) = copy_db("meta-newer-invalid");
    let good = live_json(&path).unwrap();
    let [t0, t1] = txids(&bytes);
    // Make the older meta claim a newer txid without fixing its checksum.
    let older = if t0 < t1 { 0 } else { PAGE as usize };
    bytes[older + 16 + 48..older + 16 + 56].copy_from_slice(&(t0.max(t1) + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        live_json(&path).unwrap(),
        good,
        "read through the valid meta"
    );
    let findings = assert_reported(&path, older as u64 + 16, 64);
    assert!(findings[0].contains("checksum"), "{findings:?}");
}

#[test]
fn a_flipped_byte_in_the_newest_meta_is_reported_and_survived() {
    let (_dir, path, mut bytes) = copy_db("meta-flip");
    let [t0, t1] = txids(&bytes);
    let newest = if t0 >= t1 { 0 } else { PAGE as usize };
    bytes[newest + 16 + 20] ^= 0x40; // inside root.sequence
    std::fs::write(&path, &bytes).unwrap();
    assert_reported(&path, newest as u64 + 16, 64);
    // The older meta is used, like bbolt; its tree may since have been reused by the last
    // commit, so either it reads or it fails clearly.
    if let Err(e) = live_json(&path) {
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}

#[test]
fn both_metas_invalid_is_a_clear_error() {
    let (_dir, path, mut bytes) = copy_db("meta-both");
    bytes[16] ^= 1;
    bytes[PAGE as usize + 16 + 56] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = assert_clear_error(&path, live_json(&path));
    assert!(err.contains("both meta pages are invalid"), "{err}");
}

#[test]
fn a_flipped_child_pointer_in_a_branch_page_is_reported() {
    let (_dir, path, mut bytes) = copy_db("branch-flip");
    let branches = pages_with_flags(&bytes, 0x01);
    assert!(
        !branches.is_empty(),
        "the workload makes a multi-level tree"
    );
    for (i, id) in branches.iter().enumerate() {
        // First element's child pgid: top byte set (far outside the file); or, for the
        // others, pointing at the page itself (a cycle).
        let at = (id * PAGE) as usize + 16 + 8;
        if i % 2 == 0 {
            bytes[at + 7] ^= 0x10;
        } else {
            bytes[at..at + 8].copy_from_slice(&id.to_le_bytes());
        }
    }
    std::fs::write(&path, &bytes).unwrap();
    // Pages found by scanning the file include freed ones (etcd persists no freelist), which
    // no tree reaches and no reader sees; every finding must be in a damaged page, and the
    // key bucket's tree (several branch pages) must be among them.
    let findings = BoltDb::open(&path).unwrap().check();
    assert!(findings.len() >= 2, "{findings:#?}");
    for f in &findings {
        let page = f.offset.unwrap() / PAGE;
        assert!(
            branches.contains(&page),
            "finding outside a damaged page: {f}"
        );
        assert!(
            f.problem.contains("outside the used pages") || f.problem.contains("referenced twice"),
            "{f}"
        );
    }
    assert_clear_error(&path, live_json(&path));
}

#[test]
fn damaged_leaf_pages_are_reported() {
    let (_dir, path, mut bytes) = copy_db("leaf-flip");
    let leaves = pages_with_flags(&bytes, 0x02);
    assert!(leaves.len() > 100, "{}", leaves.len());
    // Every 10th leaf: a key size far beyond the page; one more: a wrong page id.
    for id in leaves.iter().step_by(10) {
        let at = (id * PAGE) as usize + 16 + 8;
        bytes[at + 2] = 0x7f;
    }
    let renamed = leaves[5];
    bytes[(renamed * PAGE) as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let damaged: Vec<u64> = leaves
        .iter()
        .step_by(10)
        .copied()
        .chain([renamed])
        .collect();
    // As with branches, some damaged pages may be freed ones no tree reaches.
    let findings = BoltDb::open(&path).unwrap().check();
    assert!(findings.len() >= damaged.len() / 2, "{findings:#?}");
    for f in &findings {
        assert!(damaged.contains(&(f.offset.unwrap() / PAGE)), "{f}");
    }
    let err = assert_clear_error(&path, live_json(&path));
    assert!(
        err.contains("outside the page") || err.contains("header says page id"),
        "{err}"
    );
}

#[test]
fn truncation_is_reported_and_a_clear_error() {
    let (_dir, path, bytes) = copy_db("truncated");
    let whole = live_json(&path).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 1, 2 * PAGE as usize + 100] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let findings = assert_reported(&path, keep as u64, 1);
        assert!(
            findings.iter().any(|f| f.contains("truncated")),
            "{findings:?}"
        );
        // Reading fails clearly once it needs a missing page; the last page may be a freed one
        // that no tree reaches, and then the data is all there.
        match live_json(&path) {
            Ok(text) => assert_eq!(text, whole, "cut at {keep}"),
            Err(e) => {
                let err = assert_clear_error(&path, Err(e));
                assert!(err.contains("truncated"), "{err}");
            }
        }
    }
    std::fs::write(&path, &bytes[..2 * PAGE as usize + 100]).unwrap();
    assert_clear_error(&path, live_json(&path));
    for keep in [0, 50, 4000] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = BoltDb::open(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        let findings = check_db(&path).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
    }
}

#[test]
fn a_zero_filled_tail_is_reported() {
    let (_dir, path, mut bytes) = copy_db("zero-tail");
    let n = bytes.len();
    bytes[n * 3 / 4..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let db = BoltDb::open(&path).unwrap();
    let findings = db.check();
    assert!(
        findings
            .iter()
            .any(|f| f.problem.contains("header says page id 0")),
        "{findings:#?}"
    );
    assert_clear_error(&path, live_json(&path));
}

#[test]
fn a_key_value_that_contradicts_its_revision_is_reported() {
    let (_dir, path, mut bytes) = copy_db("kv-mismatch");
    // mvccpb.KeyValue of /registry/txn/x: 0a 0f <key> 10 <create varint> 18 <mod varint>.
    let needle = b"\x0a\x0f/registry/txn/x\x10";
    let mut hits = 0;
    for at in 0..bytes.len() - needle.len() {
        if &bytes[at..at + needle.len()] == needle {
            let mut i = at + needle.len();
            while bytes[i] & 0x80 != 0 {
                i += 1;
            }
            assert_eq!(bytes[i + 1], 0x18);
            bytes[i + 2] ^= 0x01; // low bits of mod_revision
            hits += 1;
        }
    }
    assert!(hits >= 1);
    std::fs::write(&path, &bytes).unwrap();
    let findings = check_db(&path).unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert!(
        findings[0].problem.contains("mod_revision is"),
        "{}",
        findings[0]
    );
}

#[test]
fn random_damage_never_panics_or_hangs() {
    let (_dir, path, bytes) = copy_db("random");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..60 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % damaged.len() as u64) as usize;
            damaged[at] ^= 1 << (next() % 8);
        }
        std::fs::write(&path, &damaged).unwrap();
        if let Ok(db) = BoltDb::open(&path) {
            let _ = db.check();
            let _ = mvcc::check(&db);
        }
        for opts in [
            DbOptions::default(),
            DbOptions {
                revisions: true,
                ..Default::default()
            },
        ] {
            if let Err(e) = run(&path, &opts) {
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
        }
    }
}
