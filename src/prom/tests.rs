//! Parser, writer and rewrite rules on real etcd expositions (tests/fixtures/metrics, copied
//! from 3.4.23, 3.5.0 and 3.5.1) and on a hand-written etcd 3.0 exposition.

use std::collections::{BTreeMap, HashSet};

use super::rewrite::{self, HANDLED_TOTAL, HANDLING_SECONDS, LEGACY_REQUESTS_TOTAL};
use super::*;

const FIXTURES: &[(&str, &str)] = &[
    (
        "3.4.23-basic",
        include_str!("../../tests/fixtures/metrics/3.4.23-basic.txt"),
    ),
    (
        "3.4.23-extensive",
        include_str!("../../tests/fixtures/metrics/3.4.23-extensive.txt"),
    ),
    (
        "3.5.0-basic",
        include_str!("../../tests/fixtures/metrics/3.5.0-basic.txt"),
    ),
    (
        "3.5.0-extensive",
        include_str!("../../tests/fixtures/metrics/3.5.0-extensive.txt"),
    ),
    (
        "3.5.1-basic",
        include_str!("../../tests/fixtures/metrics/3.5.1-basic.txt"),
    ),
    (
        "3.5.1-extensive",
        include_str!("../../tests/fixtures/metrics/3.5.1-extensive.txt"),
    ),
];

const ETCD_3_0: &str = include_str!("../../tests/fixtures/metrics/3.0-handwritten.txt");

fn written(expo: &Exposition<'_>) -> String {
    let mut out = String::new();
    write_exposition(expo, &mut out);
    out
}

/// Family names in order of their `# TYPE` lines, read without our parser.
fn type_line_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

/// The text of one family (HELP, TYPE, samples) cut out of an exposition without our parser:
/// from its `# HELP` line to the next `# HELP` line.
fn family_block<'t>(text: &'t str, name: &str) -> &'t str {
    let start = text
        .find(&format!("# HELP {name} "))
        .unwrap_or_else(|| panic!("{name} not in text"));
    let end = text[start + 1..]
        .find("# HELP ")
        .map(|e| start + 1 + e)
        .unwrap_or(text.len());
    &text[start..end]
}

/// Sums of unary `grpc_server_handled_total` per (method, service), computed by splitting lines.
fn independent_unary_sums(text: &str) -> BTreeMap<(String, String), f64> {
    let mut sums = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("grpc_server_handled_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let get = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap()
        };
        if get("grpc_type") != "unary" {
            continue;
        }
        *sums
            .entry((get("grpc_method"), get("grpc_service")))
            .or_insert(0.0) += value.parse::<f64>().unwrap();
    }
    sums
}

#[test]
fn real_etcd_expositions_round_trip_byte_for_byte() {
    for (name, text) in FIXTURES {
        let expo = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(written(&expo), *text, "{name}");
        let names: Vec<&str> = expo.families.iter().map(|f| f.name.as_ref()).collect();
        assert_eq!(
            names,
            type_line_names(text),
            "{name}: families or order differ"
        );
        let samples: usize = expo.families.iter().map(|f| f.samples.len()).sum();
        let lines = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, lines, "{name}");
    }
}

#[test]
fn parsed_values_and_labels_are_etcds() {
    let text = FIXTURES[4].1; // 3.5.1 basic
    let expo = parse(text).unwrap();
    let quota = expo.family("etcd_server_quota_backend_bytes").unwrap();
    assert_eq!(quota.kind, Some(MetricType::Gauge));
    assert_eq!(quota.samples[0].value.number, 2147483648.0);
    let version = expo.family("etcd_server_version").unwrap();
    assert_eq!(version.samples[0].label("server_version"), Some("3.5.1"));
    let gc = expo.family("go_gc_duration_seconds").unwrap();
    assert_eq!(gc.kind, Some(MetricType::Summary));
    assert_eq!(gc.samples.last().unwrap().suffix, Suffix::Count);
    let commit = expo
        .family("etcd_disk_backend_commit_duration_seconds")
        .unwrap();
    assert_eq!(commit.kind, Some(MetricType::Histogram));
    let inf = commit
        .samples
        .iter()
        .find(|s| s.label("le") == Some("+Inf"))
        .unwrap();
    assert_eq!(inf.suffix, Suffix::Bucket);
}

