//! What an etcd member recovers on start from its WAL and snap files, without the db: the
//! snapshot it uses, the log after it, and the v2 store (snapshot + committed entries replayed).
//! This is the membership and v2 state a rollback carries over.

use std::path::Path;

use super::member::{start_point, StartError};
use super::proto::WalSnapshot;
use super::snap::{LoadedSnapshot, SnapError};
use super::v2store::{ReplayStats, Store};
use super::wal::{read_all, WalContents, WalError};
use super::Finding;
use crate::error::{HasKind, Kind};

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snap(#[from] SnapError),
    /// The snapshot's v2 store JSON cannot be loaded.
    #[error("{0}")]
    Store(Finding),
}

impl HasKind for RecoverError {
    fn kind(&self) -> Kind {
        match self {
            RecoverError::Wal(e) => e.kind(),
            RecoverError::Snap(e) => e.kind(),
            RecoverError::Store(e) => e.kind(),
        }
    }
}

/// The recovered state.
#[derive(Debug)]
pub struct Recovered {
    /// The `.snap` etcd would use (`None`: start from index 0 with an empty store).
    pub snapshot: Option<LoadedSnapshot>,
    /// Newer `.snap` files skipped because they are broken.
    pub skipped_snaps: Vec<SnapError>,
    /// The WAL from that snapshot on (entries, last HardState, metadata, tail).
    pub wal: WalContents,
    /// The v2 store: the snapshot's, with the committed entries after it replayed.
    pub store: Store,
    pub replay: ReplayStats,
}

impl Recovered {
    /// The (index, term) recovery started from.
    pub fn start(&self) -> WalSnapshot {
        self.snapshot.as_ref().map_or(WalSnapshot::new(0, 0), |s| {
            WalSnapshot::new(s.snapshot.metadata.index, s.snapshot.metadata.term)
        })
    }
}

/// Recovers like etcd 3.4.8+ on start: the WAL's valid snapshot records pick the `.snap`
/// (newest readable one among them), the WAL is read from it, and entries up to the last
/// HardState's commit are replayed into its v2 store. `snap_dir` may be missing.
pub fn recover(wal_dir: &Path, snap_dir: &Path, now_nanos: i64) -> Result<Recovered, RecoverError> {
    let point = start_point(wal_dir, snap_dir).map_err(|e| match e {
        StartError::Wal(e) => RecoverError::Wal(e),
        StartError::Snap(e) => RecoverError::Snap(e),
    })?;
    let start = point.start();
    let (snapshot, skipped_snaps) = (point.snapshot, point.skipped);
    let mut store = match &snapshot {
        Some(s) => s.store().map_err(RecoverError::Store)?,
        None => Store::new(),
    };
    let wal = read_all(wal_dir, &start).map_err(RecoverError::Wal)?;
    let commit = wal.hard_state.map_or(start.index, |h| h.commit);
    // The entries run in index order from start + 1: the committed ones are a prefix.
    let committed = wal.entries.partition_point(|e| e.index <= commit);
    let replay = store.replay_entries(&wal.entries[..committed], now_nanos);
    Ok(Recovered {
        snapshot,
        skipped_snaps,
        wal,
        store,
        replay,
    })
}
