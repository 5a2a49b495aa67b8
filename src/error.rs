//! What kind a failure is, for every tool: the exit code an operator (or a script) sees, and
//! the I/O error that names its path once with a hint. Corruption is a
//! [`crate::storage::Finding`] (file and byte offset); refusals are each module's own variant.
//!
//! Exit codes of `migrate`, `rollback2` and `etcd-inspect` (docs/*.md list them):
//! 0 success, 1 refused or failed (the message says what to do), 2 usage, 3 the data is
//! damaged (`etcd-inspect check`: problems found), 4 an I/O error (permission, no space,
//! read-only file system, a file the OS could not open).

use std::io;
use std::path::{Path, PathBuf};

/// The kind of a failure; [`Kind::exit_code`] is what the binaries exit with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Refused (not what the tool can work on, etcd running, a lock held) or failed for a
    /// reason that is neither damage nor I/O (a child etcd failed, a bad config).
    Refused,
    /// Bad flags or arguments.
    Usage,
    /// The data is damaged: a finding with file and byte offset.
    Corrupt,
    /// The OS refused a file operation.
    Io,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Refused => 1,
            Kind::Usage => 2,
            Kind::Corrupt => 3,
            Kind::Io => 4,
        }
    }
}

/// Errors that know their [`Kind`].
pub trait HasKind {
    fn kind(&self) -> Kind;
}

/// A file operation the OS refused: `<op> <path>: <cause>[; <hint>]`, the path once.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}{}: {}{}", path.display(), at(offset), cause(source), hint(source))]
pub struct IoError {
    pub op: String,
    pub path: PathBuf,
    /// Where in the file, for a read that failed part way.
    pub offset: Option<u64>,
    #[source]
    pub source: io::Error,
}

impl IoError {
    pub fn new(op: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> IoError {
        IoError {
            op: op.into(),
            path: path.into(),
            offset: None,
            source,
        }
    }

    pub fn at_offset(mut self, offset: u64) -> IoError {
        self.offset = Some(offset);
        self
    }

    /// `map_err(IoError::on("cannot open", path))`.
    pub fn on<'a>(op: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
        move |source| IoError::new(op, path, source)
    }

    pub fn os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl HasKind for IoError {
    fn kind(&self) -> Kind {
        Kind::Io
    }
}

fn at(offset: &Option<u64>) -> String {
    offset.map_or(String::new(), |o| format!(" at offset {o}"))
}

/// An OS error as the operator should read it: the cause, then what to do about it.
pub fn describe(e: &io::Error) -> String {
    format!("{}{}", cause(e), hint(e))
}

/// The OS's words without Rust's " (os error N)".
fn cause(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(at) => s[..at].to_string(),
        None => s,
    }
}

/// What to do about the common causes.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "; run as the data dir's owner (or fix the permissions)"
        }
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "; the file system is full: free space there and rerun"
        }
        Some(libc::EROFS) => "; the file system is mounted read-only: remount it read-write",
        Some(libc::EIO) => "; the disk reports an I/O error: check the device (dmesg)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_path_once_and_hints_by_cause() {
        let e = IoError::new(
            "cannot open",
            "/d/member/snap/db",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let s = e.to_string();
        assert_eq!(
            s,
            "cannot open /d/member/snap/db: Permission denied; run as the data dir's owner (or fix the permissions)"
        );
        assert_eq!(e.kind().exit_code(), 4);
        let full = IoError::new(
            "cannot write",
            "/d/x",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(full
            .to_string()
            .contains("No space left on device; the file system is full"));
        let ro = IoError::new(
            "cannot create",
            "/d/x",
            io::Error::from_raw_os_error(libc::EROFS),
        );
        assert!(ro
            .to_string()
            .contains("Read-only file system; the file system is mounted read-only"));
    }
}
