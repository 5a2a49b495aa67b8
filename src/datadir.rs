//! The etcd data dir as migrate and rollback2 see it: one identity (the real directory,
//! whatever spelling or symlink named it), the names of everything the tools keep in it,
//! creation, the emptiness check, the lock, a crash-safe backup copy, and the swap of
//! `member/`.
//!
//! Everything crash recovery needs (staged restore, backup, snapshot, markers) lives INSIDE
//! the data dir, under names starting with `.`: the data dir itself is never renamed, so it
//! may be a mount point (kubeadm's hostPath `/var/lib/etcd`, a dedicated disk), every rename
//! stays on its file system, and nothing is written to its parent. etcd reads only
//! `member/` (and logs a warning for other names, as it does for `version.txt`).

pub mod leftovers;

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::fsutil::{try_flock, Lock};
use crate::version::{sync_dir, VERSION_FILE};

/// `<what> <path>: <cause>`; an OS error keeps its kind (and gets its hint).
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {cause}", path.display())]
pub struct DataDirError {
    pub path: PathBuf,
    pub what: String,
    pub cause: Cause,
}

/// Why a data dir operation failed: the OS said no, or we refuse.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("{}", crate::error::describe(.0))]
    Os(io::Error),
    #[error("{0}")]
    Refused(String),
}

impl From<io::Error> for Cause {
    fn from(e: io::Error) -> Self {
        Cause::Os(e)
    }
}
impl From<&str> for Cause {
    fn from(s: &str) -> Self {
        Cause::Refused(s.to_string())
    }
}
impl From<String> for Cause {
    fn from(s: String) -> Self {
        Cause::Refused(s)
    }
}

impl crate::error::HasKind for DataDirError {
    fn kind(&self) -> crate::error::Kind {
        match self.cause {
            Cause::Os(_) => crate::error::Kind::Io,
            Cause::Refused(_) => crate::error::Kind::Refused,
        }
    }
}

fn err(path: &Path, what: &str, cause: impl Into<Cause>) -> DataDirError {
    DataDirError {
        path: path.to_path_buf(),
        what: what.to_string(),
        cause: cause.into(),
    }
}

/// Names inside the data dir that belong to the tools, never to etcd.
pub mod names {
    /// Where a downgrade restores into (`member/` + `version.txt`).
    pub const RESTORE: &str = ".restore";
    /// Says `.restore` is complete and may replace `member/`.
    pub const RESTORE_MARKER: &str = ".restore.complete";
    pub const SNAPSHOT: &str = ".snapshot.db";
    /// The old `member/` and `version.txt` after a swap or a backup copy.
    pub const BACKUP: &str = ".bak";
    pub const BACKUP_TMP: &str = ".bak.tmp";
    /// What an undone etcd2 -> etcd3 conversion swaps out.
    pub const DISCARD: &str = ".discard";
    /// Says `.bak` is the complete backup taken before an etcd2 -> etcd3 conversion.
    pub const V2V3_JOURNAL: &str = ".v2v3-backup";
    /// rollback2: being built, complete, and the original after the swap.
    pub const ROLLBACK_TMP: &str = ".rollback.tmp";
    pub const ROLLBACK_NEW: &str = ".rollback.new";
    pub const ROLLBACK_BACKUP: &str = ".rollback.backup";
    /// Says `.bak` is the backup taken before an in-place migrate step; holds the version
    /// pair that step ends at (`crate::migrate::verify`). Live while `version.txt` differs.
    pub const STEP_JOURNAL: &str = ".step-backup";
    /// Every name above (and `version.txt-next`): the entries a data dir may hold besides
    /// etcd's without holding data.
    pub const ALL: &[&str] = &[
        RESTORE,
        RESTORE_MARKER,
        SNAPSHOT,
        BACKUP,
        BACKUP_TMP,
        DISCARD,
        V2V3_JOURNAL,
        ROLLBACK_TMP,
        ROLLBACK_NEW,
        ROLLBACK_BACKUP,
        STEP_JOURNAL,
        crate::version::VERSION_FILE_NEXT,
    ];
}

/// An etcd data dir: the real directory behind the path it was given.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    given: PathBuf,
}

