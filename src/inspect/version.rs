//! `etcd-inspect version`: what the data is, from `version.txt` and, independently, from the
//! files: storage (etcd2 / etcd3), cluster version, storage version, last index/term, members.

use std::io::Write;

use super::dbfacts::{db_facts, DbFacts};
use super::output::JsonLine;
use super::{now_nanos, InspectError, Layout};
use crate::error::IoError;
use crate::storage::bolt::BoltError;
use crate::storage::recover::{recover, RecoverError};
use crate::storage::snap::SnapError;
use crate::storage::v2store::Store;
use crate::storage::wal::WalError;

/// Everything `version` finds. `None` where the source is missing or unreadable; the reasons
/// are in `notes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataVersion {
    /// `version.txt` content (trimmed), as the Kubernetes image writes it (`3.4.23/etcd3`).
    pub version_txt: Option<String>,
    /// `etcd2` (v2 store only), `etcd3` (a db with v3 data, or no v2 user keys).
    pub storage: Option<&'static str>,
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
    pub notes: Vec<String>,
}

pub fn detect(layout: &Layout) -> Result<DataVersion, InspectError> {
    layout.require()?;
    let mut v = DataVersion::default();
    match std::fs::read_to_string(layout.data_dir.join("version.txt")) {
        Ok(s) => v.version_txt = Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            let path = layout.data_dir.join("version.txt");
            return Err(IoError::new("cannot read", path, e).into());
        }
    }
    let mut members = Vec::new();
    let store = recovered(layout, &mut v, &mut members)?;
    if let Some(st) = &store {
        v.cluster_version_v2 = st.cluster_version().map(str::to_string);
        members.extend(st.member_ids());
        v.v2_keys = count_keys(st);
    }
    let db = if layout.db.is_file() {
        match db_facts(&layout.db) {
            Ok(f) => Some(f),
            Err(BoltError::Io(e)) => return Err(e.into()),
            Err(e) => {
                v.notes.push(e.to_string());
                None
            }
        }
    } else {
        None
    };
    if let Some(DbFacts {
        consistent_index,
        cluster_version,
        storage_version,
        member_ids,
        ..
    }) = &db
    {
        v.consistent_index = *consistent_index;
        v.cluster_version_db = cluster_version.clone();
        v.storage_version = storage_version.clone();
        members.extend(member_ids);
    }
    let db_unreadable = db.is_none() && layout.db.is_file();
    if db_unreadable && v.v2_keys > 0 {
        v.notes.push(
            "storage unknown: v2 keys alone do not tell etcd2 data from etcd3 data converted \
             from it (the v2 store keeps its keys), and the db cannot be read"
                .into(),
        );
    }
    // etcd 3.x always has a db: a 3.x cluster without v2 keys and without a db is v3 data
    // that lost its db, not etcd2 data (etcd2-storage data run by 3.x keeps its v2 keys).
    let v3_cluster = v.v2_keys == 0
        && v.cluster_version_v2
            .as_deref()
            .is_some_and(|c| !c.starts_with("2."));
    let db_missing = db.is_none() && !layout.db.exists();
    if db_missing && v3_cluster {
        v.notes.push(format!(
            "the db is missing ({}), but the v2 store says cluster version {}",
            layout.db.display(),
            v.cluster_version_v2.as_deref().unwrap_or_default()
        ));
    }
    v.storage = match (&db, v.v2_keys) {
        _ if db_missing && v3_cluster => None,
        (Some(f), _) if f.has_v3_keys => Some("etcd3"),
        _ if db_unreadable => None,
        (_, n) if n > 0 => Some("etcd2"),
        (Some(_), _) => Some("etcd3"),
        (None, _) if store.is_some() => Some("etcd2"),
        _ => None,
    };
    members.sort_unstable();
    members.dedup();
    v.members = members;
    Ok(v)
}

