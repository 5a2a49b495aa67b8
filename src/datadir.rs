//! The etcd data dir as migrate sees it: its siblings (`<dir>.lock`, `<dir>.bak`,
//! `<dir>.snapshot.db`, `<dir>.restore`), creation, the emptiness check, the lock, a
//! crash-safe backup copy, and the temp-then-swap that replaces the dir by a restored one.
//!
//! Every sibling lives in the same parent directory as the data dir, so each swap is a
//! `rename(2)` within one file system, and the parent is fsynced after each rename.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::version::sync_dir;

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

/// An etcd data dir path and the names of its siblings.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Does not touch the disk. A trailing `/` is dropped so siblings are `<dir>.bak`, not
    /// `<dir>/.bak`.
    pub fn new(path: &Path) -> Result<Self, DataDirError> {
        let s = path.as_os_str().as_bytes();
        let mut end = s.len();
        while end > 1 && s[end - 1] == b'/' {
            end -= 1;
        }
        let trimmed = PathBuf::from(std::ffi::OsStr::from_bytes(&s[..end]));
        if trimmed.file_name().is_none() {
            return Err(err(path, "data directory", "has no final path component"));
        }
        Ok(DataDir { path: trimmed })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir><suffix>`, next to the data dir.
    pub fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    /// The parent directory (`.` for a relative single component).
    pub fn parent(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn lock_path(&self) -> PathBuf {
        self.sibling(".lock")
    }

    pub fn backup_path(&self) -> PathBuf {
        self.sibling(".bak")
    }

    /// Where a backup copy is built before it is renamed to `.bak`.
    pub fn backup_tmp_path(&self) -> PathBuf {
        self.sibling(".bak.tmp")
    }

    pub fn snapshot_path(&self) -> PathBuf {
        self.sibling(".snapshot.db")
    }

    /// Where a downgrade restores into before the swap.
    pub fn restore_path(&self) -> PathBuf {
        self.sibling(".restore")
    }

    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok()
    }

    /// Creates the dir (and its parents) if missing, mode 0777 & umask as the original; fails
    /// when the path exists but is not a directory.
    pub fn create_if_missing(&self) -> Result<bool, DataDirError> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Ok(false),
            Ok(_) => Err(err(
                &self.path,
                "data directory",
                "exists but is not a directory",
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!(
                    "data directory '{}' does not exist, creating it",
                    self.path.display()
                );
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o777)
                    .create(&self.path)
                    .map_err(|e| err(&self.path, "failed to create data directory", e))?;
                let _ = sync_dir(&self.parent());
                Ok(true)
            }
            Err(e) => Err(err(&self.path, "cannot stat data directory", e)),
        }
    }

    /// True iff the dir has no entries (hidden ones count). A missing dir is empty.
    pub fn is_empty(&self) -> Result<bool, DataDirError> {
        match fs::read_dir(&self.path) {
            Ok(mut entries) => Ok(entries.next().is_none()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(err(&self.path, "failed to open data directory", e)),
        }
    }

    /// Takes `<dir>.lock` (flock, exclusive), waiting up to `wait` for another holder.
    pub fn lock(&self, wait: Duration) -> Result<DirLock, DataDirError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(&path, "cannot create lock file", e))?;
        let started = Instant::now();
        let mut logged = false;
        loop {
            // SAFETY: flock on a descriptor we own; std opens it with O_CLOEXEC, so children
            // (etcd) never inherit the lock.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(DirLock { _file: file, path });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err(&path, "cannot lock", e));
            }
            if started.elapsed() >= wait {
                return Err(err(
                    &path,
                    "cannot lock",
                    format!(
                        "another migrate is working on {} (it still holds the lock after \
                         {wait:?}); wait for it to finish, then rerun",
                        self.path.display()
                    ),
                ));
            }
            if !logged {
                log::warn!(
                    "{} is locked by another migrate; waiting up to {wait:?}",
                    path.display()
                );
                logged = true;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Total bytes of regular files under the dir (what a copy or a snapshot needs, roughly).
    pub fn size_bytes(&self) -> Result<u64, DataDirError> {
        tree_size(&self.path).map_err(|e| err(&self.path, "cannot measure", e))
    }

    /// Copies the dir to `<dir>.bak`: first into `<dir>.bak.tmp` (removed first if a crash
    /// left one), fsynced, then the old `.bak` is replaced by a rename. A crash at any point
    /// leaves the data dir untouched and at worst a stale `.bak.tmp`.
    pub fn backup_copy(&self) -> Result<PathBuf, DataDirError> {
        let tmp = self.backup_tmp_path();
        let bak = self.backup_path();
        remove_tree(&tmp)?;
        copy_tree(&self.path, &tmp).map_err(|e| err(&tmp, "failed to back up data into", e))?;
        remove_tree(&bak)?;
        fs::rename(&tmp, &bak).map_err(|e| err(&bak, "failed to rename backup to", e))?;
        sync_dir(&self.parent()).map_err(|e| err(&self.parent(), "fsync", e))?;
        Ok(bak)
    }

    /// Mode bits (e.g. 0o700) of the data dir.
    pub fn mode(&self) -> Result<u32, DataDirError> {
        fs::metadata(&self.path)
            .map(|m| m.mode() & 0o7777)
            .map_err(|e| err(&self.path, "cannot stat", e))
    }
}

/// Held while migrate works on a data dir; the flock goes away with the descriptor (also when
/// the process is killed). The file itself stays: removing it would race with a waiter.
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

/// Renames `from` to `to` and fsyncs the parent of `to` (both are siblings here).
pub fn rename_synced(from: &Path, to: &Path) -> Result<(), DataDirError> {
    fs::rename(from, to).map_err(|e| {
        err(
            from,
            "failed to rename",
            format!("to {}: {e}", to.display()),
        )
    })?;
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(parent).map_err(|e| err(parent, "fsync", e))
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
        d
    }

    #[test]
    fn siblings_ignore_trailing_slash() {
        let d = DataDir::new(Path::new("/var/etcd/data/")).unwrap();
        assert_eq!(d.path(), Path::new("/var/etcd/data"));
        assert_eq!(d.backup_path(), Path::new("/var/etcd/data.bak"));
        assert_eq!(d.lock_path(), Path::new("/var/etcd/data.lock"));
        assert_eq!(d.snapshot_path(), Path::new("/var/etcd/data.snapshot.db"));
        assert!(DataDir::new(Path::new("/")).is_err());
    }

    #[test]
    fn create_empty_and_backup() {
        let t = temp("create");
        let d = DataDir::new(&t.join("a/b/data")).unwrap();
        assert!(d.is_empty().unwrap());
        assert!(d.create_if_missing().unwrap());
        assert!(!d.create_if_missing().unwrap());
        assert!(d.is_empty().unwrap());
        fs::write(d.path().join(".hidden"), "x").unwrap();
        assert!(!d.is_empty().unwrap());
        fs::create_dir(d.path().join("member")).unwrap();
        fs::write(d.path().join("member/f"), "hello").unwrap();
        set_mode(d.path(), 0o700).unwrap();
        let bak = d.backup_copy().unwrap();
        assert_eq!(fs::read_to_string(bak.join("member/f")).unwrap(), "hello");
        assert_eq!(fs::metadata(&bak).unwrap().mode() & 0o777, 0o700);
        assert!(!d.backup_tmp_path().exists());
        assert_eq!(d.size_bytes().unwrap(), 6);
        assert!(free_bytes(d.path()).unwrap() > 0);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn lock_is_exclusive_and_bounded() {
        let t = temp("lock");
        let d = DataDir::new(&t.join("data")).unwrap();
        let held = d.lock(Duration::ZERO).unwrap();
        let started = Instant::now();
        let e = d
            .lock(Duration::from_millis(200))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another migrate"), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(held);
        d.lock(Duration::ZERO).unwrap();
        fs::remove_dir_all(&t).unwrap();
    }
}