#[test]
fn rewrite_on_real_etcd_adds_only_the_3_0_requests_family() {
    for (name, text) in FIXTURES {
        let original = parse(text).unwrap();
        let before: Vec<String> = original
            .families
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        let rewritten = rewrite::apply(parse(text).unwrap());
        let after: Vec<&str> = rewritten.families.iter().map(|f| f.name.as_ref()).collect();

        // Same families in etcd's order, plus the derived one right after its source.
        let mut expected: Vec<&str> = before.iter().map(String::as_str).collect();
        let at = expected.iter().position(|n| *n == HANDLED_TOTAL).unwrap();
        expected.insert(at + 1, LEGACY_REQUESTS_TOTAL);
        assert_eq!(after, expected, "{name}");
        let unique: HashSet<&str> = after.iter().copied().collect();
        assert_eq!(unique.len(), after.len(), "{name}: a family twice");

        // Every etcd family is written exactly as etcd wrote it (incl. the 3.1+ histogram).
        let out = written(&rewritten);
        for family in &before {
            assert_eq!(
                family_block(&out, family),
                family_block(text, family),
                "{name}: {family} changed"
            );
        }
        if name.ends_with("extensive") {
            assert!(out.contains(&format!("# TYPE {HANDLING_SECONDS} histogram")));
        }

        // The derived counter equals sums computed here by splitting lines.
        let derived = rewritten.family(LEGACY_REQUESTS_TOTAL).unwrap();
        assert_eq!(derived.kind, Some(MetricType::Counter));
        let expected = independent_unary_sums(text);
        assert!(
            expected.len() > 30,
            "{name}: {} unary methods",
            expected.len()
        );
        let got: BTreeMap<(String, String), f64> = derived
            .samples
            .iter()
            .map(|s| {
                let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_ref()).collect();
                assert_eq!(names, ["method", "service"], "{name}");
                (
                    (
                        s.label("method").unwrap().to_string(),
                        s.label("service").unwrap().to_string(),
                    ),
                    s.value.number,
                )
            })
            .collect();
        assert_eq!(got, expected, "{name}");
        // And the written text parses back to the same numbers.
        let reparsed = parse(&out).unwrap();
        let again = reparsed.family(LEGACY_REQUESTS_TOTAL).unwrap();
        for (a, b) in again.samples.iter().zip(&derived.samples) {
            assert_eq!(a.value.number, b.value.number);
        }
    }
}

#[test]
fn fixture_sums_include_nonzero_counts() {
    // The fixtures were taken after a workload, so the sums are not all zero: a check that
    // the summing test above tests something.
    let sums = independent_unary_sums(FIXTURES[5].1);
    assert!(sums.values().any(|v| *v > 1.0), "{sums:?}");
}

#[test]
fn rewrite_on_etcd_3_0_relabels_and_renames() {
    let rewritten = rewrite::apply(parse(ETCD_3_0).unwrap());
    let names: Vec<&str> = rewritten.families.iter().map(|f| f.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "etcd_grpc_active_streams",
            "etcd_grpc_requests_failed_total",
            "etcd_grpc_requests_total",
            "grpc_server_handling_seconds",
            "etcd_server_has_leader",
            "go_gc_duration_seconds",
        ]
    );
    let out = written(&rewritten);
    assert!(out.contains(
        "etcd_grpc_requests_total{method=\"Put\",service=\"etcdserverpb.KV\"} 1500\n\
         etcd_grpc_requests_total{method=\"Range\",service=\"etcdserverpb.KV\"} 3.2e+06\n"
    ));
    assert!(out.contains("# TYPE grpc_server_handling_seconds histogram\n"));
    assert!(out.contains(
        "grpc_server_handling_seconds_bucket{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\",le=\"0.001\"} 700\n"
    ));
    assert!(out.contains(
        "grpc_server_handling_seconds_sum{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 2.5\n"
    ));
    assert!(out.contains(
        "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1500\n"
    ));
    assert!(!out.contains("etcd_grpc_unary_requests_duration_seconds"));
    // Families without a rule are untouched (labels keep the grpc_ prefix).
    for family in [
        "etcd_grpc_active_streams",
        "etcd_grpc_requests_failed_total",
        "etcd_server_has_leader",
        "go_gc_duration_seconds",
    ] {
        assert_eq!(family_block(&out, family), family_block(ETCD_3_0, family));
    }
}

#[test]
fn never_a_family_twice_when_etcd_has_both_formats() {
    // No real etcd has both, but a proxy in front of two might: the output stays valid.
    let text = format!(
        "{ETCD_3_0}{}",
        family_block(FIXTURES[5].1, HANDLING_SECONDS).to_string()
            + family_block(FIXTURES[5].1, HANDLED_TOTAL)
    );
    let rewritten = rewrite::apply(parse(&text).unwrap());
    let names: Vec<&str> = rewritten.families.iter().map(|f| f.name.as_ref()).collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    // etcd's own 3.0 counter wins; the 3.0 histogram stays under its own name.
    let requests = rewritten.family(LEGACY_REQUESTS_TOTAL).unwrap();
    assert_eq!(requests.samples.len(), 3);
    assert!(names.contains(&"etcd_grpc_unary_requests_duration_seconds"));
    parse(&written(&rewritten)).unwrap();
}

