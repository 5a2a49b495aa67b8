//! The monitor (the real binary) under what a node or a client can hand it: too few file
//! descriptors, a thousand idle connections, a huge request header, many scrapes at once. It
//! must keep answering scrapes of real etcd 3.5.1 with bounded threads and memory. The 12 MB
//! upstream is a stand-in (a loopback server written here): no real etcd serves that much, or
//! can be made to answer slowly.
mod common;
mod monitor_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{TestEtcd, V3_5_1};
use monitor_support::upstream::slow_upstream;
use monitor_support::*;

/// main + the epoll thread + 8 workers, whatever the number of connections.
const MAX_THREADS: u64 = 10;

fn etcd_args(etcd: &TestEtcd) -> [String; 2] {
    [
        format!("--etcd-metrics-scrape-uri={}/metrics", etcd.client_url),
        format!("--etcd-version-scrape-uri={}/version", etcd.client_url),
    ]
}

fn idle_connections(url: &str, n: usize) -> Vec<TcpStream> {
    let addr = url.trim_start_matches("http://");
    (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect()
}

fn assert_scrape_works(m: &BinaryMonitor) {
    let a = http_get(&m.metrics_url(), &[]);
    assert_eq!(a.status, 200);
    assert!(a.body.contains("etcd_version_monitor_up 1\n"), "{}", a.body);
    assert!(a
        .body
        .contains("etcd_version_info{binary_version=\"3.5.1\"} 1\n"));
}

fn report(what: &str, m: &BinaryMonitor) {
    eprintln!(
        "{what}: Threads {}, VmRSS {} kB, VmHWM {} kB",
        m.status_field("Threads"),
        m.status_field("VmRSS"),
        m.status_field("VmHWM")
    );
}

/// 300 idle connections against a limit of 256 descriptors: the default cap (256 - 64) closes
/// the longest idle ones to make room, so a new scrape gets in at once.
#[test]
fn out_of_descriptors_by_default_closes_idle_connections_and_keeps_answering() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let [a, b] = etcd_args(&etcd);
    let mut m = BinaryMonitor::start_under(&["prlimit", "--nofile=256", "--"], &[&a, &b]);
    let idle = idle_connections(&m.url, 300);
    std::thread::sleep(Duration::from_millis(500));
    m.assert_running();
    assert_scrape_works(&m);
    assert!(m.status_field("Threads") <= MAX_THREADS);
    report("nofile=256, 300 idle connections", &m);
    m.assert_running();
    drop(idle);
}

/// With a cap above what the descriptors allow, accept() fails with EMFILE: logged, the open
/// connections stay, and accepting resumes once some close (the old tiny_http server aborted).
#[test]
fn out_of_descriptors_pauses_accepting_until_some_are_free() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let [a, b] = etcd_args(&etcd);
    let mut m = BinaryMonitor::start_under(
        &["prlimit", "--nofile=256", "--"],
        &[&a, &b, "--max-connections=1000"],
    );
    let mut idle = idle_connections(&m.url, 300);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.log_lines_containing("cannot accept connections") == 0 {
        assert!(Instant::now() < deadline, "no log line about EMFILE");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(m.log_lines_containing("Too many open files") >= 1);
    m.assert_running();
    // A scrape now waits in the listen backlog; closing idle connections frees descriptors.
    let url = m.metrics_url();
    let scrape = std::thread::spawn(move || http_get(&url, &[]));
    std::thread::sleep(Duration::from_millis(500));
    idle.truncate(100);
    let answer = scrape.join().unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("etcd_version_monitor_up 1\n"));
    assert!(m.logged("accepting connections again") >= 1);
    assert_eq!(m.log_lines_containing("panicked"), 0);
    assert!(m.status_field("Threads") <= MAX_THREADS);
    report("nofile=256, cap 1000, 300 idle connections", &m);
    m.assert_running();
}

