//! What each path of a member dir actually is, before any decoder opens it: a db that is a
//! directory, a FIFO or a link to a device, a WAL dir that is a regular file, a dangling link,
//! an unreadable file: each is reported as exactly that, with the path once (a FIFO would block
//! a decoder, a directory would make etcd panic).

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::Paths;
use crate::error::{HasKind, IoError, Kind};

/// What a path should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Dir,
    File,
}

/// A path that exists but is not what etcd needs there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {what}", path.display())]
pub struct WrongKind {
    pub path: PathBuf,
    /// "is a FIFO, not a regular file", "is a dangling symbolic link (to x)", ...
    pub what: String,
}

/// Why a path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The OS would not let us look (permission, I/O error).
    #[error(transparent)]
    Io(#[from] IoError),
    /// It is there but is the wrong kind of thing.
    #[error(transparent)]
    Wrong(#[from] WrongKind),
    /// The data dir itself is not a directory: not something to work on (a refusal).
    #[error(transparent)]
    NotADataDir(WrongKind),
}

impl HasKind for PathError {
    fn kind(&self) -> Kind {
        match self {
            PathError::Io(_) => Kind::Io,
            PathError::Wrong(_) => Kind::Corrupt,
            PathError::NotADataDir(_) => Kind::Refused,
        }
    }
}

/// Whether `path` is there as `want`: `Ok(false)` when nothing is there at all. A link is
/// followed; a file must also be openable for reading, a directory listable.
pub fn probe(path: &Path, want: Want) -> Result<bool, PathError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::read_link(path) {
                Ok(target) => Err(wrong(
                    path,
                    format!("is a dangling symbolic link (to {})", target.display()),
                )),
                Err(_) => Ok(false),
            };
        }
        Err(e) => return Err(IoError::new("cannot stat", path, e).into()),
    };
    let ft = meta.file_type();
    let (is, expected) = match want {
        Want::Dir => (ft.is_dir(), "not a directory"),
        Want::File => (ft.is_file(), "not a regular file"),
    };
    if !is {
        let linked = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let via = if linked {
            " (through a symbolic link)"
        } else {
            ""
        };
        return Err(wrong(
            path,
            format!("is {}{via}, {expected}", describe(&ft)),
        ));
    }
    match want {
        Want::Dir => fs::read_dir(path)
            .map(drop)
            .map_err(IoError::on("cannot list", path))?,
        Want::File => fs::File::open(path)
            .map(drop)
            .map_err(IoError::on("cannot open", path))?,
    }
    Ok(true)
}

fn wrong(path: &Path, what: String) -> PathError {
    PathError::Wrong(WrongKind {
        path: path.to_path_buf(),
        what,
    })
}

fn describe(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file or directory"
    }
}

/// Every path of a member dir that a reader opens, in the order they are needed: the data dir,
/// `member`, the WAL dir and its segments, the snap dir and its `.snap` files, the db. Stops at
/// the first that is wrong or unreadable; missing ones are left to the caller.
pub(super) fn probe_all(paths: &Paths) -> Result<(), PathError> {
    match probe(&paths.data_dir, Want::Dir) {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(PathError::Wrong(w)) => return Err(PathError::NotADataDir(w)),
        Err(e) => return Err(e),
    }
    probe(&paths.data_dir.join("member"), Want::Dir)?;
    for (dir, suffix) in [(&paths.wal_dir, ".wal"), (&paths.snap_dir, ".snap")] {
        if probe(dir, Want::Dir)? {
            for e in fs::read_dir(dir).map_err(IoError::on("cannot list", dir))? {
                let e = e.map_err(IoError::on("cannot list", dir))?;
                let name = e.file_name();
                if name.to_string_lossy().ends_with(suffix) {
                    probe(&e.path(), Want::File)?;
                }
            }
        }
    }
    probe(&paths.db, Want::File)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_a_path_is() {
        let d = std::env::temp_dir().join(format!("member-probe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("dir")).unwrap();
        fs::write(d.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("zero")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling")).unwrap();
        let msg = |p: &str, w| probe(&d.join(p), w).unwrap_err().to_string();
        assert!(msg("dir", Want::File).ends_with("dir is a directory, not a regular file"));
        assert!(msg("file", Want::Dir).ends_with("file is a regular file, not a directory"));
        assert!(msg("zero", Want::File)
            .ends_with("is a character device (through a symbolic link), not a regular file"));
        assert!(msg("dangling", Want::File).contains("is a dangling symbolic link (to "));
        assert!(!probe(&d.join("missing"), Want::File).unwrap());
        assert!(probe(&d.join("file"), Want::File).unwrap());
        assert_eq!(
            probe(&d.join("dir"), Want::File).unwrap_err().kind(),
            Kind::Corrupt
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
