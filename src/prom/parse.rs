//! A strict line parser for the text format 0.0.4, with the rules of Go's `expfmt.TextParser`
//! (which the Go original used): HELP/TYPE at most once per name, TYPE before samples,
//! `_bucket`/`_sum`/`_count` grouped under a TYPE'd histogram or summary, valid names and
//! escapes. Errors name the 1-based line. Input is never trusted: no panics, no unbounded work.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

use super::rewrite::Fnv;
use super::{Exposition, Family, Label, MetricType, Sample, Suffix, Value};

/// A malformed exposition: which line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
    /// The start of the offending line, for the log.
    pub excerpt: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)?;
        if !self.excerpt.is_empty() {
            write!(f, " (in {:?})", self.excerpt)?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition. Families keep the order in which their names first appear.
pub fn parse(text: &str) -> Result<Exposition<'_>, ParseError> {
    match parse_inner(text, None) {
        Ok(expo) => Ok(expo),
        Err(Stop::Parse(e)) => Err(e),
        Err(Stop::NeedFull) => unreachable!("only the keeping parse stops for a full one"),
    }
}

/// Parses for proxying: every line is validated as by [`parse`], but only the families for
/// which `keep` says yes get their samples in the model. Every family whose lines are
/// contiguous gets [`Family::source`], its exact text, which the writer copies as is; this
/// saves building (and allocating) samples nobody looks at. Falls back to [`parse`] when a
/// family that is not kept is split apart in the input.
pub fn parse_keeping<'a>(
    text: &'a str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Exposition<'a>, ParseError> {
    match parse_inner(text, Some(keep)) {
        Ok(expo) => Ok(expo),
        Err(Stop::Parse(e)) => Err(e),
        Err(Stop::NeedFull) => parse(text),
    }
}

enum Stop {
    Parse(ParseError),
    NeedFull,
}

fn parse_inner<'a>(
    text: &'a str,
    keep: Option<&dyn Fn(&str) -> bool>,
) -> Result<Exposition<'a>, Stop> {
    let mut parser = Parser {
        families: Vec::new(),
        by_name: HashMap::with_capacity_and_hasher(256, BuildHasherDefault::default()),
        aux: Vec::new(),
        keep,
        scratch: Vec::new(),
        current: None,
        last_owner: None,
    };
    let mut offset = 0;
    for (i, raw) in text.split('\n').enumerate() {
        let start = offset;
        offset += raw.len() + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let end = (start + raw.len() + 1).min(text.len());
        match parser.line(line, start, end, raw.len() != line.len()) {
            Ok(()) => {}
            Err(LineError::Message(message)) => {
                return Err(Stop::Parse(ParseError {
                    line: i + 1,
                    message,
                    excerpt: excerpt(line),
                }))
            }
            Err(LineError::NeedFull) => return Err(Stop::NeedFull),
        }
    }
    if keep.is_some() {
        for (family, aux) in parser.families.iter_mut().zip(&parser.aux) {
            if aux.contiguous {
                if let Some((start, end)) = aux.span {
                    family.source = Some(&text[start..end]);
                }
            }
        }
    }
    Ok(Exposition {
        families: parser.families,
    })
}

/// A family name as a map key, compared with [`same_text`].
#[derive(Clone, Copy)]
struct Name<'a>(&'a str);

impl PartialEq for Name<'_> {
    fn eq(&self, other: &Self) -> bool {
        same_text(self.0, other.0)
    }
}

impl Eq for Name<'_> {}

impl std::hash::Hash for Name<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

/// `a == b` eight bytes at a time: musl's `bcmp`, which `==` calls for strings of unknown
/// length, compares byte by byte, and this runs for almost every sample line.
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
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

