//! The Go etcd-version-monitor's rewrite rules (k8s-etcd-image.md §9.2), which keep
//! dashboards written for etcd 3.0's gRPC metrics working on 3.1+ and the other way round:
//!
//! - `grpc_server_handled_total` (3.1+) passes through and is also emitted as 3.0-style
//!   `etcd_grpc_requests_total{method,service}`: unary series only, `grpc_method`->`method`,
//!   `grpc_service`->`service`, `grpc_type` and `grpc_code` dropped, and counters of series that
//!   then share a label set summed.
//! - 3.0's `etcd_grpc_requests_total` gets `grpc_method`->`method`, `grpc_service`->`service`.
//! - 3.0's histogram `etcd_grpc_unary_requests_duration_seconds` becomes
//!   `grpc_server_handling_seconds` with `grpc_type="unary"`.
//!
//! Every other family passes through untouched, in etcd's order; a derived family follows its
//! source. A name never appears twice: when etcd already has the target name, the derived
//! family is left out (see each rule).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::lex::{self, same_text};
use super::{Exposition, Family, Label, MetricType, Sample, Suffix, Value};

/// etcd's own version gauge (etcd >= 3.3): the monitor's fallback for `/version`.
pub const SERVER_VERSION: &str = "etcd_server_version";

pub const HANDLED_TOTAL: &str = "grpc_server_handled_total";
pub const LEGACY_REQUESTS_TOTAL: &str = "etcd_grpc_requests_total";
pub const LEGACY_UNARY_DURATION: &str = "etcd_grpc_unary_requests_duration_seconds";
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";

const LEGACY_REQUESTS_HELP: &str = "Total number of unary gRPC requests handled by etcd, by \
method and service (etcd 3.0 format, derived from grpc_server_handled_total by \
etcd-version-monitor).";

/// Applies the rewrite rules; consumes the parsed exposition, borrows from the same text.
pub fn apply(expo: Exposition<'_>) -> Exposition<'_> {
    let has = |name: &str| expo.families.iter().any(|f| f.name == name);
    let has_legacy_requests = has(LEGACY_REQUESTS_TOTAL);
    let has_native_histogram = has(HANDLING_SECONDS);
    let mut out = Vec::with_capacity(expo.families.len() + 1);
    for family in expo.families {
        match family.name.as_ref() {
            LEGACY_REQUESTS_TOTAL => out.push(rename_grpc_labels(family)),
            // With a native histogram as well (no real etcd has both), renaming would emit the
            // name twice: keep the 3.0 family under its own name instead.
            LEGACY_UNARY_DURATION if !has_native_histogram => out.push(legacy_histogram(family)),
            HANDLED_TOTAL => {
                // A 3.0-style family from etcd itself wins over the derived one.
                let derived = (!has_legacy_requests).then(|| requests_from_handled(&family));
                out.push(family);
                out.extend(derived);
            }
            _ => out.push(family),
        }
    }
    Exposition { families: out }
}

/// Renames `grpc_method`->`method` and `grpc_service`->`service` in place (keeping label order).
/// A label already called `method`/`service` is replaced, or the set would hold a name twice.
fn rename_grpc_labels(mut family: Family<'_>) -> Family<'_> {
    for sample in &mut family.samples {
        rename_labels(&mut sample.labels);
    }
    family
}

fn rename_labels(labels: &mut Vec<Label<'_>>) {
    for (from, to) in [("grpc_method", "method"), ("grpc_service", "service")] {
        if labels.iter().any(|l| l.name == from) {
            labels.retain(|l| l.name != to);
            for label in labels.iter_mut() {
                if label.name == from {
                    label.name = Cow::Borrowed(to);
                }
            }
        }
    }
}

/// `etcd_grpc_requests_total{method,service}` from the unary series of
/// `grpc_server_handled_total`, summed over `grpc_code`.
fn requests_from_handled<'a>(handled: &Family<'a>) -> Family<'a> {
    let mut requests = RequestsTotal::default();
    let mut labels = Vec::new();
    for sample in &handled.samples {
        labels.clear();
        labels.extend(
            sample
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone())),
        );
        requests.add(sample.suffix, &labels, &sample.value);
    }
    requests.finish()
}

/// A label's text as [`RequestsTotal`] gets it: unescaped from the model (`Cow`), or as
/// written in etcd's text from the one pass ([`Written`]), which then needs no unescaping
/// per series.
pub(crate) trait LabelText<'a>: Clone + Eq + AsRef<str> {
    fn literal(name: &'static str) -> Self;
    /// The unescaped text, for the model.
    fn unescaped(self) -> Cow<'a, str>;
}

impl<'a> LabelText<'a> for Cow<'a, str> {
    fn literal(name: &'static str) -> Self {
        Cow::Borrowed(name)
    }

    fn unescaped(self) -> Cow<'a, str> {
        self
    }
}

/// Label text as written in the exposition (escapes kept), compared eight bytes at a time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written<'a>(pub &'a str);

impl PartialEq for Written<'_> {
    fn eq(&self, other: &Self) -> bool {
        same_text(self.0, other.0)
    }
}

impl Eq for Written<'_> {}

impl AsRef<str> for Written<'_> {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl<'a> LabelText<'a> for Written<'a> {
    fn literal(name: &'static str) -> Self {
        Written(name)
    }

    fn unescaped(self) -> Cow<'a, str> {
        lex::unescape(self.0)
    }
}

/// Builds the 3.0 `etcd_grpc_requests_total` from `grpc_server_handled_total`'s series, one
/// at a time; shared by [`apply`] and the one-pass answer ([`super::pass`]).
pub(crate) struct RequestsTotal<'a, T> {
    /// Hash of a label set -> index in `sums` (checked there: a colliding set is searched).
    index: HashMap<u64, usize, BuildHasherDefault<Fnv>>,
    /// Per label set, in order of first appearance: the labels and the value.
    sums: Vec<(Vec<(T, T)>, Value<'a>)>,
    /// The labels of the series being added; reused, so a series that adds to a known label
    /// set allocates nothing.
    scratch: Vec<(T, T)>,
}

