//! The WAL, as rollback needs it: read every segment once (framing, CRC-32C chain, metadata,
//! snapshot records, last HardState), keep only the entries that can change membership, and
//! write a fresh, unpadded WAL. (A private stand-in until `storage::wal` lands.)

use super::pb::{self, Val};
use crate::storage::Finding;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

const METADATA: u64 = 1;
const ENTRY: u64 = 2;
const STATE: u64 = 3;
const CRC: u64 = 4;
const SNAPSHOT: u64 = 5;
/// etcd 3.4.10+ refuses bigger records; a length beyond this is corruption, not data.
const MAX_RECORD: u64 = 10 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// A committed-or-not raft entry that can change `/0` (membership, cluster version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEntry {
    pub index: u64,
    pub change: ClusterChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// raftpb.ConfChange: type (0 add, 1 remove, 2 update, 3 add learner), node, context JSON.
    Conf {
        kind: u64,
        node: u64,
        context: Vec<u8>,
    },
    /// A v2 request on a `/0` path: PUT sets, DELETE deletes (recursively when asked).
    V2 {
        method: String,
        path: String,
        value: String,
        dir: bool,
        recursive: bool,
    },
    /// 3.6: cluster_version_set.
    ClusterVersion(String),
    /// 3.6: cluster_member_attr_set (member id, attributes JSON).
    MemberAttributes { id: u64, json: String },
    /// A v2 write outside `/0` (old v2 user data): ignored, counted.
    UserV2Write,
}

#[derive(Debug, Default)]
pub struct WalRead {
    pub metadata: Vec<u8>,
    pub hard_state: Option<HardState>,
    /// (index, term) of every snapshot record.
    pub snapshots: Vec<(u64, u64)>,
    pub entries: Vec<ClusterEntry>,
    /// Lowest entry index found (none when the WAL holds no entries).
    pub first_index: Option<u64>,
    pub last_index: u64,
    /// Indexes of entries that change v3 keys (put, delete, txn, lease revoke): the db must
    /// already hold every committed one.
    pub v3_writes: Vec<u64>,
    /// (first index, term) of each run of entries with the same term, in index order.
    pub term_runs: Vec<(u64, u64)>,
    pub files: Vec<PathBuf>,
    /// Bytes dropped from the end of the last file as a torn write (etcd does the same).
    pub torn_tail: Option<u64>,
}

/// Segment files in order, checked for consecutive sequence numbers.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, Finding> {
    let rd = fs::read_dir(dir)
        .map_err(|e| Finding::in_file(dir, format!("cannot list WAL dir: {e}")))?;
    let mut named = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Finding::in_file(dir, format!("cannot list WAL dir: {e}")))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(seq) = parse_name(&name) {
            named.push((name, seq));
        }
    }
    named.sort();
    if named.is_empty() {
        return Err(Finding::in_file(dir, "no *.wal files"));
    }
    for w in named.windows(2) {
        if w[1].1 != w[0].1 + 1 {
            return Err(Finding::in_file(
                dir.join(&w[1].0),
                format!("WAL sequence gap: {} follows {}", w[1].0, w[0].0),
            ));
        }
    }
    Ok(named.into_iter().map(|(n, _)| dir.join(n)).collect())
}

fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, idx) = stem.split_once('-')?;
    if seq.len() != 16 || idx.len() != 16 {
        return None;
    }
    u64::from_str_radix(idx, 16).ok()?;
    u64::from_str_radix(seq, 16).ok()
}

