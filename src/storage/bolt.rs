//! Read-only bbolt (etcd's `member/snap/db`): page size detection, meta selection, and
//! in-order iteration over buckets without loading the file.
//!
//! The file is memory-mapped (`storage::mapped`), so a page is a slice of the map and keys
//! and values are borrowed for as long as the `BoltDb` lives, never copied; resident memory
//! stays bounded because the map drops its pages every few MB read. Every page id,
//! element position and length is checked against the page and the file before use, every
//! error names the file and byte offset, and a walk visits each page at most once, so a
//! corrupted file (cycles, shared subtrees) can neither loop nor blow up.

use std::fmt;
use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::mapped::{Mapped, Touch};
use super::Finding;
use crate::error::{HasKind, IoError, Kind};
use crate::fsutil::{try_flock, Lock};

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const META_SIZE: usize = 64;
const BUCKET_HEADER: usize = 16;

const FLAG_BRANCH: u16 = 0x01;
const FLAG_LEAF: u16 = 0x02;
const FLAG_META: u16 = 0x04;
const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a bucket header.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;

const NO_FREELIST: u64 = u64::MAX;
/// Deeper trees than this are corrupt: even a 2-way tree this deep would hold 2^40 pages.
const MAX_DEPTH: usize = 40;
/// bbolt nests buckets; etcd does not. Bound the nesting a walk follows.
const MAX_BUCKET_NESTING: usize = 16;
const MIN_PAGE_SIZE: u32 = 512;
const MAX_PAGE_SIZE: u32 = 1 << 20;
/// `check` stops collecting after this many findings (a zeroed file would give one per page).
const MAX_FINDINGS: usize = 1000;

/// Why a db could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    /// The OS refused an open or a read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The bytes are not a valid bbolt file at this place.
    #[error("{0}")]
    Corrupt(Finding),
    /// A running process (etcd) holds the exclusive lock on the file.
    #[error("{}: locked by another process (is etcd running on this data dir?); stop it or inspect a copy", file.display())]
    Locked { file: PathBuf },
    /// No bucket of that name at the top level.
    #[error("{}: no bucket named {:?}", file.display(), String::from_utf8_lossy(name))]
    NoBucket { file: PathBuf, name: Vec<u8> },
}

impl HasKind for BoltError {
    fn kind(&self) -> Kind {
        match self {
            BoltError::Io(_) => Kind::Io,
            BoltError::Corrupt(_) | BoltError::NoBucket { .. } => Kind::Corrupt,
            BoltError::Locked { .. } => Kind::Refused,
        }
    }
}

/// A meta page's content (pages 0 and 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// 0 or 1: which meta page this is.
    pub page: u64,
    pub page_size: u32,
    pub flags: u32,
    /// Root page of the root bucket (whose entries are the top-level buckets).
    pub root: u64,
    pub sequence: u64,
    /// Freelist page, or `None` when not persisted (etcd 3.3+: `NoFreelistSync`).
    pub freelist: Option<u64>,
    /// High-water mark: pages `[0, pgid)` are in use.
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

/// FNV-1a 64, the checksum of a bbolt meta.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes and validates the 64-byte meta at `meta` (page offset 16). `Err` says why it is
/// invalid (magic, version, checksum), without a location.
fn parse_meta(page: u64, meta: &[u8]) -> Result<Meta, String> {
    if meta.len() < META_SIZE {
        return Err("meta page is cut short".into());
    }
    let magic = u32_at(meta, 0);
    if magic != MAGIC {
        return Err(format!(
            "meta page {page}: bad magic {magic:#010x} (want {MAGIC:#010x})"
        ));
    }
    let version = u32_at(meta, 4);
    if version != VERSION {
        return Err(format!(
            "meta page {page}: unsupported version {version} (want {VERSION})"
        ));
    }
    let checksum = u64_at(meta, 56);
    let computed = fnv1a64(&meta[..56]);
    if checksum != computed {
        return Err(format!(
            "meta page {page}: checksum {checksum:#018x} does not match the content \
             ({computed:#018x})"
        ));
    }
    let freelist = u64_at(meta, 32);
    Ok(Meta {
        page,
        page_size: u32_at(meta, 8),
        flags: u32_at(meta, 12),
        root: u64_at(meta, 16),
        sequence: u64_at(meta, 24),
        freelist: (freelist != NO_FREELIST).then_some(freelist),
        pgid: u64_at(meta, 40),
        txid: u64_at(meta, 48),
        checksum,
    })
}

/// One page (with its overflow pages) in the file, or an inline bucket's page (id 0).
#[derive(Debug, Clone, Copy)]
struct Page<'a> {
    id: u64,
    /// File offset of `data[0]`, for error messages.
    offset: u64,
    data: &'a [u8],
}

