//! Pure decisions of the conversion: which v3 keys survive and where they go in the v2 tree.
//! No files here, so every rule is unit-tested.

use super::pb::{self, Val};
use super::tree::{ExpireTime, Node};
use std::borrow::Cow;
use std::collections::HashMap;

/// The newest state of one live v3 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub lease: i64,
    /// (main, sub) of the newest revision.
    pub mod_revision: (u64, u64),
}

/// What the scan of bucket `key` found.
#[derive(Debug, Default)]
pub struct KeyScan<'a> {
    /// Live keys, in the order of their newest revision.
    pub live: Vec<LiveKey<'a>>,
    /// Keys whose newest revision is a tombstone (absent from the result).
    pub deleted: usize,
    pub revisions: u64,
    /// Bucket entries that are not etcd revision keys (not 17/18 bytes with `_` at byte 8).
    pub foreign: u64,
}

/// Decoding error of one bucket entry: the revision key (hex) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub revision: String,
    pub problem: String,
}

/// The newest (main, sub) revision of a key and its state then: value and lease, or None
/// for a tombstone.
type Newest<'a> = ((u64, u64), Option<(&'a [u8], i64)>);

/// Folds bucket `key` records (revision order) into the newest state of each key.
#[derive(Default)]
pub struct Folder<'a> {
    latest: HashMap<&'a [u8], Newest<'a>>,
    pub revisions: u64,
    pub foreign: u64,
}

impl<'a> Folder<'a> {
    pub fn add(&mut self, rev: &'a [u8], kv: &'a [u8]) -> Result<(), BadRecord> {
        let tombstone = match rev.len() {
            17 if rev[8] == b'_' => false,
            18 if rev[8] == b'_' && rev[17] == b't' => true,
            _ => {
                self.foreign += 1;
                return Ok(());
            }
        };
        self.revisions += 1;
        let main = u64::from_be_bytes(rev[..8].try_into().unwrap_or([0; 8]));
        let sub = u64::from_be_bytes(rev[9..17].try_into().unwrap_or([0; 8]));
        let bad = |p: &str| BadRecord {
            revision: format!("{main}_{sub}{}", if tombstone { "t" } else { "" }),
            problem: p.to_string(),
        };
        let (mut key, mut value, mut lease) = (None, &[][..], 0i64);
        for f in pb::fields(kv) {
            match f.map_err(|_| bad("malformed mvccpb.KeyValue"))? {
                (1, Val::Bytes(b)) => key = Some(b),
                (5, Val::Bytes(b)) => value = b,
                (6, Val::Varint(v)) => lease = v as i64,
                _ => {}
            }
        }
        let key = key.ok_or_else(|| bad("KeyValue without a key"))?;
        let state = if tombstone {
            None
        } else {
            Some((value, lease))
        };
        // Bucket order is revision order, so the last record of a key is its newest state.
        self.latest.insert(key, ((main, sub), state));
        Ok(())
    }

    pub fn finish(self) -> KeyScan<'a> {
        let mut live = Vec::with_capacity(self.latest.len());
        let mut deleted = 0;
        for (key, (rev, state)) in self.latest {
            match state {
                Some((value, lease)) => live.push(LiveKey {
                    key,
                    value,
                    lease,
                    mod_revision: rev,
                }),
                None => deleted += 1,
            }
        }
        // (main, sub) revisions are unique: the bucket order, without comparing keys
        live.sort_unstable_by_key(|k| k.mod_revision);
        KeyScan {
            live,
            deleted,
            revisions: self.revisions,
            foreign: self.foreign,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub lossy: bool,
    /// `now + ttl` for keys that had a lease.
    pub lease_expiry: ExpireTime,
}

/// The `/1` subtree and what went into it.
#[derive(Debug)]
pub struct UserTree<'a> {
    pub tree: Node<'a>,
    pub keys: usize,
    pub dirs: usize,
    pub leased: usize,
    /// The first 10 leased keys (printable), for the plan.
    pub leased_examples: Vec<String>,
    /// Keys without a leading `/` (e.g. Kubernetes' `compact_rev_key`): not representable in
    /// v2's namespace, skipped as the original did. Printable form.
    pub skipped: Vec<String>,
    pub lossy_values: usize,
    pub empty_dirs_removed: usize,
    /// The v2 store index after the last key (indexes of /0 continue from here).
    pub last_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    /// Values (or keys) that are not UTF-8; at most 10 examples.
    NotUtf8 { total: usize, examples: Vec<String> },
    /// Keys that cannot coexist or cannot be a v2 path, with the reason; at most 10.
    Unrepresentable { total: usize, examples: Vec<String> },
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvertError::NotUtf8 { total, examples } => write!(
                f,
                "{total} key(s) have a value or name that is not valid UTF-8 and cannot be stored \
                 in a v2 store without changing it (first: {}); rerun with --lossy to replace \
                 the invalid bytes with U+FFFD like etcd's JSON would",
                examples.join(", ")
            ),
            ConvertError::Unrepresentable { total, examples } => write!(
                f,
                "{total} key(s) cannot be represented in a v2 store: {}",
                examples.join("; ")
            ),
        }
    }
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

