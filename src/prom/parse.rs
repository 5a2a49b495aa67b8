//! A strict line parser for the text format 0.0.4, with the rules of Go's `expfmt.TextParser`
//! (which the Go original used): HELP/TYPE at most once per name, TYPE before samples,
//! `_bucket`/`_sum`/`_count` grouped under a TYPE'd histogram or summary, valid names and
//! escapes. Errors name the 1-based line. Input is never trusted: no panics, no unbounded work.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

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
    let mut parser = Parser {
        families: Vec::new(),
        by_name: HashMap::new(),
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        parser.line(line).map_err(|message| ParseError {
            line: i + 1,
            message,
            excerpt: excerpt(line),
        })?;
    }
    Ok(Exposition {
        families: parser.families,
    })
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

struct Parser<'a> {
    families: Vec<Family<'a>>,
    by_name: HashMap<&'a str, usize>,
}

type LineResult = Result<(), String>;

impl<'a> Parser<'a> {
    fn line(&mut self, line: &'a str) -> LineResult {
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() {
            return Ok(());
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            return self.comment(comment);
        }
        self.sample(trimmed)
    }

    /// `# HELP name text`, `# TYPE name type`; any other `#` line is a comment.
    fn comment(&mut self, rest: &'a str) -> LineResult {
        let rest = rest.trim_start_matches([' ', '\t']);
        let (keyword, rest) = split_token(rest);
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(());
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (name, rest) = split_token(rest);
        if name.is_empty() {
            return Err(format!("{keyword} line without a metric name"));
        }
        if !is_metric_name(name) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let idx = self.family_index(name);
        let family = &mut self.families[idx];
        if keyword == "HELP" {
            if family.help.is_some() {
                return Err(format!("second HELP line for metric name {name:?}"));
            }
            // Blanks after the name separate; the rest of the line is the text (as expfmt).
            let text = rest.trim_start_matches([' ', '\t']);
            family.help = Some(unescape(text, false)?);
        } else {
            if family.kind.is_some() {
                return Err(format!("second TYPE line for metric name {name:?}"));
            }
            if !family.samples.is_empty() {
                return Err(format!("TYPE line for {name:?} after its samples"));
            }
            let token = rest.trim_matches([' ', '\t']);
            let kind = MetricType::from_token(token)
                .ok_or_else(|| format!("unknown metric type {token:?}"))?;
            family.kind = Some(kind);
        }
        Ok(())
    }

    fn family_index(&mut self, name: &'a str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        self.families.push(Family {
            name: Cow::Borrowed(name),
            help: None,
            kind: None,
            samples: Vec::new(),
        });
        let i = self.families.len() - 1;
        self.by_name.insert(name, i);
        i
    }

    /// Which family a sample name belongs to, and with which suffix (expfmt's rule: the exact
    /// name first, then the name without `_bucket`/`_sum`/`_count` if that is a TYPE'd
    /// histogram or summary).
    fn owner(&mut self, name: &'a str) -> (usize, Suffix) {
        if let Some(&i) = self.by_name.get(name) {
            return (i, Suffix::None);
        }
        for suffix in [Suffix::Bucket, Suffix::Sum, Suffix::Count] {
            if let Some(base) = name.strip_suffix(suffix.as_str()) {
                if let Some(&i) = self.by_name.get(base) {
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

    fn sample(&mut self, line: &'a str) -> LineResult {
        let name_len = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_len];
        if !is_metric_name(name) {
            return Err(match line.chars().next() {
                Some(c) if name.is_empty() => format!("expected a metric name, found {c:?}"),
                _ => format!("invalid metric name {name:?}"),
            });
        }
        let mut rest = line[name_len..].trim_start_matches([' ', '\t']);
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = parse_labels(after, &mut labels)?;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (value_text, rest) = split_token(rest);
        if value_text.is_empty() {
            return Err(format!("sample of {name:?} has no value"));
        }
        let number = parse_float(value_text)
            .ok_or_else(|| format!("invalid value {value_text:?} for {name:?}"))?;
        let rest = rest.trim_start_matches([' ', '\t']);
        let (ts_text, rest) = split_token(rest);
        let timestamp = if ts_text.is_empty() {
            None
        } else {
            ts_text
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts_text:?} for {name:?}"))?;
            Some(Cow::Borrowed(ts_text))
        };
        if !rest.trim_matches([' ', '\t']).is_empty() {
            return Err(format!("unexpected text after the sample of {name:?}"));
        }

        let (idx, suffix) = self.owner(name);
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
        family.samples.push(Sample {
            suffix,
            labels,
            value: Value {
                number,
                text: Some(Cow::Borrowed(value_text)),
            },
            timestamp,
        });
        Ok(())
    }
}

/// Parses `name="value",...}` (the `{` already consumed); returns what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<Label<'a>>) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if !is_label_name(name) {
            return Err(if rest.is_empty() {
                "unterminated label set (missing '}')".to_string()
            } else {
                format!("invalid label name {:?}", excerpt_token(rest))
            });
        }
        if labels.iter().any(|l| l.name == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        rest = rest[name_len..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label name {name:?}"))?;
        rest = rest.trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to start the value of label {name:?}"))?;
        let (value, after) =
            parse_quoted(rest).ok_or_else(|| format!("unterminated value of label {name:?}"))?;
        labels.push(Label {
            name: Cow::Borrowed(name),
            value: unescape(value, true)?,
        });
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
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
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
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

fn split_token(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn excerpt_token(s: &str) -> &str {
    let end = s.char_indices().nth(20).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
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
