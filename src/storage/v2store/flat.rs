//! A dir's subtree written straight from a list of keys, without building [`Node`]s:
//! rollback2's `/1` holds 100,000s of keys whose values stay borrowed from the db, so the
//! store never copies them. The output is byte for byte what [`Store::load_key`] of the same
//! keys (in index order) followed by [`Store::write_go_json`] writes; a test holds them to it.
//!
//! Children are written in Go's map order (by name), which for whole paths is byte order with
//! `/` below every other byte. A dir takes the index of the first key (lowest index) below
//! it, as `load_key` creates missing dirs with the index of the key that needs them.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io;

use super::super::mapped::Touch;
use super::{
    expire_time_of, go_string_body_len, op_err, write_go_fields, write_go_string, JsonStr, V2Error,
    V2ErrorCode, Values, ZERO_TIME,
};

/// One key below the subtree's root.
#[derive(Debug, Clone)]
pub struct FlatKey<'a> {
    /// Clean, starting with `/`, relative to the root (`/registry/pods/x` for `/1/...`).
    pub path: Cow<'a, str>,
    pub value: Cow<'a, str>,
    /// Its store index (created = modified).
    pub index: u64,
    /// Whether it carries the tree's expiry (else permanent).
    pub expires: bool,
    /// The value's length in JSON, escaped (measured once, while the value is at hand).
    value_len: u64,
}

impl<'a> FlatKey<'a> {
    /// A key with index 0 (the caller sets it).
    pub fn new(path: Cow<'a, str>, value: Cow<'a, str>, expires: bool) -> FlatKey<'a> {
        let value_len = go_string_body_len(&value);
        Self::measured(path, value, value_len, expires)
    }

    /// [`FlatKey::new`] with the value's JSON length already known ([`super::json_text`]);
    /// a wrong one makes the snapshot write fail, it is never written wrong.
    pub fn measured(
        path: Cow<'a, str>,
        value: Cow<'a, str>,
        value_len: u64,
        expires: bool,
    ) -> FlatKey<'a> {
        FlatKey {
            path,
            value,
            index: 0,
            expires,
            value_len,
        }
    }
}

/// Keys sorted for writing, with their dirs' indexes (see the module doc).
pub struct FlatTree<'a> {
    root: String,
    keys: Vec<FlatKey<'a>>,
    /// Positions into `keys`, in writing order.
    order: Vec<u32>,
    /// Each dir's index, in the order the dirs are opened.
    dirs: Vec<u64>,
    expire_time: String,
    refused: Vec<(usize, V2Error)>,
    /// Where the values are borrowed from, told of every value written.
    source: Option<&'a dyn Touch>,
}

/// `/` sorts below every other byte: whole paths then compare like their components.
fn rank(b: u8) -> u16 {
    if b == b'/' {
        0
    } else {
        u16::from(b) + 1
    }
}

