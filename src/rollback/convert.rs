//! Pure decisions of the conversion: which v3 keys survive and where they go in the v2 tree.
//! No files here (the db is read by `storage::mvcc`, the tree is a `storage::v2store::Store`),
//! so every rule is unit-tested.

use std::borrow::Cow;

use crate::storage::mvcc::RevisionEntry;
use crate::storage::v2store::{json_text, FlatKey, FlatTree, Store, V2Error, V2ErrorCode};

/// One live v3 key at its newest revision (borrowed from the db page being read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveKey<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub lease: i64,
}

/// What the (newest first) scan of bucket `key` counted.
#[derive(Debug, Default)]
pub struct KeyScan {
    /// Keys whose newest revision is a tombstone (absent from the result).
    pub deleted: usize,
    pub revisions: u64,
}

impl KeyScan {
    /// Takes the newest revision of one key (`storage::mvcc::for_each_newest` order: newest
    /// first): a put is a live key, a tombstone means deleted.
    pub fn add_newest<'a>(&mut self, e: &RevisionEntry<'a>) -> Option<LiveKey<'a>> {
        if e.tombstone {
            self.deleted += 1;
            return None;
        }
        Some(LiveKey {
            key: e.kv.key,
            value: e.kv.value,
            lease: e.kv.lease,
        })
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
fn text(b: &[u8], lossy: bool) -> Option<(Cow<'_, str>, bool)> {
    match std::str::from_utf8(b) {
        Ok(s) => Some((Cow::Borrowed(s), false)),
        Err(_) if lossy => Some((Cow::Owned(go_lossy(b)), true)),
        Err(_) => None,
    }
}

/// The v2 path components of a v3 key, or why it has none. v2 cleans paths
/// (`path.Clean`), so a key that is not already clean would silently change or merge.
fn check_components(key: &str) -> Result<(), &'static str> {
    let rest = &key[1..];
    if rest.is_empty() {
        return Err("the key \"/\" is the v2 keyspace root");
    }
    if rest
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err("v2 would rewrite this path (empty, `.` or `..` component, or trailing `/`)");
    }
    Ok(())
}

/// Turns live keys into the `/1` subtree ([`FlatTree`]: keys and values stay borrowed from
/// the db; `Store::load_key`'s rules and indexes): in revision order each key takes the next
/// store index, missing dirs take the index of their first key. Keys come newest first (the
/// scan's order, so each is checked while its page is at hand); `finish` turns the order
/// round. Problems are collected, so the refusal lists them all.
pub struct UserTreeBuilder<'a> {
    opts: ConvertOptions,
    tree: UserTree,
    keys: Vec<FlatKey<'a>>,
    /// Which `add` call each of `keys` came from (refusals are listed in that order).
    added: Vec<u32>,
    calls: u32,
    not_utf8: Vec<String>,
    bad: Vec<(u32, String)>,
}

/// The conversion's result: what went in, the `/1` keys, and the store they go into (fresh,
/// its index past theirs; `/1`'s children are written from `keys`).
pub struct Converted<'a> {
    pub tree: UserTree,
    pub keys: FlatTree<'a>,
    pub store: Store,
}

