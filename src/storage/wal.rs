//! etcd's write-ahead log (`member/wal/*.wal`): the one decoder of it ([`WalReader`] for
//! records, [`read_all`] for the log as etcd's `ReadAll` sees it), the check ([`check`]: that
//! decoder run to the end, more strictly than etcd reads), and writing a new one (rollback).
//!
//! Frame: u64 little-endian length (low 56 bits; top byte `0x80|pad` when padded), the
//! `walpb.Record`, then `pad` zero bytes. The CRC-32C is chained over every record's `data`
//! across all segments; a crc record (type 4) carries the running value into a new segment.
//! A zero length field ends the segment (the preallocated zero tail).
//!
//! Where this differs from etcd's read mode, on purpose: a truncated segment that is *not* the
//! last one is an error (etcd silently stops reading there and would drop the later segments).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::proto::{
    Entry, HardState, RecordRef, WalMetadata, WalSnapshot, CRC_TYPE, ENTRY_TYPE, METADATA_TYPE,
    SNAPSHOT_TYPE, STATE_TYPE,
};
use super::Finding;
use crate::error::{HasKind, IoError, Kind};
use crate::fsutil::sync_dir;

/// etcd cuts a new segment once a segment reaches this size (decimal bytes, not MiB).
pub const SEGMENT_SIZE: u64 = 64 * 1000 * 1000;
/// Torn-write detection works on disk sectors of this size.
const SECTOR: u64 = 512;
const FRAME_HEADER: u64 = 8;
/// Every segment starts with a record (a crc record; the first also metadata and a snapshot).
const NO_FIRST_RECORD: &str =
    "no record at the start of the segment (zeroed or emptied): every segment starts with a crc record";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// No `*.wal` file in the directory (or none at or before the start index).
    #[error("{}: no WAL segment (*.wal) covering index {start_index}", dir.display())]
    NoSegments { dir: PathBuf, start_index: u64 },
    /// Segment sequence numbers are not consecutive.
    #[error("WAL segments are not consecutive: {} is followed by {}", before.display(), after.display())]
    SeqGap { before: PathBuf, after: PathBuf },
    /// Bad bytes at a place: framing, protobuf, CRC, record type, metadata conflict, gaps.
    #[error("WAL damaged at {}: {}", .0.place(), .0.problem)]
    Corrupt(Finding),
    /// The WAL has no snapshot record for the snapshot we start from.
    #[error("{}: no WAL snapshot record for snapshot index {index} term {term}", dir.display())]
    SnapshotNotFound { dir: PathBuf, index: u64, term: u64 },
    /// A new WAL cannot be created over an existing one.
    #[error("{}: a WAL already exists", .0.display())]
    Exists(PathBuf),
}

impl HasKind for WalError {
    fn kind(&self) -> Kind {
        match self {
            WalError::Io(_) => Kind::Io,
            WalError::Exists(_) => Kind::Refused,
            _ => Kind::Corrupt,
        }
    }
}

impl WalError {
    /// The damage as a finding (None for I/O and refusals).
    pub fn finding(&self) -> Option<Finding> {
        match self {
            WalError::Corrupt(f) => Some(f.clone()),
            WalError::NoSegments { dir, start_index } => Some(Finding::in_file(
                dir,
                format!("no WAL segment (*.wal) covering index {start_index}"),
            )),
            WalError::SnapshotNotFound { dir, index, term } => Some(Finding::in_file(
                dir,
                format!("no WAL snapshot record for snapshot index {index} term {term}"),
            )),
            WalError::SeqGap { before, after } => Some(Finding::in_file(
                after,
                format!("segment does not follow {}", before.display()),
            )),
            WalError::Io(_) | WalError::Exists(_) => None,
        }
    }

    /// The I/O error inside, for callers where nothing else can happen (writing, listing);
    /// anything else becomes one about `path`.
    pub fn into_io(self, path: &Path) -> IoError {
        match self {
            WalError::Io(e) => e,
            other => IoError::new("cannot use", path, io::Error::other(other.to_string())),
        }
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io(IoError::new(op, path, source))
}

fn corrupt(path: &Path, offset: u64, problem: impl Into<String>) -> WalError {
    WalError::Corrupt(Finding::at(path, offset, problem))
}

/// The type name etcd gives a record type.
pub fn record_type_name(t: i64) -> &'static str {
    match t {
        METADATA_TYPE => "metadata",
        ENTRY_TYPE => "entry",
        STATE_TYPE => "hardstate",
        CRC_TYPE => "crc",
        SNAPSHOT_TYPE => "snapshot",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Segments

/// One `<seq>-<index>.wal` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub seq: u64,
    /// The index the first entry in this segment is expected to have.
    pub index: u64,
    pub size: u64,
}

/// `%016x-%016x.wal`.
pub fn segment_file_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

/// Parses a segment name the way etcd does (`fmt.Sscanf("%016x-%016x.wal")`), strictly.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    super::parse_hex_pair_name(name, ".wal")
}

/// The segments in `dir`, sorted by name. `*.tmp` and other files are ignored, as etcd does.
pub fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut segments = Vec::new();
    for dirent in fs::read_dir(dir).map_err(io_err(dir, "cannot list"))? {
        let dirent = dirent.map_err(io_err(dir, "cannot list"))?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((seq, index)) = parse_segment_name(name) else {
            continue;
        };
        let path = dirent.path();
        let meta = fs::metadata(&path).map_err(io_err(&path, "cannot stat"))?;
        if !meta.is_file() {
            continue;
        }
        segments.push(Segment {
            path,
            seq,
            index,
            size: meta.len(),
        });
    }
    segments.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    Ok(segments)
}

