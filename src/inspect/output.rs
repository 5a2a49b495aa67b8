//! Output helpers shared by the `etcd-inspect` subcommands: ordered JSON lines (one object per
//! line, fields in the order written), base64 like `etcdctl -w json`, and byte strings for text.

use std::fmt::Write as _;

/// Builds one JSON object with its fields in insertion order.
#[derive(Default)]
pub struct JsonLine {
    buf: String,
}

impl JsonLine {
    pub fn new() -> JsonLine {
        JsonLine { buf: String::new() }
    }

    fn key(&mut self, k: &str) {
        self.buf.push(if self.buf.is_empty() { '{' } else { ',' });
        self.buf.push_str(&quote(k));
        self.buf.push(':');
    }

    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        self.buf.push_str(&quote(v));
        self
    }

    pub fn num(mut self, k: &str, v: impl Into<i128>) -> Self {
        self.key(k);
        let _ = write!(self.buf, "{}", v.into());
        self
    }

    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    /// Bytes as base64, like etcd's JSON.
    pub fn bytes(self, k: &str, v: &[u8]) -> Self {
        let b = crate::base64::encode(v);
        self.str(k, &b)
    }

    pub fn opt_str(self, k: &str, v: Option<&str>) -> Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    pub fn opt_num(self, k: &str, v: Option<impl Into<i128>>) -> Self {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }

    pub fn null(mut self, k: &str) -> Self {
        self.key(k);
        self.buf.push_str("null");
        self
    }

    pub fn strs(mut self, k: &str, v: &[String]) -> Self {
        self.key(k);
        self.buf.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            self.buf.push_str(&quote(s));
        }
        self.buf.push(']');
        self
    }

    /// The object and a newline.
    pub fn finish(mut self) -> String {
        if self.buf.is_empty() {
            self.buf.push('{');
        }
        self.buf.push_str("}\n");
        self.buf
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Bytes for a text line: printable ASCII as is, the rest as `\xNN`, quoted.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

/// A string shortened to `max` chars for a text line.
pub fn preview(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head:?}... ({} bytes)", s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_field_order() {
        let l = JsonLine::new()
            .num("index", 3u64)
            .num("term", 2u64)
            .str("type", "EntryNormal")
            .finish();
        assert_eq!(l, "{\"index\":3,\"term\":2,\"type\":\"EntryNormal\"}\n");
    }
}
