//! Faults: etcd stopped mid-run (and back), an upstream that stalls beyond the timeout, garbage,
//! oversized or non-text bodies, HTTP errors, and the command line. The misbehaving upstreams
//! are tiny loopback TCP servers written here, because a real etcd cannot be made to stall or
//! answer garbage; the stop/restart case uses real etcd.
mod common;
mod monitor_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::EtcdProcess;
use etcdtools::monitor::{Monitor, MonitorConfig};
use monitor_support::*;

/// A loopback server answering every connection with `response` (or stalling when `None`).
struct FakeUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl FakeUpstream {
    fn start(response: Option<Vec<u8>>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        match &response {
                            Some(bytes) => {
                                read_request(&mut conn);
                                let _ = conn.write_all(bytes);
                            }
                            None => held.push(conn), // accept, never answer
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeUpstream { port, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_request(conn: &mut TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return,
        }
    }
}

fn http_response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn reason_count(text: &str, reason: &str) -> f64 {
    plain(text).series[&format!("etcd_version_monitor_scrape_errors_total{{reason=\"{reason}\"}}")]
}

#[test]
fn etcd_stopped_mid_run_then_back() {
    let mut etcd = TestEtcd::start(V3_5_1, &[]);
    let spec = etcd.process.as_ref().unwrap().spec().clone();
    let metrics = format!("{}/metrics", etcd.client_url);
    let version = format!("{}/version", etcd.client_url);
    let monitor = BinaryMonitor::start(&[
        "--etcd-metrics-scrape-uri",
        &metrics,
        "--etcd-version-scrape-uri",
        &version,
        "--scrape-timeout=2s",
    ]);
    let first = http_get(&monitor.metrics_url(), &[]);
    assert_eq!(plain(&first.body).series["etcd_version_monitor_up"], 1.0);

    etcd.stop();
    for _ in 0..4 {
        let a = http_get(&monitor.metrics_url(), &[]);
        assert_eq!(a.status, 200);
        let p = plain(&a.body);
        assert_eq!(p.series["etcd_version_monitor_up"], 0.0);
        assert!(!p.types.contains_key("etcd_server_has_leader"));
        assert!(!p.types.contains_key("etcd_version_info"));
    }
    let down = http_get(&monitor.metrics_url(), &[]).body;
    assert_eq!(reason_count(&down, "connect"), 5.0);
    promtool_clean(&down, "");
    assert_eq!(monitor.logged("cannot scrape etcd"), 1);

    // Same data dir, same ports: etcd comes back and so does up.
    let mut again = EtcdProcess::start(&spec).unwrap();
    again
        .wait_ready(&HttpClient::plain(), Duration::from_secs(30))
        .unwrap();
    let back = http_get(&monitor.metrics_url(), &[]).body;
    let p = plain(&back);
    assert_eq!(p.series["etcd_version_monitor_up"], 1.0);
    assert_eq!(p.series["etcd_version_info{binary_version=\"3.5.1\"}"], 1.0);
    assert_eq!(reason_count(&back, "connect"), 5.0, "errors are kept");
    assert_eq!(monitor.logged("works again after 5 failed"), 1);
    assert_eq!(monitor.log_lines_containing("cannot scrape etcd"), 1);
    again.stop(Duration::from_secs(10)).unwrap();
}

#[test]
fn stalled_etcd_hits_the_timeout_of_the_flag_or_of_prometheus() {
    let stall = FakeUpstream::start(None);
    let monitor = BinaryMonitor::start(&[
        "--etcd-metrics-scrape-uri",
        &stall.url("/metrics"),
        "--etcd-version-scrape-uri",
        &stall.url("/version"),
        "--scrape-timeout=300ms",
    ]);
    let a = http_get(&monitor.metrics_url(), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(plain(&a.body).series["etcd_version_monitor_up"], 0.0);
    assert_eq!(reason_count(&a.body, "timeout"), 1.0);
    assert!(a.took < Duration::from_secs(5), "{:?}", a.took);
    assert_eq!(monitor.logged("timed out"), 1);

    // A long flag, but Prometheus says it gives up after 1 s: we answer before that.
    let monitor = BinaryMonitor::start(&[
        "--etcd-metrics-scrape-uri",
        &stall.url("/metrics"),
        "--scrape-timeout=60s",
    ]);
    let a = http_get(
        &monitor.metrics_url(),
        &[("X-Prometheus-Scrape-Timeout-Seconds", "1")],
    );
    assert_eq!(plain(&a.body).series["etcd_version_monitor_up"], 0.0);
    assert_eq!(reason_count(&a.body, "timeout"), 1.0);
    assert!(a.took < Duration::from_secs(3), "{:?}", a.took);
}

#[test]
fn garbage_oversized_non_text_and_error_answers() {
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            http_response(
                "200 OK",
                "text/plain; version=0.0.4",
                b"# HELP ok fine\nok 1\n<html>oops</html>\n",
            ),
            "parse",
            "line 3: expected a metric name",
        ),
        (
            http_response("200 OK", "text/plain", &[b'a', b' ', 0xff, b'\n']),
            "invalid_body",
            "not UTF-8",
        ),
        (
            http_response(
                "200 OK",
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily",
                b"\x0a\x03abc",
            ),
            "invalid_body",
            "not the text format",
        ),
        (
            http_response("500 Internal Server Error", "text/plain", b"boom"),
            "http_status",
            "HTTP 500",
        ),
        (
            http_response("200 OK", "text/plain", &vec![b'#'; 300_000]),
            "too_large",
            "larger than 100000 bytes",
        ),
        (b"this is not HTTP\r\n\r\n".to_vec(), "connect", ""),
    ];
    for (response, reason, message) in cases {
        let upstream = FakeUpstream::start(Some(response));
        let monitor = Monitor::new(MonitorConfig {
            metrics_uri: upstream.url("/metrics"),
            version_uri: upstream.url("/version"),
            body_limit: 100_000,
            ..MonitorConfig::default()
        })
        .unwrap();
        let scrape = monitor.scrape(None);
        let error = scrape.error.as_ref().expect(reason);
        assert_eq!(error.reason(), reason, "{error}");
        assert!(error.to_string().contains(message), "{error}");
        assert_eq!(plain(scrape.body()).series["etcd_version_monitor_up"], 0.0);
        assert_eq!(reason_count(scrape.body(), reason), 1.0);
    }
}

#[test]
fn version_endpoint_down_falls_back_to_the_gauge_and_garbage_version_too() {
    let body = b"# HELP etcd_server_version Which version is running.\n\
                 # TYPE etcd_server_version gauge\n\
                 etcd_server_version{server_version=\"3.5.1\"} 1\n";
    let metrics = FakeUpstream::start(Some(http_response("200 OK", "text/plain", body)));
    let version = FakeUpstream::start(Some(http_response(
        "200 OK",
        "application/json",
        b"{\"nothing\":1}",
    )));
    let monitor = Monitor::new(MonitorConfig {
        metrics_uri: metrics.url("/metrics"),
        version_uri: version.url("/version"),
        ..MonitorConfig::default()
    })
    .unwrap();
    let scrape = monitor.scrape(None);
    assert!(scrape.error.is_none());
    let p = plain(scrape.body());
    assert_eq!(p.series["etcd_version_info{binary_version=\"3.5.1\"}"], 1.0);
    assert_eq!(p.series["etcd_version_monitor_up"], 1.0);
}

#[test]
fn command_line() {
    let run = |args: &[&str]| Command::new(MONITOR_BIN).args(args).output().unwrap();
    let help = run(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen-address",
        "--metrics-path",
        "--etcd-version-scrape-uri",
        "--etcd-metrics-scrape-uri",
        "--scrape-timeout",
        "--cacert",
        "--cert",
        "--key",
        "--once",
        "--log-level",
        "--max-connections",
    ] {
        assert!(text.contains(flag), "{flag} not in --help");
    }
    let version = run(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("etcd-version-monitor "));

    for (args, needle) in [
        (&["--bogus"][..], "--bogus"),
        (&["--scrape-timeout=15"], "--scrape-timeout"),
        (&["--scrape-timeout"], "--scrape-timeout"),
        (&["--log-level=loud"], "--log-level"),
        (&["--max-connections=0"], "--max-connections"),
        (&["--max-connections=many"], "--max-connections"),
        (&["--cert=/x.pem"], "--cert and --key"),
        (&["--metrics-path=metrics"], "--metrics-path"),
        (
            &["--etcd-metrics-scrape-uri=localhost:2379"],
            "--etcd-metrics-scrape-uri",
        ),
        (
            &["--cacert=/nonexistent/ca.pem", "--once"],
            "/nonexistent/ca.pem",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // --once against nothing: exit 1, the reason on stderr, nothing on stdout.
    let stall = FakeUpstream::start(None);
    let started = Instant::now();
    let out = run(&[
        "--once",
        "--scrape-timeout=200ms",
        "--etcd-metrics-scrape-uri",
        &stall.url("/metrics"),
        "--logtostderr",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // The listen address in use: a clear error, non-zero exit.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--listen-address", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
}
