//! Every step proves it kept the data. Before a step, what the member serves is recorded: the
//! key count and a hash over every key, value, create/mod revision, version and lease of the
//! live keyspace, read through the JSON gateway in pages at one revision, plus `HashKV` at that
//! revision where the gateway has it (later 3.5 patches). After the step the target etcd must
//! serve the same, or the migration fails with `step N changed the data (...)` and the data dir
//! is put back. The figures go to the log.
//!
//! Which steps: those that change the data dir and have a bundled etcd on both sides:
//! - `Upgrade`, `SchemaDowngrade` (in place): backup to `<dir>/.bak` and the journal
//!   `<dir>/.step-backup` (holding the step's result) first; before = the previous verified
//!   step's after, else the current version started once; after = read while the step's etcd
//!   runs (Upgrade) or the target started once. A mismatch puts the backup back. A rerun after
//!   a crash inside the step finds the journal (whose result `version.txt` does not hold yet)
//!   and puts the backup back before redoing the step.
//! - `Downgrade`: before = read from the etcd that takes the snapshot; after = the target
//!   started on `<dir>/.restore` before the swap, so a mismatch leaves the data dir untouched.
//! - A member of several (`--initial-cluster`): an extra etcd start only gets ready with every
//!   member at the same point, and a read while the step's etcd runs races the other members
//!   stopping theirs, so it is proved OFFLINE from `member/snap/db` ([`offline`]), the same
//!   fingerprint the gateway gives: before = the db at its revision R (etcd stopped, migrate
//!   holds the lock); after = the db after the step folded back to R (mvcc keeps history).
//!   The db may lag its WAL (committed entries not applied when etcd stopped: seen on 3.3.25
//!   and 3.4.23 members, db index 71 of 72 committed): etcd applies them on its next start as
//!   revisions after R, as it applies the other members' writes, so they are not part of
//!   "before" and cannot hide a loss at or below R. A db compacted past R cannot show it and
//!   fails, as a db behind R does. In place (upgrade): with the backup and journal, put back on
//!   a mismatch. Downgrade: the restored db, checked before the swap.
//! - `MigrateV2ToV3`: key by key, not by a hash (the keyspace changes API). Before =
//!   the v2 files read offline after the step's backup (a 16-byte hash per value, not the
//!   value); after = read through v3 while the step's etcd runs (after the leases), each key
//!   as `etcdctl migrate` maps it ([`v2v3_differs`]). A mismatch puts the backup back (in
//!   `run.rs`). A member of several reads its converted db offline instead, once its etcd
//!   stopped (after waiting for the other members), with the same comparison (`v2v3`).
//! - `RollbackV3ToV2`: offline, key by key. Before = the live v3 keys read from the db; after
//!   = the v2 store rollback2 wrote, read back like `etcd-inspect`: each key as `/1<key>` with
//!   its value, an expiry exactly for leased keys, nothing else ([`v3v2_first_difference`]).
//!   A mismatch puts the backup back (in `run.rs`). The backup has the step journal (an
//!   etcd2 result): a crash before the proof passed, or inside the put-back, is put back by
//!   the rerun's leftovers scan (`Leftover::PutBack`), never trusting rollback2's output.
//! - `WriteVersion` changes no data.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::plan::Step;
use super::run::{MigrateError, Runner};
use crate::datadir::{remove_tree, DataDir};
use crate::etcd::client::{gateway_prefix, ClientError, HttpClient};
use crate::version::{sync_dir, EtcdVersion, VersionPair};

pub mod offline;
mod v2v3;

pub(super) use v2v3::after_v2v3_offline;

/// Keys per range request; shrunk when a page would exceed the client's body limit.
const PAGE: u64 = 10_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a member serves, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub revision: i64,
    pub keys: u64,
    /// FNV-1a 64 over every live key's fields, length-prefixed, in key order.
    pub hash: u64,
    /// etcd's own `HashKV` at `revision`, where the gateway serves it.
    pub hash_kv: Option<u32>,
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keys at revision {}, hash {:016x}",
            self.keys, self.revision, self.hash
        )?;
        if let Some(h) = self.hash_kv {
            write!(f, ", HashKV {h}")?;
        }
        Ok(())
    }
}

