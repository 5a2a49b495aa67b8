//! Pure decisions of the conversion: which v3 keys survive and where they go in the v2 tree.
//! No files here (the db is read by `storage::mvcc`, the tree is a `storage::v2store::Store`),
//! so every rule is unit-tested.

use crate::storage::mvcc::RevisionEntry;
use crate::storage::v2store::{Store, V2Error, V2ErrorCode};

/// One live v3 key at its newest revision (borrowed from the db page being read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveKey<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub lease: i64,
}

/// What the (newest first) scan of bucket `key` found: which revisions hold the newest state
/// of a live key. The keys and values themselves are read in a second, forward pass straight
/// into the store, so they are never held twice.
#[derive(Debug, Default)]
pub struct KeyScan {
    /// (main, sub) of every live key's newest revision, ascending after `finish`.
    pub live: Vec<(i64, i64)>,
    /// Keys whose newest revision is a tombstone (absent from the result).
    pub deleted: usize,
    pub revisions: u64,
}

impl KeyScan {
    /// Takes the newest revision of one key (`storage::mvcc::for_each_newest` order: newest
    /// first): a put is live, a tombstone means deleted.
    pub fn add_newest(&mut self, e: &RevisionEntry<'_>) {
        if e.tombstone {
            self.deleted += 1;
        } else {
            self.live.push((e.revision.main, e.revision.sub));
        }
    }

    /// Oldest first: v2 indexes follow the v3 revision order.
    pub fn finish(mut self, revisions: u64) -> KeyScan {
        self.live.sort_unstable();
        self.revisions = revisions;
        self
    }

    /// Whether a forward pass entry is the newest state of a live key; `next` is the cursor
    /// into `live` (revisions come in ascending order, so one comparison each).
    pub fn is_live(&self, next: &mut usize, e: &RevisionEntry<'_>) -> bool {
        if e.tombstone || self.live.get(*next) != Some(&(e.revision.main, e.revision.sub)) {
            return false;
        }
        *next += 1;
        true
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub lossy: bool,
    /// `now + ttl` (unix nanoseconds) for keys that had a lease.
    pub lease_expiry_nanos: i64,
}

/// What went into the `/1` subtree.
#[derive(Debug, Default)]
pub struct UserTree {
    pub keys: usize,
    pub dirs: usize,
    pub leased: usize,
    /// The first 10 leased keys (printable), for the plan.
    pub leased_examples: Vec<String>,
    /// Keys without a leading `/` (e.g. Kubernetes' `compact_rev_key`): not representable in
    /// v2's namespace, skipped as the original did. Printable form.
    pub skipped: Vec<String>,
    pub lossy_values: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// Values (or keys) that are not UTF-8; at most 10 examples.
    #[error(
        "{total} key(s) have a value or name that is not valid UTF-8 and cannot be stored \
         in a v2 store without changing it (first: {}); rerun with --lossy to replace \
         the invalid bytes with U+FFFD like etcd's JSON would",
        examples.join(", ")
    )]
    NotUtf8 { total: usize, examples: Vec<String> },
    /// Keys that cannot coexist or cannot be a v2 path, with the reason; at most 10.
    #[error("{total} key(s) cannot be represented in a v2 store: {}", examples.join("; "))]
    Unrepresentable { total: usize, examples: Vec<String> },
}

/// Printable form of a key for messages.
pub fn show(key: &[u8]) -> String {
    let s: String = key
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("\"{s}\"")
}

/// Bytes to a string the way Go's encoding/json does: each invalid byte becomes U+FFFD.
pub fn go_lossy(mut b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    loop {
        match std::str::from_utf8(b) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (ok, rest) = b.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                out.push('\u{FFFD}');
                b = &rest[1..];
            }
        }
    }
}

/// The bytes as a string (and whether it was made lossy), or None when not UTF-8 and not
/// `lossy`.
fn text(b: &[u8], lossy: bool) -> Option<(String, bool)> {
    match std::str::from_utf8(b) {
        Ok(s) => Some((s.to_string(), false)),
        Err(_) if lossy => Some((go_lossy(b), true)),
        Err(_) => None,
    }
}

/// The v2 path components of a v3 key, or why it has none. v2 cleans paths
/// (`path.Clean`), so a key that is not already clean would silently change or merge.
fn components(key: &str) -> Result<Vec<&str>, &'static str> {
    let rest = &key[1..];
    if rest.is_empty() {
        return Err("the key \"/\" is the v2 keyspace root");
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("v2 would rewrite this path (empty, `.` or `..` component, or trailing `/`)");
    }
    Ok(parts)
}

/// Writes live keys (oldest first) under `/1` of a store (`Store::load_key`: `set`'s rules,
/// no event history): each takes the next store index, missing dirs are created with it.
/// Problems are collected, so the refusal lists them all (the store is then discarded).
pub struct UserTreeBuilder<'s> {
    store: &'s mut Store,
    opts: ConvertOptions,
    tree: UserTree,
    not_utf8: Vec<String>,
    bad: Vec<String>,
    path: String,
}

