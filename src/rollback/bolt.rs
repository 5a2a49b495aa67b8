//! Read-only bbolt, just what rollback needs: the meta page check, and an in-order walk of a
//! top-level bucket. The file is memory-mapped, so a large db costs page cache, not heap.
//! (A private stand-in until `storage::bolt` lands.) Every page id and element position is
//! checked against the file; each page is visited at most once, so a cycle cannot loop.

use crate::storage::Finding;
use std::fs::File;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0xED0C_DAED;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;

/// The memory map of a bbolt file.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len are exactly what mmap returned.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

pub struct Db {
    path: PathBuf,
    map: Map,
    pub page_size: usize,
    root: u64,
    high_water: u64,
    pub txid: u64,
    /// Held for the map's lifetime (and for the shared flock that tells us etcd is not running).
    _file: File,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A meta struct at `at` (page offset + 16), if it is valid.
struct Meta {
    page_size: u32,
    root: u64,
    high_water: u64,
    txid: u64,
}

fn meta_at(b: &[u8], at: usize) -> Option<Meta> {
    let m = b.get(at..at + 64)?;
    if le_u32(m, 0) != MAGIC || le_u32(m, 4) != 2 || fnv1a64(&m[..56]) != le_u64(m, 56) {
        return None;
    }
    Some(Meta {
        page_size: le_u32(m, 8),
        root: le_u64(m, 16),
        high_water: le_u64(m, 40),
        txid: le_u64(m, 48),
    })
}

/// Where a bucket's tree lives: a page id, or an inline page inside a value.
#[derive(Clone, Copy)]
enum Root<'a> {
    Page(u64),
    Inline(&'a [u8], u64),
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, Finding> {
        let file =
            File::open(path).map_err(|e| Finding::in_file(path, format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| Finding::in_file(path, format!("cannot stat: {e}")))?
            .len();
        let len = usize::try_from(len).map_err(|_| Finding::in_file(path, "file too large"))?;
        if len < 1024 {
            return Err(Finding::at(
                path,
                0,
                format!("not a bbolt file: only {len} bytes"),
            ));
        }
        // SAFETY: a read-only private mapping of a file we opened; etcd must not be writing it
        // (the caller checks with a shared flock). Bytes are only read through bounds checks.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Finding::in_file(
                path,
                format!("cannot map: {}", std::io::Error::last_os_error()),
            ));
        }
        let map = Map { ptr, len };
        let mut db = Db {
            path: path.to_path_buf(),
            map,
            page_size: 0,
            root: 0,
            high_water: 0,
            txid: 0,
            _file: file,
        };
        db.choose_meta()?;
        Ok(db)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as self and is never written.
        unsafe { std::slice::from_raw_parts(self.map.ptr as *const u8, self.map.len) }
    }

    fn choose_meta(&mut self) -> Result<(), Finding> {
        let b = self.bytes();
        // Page size: meta 0 says it; if meta 0 is damaged, find meta 1 the way bbolt does.
        let ps = match meta_at(b, 16) {
            Some(m) => m.page_size as usize,
            None => {
                let mut found = None;
                for i in 0..15 {
                    let pos = 1024usize << i;
                    if pos + 1024 >= b.len() {
                        break;
                    }
                    if let Some(m) = meta_at(b, pos + 16) {
                        if m.page_size as usize == pos {
                            found = Some(pos);
                            break;
                        }
                    }
                }
                found.ok_or_else(|| {
                    Finding::at(
                        &self.path,
                        16,
                        "no valid bbolt meta page (bad magic, version or checksum)",
                    )
                })?
            }
        };
        if !(512..=1 << 16).contains(&ps) || !ps.is_power_of_two() {
            return Err(Finding::at(
                &self.path,
                24,
                format!("implausible page size {ps}"),
            ));
        }
        let m0 = meta_at(b, 16);
        let m1 = meta_at(b, ps + 16);
        let m = match (m0, m1) {
            (Some(a), Some(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => {
                return Err(Finding::at(
                    &self.path,
                    16,
                    "both bbolt meta pages are invalid",
                ))
            }
        };
        let pages = (b.len() / ps) as u64;
        if m.high_water > pages || m.root < 2 || m.root >= m.high_water {
            return Err(Finding::at(
                &self.path,
                16,
                format!(
                    "meta points outside the file (root page {}, {} pages in use, {} in file)",
                    m.root, m.high_water, pages
                ),
            ));
        }
        self.page_size = ps;
        self.root = m.root;
        self.high_water = m.high_water;
        self.txid = m.txid;
        Ok(())
    }

    /// The bytes of page `id` including its overflow pages, checked.
    fn page(&self, id: u64) -> Result<&[u8], Finding> {
        let ps = self.page_size;
        let off = (id as usize).checked_mul(ps);
        let b = self.bytes();
        let bad = |p: &str| Finding::at(&self.path, id.saturating_mul(ps as u64), p.to_string());
        if id < 2 || id >= self.high_water {
            return Err(bad(&format!("page id {id} out of range")));
        }
        let off = off.ok_or_else(|| bad("page offset overflows"))?;
        let head = b
            .get(off..off + 16)
            .ok_or_else(|| bad("page past end of file"))?;
        let overflow = le_u32(head, 12) as u64;
        if le_u64(head, 0) != id {
            return Err(bad(&format!(
                "page header says id {}, expected {id}",
                le_u64(head, 0)
            )));
        }
        if id + overflow >= self.high_water {
            return Err(bad(&format!(
                "page {id} overflow {overflow} runs past the in-use pages"
            )));
        }
        let end = off + (overflow as usize + 1) * ps;
        b.get(off..end)
            .ok_or_else(|| bad("page overflow past end of file"))
    }

    /// Calls `f(key, value)` for every key of top-level bucket `name`, in key order.
    /// Returns false when the bucket does not exist.
    pub fn for_each<'s, E>(
        &'s self,
        name: &[u8],
        f: &mut dyn FnMut(&'s [u8], &'s [u8]) -> Result<(), E>,
    ) -> Result<bool, WalkError<E>> {
        let mut visited = vec![false; self.high_water as usize];
        let mut bucket = None;
        self.walk(
            Root::Page(self.root),
            &mut visited,
            0,
            &mut |k, v, flags| {
                if k == name {
                    if flags & BUCKET_LEAF == 0 {
                        return Err(WalkError::Format(Finding::in_file(
                            &self.path,
                            format!("{} is a key, not a bucket", String::from_utf8_lossy(name)),
                        )));
                    }
                    bucket = Some(v);
                }
                Ok(())
            },
        )?;
        let Some(v) = bucket else { return Ok(false) };
        if v.len() < 16 {
            return Err(WalkError::Format(Finding::in_file(
                &self.path,
                "bucket header too short",
            )));
        }
        let root = le_u64(v, 0);
        let r = if root == 0 {
            Root::Inline(&v[16..], 0)
        } else {
            Root::Page(root)
        };
        self.walk(r, &mut visited, 0, &mut |k, v, flags| {
            if flags & BUCKET_LEAF != 0 {
                return Ok(()); // etcd has no nested buckets; ignore rather than misread
            }
            f(k, v).map_err(WalkError::Visit)
        })?;
        Ok(true)
    }

    fn walk<'s, E>(
        &'s self,
        root: Root<'s>,
        visited: &mut [bool],
        depth: u32,
        f: &mut dyn FnMut(&'s [u8], &'s [u8], u32) -> Result<(), WalkError<E>>,
    ) -> Result<(), WalkError<E>> {
        if depth > 64 {
            return Err(WalkError::Format(Finding::in_file(
                &self.path,
                "b+tree deeper than 64 levels",
            )));
        }
        let (p, base) = match root {
            Root::Page(id) => {
                // bounds first (page() checks the id), then the cycle check
                let page = self.page(id)?;
                let at = id.saturating_mul(self.page_size as u64);
                match visited.get_mut(id as usize) {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(WalkError::Format(Finding::at(
                            &self.path,
                            at,
                            format!("page {id} reached twice (cycle or shared page)"),
                        )))
                    }
                }
                (page, at)
            }
            Root::Inline(b, off) => (b, off),
        };
        let bad = |at: usize, what: String| {
            WalkError::Format(Finding::at(&self.path, base + at as u64, what))
        };
        if p.len() < 16 {
            return Err(bad(0, "inline page too short".into()));
        }
        let flags = le_u16(p, 8);
        let count = le_u16(p, 10) as usize;
        if 16 + count * 16 > p.len() {
            return Err(bad(10, format!("{count} elements do not fit in the page")));
        }
        for i in 0..count {
            let e = 16 + i * 16;
            match flags {
                BRANCH => {
                    let pos = le_u32(p, e) as usize;
                    let ks = le_u32(p, e + 4) as usize;
                    let child = le_u64(p, e + 8);
                    if e + pos + ks > p.len() {
                        return Err(bad(e, "branch key outside the page".into()));
                    }
                    if matches!(root, Root::Inline(..)) {
                        return Err(bad(8, "inline bucket holds a branch page".into()));
                    }
                    self.walk(Root::Page(child), visited, depth + 1, f)?;
                }
                LEAF => {
                    let lf = le_u32(p, e);
                    let pos = le_u32(p, e + 4) as usize;
                    let ks = le_u32(p, e + 8) as usize;
                    let vs = le_u32(p, e + 12) as usize;
                    let ks_end = e.checked_add(pos).and_then(|x| x.checked_add(ks));
                    let vs_end = ks_end.and_then(|x| x.checked_add(vs));
                    let (Some(kend), Some(vend)) = (ks_end, vs_end) else {
                        return Err(bad(e, "leaf element overflows".into()));
                    };
                    if vend > p.len() {
                        return Err(bad(e, format!("leaf element {i} points outside the page")));
                    }
                    f(&p[e + pos..kend], &p[kend..vend], lf)?;
                }
                other => {
                    return Err(bad(
                        8,
                        format!("page flags {other:#x}: not a branch or leaf"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// One value of a top-level bucket (small buckets such as `meta`).
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, Finding> {
        let mut out = None;
        let r = self.for_each::<()>(bucket, &mut |k, v| {
            if k == key {
                out = Some(v.to_vec());
            }
            Ok(())
        });
        match r {
            Ok(_) => Ok(out),
            Err(WalkError::Format(f)) => Err(f),
            Err(WalkError::Visit(())) => Ok(out),
        }
    }
}

#[derive(Debug)]
pub enum WalkError<E> {
    Format(Finding),
    Visit(E),
}

impl<E> From<Finding> for WalkError<E> {
    fn from(f: Finding) -> Self {
        WalkError::Format(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random byte flips and truncations of a real etcd db: every outcome is Ok or a
    /// Finding, never a panic or a hang (release builds abort on panic).
    #[test]
    fn corrupted_copies_never_panic() {
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/snap/db"
        );
        let orig = std::fs::read(src).unwrap();
        let path = std::env::temp_dir().join(format!("rb-bolt-fuzz-{}", std::process::id()));
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut errors = 0;
        for round in 0..1500 {
            let mut b = orig.clone();
            if round % 10 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            for _ in 0..1 + next() % 4 {
                if b.is_empty() {
                    break;
                }
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            std::fs::write(&path, &b).unwrap();
            let Ok(db) = Db::open(&path) else {
                errors += 1;
                continue;
            };
            let mut n = 0;
            if db
                .for_each::<()>(b"key", &mut |_, _| {
                    n += 1;
                    Ok(())
                })
                .is_err()
            {
                errors += 1;
            }
            let _ = db.get(b"meta", b"consistent_index");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(errors > 0, "no corruption was ever detected");
    }

    #[test]
    fn fnv_matches_known_vector() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
