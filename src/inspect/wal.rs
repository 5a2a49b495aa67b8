//! `etcd-inspect wal`: metadata, HardState and each entry after the snapshot etcd would start
//! from, with what the entry is (v2 method + path, v3 kind + key, conf change, no-op).

use std::io::Write;

use super::output::{preview, show_bytes, JsonLine};
use super::{start_point, InspectError, Layout};
use crate::storage::proto::{ConfChange, Entry, EntryPayload, EntryType, V3Request, WalSnapshot};
use crate::storage::wal::{read_all_with, WalContents, WalTail};

/// One entry in words, for text output.
pub fn describe_entry(e: &Entry) -> String {
    match e.entry_type {
        EntryType::ConfChange => match ConfChange::decode(&e.data) {
            Ok(cc) => format!(
                "conf change {} node {:x} {}",
                cc.change_type.name(),
                cc.node_id,
                String::from_utf8_lossy(&cc.context)
            ),
            Err(err) => format!("undecodable conf change: {err}"),
        },
        EntryType::Normal => match EntryPayload::decode(&e.data) {
            Ok(EntryPayload::Noop) => "no-op".into(),
            Ok(EntryPayload::V2(r)) => {
                let mut s = format!("v2 {} {}", r.method, r.path);
                if r.method == "PUT" || r.method == "POST" {
                    s.push_str(&format!(" = {}", preview(&r.val, 80)));
                }
                if r.dir {
                    s.push_str(" dir");
                }
                if r.recursive {
                    s.push_str(" recursive");
                }
                s
            }
            Ok(EntryPayload::V3(irr)) => {
                let r = &irr.request;
                match r {
                    V3Request::Put {
                        key,
                        value_len,
                        lease,
                    } => {
                        let mut s = format!("v3 put {} ({value_len} value bytes)", show_bytes(key));
                        if *lease != 0 {
                            s.push_str(&format!(" lease {lease:x}"));
                        }
                        s
                    }
                    V3Request::Range { key, range_end }
                    | V3Request::DeleteRange { key, range_end } => {
                        let mut s = format!("v3 {} {}", r.kind(), show_bytes(key));
                        if !range_end.is_empty() {
                            s.push_str(&format!(" to {}", show_bytes(range_end)));
                        }
                        s
                    }
                    V3Request::Txn {
                        compares,
                        success,
                        failure,
                        keys,
                    } => {
                        let keys: Vec<String> = keys.iter().map(|k| show_bytes(k)).collect();
                        format!(
                            "v3 txn {compares} compares, {success} success ops, {failure} failure ops, keys [{}]",
                            keys.join(" ")
                        )
                    }
                    V3Request::Compaction { revision, physical } => {
                        format!("v3 compaction revision {revision} physical {physical}")
                    }
                    V3Request::LeaseGrant { ttl, id } => {
                        format!("v3 lease_grant id {id:x} ttl {ttl}s")
                    }
                    V3Request::LeaseRevoke { id } => format!("v3 lease_revoke id {id:x}"),
                    V3Request::ClusterVersionSet { version } => {
                        format!("v3 cluster_version_set {version}")
                    }
                    V3Request::ClusterMemberAttrSet {
                        member_id, name, ..
                    } => format!("v3 cluster_member_attr_set {member_id:x} name {name:?}"),
                    V3Request::Unknown(n) => format!("v3 unknown request field {n}"),
                    other => format!("v3 {}", other.kind()),
                }
            }
            Err(err) => format!("undecodable request: {err}"),
        },
        EntryType::ConfChangeV2 => format!("conf change v2 ({} bytes)", e.data.len()),
        EntryType::Other(t) => format!("entry type {t} ({} bytes)", e.data.len()),
    }
}

/// One entry as a JSON line: `index`, `term`, `type`, then what it is.
pub fn entry_json(e: &Entry) -> String {
    let mut l = JsonLine::new()
        .str("record", "entry")
        .num("index", e.index)
        .num("term", e.term)
        .str("type", &e.entry_type.name());
    match e.entry_type {
        EntryType::ConfChange => match ConfChange::decode(&e.data) {
            Ok(cc) => {
                l = l
                    .str("request", "conf_change")
                    .str("change", &cc.change_type.name())
                    .str("node_id", &format!("{:x}", cc.node_id))
                    .str("context", &String::from_utf8_lossy(&cc.context));
            }
            Err(err) => l = l.str("error", &err.to_string()),
        },
        EntryType::Normal => match EntryPayload::decode(&e.data) {
            Ok(EntryPayload::Noop) => l = l.str("request", "noop"),
            Ok(EntryPayload::V2(r)) => {
                l = l
                    .str("request", "v2")
                    .str("method", &r.method)
                    .str("path", &r.path)
                    .str("value", &r.val)
                    .bool("dir", r.dir)
                    .num("expiration", r.expiration);
            }
            Ok(EntryPayload::V3(irr)) => {
                l = l.str("request", "v3").str("kind", irr.request.kind());
                if let Some(k) = irr.request.key() {
                    l = l.bytes("key", k);
                }
                match &irr.request {
                    V3Request::Put { lease, .. } if *lease != 0 => l = l.num("lease", *lease),
                    V3Request::Txn { keys, .. } => {
                        let keys: Vec<String> =
                            keys.iter().map(|k| crate::base64::encode(k)).collect();
                        l = l.strs("keys", &keys);
                    }
                    V3Request::Compaction { revision, .. } => l = l.num("revision", *revision),
                    V3Request::LeaseGrant { ttl, id } => l = l.num("id", *id).num("ttl", *ttl),
                    V3Request::LeaseRevoke { id } => l = l.num("id", *id),
                    V3Request::ClusterVersionSet { version } => l = l.str("version", version),
                    _ => {}
                }
            }
            Err(err) => l = l.str("error", &err.to_string()),
        },
        _ => {}
    }
    l.finish()
}