fn cmp_paths(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    match (a.get(same), b.get(same)) {
        (Some(x), Some(y)) => rank(*x).cmp(&rank(*y)),
        _ => a.len().cmp(&b.len()),
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

impl<'a> FlatTree<'a> {
    /// Sorts `keys` below `root` (a top-level dir such as `/1`) and checks they can coexist
    /// (see [`FlatTree::refused`]).
    pub fn build(root: &str, keys: Vec<FlatKey<'a>>, expire_nanos: Option<i64>) -> FlatTree<'a> {
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_unstable_by(|&i, &j| cmp_paths(&keys[i as usize].path, &keys[j as usize].path));
        let mut tree = FlatTree {
            root: root.to_string(),
            keys,
            order,
            dirs: Vec::new(),
            expire_time: expire_time_of(expire_nanos),
            refused: Vec::new(),
            source: None,
        };
        tree.refused = tree.conflicts();
        if tree.refused.is_empty() {
            tree.dirs = tree.dir_indexes();
        }
        tree
    }

    /// The keys that cannot coexist (empty when all can), each as its position in the keys
    /// given with the refusal `load_key` in index order would give: a key below a key
    /// (`NotDir`), a key that is also a dir of earlier keys (`NotFile`), the same path twice
    /// (`NodeExist`). Such a tree is not written.
    pub fn refused(&self) -> &[(usize, V2Error)] {
        &self.refused
    }

    /// Tells `source` (where the values are borrowed from) of each value written.
    pub fn borrowed_from(&mut self, source: &'a dyn Touch) {
        self.source = Some(source);
    }

    pub fn keys(&self) -> &[FlatKey<'a>] {
        &self.keys
    }

    /// The values' bytes in the JSON (escaped, without quotes).
    pub(super) fn value_bytes(&self) -> u64 {
        self.keys.iter().map(|k| k.value_len).sum()
    }

    /// How many dirs the keys make below the root.
    pub fn dirs(&self) -> usize {
        self.dirs.len()
    }

    fn sorted(&self) -> impl Iterator<Item = &FlatKey<'a>> {
        self.order.iter().map(|&i| &self.keys[i as usize])
    }

    /// Keys that cannot coexist: a key and keys below it form a contiguous run in sorted order.
    fn conflicts(&self) -> Vec<(usize, V2Error)> {
        let at = |i: usize| &self.keys[self.order[i] as usize];
        let full = |p: &str| format!("{}{p}", self.root);
        let mut refused = Vec::new();
        let mut i = 0;
        while i < self.order.len() {
            let k = at(i);
            let end = (i + 1..self.order.len())
                .find(|&j| !is_under(&at(j).path, &k.path))
                .unwrap_or(self.order.len());
            let first_below = (i + 1..end).map(|j| at(j).index).min();
            match first_below {
                Some(below) if k.index < below => {
                    // the key came first: everything below it is refused
                    let e = || op_err(V2ErrorCode::NotDir, &full(&k.path));
                    refused.extend((i + 1..end).map(|j| (self.order[j] as usize, e())));
                    i = end;
                    continue;
                }
                Some(_) => refused.push((
                    self.order[i] as usize,
                    op_err(V2ErrorCode::NotFile, &full(&k.path)),
                )),
                None => {}
            }
            if i + 1 < self.order.len() && at(i + 1).path == k.path {
                let e = op_err(V2ErrorCode::NodeExist, &full(&k.path));
                refused.push((self.order[i + 1] as usize, e));
            }
            i += 1;
        }
        refused.sort_by_key(|(pos, _)| self.keys[*pos].index);
        refused
    }

    /// The lowest key index below each dir, dirs in the order [`FlatTree::walk`] opens them.
    fn dir_indexes(&self) -> Vec<u64> {
        let mut dirs: Vec<u64> = Vec::new();
        let mut open: Vec<usize> = Vec::new(); // slots in `dirs` of the open dirs
        self.walk(&mut |event| {
            match event {
                Walk::Open { .. } => {
                    open.push(dirs.len());
                    dirs.push(u64::MAX);
                }
                Walk::Close => {
                    open.pop();
                }
                Walk::Key(k) => {
                    for &d in &open {
                        dirs[d] = dirs[d].min(k.index);
                    }
                }
            }
            Ok(())
        })
        .expect("the walk itself does not fail");
        dirs
    }

    /// Visits the sorted keys, opening and closing the dirs between them.
    fn walk<'s>(&'s self, f: &mut dyn FnMut(Walk<'s, 'a>) -> io::Result<()>) -> io::Result<()> {
        let mut open: Vec<usize> = Vec::new(); // byte ends of the open dirs in `prev`
        let mut prev: &str = "";
        for k in self.sorted() {
            let p: &str = &k.path;
            let same = common_prefix(prev, p);
            while open.last().is_some_and(|&end| end >= same) {
                open.pop();
                f(Walk::Close)?;
            }
            let from = open.last().map_or(1, |&end| end + 1);
            for (pos, _) in p.match_indices('/').filter(|(pos, _)| *pos >= from) {
                let name = &p[p[..pos].rfind('/').map_or(0, |s| s + 1)..pos];
                f(Walk::Open {
                    path: &p[..pos],
                    name,
                })?;
                open.push(pos);
            }
            f(Walk::Key(k))?;
            prev = p;
        }
        for _ in open {
            f(Walk::Close)?;
        }
        Ok(())
    }

    /// The root's children, as `"name":{node},...` (without the braces around them).
    pub(super) fn write_children<W: io::Write>(&self, w: &mut W, values: Values) -> io::Result<()> {
        if !self.refused.is_empty() {
            return Err(io::Error::other("a tree with refused keys is not written"));
        }
        let root = self.root.as_str();
        let mut dirs = self.dirs.iter();
        let mut comma = false;
        self.walk(&mut |event| {
            if comma && !matches!(event, Walk::Close) {
                w.write_all(b",")?;
            }
            match event {
                Walk::Open { path, name } => {
                    let index = dirs.next().copied().unwrap_or_default();
                    write_go_string(w, name)?;
                    w.write_all(b":")?;
                    let empty = JsonStr::Plain("");
                    write_go_fields(w, &[root, path], (index, index), ZERO_TIME, empty)?;
                    comma = false;
                    return w.write_all(b",\"Children\":{");
                }
                Walk::Close => w.write_all(b"}}")?,
                Walk::Key(k) => {
                    let name = &k.path[k.path.rfind('/').map_or(0, |s| s + 1)..];
                    let expire = if k.expires {
                        &self.expire_time
                    } else {
                        ZERO_TIME
                    };
                    write_go_string(w, name)?;
                    w.write_all(b":")?;
                    // An escaped string is longer than its text: the same length, no escapes.
                    let value = match values {
                        Values::Omit => JsonStr::Plain(""),
                        Values::Write if k.value_len == k.value.len() as u64 => {
                            JsonStr::Plain(&k.value)
                        }
                        Values::Write => JsonStr::Text(&k.value),
                    };
                    write_go_fields(w, &[root, &k.path], (k.index, k.index), expire, value)?;
                    w.write_all(b",\"Children\":null}")?;
                    if let (Some(source), Values::Write) = (self.source, values) {
                        source.touched((k.path.len() + k.value.len()) as u64);
                    }
                }
            }
            comma = true;
            Ok(())
        })
    }
}

enum Walk<'s, 'a> {
    Open { path: &'s str, name: &'s str },
    Close,
    Key(&'s FlatKey<'a>),
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    fn key(path: &str, value: &str, index: u64, expires: bool) -> FlatKey<'static> {
        let mut k = FlatKey::new(path.to_string().into(), value.to_string().into(), expires);
        k.index = index;
        k
    }

    /// The same keys through `load_key` (index order) and through a `FlatTree`.
    fn both(keys: &[(&str, &str, bool)]) -> (Vec<u8>, Vec<u8>, usize) {
        let expiry = Some(1_900_000_000_123_456_789);
        let mut store = Store::new();
        for (path, value, expires) in keys {
            let e = if *expires { expiry } else { None };
            store
                .load_key(&format!("/1{path}"), value.to_string(), e)
                .unwrap();
        }
        let mut want = Vec::new();
        store.write_go_json(&mut want).unwrap();
        let flat: Vec<FlatKey> = (keys.iter().enumerate())
            .map(|(i, (p, v, e))| key(p, v, i as u64 + 1, *e))
            .collect();
        let tree = FlatTree::build("/1", flat, expiry);
        assert!(tree.refused().is_empty());
        let mut empty = Store::new();
        empty.current_index = store.current_index;
        let mut got = Vec::new();
        empty
            .write_go_json_with(&mut got, Some(("1", &tree)))
            .unwrap();
        let len = empty.go_json_len_with(Some(("1", &tree))).unwrap();
        assert_eq!(len, got.len() as u64, "the length is known without writing");
        (want, got, tree.dirs())
    }

    #[test]
    fn writes_what_load_key_and_the_store_write() {
        let keys = [
            ("/registry/pods/b", "v<1>", false),
            ("/registry/a-b", "x", true),
            ("/registry/pods/a", "\u{2028}é\"", false),
            ("/registry/a", "", false),
            ("/top", "t", true),
            ("/registry/pods-x/deep/er/key", "d", false),
            ("/registry/pods/a0", "z", false),
            ("/a\u{0}b/c", "nul", false),
            ("/a/c", "slash sorts first", false),
        ];
        let (want, got, dirs) = both(&keys);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(dirs, 7, "registry, pods, pods-x, deep, er, a\\0b, a");
        let (want, got, dirs) = both(&[]);
        assert_eq!(got, want);
        assert_eq!(dirs, 0);
    }

    #[test]
    fn json_text_measures_like_the_writer_writes() {
        use super::super::json_text;
        for s in [
            "",
            "plain ascii value of some length, longer than 16",
            "<&>",
            "é\u{2028}\n\"x",
        ] {
            let mut out = Vec::new();
            write_go_string(&mut out, s).unwrap();
            assert_eq!(
                json_text(s.as_bytes()),
                Some((s, out.len() as u64 - 2)),
                "{s:?}"
            );
        }
        assert_eq!(json_text(b"ok\xff"), None);
    }

    #[test]
    fn conflicts_are_refused_like_load_key_would() {
        let build = |keys: &[(&str, u64)]| {
            let flat = keys.iter().map(|(p, i)| key(p, "v", *i, false)).collect();
            let tree = FlatTree::build("/1", flat, None);
            tree.refused()
                .iter()
                .map(|(pos, e)| format!("{} {e}", keys[*pos].0))
                .collect::<Vec<_>>()
        };
        // the key first: both keys below it are refused, at the key
        assert_eq!(
            build(&[("/a", 1), ("/a/b", 2), ("/a/b/c", 3), ("/ab", 4)]),
            [
                "/a/b v2 store: Not a directory (104): /1/a",
                "/a/b/c v2 store: Not a directory (104): /1/a"
            ]
        );
        // the dir first: only the key is refused, the keys below stay
        assert_eq!(
            build(&[("/a/b", 1), ("/a", 2), ("/a/c", 3)]),
            ["/a v2 store: Not a file (102): /1/a"]
        );
        assert_eq!(
            build(&[("/x", 1), ("/x", 2)]),
            ["/x v2 store: Key already exists (105): /1/x"]
        );
        // bytewise `/a-b` would sort between `/a` and `/a/b`; by component it comes after them
        assert_eq!(
            build(&[("/a-b", 1), ("/a/b", 2), ("/a", 3)]),
            ["/a v2 store: Not a file (102): /1/a"]
        );
    }
}
