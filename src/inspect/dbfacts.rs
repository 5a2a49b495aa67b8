//! The bbolt db as seen by `etcd-inspect version`, `check` and `db`, through the bolt and mvcc
//! readers. Kept in one place so the WAL/snap side does not depend on their internals.

use std::io::Write;
use std::path::Path;

use std::ops::ControlFlow;

use crate::inspect::db::{DbError, DbOptions};
use crate::storage::bolt::{BoltDb, BoltError, Direction};
use crate::storage::mvcc;
use crate::storage::Finding;

/// What `version` needs from the db.
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

/// Reads what `version` needs from the db.
pub fn db_facts(db: &Path) -> Result<DbFacts, BoltError> {
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

/// bbolt integrity (meta pages, full page-tree walk) and mvcc decoding of bucket `key`/`meta`
/// ([`crate::inspect::db::check_db`]). A db the OS will not read, or that etcd holds, is an
/// error, not a finding.
pub fn check_db(db: &Path) -> Result<Vec<Finding>, DbError> {
    crate::inspect::db::check_db(db)
}

/// `etcd-inspect db`.
pub fn print_db(
    path: &Path,
    bucket: Option<String>,
    revisions: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), DbError> {
    let opts = DbOptions {
        bucket,
        revisions,
        json,
    };
    crate::inspect::db::print_db(path, &opts, out)
}