/// 1000 idle connections cost no thread each (tiny_http made 1010 threads).
#[test]
fn a_thousand_idle_connections_keep_threads_bounded() {
    etcdtools::monitor::raise_open_files_limit().unwrap();
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let [a, b] = etcd_args(&etcd);
    let mut m = BinaryMonitor::start(&[&a, &b, "--max-connections=1100"]);
    let idle = idle_connections(&m.url, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let threads = m.status_field("Threads");
    assert!(threads <= MAX_THREADS, "{threads} threads");
    assert_scrape_works(&m);
    // The connections are really open and served: one of the first answers too.
    let mut first = &idle[0];
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    first.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\nok\n"));
    report("1000 idle connections", &m);
    m.assert_running();
}

/// A request head of 300 MiB is refused after 16 KiB: memory stays small.
#[test]
fn a_huge_request_header_is_refused_with_bounded_memory() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let [a, b] = etcd_args(&etcd);
    let mut m = BinaryMonitor::start(&[&a, &b]);
    let mut s = TcpStream::connect(m.url.trim_start_matches("http://")).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..300 {
        match s.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break, // closed by the monitor
        }
    }
    assert!(sent < 300 << 20, "the monitor read all 300 MiB");
    let hwm_kb = m.status_field("VmHWM");
    assert!(hwm_kb < 16 * 1024, "peak RSS {hwm_kb} kB");
    m.assert_running();
    assert_scrape_works(&m);
    report("after a 300 MiB header", &m);
}

/// 8 scrapes arriving together while etcd is slow share one fetch of 12 MB and one answer:
/// one upstream request, and memory for one copy (tiny_http's 8 workers held 8).
#[test]
fn concurrent_scrapes_share_one_fetch() {
    let mut body = b"# HELP big A big family.\n# TYPE big gauge\n".to_vec();
    for i in 0..640_000 {
        body.extend_from_slice(format!("big{{n=\"{i:06}\"}} 1\n").as_bytes());
    }
    assert!(body.len() > 11_000_000);
    let (url, fetches) = slow_upstream(body, Duration::from_millis(800));
    let mut m = BinaryMonitor::start(&[
        &format!("--etcd-metrics-scrape-uri={url}/metrics"),
        &format!("--etcd-version-scrape-uri={url}/version"),
    ]);
    let barrier = Arc::new(Barrier::new(8));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), m.metrics_url());
            std::thread::spawn(move || {
                barrier.wait();
                http_get(&url, &[])
            })
        })
        .collect();
    for c in clients {
        let a = c.join().unwrap();
        assert_eq!(a.status, 200);
        assert!(a.body.contains("big{n=\"639999\"} 1\n"));
        assert!(a.body.contains("etcd_version_monitor_up 1\n"));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "8 scrapes, one fetch");
    let hwm_mb = m.status_field("VmHWM") / 1024;
    assert!(hwm_mb < 80, "peak RSS {hwm_mb} MB for 8 scrapes of 12 MB");
    report("8 concurrent scrapes of a 12 MB upstream", &m);
    m.assert_running();
}

/// On real etcd, concurrent scrapes need fewer fetches than answers (etcd counts its own
/// /metrics requests in promhttp_metric_handler_requests_total).
#[test]
fn concurrent_scrapes_of_real_etcd_share_fetches() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let direct = format!("{}/metrics", etcd.client_url);
    let served =
        |text: &str| plain(text).series["promhttp_metric_handler_requests_total{code=\"200\"}"];
    let [a, b] = etcd_args(&etcd);
    let m = BinaryMonitor::start(&[&a, &b]);
    let before = served(&etcd_metrics(&direct));
    let (clients, rounds) = (8, 10);
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), m.metrics_url());
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    barrier.wait();
                    assert_eq!(http_get(&url, &[]).status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fetched = served(&etcd_metrics(&direct)) - before - 1.0;
    let answered = (clients * rounds) as f64;
    eprintln!("{answered} answers from {fetched} fetches of etcd");
    assert!(
        fetched < answered * 0.75,
        "{fetched} fetches for {answered} scrapes"
    );
}
