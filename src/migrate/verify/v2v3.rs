//! The end of the etcd2 -> etcd3 proof: the v3 keys after the step, in key order, against the
//! v2 files before it ([`v2v3_differs`]). Fed by the JSON gateway while the step's etcd runs
//! (a lone member) or by the converted db read offline after it stopped (a member of several,
//! whose etcd cannot be read once the others stop theirs).

use std::ops::ControlFlow;
use std::time::Instant;

use super::{v2v3_differs, value_hash, Fnv, V2File, V3Fields};
use crate::migrate::run::{MigrateError, Runner};
use crate::storage::bolt::BoltDb;
use crate::storage::mvcc;

/// The comparison, one v3 key at a time in key order.
pub(super) struct Check<'a> {
    before: &'a [V2File],
    ttl_dir: Vec<u8>,
    next: usize,
    first: Option<(Vec<u8>, &'static str)>,
    served: u64,
    leased: u64,
    fnv: Fnv,
}

impl<'a> Check<'a> {
    pub(super) fn new(before: &'a [V2File], ttl_keys_directory: &str) -> Check<'a> {
        let mut ttl_dir = ttl_keys_directory.as_bytes().to_vec();
        if !ttl_dir.ends_with(b"/") {
            ttl_dir.push(b'/');
        }
        Check {
            before,
            ttl_dir,
            next: 0,
            first: None,
            served: 0,
            leased: 0,
            fnv: Fnv::new(),
        }
    }

    /// The next v3 key (keys come in ascending order).
    pub(super) fn visit(&mut self, key: &[u8], kv: &V3Fields) {
        self.fnv.field(key);
        self.fnv.field(&kv.value_hash.to_le_bytes());
        self.served += 1;
        self.leased += u64::from(kv.lease != 0);
        if self.first.is_some() {
            return;
        }
        let before = self.before;
        if self.next < before.len() && before[self.next].key.as_slice() < key {
            self.first = Some((before[self.next].key.clone(), "missing after"));
            return;
        }
        match before.get(self.next) {
            Some(f) if f.key == key => {
                self.next += 1;
                self.first = v2v3_differs(f, kv, &self.ttl_dir).map(|why| (key.to_vec(), why));
            }
            _ => self.first = Some((key.to_vec(), "served after, not a v2 file before")),
        }
    }

    /// Logs what was read (`what`: "etcd 3.4.23 serves", "the db holds"; `how`: the tail of
    /// the line) and gives the verdict: `Err("step N changed the data (...)")` on the first
    /// difference.
    pub(super) fn finish(mut self, r: &Runner, what: &str, how: &str) -> Result<(), String> {
        let n = r.step_no.get();
        if self.first.is_none() && self.next < self.before.len() {
            self.first = Some((self.before[self.next].key.clone(), "missing after"));
        }
        let (served, leased) = (self.served, self.leased);
        log::info!(
            "step {n}: after the step, {what} {served} keys ({leased} with a lease), hash of \
             keys and value hashes {:016x}; {how}",
            self.fnv.0
        );
        if let Some((key, why)) = self.first {
            return Err(format!(
                "step {n} changed the data ({} v2 files before, {served} v3 keys after, first \
                 differing key {:?}: {why})",
                self.before.len(),
                String::from_utf8_lossy(&key)
            ));
        }
        log::info!(
            "step {n}: every v2 file is served through v3 with its value and revisions \
             ({leased} keys under {} leased)",
            String::from_utf8_lossy(&self.ttl_dir)
        );
        Ok(())
    }
}

/// The end of etcd2 -> etcd3 on a member of several, after the step's etcd stopped: the live
/// keys of the converted db (read offline, sorted by key; 16 bytes of value hash each) must be
/// the v2 files as [`v2v3_differs`] says. `Ok(Err(diff))` on a difference.
pub(in crate::migrate) fn after_v2v3_offline(
    r: &Runner,
    before: &[V2File],
) -> Result<Result<(), String>, MigrateError> {
    let n = r.step_no.get();
    let t = Instant::now();
    let path = r.data.member_path().join("snap/db");
    let read = |e: crate::storage::bolt::BoltError| MigrateError::During {
        doing: format!("step {n} cannot show it kept the data"),
        source: Box::new(MigrateError::Member(e.into())),
    };
    let db = BoltDb::open(&path).map_err(read)?;
    let mut keys = Vec::new();
    mvcc::for_each_live(&db, &mut |e| {
        let fields = V3Fields {
            value_hash: value_hash(e.kv.value),
            create_revision: e.kv.create_revision,
            mod_revision: e.kv.mod_revision,
            version: e.kv.version,
            lease: e.kv.lease,
        };
        keys.push((e.kv.key.to_vec(), fields));
        Ok(ControlFlow::Continue(()))
    })
    .map_err(read)?;
    keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let lose = super::super::run::test_hook("offline-lose-first-key");
    if lose && !keys.is_empty() {
        log::warn!("test hook: the first key of the db is dropped from what was read");
        keys.remove(0);
    }
    let mut check = Check::new(before, &r.cfg.ttl_keys_directory);
    for (key, fields) in &keys {
        check.visit(key, fields);
    }
    let how = format!("read offline from {} in {:?}", path.display(), t.elapsed());
    Ok(check.finish(r, "the db holds", &how))
}
