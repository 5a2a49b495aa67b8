//! `etcd-inspect check`: integrity of a data dir: the WAL (framing, CRC chain, records), the
//! snap files (CRC, decoding, names), the v2 store in the snapshot etcd would use, the bbolt db
//! (meta checksums, full page walk), and whether etcd could start from what is there.

use std::io::Write;

use super::dbfacts::{check_db, db_facts};
use super::output::JsonLine;
use super::{start_point, InspectError, Layout};
use crate::storage::member::PathError;
use crate::storage::proto::{EntryPayload, EntryType};
use crate::storage::wal::read_all;
use crate::storage::{snap, wal, Finding};

/// Every problem found; empty when the data dir is sound.
pub fn check_data_dir(layout: &Layout) -> Result<Vec<Finding>, InspectError> {
    // A path of the wrong kind is the one finding: decoders must not open a FIFO or a device.
    match layout.require() {
        Err(InspectError::Path(PathError::Wrong(w))) => {
            return Ok(vec![Finding::in_file(w.path, w.what)])
        }
        other => other?,
    }
    let mut findings = Vec::new();
    if layout.wal_dir.is_dir() {
        findings.extend(wal::check(&layout.wal_dir)?);
    } else {
        findings.push(Finding::in_file(&layout.wal_dir, "missing WAL directory"));
    }
    if layout.snap_dir.is_dir() {
        findings.extend(snap::check(&layout.snap_dir)?);
    } else {
        findings.push(Finding::in_file(&layout.snap_dir, "missing snap directory"));
    }
    // What etcd would load on start, if the files above allow it.
    let mut snapshot_index = 0;
    if layout.wal_dir.is_dir() && layout.snap_dir.is_dir() {
        match start_point(layout) {
            Ok((start, loaded, _skipped)) => {
                snapshot_index = start.index;
                if let Some(l) = &loaded {
                    match l.store() {
                        Ok(store) => {
                            for p in store.problems() {
                                findings.push(Finding::in_file(&l.path, format!("v2 store: {p}")));
                            }
                        }
                        Err(f) => findings.push(f),
                    }
                } else if snap::load_newest(&layout.snap_dir).is_ok_and(|c| c.loaded.is_some()) {
                    // A readable .snap exists, but no WAL snapshot record covers it.
                    findings.push(Finding::in_file(
                        &layout.snap_dir,
                        "no .snap file matches a WAL snapshot record covered by the HardState: etcd ignores the snapshots",
                    ));
                }
                match read_all(&layout.wal_dir, &start) {
                    Ok(c) => {
                        for e in &c.entries {
                            if e.entry_type == EntryType::Normal {
                                if let Err(err) = EntryPayload::decode(&e.data) {
                                    findings.push(Finding::in_file(
                                        &layout.wal_dir,
                                        format!("entry {} has undecodable data: {err}", e.index),
                                    ));
                                }
                            }
                        }
                    }
                    // Corruption is already reported by wal::check; other problems are new.
                    Err(wal::WalError::Corrupt(_)) => {}
                    Err(e) => findings.push(e.finding().ok_or(e)?),
                }
            }
            Err(InspectError::Wal(wal::WalError::Corrupt(_))) => {}
            Err(InspectError::Wal(e)) => findings.push(e.finding().ok_or(e)?),
            Err(InspectError::Snap(e)) => findings.push(e.into_finding()?),
            Err(e) => return Err(e),
        }
    }
    if layout.db.is_file() {
        findings.extend(check_db(&layout.db)?);
        if let Ok(f) = db_facts(&layout.db) {
            if let Some(ci) = f.consistent_index {
                let snap_db = layout
                    .snap_dir
                    .join(format!("{snapshot_index:016x}.snap.db"));
                if ci < snapshot_index && !snap_db.is_file() {
                    findings.push(Finding::in_file(
                        &layout.db,
                        format!("consistent_index {ci} is below the snapshot index {snapshot_index} and there is no {}: etcd will not start", snap_db.display()),
                    ));
                }
            }
        }
    }
    Ok(findings)
}

/// Prints the findings; returns how many there were.
pub fn print_check(
    layout: &Layout,
    json: bool,
    out: &mut dyn Write,
) -> Result<usize, InspectError> {
    let findings = check_data_dir(layout)?;
    for f in &findings {
        if json {
            out.write_all(
                JsonLine::new()
                    .str("file", &f.file.display().to_string())
                    .opt_num("offset", f.offset)
                    .str("problem", &f.problem)
                    .finish()
                    .as_bytes(),
            )?;
        } else {
            writeln!(out, "{f}")?;
        }
    }
    if !json {
        if findings.is_empty() {
            writeln!(out, "{}: no problems found", layout.data_dir.display())?;
        } else {
            writeln!(out, "{} problem(s) found", findings.len())?;
        }
    }
    Ok(findings.len())
}