impl Page<'_> {
    fn flags(&self) -> u16 {
        u16_at(self.data, 8)
    }

    fn count(&self) -> usize {
        u16_at(self.data, 10) as usize
    }

    fn overflow(&self) -> u32 {
        u32_at(self.data, 12)
    }
}

/// A branch element: the first key of a child subtree and the child's page.
struct BranchElem<'a> {
    key: &'a [u8],
    child: u64,
}

/// A leaf element: key, value and flags (`BUCKET_LEAF_FLAG`), with the file offset of the value.
#[derive(Debug, Clone, Copy)]
pub struct LeafItem<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    /// File offset of the first value byte (for error messages about the value).
    pub value_offset: u64,
}

impl LeafItem<'_> {
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF_FLAG != 0
    }
}

/// Where a bucket's tree starts: a page, or an inline page inside its parent's leaf value
/// (its file offset and length).
#[derive(Debug, Clone)]
pub enum BucketRoot {
    Page(u64),
    Inline { offset: u64, len: usize },
}

/// A bucket: its name (for messages) and root.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: Vec<u8>,
    pub root: BucketRoot,
    pub sequence: u64,
}

/// Which way a walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Pages seen by one walk: each page id at most once, so a cycle or a page shared by two
/// parents is an error instead of a loop. Short walks (seeks) keep a list; long ones switch
/// to a bitset over the used pages (32 KB per GB of 4K pages), allocated only then.
struct Visited {
    pages: u64,
    few: Vec<u64>,
    bits: Vec<u64>,
}

const FEW_PAGES: usize = 32;

impl Visited {
    fn new(pages: u64) -> Visited {
        Visited {
            pages,
            few: Vec::new(),
            bits: Vec::new(),
        }
    }

    /// Marks `id`; false if it was marked already. Ids outside the used pages were rejected
    /// earlier and are not tracked.
    fn mark(&mut self, id: u64) -> bool {
        if self.bits.is_empty() {
            if self.few.contains(&id) {
                return false;
            }
            if self.few.len() < FEW_PAGES {
                self.few.push(id);
                return true;
            }
            self.bits = vec![0; self.pages.div_ceil(64).max(1) as usize];
            for p in std::mem::take(&mut self.few) {
                self.set(p);
            }
        }
        self.set(id)
    }

    fn set(&mut self, id: u64) -> bool {
        let (word, bit) = ((id / 64) as usize, id % 64);
        match self.bits.get_mut(word) {
            Some(w) => {
                let seen = *w & (1 << bit) != 0;
                *w |= 1 << bit;
                !seen
            }
            None => true,
        }
    }
}

/// An open bbolt file, read-only.
pub struct BoltDb {
    /// The whole file; pages are slices of it.
    map: Mapped,
    /// Holds the shared `flock` for as long as the db is open.
    _file: File,
    path: PathBuf,
    size: u64,
    page_size: u32,
    meta: Meta,
    /// Both metas as parsed (the chosen one is also in `meta`); `Err` says why one is invalid.
    metas: [Result<Meta, Finding>; 2],
}

impl fmt::Debug for BoltDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoltDb")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("meta", &self.meta)
            .finish()
    }
}

/// Readers that keep items (keys and values borrowed from the map) and read them again later
/// say so, so the map's resident pages stay bounded.
impl Touch for BoltDb {
    fn touched(&self, bytes: u64) {
        self.map.touched(bytes);
    }
}

impl BoltDb {
    /// Opens `path` read-only, taking a shared `flock` (a running etcd holds an exclusive one,
    /// and a db being written is not a consistent read), detects the page size and picks the
    /// meta like bbolt: the valid one with the higher txid.
    pub fn open(path: &Path) -> Result<BoltDb, BoltError> {
        let file = File::open(path).map_err(IoError::on("cannot open", path))?;
        match try_flock(&file, Lock::Shared) {
            Ok(true) => {}
            Ok(false) => {
                return Err(BoltError::Locked {
                    file: path.to_path_buf(),
                })
            }
            Err(e) => return Err(IoError::new("cannot lock", path, e).into()),
        }
        let size = file
            .metadata()
            .map_err(IoError::on("cannot stat", path))?
            .len();
        Self::from_file(file, path, size)
    }