fn excerpt(line: &str) -> String {
    const MAX: usize = 120;
    if line.len() <= MAX {
        return line.to_string();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

struct Parser<'a, 'k> {
    families: Vec<Family<'a>>,
    /// FNV, not SipHash: names come from the etcd we scrape, and hashing was a tenth of a scrape.
    by_name: HashMap<Name<'a>, usize, BuildHasherDefault<Fnv>>,
    /// Per family: where its lines are, whether they are contiguous, whether it has samples.
    aux: Vec<Aux>,
    keep: Option<&'k dyn Fn(&str) -> bool>,
    /// Labels of samples that are validated but not kept; reused to spare allocations.
    scratch: Vec<Label<'a>>,
    /// The family of the last HELP/TYPE/sample line.
    current: Option<usize>,
    /// The last sample name and its owner.
    last_owner: Option<(&'a str, (usize, Suffix))>,
}

#[derive(Default)]
struct Aux {
    span: Option<(usize, usize)>,
    contiguous: bool,
    has_samples: bool,
    kept: bool,
}

enum LineError {
    Message(String),
    NeedFull,
}

impl From<String> for LineError {
    fn from(m: String) -> Self {
        LineError::Message(m)
    }
}

type LineResult = Result<(), LineError>;

impl<'a> Parser<'a, '_> {
    fn line(&mut self, line: &'a str, start: usize, end: usize, had_cr: bool) -> LineResult {
        let trimmed = skip_blanks(line);
        if trimmed.is_empty() {
            return Ok(());
        }
        let idx = if let Some(comment) = eat(trimmed, b'#') {
            match self.comment(comment)? {
                Some(idx) => idx,
                None => return Ok(()),
            }
        } else {
            self.sample(trimmed)?
        };
        // Track where the family's lines are, for verbatim pass-through.
        let aux = &mut self.aux[idx];
        match aux.span {
            None => {
                aux.span = Some((start, end));
                aux.contiguous = !had_cr;
            }
            Some((s, _)) => {
                if self.current != Some(idx) || had_cr {
                    aux.contiguous = false;
                }
                aux.span = Some((s, end));
            }
        }
        if !aux.contiguous && !aux.kept && self.keep.is_some() {
            return Err(LineError::NeedFull);
        }
        self.current = Some(idx);
        Ok(())
    }

    /// `# HELP name text`, `# TYPE name type`; any other `#` line is a comment.
    fn comment(&mut self, rest: &'a str) -> Result<Option<usize>, LineError> {
        let rest = skip_blanks(rest);
        let (keyword, rest) = split_token(rest);
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(None);
        }
        // A new name or TYPE can change which family a sample name belongs to.
        self.last_owner = None;
        let rest = skip_blanks(rest);
        let (name, rest) = split_token(rest);
        if name.is_empty() {
            return Err(format!("{keyword} line without a metric name").into());
        }
        if !is_metric_name(name) {
            return Err(format!("invalid metric name {name:?}").into());
        }
        let idx = self.family_index(name);
        let has_samples = self.aux[idx].has_samples;
        let family = &mut self.families[idx];
        if keyword == "HELP" {
            if family.help.is_some() {
                return Err(format!("second HELP line for metric name {name:?}").into());
            }
            // Blanks after the name separate; the rest of the line is the text (as expfmt).
            let text = skip_blanks(rest);
            family.help = Some(unescape(text, false)?);
        } else {
            if family.kind.is_some() {
                return Err(format!("second TYPE line for metric name {name:?}").into());
            }
            if has_samples {
                return Err(format!("TYPE line for {name:?} after its samples").into());
            }
            let token = rest.trim_matches(is_blank);
            let kind = MetricType::from_token(token)
                .ok_or_else(|| format!("unknown metric type {token:?}"))?;
            family.kind = Some(kind);
        }
        Ok(Some(idx))
    }

    fn family_index(&mut self, name: &'a str) -> usize {
        if let Some(&i) = self.by_name.get(&Name(name)) {
            return i;
        }
        self.families.push(Family {
            name: Cow::Borrowed(name),
            help: None,
            kind: None,
            samples: Vec::new(),
            source: None,
        });
        self.aux.push(Aux {
            kept: self.keep.is_none_or(|keep| keep(name)),
            ..Aux::default()
        });
        let i = self.families.len() - 1;
        self.by_name.insert(Name(name), i);
        i
    }

    /// Which family a sample name belongs to, and with which suffix (expfmt's rule: the exact
    /// name first, then the name without `_bucket`/`_sum`/`_count` if that is a TYPE'd
    /// histogram or summary).
    fn owner(&mut self, name: &'a str) -> (usize, Suffix) {
        // Consecutive samples mostly share a name: skip the hash lookups then.
        if let Some((last, owner)) = self.last_owner {
            if same_text(last, name) {
                return owner;
            }
        }
        let owner = self.owner_uncached(name);
        self.last_owner = Some((name, owner));
        owner
    }

    fn owner_uncached(&mut self, name: &'a str) -> (usize, Suffix) {
        if let Some(&i) = self.by_name.get(&Name(name)) {
            return (i, Suffix::None);
        }
        for suffix in [Suffix::Bucket, Suffix::Sum, Suffix::Count] {
            if let Some(base) = name.strip_suffix(suffix.as_str()) {
                if let Some(&i) = self.by_name.get(&Name(base)) {
                    let kind = self.families[i].kind;
                    let fits = match suffix {
                        Suffix::Bucket => kind == Some(MetricType::Histogram),
                        _ => matches!(
                            kind,
                            Some(MetricType::Histogram) | Some(MetricType::Summary)
                        ),
                    };
                    if fits {
                        return (i, suffix);
                    }
                }
            }
        }
        (self.family_index(name), Suffix::None)
    }

    /// Parses and validates a sample line; returns its family's index.
    fn sample(&mut self, line: &'a str) -> Result<usize, LineError> {
        self.sample_inner(line).map_err(LineError::Message)
    }

    fn sample_inner(&mut self, line: &'a str) -> Result<usize, String> {
        let name_len = line
            .bytes()
            .position(|b| NAME_BYTES[b as usize] == 0)
            .unwrap_or(line.len());
        let name = &line[..name_len];
        if !starts_name(name) {
            return Err(match line.chars().next() {
                Some(c) if name.is_empty() => format!("expected a metric name, found {c:?}"),
                _ => format!("invalid metric name {name:?}"),
            });
        }
        let (idx, suffix) = self.owner(name);
        let kept = self.aux[idx].kept;
        let mut labels = if kept {
            Vec::new()
        } else {
            std::mem::take(&mut self.scratch)
        };
        labels.clear();
        let mut rest = skip_blanks(&line[name_len..]);
        if let Some(after) = eat(rest, b'{') {
            rest = parse_labels(after, &mut labels)?;
        }
        let rest = skip_blanks(rest);
        let (value_text, rest) = split_token(rest);
        if value_text.is_empty() {
            return Err(format!("sample of {name:?} has no value"));
        }
        let number = parse_float(value_text)
            .ok_or_else(|| format!("invalid value {value_text:?} for {name:?}"))?;
        let rest = skip_blanks(rest);
        let (ts_text, rest) = split_token(rest);
        let timestamp = if ts_text.is_empty() {
            None
        } else {
            ts_text
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts_text:?} for {name:?}"))?;
            Some(Cow::Borrowed(ts_text))
        };
        if !rest.trim_matches(is_blank).is_empty() {
            return Err(format!("unexpected text after the sample of {name:?}"));
        }

        self.aux[idx].has_samples = true;
        let family = &mut self.families[idx];
        match family.metric_type() {
            MetricType::Histogram => match suffix {
                Suffix::Bucket => {
                    let le = labels
                        .iter()
                        .find(|l| l.name == "le")
                        .ok_or_else(|| format!("histogram bucket {name:?} without an le label"))?;
                    parse_float(&le.value)
                        .ok_or_else(|| format!("invalid le {:?} in {name:?}", le.value))?;
                }
                Suffix::None => {
                    return Err(format!(
                        "sample {name:?} of a histogram must end in _bucket, _sum or _count"
                    ))
                }
                _ => {}
            },
            MetricType::Summary if suffix == Suffix::None => {
                let q = labels
                    .iter()
                    .find(|l| l.name == "quantile")
                    .ok_or_else(|| format!("summary sample {name:?} without a quantile label"))?;
                parse_float(&q.value)
                    .ok_or_else(|| format!("invalid quantile {:?} in {name:?}", q.value))?;
            }
            _ => {}
        }
        if kept {
            family.samples.push(Sample {
                suffix,
                labels,
                value: Value {
                    number,
                    text: Some(Cow::Borrowed(value_text)),
                },
                timestamp,
            });
        } else {
            self.scratch = labels;
        }
        Ok(idx)
    }
}

