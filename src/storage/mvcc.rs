//! etcd's mvcc data on top of bbolt: bucket `key` (one entry per revision, tombstones
//! included), `mvccpb.KeyValue`, and the small buckets `meta`, `lease`, `members`, `cluster`.
//!
//! The few protobuf fields needed are decoded by hand (a varint and length-delimited reader):
//! smaller than generated code and it borrows the bytes straight from the page.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;

use super::bolt::{BoltDb, BoltError, Bucket, Direction, LeafItem};
use super::Finding;

pub const KEY_BUCKET: &[u8] = b"key";
pub const META_BUCKET: &[u8] = b"meta";
pub const LEASE_BUCKET: &[u8] = b"lease";
pub const MEMBERS_BUCKET: &[u8] = b"members";
pub const MEMBERS_REMOVED_BUCKET: &[u8] = b"members_removed";
pub const CLUSTER_BUCKET: &[u8] = b"cluster";

/// A store revision: `main` is shared by all changes of one txn, `sub` orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// Decodes a bucket `key` key: 17 bytes `BE64(main) '_' BE64(sub)`, or 18 with a trailing
    /// `'t'` for a tombstone. Returns the revision and whether it is a tombstone.
    pub fn from_key(key: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match key.len() {
            17 => false,
            18 if key[17] == b't' => true,
            _ => return None,
        };
        if key[8] != b'_' {
            return None;
        }
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&key[..8]);
        sub.copy_from_slice(&key[9..17]);
        Some((
            Revision {
                main: i64::from_be_bytes(main),
                sub: i64::from_be_bytes(sub),
            },
            tombstone,
        ))
    }

    /// The 17-byte key of this revision (a put).
    pub fn to_key(self) -> [u8; 17] {
        let mut k = [0u8; 17];
        k[..8].copy_from_slice(&self.main.to_be_bytes());
        k[8] = b'_';
        k[9..].copy_from_slice(&self.sub.to_be_bytes());
        k
    }
}

/// `mvccpb.KeyValue`, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyValue<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

/// A minimal protobuf reader: varints, length-delimited fields, skipping the rest.
struct Pb<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum PbValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Pb<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Pb { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(format!("varint cut short at byte {}", self.pos));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(format!("varint overflows 64 bits at byte {}", self.pos - 1));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    /// The next field `(number, value)`, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, PbValue<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.pos;
        let tag = self.varint()?;
        let (number, wire) = (tag >> 3, tag & 7);
        if number == 0 {
            return Err(format!("field number 0 at byte {at}"));
        }
        let value = match wire {
            0 => PbValue::Varint(self.varint()?),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if self.buf.len() - self.pos < n {
                    return Err(format!("fixed field {number} cut short at byte {at}"));
                }
                self.pos += n;
                PbValue::Fixed
            }
            2 => {
                let len = self.varint()?;
                let rest = (self.buf.len() - self.pos) as u64;
                if len > rest {
                    return Err(format!(
                        "field {number} at byte {at}: length {len} but only {rest} bytes left"
                    ));
                }
                let bytes = &self.buf[self.pos..self.pos + len as usize];
                self.pos += len as usize;
                PbValue::Bytes(bytes)
            }
            w => {
                return Err(format!(
                    "field {number} at byte {at}: unsupported wire type {w}"
                ))
            }
        };
        Ok(Some((number, value)))
    }
}

