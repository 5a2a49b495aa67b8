//! The live keyspace of a stopped member's db, read offline (`member/snap/db`, our own bbolt
//! and mvcc readers), as the same [`Fingerprint`] the JSON gateway gives: the key count and
//! the FNV-1a hash over every key, value (both as the gateway's base64 text), create/mod
//! revision, version and lease, in key order. So a member of several, whose etcd cannot be
//! started once more, proves a step from its files, and the figures can be checked against
//! what etcd serves (tests/versions.rs `the_offline_fingerprint_is_what_etcd_serves_*`).
//!
//! `at`: the keyspace at an earlier revision, folded from the history mvcc keeps (the newest
//! entry of each key at or below `at`). The db after a step may hold later revisions (WAL
//! entries the db had not applied yet, replayed on start; writes of the other members), but
//! the keyspace at the revision the step started from must still be there, untouched.

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;

use super::{Fingerprint, Fnv};
use crate::storage::bolt::{BoltDb, BoltError, Direction};
use crate::storage::mvcc::{self, Revision};
use crate::storage::Finding;

/// Why no fingerprint at the revision asked for.
#[derive(Debug)]
pub enum OfflineError {
    /// The db cannot be read (I/O, damage, locked by a running etcd): its kind is the read's.
    Read(BoltError),
    /// Compacted past `at`: the keyspace at `at` is gone from the history.
    Compacted { at: i64, compacted: i64 },
    /// The db's newest revision is below `at`: revisions were lost.
    Behind { at: i64, current: i64 },
}

impl fmt::Display for OfflineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfflineError::Read(e) => write!(f, "{e}"),
            OfflineError::Compacted { at, compacted } => write!(
                f,
                "the db is compacted at revision {compacted}, past revision {at} the step \
                 started from, so the keyspace of then cannot be read back (a compaction while \
                 the step's etcd ran: --auto-compaction-* in the extra args, or a client)"
            ),
            OfflineError::Behind { at, current } => write!(
                f,
                "the db is at revision {current} after the step, {at} before: revisions were lost"
            ),
        }
    }
}

/// The fingerprint of the db at `path` at revision `at` (its current revision for `None`).
pub fn db_fingerprint(path: &Path, at: Option<i64>) -> Result<Fingerprint, OfflineError> {
    db_fingerprint_losing(path, at, false)
}

/// [`db_fingerprint`]; `lose_first`: the first key in key order is left out, as if the db had
/// lost it (test hook of a failing proof).
pub(super) fn db_fingerprint_losing(
    path: &Path,
    at: Option<i64>,
    lose_first: bool,
) -> Result<Fingerprint, OfflineError> {
    let read = OfflineError::Read;
    let db = BoltDb::open(path).map_err(read)?;
    let current = mvcc::current_revision(&db).map_err(read)?;
    let meta = mvcc::read_meta(&db).map_err(read)?;
    // An interrupted compaction (scheduled, not finished) is redone by etcd on start.
    let compacted = meta
        .finished_compact_rev
        .unwrap_or(0)
        .max(meta.scheduled_compact_rev.unwrap_or(0));
    let revision = at.unwrap_or(current);
    if revision < compacted {
        return Err(OfflineError::Compacted {
            at: revision,
            compacted,
        });
    }
    if revision > current {
        return Err(OfflineError::Behind {
            at: revision,
            current,
        });
    }
    let mut live = live_at(&db, revision).map_err(read)?;
    live.sort_unstable();
    if lose_first && !live.is_empty() {
        live.remove(0);
    }
    let bucket = db.require_bucket(mvcc::KEY_BUCKET).map_err(read)?;
    let mut fnv = Fnv::new();
    for (key, rev) in &live {
        let corrupt = |problem: String| {
            let at = format!("bucket key, revision {}_{}", rev.main, rev.sub);
            OfflineError::Read(BoltError::Corrupt(Finding::in_file(
                path,
                format!("{at}: {problem}"),
            )))
        };
        let bytes = db
            .get(&bucket, &rev.to_key())
            .map_err(read)?
            .ok_or_else(|| corrupt(format!("key {:?} vanished", String::from_utf8_lossy(key))))?;
        let kv = mvcc::decode_key_value(&bytes).map_err(corrupt)?;
        // As the gateway shows them: key and value in base64.
        fnv.field(crate::base64::encode(kv.key).as_bytes());
        fnv.field(crate::base64::encode(kv.value).as_bytes());
        for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
            fnv.field(&n.to_le_bytes());
        }
    }
    Ok(Fingerprint {
        revision,
        keys: live.len() as u64,
        hash: fnv.0,
        hash_kv: None,
    })
}

/// Every key live at `revision` with the revision of its put: one backward scan, the first
/// entry of a key at or below `revision` is its newest then (a tombstone: deleted then).
/// Holds each key once (with its revision), never a value.
fn live_at(db: &BoltDb, revision: i64) -> Result<Vec<(Vec<u8>, Revision)>, BoltError> {
    let mut newest: HashMap<Vec<u8>, Option<Revision>> = HashMap::new();
    mvcc::for_each_revision(db, Direction::Backward, &mut |e| {
        if e.revision.main <= revision && !newest.contains_key(e.kv.key) {
            newest.insert(e.kv.key.to_vec(), (!e.tombstone).then_some(e.revision));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(newest
        .into_iter()
        .filter_map(|(k, r)| r.map(|r| (k, r)))
        .collect())
}

/// What the member's files say about its raft log: the index the db has applied (bucket
/// `meta`'s `consistent_index`) and the commit index of the WAL's last HardState (read from
/// the last segment only: etcd writes a HardState at the start of every segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub db_index: Option<u64>,
    pub wal_commit: Option<u64>,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        write!(
            f,
            "the db has applied the raft log up to index {}, the WAL has committed up to {}",
            show(self.db_index),
            show(self.wal_commit)
        )
    }
}

/// [`Applied`] of the member dir `member` (`member/snap/db`, `member/wal`).
pub fn applied(member: &Path) -> Result<Applied, String> {
    use crate::storage::proto::{HardState, STATE_TYPE};
    use crate::storage::wal::{list_segments, WalReader};
    let db_path = member.join("snap/db");
    let db = BoltDb::open(&db_path).map_err(|e| format!("reading {}: {e}", db_path.display()))?;
    let db_index = mvcc::read_meta(&db)
        .map_err(|e| format!("reading {}: {e}", db_path.display()))?
        .consistent_index;
    let wal = member.join("wal");
    let wal_err = |e: crate::storage::wal::WalError| format!("reading {}: {e}", wal.display());
    let mut segments = list_segments(&wal).map_err(wal_err)?;
    let mut reader = WalReader::over(segments.split_off(segments.len().saturating_sub(1)));
    let mut wal_commit = None;
    while let Some(rec) = reader.next_record().map_err(wal_err)? {
        if rec.rec_type == STATE_TYPE {
            let h = HardState::decode(rec.data.as_deref().unwrap_or_default())
                .map_err(|e| format!("reading {}: a HardState: {e}", wal.display()))?;
            wal_commit = Some(h.commit);
        }
    }
    Ok(Applied {
        db_index,
        wal_commit,
    })
}