/// Segments to read for a start index: the last one whose name index is <= `index`, and all
/// after it (etcd's `searchIndex`), with consecutive sequence numbers.
pub fn segments_from(dir: &Path, index: u64) -> Result<Vec<Segment>, WalError> {
    let all = list_segments(dir)?;
    let start = all
        .iter()
        .rposition(|s| s.index <= index)
        .ok_or(WalError::NoSegments {
            dir: dir.to_path_buf(),
            start_index: index,
        })?;
    let chosen = all[start..].to_vec();
    check_consecutive(&chosen)?;
    Ok(chosen)
}

/// Every segment, from the first: at least one, with consecutive sequence numbers.
fn all_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let segments = list_segments(dir)?;
    if segments.is_empty() {
        return Err(WalError::NoSegments {
            dir: dir.to_path_buf(),
            start_index: 0,
        });
    }
    check_consecutive(&segments)?;
    Ok(segments)
}

fn check_consecutive(segments: &[Segment]) -> Result<(), WalError> {
    for pair in segments.windows(2) {
        if pair[0].seq.checked_add(1) != Some(pair[1].seq) {
            return Err(WalError::SeqGap {
                before: pair[0].path.clone(),
                after: pair[1].path.clone(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Frames of one file

/// What the scanner found at the current position of one segment file.
enum Frame {
    /// A complete frame: its body is `rec_len` record bytes followed by `pad` zero bytes.
    Record {
        offset: u64,
        rec_len: usize,
        body: Vec<u8>,
    },
    /// A zero length field (preallocated area) or the exact end of the file.
    End { offset: u64, zero_marker: bool },
    /// The file ends inside a length field or a frame body.
    Truncated { offset: u64, problem: String },
}

struct FrameScanner {
    path: PathBuf,
    reader: BufReader<File>,
    size: u64,
    offset: u64,
}

impl FrameScanner {
    fn open(path: &Path) -> Result<FrameScanner, WalError> {
        let mut file = File::open(path).map_err(io_err(path, "cannot open"))?;
        let size = file.metadata().map_err(io_err(path, "cannot stat"))?.len();
        if has_hole(&mut file, size).map_err(io_err(path, "cannot seek in"))? {
            // Kernel readahead would pull the preallocated tail into the page cache, where
            // SEEK_DATA counts it as data: the tail scan would then read all of it, and so
            // would every later reader. Must be set before the first read; advice only.
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on a descriptor we own.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        }
        Ok(FrameScanner {
            path: path.to_path_buf(),
            // Small files (tests, fuzzing, 2.x WALs) get a small buffer.
            reader: BufReader::with_capacity(size.clamp(64, 256 * 1024) as usize, file),
            size,
            offset: 0,
        })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), WalError> {
        self.reader
            .read_exact(buf)
            .map_err(io_err(&self.path, "cannot read"))
    }

    fn next_frame(&mut self) -> Result<Frame, WalError> {
        let offset = self.offset;
        let remaining = self.size - offset;
        if remaining == 0 {
            return Ok(Frame::End {
                offset,
                zero_marker: false,
            });
        }
        if remaining < FRAME_HEADER {
            return Ok(Frame::Truncated {
                offset,
                problem: format!("file ends inside a frame length ({remaining} of 8 bytes)"),
            });
        }
        let mut len = [0u8; 8];
        self.read_exact(&mut len)?;
        let raw = u64::from_le_bytes(len);
        if raw == 0 {
            return Ok(Frame::End {
                offset,
                zero_marker: true,
            });
        }
        let rec_len = raw & 0x00ff_ffff_ffff_ffff;
        // Padding only counts when the top bit says so (the length is negative as an i64).
        let pad = if (raw as i64) < 0 { (raw >> 56) & 7 } else { 0 };
        let body_len = rec_len + pad;
        let left = remaining - FRAME_HEADER;
        if body_len > left {
            return Ok(Frame::Truncated {
                offset,
                problem: format!(
                    "frame of {rec_len} bytes (+{pad} padding) but only {left} bytes remain in the file"
                ),
            });
        }
        // Bounded by the file size checked above.
        let mut body = vec![0u8; body_len as usize];
        self.read_exact(&mut body)?;
        self.offset = offset + FRAME_HEADER + body_len;
        Ok(Frame::Record {
            offset,
            rec_len: rec_len as usize,
            body,
        })
    }

    /// After a zero length marker: the offset of the first non-zero byte after it, if any.
    /// Ends this scanner's use of the file. This scans etcd's preallocated tail (up to 64 MB
    /// per segment), so: holes (`SEEK_DATA`/`SEEK_HOLE`; etcd's fallocated tail is one until
    /// something reads it) read as zeros and are skipped unread; data is read in 1 MiB pieces
    /// and tested a block at a time (see [`first_nonzero`]).
    fn nonzero_after(&mut self, marker: u64) -> Result<Option<u64>, WalError> {
        use std::io::BufRead;
        use std::os::unix::fs::FileExt;
        let mut pos = marker + FRAME_HEADER;
        // What the BufReader already holds starts right after the marker.
        let held = self.reader.buffer();
        if let Some(i) = first_nonzero(held) {
            return Ok(Some(pos + i as u64));
        }
        pos += held.len() as u64;
        let held = held.len();
        self.reader.consume(held);
        let file = self.reader.get_ref();
        let mut buf = Vec::new();
        while pos < self.size {
            let Some((start, end)) = data_region(file, pos, self.size) else {
                return Ok(None);
            };
            pos = start;
            while pos < end {
                let want = (end - pos).min(ZERO_SCAN_READ) as usize;
                buf.resize(want, 0);
                let n = file
                    .read_at(&mut buf, pos)
                    .map_err(io_err(&self.path, "cannot read"))?;
                if n == 0 {
                    return Ok(None); // the file shrank under us
                }
                if let Some(i) = first_nonzero(&buf[..n]) {
                    return Ok(Some(pos + i as u64));
                }
                pos += n as u64;
            }
        }
        Ok(None)
    }
}

/// Whether the file has a hole (etcd's fallocated tail, as ext4 and xfs report it) before
/// its end. Leaves the file offset at 0.
fn has_hole(file: &mut File, size: u64) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a descriptor we own; the offset is put back below.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE) };
    file.seek(SeekFrom::Start(0))?;
    Ok(hole >= 0 && (hole as u64) < size)
}

/// Read size of the zero-tail scan.
const ZERO_SCAN_READ: u64 = 1 << 20;

/// The next region at or after `pos` that may hold data, as `[start, end)` within `size`;
/// `None` when only holes remain. Without `SEEK_DATA` support (or on any error) everything
/// from `pos` counts as data, so the result never depends on it, only the speed.
fn data_region(file: &File, pos: u64, size: u64) -> Option<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let Ok(at) = libc::off_t::try_from(pos) else {
        return Some((pos, size));
    };
    // SAFETY: lseek on a file descriptor we own; it only moves the file offset, and every read
    // here is positional (pread).
    let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
    if start < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => None, // no data at or after `pos`
            _ => Some((pos, size)),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    let start = (start as u64).max(pos);
    let end = if end < 0 {
        size
    } else {
        (end as u64).min(size)
    };
    if start >= size {
        return None;
    }
    Some((start, end.max(start)))
}

/// The index of the first non-zero byte. Whole 64-byte pieces are ORed as eight u64 (release
/// builds optimise for size, so a byte loop would not be vectorised); only a piece with a
/// non-zero byte is searched byte by byte.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut pieces = bytes.chunks_exact(64);
    for (k, piece) in pieces.by_ref().enumerate() {
        let mut acc = 0u64;
        for word in piece.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            acc |= u64::from_ne_bytes(w);
        }
        if acc != 0 {
            return piece.iter().position(|&b| b != 0).map(|i| k * 64 + i);
        }
    }
    let done = bytes.len() - pieces.remainder().len();
    pieces
        .remainder()
        .iter()
        .position(|&b| b != 0)
        .map(|i| done + i)
}

