//! Parser, writer and rewrite rules on real etcd expositions (tests/fixtures/metrics, copied
//! from 3.4.23, 3.5.0 and 3.5.1) and on a hand-written etcd 3.0 exposition.

use std::collections::{BTreeMap, HashSet};

use super::pass;
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
    for line in text.lines().step_by(23).take(100) {
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
    assert!(seen_err > 50);
}

/// The model's answer: what the monitor falls back to and what `pass::answer` must equal.
fn model_answer(text: &str) -> Result<String, ParseError> {
    Ok(written(&rewrite::apply(parse(text)?)))
}

fn pass_answer(text: &str) -> Result<String, pass::PassError> {
    let mut out = String::from("kept> ");
    pass::answer(
        text,
        &["reserved_family"],
        &mut out,
        &pass::Template::default(),
    )?;
    Ok(out.strip_prefix("kept> ").unwrap().to_string())
}

#[test]
fn one_pass_answers_etcd_byte_for_byte_as_the_model() {
    for (name, text) in FIXTURES {
        assert_eq!(
            pass_answer(text).unwrap(),
            model_answer(text).unwrap(),
            "{name}"
        );
        let mut out = String::new();
        let passed = pass::answer(text, &[], &mut out, &Default::default()).unwrap();
        let expo = parse(text).unwrap();
        let gauge = expo.family(rewrite::SERVER_VERSION).unwrap().samples[0]
            .label("server_version")
            .unwrap();
        assert_eq!(passed.server_version.as_deref(), Some(gauge), "{name}");
        assert!(gauge.starts_with("3."), "{name}: {gauge}");
    }
}

#[test]
fn one_pass_leaves_what_it_cannot_do_to_the_model() {
    use pass::PassError::UseModel;
    let cases = [
        ETCD_3_0,
        // `a` split apart by `b`: the model gathers its samples.
        "# TYPE a counter\na 1\n# TYPE b gauge\nb 2\na{x=\"y\"} 3\n",
        "# TYPE a counter\na 1\n# HELP b x\na 2\n",
        "# TYPE a counter\r\na 1\r\n",
        "x 1\nreserved_family 2\n",
        "# TYPE etcd_grpc_requests_total counter\netcd_grpc_requests_total 1\n",
    ];
    for text in cases {
        assert!(
            matches!(pass_answer(text), Err(UseModel(_))),
            "{text:?}: {:?}",
            pass_answer(text)
        );
        assert!(model_answer(text).is_ok());
    }
}

#[test]
fn one_pass_errors_are_the_models_and_leave_out_as_it_was() {
    let bad = [
        "a 1\nb{x=\"1\" 2\n",
        "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n",
        "# TYPE a counter\na 1\n# TYPE a gauge\n",
        "a 1\n# TYPE a counter\n",
    ];
    for text in bad {
        let mut out = String::from("before");
        match pass::answer(text, &[], &mut out, &Default::default()) {
            Err(pass::PassError::Parse(e)) => assert_eq!(Err(e), parse(text).map(|_| ())),
            other => panic!("{text:?}: {other:?}"),
        }
        assert_eq!(out, "before");
    }
}

#[test]
fn one_pass_keeps_lines_as_written_and_ends_with_a_newline() {
    assert_eq!(pass_answer("a 1").unwrap(), "a 1\n");
    // Comments between families are left out, those inside a family stay (as the Go text
    // parser ignores both).
    let text = "# TYPE a counter\na 1\n# inside\na{x=\"1\"}  2\n\n# between\nb 3\n";
    assert_eq!(
        pass_answer(text).unwrap(),
        "# TYPE a counter\na 1\n# inside\na{x=\"1\"}  2\nb 3\n"
    );
    // The derived family follows grpc_server_handled_total, also when it is the last one.
    let handled = "# TYPE grpc_server_handled_total counter\n\
                   grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"KV\",grpc_type=\"unary\"} 2\n\
                   grpc_server_handled_total{grpc_code=\"Unknown\",grpc_method=\"Put\",grpc_service=\"KV\",grpc_type=\"unary\"} 3\n\
                   grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Watch\",grpc_service=\"W\",grpc_type=\"bidi_stream\"} 4\n";
    let out = pass_answer(handled).unwrap();
    assert_eq!(out, model_answer(handled).unwrap());
    assert!(out.ends_with("etcd_grpc_requests_total{method=\"Put\",service=\"KV\"} 5\n"));
    let out = pass_answer(&format!("{handled}z 1\n")).unwrap();
    assert!(out.ends_with("service=\"KV\"} 5\nz 1\n"), "{out}");
}

