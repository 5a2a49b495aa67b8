//! `etcd-inspect db`: the keys in an etcd backend db (`member/snap/db`, or an
//! `etcdctl snapshot save` file), read without etcd.
//!
//! - default: the live keys at the latest revision, newest first (descending
//!   `mod_revision`; etcdctl sorts by key). One backward scan; memory grows only by 16 bytes
//!   per distinct key.
//! - `revisions`: every revision in bucket `key`, oldest first, tombstones included.
//! - `bucket`: any bucket's raw items in key order.
//!
//! Text by default (one line per item, bytes escaped); `json`: one object per line, bytes as
//! base64, with etcdctl's field names.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::InspectError;
use crate::storage::bolt::{BoltDb, Direction, LeafItem};
use crate::storage::member::{check_db_file, probe, MemberError, Want};
use crate::storage::mvcc::{self, RevisionEntry};
use crate::storage::Finding;

/// What `print_db` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbOptions {
    /// Dump this top-level bucket raw instead of the keys.
    pub bucket: Option<String>,
    /// Every revision, tombstones included, instead of the live keys.
    pub revisions: bool,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// The db file for `path`: a data dir means `<dir>/member/snap/db`, anything else is the file.
pub fn db_path(path: &Path) -> Result<PathBuf, InspectError> {
    let file = if path.is_dir() {
        path.join("member/snap/db")
    } else {
        path.to_path_buf()
    };
    if !probe(&file, Want::File)? {
        return Err(InspectError::NoDb { path: file });
    }
    Ok(file)
}

