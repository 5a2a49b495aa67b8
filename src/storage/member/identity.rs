//! Who this member is, as its files store it: the member and cluster IDs of the WAL's
//! metadata record, and the name and peer URLs of its entry in the db's `members` bucket
//! (what a downgrade must keep).

use super::{Member, MemberError};
use crate::storage::bolt::{BoltDb, BoltError};
use crate::storage::proto::{WalMetadata, METADATA_TYPE};
use crate::storage::wal::{WalError, WalReader};
use crate::storage::{mvcc, Finding};

/// This member as the data dir stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// Who the files say this member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The db's `members` bucket lists the WAL's member.
    Listed(StoredMember),
    /// The WAL's member (`id`, `cluster_id`) is not among the db's members (`listed`): the db
    /// and the WAL come from different members, or the member was removed (`removed`: the
    /// db's `members_removed` bucket names it).
    NotListed {
        id: u64,
        cluster_id: u64,
        listed: Vec<u64>,
        removed: bool,
    },
}

impl Member {
    /// The stored identity; `None` when the WAL has no metadata record near its start or
    /// there is no db.
    pub fn identity(&self) -> Result<Option<Identity>, MemberError> {
        let Some(meta) = self.wal_metadata()? else {
            return Ok(None);
        };
        let db_path = &self.paths.db;
        if !db_path.is_file() {
            return Ok(None);
        }
        let db = BoltDb::open(db_path)?;
        let members = mvcc::members(&db)?;
        let Some(m) = members.iter().find(|m| m.id == meta.node_id) else {
            let removed = mvcc::removed_members(&db)?.contains(&meta.node_id);
            return Ok(Some(Identity::NotListed {
                id: meta.node_id,
                cluster_id: meta.cluster_id,
                listed: members.iter().map(|m| m.id).collect(),
                removed,
            }));
        };
        let json: serde_json::Value = serde_json::from_str(&m.json).map_err(|e| {
            let problem = format!("member {:x}: {e}", m.id);
            BoltError::Corrupt(Finding::in_file(db_path, problem))
        })?;
        let peer_urls = json["peerURLs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str())
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Identity::Listed(StoredMember {
            id: meta.node_id,
            cluster_id: meta.cluster_id,
            name: json["name"].as_str().unwrap_or_default().to_string(),
            peer_urls,
        })))
    }

    /// The WAL's metadata record: among the first records of the first segment.
    fn wal_metadata(&self) -> Result<Option<WalMetadata>, MemberError> {
        let mut reader = WalReader::open(&self.paths.wal_dir, 0)?;
        for _ in 0..4 {
            match reader.next_record()? {
                Some(r) if r.rec_type == METADATA_TYPE => {
                    let data = r.data.as_deref().unwrap_or_default();
                    let meta = WalMetadata::decode(data).map_err(|e| {
                        let path = &reader.segments()[r.segment].path;
                        let problem = format!("bad metadata record data: {e}");
                        WalError::Corrupt(Finding::at(path, r.offset, problem))
                    })?;
                    return Ok(Some(meta));
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(None)
    }
}
