//! `etcd-inspect wal`: prints the member's WAL ([`Member::read_wal_with`]): metadata, HardState
//! and each entry after the snapshot etcd would start from, with what the entry is (v2 method
//! + path, v3 kind + key, conf change, no-op).

use std::io::Write;

use std::path::Path;

use super::output::{preview, show_bytes, JsonLine};
use super::InspectError;
use crate::storage::member::{Member, StartPoint};
use crate::storage::proto::{ConfChange, Entry, EntryPayload, EntryType, V3Request, WalSnapshot};
use crate::storage::wal::{Segment, WalContents, WalTail};

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

/// Prints the WAL of the member, from where etcd starts (`from_start`: from index 0, which
/// needs the first segment).
pub fn print_wal(
    member: &Member,
    json: bool,
    from_start: bool,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    // Keep only what is printed: a WAL of large values stays out of memory.
    let (point, contents) = member.read_wal_with(from_start, |e| {
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
    if let Some(p) = point {
        super::print_skipped_snapshots(&p.skipped, json, out)?;
    }
    let start = Start {
        at: point.map_or(WalSnapshot::new(0, 0), StartPoint::start),
        snap_file: point
            .and_then(|p| p.snapshot.as_ref())
            .map(|s| s.path.as_path()),
    };
    let c = &contents;
    for seg in &c.segments {
        out.write_all(segment_line(seg, json).as_bytes())?;
    }
    out.write_all(metadata_line(c, json).as_bytes())?;
    out.write_all(start_line(&start, json).as_bytes())?;
    for line in &c.entries {
        out.write_all(line.as_bytes())?;
    }
    out.write_all(hardstate_line(c, json).as_bytes())?;
    out.write_all(end_lines(c, &start, json).as_bytes())?;
    Ok(())
}

/// Where the printed log starts.
struct Start<'a> {
    at: WalSnapshot,
    snap_file: Option<&'a Path>,
}

fn segment_line(seg: &Segment, json: bool) -> String {
    if json {
        return JsonLine::new()
            .str("record", "segment")
            .str("file", &seg.path.display().to_string())
            .num("seq", seg.seq)
            .num("first_index", seg.index)
            .num("size", seg.size)
            .finish();
    }
    format!(
        "segment {} (seq {}, first index {}, {} bytes)\n",
        seg.path.display(),
        seg.seq,
        seg.index,
        seg.size
    )
}

fn metadata_line(c: &WalContents<String>, json: bool) -> String {
    let meta = c.metadata.unwrap_or_default();
    if json {
        return JsonLine::new()
            .str("record", "metadata")
            .str("member_id", &format!("{:x}", meta.node_id))
            .str("cluster_id", &format!("{:x}", meta.cluster_id))
            .finish();
    }
    format!(
        "metadata: member {:x} cluster {:x}\n",
        meta.node_id, meta.cluster_id
    )
}

fn start_line(start: &Start<'_>, json: bool) -> String {
    if json {
        let file = start.snap_file.map(|p| p.display().to_string());
        return JsonLine::new()
            .str("record", "start")
            .num("index", start.at.index)
            .num("term", start.at.term)
            .opt_str("snap_file", file.as_deref())
            .finish();
    }
    match start.snap_file {
        Some(p) => format!(
            "start: snapshot index {} term {} ({})\n",
            start.at.index,
            start.at.term,
            p.display()
        ),
        None => "start: index 0 (no snapshot)\n".into(),
    }
}

fn hardstate_line(c: &WalContents<String>, json: bool) -> String {
    match (c.hard_state, json) {
        (hs, true) => {
            let hs = hs.unwrap_or_default();
            JsonLine::new()
                .str("record", "hardstate")
                .num("term", hs.term)
                .str("vote", &format!("{:x}", hs.vote))
                .num("commit", hs.commit)
                .finish()
        }
        (Some(hs), false) => format!(
            "hardstate: term {} vote {:x} commit {}\n",
            hs.term, hs.vote, hs.commit
        ),
        (None, false) => "hardstate: none\n".into(),
    }
}

/// The last index and term, and how the log ends (clean, or a torn last record).
fn end_lines(c: &WalContents<String>, start: &Start<'_>, json: bool) -> String {
    let last_term = c.last_term().unwrap_or(start.at.term);
    let (file, offset, problem) = match &c.tail {
        WalTail::Clean { file, offset } => (file, *offset, None),
        WalTail::Torn {
            file,
            offset,
            problem,
        } => (file, *offset, Some(problem.as_str())),
    };
    if json {
        return JsonLine::new()
            .str("record", "end")
            .num("last_index", c.last_index)
            .num("last_term", last_term)
            .num("entries", c.entries.len() as u64)
            .str("tail", if problem.is_some() { "torn" } else { "clean" })
            .str("tail_file", &file.display().to_string())
            .num("tail_offset", offset)
            .opt_str("tail_problem", problem)
            .finish();
    }
    let last = format!(
        "last index {} term {last_term} ({} entries after the snapshot)\n",
        c.last_index,
        c.entries.len()
    );
    let end = match problem {
        None => format!("end: clean at {} offset {offset}\n", file.display()),
        Some(problem) => format!(
            "end: torn last record at {} offset {offset} ({problem}); etcd truncates it there on start\n",
            file.display()
        ),
    };
    last + &end
}
