//! One line of the text format 0.0.4 as borrowed tokens, checked as Go's `expfmt.TextParser`
//! checks them (valid names, escapes, values and timestamps, no label twice). Nothing is
//! allocated unless the line is bad: the monitor lexes every line etcd sends on every scrape,
//! and most of them are copied out as they came.
//!
//! What a line means in its exposition (which family, HELP/TYPE order) is [`super::parse()`]'s.

use super::MetricType;

/// A checked line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line<'a> {
    /// A blank line, or a comment other than HELP and TYPE.
    Skip,
    /// `# HELP name text`; `text` still has its escapes (checked: `\\` and `\n` only).
    Help {
        name: &'a str,
        text: &'a str,
    },
    /// `# TYPE name kind`.
    Type {
        name: &'a str,
        kind: MetricType,
    },
    Sample(SampleLine<'a>),
}

/// `name{labels} value [timestamp]`; the labels are in [`Lexer::labels`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleLine<'a> {
    pub name: &'a str,
    /// Where the value starts in the line: everything before it is the series' name and
    /// labels.
    pub value_at: usize,
    /// The value as written; [`parse_float`] reads it.
    pub value: &'a str,
    pub timestamp: Option<&'a str>,
}

/// A label as written: name and raw value. Values keep their escapes; the only ones allowed,
/// `\\`, `\"` and `\n`, are the ones the writer produces, so a raw value is also its
/// canonical written form.
pub type RawLabel<'a> = (&'a str, &'a str);

/// Lexes lines one at a time; the labels of the last sample line stay in a buffer it reuses.
///
/// Consecutive sample lines mostly repeat their metric name and label names (a histogram's
/// buckets, a counter's series): a name equal to the previous line's, at the same place, is
/// known to be valid and (for labels) distinct, so it is compared a word at a time instead of
/// being scanned byte by byte and checked against the others.
#[derive(Default)]
pub struct Lexer<'a> {
    /// The labels of the last line are `labels[..count]`; the rest are from earlier lines.
    labels: Vec<RawLabel<'a>>,
    count: usize,
    /// The metric name of the last sample line.
    last_name: &'a str,
}

