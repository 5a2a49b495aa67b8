//! What version the member's data is, from `version.txt` and, independently, from the files:
//! storage (etcd2 / etcd3), cluster version, storage version, last index/term, members.
//! Damage is a [`Note`] here (the answer is partial), only I/O ends it.

use super::{DbFacts, Member, MemberError};
use crate::error::IoError;
use crate::storage::bolt::BoltError;
use crate::storage::snap::SnapError;
use crate::storage::v2store::Store;
use crate::storage::wal::WalTail;
use crate::version::Storage;

/// Everything the files say about the version. `None` where the source is missing or
/// unreadable; the reasons are in `notes`.
#[derive(Debug, Default)]
pub struct DataVersion<'m> {
    /// `version.txt` content (trimmed), as the Kubernetes image writes it (`3.4.23/etcd3`).
    pub version_txt: Option<String>,
    /// etcd2 (v2 store only), etcd3 (a db with v3 data, or no v2 user keys).
    pub storage: Option<Storage>,
    /// From the v2 store (`/0/version`, snapshot + WAL replayed).
    pub cluster_version_v2: Option<String>,
    /// From the db (`cluster/clusterVersion`).
    pub cluster_version_db: Option<String>,
    /// From the db (`meta/storageVersion`, 3.6+).
    pub storage_version: Option<String>,
    pub last_index: Option<u64>,
    pub last_term: Option<u64>,
    pub commit: Option<u64>,
    pub consistent_index: Option<u64>,
    pub member_id: Option<u64>,
    pub cluster_id: Option<u64>,
    /// Member IDs from the v2 store, the db and the snapshot ConfState, merged.
    pub members: Vec<u64>,
    /// User keys under `/1` in the v2 store.
    pub v2_keys: usize,
    pub notes: Vec<Note<'m>>,
}

/// Why part of the answer is missing or uncertain.
#[derive(Debug, thiserror::Error)]
pub enum Note<'m> {
    #[error("skipped snapshot: {0}")]
    SkippedSnapshot(&'m SnapError),
    /// The WAL ends in a torn record (etcd truncates it on start).
    #[error("WAL: {0:?}")]
    TornWal(WalTail),
    /// Snapshot and WAL could not be recovered: no v2 side.
    #[error("{0}")]
    Unrecovered(MemberError),
    #[error("{0}")]
    DbUnreadable(BoltError),
    #[error(
        "storage unknown: v2 keys alone do not tell etcd2 data from etcd3 data converted \
         from it (the v2 store keeps its keys), and the db cannot be read"
    )]
    StorageUnknown,
    #[error("the db is missing ({}), but the v2 store says cluster version {cluster_version}", db.display())]
    DbMissing {
        db: std::path::PathBuf,
        cluster_version: String,
    },
}

