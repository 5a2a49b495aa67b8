//! rollback through the library on the recorded etcd 3.4.23 fixtures (no etcd started):
//! a real dir with three .snap files and a WAL after them, and a fully synthetic one.
mod common;

use common::{copy_tree, etcd_tree, file_tree, is_symlink, spell, Tmpfs, SPELLINGS};
use etcdtools::rollback::{rollback_data_dir, RollbackOptions};
use etcdtools::storage::{snap, v2store, wal};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

fn fixture(name: &str) -> (PathBuf, PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let base = std::env::temp_dir().join(format!("rb-fixture-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("data");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/3.4.23")
            .join(name),
        &dir,
    );
    (base, dir)
}

fn opts() -> RollbackOptions {
    RollbackOptions {
        now: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        ..Default::default()
    }
}

/// Reads the result with the team's storage readers and returns the v2 store.
fn result_store(dir: &Path, index: u64, term: u64) -> v2store::Store {
    let files = snap::list_snap_files(&dir.join("member/snap")).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(format!("{term:016x}-{index:016x}.snap")));
    let s = snap::read_snap_file(&files[0]).unwrap();
    assert_eq!((s.metadata.index, s.metadata.term), (index, term));
    assert_eq!(s.metadata.conf_state.voters, vec![0x1177386ae0746d8e]);
    assert_eq!(wal::check(&dir.join("member/wal")).unwrap(), vec![]);
    let start = etcdtools::storage::proto::WalSnapshot {
        index,
        term,
        conf_state: None,
    };
    let c = wal::read_all(&dir.join("member/wal"), &start).unwrap();
    let hs = c.hard_state.unwrap();
    assert_eq!((hs.term, hs.vote, hs.commit), (term, 0, index));
    let snaps: Vec<(u64, u64)> = c.snapshots.iter().map(|s| (s.index, s.term)).collect();
    assert_eq!(snaps, vec![(0, 0), (index, term)]);
    // unpadded frames only: no length word has its top bit set
    let bytes =
        std::fs::read(dir.join("member/wal/0000000000000000-0000000000000000.wal")).unwrap();
    let mut off = 0;
    while off < bytes.len() {
        let len = u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap());
        assert_eq!(len >> 56, 0, "padded frame at {off}");
        off += 8 + len as usize;
    }
    assert_eq!(off, bytes.len());
    v2store::Store::load(&s.data).unwrap()
}

