//! What the OS refuses is reported as what it is, for `migrate`, `rollback2` and `etcd-inspect`:
//! an unreadable db, an unreadable WAL segment, a read-only file system under the data dir's
//! parent, a full file system. Each: the real cause and the path once, the documented exit code
//! (4 = I/O, see src/error.rs), and the data dir unchanged byte for byte.
//!
//! Data: one data dir written by real etcd 3.4.23. Permissions do not stop root, so as root the
//! tools run as `nobody` (setpriv) on a copy owned by nobody; the file systems are small tmpfs
//! mounts (root only: the test fails, not skips, when it cannot mount).
mod common;

use common::*;
use etcdtools::etcd::client::HttpClient;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A stopped 3.4.23 member's data dir with 40 keys and .snap files, made once per test binary.
fn seed() -> &'static Path {
    static SEED: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &SEED
        .get_or_init(|| {
            let temp = TempDir::new("io-seed");
            let dir = temp.path().join("data");
            let mut etcd = TestEtcd::start_on(V3_4, &dir, "io", &["--snapshot-count=10"]);
            let http = HttpClient::plain();
            for i in 0..40 {
                let key = etcdtools::base64::encode(format!("/k/{i}").as_bytes());
                http.post_json(
                    &format!("{}/v3/kv/put", etcd.client_url),
                    &json!({"key": key, "value": etcdtools::base64::encode(b"v")}),
                    Duration::from_secs(10),
                )
                .unwrap();
            }
            etcd.stop();
            // Keep copies small: the 64 MB preallocated WAL cut to its records and a zero tail.
            for e in std::fs::read_dir(dir.join("member/wal")).unwrap() {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                let end = b.iter().rposition(|x| *x != 0).map_or(0, |i| i + 1);
                std::fs::write(&p, &b[..(end + 4096).min(b.len())]).unwrap();
            }
            (temp, dir)
        })
        .1
}

/// A copy of the seed at `parent/data`, owned by nobody when we are root.
fn copy_to(parent: &Path) -> PathBuf {
    std::fs::create_dir_all(parent).unwrap();
    let d = parent.join("data");
    copy_tree(seed(), &d);
    if is_root() {
        chown_tree(parent);
    }
    d
}

fn chown_tree(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

/// Runs a binary of ours, as nobody when `as_nobody` and we are root.
fn run(bin: &str, args: &[&str], as_nobody: bool) -> Output {
    let mut cmd = if as_nobody && is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ]);
        c.arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(args)
        .output()
        .expect("run (setpriv is in util-linux)");
    eprintln!(
        "--- {bin} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn inspect(args: &[&str], as_nobody: bool) -> Output {
    run(env!("CARGO_BIN_EXE_etcd-inspect"), args, as_nobody)
}

fn rollback2(dir: &Path, as_nobody: bool) -> Output {
    run(
        env!("CARGO_BIN_EXE_rollback2"),
        &["--data-dir", dir.to_str().unwrap()],
        as_nobody,
    )
}

/// migrate to 3.4.23/etcd3 (what the data is): with no version.txt it must read the files to
/// detect the version, then write version.txt.
fn migrate(dir: &Path, as_nobody: bool) -> Output {
    let bin_dir = etcd_bin_dir();
    let mut args = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--bin-dir",
        bin_dir.to_str().unwrap(),
        "--bundled-versions",
        V3_4,
        "--target-version",
        V3_4,
        "--target-storage",
        "etcd3",
        "--name",
        "io",
    ];
    args.push("--lock-timeout");
    args.push("1s");
    run(env!("CARGO_BIN_EXE_migrate"), &args, as_nobody)
}

