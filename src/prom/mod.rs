//! The Prometheus text exposition format 0.0.4: a line lexer that allocates nothing
//! ([`lex`]), a model that borrows from the scraped text with a strict parser ([`parse()`]) and a
//! writer ([`write`](mod@write)), etcd-version-monitor's rewrite rules on the model ([`rewrite`]), and the
//! same rules in one pass over the text ([`pass`]), which is what the monitor runs per scrape.
//!
//! The model keeps what it does not change as slices of the input (label values without
//! escapes, value and timestamp tokens): an unchanged sample is written back byte for byte,
//! and only values we compute are formatted (Go's `%g` style, like client_golang).

use std::borrow::Cow;
use std::fmt;

pub mod lex;
pub mod parse;
pub mod pass;
pub mod rewrite;
pub mod write;

#[cfg(test)]
mod tests;

pub use parse::{parse, ParseError};
pub use write::{write_exposition, write_family};

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    pub fn from_token(s: &str) -> Option<MetricType> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a sample's name adds to its family's name. Keeping only the suffix makes renaming a
/// histogram rename its `_bucket`, `_sum` and `_count` lines alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    None,
    Bucket,
    Sum,
    Count,
}

impl Suffix {
    pub fn as_str(self) -> &'static str {
        match self {
            Suffix::None => "",
            Suffix::Bucket => "_bucket",
            Suffix::Sum => "_sum",
            Suffix::Count => "_count",
        }
    }
}

/// One label; the value is unescaped (borrowed from the input when it had no escapes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

impl<'a> Label<'a> {
    pub fn new(name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A sample value: the float, plus the token it was read from so that an unchanged value is
/// written exactly as etcd wrote it.
#[derive(Debug, Clone)]
pub struct Value<'a> {
    pub number: f64,
    pub text: Option<Cow<'a, str>>,
}

impl<'a> Value<'a> {
    /// A computed value, written in Go's shortest `%g` form.
    pub fn new(number: f64) -> Self {
        Value { number, text: None }
    }
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub suffix: Suffix,
    pub labels: Vec<Label<'a>>,
    pub value: Value<'a>,
    /// Milliseconds since the epoch, as written.
    pub timestamp: Option<Cow<'a, str>>,
}

impl<'a> Sample<'a> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_ref())
    }
}

/// A metric family: HELP, TYPE and its samples, contiguous in the output.
#[derive(Debug, Clone)]
pub struct Family<'a> {
    pub name: Cow<'a, str>,
    /// Unescaped HELP text; `None` when the input had no HELP line.
    pub help: Option<Cow<'a, str>>,
    /// `None` when the input had no TYPE line (the family is then untyped).
    pub kind: Option<MetricType>,
    pub samples: Vec<Sample<'a>>,
}

impl<'a> Family<'a> {
    pub fn new(name: impl Into<Cow<'a, str>>, help: &'a str, kind: MetricType) -> Self {
        Family {
            name: name.into(),
            help: Some(Cow::Borrowed(help)),
            kind: Some(kind),
            samples: Vec::new(),
        }
    }

    pub fn metric_type(&self) -> MetricType {
        self.kind.unwrap_or(MetricType::Untyped)
    }

    /// Adds a sample without suffix or timestamp.
    pub fn push(&mut self, labels: Vec<Label<'a>>, value: f64) {
        self.samples.push(Sample {
            suffix: Suffix::None,
            labels,
            value: Value::new(value),
            timestamp: None,
        });
    }
}

/// A whole exposition, families in input order, each name once.
#[derive(Debug, Clone, Default)]
pub struct Exposition<'a> {
    pub families: Vec<Family<'a>>,
}

impl<'a> Exposition<'a> {
    pub fn family(&self, name: &str) -> Option<&Family<'a>> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Removes and returns the family called `name`, if any.
    pub fn remove(&mut self, name: &str) -> Option<Family<'a>> {
        let i = self.families.iter().position(|f| f.name == name)?;
        Some(self.families.remove(i))
    }
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'g', -1, 64)` as client_golang writes
/// sample values, with Prometheus' spellings `+Inf`, `-Inf` and `NaN`.
pub fn format_value(v: f64, out: &mut String) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    // Shortest round-trip digits with a decimal exponent, e.g. "1.449054e6".
    let sci = format!("{v:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    // Go's 'g' with shortest precision uses %e when exp < -4 || exp >= 6 (eprec = 6).
    let eprec = 6;
    if exp < -4 || exp >= eprec {
        let _ = write!(
            out,
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn fmt(v: f64) -> String {
        let mut s = String::new();
        format_value(v, &mut s);
        s
    }

    #[test]
    fn formats_like_go_g_shortest() {
        // Expected strings are Go's strconv.FormatFloat(v, 'g', -1, 64) outputs, as seen in
        // etcd's own expositions (fixtures) and Go's documentation.
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(1.0), "1");
        assert_eq!(fmt(21.0), "21");
        assert_eq!(fmt(123456.0), "123456");
        assert_eq!(fmt(1449054.0), "1.449054e+06");
        assert_eq!(fmt(2147483648.0), "2.147483648e+09");
        assert_eq!(fmt(1e6), "1e+06");
        assert_eq!(fmt(2.464e-06), "2.464e-06");
        assert_eq!(fmt(1.2499e-05), "1.2499e-05");
        assert_eq!(fmt(0.000153162), "0.000153162");
        assert_eq!(fmt(0.0008312809999999999), "0.0008312809999999999");
        assert_eq!(fmt(1.7956289134764411e9), "1.7956289134764411e+09");
        assert_eq!(fmt(f64::INFINITY), "+Inf");
        assert_eq!(fmt(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt(f64::NAN), "NaN");
        assert_eq!(fmt(-3.5), "-3.5");
        assert_eq!(fmt(1e21), "1e+21");
        assert_eq!(fmt(123456789.0), "1.23456789e+08");
        assert_eq!(fmt(1e-300), "1e-300");
    }
}
