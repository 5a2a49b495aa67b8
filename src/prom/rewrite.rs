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

use super::{Exposition, Family, Label, MetricType, Sample, Suffix, Value};

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
    let mut family = Family {
        name: Cow::Borrowed(LEGACY_REQUESTS_TOTAL),
        help: Some(Cow::Borrowed(LEGACY_REQUESTS_HELP)),
        kind: Some(MetricType::Counter),
        samples: Vec::new(),
    };
    // Label set -> index in `family.samples`, and how many series were added into it.
    let mut index: HashMap<Vec<Label<'a>>, (usize, usize)> = HashMap::new();
    for sample in &handled.samples {
        if sample.suffix != Suffix::None || sample.label("grpc_type") != Some("unary") {
            continue;
        }
        let mut labels: Vec<Label<'a>> = sample
            .labels
            .iter()
            .filter(|l| l.name != "grpc_type" && l.name != "grpc_code")
            .cloned()
            .collect();
        rename_labels(&mut labels);
        match index.get_mut(&labels) {
            Some((i, n)) => {
                let total = &mut family.samples[*i].value;
                *total = Value::new(total.number + sample.value.number);
                *n += 1;
            }
            None => {
                index.insert(labels.clone(), (family.samples.len(), 1));
                // A single series keeps etcd's value text; sums are formatted fresh.
                family.samples.push(Sample {
                    suffix: Suffix::None,
                    labels,
                    value: sample.value.clone(),
                    timestamp: None,
                });
            }
        }
    }
    family
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
