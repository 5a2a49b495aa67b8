//! rollback2 refuses bad inputs with a clear error and leaves every file as it was; and it
//! finishes an interrupted run. Data made once by real etcd 3.4.23 (with small
//! --snapshot-count so .snap files and WAL replay after a snapshot are both exercised).
mod common;
mod rollback_support;

use common::*;
use etcdtools::etcd::client::HttpClient;
use rollback_support::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs rollback2 on `dir` expecting a refusal mentioning every `needles`, and checks that
/// nothing changed and nothing was left next to it.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let before = file_tree(dir);
    let (ok, out, err) = rollback2(dir, args);
    assert!(!ok, "expected a refusal, got success:\n{out}");
    for n in needles {
        assert!(err.contains(n), "error lacks {n:?}: {err}");
    }
    assert!(!out.contains("Finished successfully"), "{out}");
    assert_eq!(file_tree(dir), before, "files changed: {err}");
    for s in [".rollback.tmp", ".rollback.new"] {
        assert!(!dir.join(s).exists(), "left {s} behind");
    }
    err
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn bad_inputs_are_refused_and_nothing_changes() {
    let temp = TempDir::new("rb-bad");
    let orig = temp.path().join("orig");
    let mut etcd = TestEtcd::start_on(V3_4, &orig, "bad", &["--snapshot-count=10"]);
    let http = HttpClient::plain();
    let put = |k: &[u8], v: &[u8]| {
        http.post_json(
            &format!("{}/v3/kv/put", etcd.client_url),
            &json!({"key": b64(k), "value": b64(v)}),
            Duration::from_secs(10),
        )
        .unwrap();
    };
    for i in 0..30 {
        put(format!("/k/{i}").as_bytes(), b"v");
    }
    put(b"/k8s/pod", b"k8s\x00\x0a\xff\xfe binary protobuf");
    etcd.stop();
    // Keep the test fast: cut the 64 MB preallocated WAL to its records plus a zero tail
    // (still the shape etcd leaves: records, then zeros).
    for e in std::fs::read_dir(orig.join("member/wal")).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        let end = b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1);
        std::fs::write(&p, &b[..(end + 4096).min(b.len())]).unwrap();
    }
    let snaps = std::fs::read_dir(orig.join("member/snap"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".snap")
        });
    assert!(
        snaps.count() >= 2,
        "expected .snap files with --snapshot-count=10"
    );
    let case = |name: &str| {
        let d = temp.path().join(name);
        copy_tree(&orig, &d);
        d
    };

    // Values that are not UTF-8: refused with the key named, unless --lossy.
    let d = case("utf8");
    refused(&d, &[], &["not valid UTF-8", "\"/k8s/pod\"", "--lossy"]);

    // A corrupted db page: the root page of the tree both meta pages point at.
    let d = case("dbpage");
    let db = d.join("member/snap/db");
    let mut b = std::fs::read(&db).unwrap();
    for meta in [0usize, 4096] {
        let root = le64(&b, meta + 16 + 16) as usize;
        b[root * 4096 + 8] = 0x40; // flags: no longer a branch or leaf
    }
    std::fs::write(&db, &b).unwrap();
    refused(
        &d,
        &["--lossy"],
        &["member/snap/db", "offset", "not a branch or leaf"],
    );

    // A truncated db.
    let d = case("dbtrunc");
    let db = d.join("member/snap/db");
    let b = std::fs::read(&db).unwrap();
    std::fs::write(&db, &b[..3 * 4096]).unwrap();
    refused(&d, &["--lossy"], &["member/snap/db"]);

    // Both meta pages damaged.
    let d = case("dbmeta");
    let db = d.join("member/snap/db");
    let mut b = std::fs::read(&db).unwrap();
    b[16 + 60] ^= 0xff;
    b[4096 + 16 + 60] ^= 0xff;
    std::fs::write(&db, &b).unwrap();
    refused(&d, &["--lossy"], &["member/snap/db", "meta"]);

    // WAL CRC mismatch: one flipped byte inside the first entry's data.
    let d = case("walcrc");
    let wal = d.join("member/wal/0000000000000000-0000000000000000.wal");
    let mut b = std::fs::read(&wal).unwrap();
    b[0x50 + 8 + 24] ^= 0x01;
    std::fs::write(&wal, &b).unwrap();
    refused(
        &d,
        &["--lossy"],
        &[
            "0000000000000000-0000000000000000.wal",
            "offset 80",
            "CRC mismatch",
        ],
    );

    // A db behind the WAL (as after a crash of 3.4): committed v3 writes it lacks.
    let d = case("dblag");
    let db = d.join("member/snap/db");
    let mut b = std::fs::read(&db).unwrap();
    assert!(set_consistent_index(&mut b, 5) > 0);
    std::fs::write(&db, &b).unwrap();
    refused(
        &d,
        &["--lossy"],
        &["behind the WAL", "consistent_index 5", "stop it cleanly"],
    );

    // A .snap with a bad CRC.
    let d = case("snapcrc");
    let snap = std::fs::read_dir(d.join("member/snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x01;
    std::fs::write(&snap, &b).unwrap();
    refused(&d, &["--lossy"], &[".snap", "CRC mismatch"]);

    // Missing snap dir.
    let d = case("nosnap");
    std::fs::rename(d.join("member/snap"), temp.path().join("snap-moved")).unwrap();
    refused(&d, &["--lossy"], &["member/snap", "missing"]);

    // An existing backup dir.
    let d = case("backup");
    std::fs::create_dir(d.join(".rollback.backup")).unwrap();
    refused(&d, &["--lossy"], &[".rollback.backup", "already exists"]);

    // Bad flags: usage error, exit 2.
    let d = case("flags");
    for args in [
        &["--ttl", "soon"][..],
        &["--target-version", "3.0.0"],
        &["--frobnicate"],
    ] {
        let before = file_tree(&d);
        let out = rollback2_output(&d, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Usage:"));
        assert_eq!(file_tree(&d), before);
    }

    // An unwritable data dir: the temp dir cannot be made. (An unwritable parent does not
    // matter: nothing is written beside the data dir.)
    let d = case("ro-data");
    if make_unwritable(&d, true) {
        let err = refused(&d, &["--lossy"], &["ro-data/.rollback.tmp", "untouched"]);
        make_unwritable(&d, false);
        assert!(!err.is_empty());
    } else {
        eprintln!("SKIPPED unwritable-data-dir case: cannot make a dir unwritable here (root without chattr)");
    }
    let parent = temp.path().join("ro-parent");
    let d = parent.join("data");
    copy_tree(&orig, &d);
    let beside = std::fs::read_dir(&parent).unwrap().count();
    if make_unwritable(&parent, true) {
        let (ok, out, err) = rollback2(&d, &["--lossy"]);
        make_unwritable(&parent, false);
        assert!(ok, "{out}{err}");
        assert_eq!(std::fs::read_dir(&parent).unwrap().count(), beside);
    }

    // Success with --lossy; the backup is the untouched original.
    let d = case("lossy");
    let before = file_tree(&d);
    let (ok, out, err) = rollback2(&d, &["--lossy"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("values changed by --lossy (invalid UTF-8 -> U+FFFD): 1"),
        "{out}"
    );
    assert!(
        out.contains(".snap + WAL"),
        "cluster state should come from a snapshot: {out}"
    );
    assert!(out.trim_end().ends_with("Finished successfully"));
    assert_eq!(file_tree(&d.join(".rollback.backup")), before);
    let result = etcd_tree(&d);

    // A crash in the swap after the original member/ moved to the backup: a rerun finishes.
    std::fs::create_dir(d.join(".rollback.new")).unwrap();
    std::fs::rename(d.join("member"), d.join(".rollback.new/member")).unwrap();
    std::fs::write(d.join(".snapshot.db"), "stale").unwrap();
    let crashed = file_tree(&d);
    let (ok, dry, err) = rollback2(&d, &["--dry-run"]);
    assert!(ok, "{dry}{err}");
    assert!(
        dry.contains("would complete an interrupted rollback"),
        "{dry}"
    );
    assert_eq!(file_tree(&d), crashed, "--dry-run changed something");
    let (ok, out, err) = rollback2(&d, &[]);
    assert!(
        err.contains(dry.lines().next().unwrap())
            && dry.lines().next().unwrap().starts_with("recover: "),
        "the dry run foretold {dry}, the run logged {err}"
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("completed an interrupted rollback"), "{out}");
    assert_eq!(etcd_tree(&d), result);
    assert_eq!(file_tree(&d.join(".rollback.backup")), before);
    // The same crash of an older release, which renamed the data dir itself: DIR gone,
    // DIR.rollback.backup + complete DIR.rollback.new beside it. A rerun finishes that too.
    std::fs::rename(d.join(".rollback.backup"), sibling(&d, ".rollback.backup")).unwrap();
    std::fs::rename(&d, sibling(&d, ".rollback.new")).unwrap();
    let (ok, out, err) = rollback2(&d, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("completed an interrupted rollback"), "{out}");
    assert_eq!(etcd_tree(&d), result);
    // Rolling back a rolled-back dir: refused (backup exists), and without it: no db.
    std::fs::rename(sibling(&d, ".rollback.backup"), d.join(".rollback.backup")).unwrap();
    refused(&d, &[], &["already exists"]);
    std::fs::rename(d.join(".rollback.backup"), temp.path().join("old-backup")).unwrap();
    refused(&d, &[], &["member/snap/db", "missing"]);

    // The --lossy result served by real etcd: the binary value with U+FFFD for each bad byte.
    restore_db_for_3x(&d, &temp.path().join("old-backup/member/snap/db"));
    let mut spec = etcdtools::etcd::process::EtcdSpec::single(
        &etcd_bin(V3_4),
        "bad",
        &d,
        port(&etcd.client_url),
        port(&etcd.peer_url),
    );
    spec.extra_args.push("--enable-v2".into());
    let p = etcdtools::etcd::process::EtcdProcess::start(&spec).unwrap();
    wait_v2(spec.client_url(), &p);
    let body = http
        .get_text(
            &format!("{}/v2/keys/k8s/pod", spec.client_url()),
            Duration::from_secs(2),
            1 << 20,
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["node"]["value"],
        "k8s\u{0}\n\u{FFFD}\u{FFFD} binary protobuf"
    );
    p.stop(Duration::from_secs(20)).unwrap();
}

/// chattr +i as root (permissions do not stop root), chmod otherwise.
fn make_unwritable(dir: &Path, on: bool) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode(if on { 0o555 } else { 0o755 }),
        )
        .is_ok()
    }
}