impl<'a> Lexer<'a> {
    /// Lexes one line (without its `\n`; a trailing `\r` is the caller's business).
    pub fn line(&mut self, line: &'a str) -> Result<Line<'a>, String> {
        self.count = 0;
        let indent = skip_blanks_at(line.as_bytes(), 0);
        let line = &line[indent..];
        match line.as_bytes().first() {
            None => Ok(Line::Skip),
            Some(b'#') => comment(&line[1..]),
            Some(_) => {
                let mut sample = self.sample(line)?;
                sample.value_at += indent;
                Ok(Line::Sample(sample))
            }
        }
    }

    /// The labels of the last line, in line order (none unless it was a sample).
    pub fn labels(&self) -> &[RawLabel<'a>] {
        &self.labels[..self.count]
    }

    fn sample(&mut self, line: &'a str) -> Result<SampleLine<'a>, String> {
        let b = line.as_bytes();
        let name_len = match repeats(b, 0, self.last_name, &NAME_BYTES) {
            Some(n) => n,
            None => b
                .iter()
                .position(|c| NAME_BYTES[*c as usize] == 0)
                .unwrap_or(b.len()),
        };
        let name = &line[..name_len];
        if !starts_name(name) {
            return Err(match line.chars().next() {
                Some(c) if name.is_empty() => format!("expected a metric name, found {c:?}"),
                _ => format!("invalid metric name {name:?}"),
            });
        }
        let mut at = skip_blanks_at(b, name_len);
        if b.get(at) == Some(&b'{') {
            at = self.lex_labels(line, at + 1)? + 1;
        }
        let (value, rest) = split_token(skip_blanks(&line[at..]));
        let value_at = line.len() - value.len() - rest.len();
        if value.is_empty() {
            return Err(format!("sample of {name:?} has no value"));
        }
        if !is_float(value) {
            return Err(format!("invalid value {value:?} for {name:?}"));
        }
        let (ts, rest) = split_token(skip_blanks(rest));
        let timestamp = if ts.is_empty() {
            None
        } else {
            ts.parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts:?} for {name:?}"))?;
            Some(ts)
        };
        if !skip_blanks(rest).is_empty() {
            return Err(format!("unexpected text after the sample of {name:?}"));
        }
        self.last_name = name;
        Ok(SampleLine {
            name,
            value_at,
            value,
            timestamp,
        })
    }

    /// Lexes `name="value",...}` from `line[at..]` (past the `{`) into `labels`; returns the
    /// index of the `}`.
    fn lex_labels(&mut self, line: &'a str, mut at: usize) -> Result<usize, String> {
        let b = line.as_bytes();
        // Whether every label so far has the name the last line had in its place.
        let mut as_before = true;
        let mut k = 0;
        loop {
            let start = skip_blanks_at(b, at);
            let earlier = self.labels.get(k).map_or("", |l| l.0);
            let known = if as_before && k < self.labels.len() {
                repeats(b, start, earlier, &WORD_BYTES)
            } else {
                None
            };
            as_before = known.is_some();
            let end = match known {
                Some(n) => start + n,
                None => {
                    let n = b[start..]
                        .iter()
                        .position(|c| WORD_BYTES[*c as usize] == 0)
                        .unwrap_or(b.len() - start);
                    start + n
                }
            };
            let name = &line[start..end];
            if !starts_name(name) {
                return match b.get(start) {
                    Some(b'}') => {
                        self.count = k;
                        Ok(start)
                    }
                    None => Err("unterminated label set (missing '}')".to_string()),
                    Some(_) => Err(format!(
                        "invalid label name {:?}",
                        excerpt_token(&line[start..])
                    )),
                };
            }
            if known.is_none()
                && self.labels[..k.min(self.labels.len())]
                    .iter()
                    .any(|(n, _)| same_text(n, name))
            {
                return Err(format!("duplicate label {name:?}"));
            }
            let (value, next) = label_value(line, end, name)?;
            if k < self.labels.len() {
                self.labels[k] = (name, value);
            } else {
                self.labels.push((name, value));
            }
            k += 1;
            at = next;
        }
    }
}

/// The length of `name` if `b[at..]` starts with it as a whole name (the next byte is not in
/// `charset`). `name` must have been read from the same kind of place before, so it is valid.
#[inline]
fn repeats(b: &[u8], at: usize, name: &str, charset: &[u8; 256]) -> Option<usize> {
    let n = name.len();
    let candidate = b.get(at..at + n)?;
    let after = b.get(at + n).map_or(0, |c| charset[*c as usize]);
    (n > 0 && after == 0 && same_bytes(candidate, name.as_bytes())).then_some(n)
}

/// After a label name at `line[at..]`: `="value"` and a `,` or the `}`; returns the raw value
/// and where the next label starts. Escapes are checked here, so the value is scanned once.
fn label_value<'a>(line: &'a str, at: usize, name: &str) -> Result<(&'a str, usize), String> {
    let b = line.as_bytes();
    let mut i = skip_blanks_at(b, at);
    if b.get(i) != Some(&b'=') {
        return Err(format!("expected '=' after label name {name:?}"));
    }
    i = skip_blanks_at(b, i + 1);
    if b.get(i) != Some(&b'"') {
        return Err(format!(
            "expected '\"' to start the value of label {name:?}"
        ));
    }
    i += 1;
    let value_start = i;
    // The first escape that is not `\\`, `\"` or `\n`: an error once the value is known
    // to end (an unterminated value is reported as that).
    let mut bad_escape = None;
    loop {
        match b.get(i) {
            Some(b'"') => break,
            Some(b'\\') => {
                if !matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n')) {
                    bad_escape.get_or_insert(i);
                }
                i += 2;
            }
            Some(_) => i += 1,
            None => return Err(format!("unterminated value of label {name:?}")),
        }
    }
    let value = &line[value_start..i];
    if let Some(e) = bad_escape {
        return Err(escape_error(&line[e..]));
    }
    i = skip_blanks_at(b, i + 1);
    match b.get(i) {
        Some(b',') => Ok((value, i + 1)),
        Some(b'}') => Ok((value, i)),
        _ => Err(format!(
            "expected ',' or '}}' after the value of label {name:?}"
        )),
    }
}