impl<T> Default for RequestsTotal<'_, T> {
    fn default() -> Self {
        RequestsTotal {
            index: HashMap::default(),
            sums: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl<'a, T: LabelText<'a>> RequestsTotal<'a, T> {
    /// Adds one series of `grpc_server_handled_total` (its labels in line order); all but
    /// unary ones are ignored. Returns the index of the sum it went into.
    pub fn add(&mut self, suffix: Suffix, labels: &[(T, T)], value: &Value<'a>) -> Option<usize> {
        let unary = labels
            .iter()
            .any(|(name, value)| matches!((name.as_ref(), value.as_ref()), ("grpc_type", "unary")));
        if suffix != Suffix::None || !unary {
            return None;
        }
        self.scratch.clear();
        unary_labels(labels, &mut self.scratch);
        // One hash over the set's strings (std's Hash for a Vec of pairs makes a call per
        // string and per length, for every series).
        let mut hasher = Fnv::default();
        for (name, value) in &self.scratch {
            hasher.write(name.as_ref().as_bytes());
            hasher.write_u64(u64::MAX);
            hasher.write(value.as_ref().as_bytes());
            hasher.write_u64(u64::MAX);
        }
        let hash = hasher.finish();
        let found = match self.index.get(&hash) {
            Some(&i) if self.sums[i].0 == self.scratch => Some(i),
            Some(_) => self.sums.iter().position(|(set, _)| *set == self.scratch),
            None => None,
        };
        match found {
            Some(i) => {
                let total = &mut self.sums[i].1;
                *total = Value::new(total.number + value.number);
                Some(i)
            }
            None => {
                self.index.entry(hash).or_insert(self.sums.len());
                // A single series keeps etcd's value text; sums are formatted fresh.
                self.sums.push((self.scratch.clone(), value.clone()));
                Some(self.sums.len() - 1)
            }
        }
    }

    /// The label sets so far, in order of their sums.
    pub fn label_sets(&self) -> impl Iterator<Item = &[(T, T)]> {
        self.sums.iter().map(|(labels, _)| labels.as_slice())
    }

    pub fn finish(self) -> Family<'a> {
        requests_family(self.sums.into_iter().map(|(labels, value)| {
            let labels = labels.into_iter().map(|(name, value)| Label {
                name: name.unescaped(),
                value: value.unescaped(),
            });
            (labels.collect(), value)
        }))
    }
}

/// The 3.0 family with the given series.
pub(crate) fn requests_family<'a>(
    series: impl Iterator<Item = (Vec<Label<'a>>, Value<'a>)>,
) -> Family<'a> {
    let samples = series.map(|(labels, value)| Sample {
        suffix: Suffix::None,
        labels,
        value,
        timestamp: None,
    });
    Family {
        name: Cow::Borrowed(LEGACY_REQUESTS_TOTAL),
        help: Some(Cow::Borrowed(LEGACY_REQUESTS_HELP)),
        kind: Some(MetricType::Counter),
        samples: samples.collect(),
    }
}

/// A handled series' labels without `grpc_type` and `grpc_code`, renamed as by
/// [`rename_labels`]: it runs for every series of the largest family etcd has, and comparing
/// with literal names compiles to a few integer compares (musl's `bcmp`, called for
/// non-literal ones, goes byte by byte).
fn unary_labels<'a, T: LabelText<'a>>(labels: &[(T, T)], out: &mut Vec<(T, T)>) {
    let (mut has_method, mut has_service) = (false, false);
    for (name, _) in labels {
        match name.as_ref() {
            "grpc_method" => has_method = true,
            "grpc_service" => has_service = true,
            _ => {}
        }
    }
    for (name, value) in labels {
        let name = match name.as_ref() {
            "grpc_type" | "grpc_code" => continue,
            "method" if has_method => continue,
            "service" if has_service => continue,
            "grpc_method" => T::literal("method"),
            "grpc_service" => T::literal("service"),
            _ => name.clone(),
        };
        out.push((name, value.clone()));
    }
}

/// 3.0's `etcd_grpc_unary_requests_duration_seconds` as `grpc_server_handling_seconds` with
/// `grpc_type="unary"` (before `le`, which client_golang writes last).
fn legacy_histogram(mut family: Family<'_>) -> Family<'_> {
    family.name = Cow::Borrowed(HANDLING_SECONDS);
    for sample in &mut family.samples {
        sample.labels.retain(|l| l.name != "grpc_type");
        let at = sample
            .labels
            .iter()
            .position(|l| l.name == "le")
            .unwrap_or(sample.labels.len());
        sample.labels.insert(at, Label::new("grpc_type", "unary"));
    }
    family
}

/// FNV-1a (word-wise): the keys are a few short label strings from etcd, where SipHash's DoS resistance
/// buys nothing and costs most of the rule's time.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        // FNV's multiply per eight bytes rather than per byte: hashing label sets and family
        // names runs for every series; the quality is ample for a few hundred keys.
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h ^= u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
            h = h.rotate_left(23).wrapping_mul(0x0100_0000_01b3);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // The tail as one zero-padded word: "a" and "a\0" collide, which costs a compare.
            let mut tail = [0u8; 8];
            tail[..rest.len()].copy_from_slice(rest);
            h ^= u64::from_le_bytes(tail);
            h = h.rotate_left(23).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        let h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        self.0 = (h ^ n).rotate_left(23).wrapping_mul(0x0100_0000_01b3);
    }
}