#[test]
fn sums_collapse_codes_and_keep_single_values_verbatim() {
    let text = "# HELP grpc_server_handled_total h\n# TYPE grpc_server_handled_total counter\n\
        grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1e+06\n\
        grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 449054\n\
        grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 7\n\
        grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 3.0\n";
    let out = written(&rewrite::apply(parse(text).unwrap()));
    let derived = &out[out.find("# HELP etcd_grpc_requests_total").unwrap()..];
    let samples: Vec<&str> = derived.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        samples,
        [
            "etcd_grpc_requests_total{method=\"Range\",service=\"etcdserverpb.KV\"} 1.449054e+06",
            "etcd_grpc_requests_total{method=\"Put\",service=\"etcdserverpb.KV\"} 3.0",
        ]
    );
}

#[test]
fn escapes_round_trip() {
    let text = "# HELP odd A help with a backslash \\\\ and a newline \\n in it.\n\
                # TYPE odd gauge\n\
                odd{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\"} 1\n";
    let expo = parse(text).unwrap();
    let family = expo.family("odd").unwrap();
    assert_eq!(
        family.help.as_deref(),
        Some("A help with a backslash \\ and a newline \n in it.")
    );
    let s = &family.samples[0];
    assert_eq!(s.label("path"), Some("C:\\dir"));
    assert_eq!(s.label("quote"), Some("say \"hi\""));
    assert_eq!(s.label("nl"), Some("a\nb"));
    assert_eq!(written(&expo), text);
}

#[test]
fn tolerated_variants_normalise() {
    // Blank lines, comments, tabs, trailing comma, timestamps, untyped samples.
    let text = "\n# just a comment\nfoo\t{a=\"1\",} \t2 1700000000000\nbar 3\n\r\n";
    let expo = parse(text).unwrap();
    assert_eq!(
        written(&expo),
        "foo{a=\"1\"} 2 1700000000000\nbar 3\n".to_string()
    );
    assert_eq!(expo.families[0].kind, None);
}

#[test]
fn samples_of_a_family_split_apart_are_merged_once() {
    let text = "# TYPE a counter\na 1\n# TYPE b gauge\nb 2\na{x=\"y\"} 3\n";
    let expo = parse(text).unwrap();
    assert_eq!(expo.families.len(), 2);
    assert_eq!(expo.families[0].samples.len(), 2);
}

#[test]
fn malformed_input_names_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("a 1\nb{x=\"1\" 2\n", 2, "expected ',' or '}'"),
        ("a 1\n\nb{x=\"1\n", 3, "unterminated value"),
        ("ok 1\n{x=\"1\"} 2\n", 2, "expected a metric name"),
        ("9bad 1\n", 1, "invalid metric name"),
        ("a\n", 1, "has no value"),
        ("a one\n", 1, "invalid value"),
        ("a 1 2 3\n", 1, "unexpected text"),
        ("a 1 1.5\n", 1, "invalid timestamp"),
        ("# TYPE a counter\n# TYPE a gauge\n", 2, "second TYPE"),
        ("# HELP a x\n# HELP a y\n", 2, "second HELP"),
        ("a 1\n# TYPE a counter\n", 2, "after its samples"),
        ("# TYPE a meter\n", 1, "unknown metric type"),
        ("# TYPE h histogram\nh_bucket 1\n", 2, "without an le"),
        (
            "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n",
            2,
            "invalid le",
        ),
        ("# TYPE h histogram\nh 1\n", 2, "must end in _bucket"),
        ("# TYPE s summary\ns 1\n", 2, "without a quantile"),
        ("a{x=\"1\",x=\"2\"} 1\n", 1, "duplicate label"),
        ("a{x=\"\\t\"} 1\n", 1, "invalid escape"),
        ("a{1x=\"1\"} 1\n", 1, "invalid label name"),
        ("a{x \"1\"} 1\n", 1, "expected '='"),
        ("a{x=1} 1\n", 1, "expected '\"'"),
        ("a{x=\"1\"\n", 1, "expected ',' or '}'"),
        ("a{\n", 1, "unterminated label set"),
        ("# HELP\n", 1, "without a metric name"),
        ("# HELP 1a x\n", 1, "invalid metric name"),
        ("x 1\n<html>\n", 2, "expected a metric name"),
    ];
    for (text, line, needle) in cases {
        let err = parse(text).expect_err(text);
        assert_eq!(err.line, *line, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
        assert!(err.to_string().starts_with(&format!("line {line}: ")));
    }
}

#[test]
fn never_panics_on_cut_or_damaged_lines() {
    // Every line of a real exposition, cut at every char boundary or with one byte replaced:
    // the parser returns Ok or Err, never panics.
    let text = FIXTURES[5].1;
    let mut seen_err = 0;
    for line in text.lines().step_by(7).take(300) {
        for (i, _) in line.char_indices() {
            if parse(&line[..i]).is_err() {
                seen_err += 1;
            }
            for junk in ["\"", "\\", "{", "}", "=", ",", " ", "é"] {
                let damaged = format!("{}{junk}{}", &line[..i], line.get(i + 1..).unwrap_or(""));
                let _ = parse(&damaged);
            }
        }
    }
    assert!(seen_err > 100);
}