/// Prints the db at `path` (data dir, db file or snapshot file) as `opts` asks.
pub fn print_db(path: &Path, opts: &DbOptions, out: &mut dyn Write) -> Result<(), InspectError> {
    if opts.bucket.is_some() && opts.revisions {
        return Err(InspectError::Usage(
            "--bucket and --revisions cannot be used together",
        ));
    }
    let db = BoltDb::open(&db_path(path)?)?;
    // Lines are built straight into one buffer, written out when it fills.
    const FLUSH_AT: usize = 1 << 18;
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
    // An output error is kept here and turned into a Break: the walk stops, then we report it.
    let mut failed: Option<io::Error> = None;
    let mut emit = |buf: &mut Vec<u8>| {
        if buf.len() < FLUSH_AT {
            return ControlFlow::Continue(());
        }
        match out.write_all(buf) {
            Ok(()) => {
                buf.clear();
                ControlFlow::Continue(())
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    if let Some(name) = &opts.bucket {
        let bucket = db.require_bucket(name.as_bytes())?;
        db.for_each(&bucket, Direction::Forward, &mut |item| {
            bucket_line(&mut buf, item, opts.json);
            Ok(emit(&mut buf))
        })?;
    } else if opts.revisions {
        mvcc::for_each_revision(&db, Direction::Forward, &mut |e| {
            kv_line(&mut buf, e, true, opts.json);
            Ok(emit(&mut buf))
        })?;
    } else {
        mvcc::for_each_live(&db, &mut |e| {
            kv_line(&mut buf, e, false, opts.json);
            Ok(emit(&mut buf))
        })?;
    }
    if let Some(e) = failed {
        return Err(InspectError::Output(e));
    }
    out.write_all(&buf)
        .and_then(|()| out.flush())
        .map_err(InspectError::Output)
}

/// The db part of the check ([`check_db_file`]) on a data dir, db file or snapshot file.
/// `Err` only for what is not the file's fault (missing, locked, unreadable).
pub fn check_db(path: &Path) -> Result<Vec<Finding>, InspectError> {
    Ok(check_db_file(&db_path(path)?).map_err(MemberError::Db)?)
}

fn kv_line(line: &mut Vec<u8>, e: &RevisionEntry<'_>, with_revision: bool, json: bool) {
    let kv = &e.kv;
    if json {
        line.push(b'{');
        if with_revision {
            line.extend_from_slice(b"\"revision\":");
            push_int(line, e.revision.main);
            line.extend_from_slice(b",\"sub\":");
            push_int(line, e.revision.sub);
            line.extend_from_slice(if e.tombstone {
                b",\"tombstone\":true,"
            } else {
                b",\"tombstone\":false,"
            });
        }
        line.extend_from_slice(b"\"key\":\"");
        crate::base64::encode_into(line, kv.key);
        line.extend_from_slice(b"\",\"create_revision\":");
        push_int(line, kv.create_revision);
        line.extend_from_slice(b",\"mod_revision\":");
        push_int(line, kv.mod_revision);
        line.extend_from_slice(b",\"version\":");
        push_int(line, kv.version);
        line.extend_from_slice(b",\"value\":\"");
        crate::base64::encode_into(line, kv.value);
        line.extend_from_slice(b"\",\"lease\":");
        push_int(line, kv.lease);
        line.extend_from_slice(b"}\n");
        return;
    }
    if with_revision {
        push_fmt(
            line,
            format_args!("{}_{} ", e.revision.main, e.revision.sub),
        );
        if e.tombstone {
            line.extend_from_slice(b"delete ");
            escape(line, kv.key);
            line.push(b'\n');
            return;
        }
        line.extend_from_slice(b"put ");
    }
    escape(line, kv.key);
    line.extend_from_slice(b" = ");
    escape(line, kv.value);
    push_fmt(
        line,
        format_args!(
            "  (create_revision {}, mod_revision {}, version {}",
            kv.create_revision, kv.mod_revision, kv.version
        ),
    );
    if kv.lease != 0 {
        // Hex, as `etcdctl lease list` prints lease IDs.
        push_fmt(line, format_args!(", lease {:x}", kv.lease));
    }
    line.extend_from_slice(b")\n");
}

fn bucket_line(line: &mut Vec<u8>, item: &LeafItem<'_>, json: bool) {
    if json {
        line.extend_from_slice(b"{\"key\":\"");
        crate::base64::encode_into(line, item.key);
        if item.is_bucket() {
            line.extend_from_slice(b"\",\"bucket\":true}\n");
        } else {
            line.extend_from_slice(b"\",\"value\":\"");
            crate::base64::encode_into(line, item.value);
            line.extend_from_slice(b"\"}\n");
        }
        return;
    }
    escape(line, item.key);
    if item.is_bucket() {
        line.extend_from_slice(b" (bucket)\n");
    } else {
        line.extend_from_slice(b" = ");
        escape(line, item.value);
        line.push(b'\n');
    }
}

/// Decimal digits of `v` (the hot path of JSON lines; `fmt` is slow here).
fn push_int(line: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        line.push(b'-');
    }
    line.extend_from_slice(&digits[i..]);
}

fn push_fmt(line: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    // Writing to a Vec cannot fail.
    let _ = line.write_fmt(args);
}

/// Bytes as one line of text: valid UTF-8 as is, except `\` and control characters, which
/// are escaped (`\\`, `\n`, `\t`, `\r`, `\u{..}`); other bytes as `\xNN`.
pub fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if valid
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
        {
            out.extend_from_slice(valid.as_bytes());
        } else {
            for c in valid.chars() {
                match c {
                    '\\' => out.extend_from_slice(b"\\\\"),
                    '\n' => out.extend_from_slice(b"\\n"),
                    '\t' => out.extend_from_slice(b"\\t"),
                    '\r' => out.extend_from_slice(b"\\r"),
                    c if c.is_control() => push_fmt(out, format_args!("\\u{{{:x}}}", c as u32)),
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        for b in chunk.invalid() {
            push_fmt(out, format_args!("\\x{b:02x}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(bytes: &[u8]) -> String {
        let mut v = Vec::new();
        escape(&mut v, bytes);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn push_int_matches_display() {
        for v in [0, 1, -1, 9, 10, 99, 100, 12345, i64::MAX, i64::MIN, -42] {
            let mut line = Vec::new();
            push_int(&mut line, v);
            assert_eq!(String::from_utf8(line).unwrap(), v.to_string());
        }
    }

    #[test]
    fn escape_keeps_text_readable_and_binary_unambiguous() {
        assert_eq!(esc(b"/registry/a"), "/registry/a");
        assert_eq!(esc("héllo".as_bytes()), "héllo");
        assert_eq!(esc(b"a\\b\nc\td\x00"), "a\\\\b\\nc\\td\\u{0}");
        assert_eq!(esc(b"k8s\x00\xff\x80"), "k8s\\u{0}\\xff\\x80");
    }
}