impl<'a> UserTreeBuilder<'a> {
    pub fn new(opts: &ConvertOptions) -> UserTreeBuilder<'a> {
        UserTreeBuilder {
            opts: *opts,
            tree: UserTree::default(),
            keys: Vec::new(),
            added: Vec::new(),
            calls: 0,
            not_utf8: Vec::new(),
            bad: Vec::new(),
        }
    }

    pub fn add(&mut self, kv: &LiveKey<'a>) {
        self.calls += 1;
        let t = &mut self.tree;
        if kv.key.first() != Some(&b'/') {
            t.skipped.push(show(kv.key));
            return;
        }
        let value = match json_text(kv.value) {
            Some((s, len)) => Some((Cow::Borrowed(s), len, false)),
            None => text(kv.value, self.opts.lossy).map(|(s, lossy)| (s, 0, lossy)),
        };
        let (Some(key), Some(value)) = (text(kv.key, self.opts.lossy), value) else {
            self.not_utf8.push(show(kv.key));
            return;
        };
        if key.1 || value.2 {
            t.lossy_values += 1;
        }
        if let Err(why) = check_components(&key.0) {
            self.bad
                .push((self.calls, format!("{}: {why}", show(kv.key))));
            return;
        }
        t.leased += usize::from(kv.lease != 0);
        // The path is copied (small): sorting by it would otherwise fault in every page of
        // the db. The index is set in `finish`.
        let path = Cow::Owned(key.0.into_owned());
        let key = match value {
            (value, len, false) => FlatKey::measured(path, value, len, kv.lease != 0),
            (lossy, _, true) => FlatKey::new(path, lossy, kv.lease != 0),
        };
        self.keys.push(key);
        self.added.push(self.calls);
    }

    /// Oldest first, each key with its store index.
    fn in_revision_order(&mut self) {
        self.keys.reverse();
        self.added.reverse();
        for (i, k) in self.keys.iter_mut().enumerate() {
            k.index = i as u64 + 1;
        }
        let t = &mut self.tree;
        t.skipped.reverse();
        self.not_utf8.reverse();
        let leased = self.keys.iter().filter(|k| k.expires);
        t.leased_examples = leased.take(10).map(|k| show(k.path.as_bytes())).collect();
    }

    pub fn finish(mut self) -> Result<Converted<'a>, ConvertError> {
        self.in_revision_order();
        let (mut not_utf8, mut bad) = (self.not_utf8, self.bad);
        if !not_utf8.is_empty() {
            let total = not_utf8.len();
            not_utf8.truncate(10);
            return Err(ConvertError::NotUtf8 {
                total,
                examples: not_utf8,
            });
        }
        let expiry = Some(self.opts.lease_expiry_nanos);
        let keys = FlatTree::build("/1", self.keys, expiry);
        for (pos, e) in keys.refused() {
            let key = show(keys.keys()[*pos].path.as_bytes());
            bad.push((self.added[*pos], format!("{key}: {}", why_not(e))));
        }
        if !bad.is_empty() {
            bad.sort_by_key(|(call, _)| std::cmp::Reverse(*call)); // oldest first
            let total = bad.len();
            let examples = bad.into_iter().take(10).map(|(_, why)| why).collect();
            return Err(ConvertError::Unrepresentable { total, examples });
        }
        let mut tree = self.tree;
        tree.keys = keys.keys().len();
        tree.dirs = keys.dirs();
        let mut store = Store::new();
        store.current_index = tree.keys as u64;
        Ok(Converted { tree, keys, store })
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
        V2Error::Op {
            code: V2ErrorCode::NodeExist,
            ..
        } => "another key has the same name once --lossy replaced the invalid bytes".to_string(),
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

    /// [`UserTreeBuilder`] over a list of live keys, oldest first; the store as etcd would
    /// load it from the snapshot written.
    fn tree(live: Vec<LiveKey>, opts: &ConvertOptions) -> Result<(UserTree, Store), ConvertError> {
        let mut b = UserTreeBuilder::new(opts);
        for kv in live.iter().rev() {
            b.add(kv); // newest first, as the scan calls it
        }
        let c = b.finish()?;
        let mut json = Vec::new();
        c.store
            .write_go_json_with(&mut json, Some(("1", &c.keys)))
            .unwrap();
        Ok((c.tree, Store::load(&json).unwrap()))
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
    fn newest_states_are_live_keys_or_deletes() {
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
        let got: Vec<_> = [
            e(8, b"/back", b"new", false),
            e(6, b"/a", b"3", false),
            e(5, b"/gone", b"", true),
        ]
        .iter()
        .filter_map(|r| scan.add_newest(r))
        .map(|kv| (kv.key, kv.value))
        .collect();
        assert_eq!(scan.deleted, 1);
        assert_eq!(
            got,
            vec![(&b"/back"[..], &b"new"[..]), (&b"/a"[..], &b"3"[..])]
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