impl DataDir {
    /// Resolves `given` once (relative paths, `.`, `..`, trailing `/`, symlinks, also a
    /// symlink whose target does not exist yet) to the absolute real directory. Does not
    /// create anything.
    pub fn resolve(given: &Path) -> Result<Self, DataDirError> {
        if given.as_os_str().is_empty() {
            return Err(err(given, "data directory", "is an empty path"));
        }
        let abs = if given.is_absolute() {
            given.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| err(given, "cannot resolve data directory", e))?
                .join(given)
        };
        let path =
            real_path(&abs, 0).map_err(|e| err(given, "cannot resolve data directory", e))?;
        if path.parent().is_none() {
            return Err(err(given, "data directory", "is the root directory"));
        }
        if path != given {
            log::info!("data directory {} is {}", given.display(), path.display());
        }
        Ok(DataDir {
            path,
            given: given.to_path_buf(),
        })
    }

    /// Same as [`DataDir::resolve`].
    pub fn new(given: &Path) -> Result<Self, DataDirError> {
        Self::resolve(given)
    }

    /// The real directory (absolute, no symlinks).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as the operator spelled it.
    pub fn given(&self) -> &Path {
        &self.given
    }

    /// `<dir>/<name>`, for the names in [`names`].
    pub fn entry(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn member_path(&self) -> PathBuf {
        self.path.join("member")
    }

    pub fn backup_path(&self) -> PathBuf {
        self.entry(names::BACKUP)
    }

    /// Where a backup copy is built before it is renamed to `.bak`.
    pub fn backup_tmp_path(&self) -> PathBuf {
        self.entry(names::BACKUP_TMP)
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.entry(names::SNAPSHOT)
    }

    /// Where a downgrade restores into before the swap.
    pub fn restore_path(&self) -> PathBuf {
        self.entry(names::RESTORE)
    }

    pub fn restore_marker(&self) -> PathBuf {
        self.entry(names::RESTORE_MARKER)
    }

    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok()
    }

    /// Creates the dir if missing: missing parents 0777 & umask, the dir itself 0700 (what
    /// etcd wants).
    /// Fails when the path exists but is not a directory.
    pub fn create_if_missing(&self) -> Result<bool, DataDirError> {
        match self.is_dir_or_missing()? {
            true => Ok(false),
            false => {
                log::info!(
                    "data directory '{}' does not exist, creating it",
                    self.path.display()
                );
                let parent = self.path.parent().unwrap_or(Path::new("/"));
                fs::create_dir_all(parent)
                    .map_err(|e| err(parent, "failed to create the parent of the data dir", e))?;
                match fs::DirBuilder::new().mode(0o700).create(&self.path) {
                    Ok(()) => {}
                    // A second run (same host, same data dir) created it meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.path.is_dir() => {
                        return Ok(false)
                    }
                    Err(e) => return Err(err(&self.path, "failed to create data directory", e)),
                }
                set_mode(&self.path, 0o700)?;
                sync_dir(parent).map_err(|e| err(parent, "fsync", e))?;
                Ok(true)
            }
        }
    }

    /// What [`DataDir::create_if_missing`] would fail with, without creating anything (for
    /// `--dry-run`): the nearest existing ancestor must let us create entries.
    pub fn check_creatable(&self) -> Result<(), DataDirError> {
        if self.is_dir_or_missing()? {
            return Ok(());
        }
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        let Some(existing) = self.path.ancestors().skip(1).find(|p| p.exists()) else {
            return Ok(());
        };
        let c = std::ffi::CString::new(existing.as_os_str().as_bytes())
            .map_err(|e| err(existing, "cannot check", e.to_string()))?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        Err(if existing == parent {
            err(&self.path, "failed to create data directory", e)
        } else {
            err(parent, "failed to create the parent of the data dir", e)
        })
    }

    /// True for a directory, false for a missing path; an error for anything else (the
    /// refusal `--dry-run` and the run share).
    pub fn is_dir_or_missing(&self) -> Result<bool, DataDirError> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(_) => Err(err(
                &self.path,
                "data directory",
                "exists but is not a directory",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(err(&self.path, "cannot stat data directory", e)),
        }
    }

    /// True iff the dir holds no data: nothing but `lost+found` (what mkfs leaves on a fresh
    /// volume) and the tools' own entries ([`names::ALL`]). A missing dir is empty.
    pub fn is_empty(&self) -> Result<bool, DataDirError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(err(&self.path, "failed to open data directory", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| err(&self.path, "failed to read data directory", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != "lost+found" && !names::ALL.contains(&name.as_ref()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes an exclusive flock on the real directory itself (no file is written), waiting
    /// up to `wait`. Every spelling of the dir, and every process on the host that sees it
    /// (also another container with the same hostPath), shares this lock; migrate and
    /// rollback2 both take it.
    pub fn lock(&self, wait: Duration) -> Result<DirLock, DataDirError> {
        let file = File::open(&self.path).map_err(|e| err(&self.path, "cannot lock", e))?;
        let started = Instant::now();
        let mut logged = false;
        loop {
            // std opens with O_CLOEXEC, so children (etcd) never inherit the lock.
            match try_flock(&file, Lock::Exclusive) {
                Ok(true) => {
                    return Ok(DirLock {
                        _file: file,
                        path: self.path.clone(),
                    })
                }
                Ok(false) => {}
                Err(e) => return Err(err(&self.path, "cannot lock", e)),
            }
            let holder = lock_holder(&self.path).unwrap_or_else(|| "another process".into());
            if started.elapsed() >= wait {
                return Err(err(
                    &self.path,
                    "cannot lock",
                    format!(
                        "{holder} is working on this data dir (it still holds the lock after {wait:?}); wait for it to finish, then rerun"
                    ),
                ));
            }
            if !logged {
                log::warn!(
                    "{} is locked by {holder}; waiting up to {wait:?}",
                    self.path.display()
                );
                logged = true;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Bytes of etcd's data (`member/` and `version.txt`): what a copy or a snapshot needs,
    /// roughly. The tools' own entries do not count.
    pub fn size_bytes(&self) -> Result<u64, DataDirError> {
        let mut total = 0;
        for p in [self.member_path(), self.path.join(VERSION_FILE)] {
            total += tree_size(&p).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(0),
                _ => Err(err(&p, "cannot measure", e)),
            })?;
        }
        Ok(total)
    }

    /// Bytes in the tree at `path` (0 when missing), e.g. `.bak` or `member/snap/db`.
    pub fn size_of(&self, path: &Path) -> Result<u64, DataDirError> {
        tree_size(path).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(0),
            _ => Err(err(path, "cannot measure", e)),
        })
    }

    /// Copies `member/` and `version.txt` to `.bak`: the old `.bak` (a copy of data the data
    /// dir still holds: a caller puts an interrupted step's backup back instead) is removed
    /// first, so the file system needs room for one copy only; then into `.bak.tmp` (removed
    /// first if a crash left one), fsynced, renamed. A crash at any point leaves the data
    /// untouched and at worst a stale `.bak.tmp`.
    pub fn backup_copy(&self) -> Result<PathBuf, DataDirError> {
        let tmp = self.backup_tmp_path();
        let bak = self.backup_path();
        remove_tree(&bak)?;
        remove_tree(&tmp)?;
        let copy = || -> io::Result<()> {
            fs::DirBuilder::new().mode(0o700).create(&tmp)?;
            for name in ["member", VERSION_FILE] {
                let from = self.path.join(name);
                if fs::symlink_metadata(&from).is_ok() {
                    copy_tree(&from, &tmp.join(name))?;
                }
            }
            sync_dir(&tmp)
        };
        copy().map_err(|e| err(&tmp, "failed to back up data into", e))?;
        remove_tree(&bak)?;
        rename_synced(&tmp, &bak)?;
        Ok(bak)
    }

    /// Puts the backup `.bak` (kept) back as `member/` and `version.txt`: copied into
    /// `.restore`, marked complete, then swapped in (what it replaces goes to `.discard`,
    /// removed). After a crash the leftovers scan drops an unmarked copy, finishes a swap
    /// that began, and (while a journal says `.bak` is the data before a step, see
    /// [`leftovers::Leftover::PutBack`]) puts the backup back again.
    ///
    /// With `drop_first` (migrate's step journal is live, so a crash with `member/` gone is
    /// recovered by putting the backup back, see [`leftovers`]) the `member/` being replaced
    /// is removed before the copy, so the file system needs room for the difference only.
    pub fn put_back_backup(
        &self,
        hook: &dyn Fn(&str),
        drop_first: bool,
    ) -> Result<(), DataDirError> {
        let restore = self.restore_path();
        let discard = self.entry(names::DISCARD);
        if drop_first && self.member_path().exists() {
            remove_tree(&discard)?;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&discard)
                .map_err(|e| err(&discard, "failed to create", e))?;
            rename_synced(&self.member_path(), &discard.join("member"))?;
            hook("member-dropped");
            remove_tree(&discard)?;
        }
        remove_tree(&restore)?;
        copy_tree(&self.backup_path(), &restore)
            .map_err(|e| err(&restore, "failed to copy the backup into", e))?;
        let marker = self.restore_marker();
        fs::write(&marker, b"")
            .and_then(|_| sync_dir(&self.path))
            .map_err(|e| err(&marker, "cannot write", e))?;
        hook("put-back-marked");
        self.swap_in(&restore, &discard, hook)?;
        remove_tree(&marker)?;
        remove_tree(&discard)
    }

    /// Puts the complete `staged/member` (and `staged/version.txt`, if any) in place of
    /// `member/` (and `version.txt`), which go to `backup` (replaced). Each step checks what
    /// is done, so after a crash at any point a second call finishes the swap; `hook` is
    /// called between the steps (crash-point tests).
    pub fn swap_in(
        &self,
        staged: &Path,
        backup: &Path,
        hook: &dyn Fn(&str),
    ) -> Result<(), DataDirError> {
        let member = self.member_path();
        let version = self.path.join(VERSION_FILE);
        let staged_member = staged.join("member");
        if staged_member.exists() && member.exists() {
            remove_tree(backup)?;
            hook("old-backup-removed");
            fs::DirBuilder::new()
                .mode(0o700)
                .create(backup)
                .map_err(|e| err(backup, "failed to create", e))?;
            rename_synced(&member, &backup.join("member"))?;
            hook("moved-to-backup");
        }
        if staged_member.exists() {
            if !backup.is_dir() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(backup)
                    .map_err(|e| err(backup, "failed to create", e))?;
            }
            if version.exists() {
                rename_synced(&version, &backup.join(VERSION_FILE))?;
            }
            rename_synced(&staged_member, &member)?;
            hook("member-swapped");
        }
        let staged_version = staged.join(VERSION_FILE);
        if staged_version.exists() {
            rename_synced(&staged_version, &version)?;
        }
        remove_tree(staged)?;
        sync_dir(&self.path).map_err(|e| err(&self.path, "fsync", e))?;
        hook("swapped");
        Ok(())
    }

    /// Mode bits (e.g. 0o700) of the data dir.
    pub fn mode(&self) -> Result<u32, DataDirError> {
        fs::metadata(&self.path)
            .map(|m| m.mode() & 0o7777)
            .map_err(|e| err(&self.path, "cannot stat", e))
    }

    /// Free bytes on the data dir's own file system, which holds every copy (for a dir not
    /// created yet: the file system it will be created on).
    pub fn free_bytes(&self) -> Result<u64, DataDirError> {
        let existing = self
            .path
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(&self.path);
        free_bytes(existing)
    }
}

