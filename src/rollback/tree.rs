//! The v2 store tree that rollback builds, and its JSON in exactly the shape etcd's
//! `store.Save()` produces (Go field names and order, sorted children, 1000-slot event ring,
//! Go string escaping). Values borrow from the memory-mapped db where they can.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

/// An absolute expiry, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireTime {
    pub unix_secs: i64,
    pub nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node<'a> {
    File {
        value: Cow<'a, str>,
        created: u64,
        modified: u64,
        expire: Option<ExpireTime>,
    },
    Dir {
        children: BTreeMap<String, Node<'a>>,
        created: u64,
        modified: u64,
    },
}

impl<'a> Node<'a> {
    pub fn dir(index: u64) -> Node<'a> {
        Node::Dir {
            children: BTreeMap::new(),
            created: index,
            modified: index,
        }
    }

    pub fn children(&self) -> Option<&BTreeMap<String, Node<'a>>> {
        match self {
            Node::Dir { children, .. } => Some(children),
            Node::File { .. } => None,
        }
    }

    pub fn children_mut(&mut self) -> Option<&mut BTreeMap<String, Node<'a>>> {
        match self {
            Node::Dir { children, .. } => Some(children),
            Node::File { .. } => None,
        }
    }

    /// The node at `parts` below this one.
    pub fn get(&self, parts: &[&str]) -> Option<&Node<'a>> {
        let mut n = self;
        for p in parts {
            n = n.children()?.get(*p)?;
        }
        Some(n)
    }

    /// Sets a file at `parts` below this dir, creating dirs with index `index`.
    /// Fails (returning how many leading parts name the blocking node) when a file is in the
    /// way or the target is a dir.
    pub fn set_file(&mut self, parts: &[&str], file: Node<'a>, index: u64) -> Result<(), usize> {
        use std::collections::btree_map::Entry;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(0);
        };
        let mut n = self;
        for (i, p) in dirs.iter().enumerate() {
            let ch = n.children_mut().ok_or(i)?;
            // look up before allocating a name: most keys share their dirs
            if !ch.contains_key(*p) {
                ch.insert((*p).to_string(), Node::dir(index));
            }
            n = ch.get_mut(*p).ok_or(i)?;
        }
        let ch = n.children_mut().ok_or(dirs.len())?;
        match ch.entry((*last).to_string()) {
            Entry::Occupied(o) if o.get().children().is_some() => Err(parts.len()),
            Entry::Occupied(mut o) => {
                o.insert(file);
                Ok(())
            }
            Entry::Vacant(v) => {
                v.insert(file);
                Ok(())
            }
        }
    }

    /// Makes sure a dir exists at `parts`.
    pub fn mkdir(&mut self, parts: &[&str], index: u64) -> Result<(), usize> {
        let mut n = self;
        for (i, p) in parts.iter().enumerate() {
            let ch = n.children_mut().ok_or(i)?;
            n = ch
                .entry((*p).to_string())
                .or_insert_with(|| Node::dir(index));
        }
        if n.children().is_none() {
            return Err(parts.len());
        }
        Ok(())
    }

    pub fn delete(&mut self, parts: &[&str]) -> Option<Node<'a>> {
        let (last, dirs) = parts.split_last()?;
        let mut n = self;
        for p in dirs {
            n = n.children_mut()?.get_mut(*p)?;
        }
        n.children_mut()?.remove(*last)
    }

    /// Removes every empty directory below this one, bottom-up (so parents that become empty
    /// go too; the Go original did a single top-down pass). Returns how many were removed.
    pub fn prune_empty_dirs(&mut self) -> usize {
        let Some(ch) = self.children_mut() else {
            return 0;
        };
        let mut removed = 0;
        for n in ch.values_mut() {
            removed += n.prune_empty_dirs();
        }
        let before = ch.len();
        ch.retain(|_, n| !matches!(n, Node::Dir { children, .. } if children.is_empty()));
        removed + before - ch.len()
    }

    /// (files, dirs) below this node, not counting itself.
    pub fn count(&self) -> (usize, usize) {
        let mut c = (0, 0);
        if let Some(ch) = self.children() {
            for n in ch.values() {
                match n {
                    Node::File { .. } => c.0 += 1,
                    Node::Dir { .. } => {
                        c.1 += 1;
                        let (f, d) = n.count();
                        c.0 += f;
                        c.1 += d;
                    }
                }
            }
        }
        c
    }
}