impl Member {
    /// What version the data is (see [`DataVersion`]). Only I/O errors end it; damage
    /// becomes a note.
    pub fn version(&self) -> Result<DataVersion<'_>, MemberError> {
        self.require()?;
        let mut v = DataVersion {
            version_txt: self.version_txt()?,
            ..DataVersion::default()
        };
        let mut members = Vec::new();
        let store = self.recovered(&mut v, &mut members)?;
        if let Some(st) = &store {
            v.cluster_version_v2 = st.cluster_version().map(str::to_string);
            members.extend(st.member_ids());
            v.v2_keys = count_keys(st);
        }
        let db = self.db_facts_or_note(&mut v)?;
        if let Some(f) = db {
            v.consistent_index = f.consistent_index;
            v.cluster_version_db.clone_from(&f.cluster_version);
            v.storage_version.clone_from(&f.storage_version);
            members.extend(&f.member_ids);
        }
        v.storage = self.storage(&mut v, db, store.is_some());
        members.sort_unstable();
        members.dedup();
        v.members = members;
        Ok(v)
    }

    fn version_txt(&self) -> Result<Option<String>, MemberError> {
        let path = self.paths.data_dir.join("version.txt");
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IoError::new("cannot read", path, e).into()),
        }
    }

    /// The db's facts, `None` without a db; an unreadable db is a note, I/O an error.
    fn db_facts_or_note<'m>(
        &'m self,
        v: &mut DataVersion<'m>,
    ) -> Result<Option<&'m DbFacts>, MemberError> {
        if !self.paths.db.is_file() {
            return Ok(None);
        }
        match self.db_facts() {
            Ok(f) => Ok(Some(f)),
            Err(BoltError::Io(e)) => Err(e.into()),
            Err(e) => {
                v.notes.push(Note::DbUnreadable(e));
                Ok(None)
            }
        }
    }

    /// etcd2 or etcd3 from the v2 keys and the db, `None` when the files cannot tell.
    fn storage(&self, v: &mut DataVersion<'_>, db: Option<&DbFacts>, v2: bool) -> Option<Storage> {
        let db_unreadable = db.is_none() && self.paths.db.is_file();
        if db_unreadable && v.v2_keys > 0 {
            v.notes.push(Note::StorageUnknown);
        }
        // etcd 3.x always has a db: a 3.x cluster without v2 keys and without a db is v3 data
        // that lost its db, not etcd2 data (etcd2-storage data run by 3.x keeps its v2 keys).
        let v3_cluster = v.v2_keys == 0
            && v.cluster_version_v2
                .as_deref()
                .is_some_and(|c| !c.starts_with("2."));
        let db_missing = db.is_none() && !self.paths.db.exists();
        if db_missing && v3_cluster {
            v.notes.push(Note::DbMissing {
                db: self.paths.db.clone(),
                cluster_version: v.cluster_version_v2.clone().unwrap_or_default(),
            });
        }
        match (db, v.v2_keys) {
            _ if db_missing && v3_cluster => None,
            (Some(f), _) if f.has_v3_keys => Some(Storage::Etcd3),
            _ if db_unreadable => None,
            (_, n) if n > 0 => Some(Storage::Etcd2),
            (Some(_), _) => Some(Storage::Etcd3),
            (None, _) if v2 => Some(Storage::Etcd2),
            _ => None,
        }
    }

    /// What recovery (snapshot + WAL, as etcd starts) says: last index/term, commit, member
    /// and cluster IDs, the v2 store. Only I/O errors end `version`; damage becomes a note.
    fn recovered<'m>(
        &'m self,
        v: &mut DataVersion<'m>,
        members: &mut Vec<u64>,
    ) -> Result<Option<Store>, MemberError> {
        let r = match self.recover(now_nanos()) {
            Ok(r) => r,
            Err(e) if e.io().is_some() => return Err(e),
            Err(e) => {
                v.notes.push(Note::Unrecovered(e));
                return Ok(None);
            }
        };
        let point = self.start_point()?;
        v.notes
            .extend(point.skipped.iter().map(Note::SkippedSnapshot));
        if let Some(l) = &point.snapshot {
            members.extend(&l.snapshot.metadata.conf_state.voters);
            members.extend(&l.snapshot.metadata.conf_state.learners);
        }
        v.last_index = Some(r.wal.last_index);
        v.last_term = r.wal.last_term().or(Some(r.start.term));
        v.commit = r.wal.hard_state.map(|h| h.commit);
        if let Some(m) = r.wal.metadata {
            v.member_id = Some(m.node_id);
            v.cluster_id = Some(m.cluster_id);
        }
        if r.wal.tail.is_torn() {
            v.notes.push(Note::TornWal(r.wal.tail.clone()));
        }
        Ok(Some(r.store))
    }
}

fn count_keys(store: &Store) -> usize {
    let mut n = 0;
    if let Some(user) = store.get("/1") {
        user.walk(&mut |node| {
            if !node.is_dir() {
                n += 1;
            }
        });
    }
    n
}

/// Current time in unix nanoseconds.
fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