/// Prints the WAL of the data dir.
/// `from_start`: read from index 0 (the first segment) instead of the snapshot etcd uses.
pub fn print_wal(
    layout: &Layout,
    json: bool,
    from_start: bool,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let (start, snap, skipped) = if from_start {
        (WalSnapshot::new(0, 0), None, Vec::new())
    } else {
        start_point(layout)?
    };
    // Keep only what is printed: a WAL of large values stays out of memory.
    let contents = read_all_with(&layout.wal_dir, &start, |e| {
        if json {
            entry_json(&e)
        } else {
            format!(
                "entry index {} term {} {}: {}\n",
                e.index,
                e.term,
                e.entry_type.name(),
                describe_entry(&e)
            )
        }
    })?;
    super::print_skipped_snapshots(&skipped, json, out)?;
    let start = Start {
        at: start,
        snap_file: snap.map(|s| s.path),
    };
    if json {
        print_wal_json(&contents, &start, out)
    } else {
        print_wal_text(&contents, &start, out)
    }
}

/// Where the printed log starts.
struct Start {
    at: WalSnapshot,
    snap_file: Option<std::path::PathBuf>,
}

fn print_wal_json(
    contents: &WalContents<String>,
    start: &Start,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let meta = contents.metadata.unwrap_or_default();
    for seg in &contents.segments {
        out.write_all(
            JsonLine::new()
                .str("record", "segment")
                .str("file", &seg.path.display().to_string())
                .num("seq", seg.seq)
                .num("first_index", seg.index)
                .num("size", seg.size)
                .finish()
                .as_bytes(),
        )?;
    }
    out.write_all(
        JsonLine::new()
            .str("record", "metadata")
            .str("member_id", &format!("{:x}", meta.node_id))
            .str("cluster_id", &format!("{:x}", meta.cluster_id))
            .finish()
            .as_bytes(),
    )?;
    out.write_all(
        JsonLine::new()
            .str("record", "start")
            .num("index", start.at.index)
            .num("term", start.at.term)
            .opt_str(
                "snap_file",
                start
                    .snap_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .as_deref(),
            )
            .finish()
            .as_bytes(),
    )?;
    for line in &contents.entries {
        out.write_all(line.as_bytes())?;
    }
    let hs = contents.hard_state.unwrap_or_default();
    out.write_all(
        JsonLine::new()
            .str("record", "hardstate")
            .num("term", hs.term)
            .str("vote", &format!("{:x}", hs.vote))
            .num("commit", hs.commit)
            .finish()
            .as_bytes(),
    )?;
    let (tail, tail_file, tail_offset, problem) = tail_parts(&contents.tail);
    out.write_all(
        JsonLine::new()
            .str("record", "end")
            .num("last_index", contents.last_index)
            .num("last_term", contents.last_term().unwrap_or(start.at.term))
            .num("entries", contents.entries.len() as u64)
            .str("tail", tail)
            .str("tail_file", &tail_file)
            .num("tail_offset", tail_offset)
            .opt_str("tail_problem", problem)
            .finish()
            .as_bytes(),
    )?;
    Ok(())
}

fn print_wal_text(
    contents: &WalContents<String>,
    start: &Start,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let meta = contents.metadata.unwrap_or_default();
    for seg in &contents.segments {
        writeln!(
            out,
            "segment {} (seq {}, first index {}, {} bytes)",
            seg.path.display(),
            seg.seq,
            seg.index,
            seg.size
        )?;
    }
    writeln!(
        out,
        "metadata: member {:x} cluster {:x}",
        meta.node_id, meta.cluster_id
    )?;
    match &start.snap_file {
        Some(p) => writeln!(
            out,
            "start: snapshot index {} term {} ({})",
            start.at.index,
            start.at.term,
            p.display()
        )?,
        None => writeln!(out, "start: index 0 (no snapshot)")?,
    }
    for line in &contents.entries {
        out.write_all(line.as_bytes())?;
    }
    match contents.hard_state {
        Some(hs) => writeln!(
            out,
            "hardstate: term {} vote {:x} commit {}",
            hs.term, hs.vote, hs.commit
        )?,
        None => writeln!(out, "hardstate: none")?,
    }
    writeln!(
        out,
        "last index {} term {} ({} entries after the snapshot)",
        contents.last_index,
        contents.last_term().unwrap_or(start.at.term),
        contents.entries.len()
    )?;
    match &contents.tail {
        WalTail::Clean { file, offset } => {
            writeln!(out, "end: clean at {} offset {offset}", file.display())?
        }
        WalTail::Torn {
            file,
            offset,
            problem,
        } => writeln!(
            out,
            "end: torn last record at {} offset {offset} ({problem}); etcd truncates it there on start",
            file.display()
        )?,
    }
    Ok(())
}

fn tail_parts(t: &WalTail) -> (&'static str, String, u64, Option<&str>) {
    match t {
        WalTail::Clean { file, offset } => ("clean", file.display().to_string(), *offset, None),
        WalTail::Torn {
            file,
            offset,
            problem,
        } => (
            "torn",
            file.display().to_string(),
            *offset,
            Some(problem.as_str()),
        ),
    }
}
