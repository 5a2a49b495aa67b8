//! The member's bbolt db as the member's facts need it: the few facts version detection and
//! the check use (read once, on first ask), and the db part of the check. Through the bolt and
//! mvcc readers only: the WAL/snap side does not depend on their internals.

use std::ops::ControlFlow;
use std::path::Path;

use super::Member;
use crate::storage::bolt::{BoltDb, BoltError, Direction};
use crate::storage::mvcc;
use crate::storage::Finding;

/// What version detection and the check need from the db.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbFacts {
    pub consistent_index: Option<u64>,
    pub term: Option<u64>,
    pub cluster_version: Option<String>,
    pub storage_version: Option<String>,
    pub member_ids: Vec<u64>,
    /// Bucket `key` holds at least one revision (etcd3 data).
    pub has_v3_keys: bool,
}

impl Member {
    /// The db's facts: opened and read on the first ask, kept after a success.
    pub fn db_facts(&self) -> Result<&DbFacts, BoltError> {
        if let Some(f) = self.db.get() {
            return Ok(f);
        }
        let facts = read_facts(&self.paths.db)?;
        Ok(self.db.get_or_init(|| facts))
    }
}

fn read_facts(db: &Path) -> Result<DbFacts, BoltError> {
    let bolt = BoltDb::open(db)?;
    let meta = mvcc::read_meta(&bolt)?;
    let cluster_version = mvcc::cluster_version(&bolt)?;
    let member_ids = mvcc::members(&bolt)?.into_iter().map(|m| m.id).collect();
    let mut has_v3_keys = false;
    if let Some(bucket) = bolt.bucket(b"key")? {
        bolt.for_each(&bucket, Direction::Forward, &mut |_| {
            has_v3_keys = true;
            Ok(ControlFlow::Break(()))
        })?;
    }
    Ok(DbFacts {
        consistent_index: meta.consistent_index,
        term: meta.term,
        cluster_version,
        storage_version: meta.storage_version,
        member_ids,
        has_v3_keys,
    })
}

/// The db part of the check: bbolt structure (metas, file size, every page of every bucket's
/// tree) and mvcc content (revision keys, KeyValues, bucket `meta`). A db too damaged to open
/// is one finding; `Err` only for what is not the file's fault (locked, unreadable).
pub fn check_db_file(db: &Path) -> Result<Vec<Finding>, BoltError> {
    let db = match BoltDb::open(db) {
        Ok(db) => db,
        Err(BoltError::Corrupt(f)) => return Ok(vec![f]),
        Err(e) => return Err(e),
    };
    let mut findings = db.check();
    // The mvcc walk would only repeat structural errors on a broken tree.
    if findings.iter().all(|f| is_meta_only(&db, f)) {
        findings.extend(mvcc::check(&db));
    }
    Ok(findings)
}

/// A finding about a meta page we did not use (the db is still readable).
fn is_meta_only(db: &BoltDb, f: &Finding) -> bool {
    let ps = db.page_size() as u64;
    f.offset.is_some_and(|o| o < 2 * ps) && f.problem.contains("(ignored:")
}
