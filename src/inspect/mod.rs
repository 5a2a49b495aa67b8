//! What `etcd-inspect` prints: a printer over [`crate::storage::member::Member`], which owns
//! every fact (where etcd starts, what each path is, the version, the check). Each subcommand
//! is a function that asks the member and writes text (default) or JSON lines to a `Write`;
//! errors are the member's, typed ([`InspectError`], with a [`crate::error::Kind`] for the
//! exit code).

pub mod check;
pub mod db;
pub mod output;
pub mod snap;
pub mod version;
pub mod wal;

use std::io;
use std::path::PathBuf;

use crate::error::{HasKind, Kind};
use crate::storage::bolt::BoltError;
use crate::storage::member::{MemberError, PathError};
use crate::storage::snap::SnapError;

/// Why `etcd-inspect` could not answer: the member's error (whatever part of the member dir
/// it is about), or one of the tool's own; [`HasKind`] gives its exit code.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Member(#[from] MemberError),
    /// `db`: no db at the path (for a data dir: `<dir>/member/snap/db`).
    #[error("{}: no such file (expected a data dir with member/snap/db, or a db file)", path.display())]
    NoDb { path: PathBuf },
    /// Options that cannot go together.
    #[error("{0}")]
    Usage(&'static str),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl HasKind for InspectError {
    fn kind(&self) -> Kind {
        match self {
            InspectError::Member(e) => e.kind(),
            InspectError::Usage(_) => Kind::Usage,
            InspectError::NoDb { .. } | InspectError::Output(_) => Kind::Io,
        }
    }
}

impl From<BoltError> for InspectError {
    fn from(e: BoltError) -> Self {
        InspectError::Member(MemberError::Db(e))
    }
}

impl From<PathError> for InspectError {
    fn from(e: PathError) -> Self {
        InspectError::Member(MemberError::Path(e))
    }
}

/// The warning for a WAL segment a running etcd holds.
pub fn running_etcd_warning(locked: &std::path::Path) -> String {
    format!(
        "{} is locked: etcd is running on this data dir, what is read may be incomplete",
        locked.display()
    )
}

/// One line per newer `.snap` file that was skipped because it is broken (etcd skips them too).
pub fn print_skipped_snapshots(
    skipped: &[SnapError],
    json: bool,
    out: &mut dyn io::Write,
) -> Result<(), InspectError> {
    for s in skipped {
        if json {
            out.write_all(
                output::JsonLine::new()
                    .str("record", "skipped_snapshot")
                    .str("error", &s.to_string())
                    .finish()
                    .as_bytes(),
            )?;
        } else {
            writeln!(out, "skipped snapshot: {s}")?;
        }
    }
    Ok(())
}
