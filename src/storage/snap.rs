//! `member/snap/<term>-<index>.snap`: `snappb.Snapshot{crc, data}` where `crc` is the CRC-32C of
//! `data` and `data` is a `raftpb.Snapshot` whose own `data` is the v2 store JSON.
//!
//! Loading follows etcd: names sorted descending (term, then index), the first that reads
//! cleanly wins; broken ones are skipped. Unlike etcd's loader we never rename broken files
//! (`*.broken`): a reader must not change the data dir.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::proto::{RaftSnapshot, SnapFileMessage, SnapshotMetadata, WalSnapshot};
use super::v2store::Store;
use super::Finding;
use crate::error::{HasKind, IoError, Kind};
use crate::version::sync_dir;

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// Empty file, empty data or a zero CRC (etcd's `ErrEmptySnapshot`).
    #[error("{}: offset 0: empty snapshot (no data or zero CRC)", .0.display())]
    Empty(PathBuf),
    /// Undecodable protobuf or a CRC mismatch, at a byte offset in the file.
    #[error("{0}")]
    Corrupt(Finding),
    /// The file name is not `%016x-%016x.snap`, or disagrees with the metadata inside.
    #[error("{0}")]
    BadName(Finding),
}

impl HasKind for SnapError {
    fn kind(&self) -> Kind {
        match self {
            SnapError::Io(_) => Kind::Io,
            _ => Kind::Corrupt,
        }
    }
}

impl SnapError {
    /// The damage as a finding, or the I/O error that kept us from looking.
    pub fn into_finding(self) -> Result<Finding, IoError> {
        match self {
            SnapError::Corrupt(f) | SnapError::BadName(f) => Ok(f),
            SnapError::Empty(p) => Ok(Finding::at(p, 0, "empty snapshot (no data or zero CRC)")),
            SnapError::Io(e) => Err(e),
        }
    }

    /// The I/O error inside, for callers where nothing else can happen (writing, listing);
    /// anything else becomes one about `path`.
    pub fn into_io(self, path: &Path) -> IoError {
        match self {
            SnapError::Io(e) => e,
            other => IoError::new("cannot use", path, io::Error::other(other.to_string())),
        }
    }
}

/// `%016x-%016x.snap` of (term, index): the term comes first.
pub fn snap_file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// (term, index) from a snap file name.
pub fn parse_snap_name(name: &str) -> Option<(u64, u64)> {
    super::parse_hex_pair_name(name, ".snap")
}

/// A snapshot read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSnapshot {
    pub path: PathBuf,
    pub snapshot: RaftSnapshot,
}

impl LoadedSnapshot {
    /// The v2 store its data holds; JSON that is no v2 store is damage in this file.
    pub fn store(&self) -> Result<Store, Finding> {
        Store::load(&self.snapshot.data).map_err(|e| Finding::in_file(&self.path, e.to_string()))
    }
}

/// Reads and verifies one `.snap` file.
pub fn read_snap_file(path: &Path) -> Result<RaftSnapshot, SnapError> {
    let bytes = fs::read(path).map_err(io_err(path, "cannot read"))?;
    decode_snap_bytes(path, &bytes)
}

/// Verifies and decodes the bytes of a `.snap` file (`path` is only for messages).
pub fn decode_snap_bytes(path: &Path, bytes: &[u8]) -> Result<RaftSnapshot, SnapError> {
    if bytes.is_empty() {
        return Err(SnapError::Empty(path.to_path_buf()));
    }
    let outer = SnapFileMessage::decode(bytes).map_err(|e| {
        SnapError::Corrupt(Finding::at(
            path,
            e.offset as u64,
            format!("undecodable snapshot: {}", e.problem_text()),
        ))
    })?;
    if outer.data.is_empty() || outer.crc == 0 {
        return Err(SnapError::Empty(path.to_path_buf()));
    }
    // Where `data` starts in the file: after its tag and length, which come first (as
    // rollback2 writes) or after the crc field (as etcd writes).
    let data_offset = if bytes[0] == (2 << 3) | 2 {
        1 + super::protowire::varint_len(outer.data.len() as u64) as u64
    } else {
        (bytes.len() - outer.data.len()) as u64
    };
    let crc = crc32c::crc32c(&outer.data);
    if crc != outer.crc {
        return Err(SnapError::Corrupt(Finding::at(
            path,
            0,
            format!(
                "CRC mismatch: file says {:#010x}, data (from offset {data_offset}) has {crc:#010x}",
                outer.crc
            ),
        )));
    }
    RaftSnapshot::decode(&outer.data).map_err(|e| {
        SnapError::Corrupt(Finding::at(
            path,
            data_offset + e.offset as u64,
            format!("undecodable raft snapshot: {}", e.problem_text()),
        ))
    })
}