/// The real path of `abs` (absolute): `canonicalize`, or for a path that does not exist
/// yet, the real path of its parent plus its name, following a dangling symlink to where
/// its target will be.
fn real_path(abs: &Path, depth: u32) -> io::Result<PathBuf> {
    if depth > 40 {
        return Err(io::Error::other("too many levels of symbolic links"));
    }
    match fs::canonicalize(abs) {
        Ok(p) => return Ok(p),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(io::Error::other("has no final path component"));
    };
    let parent = real_path(parent, depth + 1)?;
    let here = parent.join(name);
    match fs::symlink_metadata(&here) {
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(&here)?;
            real_path(&parent.join(target), depth + 1)
        }
        _ => Ok(here),
    }
}

/// "pid N (cmdline)" of the process holding a flock on `path`, from /proc/locks.
fn lock_holder(path: &Path) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let want = (libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
    let locks = fs::read_to_string("/proc/locks").ok()?;
    for line in locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            continue;
        }
        let mut id = f[5].split(':');
        let (Some(maj), Some(min), Some(ino)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let parsed = (
            u32::from_str_radix(maj, 16).ok(),
            u32::from_str_radix(min, 16).ok(),
            ino.parse::<u64>().ok(),
        );
        if parsed != (Some(want.0), Some(want.1), Some(want.2)) {
            continue;
        }
        let pid = f[4];
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        return Some(if cmd.is_empty() {
            format!("pid {pid}")
        } else {
            format!("pid {pid} ({})", cmd.join(" "))
        });
    }
    None
}