impl<'s> UserTreeBuilder<'s> {
    pub fn new(opts: &ConvertOptions, store: &'s mut Store) -> UserTreeBuilder<'s> {
        UserTreeBuilder {
            store,
            opts: *opts,
            tree: UserTree::default(),
            not_utf8: Vec::new(),
            bad: Vec::new(),
            path: String::new(),
        }
    }

    pub fn add(&mut self, kv: &LiveKey<'_>) {
        let t = &mut self.tree;
        if kv.key.first() != Some(&b'/') {
            t.skipped.push(show(kv.key));
            return;
        }
        let (Some(key), Some(value)) = (
            text(kv.key, self.opts.lossy),
            text(kv.value, self.opts.lossy),
        ) else {
            self.not_utf8.push(show(kv.key));
            return;
        };
        if key.1 || value.1 {
            t.lossy_values += 1;
        }
        if let Err(why) = components(&key.0) {
            self.bad.push(format!("{}: {why}", show(kv.key)));
            return;
        }
        self.path.clear();
        self.path.push_str("/1");
        self.path.push_str(&key.0);
        let expire = (kv.lease != 0).then_some(self.opts.lease_expiry_nanos);
        match self.store.load_key(&self.path, value.0, expire) {
            Ok(_) => {
                t.keys += 1;
                if kv.lease != 0 {
                    t.leased += 1;
                    if t.leased_examples.len() < 10 {
                        t.leased_examples.push(show(kv.key));
                    }
                }
            }
            Err(e) => self.bad.push(format!("{}: {}", show(kv.key), why_not(&e))),
        }
    }

    pub fn finish(self) -> Result<UserTree, ConvertError> {
        let (mut t, mut not_utf8, mut bad) = (self.tree, self.not_utf8, self.bad);
        if !not_utf8.is_empty() {
            let total = not_utf8.len();
            not_utf8.truncate(10);
            return Err(ConvertError::NotUtf8 {
                total,
                examples: not_utf8,
            });
        }
        if !bad.is_empty() {
            let total = bad.len();
            bad.truncate(10);
            return Err(ConvertError::Unrepresentable {
                total,
                examples: bad,
            });
        }
        // Only live keys went in, and a refused key creates no dirs: no dir is empty.
        if let Some(one) = self.store.get("/1") {
            one.walk(&mut |n| {
                if n.is_dir() {
                    t.dirs += 1;
                }
            });
            t.dirs -= 1; // /1 itself
        }
        Ok(t)
    }
}

/// Why the store refused a key, in the terms of the v3 keys.
fn why_not(e: &V2Error) -> String {
    match e {
        V2Error::Op {
            code: V2ErrorCode::NotDir,
            path,
        } => format!(
            "{} is a key, so it cannot be a directory",
            path.strip_prefix("/1").unwrap_or(path)
        ),
        V2Error::Op {
            code: V2ErrorCode::NotFile,
            ..
        } => "it is also a directory of other keys".to_string(),
        other => other.to_string(),
    }
}

/// The rollback targets and the cluster version each accepts in `/0/version`
/// (etcd 2.x refuses a cluster version above its own minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetVersion {
    V2_2_1,
    V2_3_7,
}

impl TargetVersion {
    pub fn parse(s: &str) -> Option<TargetVersion> {
        match s {
            "2.2.1" => Some(TargetVersion::V2_2_1),
            "2.3.7" => Some(TargetVersion::V2_3_7),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetVersion::V2_2_1 => "2.2.1",
            TargetVersion::V2_3_7 => "2.3.7",
        }
    }

