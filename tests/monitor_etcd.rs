//! The monitor in front of real etcd 3.3.25, 3.4.23, 3.5.1 and 3.5.30, with and without
//! --metrics=extensive: after gRPC load, its answer is checked against etcd's own /metrics scraped just before and
//! just after (A, monitor, B), with a line-splitting reader that shares no code with ours.
mod common;
mod monitor_support;

use common::*;
use etcdtools::etcd::process::free_ports;
use etcdtools::monitor::CONTENT_TYPE;
use monitor_support::*;

const OWN: [&str; 5] = [
    "etcd_version_info",
    "etcd_version_monitor_build_info",
    "etcd_version_monitor_up",
    "etcd_version_monitor_scrape_duration_seconds",
    "etcd_version_monitor_scrape_errors_total",
];

/// The monitor's series `pm` against etcd's just before (`pa`) and after (`pb`): the same label
/// sets as etcd; equal values where etcd did not change between A and B, values within [A, B]
/// for counters that moved (etcd counts our scrapes).
fn check_series(version: &str, pa: &Plain, pm: &Plain, pb: &Plain) {
    let mut compared = 0;
    let mut etcd_series = 0;
    for (key, value) in &pm.series {
        let family = family_of(key, &pm.types).unwrap();
        if OWN.contains(&family) || family == "etcd_grpc_requests_total" {
            continue;
        }
        etcd_series += 1;
        let (va, vb) = (pa.series[key], pb.series[key]);
        let kind = pa.types[family].as_str();
        let name = key.split('{').next().unwrap();
        // Counters, histograms and summary sums/counts only grow: equal at A and B means
        // equal in between. Gauges may swing and come back (Go runtime memory gauges do).
        let monotonic = kind == "counter"
            || kind == "histogram"
            || (kind == "summary" && (name.ends_with("_sum") || name.ends_with("_count")));
        let same = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
        if same(va, vb) {
            if monotonic {
                assert!(
                    same(*value, va),
                    "{version}: {key} = {value}, etcd said {va}"
                );
                compared += 1;
            } else if !same(*value, va) {
                assert!(
                    family.starts_with("go_") || family.starts_with("process_"),
                    "{version}: gauge {key} = {value}, etcd said {va} before and after"
                );
            }
        } else if monotonic {
            assert!(
                va <= *value && *value <= vb,
                "{version}: {key} {va} {value} {vb}"
            );
        }
    }
    assert_eq!(etcd_series, pa.series.len(), "{version}: series missing");
    assert!(
        compared * 4 >= etcd_series * 3,
        "{version}: only {compared} of {etcd_series} series were stable enough to compare"
    );
}

/// Starts etcd, loads it, scrapes A / monitor / B and checks everything. Returns the
/// monitor's answer and etcd's for further checks.
fn check_against_etcd(version: &str, extensive: bool, via_metrics_port: bool) -> (String, String) {
    let metrics_port = free_ports(1).unwrap()[0];
    let metrics_listen = format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}");
    let mut args = vec![metrics_listen.as_str()];
    if extensive {
        args.push("--metrics=extensive");
    }
    let etcd = TestEtcd::start(version, &args);
    let load = grpc_load(&etcd.client_url, &etcdctl_bin(version), 20);

    // kubeadm's layout: metrics on the metrics-only port, which serves no /version.
    let base = if via_metrics_port {
        format!("http://127.0.0.1:{metrics_port}")
    } else {
        etcd.client_url.clone()
    };
    let direct = format!("{base}/metrics");
    let monitor = InProcess::start(config_for(&direct, &format!("{base}/version")));

    let a = etcd_metrics(&direct);
    let answer = http_get(&monitor.metrics_url(), &[]);
    let b = etcd_metrics(&direct);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, CONTENT_TYPE);
    let m = answer.body;
    let (pa, pm, pb) = (plain(&a), plain(&m), plain(&b));

    // Families: etcd's, plus the derived 3.0 counter and our own; HELP/TYPE unchanged.
    let mut expected: Vec<&str> = pa.types.keys().map(String::as_str).collect();
    expected.push("etcd_grpc_requests_total");
    expected.extend(OWN);
    expected.sort();
    let got: Vec<&str> = pm.types.keys().map(String::as_str).collect();
    assert_eq!(got, expected, "{version}: families");
    for (name, kind) in &pa.types {
        assert_eq!(pm.types.get(name), Some(kind), "{version}: TYPE of {name}");
    }
    for help in &pa.help_lines {
        assert!(pm.help_lines.contains(help), "{version}: {help} changed");
    }
    assert_eq!(
        pm.types.contains_key("grpc_server_handling_seconds"),
        extensive
    );

    check_series(version, &pa, &pm, &pb);

    // The 3.0-style counter equals sums computed here from etcd's own output.
    let sums = unary_sums(&a);
    assert_eq!(
        sums,
        unary_sums(&b),
        "{version}: gRPC counters moved without load"
    );
    assert_eq!(
        legacy_requests(&m),
        sums,
        "{version}: etcd_grpc_requests_total"
    );
    let put = ("Put".to_string(), "etcdserverpb.KV".to_string());
    assert_eq!(sums[&put], load.puts as f64, "{version}: Put count");
    let range = ("Range".to_string(), "etcdserverpb.KV".to_string());
    assert!(sums[&range] >= load.ranges_at_least as f64);
    if extensive {
        let count_key = "grpc_server_handling_seconds_count{grpc_method=\"Put\",\
                         grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}";
        assert_eq!(pm.series[count_key], load.puts as f64);
    }

    // etcd_version_info = 1 for the running binary, from /version or from etcd's gauge.
    let info = format!("etcd_version_info{{binary_version=\"{version}\"}}");
    assert_eq!(pm.series.get(&info), Some(&1.0), "{version}: {info}");
    assert_eq!(pm.series["etcd_version_monitor_up"], 1.0);
    let build = format!(
        "etcd_version_monitor_build_info{{version=\"{}\",revision=\"{}\"}}",
        etcdtools::build_info::VERSION,
        etcdtools::build_info::REVISION
    );
    assert_eq!(pm.series.get(&build), Some(&1.0), "{build}");

    let warnings = promtool_clean(&m, &a);
    eprintln!(
        "etcd {version} (extensive={extensive}): {} promtool lint warnings, all from etcd's own \
         families, e.g. {:?}",
        warnings.len(),
        warnings.first()
    );
    (m, a)
}