/// `*.snap` files in `dir`, newest first (names sorted descending, as etcd does).
pub fn list_snap_files(dir: &Path) -> Result<Vec<PathBuf>, SnapError> {
    let mut names = Vec::new();
    let rd = fs::read_dir(dir).map_err(io_err(dir, "cannot list"))?;
    for dirent in rd {
        let dirent = dirent.map_err(io_err(dir, "cannot list"))?;
        let name = dirent.file_name();
        if let Some(name) = name.to_str() {
            if name.ends_with(".snap") {
                names.push(name.to_string());
            }
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The result of choosing a snapshot: the one used (if any) and the newer ones skipped.
#[derive(Debug)]
pub struct SnapChoice {
    pub loaded: Option<LoadedSnapshot>,
    pub skipped: Vec<SnapError>,
}

/// The newest readable snapshot in `dir` (etcd's `Load`). `None` when there is none.
pub fn load_newest(dir: &Path) -> Result<SnapChoice, SnapError> {
    load_filtered(dir, |_, _| true)
}

/// The newest readable snapshot whose (term, index) is one of `wal_snaps` (etcd 3.4.8+'s
/// `LoadNewestAvailable` with `wal::valid_snapshots`): what etcd really starts from.
pub fn load_newest_available(
    dir: &Path,
    wal_snaps: &[WalSnapshot],
) -> Result<SnapChoice, SnapError> {
    load_filtered(dir, |term, index| {
        wal_snaps.iter().any(|s| s.term == term && s.index == index)
    })
}

fn load_filtered(dir: &Path, wanted: impl Fn(u64, u64) -> bool) -> Result<SnapChoice, SnapError> {
    let mut skipped = Vec::new();
    for path in list_snap_files(dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some((term, index)) = parse_snap_name(name) else {
            skipped.push(SnapError::BadName(Finding::in_file(
                &path,
                "not a <term>-<index>.snap name",
            )));
            continue;
        };
        if !wanted(term, index) {
            continue;
        }
        match read_snap_file(&path) {
            Ok(snapshot) => {
                return Ok(SnapChoice {
                    loaded: Some(LoadedSnapshot { path, snapshot }),
                    skipped,
                })
            }
            Err(e) => skipped.push(e),
        }
    }
    Ok(SnapChoice {
        loaded: None,
        skipped,
    })
}

/// Writes `member/snap/<term>-<index>.snap` for `snapshot` into `dir` (created 0700 if
/// missing), fsyncs the file and the directory. Refuses to overwrite an existing file.
pub fn write_snap(dir: &Path, snapshot: &RaftSnapshot) -> Result<PathBuf, SnapError> {
    let data = snapshot.encode();
    let bytes = SnapFileMessage {
        crc: crc32c::crc32c(&data),
        data,
    }
    .encode();
    let path = dir.join(snap_file_name(
        snapshot.metadata.term,
        snapshot.metadata.index,
    ));
    create_snap_file(dir, &path, |file| {
        file.write_all(&bytes)
            .map_err(io_err(&path, "cannot write"))
    })?;
    Ok(path)
}

/// [`write_snap`] for a snapshot whose v2 store JSON is too large to hold in memory: `json`
/// streams it once and must write exactly `json_len` bytes (checked: a difference is an
/// error, the file is left incomplete for the caller to discard). The CRC is only known at
/// the end, so the fields come in the other order, data first and crc last (protobuf
/// readers, etcd's among them, take fields in any order). Same mode and fsyncs as
/// `write_snap`; writeback starts while the rest is still being written.
pub fn write_snap_sized(
    dir: &Path,
    metadata: &SnapshotMetadata,
    json_len: u64,
    json: &dyn Fn(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, SnapError> {
    use super::protowire::{put_bytes, put_uint, put_varint};
    let path = dir.join(snap_file_name(metadata.term, metadata.index));
    // raftpb.Snapshot = field 1 (the JSON: tag and length here, body streamed), field 2 metadata
    let mut head = Vec::new();
    put_varint(&mut head, (1 << 3) | 2);
    put_varint(&mut head, json_len);
    let mut tail = Vec::new();
    put_bytes(&mut tail, 2, &metadata.encode());
    // snappb.Snapshot = field 2 the raftpb.Snapshot bytes, then field 1 their crc
    let mut outer = Vec::new();
    put_varint(&mut outer, (2 << 3) | 2);
    put_varint(&mut outer, head.len() as u64 + json_len + tail.len() as u64);
    outer.extend_from_slice(&head);
    create_snap_file(dir, &path, |file| {
        // The crc covers what follows the outer tag and length: head, JSON, tail.
        let crc_from = (outer.len() - head.len()) as u64;
        let crc = on_writer_thread(file, &path, crc_from, &mut |w| {
            let write_err = || io_err(&path, "cannot write");
            w.write_all(&outer).map_err(write_err())?;
            json(w).map_err(write_err())?;
            let len = w.written - outer.len() as u64;
            if len != json_len {
                let e = format!("the snapshot data is {len} bytes, not the {json_len} announced");
                return Err(write_err()(io::Error::other(e)));
            }
            w.write_all(&tail).map_err(write_err())?;
            w.flush().map_err(write_err())
        })?;
        let mut crc_field = Vec::new();
        put_uint(&mut crc_field, 1, u64::from(crc));
        file.write_all(&crc_field)
            .map_err(io_err(&path, "cannot write"))
    })?;
    Ok(path)
}

/// Buffers handed from the producer to the writer thread.
const PIPE_BUFFER: usize = 1 << 20;

/// Runs `produce` with a writer whose bytes a second thread writes to `file` (in 1 MB
/// buffers, at most 4 in flight) and checksums from offset `crc_from` on: making the bytes
/// and writing them into the page cache then take two cores. Returns the CRC-32C. The
/// writer thread's error wins over the one the producer saw from it.
fn on_writer_thread(
    file: &mut File,
    path: &Path,
    crc_from: u64,
    produce: &mut dyn FnMut(&mut Pipe) -> Result<(), SnapError>,
) -> Result<u32, SnapError> {
    use std::sync::mpsc::{channel, sync_channel};
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty_rx) = channel::<Vec<u8>>();
        let writer = scope.spawn(move || -> io::Result<u32> {
            let mut out = WriteBack::new(file);
            let (mut crc, mut at) = (0u32, 0u64);
            for mut buf in full_rx {
                out.write_all(&buf)?;
                let skip = crc_from.saturating_sub(at).min(buf.len() as u64) as usize;
                crc = crc32c::crc32c_append(crc, &buf[skip..]);
                at += buf.len() as u64;
                buf.clear();
                let _ = empty_tx.send(buf); // the producer may be gone: then nobody needs it
            }
            Ok(crc)
        });
        let mut pipe = Pipe {
            buf: Vec::with_capacity(PIPE_BUFFER),
            written: 0,
            full: full_tx,
            empty: empty_rx,
        };
        let produced = produce(&mut pipe);
        drop(pipe); // ends the writer's loop
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        let crc = written.map_err(io_err(path, "cannot write"))?;
        produced.map(|()| crc)
    })
}

/// The producer's end of [`on_writer_thread`].
struct Pipe {
    buf: Vec<u8>,
    /// Bytes written so far.
    written: u64,
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl Pipe {
    fn send(&mut self) -> io::Result<()> {
        let next = (self.empty.try_recv()).unwrap_or_else(|_| Vec::with_capacity(PIPE_BUFFER));
        let full = std::mem::replace(&mut self.buf, next);
        (self.full.send(full)).map_err(|_| io::Error::other("the writer thread stopped"))
    }
}

impl Write for Pipe {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.len() + b.len() > PIPE_BUFFER && !self.buf.is_empty() {
            self.send()?;
        }
        self.buf.extend_from_slice(b);
        self.written += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// A file writer that starts the kernel's writeback every few MB (`sync_file_range`), so the
/// final fsync waits for the last stretch only, not for the whole file.
struct WriteBack<'f> {
    file: &'f mut File,
    written: u64,
    started: u64,
}

impl<'f> WriteBack<'f> {
    const EVERY: u64 = 8 << 20;

    fn new(file: &'f mut File) -> WriteBack<'f> {
        WriteBack {
            file,
            written: 0,
            started: 0,
        }
    }
}

impl Write for WriteBack<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.file.write(b)?;
        self.written += n as u64;
        if self.written - self.started >= Self::EVERY {
            use std::os::unix::io::AsRawFd;
            let (from, len) = (self.started as i64, (self.written - self.started) as i64);
            // SAFETY: a hint on our own descriptor; its failure only loses the overlap.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SnapError + 'a {
    move |source| SnapError::Io(IoError::new(op, path, source))
}

/// Creates `dir` (0700) if missing and `path` in it (new, 0644), lets `write` fill it, then
/// fsyncs the file and the directory.
fn create_snap_file(
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), SnapError>,
) -> Result<(), SnapError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir, "cannot create"))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err(path, "cannot create"))?;
    write(&mut file)?;
    file.sync_all().map_err(io_err(path, "cannot fsync"))?;
    drop(file);
    sync_dir(dir).map_err(io_err(dir, "cannot fsync"))
}

