//! What an etcd member recovers on start from its WAL and snap files, without the db
//! ([`Member::recover`]): the log after the snapshot etcd uses, and the v2 store (snapshot +
//! committed entries replayed). This is the membership and v2 state a rollback carries over,
//! and what version detection reads the v2 side from.

use super::member::{Member, MemberError};
use super::proto::WalSnapshot;
use super::v2store::{ReplayStats, Store};
use super::wal::{read_all, WalContents};

/// The recovered state. The snapshot it started from is [`Member::start_point`].
#[derive(Debug)]
pub struct Recovered {
    /// The (index, term) recovery started from ((0, 0) without a usable snapshot).
    pub start: WalSnapshot,
    /// The WAL from that snapshot on (entries, last HardState, metadata, tail).
    pub wal: WalContents,
    /// The v2 store: the snapshot's, with the committed entries after it replayed.
    pub store: Store,
    pub replay: ReplayStats,
}

impl Recovered {
    /// The (index, term) recovery started from.
    pub fn start(&self) -> WalSnapshot {
        self.start.clone()
    }
}

impl Member {
    /// Recovers like etcd 3.4.8+ on start: the WAL's valid snapshot records pick the `.snap`
    /// (newest readable one among them), the WAL is read from it, and entries up to the last
    /// HardState's commit are replayed into its v2 store. The snap dir may be missing.
    pub fn recover(&self, now_nanos: i64) -> Result<Recovered, MemberError> {
        let point = self.start_point()?;
        let start = point.start();
        let mut store = match &point.snapshot {
            Some(s) => s.store().map_err(MemberError::Store)?,
            None => Store::new(),
        };
        let wal = read_all(&self.paths().wal_dir, &start)?;
        let commit = wal.hard_state.map_or(start.index, |h| h.commit);
        // The entries run in index order from start + 1: the committed ones are a prefix.
        let committed = wal.entries.partition_point(|e| e.index <= commit);
        let replay = store.replay_entries(&wal.entries[..committed], now_nanos);
        Ok(Recovered {
            start,
            wal,
            store,
            replay,
        })
    }
}