/// etcd's torn-write test: is any 512-byte sector of the frame body entirely zero?
fn looks_torn(body: &[u8], frame_offset: u64) -> bool {
    let mut file_off = frame_offset + FRAME_HEADER;
    let mut rest = body;
    while !rest.is_empty() {
        let to_boundary = (SECTOR - file_off % SECTOR) as usize;
        let n = to_boundary.min(rest.len());
        if rest[..n].iter().all(|&b| b == 0) {
            return true;
        }
        rest = &rest[n..];
        file_off += n as u64;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Records across segments

/// One record as read, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Index into [`WalReader::segments`].
    pub segment: usize,
    /// Byte offset of the frame in its segment file.
    pub offset: u64,
    pub rec_type: i64,
    pub crc: u32,
    pub data: Option<Vec<u8>>,
}

/// How the last segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalTail {
    /// Records end cleanly at `offset` (end of file, or zeros from there on).
    Clean { file: PathBuf, offset: u64 },
    /// A torn (partially written) last record at `offset`: etcd's read mode stops there and its
    /// server start truncates the file there (keeping a `.broken` copy). Nothing after it is read.
    Torn {
        file: PathBuf,
        offset: u64,
        problem: String,
    },
}

impl WalTail {
    pub fn is_torn(&self) -> bool {
        matches!(self, WalTail::Torn { .. })
    }
}

/// Streams the records of a list of segments as one log, checking framing and the CRC chain.
///
/// One corruption policy, two modes: a reader ([`WalReader::over`]) stops at the first damage
/// (a torn last record ends the log, as in etcd's read mode); a checker
/// ([`WalReader::checking`]) records each damage as a finding, resynchronises (the next
/// segment, or the CRC re-seeded from the record) and reads on to the end, looking also at
/// what etcd ignores (frame padding, bytes after the end marker, segment starts).
pub struct WalReader {
    segments: Vec<Segment>,
    current: usize,
    scanner: Option<FrameScanner>,
    /// No record read yet from the current segment.
    segment_start: bool,
    crc: u32,
    tail: Option<WalTail>,
    /// `Some` in checking mode: the damage found so far.
    findings: Option<Vec<Finding>>,
}

impl WalReader {
    /// Reads from the segment holding `start_index` (see [`segments_from`]) to the end.
    pub fn open(dir: &Path, start_index: u64) -> Result<WalReader, WalError> {
        Ok(WalReader::over(segments_from(dir, start_index)?))
    }

    /// Reads the given segments (consecutive, in order).
    pub fn over(segments: Vec<Segment>) -> WalReader {
        WalReader {
            segments,
            current: 0,
            scanner: None,
            segment_start: true,
            crc: 0,
            tail: None,
            findings: None,
        }
    }

    /// Reads every given segment to the end, collecting damage instead of stopping at it
    /// (see [`WalReader::findings`]); non-consecutive sequence numbers are the first finding.
    pub fn checking(segments: Vec<Segment>) -> WalReader {
        let mut findings = Vec::new();
        if let Err(e) = check_consecutive(&segments) {
            findings.extend(e.finding());
        }
        WalReader {
            findings: Some(findings),
            ..WalReader::over(segments)
        }
    }