/// Checks every `*.snap` in `dir`: name, CRC, decoding, and that the metadata inside agrees
/// with the name. A file the OS will not read is an error, not a finding.
pub fn check(dir: &Path) -> Result<Vec<Finding>, IoError> {
    let files = list_snap_files(dir).map_err(|e| e.into_io(dir))?;
    let mut findings = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some((term, index)) = parse_snap_name(&name) else {
            findings.push(Finding::in_file(&path, "not a <term>-<index>.snap name"));
            continue;
        };
        match read_snap_file(&path) {
            Ok(s) => {
                if s.metadata.term != term || s.metadata.index != index {
                    findings.push(Finding::in_file(
                        &path,
                        format!(
                            "metadata says term {} index {}, the name says term {term} index {index}",
                            s.metadata.term, s.metadata.index
                        ),
                    ));
                }
            }
            Err(e) => findings.push(e.into_finding()?),
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_is_no_v2_store_is_damage_in_its_file() {
        let loaded = |data: &[u8]| LoadedSnapshot {
            path: "/d/member/snap/1-2.snap".into(),
            snapshot: RaftSnapshot {
                data: data.to_vec(),
                ..RaftSnapshot::default()
            },
        };
        let f = loaded(br#"{"Root":{"Path":"/"}}"#).store().unwrap_err();
        assert_eq!(
            f.to_string(),
            "/d/member/snap/1-2.snap: v2 store JSON: Root is not a directory"
        );
        assert_eq!(crate::error::HasKind::kind(&f), Kind::Corrupt);
        let store = loaded(br#"{"Root":{"Path":"/","Children":{}}}"#).store();
        assert!(store.unwrap().get("/1").is_some());
    }

    #[test]
    fn names() {
        assert_eq!(
            snap_file_name(2, 0x3f),
            "0000000000000002-000000000000003f.snap"
        );
        assert_eq!(
            parse_snap_name("0000000000000002-000000000000003f.snap"),
            Some((2, 0x3f))
        );
        assert_eq!(parse_snap_name("000000000000003f.snap.db"), None);
    }

    /// Random flips and truncations of a real etcd 3.4.23 `.snap`: a snapshot or an error,
    /// never a panic, also when its store is loaded (ported from rollback2's private reader).
    #[test]
    fn corrupted_copies_never_panic() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/snap/0000000000000002-0000000000000021.snap"
        );
        let orig = fs::read(src).unwrap();
        let path = Path::new("0000000000000002-0000000000000021.snap");
        let (mut ok, mut bad) = (0, 0);
        for b in super::super::damaged_copies(&orig, 0x1234_5678_9abc_def1, 4, 1000) {
            match decode_snap_bytes(path, &b) {
                Ok(s) => {
                    ok += 1;
                    let _ = super::super::v2store::Store::load(&s.data);
                }
                Err(_) => bad += 1,
            }
        }
        assert!(ok > 0 && bad > 0, "ok {ok} bad {bad}");
    }

    /// The sized writer's file reads back as the same snapshot, its data is `write_snap`'s,
    /// and a producer that writes another length than announced is caught.
    #[test]
    fn sized_write_reads_back_like_write_snap() {
        use super::super::proto::ConfState;
        let base = std::env::temp_dir().join(format!("snap-stream-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let json = b"{\"Root\":{\"Path\":\"/\"},\"CurrentIndex\":7}".repeat(500_000);
        let snapshot = RaftSnapshot {
            data: json.clone(),
            metadata: SnapshotMetadata {
                conf_state: ConfState {
                    voters: vec![1, 0x1177386ae0746d8e],
                    ..ConfState::default()
                },
                index: 100,
                term: 5,
            },
        };
        let a = write_snap(&base.join("a"), &snapshot).unwrap();
        let b = write_snap_sized(
            &base.join("b"),
            &snapshot.metadata,
            json.len() as u64,
            &|w| {
                // in pieces, as a serializer writes
                for chunk in json.chunks(1000) {
                    w.write_all(chunk)?;
                }
                Ok(())
            },
        )
        .unwrap();
        assert!(b.ends_with("0000000000000005-0000000000000064.snap"));
        let (a, b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert_eq!(a.len(), b.len());
        let (outer_a, outer_b) = (
            SnapFileMessage::decode(&a).unwrap(),
            SnapFileMessage::decode(&b).unwrap(),
        );
        assert_eq!(
            outer_a, outer_b,
            "same crc and data, fields in another order"
        );
        assert_eq!(decode_snap_bytes(Path::new("b"), &b).unwrap(), snapshot);
        let e = write_snap_sized(&base.join("c"), &snapshot.metadata, 2, &|w| {
            w.write_all(b"1")
        })
        .unwrap_err();
        assert!(e.to_string().contains("not the 2 announced"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }
}