fn text<'a>(b: &'a [u8], lossy: bool) -> Option<Cow<'a, str>> {
    match std::str::from_utf8(b) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) if lossy => Some(Cow::Owned(go_lossy(b))),
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

/// Builds the `/1` subtree from the live keys. Indexes start at 1 and grow by one per key.
pub fn user_tree<'a>(
    live: &[LiveKey<'a>],
    opts: &ConvertOptions,
) -> Result<UserTree<'a>, ConvertError> {
    let mut tree = Node::dir(0);
    let (mut keys, mut leased, mut lossy_values) = (0, 0, 0);
    let mut skipped = Vec::new();
    let mut leased_examples = Vec::new();
    let mut not_utf8 = Vec::new();
    let mut bad = Vec::new();
    let mut index = 0u64;
    for kv in live {
        if kv.key.first() != Some(&b'/') {
            skipped.push(show(kv.key));
            continue;
        }
        let (Some(key), Some(value)) = (text(kv.key, opts.lossy), text(kv.value, opts.lossy))
        else {
            not_utf8.push(show(kv.key));
            continue;
        };
        if matches!(key, Cow::Owned(_)) || matches!(value, Cow::Owned(_)) {
            lossy_values += 1;
        }
        let key_str: &str = &key;
        let parts = match components(key_str) {
            Ok(p) => p,
            Err(why) => {
                bad.push(format!("{}: {why}", show(kv.key)));
                continue;
            }
        };
        index += 1;
        let expire = (kv.lease != 0).then_some(opts.lease_expiry);
        if kv.lease != 0 {
            leased += 1;
            if leased_examples.len() < 10 {
                leased_examples.push(show(kv.key));
            }
        }
        let file = Node::File {
            value,
            created: index,
            modified: index,
            expire,
        };
        // Owned strings for names: keys are short; values stay borrowed.
        let owned: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        let refs: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
        match tree.set_file(&refs, file, index) {
            Ok(()) => keys += 1,
            Err(at) => {
                let why = if at == refs.len() {
                    "it is also a directory of other keys".to_string()
                } else {
                    format!(
                        "/{} is a key, so it cannot be a directory",
                        refs[..at].join("/")
                    )
                };
                index -= 1;
                if expire.is_some() {
                    leased -= 1;
                }
                bad.push(format!("{}: {why}", show(kv.key)));
            }
        }
    }
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
    let empty_dirs_removed = tree.prune_empty_dirs();
    let (_, dirs) = tree.count();
    Ok(UserTree {
        tree,
        keys,
        dirs,
        leased,
        leased_examples,
        skipped,
        lossy_values,
        empty_dirs_removed,
        last_index: index,
    })
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

    fn rev(main: u64, sub: u64, tomb: bool) -> Vec<u8> {
        let mut r = main.to_be_bytes().to_vec();
        r.push(b'_');
        r.extend_from_slice(&sub.to_be_bytes());
        if tomb {
            r.push(b't');
        }
        r
    }

    fn kv(key: &[u8], value: &[u8], lease: i64) -> Vec<u8> {
        let mut b = Vec::new();
        pb::put_bytes(&mut b, 1, key);
        if !value.is_empty() {
            pb::put_bytes(&mut b, 5, value);
        }
        if lease != 0 {
            pb::put_uint(&mut b, 6, lease as u64);
        }
        b
    }

    const OPTS: ConvertOptions = ConvertOptions {
        lossy: false,
        lease_expiry: ExpireTime {
            unix_secs: 1_800_000_000,
            nanos: 0,
        },
    };

    fn scan(records: &[(Vec<u8>, Vec<u8>)]) -> KeyScan<'_> {
        let mut f = Folder::default();
        for (r, v) in records {
            f.add(r, v).unwrap();
        }
        f.finish()
    }

    #[test]
    fn newest_state_wins_and_tombstones_stay_deleted() {
        let recs = vec![
            (rev(2, 0, false), kv(b"/a", b"1", 0)),
            (rev(3, 0, false), kv(b"/a", b"2", 0)),
            (rev(4, 0, false), kv(b"/gone", b"x", 0)),
            (rev(5, 0, true), kv(b"/gone", b"", 0)),
            (rev(6, 0, false), kv(b"/a", b"3", 0)),
            (rev(6, 1, false), kv(b"/back", b"old", 0)),
            (rev(7, 0, true), kv(b"/back", b"", 0)),
            (rev(8, 0, false), kv(b"/back", b"new", 0)),
            (b"junk".to_vec(), b"zz".to_vec()),
        ];
        let s = scan(&recs);
        assert_eq!(s.deleted, 1);
        assert_eq!(s.foreign, 1);
        assert_eq!(s.revisions, 8);
        let got: Vec<_> = s.live.iter().map(|k| (k.key, k.value)).collect();
        assert_eq!(
            got,
            vec![(&b"/a"[..], &b"3"[..]), (&b"/back"[..], &b"new"[..])]
        );
    }

    #[test]
    fn keys_go_under_their_dirs_with_leases_and_skips() {
        let recs = vec![
            (rev(2, 0, false), kv(b"/registry/pods/ns/name", b"pod", 0)),
            (rev(3, 0, false), kv(b"/registry/events/ns/e1", b"ev", 7)),
            (rev(4, 0, false), kv(b"compact_rev_key", b"4", 0)),
            (rev(5, 0, false), kv(b"/top", b"", 0)),
        ];
        let s = scan(&recs);
        let t = user_tree(&s.live, &OPTS).unwrap();
        assert_eq!((t.keys, t.leased, t.dirs), (3, 1, 5));
        assert_eq!(t.skipped, vec!["\"compact_rev_key\"".to_string()]);
        match t.tree.get(&["registry", "events", "ns", "e1"]).unwrap() {
            Node::File { value, expire, .. } => {
                assert_eq!(value, "ev");
                assert_eq!(*expire, Some(OPTS.lease_expiry));
            }
            other => panic!("{other:?}"),
        }
        match t.tree.get(&["top"]).unwrap() {
            Node::File {
                value,
                expire,
                created,
                ..
            } => {
                assert_eq!((value.as_ref(), *expire, *created), ("", None, 3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.last_index, 3);
    }

    #[test]
    fn non_utf8_is_refused_unless_lossy() {
        let recs = vec![(rev(2, 0, false), kv(b"/k8s/pod", b"k8s\x00\xff\xfe", 0))];
        let s = scan(&recs);
        match user_tree(&s.live, &OPTS).unwrap_err() {
            ConvertError::NotUtf8 { total, examples } => {
                assert_eq!(total, 1);
                assert_eq!(examples, vec!["\"/k8s/pod\"".to_string()]);
            }
            e => panic!("{e:?}"),
        }
        let t = user_tree(
            &s.live,
            &ConvertOptions {
                lossy: true,
                ..OPTS
            },
        )
        .unwrap();
        assert_eq!(t.lossy_values, 1);
        match t.tree.get(&["k8s", "pod"]).unwrap() {
            Node::File { value, .. } => assert_eq!(value, "k8s\u{0}\u{FFFD}\u{FFFD}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn go_lossy_replaces_each_invalid_byte() {
        assert_eq!(go_lossy(b"a\xe2\x82b"), "a\u{FFFD}\u{FFFD}b");
        assert_eq!(go_lossy("é".as_bytes()), "é");
    }

    #[test]
    fn conflicting_and_unclean_keys_are_refused() {
        let recs = vec![
            (rev(2, 0, false), kv(b"/a", b"1", 0)),
            (rev(3, 0, false), kv(b"/a/b", b"2", 0)),
            (rev(4, 0, false), kv(b"/c//d", b"3", 0)),
            (rev(5, 0, false), kv(b"/", b"4", 0)),
        ];
        let s = scan(&recs);
        match user_tree(&s.live, &OPTS).unwrap_err() {
            ConvertError::Unrepresentable { total, examples } => {
                assert_eq!(total, 3, "{examples:?}");
                assert!(examples[0].contains("/a is a key"), "{examples:?}");
            }
            e => panic!("{e:?}"),
        }
        // the other order: the dir exists first
        let recs = vec![
            (rev(2, 0, false), kv(b"/a/b", b"1", 0)),
            (rev(3, 0, false), kv(b"/a", b"2", 0)),
        ];
        let s = scan(&recs);
        assert!(matches!(
            user_tree(&s.live, &OPTS),
            Err(ConvertError::Unrepresentable { total: 1, .. })
        ));
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