    pub fn cluster_version(self) -> &'static str {
        match self {
            TargetVersion::V2_2_1 => "2.2.0",
            TargetVersion::V2_3_7 => "2.3.0",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv<'a>(_rev: i64, key: &'a [u8], value: &'a [u8], lease: i64) -> LiveKey<'a> {
        LiveKey { key, value, lease }
    }

    const OPTS: ConvertOptions = ConvertOptions {
        lossy: false,
        lease_expiry_nanos: 1_800_000_000_000_000_000,
    };

    /// [`UserTreeBuilder`] over a list of live keys, oldest first.
    fn tree(live: Vec<LiveKey>, opts: &ConvertOptions) -> Result<(UserTree, Store), ConvertError> {
        let mut store = Store::new();
        let mut b = UserTreeBuilder::new(opts, &mut store);
        for kv in &live {
            b.add(kv);
        }
        let t = b.finish()?;
        Ok((t, store))
    }

    #[test]
    fn keys_go_under_their_dirs_with_leases_and_skips() {
        let live = vec![
            kv(2, b"/registry/pods/ns/name", b"pod", 0),
            kv(3, b"/registry/events/ns/e1", b"ev", 7),
            kv(4, b"compact_rev_key", b"4", 0),
            kv(5, b"/top", b"", 0),
        ];
        let (t, store) = tree(live, &OPTS).unwrap();
        assert_eq!((t.keys, t.leased, t.dirs), (3, 1, 5));
        assert_eq!(t.skipped, vec!["\"compact_rev_key\"".to_string()]);
        let e1 = store.get("/1/registry/events/ns/e1").unwrap();
        assert_eq!(e1.value, "ev");
        assert_eq!(e1.expire_unix_nanos(), Some(OPTS.lease_expiry_nanos));
        let top = store.get("/1/top").unwrap();
        assert_eq!((top.value.as_str(), top.is_permanent()), ("", true));
        // store indexes follow the revision order, dirs take the index of their first key
        assert_eq!(top.created_index, 3);
        assert_eq!(store.get("/1/registry").unwrap().created_index, 1);
        assert_eq!(store.get("/1/registry/events").unwrap().created_index, 2);
        assert_eq!(store.current_index, 3);
    }

    #[test]
    fn non_utf8_is_refused_unless_lossy() {
        let live = || vec![kv(2, b"/k8s/pod", b"k8s\x00\xff\xfe", 0)];
        match tree(live(), &OPTS).unwrap_err() {
            ConvertError::NotUtf8 { total, examples } => {
                assert_eq!(total, 1);
                assert_eq!(examples, vec!["\"/k8s/pod\"".to_string()]);
            }
            e => panic!("{e:?}"),
        }
        let lossy = ConvertOptions {
            lossy: true,
            ..OPTS
        };
        let (t, store) = tree(live(), &lossy).unwrap();
        assert_eq!(t.lossy_values, 1);
        assert_eq!(
            store.get("/1/k8s/pod").unwrap().value,
            "k8s\u{0}\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn newest_states_fold_into_live_keys_in_revision_order() {
        use crate::storage::mvcc::{KeyValue, Revision};
        let e =
            |main: i64, key: &'static [u8], value: &'static [u8], tombstone: bool| RevisionEntry {
                revision: Revision { main, sub: 0 },
                tombstone,
                kv: KeyValue {
                    key,
                    value,
                    ..KeyValue::default()
                },
                value_offset: 0,
            };
        let mut scan = KeyScan::default();
        // newest first, as for_each_newest calls
        for r in [
            e(8, b"/back", b"new", false),
            e(6, b"/a", b"3", false),
            e(5, b"/gone", b"", true),
        ] {
            scan.add_newest(&r);
        }
        let scan = scan.finish(9);
        assert_eq!((scan.deleted, scan.revisions), (1, 9));
        assert_eq!(scan.live, vec![(6, 0), (8, 0)]);
        // the forward pass picks exactly those revisions
        let mut next = 0;
        let forward = [
            e(2, b"/a", b"1", false),
            e(5, b"/gone", b"", true),
            e(6, b"/a", b"3", false),
            e(7, b"/back", b"old", false),
            e(8, b"/back", b"new", false),
        ];
        let got: Vec<_> = forward
            .iter()
            .filter(|r| scan.is_live(&mut next, r))
            .map(|r| (r.kv.key, r.kv.value))
            .collect();
        assert_eq!(
            got,
            vec![(&b"/a"[..], &b"3"[..]), (&b"/back"[..], &b"new"[..])]
        );
    }

    #[test]
    fn go_lossy_replaces_each_invalid_byte() {
        assert_eq!(go_lossy(b"a\xe2\x82b"), "a\u{FFFD}\u{FFFD}b");
        assert_eq!(go_lossy("é".as_bytes()), "é");
    }

    #[test]
    fn conflicting_and_unclean_keys_are_refused() {
        let live = vec![
            kv(2, b"/a", b"1", 0),
            kv(3, b"/a/b", b"2", 0),
            kv(4, b"/c//d", b"3", 0),
            kv(5, b"/", b"4", 0),
            kv(6, b"/e/./f", b"5", 0),
        ];
        match tree(live, &OPTS).unwrap_err() {
            ConvertError::Unrepresentable { total, examples } => {
                assert_eq!(total, 4, "{examples:?}");
                assert!(examples[0].contains("/a is a key"), "{examples:?}");
            }
            e => panic!("{e:?}"),
        }
        // the other order: the dir exists first
        let live = vec![kv(2, b"/a/b", b"1", 0), kv(3, b"/a", b"2", 0)];
        match tree(live, &OPTS).unwrap_err() {
            ConvertError::Unrepresentable { total: 1, examples } => {
                assert!(examples[0].contains("also a directory"), "{examples:?}");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn target_versions() {
        assert_eq!(
            TargetVersion::parse("2.2.1").unwrap().cluster_version(),
            "2.2.0"
        );
        assert_eq!(
            TargetVersion::parse("2.3.7").unwrap().cluster_version(),
            "2.3.0"
        );
        assert_eq!(TargetVersion::parse("3.0.0"), None);
    }
}