/// Parses `name="value",...}` (the `{` already consumed); returns what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<Label<'a>>) -> Result<&'a str, String> {
    loop {
        rest = skip_blanks(rest);
        if let Some(after) = eat(rest, b'}') {
            return Ok(after);
        }
        let name_len = rest
            .bytes()
            .position(|b| NAME_BYTES[b as usize] != WORD)
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !starts_name(name) {
            return Err(if rest.is_empty() {
                "unterminated label set (missing '}')".to_string()
            } else {
                format!("invalid label name {:?}", excerpt_token(rest))
            });
        }
        if labels.iter().any(|l| l.name == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        rest = skip_blanks(&rest[name_len..]);
        rest = eat(rest, b'=').ok_or_else(|| format!("expected '=' after label name {name:?}"))?;
        rest = skip_blanks(rest);
        rest = eat(rest, b'"')
            .ok_or_else(|| format!("expected '\"' to start the value of label {name:?}"))?;
        let (value, after) =
            parse_quoted(rest).ok_or_else(|| format!("unterminated value of label {name:?}"))?;
        labels.push(Label {
            name: Cow::Borrowed(name),
            value: unescape(value, true)?,
        });
        rest = skip_blanks(after);
        if let Some(after) = eat(rest, b',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!(
                "expected ',' or '}}' after the value of label {name:?}"
            ));
        }
    }
}