#[test]
fn real_dir_with_snapshots_and_wal_after_them() {
    let (base, dir) = fixture("v2-datadir");
    let r = rollback_data_dir(&dir, &opts()).unwrap();
    // newest .snap (index 33) confirmed by the WAL, entries up to commit 35 replayed
    assert!(r
        .source_snapshot
        .as_ref()
        .unwrap()
        .ends_with("0000000000000002-0000000000000021.snap"));
    // the 25 v2 keys and the TTL key of the old v2 store are reported, not carried over
    assert_eq!((r.old_v2_keys, r.old_v2_writes), (26, 0));
    assert_eq!(
        (r.index, r.term, r.keys, r.members.clone()),
        (35, 2, 3, vec![0x1177386ae0746d8e])
    );
    let store = result_store(&dir, 35, 2);
    assert_eq!(store.problems(), Vec::<String>::new());
    assert_eq!(store.cluster_version(), Some("2.2.0"));
    assert!(store
        .get("/0/members/1177386ae0746d8e/raftAttributes")
        .is_some());
    assert!(store
        .get("/0/members/1177386ae0746d8e/attributes")
        .is_some());
    // the old v2 user keys are not carried over (documented caveat); only v3 keys are under /1
    assert!(store.get("/1/v2").is_none());
    let mut user = Vec::new();
    store.get("/1").unwrap().walk(&mut |n| {
        if !n.is_dir() {
            user.push(n.path.clone());
        }
    });
    assert_eq!(user.len(), 3, "{user:?}");
    assert!(dir.join(".rollback.backup/member/snap/db").exists());
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn synthetic_dir_and_target_2_3_7() {
    let (base, dir) = fixture("v2-rollback-synthetic");
    let o = RollbackOptions {
        target: etcdtools::rollback::convert::TargetVersion::V2_3_7,
        ..opts()
    };
    let r = rollback_data_dir(&dir, &o).unwrap();
    assert_eq!((r.index, r.term, r.keys), (100, 5, 3));
    let store = result_store(&dir, 100, 5);
    assert_eq!(store.cluster_version(), Some("2.3.0"));
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn dry_run_changes_nothing() {
    let (base, dir) = fixture("v2-rollback-minimal");
    let before = file_tree(&dir);
    let r = rollback_data_dir(
        &dir,
        &RollbackOptions {
            dry_run: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(r.dry_run);
    assert_eq!((r.index, r.term, r.keys), (33, 2, 3));
    assert_eq!(file_tree(&dir), before, "dry run changed files");
    assert!(!dir.join(".rollback.backup").exists());
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn command_line() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rollback2"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["-h"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("Usage: rollback2 --data-dir DIR"), "{out}");
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("rollback2 "), "{out}");
    let (code, _, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("need to set --data-dir"), "{err}");
    let (code, _, err) = run(&["--data-dir", "/nonexistent/rollback2-test"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("/nonexistent/rollback2-test: no such data directory"),
        "{err}"
    );
    // the whole CLI path on a fixture, with the summary on stdout
    let (base, dir) = fixture("v2-rollback-minimal");
    let (code, out, err) = run(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--ttl",
        "90s",
        "--target-version",
        "2.3.7",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("cluster version: 2.3.0"), "{out}");
    assert!(out.trim_end().ends_with("Finished successfully"), "{out}");
    std::fs::remove_dir_all(base).unwrap();
}

/// SIGKILL at every point of the write-and-swap: every file of the original is in the data
/// dir or in the backup, and every file of the result in the data dir or in the complete
/// staged copy; a rerun always ends with the complete result and the untouched backup.
#[test]
fn a_crash_at_any_point_leaves_original_or_backup_plus_result() {
    crash_at_every_point(false);
}

/// The same with the data dir a mount point (a tmpfs as root; kubeadm's `/var/lib/etcd` is
/// the hostPath mount): it cannot be renamed, and nothing may land in its parent.
#[test]
fn a_mount_point_data_dir_survives_a_crash_at_any_point() {
    crash_at_every_point(true);
}

/// A fixture copy at `base/data`, on a tmpfs mounted there when `mounted`.
fn fixture_at(mounted: bool) -> (PathBuf, PathBuf, Option<Tmpfs>) {
    let (base, dir) = fixture("v2-rollback-minimal");
    if !mounted {
        return (base, dir, None);
    }
    let copy = base.join("copy");
    std::fs::rename(&dir, &copy).unwrap();
    let mnt = Tmpfs::mount(&dir, "64m");
    copy_tree(&copy, &dir);
    std::fs::remove_dir_all(&copy).unwrap();
    (base, dir, Some(mnt))
}

fn crash_at_every_point(mounted: bool) {
    use etcdtools::rollback::CRASH_POINT_ENV;
    let run_with = |dir: &Path, crash: Option<&str>, args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_rollback2"));
        c.arg("--data-dir").arg(dir).args(args);
        if let Some(p) = crash {
            c.env(CRASH_POINT_ENV, p);
        }
        c.output().unwrap()
    };
    let run = |dir: &Path, crash: Option<&str>| run_with(dir, crash, &[]);
    let (base, reference, mnt) = fixture_at(mounted);
    let original = file_tree(&reference);
    let out = run(&reference, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = etcd_tree(&reference);
    assert_eq!(file_tree(&reference.join(".rollback.backup")), original);
    drop(mnt);
    std::fs::remove_dir_all(&base).unwrap();
    let found_in = |tree: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
                    places: &[PathBuf],
                    point: &str| {
        for (p, content) in tree {
            assert!(
                places.iter().any(|d| file_tree(d).get(p) == Some(content)),
                "{point}: {} is lost",
                p.display()
            );
        }
    };
    for point in [
        "snap-written",
        "built",
        "ready",
        "old-backup-removed",
        "moved-to-backup",
        "member-swapped",
        "swapped",
    ] {
        let (base, dir, mnt) = fixture_at(mounted);
        let out = run(&dir, Some(point));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{point}"
        );
        let backup = dir.join(".rollback.backup");
        let ready = dir.join(".rollback.new");
        found_in(&original, &[dir.clone(), backup.clone()], point);
        if backup.exists() {
            found_in(&result, &[dir.clone(), ready.clone()], point);
        }
        // --dry-run on the half-done state: changes nothing and foretells the rerun.
        let crashed = (file_tree(&base), file_tree(&dir));
        let dry = run_with(&dir, None, &["--dry-run"]);
        assert_eq!(
            (file_tree(&base), file_tree(&dir)),
            crashed,
            "{point}: --dry-run wrote"
        );
        // rerun: finishes (or, after a full swap, refuses because the backup exists)
        let again = run(&dir, None);
        assert_foretold(&dry, &again, point);
        if point == "swapped" {
            assert!(!again.status.success());
        } else {
            assert!(
                again.status.success(),
                "{point}: {}",
                String::from_utf8_lossy(&again.stderr)
            );
        }
        assert_eq!(etcd_tree(&dir), result, "{point}: final result");
        assert_eq!(file_tree(&backup), original, "{point}: final backup");
        assert!(
            !ready.exists() && !dir.join(".rollback.tmp").exists(),
            "{point}"
        );
        assert_eq!(
            std::fs::read_dir(&base).unwrap().count(),
            1,
            "{point}: nothing beside"
        );
        drop(mnt);
        std::fs::remove_dir_all(base).unwrap();
    }
}

/// `dry` (a `--dry-run`) printed what `real` (the run that followed) then did, line by line:
/// the same leftovers dealt with, the same plan, the same files, or the same refusal.
fn assert_foretold(dry: &std::process::Output, real: &std::process::Output, point: &str) {
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let err_line = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        e.lines().last().unwrap_or_default().to_string()
    };
    assert_eq!(dry.status.success(), real.status.success(), "{point}");
    if !real.status.success() {
        assert_eq!(err_line(dry), err_line(real), "{point}: another refusal");
        return;
    }
    let dry = text(dry)
        .replace("would write:", "wrote:")
        .replace("original would move to:", "original moved to:")
        .replace("would complete an interrupted", "completed an interrupted")
        .replace("Dry run: nothing was changed", "Finished successfully");
    let real: String = text(real)
        .lines()
        .filter(|l| !l.starts_with("Rolling "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        dry.contains("recover: "),
        "{point}: no leftover shown: {dry}"
    );
    assert_eq!(dry, real, "{point}: the dry run foretold otherwise");
}

/// rollback2 works on the real directory whatever names it: an absolute and a relative
/// symlink (the link stays a link), `.` (run from inside the data dir) and `..` (from inside
/// member/); nothing is written beside it, and nothing inside but the protocol's entries.
#[test]
fn symlinks_dot_and_dotdot_name_the_real_dir() {
    for label in SPELLINGS {
        let (base, dir) = fixture("v2-rollback-minimal");
        let original = file_tree(&dir);
        let (given, cwd) = spell(&dir, &base.join("disk/etcd"), label);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollback2"))
            .arg("--data-dir")
            .arg(&given)
            .current_dir(&cwd)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{label}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.trim_end().ends_with("Finished successfully"), "{text}");
        let link = is_symlink(&dir);
        assert_eq!(
            link,
            label.ends_with("link"),
            "{label}: the link was replaced"
        );
        let entries = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(entries(&dir), vec![".rollback.backup", "member"], "{label}");
        assert_eq!(
            file_tree(&dir.join(".rollback.backup")),
            original,
            "{label}"
        );
        let beside = if link {
            vec!["data", "disk"]
        } else {
            vec!["data"]
        };
        assert_eq!(entries(&base), beside, "{label}: left beside the data dir");
        std::fs::remove_dir_all(base).unwrap();
    }
}