/// The failure is an I/O error (exit 4), names `cause` and `path` exactly once.
fn assert_io(out: &Output, cause: &str, path: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "exit code: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(cause), "no {cause:?} in {last:?}");
    let p = path.display().to_string();
    assert_eq!(
        last.matches(&p).count(),
        1,
        "{p} not named once in {last:?}"
    );
    assert!(
        !last.contains("damaged"),
        "an I/O error called damage: {last}"
    );
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unreadable_db_is_a_permission_problem() {
    let temp = TempDir::new("io-db");
    let d = copy_to(&temp.path().join("p"));
    let db = d.join("member/snap/db");
    chmod(&db, 0o000);
    let before = file_tree(&d);
    let ds = d.to_str().unwrap();

    let out = inspect(&["check", ds], true);
    assert_io(&out, "Permission denied; run as the data dir's owner", &db);
    let out = inspect(&["db", ds], true);
    assert_io(&out, "Permission denied", &db);
    let out = rollback2(&d, true);
    assert_io(&out, "Permission denied; run as the data dir's owner", &db);
    assert!(String::from_utf8_lossy(&out.stderr).contains("untouched"));
    assert_eq!(file_tree(&d), before);

    std::fs::remove_file(d.join("version.txt")).ok();
    let before = file_tree(&d);
    let out = migrate(&d, true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Migration failed: "));
    assert_io(&out, "Permission denied; run as the data dir's owner", &db);
    assert_eq!(file_tree(&d), before);
    chmod(&db, 0o600);
}

#[test]
fn unreadable_wal_is_a_permission_problem() {
    let temp = TempDir::new("io-wal");
    let d = copy_to(&temp.path().join("p"));
    let seg = std::fs::read_dir(d.join("member/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    chmod(&seg, 0o000);
    std::fs::remove_file(d.join("version.txt")).ok();
    let before = file_tree(&d);
    let ds = d.to_str().unwrap();

    for cmd in ["check", "wal", "version"] {
        let out = inspect(&[cmd, ds], true);
        assert_io(&out, "Permission denied", &seg);
    }
    let out = rollback2(&d, true);
    assert_io(&out, "Permission denied; run as the data dir's owner", &seg);
    let out = migrate(&d, true);
    assert_io(&out, "Permission denied; run as the data dir's owner", &seg);
    assert_eq!(file_tree(&d), before);
    chmod(&seg, 0o600);
}

/// A tmpfs at `at` (root only), unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        assert!(
            is_root(),
            "this test mounts a tmpfs: run it as root (./scripts/test.sh in CI does)"
        );
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        Mount(at.to_path_buf())
    }

    fn remount_ro(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount,ro failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn read_only_parent_is_said_so() {
    let temp = TempDir::new("io-ro");
    let m = Mount::tmpfs(&temp.path().join("mnt"), "16m");
    let d = copy_to(&m.0);
    std::fs::remove_file(d.join("version.txt")).ok();
    m.remount_ro();
    let before = file_tree(&d);
    let ds = d.to_str().unwrap();

    // Reading needs no write: etcd-inspect works.
    let out = inspect(&["check", ds], false);
    assert_eq!(out.status.code(), Some(0));
    let out = rollback2(&d, false);
    assert_io(
        &out,
        "Read-only file system; the file system is mounted read-only",
        &d.join(".rollback.tmp"),
    );
    let out = migrate(&d, false);
    assert_io(
        &out,
        "Read-only file system; the file system is mounted read-only",
        &d,
    );
    assert_eq!(file_tree(&d), before);
    assert_eq!(
        std::fs::read_dir(&m.0).unwrap().count(),
        1,
        "left files beside"
    );
}

#[test]
fn full_file_system_is_said_so() {
    let temp = TempDir::new("io-full");
    let m = Mount::tmpfs(&temp.path().join("mnt"), "4m");
    let d = copy_to(&m.0);
    std::fs::remove_file(d.join("version.txt")).ok();
    // Fill what is left (a lock file needs no data block; writing version.txt does).
    let filler = m.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let before = file_tree(&d);
    let ds = d.to_str().unwrap();

    let out = inspect(&["check", ds], false);
    assert_eq!(out.status.code(), Some(0));
    let out = rollback2(&d, false);
    assert_io(
        &out,
        "No space left on device; the file system is full",
        &d.join(".rollback.tmp"),
    );
    let out = migrate(&d, false);
    assert_io(&out, "No space left on device; the file system is full", &d);
    assert_eq!(file_tree(&d), before);
    let mut left: Vec<String> = std::fs::read_dir(&m.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["data", "filler"], "left beside the data dir");
}

/// Like `file_tree`, but without opening anything that is not a regular file (a FIFO would
/// block, a link to /dev/zero never end): links by target, other kinds by name.
fn safe_tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            let what = if ft.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else if ft.is_file() {
                format!("{:x?}", std::fs::read(&p).unwrap())
            } else {
                format!("{ft:?}")
            };
            out.push((p, what));
        }
    }
    out.sort();
    out
}

/// migrate from 3.4.23 to 3.5.1 (an upgrade: it would start etcd 3.4.23 first).
fn migrate_upgrade(dir: &Path) -> Output {
    let bin_dir = etcd_bin_dir();
    let ports = etcdtools::etcd::process::free_ports(2).unwrap();
    let (port, peer) = (ports[0].to_string(), ports[1].to_string());
    std::fs::write(dir.join("version.txt"), "3.4.23/etcd3").ok();
    let args = [
        "--data-dir",
        dir.to_str().unwrap(),
        "--bin-dir",
        bin_dir.to_str().unwrap(),
        "--bundled-versions",
        "3.4.23,3.5.1",
        "--target-version",
        "3.5.1",
        "--target-storage",
        "etcd3",
        "--name",
        "io",
        "--port",
        &port,
        "--peer-port",
        &peer,
    ];
    run(env!("CARGO_BIN_EXE_migrate"), &args, false)
}

/// One line on stderr (the last), naming `path` once, saying `what`, exiting `code`.
fn assert_says(out: &Output, code: i32, path: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(code), "exit code: {err}");
    assert!(last.contains(what), "no {what:?} in {last:?}");
    let p = path.display().to_string();
    assert_eq!(
        last.matches(&p).count(),
        1,
        "{p} not named once in {last:?}"
    );
    assert!(!last.contains("missing"), "called missing: {last}");
}