/// Splits at the closing unescaped `"`: (raw escaped value, text after the quote).
fn parse_quoted(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// Resolves `\\`, `\n` (and `\"` in label values); anything else after a backslash is an
/// error, as in expfmt. Borrows when there is nothing to resolve.
fn unescape(raw: &str, label_value: bool) -> Result<Cow<'_, str>, String> {
    if !raw.contains('\\') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label_value => out.push('"'),
            Some(other) => return Err(format!("invalid escape sequence \\{other}")),
            None => return Err("backslash at the end of the line".to_string()),
        }
    }
    Ok(Cow::Owned(out))
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

/// `s` without its first byte if that is `b` (an ASCII byte, so the cut is a char boundary).
#[inline]
fn eat(s: &str, b: u8) -> Option<&str> {
    if s.as_bytes().first() == Some(&b) {
        s.get(1..)
    } else {
        None
    }
}

/// Byte classes for name scanning: 0 = in no name, `COLON` = `:` (metric names only),
/// `WORD` = `[a-zA-Z0-9_]` (metric and label names).
const COLON: u8 = 1;
const WORD: u8 = 2;
static NAME_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            t[b] = WORD;
        } else if c == b':' {
            t[b] = COLON;
        }
        b += 1;
    }
    t
};

/// `s` without leading blanks (space, tab).
#[inline]
fn skip_blanks(s: &str) -> &str {
    let n = s.bytes().take_while(|b| *b == b' ' || *b == b'\t').count();
    &s[n..]
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
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

pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod same_text_tests {
    use super::same_text;

    #[test]
    fn equals_str_eq() {
        let words = [
            "",
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefgx",
            "xbcdefgh",
            "abcdefghi",
            "etcd_disk_wal_fsync_duration_seconds",
            "etcd_disk_wal_fsync_duration_secondz",
        ];
        for a in words {
            for b in words {
                assert_eq!(same_text(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