    fn from_file(file: File, path: &Path, size: u64) -> Result<BoltDb, BoltError> {
        let corrupt =
            |offset: u64, problem: String| BoltError::Corrupt(Finding::at(path, offset, problem));
        let meta_len = (PAGE_HEADER + META_SIZE) as u64;
        if size < meta_len {
            return Err(corrupt(
                0,
                format!("file is {size} bytes, too small for a bbolt file"),
            ));
        }
        let map = Mapped::new(&file, path, size).map_err(|e| read_err(path, 0, e))?;
        let bytes = map.bytes();
        let size = bytes.len() as u64; // what was read, if the file shrank meanwhile
        let read = |offset: u64, len: usize| -> Result<&[u8], BoltError> {
            let at = offset as usize;
            bytes
                .get(at..at + len)
                .ok_or_else(|| corrupt(offset, "the file ends inside this page".into()))
        };
        // Page size: meta 0's, else the first valid meta at a power-of-two position that
        // names that position as its page size (bbolt's recovery through meta 1).
        let first = read(0, meta_len as usize)?;
        let meta0 = parse_meta(0, &first[PAGE_HEADER..]);
        let page_size = match &meta0 {
            Ok(m) if valid_page_size(m.page_size) => m.page_size,
            _ => {
                let mut found = None;
                for i in 0..15 {
                    let pos: u64 = 1024 << i;
                    if pos + meta_len > size {
                        break;
                    }
                    let buf = read(pos, meta_len as usize)?;
                    if let Ok(m) = parse_meta(1, &buf[PAGE_HEADER..]) {
                        if m.page_size as u64 == pos && valid_page_size(m.page_size) {
                            found = Some(m.page_size);
                            break;
                        }
                    }
                }
                match (found, &meta0) {
                    (Some(ps), _) => ps,
                    (None, Err(why)) => {
                        return Err(corrupt(
                            PAGE_HEADER as u64,
                            format!("not a bbolt file, or both meta pages are invalid: {why}"),
                        ))
                    }
                    (None, Ok(m)) => {
                        return Err(corrupt(
                            PAGE_HEADER as u64 + 8,
                            format!("meta page 0 has an impossible page size {}", m.page_size),
                        ))
                    }
                }
            }
        };
        if size < 2 * page_size as u64 {
            return Err(corrupt(
                size,
                format!(
                    "file is {size} bytes, smaller than its two meta pages of {page_size} bytes: \
                     truncated"
                ),
            ));
        }
        let meta_at = |page: u64| -> Result<Meta, Finding> {
            let offset = page * page_size as u64;
            let buf = if page == 0 {
                first
            } else {
                if offset + meta_len > size {
                    return Err(Finding::at(
                        path,
                        offset,
                        format!("meta page {page} is beyond the end of the file ({size} bytes)"),
                    ));
                }
                read(offset, meta_len as usize)
                    .map_err(|e| Finding::at(path, offset, e.to_string()))?
            };
            check_meta(path, page, offset, buf, page_size)
        };
        let metas = [meta_at(0), meta_at(1)];
        let meta = newer_meta(path, &metas)?;
        Ok(BoltDb {
            map,
            _file: file,
            path: path.to_path_buf(),
            size,
            page_size,
            meta,
            metas,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_size(&self) -> u64 {
        self.size
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The meta in use.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Both meta pages as read; `Err` holds why one is invalid.
    pub fn metas(&self) -> &[Result<Meta, Finding>; 2] {
        &self.metas
    }

    /// Pages that can be read: the used ones, as far as the file holds them. Sizes per-walk
    /// state, so a meta claiming absurdly many pages cannot make us allocate for them.
    fn pages(&self) -> u64 {
        self.meta
            .pgid
            .min(self.size.div_ceil(self.page_size as u64))
    }

    fn corrupt(&self, offset: u64, problem: impl Into<String>) -> BoltError {
        BoltError::Corrupt(Finding::at(&self.path, offset, problem))
    }

    /// Page `id` with its overflow pages, checking that it lies within the used pages and
    /// the file, and that its header names it.
    fn read_page(&self, id: u64) -> Result<Page<'_>, BoltError> {
        let ps = self.page_size as u64;
        if id < 2 || id >= self.meta.pgid {
            // Callers check references where they are made; this is the last line of defence.
            return Err(self.corrupt(
                self.size,
                format!(
                    "reference to page {id}, outside the used pages [2, {})",
                    self.meta.pgid
                ),
            ));
        }
        let offset = id * ps;
        let bytes = self.map.bytes();
        let Some(head) = bytes.get(offset as usize..(offset + ps) as usize) else {
            return Err(self.corrupt(
                offset.min(self.size),
                format!(
                    "page {id} is beyond the end of the file ({} bytes): truncated file",
                    self.size
                ),
            ));
        };
        let header_id = u64_at(head, 0);
        if header_id != id {
            return Err(self.corrupt(
                offset,
                format!("page {id}: header says page id {header_id}"),
            ));
        }
        let overflow = u32_at(head, 12) as u64;
        if overflow > 0 && id + overflow >= self.meta.pgid {
            return Err(self.corrupt(
                offset + 12,
                format!(
                    "page {id}: {overflow} overflow pages run past the used pages ({})",
                    self.meta.pgid
                ),
            ));
        }
        let len = (overflow + 1) * ps;
        let Some(data) = bytes.get(offset as usize..(offset + len) as usize) else {
            return Err(self.corrupt(
                offset + 12,
                format!(
                    "page {id}: {overflow} overflow pages run past the end of the file ({} \
                     bytes): truncated file",
                    self.size
                ),
            ));
        };
        self.map.touched(len);
        Ok(Page { id, offset, data })
    }

    fn root_page(&self, root: &BucketRoot) -> Result<Page<'_>, BoltError> {
        match *root {
            BucketRoot::Page(id) => self.read_page(id),
            BucketRoot::Inline { offset, len } => {
                let at = offset as usize;
                let data =
                    self.map.bytes().get(at..at + len).ok_or_else(|| {
                        self.corrupt(offset, "inline bucket page outside the file")
                    })?;
                Ok(Page {
                    id: 0,
                    offset,
                    data,
                })
            }
        }
    }

    /// Checks a page's header for `count` elements that fit, and its kind.
    fn check_elements(&self, page: &Page<'_>) -> Result<(), BoltError> {
        let flags = page.flags();
        if flags != FLAG_BRANCH && flags != FLAG_LEAF {
            return Err(self.corrupt(
                page.offset + 8,
                format!(
                    "page {}: flags {flags:#x}: not a branch or leaf page (0x1 or 0x2)",
                    page.id
                ),
            ));
        }
        let end = PAGE_HEADER + page.count() * ELEMENT;
        if end > page.data.len() {
            return Err(self.corrupt(
                page.offset + 10,
                format!(
                    "page {}: {} elements do not fit in {} bytes",
                    page.id,
                    page.count(),
                    page.data.len()
                ),
            ));
        }
        if page.count() == 0 && flags == FLAG_BRANCH {
            return Err(self.corrupt(
                page.offset + 10,
                format!("page {}: branch page without elements", page.id),
            ));
        }
        Ok(())
    }

    /// A branch element's child must be a used page other than the metas.
    fn check_ref(&self, page: &Page<'_>, i: usize, child: u64) -> Result<(), BoltError> {
        if child < 2 || child >= self.meta.pgid {
            return Err(self.corrupt(
                page.offset + (PAGE_HEADER + i * ELEMENT) as u64 + 8,
                format!(
                    "page {}: branch element {i} points to page {child}, outside the used \
                     pages [2, {})",
                    page.id, self.meta.pgid
                ),
            ));
        }
        Ok(())
    }

    fn branch_elem<'p>(&self, page: &Page<'p>, i: usize) -> Result<BranchElem<'p>, BoltError> {
        let at = PAGE_HEADER + i * ELEMENT;
        let e = &page.data[at..at + ELEMENT];
        let pos = u32_at(e, 0) as usize;
        let ksize = u32_at(e, 4) as usize;
        let child = u64_at(e, 8);
        let key = slice_at(page.data, at, pos, ksize).ok_or_else(|| {
            self.corrupt(
                page.offset + at as u64,
                format!(
                    "page {}: branch element {i}: key (pos {pos}, size {ksize}) outside the page",
                    page.id
                ),
            )
        })?;
        Ok(BranchElem { key, child })
    }