/// The raw value of label `name`. Searches from the end: `le` and `quantile`, looked up on
/// every histogram and summary line, come last in client_golang's output.
pub fn label<'a>(labels: &[RawLabel<'a>], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .rev()
        .find(|(n, _)| same_text(n, name))
        .map(|(_, v)| *v)
}

/// `# HELP name text`, `# TYPE name type`; any other `#` line is a comment.
fn comment(rest: &str) -> Result<Line<'_>, String> {
    let (keyword, rest) = split_token(skip_blanks(rest));
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(Line::Skip);
    }
    let (name, rest) = split_token(skip_blanks(rest));
    if name.is_empty() {
        return Err(format!("{keyword} line without a metric name"));
    }
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    if keyword == "HELP" {
        // Blanks after the name separate; the rest of the line is the text (as expfmt).
        let text = skip_blanks(rest);
        check_escapes(text, false)?;
        Ok(Line::Help { name, text })
    } else {
        let token = rest.trim_matches(|c| c == ' ' || c == '\t');
        let kind = MetricType::from_token(token)
            .ok_or_else(|| format!("unknown metric type {token:?}"))?;
        Ok(Line::Type { name, kind })
    }
}

/// Only `\\`, `\n` (and `\"` in label values) may follow a backslash, as in expfmt.
fn check_escapes(raw: &str, label_value: bool) -> Result<(), String> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            match bytes.get(i + 1) {
                Some(b'\\' | b'n') => {}
                Some(b'"') if label_value => {}
                _ => return Err(escape_error(&raw[i..])),
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// The error for the bad escape at the start of `s` (a backslash).
fn escape_error(s: &str) -> String {
    match s[1..].chars().next() {
        Some(c) => format!("invalid escape sequence \\{c}"),
        None => "backslash at the end of the line".to_string(),
    }
}

/// The value with escapes resolved; borrowed when it has none. The text must have passed
/// the [`Lexer`] (an unknown escape is kept as written).
pub fn unescape(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('\\') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether [`parse_float`] reads `s`, without converting: decimal numbers (the common case)
/// by their grammar, anything else by trying.
pub fn is_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa > 0 && i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    (mantissa > 0 && i == b.len()) || parse_float(s).is_some()
}

/// Go's `ParseFloat` spellings that Prometheus writes: decimal, exponent, `+Inf`, `-Inf`,
/// `NaN` (case-insensitive, as Go accepts them).
pub fn parse_float(s: &str) -> Option<f64> {
    let unsigned = eat(s, b'+').or_else(|| eat(s, b'-')).unwrap_or(s);
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if unsigned.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    // Rust also takes "inf"/"nan" spellings handled above; refuse anything non-numeric first.
    if !unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// `a == b` eight bytes at a time: musl's `bcmp`, which `==` calls for strings of unknown
/// length, compares byte by byte, and this runs for almost every line.
pub fn same_text(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut wa).zip(&mut wb) {
        let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        if word(x) != word(y) {
            return false;
        }
    }
    wa.remainder()
        .iter()
        .zip(wb.remainder())
        .all(|(x, y)| x == y)
}

/// `s` without its first byte if that is `b` (an ASCII byte, so the cut is a char boundary).
#[inline]
fn eat(s: &str, b: u8) -> Option<&str> {
    if s.as_bytes().first() == Some(&b) {
        s.get(1..)
    } else {
        None
    }
}

/// Bytes of metric names (`[a-zA-Z0-9_:]`, non-zero) and of label names (`[a-zA-Z0-9_]`).
static NAME_BYTES: [u8; 256] = byte_class(true);
static WORD_BYTES: [u8; 256] = byte_class(false);

const fn byte_class(colon: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || (colon && c == b':') {
            t[b] = 1;
        }
        b += 1;
    }
    t
}