pub fn read(dir: &Path) -> Result<WalRead, Finding> {
    let files = segments(dir)?;
    let mut out = WalRead {
        files: files.clone(),
        ..Default::default()
    };
    let mut running: u32 = 0;
    let mut meta_seen = false;
    for (fi, path) in files.iter().enumerate() {
        let last_file = fi + 1 == files.len();
        let file =
            File::open(path).map_err(|e| Finding::in_file(path, format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| Finding::in_file(path, e.to_string()))?
            .len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut off: u64 = 0;
        let mut rec = Vec::new();
        while off < size {
            let mut lenb = [0u8; 8];
            let avail = size - off;
            if avail < 8 {
                if last_file {
                    out.torn_tail = Some(avail);
                    break;
                }
                return Err(Finding::at(path, off, "truncated length field"));
            }
            r.read_exact(&mut lenb)
                .map_err(|e| Finding::at(path, off, e.to_string()))?;
            let raw = u64::from_le_bytes(lenb);
            if raw == 0 {
                break; // preallocated zeros: end of this file
            }
            let pad = if raw >> 63 == 1 { (raw >> 56) & 7 } else { 0 };
            let n = raw & 0x00FF_FFFF_FFFF_FFFF;
            if n + pad > avail - 8 {
                if last_file {
                    out.torn_tail = Some(avail);
                    break;
                }
                return Err(Finding::at(
                    path,
                    off,
                    format!("record of {n} bytes runs past the end of the file"),
                ));
            }
            if n >= MAX_RECORD {
                return Err(Finding::at(
                    path,
                    off,
                    format!("record length {n} is implausible"),
                ));
            }
            rec.resize((n + pad) as usize, 0);
            r.read_exact(&mut rec)
                .map_err(|e| Finding::at(path, off, e.to_string()))?;
            let body = &rec[..n as usize];
            let (mut typ, mut crc, mut data) = (None, None, None);
            for f in pb::fields(body) {
                match f {
                    Ok((1, Val::Varint(v))) => typ = Some(v),
                    Ok((2, Val::Varint(v))) => crc = Some(v as u32),
                    Ok((3, Val::Bytes(b))) => data = Some(b),
                    Ok(_) => {}
                    Err(at) => {
                        if last_file && torn(&rec, off) {
                            out.torn_tail = Some(avail);
                            return finish(out, meta_seen);
                        }
                        return Err(Finding::at(
                            path,
                            off + 8 + at as u64,
                            "malformed WAL record",
                        ));
                    }
                }
            }
            let typ = typ.ok_or_else(|| Finding::at(path, off, "WAL record without a type"))?;
            let crc = crc.unwrap_or(0);
            if typ == CRC {
                if running != 0 && crc != running {
                    return Err(Finding::at(
                        path,
                        off,
                        format!(
                            "CRC record {crc:#010x} does not continue the chain {running:#010x}"
                        ),
                    ));
                }
                running = crc;
            } else {
                let d = data.unwrap_or(&[]);
                running = crc32c::crc32c_append(running, d);
                if crc != running {
                    if last_file && torn(&rec, off) {
                        out.torn_tail = Some(avail);
                        return finish(out, meta_seen);
                    }
                    return Err(Finding::at(
                        path,
                        off,
                        format!(
                            "CRC mismatch: record says {crc:#010x}, data gives {running:#010x}"
                        ),
                    ));
                }
                match typ {
                    METADATA => {
                        if meta_seen && out.metadata != d {
                            return Err(Finding::at(
                                path,
                                off,
                                "metadata differs from the first segment's",
                            ));
                        }
                        out.metadata = d.to_vec();
                        meta_seen = true;
                    }
                    ENTRY => entry(&mut out, d).map_err(|p| Finding::at(path, off, p))?,
                    STATE => {
                        let mut hs = HardState::default();
                        for f in pb::fields(d) {
                            match f {
                                Ok((1, Val::Varint(v))) => hs.term = v,
                                Ok((2, Val::Varint(v))) => hs.vote = v,
                                Ok((3, Val::Varint(v))) => hs.commit = v,
                                Ok(_) => {}
                                Err(_) => {
                                    return Err(Finding::at(path, off, "malformed HardState"))
                                }
                            }
                        }
                        out.hard_state = Some(hs);
                    }
                    SNAPSHOT => {
                        let (mut i, mut t) = (0, 0);
                        for f in pb::fields(d) {
                            match f {
                                Ok((1, Val::Varint(v))) => i = v,
                                Ok((2, Val::Varint(v))) => t = v,
                                Ok(_) => {}
                                Err(_) => {
                                    return Err(Finding::at(path, off, "malformed snapshot record"))
                                }
                            }
                        }
                        out.snapshots.push((i, t));
                    }
                    other => {
                        return Err(Finding::at(
                            path,
                            off,
                            format!("unexpected WAL record type {other}"),
                        ))
                    }
                }
            }
            off += 8 + n + pad;
        }
    }
    finish(out, meta_seen)
}

impl WalRead {
    /// Term of the entry at `index`, if the WAL holds it.
    pub fn entry_term(&self, index: u64) -> Option<u64> {
        if self.first_index.is_none_or(|f| index < f) || index > self.last_index {
            return None;
        }
        self.term_runs
            .iter()
            .rev()
            .find(|(start, _)| *start <= index)
            .map(|(_, t)| *t)
    }
}

fn finish(out: WalRead, meta_seen: bool) -> Result<WalRead, Finding> {
    if !meta_seen {
        let f = out.files.first().cloned().unwrap_or_default();
        return Err(Finding::in_file(f, "WAL has no metadata record"));
    }
    Ok(out)
}

/// etcd's torn-write rule: a bad last record counts as torn if any 512-byte sector of it
/// (by file offset) is all zeros.
fn torn(rec: &[u8], off: u64) -> bool {
    let mut start = off + 8;
    let end = off + 8 + rec.len() as u64;
    while start < end {
        let next = ((start / 512) + 1) * 512;
        let chunk_end = next.min(end);
        let s = (start - off - 8) as usize;
        let e = (chunk_end - off - 8) as usize;
        if rec[s..e].iter().all(|b| *b == 0) {
            return true;
        }
        start = chunk_end;
    }
    false
}

fn entry(out: &mut WalRead, d: &[u8]) -> Result<(), String> {
    let (mut typ, mut term, mut index, mut data) = (0, 0, 0, &[][..]);
    for f in pb::fields(d) {
        match f.map_err(|_| "malformed raft entry".to_string())? {
            (1, Val::Varint(v)) => typ = v,
            (2, Val::Varint(v)) => term = v,
            (3, Val::Varint(v)) => index = v,
            (4, Val::Bytes(b)) => data = b,
            _ => {}
        }
    }
    // raft overwrite: a repeated index replaces it and everything after it
    // (both lists are in index order, so truncating is popping)
    while out.entries.last().is_some_and(|e| e.index >= index) {
        out.entries.pop();
    }
    while out.v3_writes.last().is_some_and(|i| *i >= index) {
        out.v3_writes.pop();
    }
    while out.term_runs.last().is_some_and(|(i, _)| *i >= index) {
        out.term_runs.pop();
    }
    if out.term_runs.last().is_none_or(|(_, t)| *t != term) {
        out.term_runs.push((index, term));
    }
    out.first_index = Some(out.first_index.map_or(index, |f| f.min(index)));
    out.last_index = index;
    let change = match typ {
        0 if data.is_empty() => None,
        0 => {
            if v3_write(data) {
                out.v3_writes.push(index);
            }
            normal(data).map_err(|e| format!("entry {index}: {e}"))?
        }
        1 => Some(conf_change(data).map_err(|e| format!("entry {index}: {e}"))?),
        other => {
            return Err(format!(
                "entry {index}: unsupported entry type {other} (ConfChangeV2)"
            ))
        }
    };
    if let Some(change) = change {
        out.entries.push(ClusterEntry { index, change });
    }
    Ok(())
}

fn conf_change(d: &[u8]) -> Result<ClusterChange, String> {
    let (mut kind, mut node, mut context) = (0, 0, Vec::new());
    for f in pb::fields(d) {
        match f.map_err(|_| "malformed ConfChange".to_string())? {
            (2, Val::Varint(v)) => kind = v,
            (3, Val::Varint(v)) => node = v,
            (4, Val::Bytes(b)) => context = b.to_vec(),
            _ => {}
        }
    }
    Ok(ClusterChange::Conf {
        kind,
        node,
        context,
    })
}

/// An InternalRaftRequest that can change v3 keys: put (4), delete_range (5), txn (6),
/// lease_revoke (9, deletes the lease's keys).
fn v3_write(d: &[u8]) -> bool {
    if pb::fields(d).any(|f| matches!(f, Ok((5, Val::Varint(_))))) {
        return false; // a v2 Request
    }
    pb::fields(d).any(|f| matches!(f, Ok((4 | 5 | 6 | 9, Val::Bytes(_)))))
}

/// A normal entry: a legacy v2 Request (top-level field 5 is a varint) or an
/// InternalRaftRequest. Only what can touch `/0` is kept.
fn normal(d: &[u8]) -> Result<Option<ClusterChange>, String> {
    let is_v2 = pb::fields(d).any(|f| matches!(f, Ok((5, Val::Varint(_)))));
    if is_v2 {
        return v2_request(d);
    }
    for f in pb::fields(d) {
        let (num, val) = match f {
            Ok(x) => x,
            // Not an IRR either: etcd would MustUnmarshal it as a Request and crash.
            Err(_) => return Err("neither a v2 Request nor an InternalRaftRequest".into()),
        };
        match (num, val) {
            (2, Val::Bytes(b)) => return v2_request(b),
            (1300, Val::Bytes(b)) => {
                for g in pb::fields(b) {
                    if let Ok((1, Val::Bytes(v))) = g {
                        return Ok(Some(ClusterChange::ClusterVersion(
                            String::from_utf8_lossy(v).into_owned(),
                        )));
                    }
                }
            }
            (1301, Val::Bytes(b)) => {
                let (mut id, mut name, mut urls) = (0, String::new(), Vec::new());
                for g in pb::fields(b) {
                    match g {
                        Ok((1, Val::Varint(v))) => id = v,
                        Ok((2, Val::Bytes(a))) => {
                            for h in pb::fields(a) {
                                match h {
                                    Ok((1, Val::Bytes(n))) => {
                                        name = String::from_utf8_lossy(n).into_owned()
                                    }
                                    Ok((2, Val::Bytes(u))) => {
                                        urls.push(String::from_utf8_lossy(u).into_owned())
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let mut json = serde_json::Map::new();
                if !name.is_empty() {
                    json.insert("name".into(), name.into());
                }
                if !urls.is_empty() {
                    json.insert("clientURLs".into(), urls.into());
                }
                let json = serde_json::Value::Object(json).to_string();
                return Ok(Some(ClusterChange::MemberAttributes { id, json }));
            }
            _ => {}
        }
    }
    Ok(None)
}

fn v2_request(d: &[u8]) -> Result<Option<ClusterChange>, String> {
    let (mut method, mut path, mut value) = (String::new(), String::new(), String::new());
    let (mut dir, mut recursive) = (false, false);
    for f in pb::fields(d) {
        match f.map_err(|_| "malformed v2 Request".to_string())? {
            (2, Val::Bytes(b)) => method = String::from_utf8_lossy(b).into_owned(),
            (3, Val::Bytes(b)) => path = String::from_utf8_lossy(b).into_owned(),
            (4, Val::Bytes(b)) => value = String::from_utf8_lossy(b).into_owned(),
            (5, Val::Varint(v)) => dir = v != 0,
            (12, Val::Varint(v)) => recursive = v != 0,
            _ => {}
        }
    }
    match method.as_str() {
        "PUT" | "DELETE" | "POST" => {}
        "QGET" | "SYNC" | "GET" => return Ok(None),
        other => return Err(format!("unknown v2 command {other:?}")),
    }
    if path != "/0" && !path.starts_with("/0/") {
        // v2 user data: not carried over (as in the original), but counted for the plan
        return Ok(Some(ClusterChange::UserV2Write));
    }
    Ok(Some(ClusterChange::V2 {
        method,
        path,
        value,
        dir,
        recursive,
    }))
}

fn frame(out: &mut Vec<u8>, running: &mut u32, typ: u64, data: Option<&[u8]>) {
    let mut rec = Vec::new();
    pb::put_uint(&mut rec, 1, typ);
    match data {
        Some(d) => {
            *running = crc32c::crc32c_append(*running, d);
            pb::put_uint(&mut rec, 2, u64::from(*running));
            pb::put_bytes(&mut rec, 3, d);
        }
        None => pb::put_uint(&mut rec, 2, u64::from(*running)),
    }
    // Unpadded, like etcd 2.x writes it: 2.x cannot read padded frames, 3.x reads both.
    out.extend_from_slice(&(rec.len() as u64).to_le_bytes());
    out.extend_from_slice(&rec);
}

/// The bytes of a fresh WAL: crc, metadata, snapshot{0,0}, snapshot{index, term},
/// HardState{raft_term, 0, commit=index}. `term` is the term of the entry at `index` (raft's
/// snapshot term); `raft_term` >= it is the member's current term.
pub fn new_wal_bytes(metadata: &[u8], index: u64, term: u64, raft_term: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut running = 0u32;
    frame(&mut out, &mut running, CRC, None);
    frame(&mut out, &mut running, METADATA, Some(metadata));
    let snap = |i: u64, t: u64| {
        let mut s = Vec::new();
        pb::put_uint(&mut s, 1, i);
        pb::put_uint(&mut s, 2, t);
        s
    };
    frame(&mut out, &mut running, SNAPSHOT, Some(&snap(0, 0)));
    frame(&mut out, &mut running, SNAPSHOT, Some(&snap(index, term)));
    let mut hs = Vec::new();
    pb::put_uint(&mut hs, 1, raft_term);
    pb::put_uint(&mut hs, 2, 0);
    pb::put_uint(&mut hs, 3, index);
    frame(&mut out, &mut running, STATE, Some(&hs));
    out
}

/// Writes `member/wal/0000000000000000-0000000000000000.wal` under `member` and fsyncs it.
pub fn write_new(
    wal_dir: &Path,
    metadata: &[u8],
    index: u64,
    term: u64,
    raft_term: u64,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    fs::DirBuilder::new().mode(0o700).create(wal_dir)?;
    let path = wal_dir.join("0000000000000000-0000000000000000.wal");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&new_wal_bytes(metadata, index, term, raft_term))?;
    f.sync_all()?;
    File::open(wal_dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The unpadded opening from etcd-formats.md 1.5 (CRCs recomputed against real etcd).
    #[test]
    fn new_wal_matches_the_reference_bytes() {
        let meta = hex("08c0c0caafc1ba96892e1087d5edba8fd59dc104");
        let got = new_wal_bytes(&meta, 63, 2, 2);
        let want = hex("04000000 00000000 08041000
             1d000000 00000000 0801108d9cf9161a1408c0c0caafc1ba96892e1087d5edba8fd59dc104
             0e000000 00000000 080510878cc58d0d1a0408001000
             0e000000 00000000 080510c4d3e6de031a04083f1002
             10000000 00000000 080310b389d091031a06080210001 83f");
        assert_eq!(got, want);
    }

    #[test]
    fn reads_back_what_it_writes_and_catches_a_flipped_byte() {
        let dir = std::env::temp_dir().join(format!("rb-wal-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let wal = dir.join("wal");
        let p = write_new(&wal, b"\x08\x01\x10\x02", 33, 2, 3).unwrap();
        let r = read(&wal).unwrap();
        assert_eq!(r.metadata, b"\x08\x01\x10\x02");
        assert_eq!(r.snapshots, vec![(0, 0), (33, 2)]);
        assert_eq!(
            r.hard_state,
            Some(HardState {
                term: 3,
                vote: 0,
                commit: 33
            })
        );
        let mut b = fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 0x01;
        fs::write(&p, &b).unwrap();
        let e = read(&wal).unwrap_err();
        assert!(e.problem.contains("CRC mismatch"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_tolerated_like_etcd() {
        let dir = std::env::temp_dir().join(format!("rb-wal-torn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let wal = dir.join("wal");
        let p = write_new(&wal, b"\x08\x01", 5, 1, 1).unwrap();
        let good = fs::read(&p).unwrap();
        // a frame that claims 100 bytes but the file ends after 20: a write cut short
        let mut b = good.clone();
        b.extend_from_slice(&100u64.to_le_bytes());
        b.extend_from_slice(&[0x08; 20]);
        fs::write(&p, &b).unwrap();
        let r = read(&wal).unwrap();
        assert_eq!(r.torn_tail, Some(28));
        assert_eq!(r.hard_state.map(|h| h.commit), Some(5));
        // a full-length last record whose sector is all zeros (not yet written): torn too
        let mut b = good.clone();
        b.extend_from_slice(&600u64.to_le_bytes());
        b.extend_from_slice(&[0u8; 600]);
        fs::write(&p, &b).unwrap();
        assert!(read(&wal).unwrap().torn_tail.is_some());
        // a bad record with data everywhere is corruption, not a torn write
        let mut b = good;
        let mut rec = Vec::new();
        pb::put_uint(&mut rec, 1, STATE);
        pb::put_uint(&mut rec, 2, 12345);
        pb::put_bytes(&mut rec, 3, &[1u8; 40]);
        b.extend_from_slice(&(rec.len() as u64).to_le_bytes());
        b.extend_from_slice(&rec);
        fs::write(&p, &b).unwrap();
        assert!(read(&wal).unwrap_err().problem.contains("CRC mismatch"));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Random flips and truncations of a real etcd WAL: Ok or a Finding, never a panic.
    #[test]
    fn corrupted_copies_never_panic() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/wal/0000000000000000-0000000000000000.wal"
        );
        let orig = fs::read(src).unwrap();
        let dir = std::env::temp_dir().join(format!("rb-wal-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0000000000000000-0000000000000000.wal");
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ok, mut bad) = (0, 0);
        for round in 0..1500 {
            let mut b = orig.clone();
            if round % 5 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            if !b.is_empty() {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            fs::write(&path, &b).unwrap();
            match read(&dir) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        fs::remove_dir_all(&dir).unwrap();
        assert!(ok > 0 && bad > 0, "ok {ok} bad {bad}");
    }

    #[test]
    fn entry_terms_follow_raft_overwrites() {
        let mut w = WalRead::default();
        let e = |term: u64, index: u64| {
            let mut b = Vec::new();
            pb::put_uint(&mut b, 1, 0);
            pb::put_uint(&mut b, 2, term);
            pb::put_uint(&mut b, 3, index);
            b
        };
        for (t, i) in [
            (1, 1),
            (1, 2),
            (2, 3),
            (2, 4),
            (2, 5),
            (3, 4),
            (3, 5),
            (3, 6),
        ] {
            entry(&mut w, &e(t, i)).unwrap();
        }
        assert_eq!(w.term_runs, vec![(1, 1), (3, 2), (4, 3)]);
        let got: Vec<_> = (0..=7).map(|i| w.entry_term(i)).collect();
        assert_eq!(
            got,
            vec![
                None,
                Some(1),
                Some(1),
                Some(2),
                Some(3),
                Some(3),
                Some(3),
                None
            ]
        );
    }

    #[test]
    fn v2_request_vs_internal_request() {
        // PUT /0/version "3.4.0" as etcd writes it (all non-nullable fields present)
        let mut r = Vec::new();
        pb::put_uint(&mut r, 1, 7);
        pb::put_bytes(&mut r, 2, b"PUT");
        pb::put_bytes(&mut r, 3, b"/0/version");
        pb::put_bytes(&mut r, 4, b"3.4.0");
        pb::put_uint(&mut r, 5, 0);
        let c = normal(&r).unwrap().unwrap();
        assert!(matches!(c, ClusterChange::V2 { ref path, .. } if path == "/0/version"));
        // a v3 put IRR: field 4 message
        let mut irr = Vec::new();
        pb::put_bytes(&mut irr, 4, b"\x0a\x01a");
        assert_eq!(normal(&irr).unwrap(), None);
        // v2 user key: not kept
        let mut u = Vec::new();
        pb::put_bytes(&mut u, 2, b"PUT");
        pb::put_bytes(&mut u, 3, b"/1/x");
        pb::put_uint(&mut u, 5, 0);
        assert_eq!(normal(&u).unwrap(), Some(ClusterChange::UserV2Write));
        assert!(v3_write(&irr));
        assert!(!v3_write(&r));
        let mut range = Vec::new();
        pb::put_bytes(&mut range, 3, b"\x0a\x01a");
        assert!(!v3_write(&range));
        let mut bad = Vec::new();
        pb::put_bytes(&mut bad, 2, b"FROB");
        pb::put_uint(&mut bad, 5, 0);
        assert!(normal(&bad).is_err());
    }
}