/// Held while migrate or rollback2 works on a data dir; the flock goes away with the
/// descriptor (also when the process is killed).
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `rm -rf` that is fine with a missing path.
pub fn remove_tree(path: &Path) -> Result<(), DataDirError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(path, "cannot stat", e)),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| err(path, "failed to remove", e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| err(path, "failed to remove", e)),
    }
}

/// Renames `from` to `to` and fsyncs the parents of both (the same dir, or two dirs inside
/// the data dir).
pub fn rename_synced(from: &Path, to: &Path) -> Result<(), DataDirError> {
    fs::rename(from, to).map_err(|e| {
        err(
            from,
            "failed to rename",
            format!("to {}: {e}", to.display()),
        )
    })?;
    for p in [to, from] {
        let parent = p
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent).map_err(|e| err(parent, "fsync", e))?;
        if from.parent() == to.parent() {
            break;
        }
    }
    Ok(())
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), DataDirError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| err(path, "failed to set mode of", e))
}

fn tree_size(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut total = 0;
        for entry in fs::read_dir(path)? {
            total += tree_size(&entry?.path())?;
        }
        Ok(total)
    } else if meta.is_file() {
        Ok(meta.len())
    } else {
        Ok(0)
    }
}

/// Recursive copy keeping modes and symlinks; files are fsynced.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions())?;
        File::open(to)?.sync_all()?;
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if meta.is_file() {
        fs::copy(from, to)?;
        File::open(to)?.sync_all()?;
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the file system holding `path` (statvfs).
pub fn free_bytes(path: &Path) -> Result<u64, DataDirError> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| err(path, "statvfs", e.to_string()))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, st a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(err(path, "statvfs", io::Error::last_os_error()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("etcdtools-datadir-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::canonicalize(&d).unwrap()
    }

    #[test]
    fn every_spelling_resolves_to_the_real_dir() {
        let t = temp("resolve");
        let real = t.join("disk/etcd");
        fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("disk/etcd", t.join("rel-link")).unwrap();
        for given in [
            real.clone(),
            t.join("disk/etcd/"),
            t.join("disk/./etcd//"),
            t.join("disk/etcd/../etcd"),
            t.join("abs-link"),
            t.join("rel-link/"),
            real.join("."),
        ] {
            let d = DataDir::resolve(&given).unwrap();
            assert_eq!(d.path(), real, "{}", given.display());
            assert_eq!(d.given(), given);
        }
        // Not yet there: the parent's real path plus the name; a dangling link to its target.
        std::os::unix::fs::symlink("disk/new", t.join("dangling")).unwrap();
        let d = DataDir::resolve(&t.join("dangling")).unwrap();
        assert_eq!(d.path(), t.join("disk/new"));
        assert!(d.create_if_missing().unwrap());
        assert!(fs::symlink_metadata(t.join("dangling"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(d.mode().unwrap(), 0o700);
        let d = DataDir::resolve(&t.join("abs-link/a/b")).unwrap();
        assert_eq!(d.path(), real.join("a/b"));
        assert!(DataDir::resolve(Path::new("/")).is_err());
        assert!(DataDir::resolve(Path::new("")).is_err());
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn names_live_inside_the_data_dir() {
        let t = temp("names");
        let d = DataDir::resolve(&t.join("data/")).unwrap();
        assert_eq!(d.path(), t.join("data"));
        assert_eq!(d.backup_path(), t.join("data/.bak"));
        assert_eq!(d.snapshot_path(), t.join("data/.snapshot.db"));
        assert_eq!(d.restore_path(), t.join("data/.restore"));
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn create_empty_and_backup() {
        let t = temp("create");
        let d = DataDir::resolve(&t.join("a/b/data")).unwrap();
        assert!(d.is_empty().unwrap());
        assert!(d.create_if_missing().unwrap());
        assert!(!d.create_if_missing().unwrap());
        assert_eq!(d.mode().unwrap(), 0o700);
        assert!(d.is_empty().unwrap());
        // What mkfs leaves, and the tools' own entries, are not data.
        fs::create_dir(d.path().join("lost+found")).unwrap();
        fs::create_dir(d.backup_path()).unwrap();
        assert!(d.is_empty().unwrap());
        fs::write(d.path().join(".hidden"), "x").unwrap();
        assert!(!d.is_empty().unwrap());
        fs::create_dir(d.member_path()).unwrap();
        fs::write(d.path().join("member/f"), "hello").unwrap();
        let bak = d.backup_copy().unwrap();
        assert_eq!(fs::read_to_string(bak.join("member/f")).unwrap(), "hello");
        assert!(!bak.join(".hidden").exists() && !bak.join("lost+found").exists());
        assert_eq!(fs::metadata(&bak).unwrap().mode() & 0o777, 0o700);
        assert!(!d.backup_tmp_path().exists());
        assert_eq!(d.size_bytes().unwrap(), 5);
        assert!(d.free_bytes().unwrap() > 0);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn swap_in_finishes_from_every_intermediate_state() {
        let t = temp("swap");
        let d = DataDir::resolve(&t.join("data")).unwrap();
        let setup = || {
            let _ = fs::remove_dir_all(d.path());
            fs::create_dir_all(d.path().join("member")).unwrap();
            fs::write(d.path().join("member/old"), "o").unwrap();
            fs::write(d.path().join("version.txt"), "3.5.1/etcd3").unwrap();
            fs::create_dir_all(d.restore_path().join("member")).unwrap();
            fs::write(d.restore_path().join("member/new"), "n").unwrap();
            fs::write(d.restore_path().join("version.txt"), "3.4.23/etcd3").unwrap();
        };
        let check = || {
            assert!(d.path().join("member/new").exists());
            assert_eq!(
                fs::read_to_string(d.path().join("version.txt")).unwrap(),
                "3.4.23/etcd3"
            );
            assert!(d.backup_path().join("member/old").exists());
            assert_eq!(
                fs::read_to_string(d.backup_path().join("version.txt")).unwrap(),
                "3.5.1/etcd3"
            );
            assert!(!d.restore_path().exists());
        };
        for stop in [
            "old-backup-removed",
            "moved-to-backup",
            "member-swapped",
            "swapped",
        ] {
            setup();
            let hook = |p: &str| {
                if p == stop {
                    panic!("stop")
                }
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                d.swap_in(&d.restore_path(), &d.backup_path(), &hook)
            }));
            assert!(r.is_err(), "{stop}");
            d.swap_in(&d.restore_path(), &d.backup_path(), &|_| {})
                .unwrap();
            check();
        }
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn lock_is_exclusive_bounded_and_names_the_holder() {
        let t = temp("lock");
        fs::create_dir(t.join("data")).unwrap();
        std::os::unix::fs::symlink("data", t.join("link")).unwrap();
        let d = DataDir::resolve(&t.join("data")).unwrap();
        let held = d.lock(Duration::ZERO).unwrap();
        let started = Instant::now();
        let other = DataDir::resolve(&t.join("link")).unwrap();
        let e = other
            .lock(Duration::from_millis(200))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(held);
        other.lock(Duration::ZERO).unwrap();
        assert_eq!(
            fs::read_dir(t.join("data")).unwrap().count(),
            0,
            "no lock file"
        );
        fs::remove_dir_all(&t).unwrap();
    }
}