/// The differences between `before` and `after`; `Ok` when the after serves the same.
/// `HashKV` is compared only when both sides served it.
pub fn compare(before: &Fingerprint, after: &Fingerprint) -> Result<(), String> {
    let mut diffs = Vec::new();
    if before.keys != after.keys {
        diffs.push(format!("{} keys before, {} after", before.keys, after.keys));
    }
    if before.revision != after.revision {
        diffs.push(format!(
            "revision {} before, {} after",
            before.revision, after.revision
        ));
    }
    if before.hash != after.hash {
        diffs.push(format!(
            "keyspace hash {:016x} before, {:016x} after",
            before.hash, after.hash
        ));
    }
    if let (Some(a), Some(b)) = (before.hash_kv, after.hash_kv) {
        if a != b {
            diffs.push(format!("HashKV {a} before, {b} after"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join(", "))
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn field(&mut self, bytes: &[u8]) {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn int(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or(0)
}

/// The gateway prefix `version` should serve, else the first of `/v3`, `/v3beta` that does.
fn gateway(client: &HttpClient, base: &str, version: &EtcdVersion) -> Result<&'static str, String> {
    let mut last = None;
    for gw in [
        gateway_prefix(version.major(), version.minor()),
        "/v3",
        "/v3beta",
    ] {
        let probe = client.post_json(
            &format!("{base}{gw}/kv/range"),
            &json!({"key": "AA=="}),
            REQUEST_TIMEOUT,
        );
        match probe {
            Err(e @ ClientError::Status { status: 404, .. }) => last = Some(e),
            Err(e) => return Err(format!("reading the keyspace: {e}")),
            Ok(_) => return Ok(gw),
        }
    }
    Err(format!(
        "reading the keyspace: no JSON gateway found: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Reads the whole live keyspace of the etcd `version` at `base` in pages at one revision.
pub fn fingerprint(
    client: &HttpClient,
    base: &str,
    version: &EtcdVersion,
) -> Result<Fingerprint, String> {
    scan(client, base, version, &mut |_| {})
}

/// [`fingerprint`], showing each key (the gateway's JSON object) to `visit` in key order.
fn scan(
    client: &HttpClient,
    base: &str,
    version: &EtcdVersion,
    visit: &mut dyn FnMut(&Value),
) -> Result<Fingerprint, String> {
    let gw = gateway(client, base, version)?;
    let url = format!("{base}{gw}/kv/range");
    let (mut from, mut revision, mut limit) = (vec![0u8], 0i64, PAGE);
    let (mut fnv, mut keys) = (Fnv::new(), 0u64);
    loop {
        let body = json!({"key": crate::base64::encode(&from), "range_end": "AA==",
                          "limit": limit, "revision": revision.to_string()});
        let mut page = match client.post_json(&url, &body, REQUEST_TIMEOUT) {
            Err(ClientError::TooLarge { .. }) if limit > 1 => {
                limit = (limit / 10).max(1);
                continue;
            }
            r => r.map_err(|e| format!("reading the keyspace: {e}"))?,
        };
        if revision == 0 {
            revision = int(&page["header"]["revision"]);
        }
        let kvs = match page.get_mut("kvs").map(Value::take) {
            Some(Value::Array(kvs)) => kvs,
            _ => Vec::new(),
        };
        for kv in &kvs {
            for name in ["key", "value"] {
                fnv.field(kv[name].as_str().unwrap_or("").as_bytes());
            }
            for name in ["create_revision", "mod_revision", "version", "lease"] {
                fnv.field(&int(&kv[name]).to_le_bytes());
            }
            visit(kv);
        }
        keys += kvs.len() as u64;
        let more = page["more"].as_bool() == Some(true);
        match kvs.last() {
            Some(last) if more => {
                from = crate::base64::decode(last["key"].as_str().unwrap_or(""))
                    .ok_or("reading the keyspace: a key that is not base64")?;
                from.push(0);
            }
            _ => break,
        }
    }
    // The gateway maps HashKV in later 3.5 patches only (3.5.16 and 3.5.30 do, 3.5.1 not).
    let hash_kv = match client.post_json(
        &format!("{base}{gw}/maintenance/hashkv"),
        &json!({"revision": revision.to_string()}),
        REQUEST_TIMEOUT,
    ) {
        Ok(r) => r["hash"].as_u64().map(|h| h as u32),
        Err(ClientError::Status { status: 404, .. }) => None,
        Err(e) => return Err(format!("HashKV: {e}")),
    };
    Ok(Fingerprint {
        revision,
        keys,
        hash: fnv.0,
        hash_kv,
    })
}

/// `<dir>/.step-backup`: an in-place step's backup is in `<dir>/.bak`; holds the step's
/// result. The leftovers scan (`crate::datadir::leftovers`) knows it too.
fn journal(data: &DataDir) -> PathBuf {
    data.entry(crate::datadir::names::STEP_JOURNAL)
}

impl Runner<'_> {
    /// The etcd at the migration's client URL, read now, with the figures logged.
    pub(super) fn record(
        &self,
        version: &EtcdVersion,
        when: &str,
    ) -> Result<Fingerprint, MigrateError> {
        let t = Instant::now();
        let fp = fingerprint(&self.client, &self.client_url(), version).map_err(|e| {
            MigrateError::Other(format!(
                "step {}: cannot read what etcd {version} serves {when}: {e}",
                self.step_no.get()
            ))
        })?;
        log::info!(
            "step {}: {when}, etcd {version} serves {fp} (read in {:?})",
            self.step_no.get(),
            t.elapsed()
        );
        Ok(fp)
    }

    /// `Err("step N changed the data (...)")` unless `after` serves what `before` did.
    fn changed(&self, before: &Fingerprint, after: &Fingerprint) -> Result<(), String> {
        let n = self.step_no.get();
        compare(before, after).map_err(|diff| format!("step {n} changed the data ({diff})"))?;
        log::info!("step {n}: the data is the same after the step");
        Ok(())
    }

    /// Runs step `n` with its proof (see the module doc). `carried` is what the previous
    /// verified step left the data serving; returns what this one leaves, when known.
    pub(super) fn verified_step(
        &self,
        n: usize,
        step: &Step,
        current: &VersionPair,
        carried: Option<Fingerprint>,
    ) -> Result<Option<Fingerprint>, MigrateError> {
        self.step_no.set(n);
        let (run_before, target) = match step {
            Step::Upgrade { to, .. } => (self.runnable(&current.version), to.clone()),
            Step::SchemaDowngrade { run, to, .. } => (Some(run.clone()), to.clone()),
            Step::Downgrade { .. } if !self.single_member() => return self.cluster_step(step),
            Step::Downgrade { .. } => {
                self.step(step)?;
                return Ok(self.last_after.take());
            }
            Step::WriteVersion { .. } => {
                self.step(step)?;
                log::info!("step {n}: version.txt only, no data touched");
                return Ok(carried);
            }
            Step::MigrateV2ToV3 { .. } => {
                // Proved inside the step: `before_v2v3`, `after_v2v3`.
                self.last_after.set(None);
                self.step(step)?;
                return Ok(self.last_after.take());
            }
            Step::RollbackV3ToV2 { .. } => {
                // Proved inside the step, offline: `before_v3v2`, `after_v3v2`. No etcd 3
                // follows to compare a keyspace hash with.
                self.step(step)?;
                return Ok(None);
            }
        };
        if !self.single_member() {
            return self.cluster_step(step);
        }
        let t = Instant::now();
        self.backup_for_step(&step.result())?;
        log::info!("step {n}: backed up in {:?}", t.elapsed());
        let before = match (carried, run_before) {
            (Some(fp), _) => Some(fp),
            (None, Some(v)) => {
                let t = Instant::now();
                let etcd = self.start_etcd(&v)?;
                let fp = self.record(&v, "before the step");
                self.stop_etcd(etcd)?;
                log::info!(
                    "step {n}: extra start of etcd {v} to read the data took {:?}",
                    t.elapsed()
                );
                Some(fp?)
            }
            (None, None) => {
                log::warn!(
                    "step {n}: not verified: no etcd {} is bundled to read the data before it",
                    current.version.minor_string()
                );
                None
            }
        };
        self.last_after.set(None);
        self.step(step)?;
        let after = match self.last_after.take() {
            Some(fp) => fp,
            None => {
                let etcd = self.start_etcd(&target)?;
                let fp = self.record(&target, "after the step");
                self.stop_etcd(etcd)?;
                fp?
            }
        };
        if let Some(before) = &before {
            if let Err(e) = self.changed(before, &after) {
                return Err(self.undo_step(MigrateError::Other(e))?);
            }
        }
        Ok(Some(after))
    }

    /// A step on a member of several, proved offline (see the module doc): the db before
    /// the step at its revision R; after it, the db at R (in place: the data dir's, the
    /// backup put back on a mismatch; a downgrade: the restored one, in `after_downgrade`).
    fn cluster_step(&self, step: &Step) -> Result<Option<Fingerprint>, MigrateError> {
        let n = self.step_no.get();
        let db = self.data.member_path().join("snap/db");
        if !db.exists() {
            // etcd 2.x data (etcd2 storage between 2.x minors): no v3 keyspace to compare.
            log::warn!(
                "step {n}: not verified: no {} before the step",
                db.display()
            );
            self.step(step)?;
            return Ok(None);
        }
        let in_place = !matches!(step, Step::Downgrade { .. });
        if in_place {
            let t = Instant::now();
            self.backup_for_step(&step.result())?;
            log::info!("step {n}: backed up in {:?}", t.elapsed());
        }
        let before =
            read_db(self, &db, None, "before the step").map_err(|e| offline_failure(n, e))?;
        if !in_place {
            self.offline_before.set(Some(before.clone()));
        }
        log_applied(self, &self.data.member_path(), "before the step");
        self.step(step)?;
        if in_place {
            log_applied(self, &self.data.member_path(), "after the step");
            let proof = read_db(self, &db, Some(before.revision), "after the step")
                .map_err(|e| offline_failure(n, e))
                .and_then(|after| self.changed(&before, &after).map_err(MigrateError::Other));
            if let Err(e) = proof {
                return Err(self.undo_step(e)?);
            }
        }
        Ok(None)
    }

    /// After a step that changed the data or cannot show it did not (`why`): its backup put
    /// back, its journal gone; the error to fail with.
    fn undo_step(&self, why: MigrateError) -> Result<MigrateError, MigrateError> {
        self.put_back_backup()?;
        finish_step(self.data)?;
        let back = format!(
            "the data from before the step is back in {}, its backup is kept in {}",
            self.data.path().display(),
            self.data.backup_path().display()
        );
        Ok(noting(why, &back))
    }

    /// Extra etcd starts only get ready with a quorum: only a lone member makes them.
    pub(super) fn single_member(&self) -> bool {
        self.cfg.initial_cluster.split(',').count() == 1
    }

    /// The bundled etcd that reads `v`'s data: `v` itself, else its minor's highest patch.
    fn runnable(&self, v: &EtcdVersion) -> Option<EtcdVersion> {
        if self.cfg.bundled.contains(v) {
            return Some(v.clone());
        }
        self.cfg
            .bundled
            .iter()
            .filter(|b| b.major_minor_equals(v) && !b.is_prerelease())
            .max()
            .cloned()
    }

    /// Backs up to `<dir>.bak` with the journal; a journal left by a crash inside this same
    /// step puts that backup back first.
    pub(super) fn backup_for_step(&self, result: &VersionPair) -> Result<(), MigrateError> {
        let j = journal(self.data);
        let io = |e: std::io::Error| MigrateError::Other(format!("{}: {e}", j.display()));
        if puts_back(self.data, result) {
            log::warn!(
                "an earlier run was interrupted inside this step; putting its backup {} back \
                 before redoing it",
                self.data.backup_path().display()
            );
            return self.put_back_backup();
        }
        self.data.backup_copy()?;
        fs::write(&j, result.to_string())
            .and_then(|_| sync_dir(self.data.path()))
            .map_err(io)
    }
}

/// Whether the step ending at `result` starts by putting `.bak` back: its journal says an
/// earlier run was interrupted inside it, after its backup.
pub(super) fn puts_back(data: &DataDir, result: &VersionPair) -> bool {
    let j = journal(data);
    data.backup_path().exists()
        && fs::read_to_string(&j).is_ok_and(|r| r.trim() == result.to_string())
}

/// After `version.txt` holds a step's result, its journal is stale.
pub fn finish_step(data: &DataDir) -> Result<(), MigrateError> {
    remove_tree(&journal(data))?;
    Ok(())
}

/// `path`'s db read offline ([`offline`]) at `at` (`None`: its current revision), logged.
/// The test hook `offline-lose-first-key` drops the first key of a read at a given revision.
fn read_db(
    r: &Runner,
    path: &Path,
    at: Option<i64>,
    when: &str,
) -> Result<Fingerprint, offline::OfflineError> {
    let t = Instant::now();
    let lose = at.is_some() && super::run::test_hook("offline-lose-first-key");
    if lose {
        log::warn!("test hook: the first key of the db is dropped from what was read");
    }
    let fp = offline::db_fingerprint_losing(path, at, lose)?;
    log::info!(
        "step {}: {when}, the db holds {fp} (read offline from {} in {:?})",
        r.step_no.get(),
        path.display(),
        t.elapsed()
    );
    Ok(fp)
}

/// How far the db has applied the WAL, for the log: a db may lag its WAL (entries committed,
/// not applied yet when etcd stopped); etcd applies them again when it starts, as revisions
/// after the one the proof compares at, so they are not part of "before".
fn log_applied(r: &Runner, member: &Path, when: &str) {
    match offline::applied(member) {
        Ok(a) => log::info!("step {}: {when}, {a}", r.step_no.get()),
        Err(e) => log::warn!("step {}: {when}: {e}", r.step_no.get()),
    }
}

/// An offline read that gave no fingerprint, as step `n`'s error: a failed read keeps its
/// kind (I/O is not damage); a db that cannot show revision R says why.
fn offline_failure(n: usize, e: offline::OfflineError) -> MigrateError {
    match e {
        offline::OfflineError::Read(e) => MigrateError::During {
            doing: format!("step {n} cannot show it kept the data"),
            source: Box::new(MigrateError::Member(e.into())),
        },
        e @ offline::OfflineError::Behind { .. } => {
            MigrateError::Other(format!("step {n} changed the data ({e})"))
        }
        e => MigrateError::Other(format!("step {n} cannot show it kept the data: {e}")),
    }
}

/// `e` with what was done about it (`note`), keeping its kind.
fn noting(e: MigrateError, note: &str) -> MigrateError {
    match e {
        MigrateError::Other(why) => MigrateError::Other(format!("{why}; {note}")),
        MigrateError::During { doing, source } => MigrateError::During {
            doing: format!("{doing} ({note})"),
            source,
        },
        e => MigrateError::During {
            doing: note.to_string(),
            source: Box::new(e),
        },
    }
}

/// The start of a downgrade: a lone member reads the etcd that takes the snapshot; a member
/// of several was read offline before (`cluster_step`): `None`.
pub(super) fn before_downgrade(
    r: &Runner,
    run: &EtcdVersion,
) -> Result<Option<Fingerprint>, MigrateError> {
    if !r.single_member() {
        return Ok(None);
    }
    r.record(run, "before the step").map(Some)
}

/// The end of a downgrade, before the swap: `restored` must hold what `before` recorded
/// (a lone member: the target started on it serves it; a member of several: its db read
/// offline at the revision the db had before the step). Else `restored` is dropped and the
/// data dir stays as it was.
pub(super) fn after_downgrade(
    r: &Runner,
    before: Option<&Fingerprint>,
    to: &EtcdVersion,
    restored: &Path,
) -> Result<(), MigrateError> {
    let untouched = |e: MigrateError| -> Result<(), MigrateError> {
        remove_tree(restored)?;
        let note = format!("the data dir {} was not changed", r.data.path().display());
        Err(noting(e, &note))
    };
    let Some(before) = before else {
        let Some(before) = r.offline_before.take() else {
            return Ok(());
        };
        let db = restored.join("member/snap/db");
        let proof = read_db(r, &db, Some(before.revision), "after the restore")
            .map_err(|e| offline_failure(r.step_no.get(), e))
            .and_then(|after| r.changed(&before, &after).map_err(MigrateError::Other));
        return match proof {
            Ok(()) => Ok(()),
            Err(e) => untouched(e),
        };
    };
    let t = Instant::now();
    let etcd = r.start_etcd_on(to, restored)?;
    let after = r.record(to, "after the restore");
    r.stop_etcd(etcd)?;
    log::info!(
        "step {}: extra start of etcd {to} on the restored data took {:?}",
        r.step_no.get(),
        t.elapsed()
    );
    let after = after?;
    if let Err(e) = r.changed(before, &after) {
        return untouched(MigrateError::Other(e));
    }
    r.last_after.set(Some(after));
    Ok(())
}

/// A v2 file node (dirs become nothing) as `etcdctl migrate` turns it into a v3 key: the
/// path without the store's `/1`, the value, create/mod revision = created/modified index,
/// version 1, no lease. The value is kept as its hash ([`value_hash`]): 16 bytes a key
/// instead of the value, so the proof of a large store holds no second copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2File {
    pub key: Vec<u8>,
    pub value_hash: u128,
    pub created: i64,
    pub modified: i64,
}

/// FNV-1a 128 of a value: an accidental change (a lost, cut or swapped value) changes it
/// with probability 1 - 2^-128; no adversary writes the v2 store between our two reads.
pub fn value_hash(value: &[u8]) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in value {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// One v3 key's fields as the etcd2 -> etcd3 proof compares them (the value as its hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V3Fields {
    pub value_hash: u128,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl V3Fields {
    /// A key as the JSON gateway serves it.
    pub fn of_gateway(kv: &Value) -> V3Fields {
        let value = crate::base64::decode(kv["value"].as_str().unwrap_or("")).unwrap_or_default();
        V3Fields {
            value_hash: value_hash(&value),
            create_revision: int(&kv["create_revision"]),
            mod_revision: int(&kv["mod_revision"]),
            version: int(&kv["version"]),
            lease: int(&kv["lease"]),
        }
    }
}

/// What one v3 key must be after etcd2 -> etcd3: what `file` maps to, except that a key under
/// `ttl_dir` was re-put with a lease (a new mod revision and version; same create revision).
/// `None`: it is; else what differs.
pub fn v2v3_differs(file: &V2File, kv: &V3Fields, ttl_dir: &[u8]) -> Option<&'static str> {
    let leased = file.key.starts_with(ttl_dir);
    if kv.value_hash != file.value_hash {
        Some("another value after")
    } else if kv.create_revision != file.created {
        Some("another create revision after")
    } else if leased && kv.lease == 0 {
        Some("no lease after")
    } else if !leased && (kv.mod_revision != file.modified || kv.version != 1 || kv.lease != 0) {
        Some("another mod revision, version or lease after")
    } else {
        None
    }
}

/// The v2 files of `data`'s member, read offline (snapshot + every WAL entry after it, as
/// `etcdctl migrate` rebuilds the v2 store), sorted by key bytes like a v3 range.
pub fn v2_files(data: &DataDir) -> Result<Vec<V2File>, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mut rec = crate::storage::member::Member::at(data.path(), None)
        .recover(now)
        .map_err(|e| format!("reading the v2 store: {e}"))?;
    // `etcdctl migrate` applies every WAL entry, committed or not (a lone member's etcd
    // would commit them on its next start).
    let commit = rec.wal.hard_state.map_or(rec.start().index, |h| h.commit);
    let tail = rec.wal.entries.partition_point(|e| e.index <= commit);
    rec.store.replay_entries(&rec.wal.entries[tail..], now);
    // Only the store is needed from here: the WAL goes first (the snapshot's raw data went
    // with the member).
    rec.wal.entries = Vec::new();
    let mut files = Vec::new();
    if let Some(root) = rec.store.get("/1") {
        root.walk(&mut |n| {
            if !n.is_dir() {
                files.push(V2File {
                    key: v3_key(n),
                    value_hash: value_hash(n.value.as_bytes()),
                    created: n.created_index as i64,
                    modified: n.modified_index as i64,
                });
            }
        });
    }
    files.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(files)
}

/// The start of etcd2 -> etcd3, before `etcdctl migrate`: the v2 files, logged.
pub(super) fn before_v2v3(r: &Runner) -> Result<Vec<V2File>, MigrateError> {
    let n = r.step_no.get();
    let t = Instant::now();
    let files = v2_files(r.data).map_err(|e| MigrateError::Other(format!("step {n}: {e}")))?;
    let mut fnv = Fnv::new();
    for f in &files {
        fnv.field(&f.key);
        fnv.field(&f.value_hash.to_le_bytes());
    }
    log::info!(
        "step {n}: before the step, the v2 store holds {} files, hash of keys and value hashes \
         {:016x} (read in {:?})",
        files.len(),
        fnv.0,
        t.elapsed()
    );
    Ok(files)
}

/// The end of etcd2 -> etcd3 on a lone member, while `at` runs on the converted data: every
/// v2 file must be served as [`v2v3_differs`] says, and nothing else. `Ok(Err(diff))` on a
/// difference.
pub(super) fn after_v2v3(
    r: &Runner,
    at: &EtcdVersion,
    before: &[V2File],
) -> Result<Result<(), String>, MigrateError> {
    let n = r.step_no.get();
    let mut check = v2v3::Check::new(before, &r.cfg.ttl_keys_directory);
    let t = Instant::now();
    let fp = scan(&r.client, &r.client_url(), at, &mut |kv| {
        let key = crate::base64::decode(kv["key"].as_str().unwrap_or("")).unwrap_or_default();
        check.visit(&key, &V3Fields::of_gateway(kv));
    })
    .map_err(|e| {
        MigrateError::Other(format!(
            "step {n}: cannot read what etcd {at} serves after the step: {e}"
        ))
    })?;
    let verdict = check.finish(
        r,
        &format!("etcd {at} serves"),
        &format!("{fp} (read in {:?})", t.elapsed()),
    );
    if verdict.is_ok() {
        r.last_after.set(Some(fp));
    }
    Ok(verdict)
}

/// A live v3 key as rollback2 must leave it in the v2 store: the file `/1<key>`, the same
/// value, an expiry exactly when the key had a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Key {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub leased: bool,
}

/// The live v3 keys of `data`'s db that rollback2 converts (those starting with `/`; the
/// others are skipped as the original did and logged by rollback2), sorted by key bytes.
pub fn v3_keys(data: &DataDir) -> Result<Vec<V3Key>, String> {
    let path = data.member_path().join("snap/db");
    let db = crate::storage::bolt::BoltDb::open(&path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    crate::storage::mvcc::for_each_live(&db, &mut |e| {
        if e.kv.key.first() == Some(&b'/') {
            keys.push(V3Key {
                key: e.kv.key.to_vec(),
                value: e.kv.value.to_vec(),
                leased: e.kv.lease != 0,
            });
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .map_err(|e| format!("reading {}: {e}", path.display()))?;
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(keys)
}

/// The v2 store rollback2 wrote, as v3 keys: every file under `/1` (an empty directory,
/// which no v3 key makes, counts as a key with no value), sorted by key bytes.
pub fn v2_store_keys(data: &DataDir) -> Result<Vec<V3Key>, String> {
    // `now` = 0: no expiry applies, so a leased key is read back as written.
    let rec = crate::storage::member::Member::at(data.path(), None)
        .recover(0)
        .map_err(|e| format!("reading the v2 store: {e}"))?;
    let mut keys = Vec::new();
    if let Some(root) = rec.store.get("/1") {
        root.walk(&mut |n| {
            let empty_dir = n.is_dir() && n.children.as_ref().is_none_or(|c| c.is_empty());
            if (!n.is_dir() || empty_dir) && n.path != "/1" {
                keys.push(V3Key {
                    key: v3_key(n),
                    value: n.value.as_bytes().to_vec(),
                    leased: n.expire_unix_nanos().is_some(),
                });
            }
        });
    }
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(keys)
}

/// The first difference between the v3 keys before and the v2 store after, or `None`.
pub fn v3v2_first_difference(before: &[V3Key], after: &[V3Key]) -> Option<(Vec<u8>, &'static str)> {
    let (mut i, mut j) = (0, 0);
    loop {
        match (before.get(i), after.get(j)) {
            (None, None) => return None,
            (Some(b), a) if a.is_none_or(|a| b.key < a.key) => {
                return Some((b.key.clone(), "missing after"))
            }
            (b, Some(a)) if b.is_none_or(|b| a.key < b.key) => {
                return Some((a.key.clone(), "in the v2 store after, not a v3 key before"))
            }
            (Some(b), Some(a)) => {
                if a.value != b.value {
                    return Some((b.key.clone(), "another value after"));
                }
                if a.leased != b.leased {
                    return Some((
                        b.key.clone(),
                        "an expiry without a lease, or no expiry for a lease",
                    ));
                }
                i += 1;
                j += 1;
            }
            _ => unreachable!("both sides covered"),
        }
    }
}

fn key_hash(keys: &[V3Key]) -> u64 {
    let mut fnv = Fnv::new();
    for k in keys {
        fnv.field(&k.key);
        fnv.field(&k.value);
    }
    fnv.0
}

/// The start of etcd3 -> etcd2 (offline, before rollback2): the live v3 keys, logged.
pub(super) fn before_v3v2(r: &Runner) -> Result<Vec<V3Key>, MigrateError> {
    let n = r.step_no.get();
    let t = Instant::now();
    let keys = v3_keys(r.data).map_err(|e| MigrateError::Other(format!("step {n}: {e}")))?;
    log::info!(
        "step {n}: before the step, the db holds {} live keys under / ({} with a lease), hash \
         of keys and values {:016x} (read in {:?})",
        keys.len(),
        keys.iter().filter(|k| k.leased).count(),
        key_hash(&keys),
        t.elapsed()
    );
    Ok(keys)
}

/// The end of etcd3 -> etcd2: the v2 store rollback2 wrote must hold every key of `before`
/// as `/1<key>` with its value (an expiry exactly for the leased ones), and nothing else.
/// `Ok(Err(diff))` on a difference.
pub(super) fn after_v3v2(r: &Runner, before: &[V3Key]) -> Result<Result<(), String>, MigrateError> {
    let n = r.step_no.get();
    let t = Instant::now();
    let mut after =
        v2_store_keys(r.data).map_err(|e| MigrateError::Other(format!("step {n}: {e}")))?;
    if super::run::test_hook("v3v2-lose-first-key") {
        log::warn!("test hook: the first key of the v2 store is dropped from what was read");
        if !after.is_empty() {
            after.remove(0);
        }
    }
    let leased = after.iter().filter(|k| k.leased).count();
    log::info!(
        "step {n}: after the step, the v2 store holds {} keys under /1 ({leased} with an \
         expiry), hash of keys and values {:016x} (read in {:?})",
        after.len(),
        key_hash(&after),
        t.elapsed()
    );
    if let Some((key, why)) = v3v2_first_difference(before, &after) {
        return Ok(Err(format!(
            "step {n} changed the data ({} v3 keys before, {} v2 keys after, first differing \
             key {:?}: {why})",
            before.len(),
            after.len(),
            String::from_utf8_lossy(&key)
        )));
    }
    log::info!(
        "step {n}: every live v3 key is in the v2 store under /1 with its value ({leased} \
         leased keys with an expiry)"
    );
    Ok(Ok(()))
}

/// The v3 key a v2 node under `/1` stands for (its path without `/1`).
fn v3_key(n: &crate::storage::v2store::Node) -> Vec<u8> {
    n.path
        .strip_prefix("/1")
        .unwrap_or(&n.path)
        .as_bytes()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(keys: u64, revision: i64, hash: u64, hash_kv: Option<u32>) -> Fingerprint {
        Fingerprint {
            revision,
            keys,
            hash,
            hash_kv,
        }
    }

    #[test]
    fn compare_names_every_difference() {
        let a = fp(10, 20, 0xabc, Some(7));
        assert_eq!(compare(&a, &a.clone()), Ok(()));
        // HashKV is compared only when both sides have it (3.4 serves none).
        assert_eq!(compare(&a, &fp(10, 20, 0xabc, None)), Ok(()));
        let e = compare(&a, &fp(9, 21, 0xabd, Some(8))).unwrap_err();
        assert_eq!(
            e,
            "10 keys before, 9 after, revision 20 before, 21 after, keyspace hash \
             0000000000000abc before, 0000000000000abd after, HashKV 7 before, 8 after"
        );
        assert!(fp(3, 4, 5, Some(6))
            .to_string()
            .contains("3 keys at revision 4"));
    }

    #[test]
    fn an_offline_read_that_cannot_show_revision_r_says_why() {
        use crate::error::{HasKind, Kind};
        use offline::OfflineError;
        let compacted = OfflineError::Compacted {
            at: 57,
            compacted: 60,
        };
        let e = offline_failure(2, compacted).to_string();
        assert!(
            e.starts_with(
                "step 2 cannot show it kept the data: the db is compacted at revision 60, past \
                 revision 57 the step started from"
            ),
            "{e}"
        );
        let behind = OfflineError::Behind {
            at: 57,
            current: 50,
        };
        assert_eq!(
            offline_failure(1, behind).to_string(),
            "step 1 changed the data (the db is at revision 50 after the step, 57 before: \
             revisions were lost)"
        );
        // A read the OS refused stays an I/O error through the put-back's note.
        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        let io = crate::error::IoError::new("cannot open", Path::new("/d/member/snap/db"), eacces);
        let e = noting(
            offline_failure(3, OfflineError::Read(io.into())),
            "the data from before the step is back in /d",
        );
        assert_eq!(e.kind(), Kind::Io);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "step 3 cannot show it kept the data (the data from before the step is back in \
                 /d): cannot open /d/member/snap/db"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_hash_sees_every_field_and_where_it_ends() {
        let h = |fields: &[&[u8]]| {
            let mut f = Fnv::new();
            for x in fields {
                f.field(x);
            }
            f.0
        };
        assert_ne!(h(&[b"ab", b"c"]), h(&[b"a", b"bc"]));
        assert_ne!(h(&[b"a"]), h(&[b"b"]));
        assert_eq!(h(&[b"a", b""]), h(&[b"a", b""]));
    }

    #[test]
    fn a_rolled_back_key_keeps_its_value_and_an_expiry_exactly_for_a_lease() {
        let k = |key: &str, value: &str, leased: bool| V3Key {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            leased,
        };
        let before = [k("/a", "1", false), k("/b/c", "2", true)];
        assert_eq!(v3v2_first_difference(&before, &before), None);
        let diff = |after: &[V3Key]| {
            v3v2_first_difference(&before, after).map(|(k, w)| (String::from_utf8(k).unwrap(), w))
        };
        assert_eq!(diff(&before[1..]), Some(("/a".into(), "missing after")));
        assert_eq!(diff(&before[..1]), Some(("/b/c".into(), "missing after")));
        assert_eq!(
            diff(&[
                k("/a", "1", false),
                k("/b", "", false),
                k("/b/c", "2", true)
            ]),
            Some(("/b".into(), "in the v2 store after, not a v3 key before"))
        );
        assert_eq!(
            diff(&[k("/a", "x", false), k("/b/c", "2", true)]),
            Some(("/a".into(), "another value after"))
        );
        assert_eq!(
            diff(&[k("/a", "1", false), k("/b/c", "2", false)]),
            Some((
                "/b/c".into(),
                "an expiry without a lease, or no expiry for a lease"
            ))
        );
    }

    #[test]
    fn a_converted_key_keeps_value_and_revisions_and_only_ttl_dir_keys_a_lease() {
        let file = |key: &str| V2File {
            key: key.as_bytes().to_vec(),
            value_hash: value_hash(b"v"),
            created: 5,
            modified: 7,
        };
        let kv = |key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64| {
            V3Fields::of_gateway(&json!({"key": crate::base64::encode(key.as_bytes()),
                   "value": crate::base64::encode(value.as_bytes()),
                   "create_revision": create.to_string(), "mod_revision": modr.to_string(),
                   "version": version.to_string(), "lease": lease.to_string()}))
        };
        let ttl = b"/registry/events/";
        let (pod, ev) = (file("/registry/pods/a"), file("/registry/events/e"));
        assert_eq!(
            v2v3_differs(&pod, &kv("/registry/pods/a", "v", 5, 7, 1, 0), ttl),
            None
        );
        let bad = |k, why| assert_eq!(v2v3_differs(&pod, &k, ttl), Some(why));
        bad(
            kv("/registry/pods/a", "w", 5, 7, 1, 0),
            "another value after",
        );
        bad(
            kv("/registry/pods/a", "v", 6, 7, 1, 0),
            "another create revision after",
        );
        let other = "another mod revision, version or lease after";
        bad(kv("/registry/pods/a", "v", 5, 8, 1, 0), other);
        bad(kv("/registry/pods/a", "v", 5, 7, 2, 0), other);
        bad(kv("/registry/pods/a", "v", 5, 7, 1, 9), other);
        // Under the TTL dir: re-put with the lease (new mod revision and version).
        assert_eq!(
            v2v3_differs(&ev, &kv("/registry/events/e", "v", 5, 30, 2, 9), ttl),
            None
        );
        assert_eq!(
            v2v3_differs(&ev, &kv("/registry/events/e", "v", 5, 7, 1, 0), ttl),
            Some("no lease after")
        );
    }
}