/// Decodes `mvccpb.KeyValue` (proto3: key=1, create_revision=2, mod_revision=3, version=4,
/// value=5, lease=6). Unknown fields are skipped; a wrong wire type is an error.
pub fn decode_key_value(bytes: &[u8]) -> Result<KeyValue<'_>, String> {
    let mut kv = KeyValue::default();
    let mut pb = Pb::new(bytes);
    while let Some((number, value)) = pb.field()? {
        match (number, value) {
            (1, PbValue::Bytes(b)) => kv.key = b,
            (5, PbValue::Bytes(b)) => kv.value = b,
            (2, PbValue::Varint(v)) => kv.create_revision = v as i64,
            (3, PbValue::Varint(v)) => kv.mod_revision = v as i64,
            (4, PbValue::Varint(v)) => kv.version = v as i64,
            (6, PbValue::Varint(v)) => kv.lease = v as i64,
            (1..=6, _) => return Err(format!("KeyValue field {number} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(kv)
}

/// One entry of bucket `key`: a put or (tombstone) a delete of `kv.key` at `revision`.
#[derive(Debug, Clone, Copy)]
pub struct RevisionEntry<'a> {
    pub revision: Revision,
    pub tombstone: bool,
    pub kv: KeyValue<'a>,
    /// File offset of the encoded KeyValue, for messages.
    pub value_offset: u64,
}

/// Decodes one item of bucket `key`; `Ok(None)` for a key that is not a revision (etcd writes
/// none, but a corrupted or foreign db might: skipped, reported by `check`).
fn entry<'a>(db: &BoltDb, item: &LeafItem<'a>) -> Result<Option<RevisionEntry<'a>>, BoltError> {
    let Some((revision, tombstone)) = Revision::from_key(item.key) else {
        return Ok(None);
    };
    if item.is_bucket() {
        return Ok(None);
    }
    let kv = decode_key_value(item.value).map_err(|why| {
        BoltError::Corrupt(Finding::at(
            db.path(),
            item.value_offset,
            format!(
                "bucket key, revision {}_{}: invalid mvccpb.KeyValue: {why}",
                revision.main, revision.sub
            ),
        ))
    })?;
    Ok(Some(RevisionEntry {
        revision,
        tombstone,
        kv,
        value_offset: item.value_offset,
    }))
}

/// Calls `f` on every revision in bucket `key` (puts and tombstones), oldest first or newest
/// first. Memory stays flat: one page per tree level.
pub fn for_each_revision<'a>(
    db: &'a BoltDb,
    direction: Direction,
    f: &mut dyn FnMut(&RevisionEntry<'a>) -> Result<ControlFlow<()>, BoltError>,
) -> Result<(), BoltError> {
    let bucket = db.require_bucket(KEY_BUCKET)?;
    let mut skipped = 0u64;
    db.for_each(&bucket, direction, &mut |item| match entry(db, item)? {
        Some(e) => f(&e),
        None => {
            skipped += 1;
            Ok(ControlFlow::Continue(()))
        }
    })?;
    if skipped > 0 {
        log::warn!(
            "{}: skipped {skipped} entries of bucket key that are not revisions",
            db.path().display()
        );
    }
    Ok(())
}

/// Passes a u64 (already a hash) through unchanged.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast 64-bit hash of a key (8 bytes per step, then a murmur3 finalizer). Its quality only
/// matters for speed: collisions are resolved exactly by `for_each_live`.
fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (key.len() as u64).wrapping_mul(K);
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Calls `f` on every live key at the latest revision (its newest revision is a put), newest
/// first (descending `mod_revision`).
///
/// One backward scan: the first time a key shows up it is at its newest revision. Seen keys
/// are remembered as `hash -> main revision` (16 bytes per key, not the key itself); a hash
/// seen before is confirmed by reading that revision's entries back, so a hash collision
/// never hides a key.
pub fn for_each_live<'a>(
    db: &'a BoltDb,
    f: &mut dyn FnMut(&RevisionEntry<'a>) -> Result<ControlFlow<()>, BoltError>,
) -> Result<(), BoltError> {
    for_each_live_with_hash(db, key_hash, f)
}

/// `for_each_live` with another key hash: tests pass a weak one to force collisions.
#[doc(hidden)]
pub fn for_each_live_with_hash<'a>(
    db: &'a BoltDb,
    key_hash: fn(&[u8]) -> u64,
    f: &mut dyn FnMut(&RevisionEntry<'a>) -> Result<ControlFlow<()>, BoltError>,
) -> Result<(), BoltError> {
    newest_with_hash(db, key_hash, false, f).map(drop)
}