#[test]
fn etcd_3_4_basic_via_the_metrics_port() {
    check_against_etcd(V3_4, false, true);
}

#[test]
fn etcd_3_4_extensive() {
    check_against_etcd(V3_4, true, false);
}

#[test]
fn etcd_3_5_1_basic_via_the_metrics_port() {
    check_against_etcd(V3_5_1, false, true);
}

#[test]
fn etcd_3_5_1_extensive() {
    check_against_etcd(V3_5_1, true, false);
}

/// etcd 3.3.25 (Debian bullseye): the oldest version migrate starts; its gateway is /v3beta.
#[test]
fn etcd_3_3_25_basic_via_the_metrics_port() {
    check_against_etcd(V3_3, false, true);
}

#[test]
fn etcd_3_3_25_extensive() {
    check_against_etcd(V3_3, true, false);
}

/// etcd 3.5.30 (Debian sid): the newest 3.5.
#[test]
fn etcd_3_5_30_basic_via_the_metrics_port() {
    check_against_etcd(V3_5_30, false, true);
}

#[test]
fn etcd_3_5_30_extensive() {
    check_against_etcd(V3_5_30, true, false);
}

#[test]
fn concurrent_scrapes_and_once_against_etcd_3_5_1() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let metrics = format!("{}/metrics", etcd.client_url);
    let version = format!("{}/version", etcd.client_url);
    let monitor = InProcess::start(config_for(&metrics, &version));
    let url = monitor.metrics_url();
    // More clients than worker threads: every one gets a complete, valid answer.
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let a = http_get(&url, &[]);
                    assert_eq!(a.status, 200);
                    let p = plain(&a.body);
                    assert_eq!(p.series["etcd_version_monitor_up"], 1.0);
                    assert!(p.types.contains_key("etcd_grpc_requests_total"));
                    assert!(a.body.ends_with('\n'));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // --once with the real binary: the exposition on stdout, exit 0.
    let out = std::process::Command::new(MONITOR_BIN)
        .args([
            "--once",
            "--etcd-metrics-scrape-uri",
            &metrics,
            "--etcd-version-scrape-uri",
            &version,
            "--scrape-timeout=5s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let p = plain(&text);
    assert_eq!(p.series["etcd_version_info{binary_version=\"3.5.1\"}"], 1.0);
    assert!(p.types.contains_key("etcd_server_has_leader"));
    let direct = etcd_metrics(&metrics);
    promtool_clean(&text, &direct);

    // Healthz, 404 and the landing page on the same server.
    let h = http_get(&format!("{}/healthz", monitor.url), &[]);
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(&format!("{}/nope", monitor.url), &[]).status, 404);
    assert!(http_get(&monitor.url, &[]).body.contains("/metrics"));
}
