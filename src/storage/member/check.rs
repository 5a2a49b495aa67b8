//! The member's integrity check (`etcd-inspect check`, and migrate before a destructive
//! step): each format's decoder run to the end (WAL, `.snap` files, bbolt + mvcc), the v2
//! store of the snapshot etcd would use, and whether etcd could start from what is there.

use super::{check_db_file, Member, MemberError, PathError, StartPoint};
use crate::storage::proto::{EntryPayload, EntryType};
use crate::storage::wal::{read_all, WalError};
use crate::storage::{snap, wal, Finding};

impl Member {
    /// Every problem found; empty when the data dir is sound. `Err` only for what is not
    /// the files' fault (I/O, a locked db, no member dir at all).
    pub fn check(&self) -> Result<Vec<Finding>, MemberError> {
        // A path of the wrong kind is the one finding: decoders must not open a FIFO or a device.
        match self.require() {
            Err(MemberError::Path(PathError::Wrong(w))) => {
                return Ok(vec![Finding::in_file(w.path, w.what)])
            }
            other => other?,
        }
        let p = &self.paths;
        let mut findings = Vec::new();
        let (wal_there, snap_there) = (p.wal_dir.is_dir(), p.snap_dir.is_dir());
        if wal_there {
            findings.extend(wal::check(&p.wal_dir)?);
        } else {
            findings.push(Finding::in_file(&p.wal_dir, "missing WAL directory"));
        }
        if snap_there {
            findings.extend(snap::check(&p.snap_dir)?);
        } else {
            findings.push(Finding::in_file(&p.snap_dir, "missing snap directory"));
        }
        // What etcd would load on start, if the files above allow it.
        let mut snapshot_index = 0;
        if wal_there && snap_there {
            snapshot_index = self.check_start(&mut findings)?;
        }
        if p.db.is_file() {
            findings.extend(check_db_file(&p.db)?);
            findings.extend(self.check_db_covers(snapshot_index));
        }
        Ok(findings)
    }

    /// The start point etcd would use: its v2 store, the entries after it; returns its index.
    /// Damage the WAL check reported already is not repeated.
    fn check_start(&self, findings: &mut Vec<Finding>) -> Result<u64, MemberError> {
        let point = match self.start_point() {
            Ok(p) => p,
            Err(MemberError::Wal(WalError::Corrupt(_))) => return Ok(0),
            Err(MemberError::Wal(e)) => {
                findings.push(e.finding().ok_or(e)?);
                return Ok(0);
            }
            Err(MemberError::Snap(e)) => {
                findings.push(e.into_finding()?);
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        self.check_snapshot(point, findings);
        let start = point.start();
        match read_all(&self.paths.wal_dir, &start) {
            Ok(c) => {
                for e in c
                    .entries
                    .iter()
                    .filter(|e| e.entry_type == EntryType::Normal)
                {
                    if let Err(err) = EntryPayload::decode(&e.data) {
                        findings.push(Finding::in_file(
                            &self.paths.wal_dir,
                            format!("entry {} has undecodable data: {err}", e.index),
                        ));
                    }
                }
            }
            Err(WalError::Corrupt(_)) => {}
            Err(e) => findings.push(e.finding().ok_or(e)?),
        }
        Ok(start.index)
    }

    /// The snapshot's v2 store, or why etcd would ignore the `.snap` files.
    fn check_snapshot(&self, point: &StartPoint, findings: &mut Vec<Finding>) {
        if let Some(l) = &point.snapshot {
            match l.store() {
                Ok(store) => findings.extend(
                    store
                        .problems()
                        .iter()
                        .map(|p| Finding::in_file(&l.path, format!("v2 store: {p}"))),
                ),
                Err(f) => findings.push(f),
            }
        } else if snap::load_newest(&self.paths.snap_dir).is_ok_and(|c| c.loaded.is_some()) {
            // A readable .snap exists, but no WAL snapshot record covers it.
            findings.push(Finding::in_file(
                &self.paths.snap_dir,
                "no .snap file matches a WAL snapshot record covered by the HardState: etcd ignores the snapshots",
            ));
        }
    }

    /// A db behind the snapshot without the `.snap.db` etcd would catch up from: etcd will
    /// not start.
    fn check_db_covers(&self, snapshot_index: u64) -> Option<Finding> {
        let ci = self.db_facts().ok()?.consistent_index?;
        let snap_db = self
            .paths
            .snap_dir
            .join(format!("{snapshot_index:016x}.snap.db"));
        (ci < snapshot_index && !snap_db.is_file()).then(|| {
            Finding::in_file(
                &self.paths.db,
                format!("consistent_index {ci} is below the snapshot index {snapshot_index} and there is no {}: etcd will not start", snap_db.display()),
            )
        })
    }
}
