//! What `etcd-inspect` prints, on top of `storage`. Each subcommand is a function that reads a
//! data dir and writes text (default) or JSON lines to a `Write`. Where etcd starts and what a
//! path is are `storage::member`'s answers; errors are typed ([`InspectError`], with a
//! [`crate::error::Kind`] for the exit code).

pub mod check;
pub mod db;
pub mod dbfacts;
pub mod output;
pub mod snap;
pub mod version;
pub mod wal;

use std::io;
use std::path::{Path, PathBuf};

use crate::error::IoError;
use crate::error::{HasKind, Kind};
use crate::storage::bolt::BoltError;
use crate::storage::member::{self, probe_all, PathError, StartError};
use crate::storage::proto::WalSnapshot;
use crate::storage::snap::{LoadedSnapshot, SnapError};
use crate::storage::wal as walfile;
use crate::storage::wal::WalError;
use crate::storage::Finding;
use db::DbError;

/// Why `etcd-inspect` could not answer; [`HasKind`] gives its exit code.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snap(#[from] SnapError),
    /// The snapshot's v2 store JSON cannot be loaded.
    #[error("{0}")]
    Store(Finding),
    /// The bbolt db could not be read.
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: not found", .0.display())]
    NotFound(PathBuf),
    /// A path that is the wrong kind of thing (a FIFO db, a WAL dir that is a file), or that
    /// the OS will not let us open.
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

impl HasKind for InspectError {
    fn kind(&self) -> Kind {
        match self {
            InspectError::Wal(e) => e.kind(),
            InspectError::Snap(e) => e.kind(),
            InspectError::Store(e) => e.kind(),
            InspectError::Db(e) => e.kind(),
            InspectError::Path(e) => e.kind(),
            InspectError::Io(_) | InspectError::NotFound(_) | InspectError::Output(_) => Kind::Io,
        }
    }
}

impl From<BoltError> for InspectError {
    fn from(e: BoltError) -> Self {
        InspectError::Db(DbError::Bolt(e))
    }
}

/// Where the parts of a data dir are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
    pub db: PathBuf,
}

impl Layout {
    /// `<dir>/member/{wal,snap,snap/db}`; `wal_dir` overrides the WAL location (`--wal-dir`).
    pub fn of(data_dir: &Path, wal_dir: Option<&Path>) -> Layout {
        let member = data_dir.join("member");
        Layout {
            data_dir: data_dir.to_path_buf(),
            wal_dir: wal_dir.map_or_else(|| member.join("wal"), Path::to_path_buf),
            snap_dir: member.join("snap"),
            db: member.join("snap").join("db"),
        }
    }

    /// Fails when a path is not what it should be (see [`probe_all`]), or when `data_dir` has
    /// neither a WAL dir nor a snap dir.
    pub fn require(&self) -> Result<(), InspectError> {
        probe_all(&self.data_dir, &self.wal_dir)?;
        if !self.wal_dir.is_dir() && !self.snap_dir.is_dir() {
            return Err(InspectError::NotFound(self.data_dir.join("member")));
        }
        Ok(())
    }
}

/// A warning when a running etcd holds the newest WAL segment: the files may change while read.
pub fn running_etcd_warning(layout: &Layout) -> Option<String> {
    let segments = walfile::list_segments(&layout.wal_dir).ok()?;
    let newest = segments.last()?;
    walfile::is_locked(&newest.path).then(|| {
        format!(
            "{} is locked: etcd is running on this data dir, what is read may be incomplete",
            newest.path.display()
        )
    })
}

/// Where etcd would start: the newest `.snap` that a WAL snapshot record covered by the last
/// HardState names (etcd 3.4.8+), or (0, 0) without one. Also returns newer snap files that
/// were skipped because they are broken.
pub fn start_point(
    layout: &Layout,
) -> Result<(WalSnapshot, Option<LoadedSnapshot>, Vec<SnapError>), InspectError> {
    let point = member::start_point(&layout.wal_dir, &layout.snap_dir).map_err(|e| match e {
        StartError::Wal(e) => InspectError::Wal(e),
        StartError::Snap(e) => InspectError::Snap(e),
    })?;
    Ok((point.start(), point.snapshot, point.skipped))
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

/// Current time in unix nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
