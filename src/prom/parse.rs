//! The text format 0.0.4 into the model, with the rules of Go's `expfmt.TextParser` (which the
//! Go original used). [`super::lex`] checks each line; `Shape` checks what spans lines: HELP
//! and TYPE at most once per name, TYPE before samples, `_bucket`/`_sum`/`_count` grouped under
//! a TYPE'd histogram or summary. Errors name the 1-based line. Input is never trusted: no
//! panics, no unbounded work.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::lex::{self, same_text, Lexer, Line, RawLabel, SampleLine};
use super::rewrite::Fnv;
use super::{Exposition, Family, Label, MetricType, Sample, Suffix, Value};

/// A malformed exposition: which line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}{}", quoted(excerpt))]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
    /// The start of the offending line, for the log.
    pub excerpt: String,
}

impl ParseError {
    pub(crate) fn at(line: usize, text: &str, message: String) -> ParseError {
        ParseError {
            line,
            message,
            excerpt: excerpt(text),
        }
    }
}

/// ` (in "<excerpt>")`, or nothing for an empty line.
fn quoted(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(" (in {excerpt:?})")
    }
}

/// Parses a whole exposition. Families keep the order in which their names first appear;
/// samples of a family split apart in the input are gathered under it.
pub fn parse(text: &str) -> Result<Exposition<'_>, ParseError> {
    let mut shape = Shape::default();
    let mut lexer = Lexer::default();
    let mut families: Vec<Family<'_>> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let fail = |message| ParseError::at(i + 1, line, message);
        let lexed = lexer.line(line).map_err(fail)?;
        let (idx, sample) = match lexed {
            Line::Skip => continue,
            Line::Help { name, .. } => (shape.help(name).map_err(fail)?, None),
            Line::Type { name, kind } => (shape.kind(name, kind).map_err(fail)?, None),
            Line::Sample(s) => {
                let (idx, suffix) = shape.sample(&s, lexer.labels()).map_err(fail)?;
                (idx, Some((s, suffix)))
            }
        };
        if idx == families.len() {
            families.push(Family {
                name: Cow::Borrowed(shape.name(idx)),
                help: None,
                kind: None,
                samples: Vec::new(),
            });
        }
        let family = &mut families[idx];
        match (lexed, sample) {
            (Line::Help { text, .. }, _) => family.help = Some(lex::unescape(text)),
            (Line::Type { kind, .. }, _) => family.kind = Some(kind),
            (_, Some((s, suffix))) => family
                .samples
                .push(model_sample(&s, lexer.labels(), suffix)),
            _ => {}
        }
    }
    Ok(Exposition { families })
}

fn model_sample<'a>(s: &SampleLine<'a>, labels: &[RawLabel<'a>], suffix: Suffix) -> Sample<'a> {
    Sample {
        suffix,
        labels: labels
            .iter()
            .map(|(name, value)| Label {
                name: Cow::Borrowed(name),
                value: lex::unescape(value),
            })
            .collect(),
        value: Value {
            // `lex` checked the value.
            number: lex::parse_float(s.value).unwrap_or(f64::NAN),
            text: Some(Cow::Borrowed(s.value)),
        },
        timestamp: s.timestamp.map(Cow::Borrowed),
    }
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

pub(crate) fn excerpt(line: &str) -> String {
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

/// The rules that span lines, family by family; families are numbered from 0 in the order
/// their names first appear.
#[derive(Default)]
pub(crate) struct Shape<'a> {
    /// FNV, not SipHash: names come from the etcd we scrape, and hashing was a tenth of a scrape.
    index: HashMap<Name<'a>, usize, BuildHasherDefault<Fnv>>,
    families: Vec<FamilyShape<'a>>,
    /// The last sample name and its owner: consecutive samples mostly share a name.
    last_owner: Option<(&'a str, (usize, Suffix))>,
}

struct FamilyShape<'a> {
    name: &'a str,
    help: bool,
    kind: Option<MetricType>,
    has_samples: bool,
}

impl<'a> Shape<'a> {
    pub fn name(&self, idx: usize) -> &'a str {
        self.families[idx].name
    }

    /// A `# HELP` line for `name`; returns its family.
    pub fn help(&mut self, name: &'a str) -> Result<usize, String> {
        let idx = self.family(name);
        let family = &mut self.families[idx];
        if family.help {
            return Err(format!("second HELP line for metric name {name:?}"));
        }
        family.help = true;
        Ok(idx)
    }

    /// A `# TYPE` line for `name`; returns its family.
    pub fn kind(&mut self, name: &'a str, kind: MetricType) -> Result<usize, String> {
        let idx = self.family(name);
        let family = &mut self.families[idx];
        if family.kind.is_some() {
            return Err(format!("second TYPE line for metric name {name:?}"));
        }
        if family.has_samples {
            return Err(format!("TYPE line for {name:?} after its samples"));
        }
        family.kind = Some(kind);
        // A TYPE can change which family a sample name belongs to.
        self.last_owner = None;
        Ok(idx)
    }

    /// A sample line; returns its family and what its name adds to the family's.
    pub fn sample(
        &mut self,
        s: &SampleLine<'a>,
        labels: &[RawLabel<'a>],
    ) -> Result<(usize, Suffix), String> {
        let name = s.name;
        let (idx, suffix) = self.owner(name);
        let family = &mut self.families[idx];
        family.has_samples = true;
        let needed = match (family.kind, suffix) {
            (Some(MetricType::Histogram), Suffix::Bucket) => Some("le"),
            (Some(MetricType::Histogram), Suffix::None) => {
                return Err(format!(
                    "sample {name:?} of a histogram must end in _bucket, _sum or _count"
                ))
            }
            (Some(MetricType::Summary), Suffix::None) => Some("quantile"),
            _ => None,
        };
        if let Some(label) = needed {
            let raw = lex::label(labels, label).ok_or_else(|| match label {
                "le" => format!("histogram bucket {name:?} without an le label"),
                _ => format!("summary sample {name:?} without a quantile label"),
            })?;
            let value = lex::unescape(raw);
            if lex::parse_float(&value).is_none() {
                return Err(format!("invalid {label} {value:?} in {name:?}"));
            }
        }
        Ok((idx, suffix))
    }

    fn family(&mut self, name: &'a str) -> usize {
        if let Some(&i) = self.index.get(&Name(name)) {
            return i;
        }
        self.families.push(FamilyShape {
            name,
            help: false,
            kind: None,
            has_samples: false,
        });
        let i = self.families.len() - 1;
        self.index.insert(Name(name), i);
        // A new name can change which family a sample name belongs to.
        self.last_owner = None;
        i
    }

    /// Which family a sample name belongs to, and with which suffix (expfmt's rule: the exact
    /// name first, then the name without `_bucket`/`_sum`/`_count` if that is a TYPE'd
    /// histogram or summary).
    fn owner(&mut self, name: &'a str) -> (usize, Suffix) {
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
        if let Some(&i) = self.index.get(&Name(name)) {
            return (i, Suffix::None);
        }
        for suffix in [Suffix::Bucket, Suffix::Sum, Suffix::Count] {
            if let Some(base) = name.strip_suffix(suffix.as_str()) {
                if let Some(&i) = self.index.get(&Name(base)) {
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
        (self.family(name), Suffix::None)
    }
}