    /// The damage found so far (checking mode; empty for a reader, which stops at damage).
    pub fn findings(&self) -> &[Finding] {
        self.findings.as_deref().unwrap_or_default()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Set once `next_record` returned `Ok(None)`.
    pub fn tail(&self) -> Option<&WalTail> {
        self.tail.as_ref()
    }

    /// The running CRC after the last record read.
    pub fn crc(&self) -> u32 {
        self.crc
    }

    /// Damage at a place: the error that stops a reader, or (checking) a finding, `Ok`.
    fn damage(&mut self, e: WalError) -> Result<(), WalError> {
        match (&mut self.findings, e.finding()) {
            (Some(findings), Some(f)) => {
                findings.push(f);
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Ends the current segment: the next one is read from its start.
    fn next_segment(&mut self) {
        self.current += 1;
        self.scanner = None;
        self.segment_start = true;
    }

    /// The next record, `Ok(None)` at the end (see [`WalReader::tail`]).
    pub fn next_record(&mut self) -> Result<Option<WalRecord>, WalError> {
        loop {
            if self.tail.is_some() || self.current >= self.segments.len() {
                return Ok(None);
            }
            if self.scanner.is_none() {
                self.scanner = Some(FrameScanner::open(&self.segments[self.current].path)?);
            }
            let last = self.current + 1 == self.segments.len();
            let Some(scanner) = self.scanner.as_mut() else {
                continue;
            };
            let path = scanner.path.clone();
            match scanner.next_frame()? {
                Frame::End {
                    offset,
                    zero_marker,
                } => self.end(path, offset, zero_marker, last)?,
                Frame::Truncated { offset, problem } => {
                    self.truncated(path, offset, problem, last)?
                }
                Frame::Record {
                    offset,
                    rec_len,
                    body,
                } => {
                    if let Some(rec) = self.record(path, offset, rec_len, &body, last)? {
                        return Ok(Some(rec));
                    }
                }
            }
        }
    }

    /// The end of a segment's records: the end of the log in the last one. Every segment
    /// starts with a record; (checking) bytes after the zero marker are records etcd ignores.
    fn end(
        &mut self,
        path: PathBuf,
        offset: u64,
        marker: bool,
        last: bool,
    ) -> Result<(), WalError> {
        if offset == 0 {
            self.damage(corrupt(&path, 0, NO_FIRST_RECORD))?;
        } else if marker && self.findings.is_some() {
            let after = self.scanner.as_mut().map(|s| s.nonzero_after(offset));
            if let Some(Some(at)) = after.transpose()? {
                let problem = format!("non-zero bytes after the end-of-records marker at offset {offset}: records there are ignored by etcd");
                self.damage(corrupt(&path, at, problem))?;
            }
        }
        if last {
            self.tail = Some(WalTail::Clean { file: path, offset });
        } else {
            self.next_segment();
        }
        Ok(())
    }

    /// A segment that ends inside a frame: a torn last record ends the log (etcd truncates it
    /// there on start); in an earlier segment it is damage.
    fn truncated(
        &mut self,
        path: PathBuf,
        offset: u64,
        problem: String,
        last: bool,
    ) -> Result<(), WalError> {
        self.crc = 0;
        if !last {
            let problem = format!("truncated segment (not the last one): {problem}");
            self.damage(corrupt(&path, offset, problem))?;
            self.next_segment();
            return Ok(());
        }
        if self.findings.is_some() {
            let what = "torn last record (etcd truncates the WAL here on start)";
            self.damage(corrupt(&path, offset, format!("{what}: {problem}")))?;
        }
        self.tail = Some(WalTail::Torn {
            file: path,
            offset,
            problem,
        });
        Ok(())
    }

    /// One framed record: decoded and chained into the running CRC. A bad last record that
    /// looks torn ends the log there (etcd's read mode); anything else is damage. `None`:
    /// no record to hand out (checking: the rest of the segment is unreadable).
    fn record(
        &mut self,
        path: PathBuf,
        offset: u64,
        rec_len: usize,
        body: &[u8],
        last: bool,
    ) -> Result<Option<WalRecord>, WalError> {
        let first = std::mem::replace(&mut self.segment_start, false);
        if self.findings.is_some() && body[rec_len..].iter().any(|&b| b != 0) {
            let problem = "non-zero frame padding (etcd writes zeros; the CRC does not cover it)";
            self.damage(corrupt(&path, offset, problem))?;
        }
        let torn = last && looks_torn(body, offset);
        let rec = match RecordRef::decode(&body[..rec_len]) {
            Ok(r) => r,
            Err(e) => {
                let problem = format!("undecodable WAL record: {e}");
                self.bad_record(path, offset, torn, problem)?;
                self.crc = 0;
                self.next_segment();
                return Ok(None);
            }
        };
        if first && self.current > 0 && rec.rec_type != CRC_TYPE && self.findings.is_some() {
            let problem = "segment does not start with a crc record";
            self.damage(corrupt(&path, offset, problem))?;
        }
        if rec.rec_type == CRC_TYPE {
            if self.crc != 0 && rec.crc != self.crc {
                let problem = format!(
                    "crc record holds {:#010x} but the running CRC is {:#010x} (records lost or changed before it)",
                    rec.crc, self.crc
                );
                self.damage(corrupt(&path, offset, problem))?;
            }
        } else {
            let next = crc32c::crc32c_append(self.crc, rec.data.unwrap_or(&[]));
            if rec.crc != next {
                let problem = format!(
                    "CRC mismatch: record says {:#010x}, computed {next:#010x}",
                    rec.crc
                );
                if !self.bad_record(path, offset, torn, problem)? {
                    return Ok(None);
                }
            }
        }
        // Checking re-seeds from the record, so one bad record gives one finding.
        self.crc = rec.crc;
        Ok(Some(WalRecord {
            segment: self.current,
            offset,
            rec_type: rec.rec_type,
            crc: rec.crc,
            data: rec.data.map(<[u8]>::to_vec),
        }))
    }

    /// A record that cannot be trusted: in a reader, a torn last record ends the log
    /// (`Ok(false)`), anything else is an error; checking notes it (`Ok(true)`: read on).
    fn bad_record(
        &mut self,
        file: PathBuf,
        offset: u64,
        torn: bool,
        problem: String,
    ) -> Result<bool, WalError> {
        if self.findings.is_some() {
            let torn = if torn {
                " (torn write: a zero sector)"
            } else {
                ""
            };
            self.damage(corrupt(&file, offset, format!("{problem}{torn}")))?;
            return Ok(true);
        }
        if !torn {
            return Err(corrupt(&file, offset, problem));
        }
        self.tail = Some(WalTail::Torn {
            file,
            offset,
            problem,
        });
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the log like etcd's ReadAll

/// What a WAL holds after a snapshot: etcd's `ReadAll` result, plus where it ended. `E` is
/// what is kept per entry: the [`Entry`] itself, or a summary (see [`read_all_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalContents<E = Entry> {
    pub metadata: Option<WalMetadata>,
    /// The raw metadata record data (etcd compares it byte for byte across segments).
    pub metadata_bytes: Option<Vec<u8>>,
    pub hard_state: Option<HardState>,
    /// Entries after the start snapshot, raft overwrites applied.
    pub entries: Vec<E>,
    /// Every snapshot record read, in order.
    pub snapshots: Vec<WalSnapshot>,
    /// Index of the last entry (the start index when there is none).
    pub last_index: u64,
    /// Term of the last entry, if any entry was read.
    pub last_entry_term: Option<u64>,
    pub tail: WalTail,
    pub segments: Vec<Segment>,
}

impl<E> WalContents<E> {
    /// Term of the last entry, if any entry was read.
    pub fn last_term(&self) -> Option<u64> {
        self.last_entry_term
    }
}

fn decode_at<T>(
    reader: &WalReader,
    rec: &WalRecord,
    f: impl FnOnce(&[u8]) -> Result<T, super::protowire::WireError>,
) -> Result<T, WalError> {
    let path = &reader.segments()[rec.segment].path;
    f(rec.data.as_deref().unwrap_or(&[])).map_err(|e| {
        corrupt(
            path,
            rec.offset,
            format!("bad {} record data: {e}", record_type_name(rec.rec_type)),
        )
    })
}

/// Reads the WAL in `dir` from snapshot `start` (index, term; `(0, 0)` without a snapshot),
/// as etcd does on start in read mode. A torn last record is reported in `tail`, not an error.
pub fn read_all(dir: &Path, start: &WalSnapshot) -> Result<WalContents, WalError> {
    read_all_with(dir, start, |e| e)
}

/// [`read_all`], keeping `keep(entry)` instead of each entry: memory stays small when only a
/// summary is needed (e.g. `etcd-inspect wal` on a WAL of large values).
pub fn read_all_with<E>(
    dir: &Path,
    start: &WalSnapshot,
    keep: impl FnMut(Entry) -> E,
) -> Result<WalContents<E>, WalError> {
    read_with(
        dir,
        &mut WalReader::open(dir, start.index)?,
        Some(start),
        keep,
    )
}

/// The whole WAL, every segment from the first, in one pass: entries from the first one on
/// (raft overwrites applied, `keep(entry)` kept for each), every snapshot record, the last
/// HardState. No start snapshot is needed; [`WalContents::last_index`] is 0 without entries.
/// For a tool that must see everything once (rollback: the snapshot records that confirm a
/// `.snap`, the v3 writes a lagging db lacks, the membership changes), keeping only summaries.
pub fn read_whole_with<E>(
    dir: &Path,
    keep: impl FnMut(Entry) -> E,
) -> Result<WalContents<E>, WalError> {
    read_with(dir, &mut WalReader::over(all_segments(dir)?), None, keep)
}

/// The first metadata record is kept; a later one must be the same bytes (etcd compares them).
fn keep_metadata<E>(
    out: &mut WalContents<E>,
    reader: &WalReader,
    rec: &WalRecord,
) -> Result<(), WalError> {
    let data = rec.data.clone().unwrap_or_default();
    match &out.metadata_bytes {
        Some(prev) if *prev != data => Err(corrupt(
            &reader.segments()[rec.segment].path,
            rec.offset,
            "metadata record differs from the earlier one (metadata conflict)",
        )),
        Some(_) => Ok(()),
        None => {
            out.metadata = Some(decode_at(reader, rec, WalMetadata::decode)?);
            out.metadata_bytes = Some(data);
            Ok(())
        }
    }
}

/// Reads records like etcd's `ReadAll`: from snapshot `start`, or (None) from the first entry.
/// A checking reader ([`WalReader::checking`]) gets the damage noted and the log read on.
fn read_with<E>(
    dir: &Path,
    reader: &mut WalReader,
    start: Option<&WalSnapshot>,
    mut keep: impl FnMut(Entry) -> E,
) -> Result<WalContents<E>, WalError> {
    let mut log = Log::new(dir, reader, start);
    while let Some(rec) = reader.next_record()? {
        if let Err(e) = log.record(reader, &rec, &mut keep) {
            reader.damage(e)?;
        }
    }
    log.finish(dir, reader)
}

/// [`read_with`]'s state: the contents so far and where the log starts.
struct Log<E> {
    out: WalContents<E>,
    start: WalSnapshot,
    /// Whole WAL: the log starts where its first entry (checking: snapshot record) says.
    whole: bool,
    based: bool,
    /// Terms of the kept entries, to know the last term after raft overwrites.
    terms: Vec<u64>,
    /// A snapshot record for `start` was read.
    matched: bool,
    /// Where the last HardState is (checking: a commit the WAL does not hold is named there).
    hard_state_at: Option<(PathBuf, u64)>,
}

impl<E> Log<E> {
    fn new(dir: &Path, reader: &WalReader, start: Option<&WalSnapshot>) -> Log<E> {
        let whole = start.is_none();
        let start = start.cloned().unwrap_or(WalSnapshot::new(0, 0));
        let out = WalContents {
            metadata: None,
            metadata_bytes: None,
            hard_state: None,
            entries: Vec::new(),
            snapshots: Vec::new(),
            last_index: start.index,
            last_entry_term: None,
            tail: WalTail::Clean {
                file: dir.to_path_buf(),
                offset: 0,
            },
            segments: reader.segments().to_vec(),
        };
        Log {
            out,
            start,
            whole,
            based: !whole,
            terms: Vec::new(),
            matched: false,
            hard_state_at: None,
        }
    }

    /// One record's content, given the records before it.
    fn record(
        &mut self,
        reader: &mut WalReader,
        rec: &WalRecord,
        keep: &mut impl FnMut(Entry) -> E,
    ) -> Result<(), WalError> {
        let path = &reader.segments()[rec.segment].path;
        match rec.rec_type {
            ENTRY_TYPE => {
                let e = decode_at(reader, rec, Entry::decode)?;
                self.entry(reader, rec, e, keep)?;
            }
            STATE_TYPE => {
                self.out.hard_state = Some(decode_at(reader, rec, HardState::decode)?);
                self.hard_state_at = Some((path.clone(), rec.offset));
            }
            METADATA_TYPE => keep_metadata(&mut self.out, reader, rec)?,
            CRC_TYPE => {}
            SNAPSHOT_TYPE => {
                let s = decode_at(reader, rec, WalSnapshot::decode)?;
                self.snapshot(path, rec.offset, reader.findings.is_some(), s)?;
            }
            t => {
                let problem = format!("unexpected record type {t}");
                return Err(corrupt(path, rec.offset, problem));
            }
        }
        Ok(())
    }

    /// An entry in its place: it may overwrite the tail of the log (raft), never leave a gap
    /// (checking: the gap is noted and the log goes on from the entry).
    fn entry(
        &mut self,
        reader: &mut WalReader,
        rec: &WalRecord,
        e: Entry,
        keep: &mut impl FnMut(Entry) -> E,
    ) -> Result<(), WalError> {
        if !self.based {
            self.start.index = e.index.saturating_sub(1);
            self.based = true;
        }
        if e.index <= self.start.index {
            return Ok(());
        }
        let last = self.start.index + self.out.entries.len() as u64;
        if e.index > last + 1 {
            let path = &reader.segments()[rec.segment].path;
            let problem = format!(
                "entry index {} leaves a gap: the last entry before it is {last}",
                e.index
            );
            reader.damage(corrupt(path, rec.offset, problem))?;
            self.start.index = e.index - 1 - self.out.entries.len() as u64;
        }
        let up = (e.index - self.start.index - 1) as usize;
        self.out.entries.truncate(up);
        self.terms.truncate(up);
        self.out.last_index = e.index;
        self.terms.push(e.term);
        self.out.entries.push(keep(e));
        Ok(())
    }

    /// A snapshot record: the one for `start` must have its term. Checking a whole WAL, one
    /// before any entry is where the log starts (entries after it must follow it).
    fn snapshot(
        &mut self,
        path: &Path,
        offset: u64,
        checking: bool,
        s: WalSnapshot,
    ) -> Result<(), WalError> {
        if checking && !self.based && s.index > 0 {
            self.start.index = s.index;
            self.out.last_index = s.index;
            self.based = true;
        } else if !self.whole && s.index == self.start.index {
            if s.term != self.start.term {
                let problem = format!(
                    "snapshot record index {} has term {}, expected {} (snapshot mismatch)",
                    s.index, s.term, self.start.term
                );
                return Err(corrupt(path, offset, problem));
            }
            self.matched = true;
        }
        self.out.snapshots.push(s);
        Ok(())
    }

    /// The contents, once the reader is at the end. Checking: a HardState commit beyond the
    /// log (and its snapshots) means committed entries are missing.
    fn finish(mut self, dir: &Path, reader: &mut WalReader) -> Result<WalContents<E>, WalError> {
        if let Some(tail) = reader.tail() {
            self.out.tail = tail.clone();
        }
        self.out.last_entry_term = self.terms.last().copied();
        if !self.matched && !self.whole {
            return Err(WalError::SnapshotNotFound {
                dir: dir.to_path_buf(),
                index: self.start.index,
                term: self.start.term,
            });
        }
        if let (true, Some(hs), Some((path, offset))) = (
            reader.findings.is_some(),
            self.out.hard_state,
            &self.hard_state_at,
        ) {
            let snap = self.out.snapshots.iter().map(|s| s.index).max();
            let have = self.out.last_index.max(snap.unwrap_or(0));
            if hs.commit > have {
                let problem = format!("HardState commit {} but the WAL ends at index {have}: committed entries are missing", hs.commit);
                reader.damage(corrupt(path, *offset, problem))?;
            }
        }
        Ok(self.out)
    }
}

/// etcd's `ValidSnapshotEntries`: the snapshot records of the whole WAL that the last HardState
/// covers (index <= commit). etcd only loads a `.snap` file matching one of these.
pub fn valid_snapshots(dir: &Path) -> Result<Vec<WalSnapshot>, WalError> {
    let mut reader = WalReader::over(all_segments(dir)?);
    let mut snaps = Vec::new();
    let mut state = HardState::default();
    while let Some(rec) = reader.next_record()? {
        match rec.rec_type {
            SNAPSHOT_TYPE => snaps.push(decode_at(&reader, &rec, WalSnapshot::decode)?),
            STATE_TYPE => state = decode_at(&reader, &rec, HardState::decode)?,
            _ => {}
        }
    }
    Ok(super::member::valid_snapshots(&snaps, state.commit))
}

// ---------------------------------------------------------------------------------------------
// Checking

/// Integrity check of every segment in `dir`, from the first: the WAL decoder
/// ([`WalReader::checking`], [`read_whole_with`]'s log) run to the end, collecting damage
/// instead of stopping at it: names and sequence, framing, CRC chain, record decoding,
/// metadata agreement, entry continuity, bytes after the end marker, a torn tail, and a
/// HardState commit beyond the last entry. Only I/O ends it.
pub fn check(dir: &Path) -> Result<Vec<Finding>, IoError> {
    let segments = list_segments(dir).map_err(|e| e.into_io(dir))?;
    if segments.is_empty() {
        return Ok(vec![Finding::in_file(dir, "no WAL segment (*.wal)")]);
    }
    let mut reader = WalReader::checking(segments);
    let read = read_with(dir, &mut reader, None, drop);
    let mut findings = reader.findings.take().unwrap_or_default();
    match read {
        Ok(_) => {}
        Err(WalError::Io(e)) => return Err(e),
        Err(e) => findings.extend(e.finding()),
    }
    Ok(findings)
}

/// Does another process hold a write lock on `path`? A running etcd 3.x holds an OFD lock on
/// its WAL segments (flock as a fallback, and 2.x uses flock), so this tells whether the WAL
/// may change while it is read. Errors count as "not locked".
pub fn is_locked(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = File::open(path) else {
        return false;
    };
    let fd = file.as_raw_fd();
    // SAFETY: `flock` is a plain C struct; zeroed is a valid value for it.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fd is open for the duration of the call and `lock` is a valid flock.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut lock) };
    if r == 0 && lock.l_type != libc::F_UNLCK as libc::c_short {
        return true;
    }
    // flock locks are invisible to fcntl: probe with a shared, non-blocking flock.
    // SAFETY: plain syscall on an open fd.
    let r = unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) };
    if r != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
    }
    // SAFETY: releases the lock just taken.
    unsafe { libc::flock(fd, libc::LOCK_UN) };
    false
}

// ---------------------------------------------------------------------------------------------
// Writing

/// How frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStyle {
    /// No padding: readable by etcd 2.3.7 and by 3.x (what rollback writes).
    Unpadded,
    /// 8-byte aligned with the padding marker, as etcd 3.x writes.
    Padded,
}

/// Writes a new single-segment WAL. Nothing is durable until [`WalWriter::finish`].
pub struct WalWriter {
    dir: PathBuf,
    path: PathBuf,
    file: io::BufWriter<File>,
    crc: u32,
    offset: u64,
    style: FrameStyle,
}

impl WalWriter {
    /// Creates `dir` (mode 0700) if needed and `0000000000000000-0000000000000000.wal` (0600)
    /// in it, then writes what etcd's `wal.Create` writes: a crc record (0), the metadata and an
    /// empty snapshot record {0, 0}. Refuses a dir that already has a `*.wal`.
    pub fn create(
        dir: &Path,
        metadata: &WalMetadata,
        style: FrameStyle,
    ) -> Result<WalWriter, WalError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if dir.exists() {
            if !list_segments(dir)?.is_empty() {
                return Err(WalError::Exists(dir.to_path_buf()));
            }
        } else {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir, "cannot create"))?;
        }
        let path = dir.join(segment_file_name(0, 0));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path, "cannot create"))?;
        let mut w = WalWriter {
            dir: dir.to_path_buf(),
            path,
            file: io::BufWriter::with_capacity(1 << 16, file),
            crc: 0,
            offset: 0,
            style,
        };
        w.write_record(CRC_TYPE, None)?;
        w.write_record(METADATA_TYPE, Some(&metadata.encode()))?;
        w.save_snapshot(&WalSnapshot::new(0, 0))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record; the CRC chain covers `data`.
    pub fn write_record(&mut self, rec_type: i64, data: Option<&[u8]>) -> Result<(), WalError> {
        if rec_type == CRC_TYPE {
            // A crc record carries the running value and does not change it.
        } else {
            self.crc = crc32c::crc32c_append(self.crc, data.unwrap_or(&[]));
        }
        let rec = RecordRef {
            rec_type,
            crc: self.crc,
            data,
        }
        .encode();
        let len = rec.len() as u64;
        let (len_field, pad) = match self.style {
            FrameStyle::Unpadded => (len, 0),
            FrameStyle::Padded => {
                let pad = (8 - len % 8) % 8;
                if pad > 0 {
                    (len | ((0x80 | pad) << 56), pad)
                } else {
                    (len, 0)
                }
            }
        };
        let path = self.path.clone();
        self.file
            .write_all(&len_field.to_le_bytes())
            .and_then(|_| self.file.write_all(&rec))
            .and_then(|_| self.file.write_all(&[0u8; 8][..pad as usize]))
            .map_err(io_err(&path, "cannot write"))?;
        self.offset += 8 + len + pad;
        Ok(())
    }

    pub fn save_snapshot(&mut self, s: &WalSnapshot) -> Result<(), WalError> {
        self.write_record(SNAPSHOT_TYPE, Some(&s.encode()))
    }

    pub fn save_hard_state(&mut self, h: &HardState) -> Result<(), WalError> {
        self.write_record(STATE_TYPE, Some(&h.encode()))
    }

    pub fn save_entry(&mut self, e: &Entry) -> Result<(), WalError> {
        self.write_record(ENTRY_TYPE, Some(&e.encode()))
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Flushes, fsyncs the file and the directory (and its parent, which got a new entry if
    /// the directory was created). Returns the segment path.
    pub fn finish(self) -> Result<PathBuf, WalError> {
        let WalWriter {
            dir, path, file, ..
        } = self;
        let file = file
            .into_inner()
            .map_err(|e| io_err(&path, "cannot write")(e.into_error()))?;
        file.sync_all().map_err(io_err(&path, "cannot fsync"))?;
        drop(file);
        sync_dir(&dir).map_err(io_err(&dir, "cannot fsync"))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(io_err(parent, "cannot fsync"))?;
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonzero_finds_the_exact_byte() {
        assert_eq!(first_nonzero(&[]), None);
        for len in [1, 7, 63, 64, 65, 4095, 4096, 4097, 3 * 4096 + 5] {
            let mut b = vec![0u8; len];
            assert_eq!(first_nonzero(&b), None, "{len}");
            for at in [0, len / 2, len - 1] {
                b.fill(0);
                b[at] = 0x80;
                if at + 1 < len {
                    b[len - 1] = 1; // a later non-zero byte must not win
                }
                assert_eq!(first_nonzero(&b), Some(at), "{len} {at}");
            }
        }
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(
            parse_segment_name("0000000000000001-0000000000000045.wal"),
            Some((1, 0x45))
        );
        assert_eq!(parse_segment_name("0.tmp"), None);
        assert_eq!(parse_segment_name("1-45.wal"), None);
        assert_eq!(
            parse_segment_name("0000000000000001-0000000000000045.wal.broken"),
            None
        );
        assert_eq!(
            segment_file_name(1, 0x45),
            "0000000000000001-0000000000000045.wal"
        );
    }

    /// `read_whole_with` reads from the first entry without a start snapshot, and agrees
    /// with `read_all` from the snapshot the log starts at.
    #[test]
    fn read_whole_needs_no_start_snapshot() {
        use super::super::proto::EntryType;
        let dir = std::env::temp_dir().join(format!("wal-whole-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let meta = WalMetadata {
            node_id: 1,
            cluster_id: 2,
        };
        let mut w = WalWriter::create(&dir, &meta, FrameStyle::Padded).unwrap();
        w.save_snapshot(&WalSnapshot::new(10, 2)).unwrap();
        for (term, index) in [(2, 11), (2, 12), (2, 13), (3, 12), (3, 13)] {
            let e = Entry {
                entry_type: EntryType::Normal,
                term,
                index,
                data: vec![index as u8],
            };
            w.save_entry(&e).unwrap();
        }
        w.save_hard_state(&HardState {
            term: 3,
            vote: 1,
            commit: 13,
        })
        .unwrap();
        w.finish().unwrap();
        let whole = read_whole_with(&dir, |e| (e.index, e.term)).unwrap();
        assert_eq!(whole.entries, vec![(11, 2), (12, 3), (13, 3)]);
        assert_eq!((whole.last_index, whole.last_entry_term), (13, Some(3)));
        assert_eq!(
            whole.snapshots,
            vec![WalSnapshot::new(0, 0), WalSnapshot::new(10, 2)]
        );
        assert_eq!(whole.hard_state.map(|h| h.commit), Some(13));
        assert_eq!(whole.metadata, Some(meta));
        let from10 = read_all_with(&dir, &WalSnapshot::new(10, 2), |e| (e.index, e.term)).unwrap();
        assert_eq!(from10.entries, whole.entries);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Random flips and truncations of a real etcd 3.4.23 WAL: a result or an error, never a
    /// panic (ported from rollback2's private reader, where it found an overflow).
    #[test]
    fn corrupted_copies_never_panic() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/wal/0000000000000000-0000000000000000.wal"
        );
        let orig = fs::read(src).unwrap();
        let dir = std::env::temp_dir().join(format!("wal-fuzz-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0000000000000000-0000000000000000.wal");
        let (mut ok, mut bad) = (0, 0);
        for b in super::super::damaged_copies(&orig, 0x2545_f491_4f6c_dd1d, 5, 1000) {
            fs::write(&path, &b).unwrap();
            match read_whole_with(&dir, |e| e.index) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
            let _ = check(&dir);
        }
        fs::remove_dir_all(&dir).unwrap();
        assert!(ok > 0 && bad > 0, "ok {ok} bad {bad}");
    }

    #[test]
    fn torn_detection_uses_file_sectors() {
        // Body starting at file offset 504: the first "sector" is 0 bytes long? No: 512-512=..
        let body = vec![1u8; 600];
        assert!(!looks_torn(&body, 496));
        let mut body = vec![1u8; 600];
        for b in &mut body[8..520] {
            *b = 0; // file bytes 512..1024 with frame at 496 (body starts at 504)
        }
        assert!(looks_torn(&body, 496));
    }
}