/// What recovery (snapshot + WAL, as etcd starts) says: last index/term, commit, member and
/// cluster IDs, the v2 store. Only I/O errors end `version`; damage becomes a note.
fn recovered(
    layout: &Layout,
    v: &mut DataVersion,
    members: &mut Vec<u64>,
) -> Result<Option<Store>, InspectError> {
    let mut store: Option<Store> = None;
    match recover(&layout.wal_dir, &layout.snap_dir, now_nanos()) {
        Ok(r) => {
            for s in &r.skipped_snaps {
                v.notes.push(format!("skipped snapshot: {s}"));
            }
            if let Some(l) = &r.snapshot {
                members.extend(&l.snapshot.metadata.conf_state.voters);
                members.extend(&l.snapshot.metadata.conf_state.learners);
            }
            v.last_index = Some(r.wal.last_index);
            v.last_term = r.wal.last_term().or(Some(r.start().term));
            v.commit = r.wal.hard_state.map(|h| h.commit);
            if let Some(m) = r.wal.metadata {
                v.member_id = Some(m.node_id);
                v.cluster_id = Some(m.cluster_id);
            }
            if r.wal.tail.is_torn() {
                v.notes.push(format!("WAL: {:?}", r.wal.tail));
            }
            store = Some(r.store);
        }
        Err(RecoverError::Wal(WalError::Io(e)) | RecoverError::Snap(SnapError::Io(e))) => {
            return Err(e.into())
        }
        Err(e) => v.notes.push(e.to_string()),
    }
    Ok(store)
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

pub fn print_version(layout: &Layout, json: bool, out: &mut dyn Write) -> Result<(), InspectError> {
    let v = detect(layout)?;
    let hex = |o: Option<u64>| o.map(|x| format!("{x:x}"));
    let members: Vec<String> = v.members.iter().map(|m| format!("{m:x}")).collect();
    if json {
        let line = JsonLine::new()
            .opt_str("version_txt", v.version_txt.as_deref())
            .opt_str("storage", v.storage)
            .opt_str("cluster_version_v2", v.cluster_version_v2.as_deref())
            .opt_str("cluster_version_db", v.cluster_version_db.as_deref())
            .opt_str("storage_version", v.storage_version.as_deref())
            .opt_num("last_index", v.last_index)
            .opt_num("last_term", v.last_term)
            .opt_num("commit", v.commit)
            .opt_num("consistent_index", v.consistent_index)
            .opt_str("member_id", hex(v.member_id).as_deref())
            .opt_str("cluster_id", hex(v.cluster_id).as_deref())
            .strs("members", &members)
            .num("v2_keys", v.v2_keys as u64)
            .strs("notes", &v.notes)
            .finish();
        out.write_all(line.as_bytes())?;
        return Ok(());
    }
    let o = |s: Option<String>| s.unwrap_or_else(|| "(unknown)".into());
    writeln!(out, "version.txt:        {}", o(v.version_txt.clone()))?;
    writeln!(
        out,
        "storage:            {}",
        o(v.storage.map(str::to_string))
    )?;
    writeln!(
        out,
        "cluster version:    {} (v2 store), {} (db)",
        o(v.cluster_version_v2.clone()),
        o(v.cluster_version_db.clone())
    )?;
    writeln!(out, "storage version:    {}", o(v.storage_version.clone()))?;
    writeln!(
        out,
        "last index/term:    {} / {} (commit {})",
        o(v.last_index.map(|x| x.to_string())),
        o(v.last_term.map(|x| x.to_string())),
        o(v.commit.map(|x| x.to_string()))
    )?;
    writeln!(
        out,
        "consistent index:   {}",
        o(v.consistent_index.map(|x| x.to_string()))
    )?;
    writeln!(
        out,
        "member / cluster:   {} / {}",
        o(hex(v.member_id)),
        o(hex(v.cluster_id))
    )?;
    writeln!(out, "members:            {}", members.join(" "))?;
    writeln!(out, "v2 user keys:       {}", v.v2_keys)?;
    for n in &v.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
