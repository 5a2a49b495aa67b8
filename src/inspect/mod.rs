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

use crate::error::{HasKind, Kind};
use crate::storage::member::MemberError;
use crate::storage::snap::SnapError;
use db::DbError;

/// Why `etcd-inspect` could not answer: the member's error, the `db` command's, or the
/// output; [`HasKind`] gives its exit code.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl HasKind for InspectError {
    fn kind(&self) -> Kind {
        match self {
            InspectError::Member(e) => e.kind(),
            InspectError::Db(e) => e.kind(),
            InspectError::Output(_) => Kind::Io,
        }
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