    fn leaf_item<'p>(&self, page: &Page<'p>, i: usize) -> Result<LeafItem<'p>, BoltError> {
        let at = PAGE_HEADER + i * ELEMENT;
        let e = &page.data[at..at + ELEMENT];
        let flags = u32_at(e, 0);
        let pos = u32_at(e, 4) as usize;
        let ksize = u32_at(e, 8) as usize;
        let vsize = u32_at(e, 12) as usize;
        let kv = slice_at(page.data, at, pos, ksize + vsize).ok_or_else(|| {
            self.corrupt(
                page.offset + at as u64,
                format!(
                    "page {}: leaf element {i}: key+value (pos {pos}, sizes {ksize}+{vsize}) \
                     outside the page",
                    page.id
                ),
            )
        })?;
        Ok(LeafItem {
            key: &kv[..ksize],
            value: &kv[ksize..],
            flags,
            value_offset: page.offset + (at + pos + ksize) as u64,
        })
    }

    /// The bucket a leaf item holds (its value is a bucket header).
    pub fn sub_bucket(&self, item: &LeafItem<'_>) -> Result<Bucket, BoltError> {
        if !item.is_bucket() {
            return Err(self.corrupt(
                item.value_offset,
                format!("{:?} is not a bucket", String::from_utf8_lossy(item.key)),
            ));
        }
        if item.value.len() < BUCKET_HEADER {
            return Err(self.corrupt(
                item.value_offset,
                format!(
                    "bucket {:?}: header of {} bytes, need {BUCKET_HEADER}",
                    String::from_utf8_lossy(item.key),
                    item.value.len()
                ),
            ));
        }
        let root = u64_at(item.value, 0);
        let sequence = u64_at(item.value, 8);
        let root = if root == 0 {
            let data = &item.value[BUCKET_HEADER..];
            let offset = item.value_offset + BUCKET_HEADER as u64;
            if data.len() < PAGE_HEADER || u16_at(data, 8) != FLAG_LEAF {
                return Err(self.corrupt(
                    offset,
                    format!(
                        "bucket {:?}: inline page is not a leaf page",
                        String::from_utf8_lossy(item.key)
                    ),
                ));
            }
            BucketRoot::Inline {
                offset,
                len: data.len(),
            }
        } else if root < 2 || root >= self.meta.pgid {
            return Err(self.corrupt(
                item.value_offset,
                format!(
                    "bucket {:?}: root page {root} outside the used pages [2, {})",
                    String::from_utf8_lossy(item.key),
                    self.meta.pgid
                ),
            ));
        } else {
            BucketRoot::Page(root)
        };
        Ok(Bucket {
            name: item.key.to_vec(),
            root,
            sequence,
        })
    }

    /// The root bucket, whose items are the top-level buckets.
    pub fn root_bucket(&self) -> Bucket {
        Bucket {
            name: Vec::new(),
            root: BucketRoot::Page(self.meta.root),
            sequence: self.meta.sequence,
        }
    }

    /// Names of the top-level buckets, in order.
    pub fn bucket_names(&self) -> Result<Vec<Vec<u8>>, BoltError> {
        let mut names = Vec::new();
        self.for_each(&self.root_bucket(), Direction::Forward, &mut |item| {
            if item.is_bucket() {
                names.push(item.key.to_vec());
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(names)
    }

    /// The top-level bucket `name`, or `None`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let found = self.get_item(&self.root_bucket(), name, &mut |item| {
            if item.is_bucket() {
                self.sub_bucket(item).map(Some)
            } else {
                Ok(None)
            }
        })?;
        Ok(found.flatten())
    }

    /// The top-level bucket `name`, or `NoBucket`.
    pub fn require_bucket(&self, name: &[u8]) -> Result<Bucket, BoltError> {
        self.bucket(name)?.ok_or_else(|| BoltError::NoBucket {
            file: self.path.clone(),
            name: name.to_vec(),
        })
    }

    /// The value of `key` in `bucket` (not for sub-buckets), or `None`.
    pub fn get(&self, bucket: &Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
        let found = self.get_item(bucket, key, &mut |item| {
            Ok((!item.is_bucket()).then(|| item.value.to_vec()))
        })?;
        Ok(found.flatten())
    }

    /// Finds `key` in `bucket` by descending the tree, and hands its leaf item to `f`.
    pub fn get_item<T>(
        &self,
        bucket: &Bucket,
        key: &[u8],
        f: &mut dyn FnMut(&LeafItem<'_>) -> Result<T, BoltError>,
    ) -> Result<Option<T>, BoltError> {
        let mut page = self.root_page(&bucket.root)?;
        for _ in 0..MAX_DEPTH {
            self.check_elements(&page)?;
            if page.flags() == FLAG_LEAF {
                // Elements are sorted: binary search.
                let (mut lo, mut hi) = (0, page.count());
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    let item = self.leaf_item(&page, mid)?;
                    match item.key.cmp(key) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => return f(&item).map(Some),
                    }
                }
                return Ok(None);
            }
            // The last child whose first key is <= key (or the first child).
            let (mut lo, mut hi) = (0, page.count());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.branch_elem(&page, mid)?.key <= key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let child = self.branch_elem(&page, lo.saturating_sub(1))?.child;
            self.check_ref(&page, lo.saturating_sub(1), child)?;
            page = self.read_page(child)?;
        }
        Err(self.corrupt(
            page.offset,
            format!(
                "tree of bucket {:?} deeper than {MAX_DEPTH} levels (a cycle?)",
                String::from_utf8_lossy(&bucket.name)
            ),
        ))
    }

    /// Calls `f` on every item of `bucket` in key order (or reverse), until it breaks.
    /// Sub-bucket items are passed as they are (see `sub_bucket`).
    /// Items borrow from the db (the map), so callers may keep them.
    pub fn for_each<'a>(
        &'a self,
        bucket: &Bucket,
        direction: Direction,
        f: &mut dyn FnMut(&LeafItem<'a>) -> Result<ControlFlow<()>, BoltError>,
    ) -> Result<(), BoltError> {
        self.walk_bucket(bucket, direction, None, f).map(drop)
    }

    /// Calls `f` on the items of `bucket` with keys `>= start`, in key order, until it breaks.
    pub fn for_each_from<'a>(
        &'a self,
        bucket: &Bucket,
        start: &[u8],
        f: &mut dyn FnMut(&LeafItem<'a>) -> Result<ControlFlow<()>, BoltError>,
    ) -> Result<(), BoltError> {
        self.walk_bucket(bucket, Direction::Forward, Some(start), f)
            .map(drop)
    }

    fn walk_bucket<'a>(
        &'a self,
        bucket: &Bucket,
        direction: Direction,
        start: Option<&[u8]>,
        f: &mut dyn FnMut(&LeafItem<'a>) -> Result<ControlFlow<()>, BoltError>,
    ) -> Result<ControlFlow<()>, BoltError> {
        let mut visited = Visited::new(self.pages());
        let page = self.root_page(&bucket.root)?;
        if page.id != 0 {
            visited.mark(page.id);
        }
        self.walk(&page, direction, start, 0, &mut visited, f)
    }

    /// In-order walk of `page`'s subtree. `start` (forward only) skips keys below it.
    #[allow(clippy::too_many_arguments)]
    fn walk<'a>(
        &'a self,
        page: &Page<'a>,
        direction: Direction,
        start: Option<&[u8]>,
        depth: usize,
        visited: &mut Visited,
        f: &mut dyn FnMut(&LeafItem<'a>) -> Result<ControlFlow<()>, BoltError>,
    ) -> Result<ControlFlow<()>, BoltError> {
        self.check_elements(page)?;
        let n = page.count();
        let index = |i: usize| match direction {
            Direction::Forward => i,
            Direction::Backward => n - 1 - i,
        };
        if page.flags() == FLAG_LEAF {
            for i in 0..n {
                let item = self.leaf_item(page, index(i))?;
                if start.is_some_and(|s| item.key < s) {
                    continue;
                }
                if f(&item)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            return Ok(ControlFlow::Continue(()));
        }
        if depth >= MAX_DEPTH {
            return Err(self.corrupt(
                page.offset,
                format!("page {}: tree deeper than {MAX_DEPTH} levels", page.id),
            ));
        }
        // With a start key, begin at the last child whose first key is <= start.
        let mut first = 0;
        if let Some(s) = start {
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.branch_elem(page, mid)?.key <= s {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            first = lo.saturating_sub(1);
        }
        for i in first..n {
            let child = self.branch_elem(page, index(i))?.child;
            self.check_ref(page, index(i), child)?;
            if !visited.mark(child) {
                return Err(self.corrupt(
                    page.offset + (PAGE_HEADER + index(i) * ELEMENT) as u64,
                    format!(
                        "page {}: child page {child} is referenced twice (cycle or shared page)",
                        page.id
                    ),
                ));
            }
            let child_page = self.read_page(child)?;
            let child_start = if i == first { start } else { None };
            if self
                .walk(&child_page, direction, child_start, depth + 1, visited, f)?
                .is_break()
            {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Integrity check: both meta pages, the file size against the used pages, the freelist
    /// page when persisted, and a walk of every bucket's tree (page ids, kinds, bounds, key
    /// order, pages referenced once). Returns every problem found (empty when sound).
    pub fn check(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for m in &self.metas {
            if let Err(f) = m {
                let mut f = f.clone();
                f.problem = format!(
                    "{} (ignored: the db is read through meta page {}, txid {})",
                    f.problem, self.meta.page, self.meta.txid
                );
                findings.push(f);
            }
        }
        let ps = self.page_size as u64;
        let needed = self.meta.pgid.saturating_mul(ps);
        if self.size < needed {
            findings.push(Finding::at(
                &self.path,
                self.size,
                format!(
                    "file is {} bytes but meta page {} uses {} pages of {ps} bytes ({needed} \
                     bytes): truncated",
                    self.size, self.meta.page, self.meta.pgid
                ),
            ));
        }
        let mut checker = Checker {
            db: self,
            visited: Visited::new(self.pages()),
            findings,
        };
        if let Some(fl) = self.meta.freelist {
            checker.check_freelist(fl);
        }
        checker.visited.mark(self.meta.root);
        checker.check_tree(&self.root_bucket(), 0);
        checker.findings
    }
}

/// A meta page's content checked against its header and the file's page size.
fn check_meta(
    path: &Path,
    page: u64,
    offset: u64,
    buf: &[u8],
    page_size: u32,
) -> Result<Meta, Finding> {
    let m = parse_meta(page, &buf[PAGE_HEADER..])
        .map_err(|why| Finding::at(path, offset + PAGE_HEADER as u64, why))?;
    let id = u64_at(buf, 0);
    let flags = u16_at(buf, 8);
    if id != page || flags != FLAG_META {
        return Err(Finding::at(
            path,
            offset,
            format!("meta page {page}: header says page id {id}, flags {flags:#x}"),
        ));
    }
    if m.page_size != page_size {
        return Err(Finding::at(
            path,
            offset + PAGE_HEADER as u64 + 8,
            format!(
                "meta page {page}: page size {} differs from the file's {page_size}",
                m.page_size
            ),
        ));
    }
    if m.pgid.checked_mul(page_size as u64).is_none() {
        return Err(Finding::at(
            path,
            offset + PAGE_HEADER as u64 + 40,
            format!("meta page {page}: impossible page count {}", m.pgid),
        ));
    }
    if m.pgid < 2 || m.root < 2 || m.root >= m.pgid {
        return Err(Finding::at(
            path,
            offset + PAGE_HEADER as u64 + 16,
            format!(
                "meta page {page}: root page {} outside the used pages [2, {})",
                m.root, m.pgid
            ),
        ));
    }
    Ok(m)
}

/// bbolt's choice: the valid meta with the higher txid (a bad one is logged and skipped).
fn newer_meta(path: &Path, metas: &[Result<Meta, Finding>; 2]) -> Result<Meta, BoltError> {
    match (&metas[0], &metas[1]) {
        (Ok(a), Ok(b)) => Ok(if b.txid > a.txid {
            b.clone()
        } else {
            a.clone()
        }),
        (Ok(a), Err(why)) => {
            log::warn!("{why}; using meta page 0 (txid {})", a.txid);
            Ok(a.clone())
        }
        (Err(why), Ok(b)) => {
            log::warn!("{why}; using meta page 1 (txid {})", b.txid);
            Ok(b.clone())
        }
        (Err(a), Err(b)) => Err(BoltError::Corrupt(Finding::at(
            path,
            a.offset.unwrap_or(0),
            format!("both meta pages are invalid: {}; and {b}", a.problem),
        ))),
    }
}

/// A short read is damage (the file ends early); anything else is the OS's.
fn read_err(path: &Path, offset: u64, e: std::io::Error) -> BoltError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        BoltError::Corrupt(Finding::at(path, offset, "the file ends inside this page"))
    } else {
        BoltError::Io(IoError::new("cannot read", path, e).at_offset(offset))
    }
}

fn valid_page_size(ps: u32) -> bool {
    (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&ps)
}

/// `data[at + pos .. at + pos + len]`, if it fits.
fn slice_at(data: &[u8], at: usize, pos: usize, len: usize) -> Option<&[u8]> {
    let start = at.checked_add(pos)?;
    let end = start.checked_add(len)?;
    data.get(start..end)
}

/// State of one `check` walk.
struct Checker<'a> {
    db: &'a BoltDb,
    visited: Visited,
    findings: Vec<Finding>,
}

impl Checker<'_> {
    fn report(&mut self, e: BoltError) {
        if self.findings.len() >= MAX_FINDINGS {
            return;
        }
        let finding = match e {
            BoltError::Corrupt(f) => f,
            other => Finding::in_file(&self.db.path, other.to_string()),
        };
        self.findings.push(finding);
        if self.findings.len() == MAX_FINDINGS {
            self.findings.push(Finding::in_file(
                &self.db.path,
                format!("more than {MAX_FINDINGS} problems; stopped reporting"),
            ));
        }
    }

    fn check_freelist(&mut self, id: u64) {
        match self.db.read_page(id) {
            Ok(page) => {
                if page.flags() != FLAG_FREELIST {
                    let e = self.db.corrupt(
                        page.offset + 8,
                        format!(
                            "freelist page {id}: flags {:#x}, expected 0x10",
                            page.flags()
                        ),
                    );
                    self.report(e);
                }
                for p in id..=id + page.overflow() as u64 {
                    self.visited.mark(p);
                }
            }
            Err(e) => self.report(e),
        }
    }

    /// Checks a bucket's tree and, recursively, its sub-buckets.
    fn check_tree(&mut self, bucket: &Bucket, nesting: usize) {
        let page = match self.db.root_page(&bucket.root) {
            Ok(p) => p,
            Err(e) => return self.report(e),
        };
        let mut last: Option<Vec<u8>> = None;
        let mut subs = Vec::new();
        self.check_page(&page, 0, None, None, &mut last, &mut subs);
        for sub in subs {
            if nesting + 1 >= MAX_BUCKET_NESTING {
                let e = self.db.corrupt(
                    page.offset,
                    format!("buckets nested deeper than {MAX_BUCKET_NESTING}"),
                );
                return self.report(e);
            }
            if let BucketRoot::Page(id) = sub.root {
                if !self.visited.mark(id) {
                    let e = self.db.corrupt(
                        id * self.db.page_size as u64,
                        format!(
                            "root page {id} of bucket {:?} is referenced twice",
                            String::from_utf8_lossy(&sub.name)
                        ),
                    );
                    self.report(e);
                    continue;
                }
            }
            self.check_tree(&sub, nesting + 1);
        }
    }

    /// Checks one page and its subtree: every key within `[lo, hi)` and after `last`.
    fn check_page(
        &mut self,
        page: &Page<'_>,
        depth: usize,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        last: &mut Option<Vec<u8>>,
        subs: &mut Vec<Bucket>,
    ) {
        if let Err(e) = self.db.check_elements(page) {
            return self.report(e);
        }
        // Overflow pages of a real page (bounded by read_page); inline pages have none.
        let overflow = if page.id == 0 {
            0
        } else {
            page.overflow() as u64
        };
        for p in page.id + 1..=page.id + overflow {
            if !self.visited.mark(p) {
                let e = self.db.corrupt(
                    page.offset + 12,
                    format!("page {}: overflow page {p} is also used elsewhere", page.id),
                );
                self.report(e);
            }
        }
        let n = page.count();
        let elem_offset = |i: usize| page.offset + (PAGE_HEADER + i * ELEMENT) as u64;
        let in_range = |k: &[u8]| lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi);
        if page.flags() == FLAG_LEAF {
            for i in 0..n {
                let item = match self.db.leaf_item(page, i) {
                    Ok(item) => item,
                    Err(e) => {
                        self.report(e);
                        continue;
                    }
                };
                if !in_range(item.key) || last.as_deref().is_some_and(|l| item.key <= l) {
                    let e = self.db.corrupt(
                        elem_offset(i),
                        format!("page {}: leaf element {i}: key out of order", page.id),
                    );
                    self.report(e);
                }
                *last = Some(item.key.to_vec());
                if item.is_bucket() {
                    match self.db.sub_bucket(&item) {
                        Ok(b) => subs.push(b),
                        Err(e) => self.report(e),
                    }
                }
            }
            return;
        }
        if depth >= MAX_DEPTH {
            let e = self.db.corrupt(
                page.offset,
                format!("page {}: tree deeper than {MAX_DEPTH} levels", page.id),
            );
            return self.report(e);
        }
        let mut elems = Vec::with_capacity(n);
        for i in 0..n {
            match self.db.branch_elem(page, i) {
                Ok(e) => elems.push((i, e.key.to_vec(), e.child)),
                Err(e) => self.report(e),
            }
        }
        for j in 0..elems.len() {
            let (i, ref key, child) = elems[j];
            if !in_range(key) || (j > 0 && elems[j - 1].1 >= *key) {
                let e = self.db.corrupt(
                    elem_offset(i),
                    format!("page {}: branch element {i}: key out of order", page.id),
                );
                self.report(e);
                continue;
            }
            if let Err(e) = self.db.check_ref(page, i, child) {
                self.report(e);
                continue;
            }
            if !self.visited.mark(child) {
                let e = self.db.corrupt(
                    elem_offset(i),
                    format!(
                        "page {}: child page {child} is referenced twice (cycle or shared page)",
                        page.id
                    ),
                );
                self.report(e);
                continue;
            }
            let child_page = match self.db.read_page(child) {
                Ok(p) => p,
                Err(e) => {
                    self.report(e);
                    continue;
                }
            };
            let child_hi = elems.get(j + 1).map(|e| e.1.as_slice()).or(hi);
            // Like bbolt's check: a child's keys lie in [its branch key, the next branch key).
            self.check_page(&child_page, depth + 1, Some(key), child_hi, last, subs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn visited_catches_repeats_before_and_after_switching_to_bits() {
        let mut v = Visited::new(1000);
        for id in 2..900 {
            assert!(v.mark(id), "{id}");
            assert!(!v.mark(id), "{id}");
            assert!(!v.mark(2), "{id}");
        }
    }

    #[test]
    fn slice_at_rejects_overflowing_positions() {
        let data = [0u8; 32];
        assert!(slice_at(&data, 16, 8, 8).is_some());
        assert!(slice_at(&data, 16, 8, 9).is_none());
        assert!(slice_at(&data, 16, usize::MAX, 1).is_none());
    }
}