/// `s` without leading blanks (space, tab).
#[inline]
fn skip_blanks(s: &str) -> &str {
    &s[skip_blanks_at(s.as_bytes(), 0)..]
}

/// The first index from `i` on that is not a blank.
#[inline]
pub(crate) fn skip_blanks_at(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

fn split_token(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| b == b' ' || b == b'\t')
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn excerpt_token(s: &str) -> &str {
    let end = s.char_indices().nth(20).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

/// For a name already scanned up to the first byte outside its charset: the rest of the
/// check is non-empty and no leading digit.
fn starts_name(s: &str) -> bool {
    s.as_bytes().first().is_some_and(|b| !b.is_ascii_digit())
}

fn is_metric_name(s: &str) -> bool {
    starts_name(s) && s.bytes().all(|c| NAME_BYTES[c as usize] != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_equals_str_eq() {
        let words = [
            "",
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgx",
            "xbcdefgh",
            "etcd_disk_wal_fsync_duration_seconds",
            "etcd_disk_wal_fsync_duration_secondz",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_text(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn is_float_agrees_with_parse_float() {
        let cases = [
            "0",
            "1",
            "-1",
            "+1",
            "1.5",
            "1.",
            ".5",
            ".",
            "-.5",
            "1e5",
            "1E+05",
            "1e-300",
            "1.7956289134764411e+09",
            "e5",
            "1e",
            "1e+",
            "--1",
            "+-1",
            "1.2.3",
            "1e5.5",
            "",
            "+Inf",
            "-Inf",
            "Inf",
            "inf",
            "NaN",
            "nan",
            "Infinity",
            "0x1p3",
            "1_000",
            "1e5e5",
            "١",
            "12a",
            " 1",
            "1 ",
        ];
        for s in cases {
            assert_eq!(is_float(s), parse_float(s).is_some(), "{s:?}");
        }
    }

    #[test]
    fn labels_keep_escapes_and_come_in_line_order() {
        let mut lexer = Lexer::default();
        let Ok(Line::Sample(s)) = lexer.line(r#"m{a="x\"y", b = "z\\n" ,} 1 17"#) else {
            panic!("not a sample");
        };
        assert_eq!(s.name, "m");
        assert_eq!(s.value, "1");
        assert_eq!(s.value_at, 26);
        assert_eq!(s.timestamp, Some("17"));
        let labels = lexer.labels();
        assert_eq!(labels, [("a", r#"x\"y"#), ("b", r"z\\n")]);
        assert_eq!(unescape(labels[0].1), "x\"y");
        assert_eq!(unescape(labels[1].1), "z\\n");
        assert_eq!(label(labels, "b"), Some(r"z\\n"));
        assert_eq!(label(labels, "c"), None);
        lexer.line("# TYPE m counter").unwrap();
        assert!(lexer.labels().is_empty());
        // Where the value starts counts the blanks the line starts with.
        let Ok(Line::Sample(s)) = lexer.line(" \tm 5") else {
            panic!("not a sample");
        };
        assert_eq!((s.value_at, s.value), (4, "5"));
    }

    #[test]
    fn a_label_twice_is_refused() {
        let many: Vec<String> = (0..20).map(|i| format!("l{i}=\"v\"")).collect();
        let ok = format!("m{{{}}} 1", many.join(","));
        assert!(Lexer::default().line(&ok).is_ok());
        for dup in ["l0", "l15", "l16", "l19"] {
            let bad = format!("m{{{},{dup}=\"w\"}} 1", many.join(","));
            let err = Lexer::default().line(&bad).unwrap_err();
            assert!(err.contains("duplicate label"), "{dup}: {err}");
        }
    }
}
