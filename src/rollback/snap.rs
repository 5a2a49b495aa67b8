//! `member/snap/<term>-<index>.snap`: read (CRC-checked) and write.
//! (A private stand-in until `storage::snap` lands.)

use super::pb::{self, Val};
use crate::storage::Finding;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct SnapFile {
    pub path: PathBuf,
    pub term: u64,
    pub index: u64,
}

#[derive(Debug)]
pub struct Snapshot {
    pub index: u64,
    pub term: u64,
    pub voters: Vec<u64>,
    /// The v2 store JSON.
    pub data: Vec<u8>,
}

/// `*.snap` files of `dir`, newest first (descending name = term, then index).
pub fn list(dir: &Path) -> Result<Vec<SnapFile>, Finding> {
    let rd = fs::read_dir(dir)
        .map_err(|e| Finding::in_file(dir, format!("cannot list snap dir: {e}")))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Finding::in_file(dir, format!("cannot list snap dir: {e}")))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".snap") else {
            continue;
        };
        let Some((t, i)) = stem.split_once('-') else {
            continue;
        };
        if t.len() != 16 || i.len() != 16 {
            continue;
        }
        if let (Ok(term), Ok(index)) = (u64::from_str_radix(t, 16), u64::from_str_radix(i, 16)) {
            out.push(SnapFile {
                path: ent.path(),
                term,
                index,
            });
        }
    }
    out.sort_by(|a, b| b.path.cmp(&a.path));
    Ok(out)
}

pub fn name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

pub fn read(path: &Path) -> Result<Snapshot, Finding> {
    let b = fs::read(path).map_err(|e| Finding::in_file(path, format!("cannot read: {e}")))?;
    if b.is_empty() {
        return Err(Finding::at(path, 0, "empty snapshot file"));
    }
    let (mut crc, mut data) = (0u32, None);
    for f in pb::fields(&b) {
        match f {
            Ok((1, Val::Varint(v))) => crc = v as u32,
            Ok((2, Val::Bytes(d))) => data = Some(d),
            Ok(_) => {}
            Err(at) => return Err(Finding::at(path, at as u64, "malformed snappb.Snapshot")),
        }
    }
    let data = data
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Finding::at(path, 0, "snapshot has no data"))?;
    if crc == 0 {
        return Err(Finding::at(
            path,
            0,
            "snapshot CRC is 0 (etcd treats this as empty)",
        ));
    }
    let got = crc32c::crc32c(data);
    if got != crc {
        return Err(Finding::at(
            path,
            0,
            format!("snapshot CRC mismatch: file says {crc:#010x}, data gives {got:#010x}"),
        ));
    }
    let mut s = Snapshot {
        index: 0,
        term: 0,
        voters: Vec::new(),
        data: Vec::new(),
    };
    let bad = |what: &str| Finding::in_file(path, format!("malformed raftpb.Snapshot: {what}"));
    for f in pb::fields(data) {
        match f.map_err(|_| bad("fields"))? {
            (1, Val::Bytes(d)) => s.data = d.to_vec(),
            (2, Val::Bytes(m)) => {
                for g in pb::fields(m) {
                    match g.map_err(|_| bad("metadata"))? {
                        (1, Val::Bytes(cs)) => {
                            for h in pb::fields(cs) {
                                if let (1, Val::Varint(v)) = h.map_err(|_| bad("conf state"))? {
                                    s.voters.push(v);
                                }
                            }
                        }
                        (2, Val::Varint(v)) => s.index = v,
                        (3, Val::Varint(v)) => s.term = v,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Writes a `.snap` whose v2 JSON is produced by `json` (called twice: once to size and
/// checksum it, once to write it, so the JSON never has to sit in memory whole).
pub fn write(
    dir: &Path,
    term: u64,
    index: u64,
    voters: &[u64],
    json: &dyn Fn(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    // ConfState with unpacked `nodes` (2.x rejects packed); then index and term.
    let mut conf = Vec::new();
    for v in voters {
        pb::put_uint(&mut conf, 1, *v);
    }
    let mut meta = Vec::new();
    pb::put_bytes(&mut meta, 1, &conf);
    pb::put_uint(&mut meta, 2, index);
    pb::put_uint(&mut meta, 3, term);

    let mut probe = CrcCount { crc: 0, n: 0 };
    json(&mut probe)?;
    let json_len = probe.n;
    // raftpb.Snapshot = field 1 JSON (head written here, body streamed) + field 2 metadata
    let mut head = Vec::new();
    pb::put_varint(&mut head, (1 << 3) | 2);
    pb::put_varint(&mut head, json_len);
    let mut tail = Vec::new();
    pb::put_bytes(&mut tail, 2, &meta);
    let data_len = head.len() as u64 + json_len + tail.len() as u64;
    let mut crc = crc32c::crc32c(&head);
    crc = crc32c::crc32c_combine(crc, probe.crc, json_len as usize);
    crc = crc32c::crc32c_append(crc, &tail);

    let mut outer = Vec::new();
    pb::put_uint(&mut outer, 1, u64::from(crc));
    pb::put_varint(&mut outer, (2 << 3) | 2);
    pb::put_varint(&mut outer, data_len);
    outer.extend_from_slice(&head);

    let path = dir.join(name(term, index));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    w.write_all(&outer)?;
    let mut check = CrcCount { crc: 0, n: 0 };
    {
        let mut tee = Tee {
            a: &mut w,
            b: &mut check,
        };
        json(&mut tee)?;
    }
    if check.n != json_len || check.crc != probe.crc {
        return Err(std::io::Error::other(
            "v2 store JSON changed between the two passes",
        ));
    }
    w.write_all(&tail)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(path)
}

struct CrcCount {
    crc: u32,
    n: u64,
}

impl Write for CrcCount {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.n += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Tee<'a> {
    a: &'a mut dyn Write,
    b: &'a mut CrcCount,
}

impl Write for Tee<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.a.write_all(b)?;
        self.b.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.a.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random flips and truncations of a real .snap: Ok or a Finding, never a panic.
    #[test]
    fn corrupted_copies_never_panic() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/snap/0000000000000002-0000000000000021.snap"
        );
        let orig = fs::read(src).unwrap();
        let path = std::env::temp_dir().join(format!("rb-snap-fuzz-{}.snap", std::process::id()));
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..1000 {
            let mut b = orig.clone();
            if round % 4 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            if !b.is_empty() {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            fs::write(&path, &b).unwrap();
            if let Ok(s) = read(&path) {
                let _ = crate::rollback::cluster::from_store_json(&s.data);
            }
        }
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn write_then_read() {
        let dir = std::env::temp_dir().join(format!("rb-snap-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = write(&dir, 5, 100, &[1, 0x1177386ae0746d8e], &|w| {
            w.write_all(b"{\"Root\":{}}")
        })
        .unwrap();
        assert!(p.ends_with("0000000000000005-0000000000000064.snap"));
        let s = read(&p).unwrap();
        assert_eq!((s.index, s.term), (100, 5));
        assert_eq!(s.voters, vec![1, 0x1177386ae0746d8e]);
        assert_eq!(s.data, b"{\"Root\":{}}");
        let mut b = fs::read(&p).unwrap();
        let n = b.len();
        b[n - 20] ^= 1;
        fs::write(&p, b).unwrap();
        assert!(read(&p).unwrap_err().problem.contains("CRC"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