#[test]
fn paths_of_the_wrong_kind_are_named_as_what_they_are() {
    let temp = TempDir::new("io-kinds");
    type Make = fn(&Path);
    let cases: [(&str, &str, Make, &str); 6] = [
        (
            "db-dir",
            "member/snap/db",
            |p| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            },
            "is a directory, not a regular file",
        ),
        (
            "db-fifo",
            "member/snap/db",
            |p| {
                std::fs::remove_file(p).unwrap();
                let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
                // SAFETY: mkfifo on a NUL-terminated path we own.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            },
            "is a FIFO, not a regular file",
        ),
        (
            "db-zero",
            "member/snap/db",
            |p| {
                std::fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink("/dev/zero", p).unwrap();
            },
            "is a character device (through a symbolic link), not a regular file",
        ),
        (
            "db-dangling",
            "member/snap/db",
            |p| {
                std::fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink("/nonexistent/db", p).unwrap();
            },
            "is a dangling symbolic link (to /nonexistent/db)",
        ),
        (
            "wal-file",
            "member/wal",
            |p| {
                std::fs::remove_dir_all(p).unwrap();
                std::fs::write(p, b"x").unwrap();
            },
            "is a regular file, not a directory",
        ),
        (
            "dir-file",
            "",
            |p| {
                std::fs::remove_dir_all(p).unwrap();
                std::fs::write(p, b"x").unwrap();
            },
            "is a regular file, not a directory",
        ),
    ];
    for (name, rel, make, what) in cases {
        let d = copy_to(&temp.path().join(name));
        let target = if rel.is_empty() {
            d.clone()
        } else {
            d.join(rel)
        };
        make(&target);
        let before = if rel.is_empty() {
            Vec::new()
        } else {
            safe_tree(&d)
        };
        let out = inspect(&["check", d.to_str().unwrap()], false);
        if rel.is_empty() {
            // Not a data dir at all: a refusal (1), not damage.
            assert_says(&out, 1, &target, what);
            assert_says(&rollback2(&d, false), 1, &target, what);
            let out = migrate_upgrade(&d);
            assert_says(&out, 1, &target, "not a directory");
            continue;
        }
        assert_eq!(out.status.code(), Some(3), "{name}: check must fail");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("{}: {what}", target.display())),
            "{name}: {text}"
        );
        assert_says(&rollback2(&d, false), 3, &target, what);
        let out = migrate_upgrade(&d);
        assert_says(&out, 3, &target, what);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("Starting etcd"),
            "{name}: etcd started"
        );
        if !rel.is_empty() {
            std::fs::remove_file(d.join("version.txt")).ok();
            assert_eq!(safe_tree(&d), before, "{name}: changed");
        }
    }
}

#[test]
fn unreadable_snap_dir_is_a_permission_problem() {
    let temp = TempDir::new("io-snapdir");
    let d = copy_to(&temp.path().join("p"));
    let snap = d.join("member/snap");
    chmod(&snap, 0o000);
    let ds = d.to_str().unwrap();
    assert_io(&inspect(&["check", ds], true), "Permission denied", &snap);
    assert_io(&rollback2(&d, true), "Permission denied", &snap);
    chmod(&snap, 0o700);
}

#[test]
fn a_damaged_wal_is_named_whatever_the_db_holds() {
    let temp = TempDir::new("io-wal-dmg");
    let seg_of = |d: &Path| {
        std::fs::read_dir(d.join("member/wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "wal"))
            .unwrap()
    };
    // Zeroed head: the first 4 KiB of the only segment.
    let d = copy_to(&temp.path().join("zeroed"));
    let seg = seg_of(&d);
    let mut b = std::fs::read(&seg).unwrap();
    b[..4096].fill(0);
    std::fs::write(&seg, &b).unwrap();
    let before = file_tree(&d);
    let out = rollback2(&d, false);
    assert_says(&out, 3, &seg, "WAL damaged at ");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{} offset 0: ", seg.display())));
    let out = inspect(&["check", d.to_str().unwrap()], false);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no record at the start"));
    assert_eq!(file_tree(&d), before);

    // Cut short inside the records: the HardState is gone, the db holds 40 keys.
    let d = copy_to(&temp.path().join("cut"));
    let seg = seg_of(&d);
    let b = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &b[..300]).unwrap();
    let before = file_tree(&d);
    let out = rollback2(&d, false);
    assert_says(&out, 3, &seg, "WAL damaged at ");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the db has applied entries up to index"),
        "{err}"
    );
    assert!(!err.contains("nothing was ever committed"), "{err}");
    assert_eq!(file_tree(&d), before);
}

/// etcd 3.x data without its db and without version.txt is not etcd2 data.
#[test]
fn v3_data_without_db_or_version_txt_is_refused() {
    let temp = TempDir::new("io-nodb");
    let d = copy_to(&temp.path().join("p"));
    std::fs::remove_file(d.join("member/snap/db")).unwrap();
    std::fs::remove_file(d.join("version.txt")).ok();
    let before = file_tree(&d);
    let out = migrate(&d, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot tell the version: the db is missing"),
        "{last}"
    );
    assert!(!err.contains("detected etcd"), "taken for etcd2? {err}");
    assert_eq!(file_tree(&d), before);
}