/// A small deterministic generator for the damage below (no crate needed).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn one_pass_agrees_with_the_model_on_damaged_expositions() {
    // Real expositions with lines dropped, moved, doubled, cut or given a stray byte: the one
    // pass either leaves the text to the model, or reports the model's error, or answers
    // with the model's families (its lines as etcd wrote them).
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut answered, mut errors, mut to_model) = (0, 0, 0);
    for (name, text) in FIXTURES.iter().chain([&("3.0", ETCD_3_0)]) {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for round in 0..150 {
            // A window of the exposition keeps each round cheap in a debug build.
            let from = rng.below(lines.len().saturating_sub(150).max(1));
            let window = &lines[from..(from + 150).min(lines.len())];
            let mut damaged: Vec<String> = window.iter().map(|l| l.to_string()).collect();
            for _ in 0..1 + round % 3 {
                let i = rng.below(damaged.len());
                let j = rng.below(damaged.len());
                match rng.below(6) {
                    0 => {
                        damaged.remove(i);
                    }
                    1 => {
                        let line = damaged.remove(i);
                        damaged.insert(j.min(damaged.len()), line);
                    }
                    2 => damaged.insert(j, damaged[i].clone()),
                    3 => {
                        let line = &mut damaged[i];
                        let mut cut = rng.below(line.len().max(1));
                        while !line.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        line.truncate(cut);
                    }
                    4 => {
                        let junk = ["\"", "\\", "{", "}", "=", ",", " ", "\t", "#", "é", "\n"];
                        let line = &mut damaged[i];
                        let mut at = rng.below(line.len().max(1));
                        while !line.is_char_boundary(at) {
                            at -= 1;
                        }
                        line.insert_str(at, junk[rng.below(junk.len())]);
                    }
                    _ => damaged.insert(j, "# a comment\n\n".to_string()),
                }
            }
            let text = damaged.concat();
            // A template from the undamaged window (the last scrape) changes nothing.
            let undamaged = window.concat();
            let template = pass::answer(
                &undamaged,
                &["reserved_family"],
                &mut String::new(),
                &pass::Template::default(),
            )
            .ok()
            .and_then(|passed| passed.template)
            .unwrap_or_default();
            let mut out = String::new();
            let templated = pass::answer(&text, &["reserved_family"], &mut out, &template);
            assert_eq!(
                templated.map(|_| out),
                pass_answer(&text),
                "{name} round {round}: with a template"
            );
            match (pass_answer(&text), model_answer(&text)) {
                (Ok(out), Ok(model)) => {
                    answered += 1;
                    assert_eq!(model_answer(&out).unwrap(), model, "{name} round {round}");
                }
                (Err(pass::PassError::Parse(e)), Err(model)) => {
                    errors += 1;
                    assert_eq!(e, model, "{name} round {round}");
                }
                (Err(pass::PassError::UseModel(_)), _) => to_model += 1,
                (pass, model) => panic!("{name} round {round}: {pass:?} vs {model:?}\n{text}"),
            }
        }
    }
    // Each outcome was exercised.
    assert!(
        answered > 100 && errors > 100 && to_model > 50,
        "{answered} {errors} {to_model}"
    );
}