/// Calls `f` on the newest revision of every key, newest first, deletes (tombstones)
/// included: a key whose newest entry is a tombstone is deleted at the latest revision.
/// Returns how many revisions (entries of bucket `key`) were scanned.
pub fn for_each_newest<'a>(
    db: &'a BoltDb,
    f: &mut dyn FnMut(&RevisionEntry<'a>) -> Result<ControlFlow<()>, BoltError>,
) -> Result<u64, BoltError> {
    newest_with_hash(db, key_hash, true, f)
}

/// The backward scan behind `for_each_live` and `for_each_newest`.
fn newest_with_hash<'a>(
    db: &'a BoltDb,
    key_hash: fn(&[u8]) -> u64,
    tombstones: bool,
    f: &mut dyn FnMut(&RevisionEntry<'a>) -> Result<ControlFlow<()>, BoltError>,
) -> Result<u64, BoltError> {
    let bucket = db.require_bucket(KEY_BUCKET)?;
    let mut scanned = 0u64;
    let mut seen: HashMap<u64, i64, BuildHasherDefault<IdentityHasher>> = HashMap::default();
    // Keys whose hash belongs to another key: exact, and (barring a 64-bit collision) empty.
    let mut collided: HashSet<Vec<u8>> = HashSet::new();
    for_each_revision(db, Direction::Backward, &mut |e| {
        scanned += 1;
        let h = key_hash(e.kv.key);
        let newest = match seen.get(&h) {
            None => {
                seen.insert(h, e.revision.main);
                true
            }
            Some(&main) => {
                let later = collided.contains(e.kv.key)
                    || appears_after(db, &bucket, main, e.revision, e.kv.key)?;
                if !later {
                    collided.insert(e.kv.key.to_vec());
                }
                !later
            }
        };
        if newest && (tombstones || !e.tombstone) {
            return f(e);
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(scanned)
}

/// Whether `key` has an entry at main revision `main` later than `after`.
fn appears_after(
    db: &BoltDb,
    bucket: &Bucket,
    main: i64,
    after: Revision,
    key: &[u8],
) -> Result<bool, BoltError> {
    let mut found = false;
    // Within the same txn, start right at `after`: a key repeated many times in one revision
    // (never written by etcd, but a damaged file might) then costs a seek each, not a rescan.
    let start = if after.main == main {
        after.to_key()
    } else {
        Revision { main, sub: 0 }.to_key()
    };
    db.for_each_from(bucket, &start, &mut |item| {
        let Some((rev, _)) = Revision::from_key(item.key) else {
            return Ok(ControlFlow::Continue(()));
        };
        if rev.main != main {
            return Ok(ControlFlow::Break(()));
        }
        if rev > after {
            if let Some(e) = entry(db, item)? {
                if e.kv.key == key {
                    found = true;
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(found)
}

/// What bucket `meta` holds. Every field is optional: which exist depends on the etcd version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaInfo {
    /// Raft index applied to the db.
    pub consistent_index: Option<u64>,
    /// Raft term (3.5+).
    pub term: Option<u64>,
    /// raftpb.ConfState as JSON (3.5+).
    pub conf_state: Option<String>,
    /// `"3.6.0"`-style (3.6+).
    pub storage_version: Option<String>,
    pub scheduled_compact_rev: Option<i64>,
    pub finished_compact_rev: Option<i64>,
}

/// A value of a small bucket with the file offset it was read at.
struct Located {
    bytes: Vec<u8>,
    offset: u64,
}

fn get_located(db: &BoltDb, bucket: &Bucket, key: &[u8]) -> Result<Option<Located>, BoltError> {
    let found = db.get_item(bucket, key, &mut |item| {
        Ok((!item.is_bucket()).then(|| Located {
            bytes: item.value.to_vec(),
            offset: item.value_offset,
        }))
    })?;
    Ok(found.flatten())
}

fn bad_value(db: &BoltDb, v: &Located, problem: String) -> BoltError {
    BoltError::Corrupt(Finding::at(db.path(), v.offset, problem))
}

fn be_u64(db: &BoltDb, what: &str, v: &Located) -> Result<u64, BoltError> {
    let arr: [u8; 8] = v.bytes.as_slice().try_into().map_err(|_| {
        bad_value(
            db,
            v,
            format!("{what} is {} bytes, expected 8", v.bytes.len()),
        )
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn compact_rev(db: &BoltDb, what: &str, v: &Located) -> Result<i64, BoltError> {
    match Revision::from_key(&v.bytes) {
        Some((rev, false)) => Ok(rev.main),
        _ => Err(bad_value(
            db,
            v,
            format!("{what} is not a 17-byte revision ({} bytes)", v.bytes.len()),
        )),
    }
}

fn text(db: &BoltDb, what: &str, v: Located) -> Result<String, BoltError> {
    let offset = v.offset;
    String::from_utf8(v.bytes).map_err(|_| {
        BoltError::Corrupt(Finding::at(
            db.path(),
            offset,
            format!("{what} is not UTF-8"),
        ))
    })
}

/// Reads bucket `meta` (absent bucket: all `None`).
pub fn read_meta(db: &BoltDb) -> Result<MetaInfo, BoltError> {
    let mut info = MetaInfo::default();
    let Some(bucket) = db.bucket(META_BUCKET)? else {
        return Ok(info);
    };
    let get = |key: &[u8]| get_located(db, &bucket, key);
    if let Some(v) = get(b"consistent_index")? {
        info.consistent_index = Some(be_u64(db, "bucket meta: consistent_index", &v)?);
    }
    if let Some(v) = get(b"term")? {
        info.term = Some(be_u64(db, "bucket meta: term", &v)?);
    }
    if let Some(v) = get(b"confState")? {
        info.conf_state = Some(text(db, "bucket meta: confState", v)?);
    }
    if let Some(v) = get(b"storageVersion")? {
        info.storage_version = Some(text(db, "bucket meta: storageVersion", v)?);
    }
    if let Some(v) = get(b"scheduledCompactRev")? {
        info.scheduled_compact_rev = Some(compact_rev(db, "bucket meta: scheduledCompactRev", &v)?);
    }
    if let Some(v) = get(b"finishedCompactRev")? {
        info.finished_compact_rev = Some(compact_rev(db, "bucket meta: finishedCompactRev", &v)?);
    }
    Ok(info)
}

/// `leasepb.Lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds, as granted.
    pub ttl: i64,
    /// Seconds left at the last checkpoint (3.4+, 0 when never checkpointed).
    pub remaining_ttl: i64,
}

/// Every lease in bucket `lease`, by ID.
pub fn leases(db: &BoltDb) -> Result<Vec<Lease>, BoltError> {
    let mut out = Vec::new();
    let Some(bucket) = db.bucket(LEASE_BUCKET)? else {
        return Ok(out);
    };
    db.for_each(&bucket, Direction::Forward, &mut |item| {
        let bad = |why: String| {
            BoltError::Corrupt(Finding::at(
                db.path(),
                item.value_offset,
                format!("bucket lease: invalid leasepb.Lease: {why}"),
            ))
        };
        let mut lease = Lease {
            id: 0,
            ttl: 0,
            remaining_ttl: 0,
        };
        let mut pb = Pb::new(item.value);
        while let Some((n, v)) = pb.field().map_err(bad)? {
            match (n, v) {
                (1, PbValue::Varint(v)) => lease.id = v as i64,
                (2, PbValue::Varint(v)) => lease.ttl = v as i64,
                (3, PbValue::Varint(v)) => lease.remaining_ttl = v as i64,
                (1..=3, _) => return Err(bad(format!("field {n} has the wrong wire type"))),
                _ => {}
            }
        }
        out.push(lease);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// A member record: its ID (from the hex key) and the JSON etcd stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub json: String,
}

fn hex_keys(db: &BoltDb, name: &[u8]) -> Result<Vec<Member>, BoltError> {
    let mut out = Vec::new();
    let Some(bucket) = db.bucket(name)? else {
        return Ok(out);
    };
    let bucket_name = String::from_utf8_lossy(name).into_owned();
    db.for_each(&bucket, Direction::Forward, &mut |item| {
        let id = std::str::from_utf8(item.key)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                BoltError::Corrupt(Finding::at(
                    db.path(),
                    item.value_offset - item.key.len() as u64,
                    format!(
                        "bucket {bucket_name}: key {:?} is not a hex member ID",
                        String::from_utf8_lossy(item.key)
                    ),
                ))
            })?;
        out.push(Member {
            id,
            json: String::from_utf8_lossy(item.value).into_owned(),
        });
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Members in bucket `members` (the JSON holds id, name, peerURLs, clientURLs, isLearner).
pub fn members(db: &BoltDb) -> Result<Vec<Member>, BoltError> {
    hex_keys(db, MEMBERS_BUCKET)
}

/// IDs in bucket `members_removed`.
pub fn removed_members(db: &BoltDb) -> Result<Vec<u64>, BoltError> {
    Ok(hex_keys(db, MEMBERS_REMOVED_BUCKET)?
        .into_iter()
        .map(|m| m.id)
        .collect())
}

/// `cluster/clusterVersion` (e.g. `"3.4.0"`), if set.
pub fn cluster_version(db: &BoltDb) -> Result<Option<String>, BoltError> {
    let Some(bucket) = db.bucket(CLUSTER_BUCKET)? else {
        return Ok(None);
    };
    match get_located(db, &bucket, b"clusterVersion")? {
        Some(v) => Ok(Some(text(db, "bucket cluster: clusterVersion", v)?)),
        None => Ok(None),
    }
}

/// The store's current revision as etcd computes it on start: the highest main revision in
/// bucket `key`, at least `finishedCompactRev` (0 for an empty store).
pub fn current_revision(db: &BoltDb) -> Result<i64, BoltError> {
    let mut newest = 0;
    if let Some(bucket) = db.bucket(KEY_BUCKET)? {
        db.for_each(&bucket, Direction::Backward, &mut |item| {
            if let Some((rev, _)) = Revision::from_key(item.key) {
                newest = rev.main;
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
    }
    let compacted = read_meta(db)?.finished_compact_rev.unwrap_or(0);
    Ok(newest.max(compacted))
}

/// mvcc-level integrity: every entry of bucket `key` is a revision key with a decodable
/// KeyValue whose mod_revision matches (puts), and bucket `meta` decodes. Stops after a
/// bounded number of findings.
pub fn check(db: &BoltDb) -> Vec<Finding> {
    const MAX: usize = 1000;
    let mut findings = Vec::new();
    match db.bucket(KEY_BUCKET) {
        Ok(Some(bucket)) => {
            let walk = db.for_each(&bucket, Direction::Forward, &mut |item| {
                if findings.len() >= MAX {
                    return Ok(ControlFlow::Break(()));
                }
                let key_offset = item.value_offset - item.key.len() as u64;
                match entry(db, item) {
                    Ok(None) => findings.push(Finding::at(
                        db.path(),
                        key_offset,
                        format!(
                            "bucket key: key of {} bytes is not a revision",
                            item.key.len()
                        ),
                    )),
                    Ok(Some(e)) if !e.tombstone && e.kv.mod_revision != e.revision.main => findings
                        .push(Finding::at(
                            db.path(),
                            e.value_offset,
                            format!(
                                "bucket key, revision {}_{}: mod_revision is {}",
                                e.revision.main, e.revision.sub, e.kv.mod_revision
                            ),
                        )),
                    Ok(Some(_)) => {}
                    Err(BoltError::Corrupt(f)) => findings.push(f),
                    Err(e) => return Err(e),
                }
                Ok(ControlFlow::Continue(()))
            });
            if let Err(e) = walk {
                findings.push(error_finding(db, e));
            }
        }
        Ok(None) => {}
        Err(e) => findings.push(error_finding(db, e)),
    }
    if let Err(e) = read_meta(db) {
        findings.push(error_finding(db, e));
    }
    findings
}

fn error_finding(db: &BoltDb, e: BoltError) -> Finding {
    match e {
        BoltError::Corrupt(f) => f,
        other => Finding::in_file(db.path(), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_round_trip_and_reject_other_shapes() {
        let r = Revision { main: 5, sub: 2 };
        let k = r.to_key();
        assert_eq!(Revision::from_key(&k), Some((r, false)));
        let mut t = k.to_vec();
        t.push(b't');
        assert_eq!(Revision::from_key(&t), Some((r, true)));
        t[17] = b'x';
        assert_eq!(Revision::from_key(&t), None);
        assert_eq!(Revision::from_key(b"compact_rev_key"), None);
        let mut bad = k;
        bad[8] = b'-';
        assert_eq!(Revision::from_key(&bad), None);
    }

    #[test]
    fn key_hash_tells_apart_keys_that_differ_in_length_or_padding() {
        let keys: [&[u8]; 6] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"/registry/pods/a",
            b"/registry/pods/b",
        ];
        let hashes: HashSet<u64> = keys.iter().map(|k| key_hash(k)).collect();
        assert_eq!(hashes.len(), keys.len());
    }

    /// `for_each_newest` agrees with a forward fold over every revision (the last state of
    /// each key wins), tombstones included, on a db written by real etcd 3.4.23.
    #[test]
    fn newest_matches_a_forward_fold_of_a_real_db() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/snap/db"
        );
        let db = BoltDb::open(std::path::Path::new(path)).unwrap();
        let mut fold: HashMap<Vec<u8>, (Revision, bool)> = HashMap::new();
        let mut total = 0u64;
        for_each_revision(&db, Direction::Forward, &mut |e| {
            total += 1;
            fold.insert(e.kv.key.to_vec(), (e.revision, e.tombstone));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        let mut got: HashMap<Vec<u8>, (Revision, bool)> = HashMap::new();
        let mut last = None;
        let scanned = for_each_newest(&db, &mut |e| {
            assert!(last.is_none_or(|l| e.revision < l), "newest first");
            last = Some(e.revision);
            assert!(got
                .insert(e.kv.key.to_vec(), (e.revision, e.tombstone))
                .is_none());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(scanned, total);
        assert_eq!(got, fold);
        let mut live = 0;
        for_each_live(&db, &mut |_| {
            live += 1;
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert_eq!(live, fold.values().filter(|(_, t)| !t).count());
    }

    #[test]
    fn decodes_the_documented_key_value() {
        // From etcd-formats.md 5.1: revision 5 of /registry/a.
        let bytes = b"\x0a\x0b/registry/a\x10\x02\x18\x05\x20\x02\x2a\x03va2";
        let kv = decode_key_value(bytes).unwrap();
        assert_eq!(kv.key, b"/registry/a");
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
            (2, 5, 2, 0)
        );
        assert_eq!(kv.value, b"va2");
    }

    #[test]
    fn key_value_decoding_rejects_truncation_and_bad_wire_types() {
        let bytes = b"\x0a\x0b/registry/a\x10\x02";
        for cut in 1..bytes.len() {
            // Every proper prefix either ends on a field boundary or is an error; never a panic.
            let _ = decode_key_value(&bytes[..cut]);
        }
        assert!(decode_key_value(b"\x0a\x0b/reg").is_err());
        assert!(decode_key_value(b"\x10").is_err());
        assert!(decode_key_value(b"\x0a\x05").is_err());
        assert!(decode_key_value(b"\x08\x01").is_err(), "key as varint");
        assert!(decode_key_value(b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f").is_err());
    }
}
