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
    for sample in &handled.samples {
        let labels = sample
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()));
        requests.add(sample.suffix, labels, &sample.value);
    }
    requests.finish()
}

/// Builds the 3.0 `etcd_grpc_requests_total` from `grpc_server_handled_total`'s series, one
/// at a time; shared by [`apply`] and the one-pass answer ([`super::pass`]).
#[derive(Default)]
pub(crate) struct RequestsTotal<'a> {
    /// Label set -> index in `samples`.
    index: HashMap<Vec<Label<'a>>, usize, BuildHasherDefault<Fnv>>,
    samples: Vec<Sample<'a>>,
    /// The labels of the series being added; reused, so a series that adds to a known label
    /// set allocates nothing.
    scratch: Vec<Label<'a>>,
}

impl<'a> RequestsTotal<'a> {
    /// Adds one series of `grpc_server_handled_total` (unescaped labels, in line order);
    /// all but unary ones are ignored.
    pub fn add<L>(&mut self, suffix: Suffix, labels: L, value: &Value<'a>)
    where
        L: Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + Clone,
    {
        let unary = labels
            .clone()
            .any(|(name, value)| matches!((name.as_ref(), value.as_ref()), ("grpc_type", "unary")));
        if suffix != Suffix::None || !unary {
            return;
        }
        self.scratch.clear();
        unary_labels(labels, &mut self.scratch);
        match self.index.get(self.scratch.as_slice()) {
            Some(&i) => {
                let total = &mut self.samples[i].value;
                *total = Value::new(total.number + value.number);
            }
            None => {
                self.index.insert(self.scratch.clone(), self.samples.len());
                // A single series keeps etcd's value text; sums are formatted fresh.
                self.samples.push(Sample {
                    suffix: Suffix::None,
                    labels: self.scratch.clone(),
                    value: value.clone(),
                    timestamp: None,
                });
            }
        }
    }

    pub fn finish(self) -> Family<'a> {
        Family {
            name: Cow::Borrowed(LEGACY_REQUESTS_TOTAL),
            help: Some(Cow::Borrowed(LEGACY_REQUESTS_HELP)),
            kind: Some(MetricType::Counter),
            samples: self.samples,
        }
    }
}

/// A handled series' labels without `grpc_type` and `grpc_code`, renamed as by
/// [`rename_labels`], in one pass: it runs for every series of the largest family etcd has,
/// and comparing with literal names compiles to a few integer compares (musl's `bcmp`, called
/// for non-literal ones, goes byte by byte).
fn unary_labels<'a, L>(labels: L, out: &mut Vec<Label<'a>>)
where
    L: Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + Clone,
{
    let (mut has_method, mut has_service) = (false, false);
    for (name, _) in labels.clone() {
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
            "grpc_method" => Cow::Borrowed("method"),
            "grpc_service" => Cow::Borrowed("service"),
            _ => name,
        };
        out.push(Label { name, value });
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
        for b in words.remainder() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