/// A whole v2 store: the root holds `/0` and `/1`.
#[derive(Debug, Clone)]
pub struct Store<'a> {
    pub root: Node<'a>,
    pub current_index: u64,
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Store<'_> {
    /// Writes the store as Go's `encoding/json` would (one line, no whitespace).
    pub fn write_json(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut w = io::BufWriter::with_capacity(1 << 16, w);
        w.write_all(b"{\"Root\":")?;
        let mut path = String::from("/");
        write_node(&mut w, &self.root, &mut path)?;
        w.write_all(b",\"WatcherHub\":{\"EventHistory\":{\"Queue\":{\"Events\":[")?;
        // etcd needs exactly Capacity (1000) slots or its next insert panics.
        for i in 0..1000 {
            w.write_all(if i == 0 { b"null" } else { b",null" })?;
        }
        w.write_all(b"],\"Size\":0,\"Front\":0,\"Back\":0,\"Capacity\":1000},\"StartIndex\":0,\"LastIndex\":0}}")?;
        write!(w, ",\"CurrentIndex\":{}", self.current_index)?;
        w.write_all(
            b",\"Stats\":{\"getsSuccess\":0,\"getsFail\":0,\"setsSuccess\":0,\"setsFail\":0,\
\"deleteSuccess\":0,\"deleteFail\":0,\"updateSuccess\":0,\"updateFail\":0,\"createSuccess\":0,\
\"createFail\":0,\"compareAndSwapSuccess\":0,\"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\
\"compareAndDeleteFail\":0,\"expireCount\":0,\"watchers\":0},\"CurrentVersion\":2}",
        )?;
        w.flush()
    }
}

fn write_node(w: &mut dyn Write, n: &Node<'_>, path: &mut String) -> io::Result<()> {
    w.write_all(b"{\"Path\":")?;
    write_go_string(w, path)?;
    let (created, modified) = match n {
        Node::File {
            created, modified, ..
        }
        | Node::Dir {
            created, modified, ..
        } => (*created, *modified),
    };
    write!(
        w,
        ",\"CreatedIndex\":{created},\"ModifiedIndex\":{modified},\"ExpireTime\":"
    )?;
    match n {
        Node::File {
            expire: Some(t), ..
        } => {
            w.write_all(b"\"")?;
            w.write_all(rfc3339_nano(*t).as_bytes())?;
            w.write_all(b"\"")?;
        }
        _ => write!(w, "\"{ZERO_TIME}\"")?,
    }
    w.write_all(b",\"Value\":")?;
    match n {
        Node::File { value, .. } => {
            write_go_string(w, value)?;
            w.write_all(b",\"Children\":null}")
        }
        Node::Dir { children, .. } => {
            w.write_all(b"\"\",\"Children\":{")?;
            let base = path.len();
            for (i, (name, child)) in children.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_go_string(w, name)?;
                w.write_all(b":")?;
                if !path.ends_with('/') {
                    path.push('/');
                }
                path.push_str(name);
                write_node(w, child, path)?;
                path.truncate(base);
            }
            w.write_all(b"}}")
        }
    }
}

/// Bytes that need a look in [`write_go_string`]: controls, `"`, `\\`, `<`, `>`, `&`, and 0xE2
/// (the lead byte of U+2028/U+2029).
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xE2] = true;
    t
};

/// True when none of the 8 bytes in `x` is special or non-ASCII (SWAR: the usual
/// "has zero byte" / "has byte less than" tricks, exact for "any").
#[inline]
fn plain_ascii8(x: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let below_space = x.wrapping_sub(LO * 0x20) & !x & HI;
    let hit = below_space
        | (x & HI)
        | zero(x ^ (LO * u64::from(b'"')))
        | zero(x ^ (LO * u64::from(b'\\')))
        | zero(x ^ (LO * u64::from(b'<')))
        | zero(x ^ (LO * u64::from(b'>')))
        | zero(x ^ (LO * u64::from(b'&')));
    hit == 0
}

/// A JSON string the way Go's encoding/json writes it (HTML-safe, U+2028/9 escaped).
/// Hot path of the whole tool (every value, twice), hence the table.
pub fn write_go_string(w: &mut dyn Write, s: &str) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    w.write_all(b"\"")?;
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some(chunk) = b.get(i..i + 8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            if plain_ascii8(u64::from_le_bytes(a)) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        if !SPECIAL[c as usize] {
            i += 1;
            continue;
        }
        let mut skip = 1;
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0xE2 if b.get(i + 1) == Some(&0x80)
                && matches!(b.get(i + 2), Some(0xA8) | Some(0xA9)) =>
            {
                skip = 3;
                if b[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                }
            }
            0xE2 => {
                i += 1;
                continue;
            }
            _ => {
                w.write_all(&b[start..i])?;
                w.write_all(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 15) as usize],
                ])?;
                i += 1;
                start = i;
                continue;
            }
        };
        w.write_all(&b[start..i])?;
        w.write_all(esc)?;
        i += skip;
        start = i;
    }
    w.write_all(&b[start..])?;
    w.write_all(b"\"")
}

/// Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped, no fraction when 0.
pub fn rfc3339_nano(t: ExpireTime) -> String {
    let days = t.unix_secs.div_euclid(86_400);
    let secs = t.unix_secs.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    if t.nanos > 0 {
        let f = format!("{:09}", t.nanos);
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        let mut v = Vec::new();
        write_go_string(&mut v, s).unwrap();
        String::from_utf8(v).unwrap()
    }

    /// "2026-11-25T18:50:50.014802917Z" -> ExpireTime (test only; UTC inputs).
    fn parse_utc(t: &str) -> ExpireTime {
        let (y, m, d) = (
            t[0..4].parse::<i64>().unwrap(),
            t[5..7].parse::<i64>().unwrap(),
            t[8..10].parse::<i64>().unwrap(),
        );
        let (hh, mm, ss) = (
            t[11..13].parse::<i64>().unwrap(),
            t[14..16].parse::<i64>().unwrap(),
            t[17..19].parse::<i64>().unwrap(),
        );
        let frac = t[19..].trim_end_matches('Z').trim_start_matches('.');
        let nanos = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().unwrap()
        };
        // days from civil (Howard Hinnant)
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        ExpireTime {
            unix_secs: days * 86_400 + hh * 3600 + mm * 60 + ss,
            nanos,
        }
    }

    fn from_json(v: &serde_json::Value) -> Node<'static> {
        let idx = |k: &str| v[k].as_u64().unwrap();
        match &v["Children"] {
            serde_json::Value::Object(ch) => Node::Dir {
                children: ch.iter().map(|(k, c)| (k.clone(), from_json(c))).collect(),
                created: idx("CreatedIndex"),
                modified: idx("ModifiedIndex"),
            },
            _ => {
                let t = v["ExpireTime"].as_str().unwrap();
                Node::File {
                    value: Cow::Owned(v["Value"].as_str().unwrap().to_string()),
                    created: idx("CreatedIndex"),
                    modified: idx("ModifiedIndex"),
                    expire: (t != ZERO_TIME).then(|| parse_utc(t)),
                }
            }
        }
    }

    /// The node tree of a .snap written by real etcd 3.4.23, re-serialized by us, is
    /// byte-identical (field order, child order, escaping, time format).
    #[test]
    fn root_json_is_byte_identical_to_etcd() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/snap/0000000000000002-0000000000000021.snap"
        );
        let snap = crate::rollback::snap::read(std::path::Path::new(path)).unwrap();
        let json = snap.data;
        let start = json.windows(7).position(|w| w == b"{\"Root\"").unwrap();
        let end = json
            .windows(13)
            .position(|w| w == b",\"WatcherHub\"")
            .unwrap();
        let etcd_root = &json[start + 8..end];
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let store = Store {
            root: from_json(&v["Root"]),
            current_index: 0,
        };
        let mut ours = Vec::new();
        store.write_json(&mut ours).unwrap();
        let our_end = ours
            .windows(13)
            .position(|w| w == b",\"WatcherHub\"")
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours[8..our_end]),
            String::from_utf8_lossy(etcd_root)
        );
        assert!(etcd_root.windows(11).any(|w| w == b"ExpireTime\""));
    }

    #[test]
    fn swar_agrees_with_the_table() {
        for c in 0..=255u8 {
            for pos in 0..8 {
                let mut a = *b"abcdefgh";
                a[pos] = c;
                let want = !(SPECIAL[c as usize] || c >= 0x80);
                assert_eq!(
                    plain_ascii8(u64::from_le_bytes(a)),
                    want,
                    "byte {c:#x} at {pos}"
                );
            }
        }
        assert_eq!(
            json("0123456789abcdef<0123456789\"x"),
            r#""0123456789abcdef\u003c0123456789\"x""#
        );
    }

    #[test]
    fn go_string_escaping() {
        assert_eq!(json("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json("<&>"), r#""\u003c\u0026\u003e""#);
        assert_eq!(json("x\n\u{1}\u{2028}é"), "\"x\\n\\u0001\\u2028é\"");
        assert_eq!(json("\u{2029}\u{2000}\t\r"), "\"\\u2029\u{2000}\\t\\r\"");
        assert_eq!(json(""), "\"\"");
    }

    #[test]
    fn rfc3339_like_go() {
        assert_eq!(
            rfc3339_nano(ExpireTime {
                unix_secs: 0,
                nanos: 0
            }),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_nano(ExpireTime {
                unix_secs: 1_795_630_451,
                nanos: 350_616_900
            }),
            "2026-11-25T18:14:11.3506169Z"
        );
        assert_eq!(
            rfc3339_nano(ExpireTime {
                unix_secs: 951_782_400,
                nanos: 0
            }),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn set_prune_and_json_shape() {
        let mut root = Node::dir(0);
        root.mkdir(&["0"], 0).unwrap();
        root.mkdir(&["1"], 0).unwrap();
        let f = |v: &'static str, i| Node::File {
            value: Cow::Borrowed(v),
            created: i,
            modified: i,
            expire: None,
        };
        root.set_file(&["1", "a", "b"], f("x", 1), 1).unwrap();
        // a file in the way of a dir, and a dir in the way of a file
        assert_eq!(root.set_file(&["1", "a", "b", "c"], f("y", 2), 2), Err(3));
        assert_eq!(root.set_file(&["1", "a"], f("y", 2), 2), Err(2));
        root.mkdir(&["1", "e", "f"], 3).unwrap();
        let mut one = root.children_mut().unwrap().remove("1").unwrap();
        assert_eq!(one.prune_empty_dirs(), 2); // e/f then e
        root.children_mut().unwrap().insert("1".into(), one);
        let store = Store {
            root,
            current_index: 1,
        };
        let mut out = Vec::new();
        store.write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["Root"]["Children"]["1"]["Children"]["a"]["Children"]["b"]["Path"],
            "/1/a/b"
        );
        assert_eq!(
            v["Root"]["Children"]["1"]["Children"]["a"]["Children"]["b"]["Children"],
            serde_json::Value::Null
        );
        assert_eq!(
            v["Root"]["Children"]["0"]["Children"],
            serde_json::json!({})
        );
        assert_eq!(
            v["WatcherHub"]["EventHistory"]["Queue"]["Events"]
                .as_array()
                .unwrap()
                .len(),
            1000
        );
        assert_eq!(v["CurrentVersion"], 2);
        assert!(String::from_utf8(out).unwrap().starts_with(
            "{\"Root\":{\"Path\":\"/\",\"CreatedIndex\":0,\"ModifiedIndex\":0,\"ExpireTime\":\"0001-01-01T00:00:00Z\",\"Value\":\"\",\"Children\":{\"0\":"
        ));
    }
}
