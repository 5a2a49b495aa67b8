//! The monitor's HTTP side on raw sockets: keep-alive, HEAD, Connection: close, HTTP/1.0,
//! pipelining, 404/405/400/431, Content-Type, shutdown. etcd is "down" here (port 1 refuses),
//! which is enough: the answer is then the monitor's own metrics, still 200. Where the
//! connection ends, the tests check for the end of the stream.
mod common;
mod monitor_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{TestEtcd, V3_5_1};
use etcdtools::monitor::CONTENT_TYPE;
use monitor_support::*;

fn down_monitor() -> InProcess {
    InProcess::start(config_for(
        "http://127.0.0.1:1/metrics",
        "http://127.0.0.1:1/version",
    ))
}

fn connect(m: &InProcess) -> TcpStream {
    let s = TcpStream::connect(m.url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response: (status, headers lower-cased, body).
fn read_response(
    r: &mut BufReader<TcpStream>,
    head_only: bool,
) -> (u16, Vec<(String, String)>, String) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut body = vec![0; if head_only { 0 } else { len }];
    r.read_exact(&mut body).unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The rest of the stream is empty: the server closed the connection.
fn assert_closed(mut r: BufReader<TcpStream>) {
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "connection not closed: {}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn keep_alive_pipelining_head_and_close() {
    let m = down_monitor();
    let mut s = connect(&m);
    // Three requests in one write: answered in order on the same connection.
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, headers, body) = read_response(&mut r, false);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some(CONTENT_TYPE));
    assert_eq!(header(&headers, "connection"), None);
    assert_eq!(header(&headers, "transfer-encoding"), None);
    assert!(body.contains("etcd_version_monitor_up 0\n"));
    let (status, headers, _) = read_response(&mut r, true);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some(CONTENT_TYPE));
    assert!(
        header(&headers, "content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 100
    );
    let (status, _, body) = read_response(&mut r, false);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_closed(r);
}

#[test]
fn keep_alive_across_separate_writes() {
    let m = down_monitor();
    let mut s = connect(&m);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..3 {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, _, body) = read_response(&mut r, false);
        assert_eq!(status, 200);
        assert!(body.contains("etcd_version_monitor_scrape_errors_total"));
    }
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, headers, body) = read_response(&mut r, false);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(body.contains("<a href=\"/metrics\">"));
    assert_closed(r);
}

#[test]
fn http_1_0_closes_and_errors_are_answered() {
    let m = down_monitor();
    let big_head = [
        b"GET / HTTP/1.1\r\nX-Big: ".as_slice(),
        &[b'a'; 20_000],
        b"\r\n\r\n",
    ]
    .concat();
    let cases: &[(&[u8], u16)] = &[
        (b"GET /metrics HTTP/1.0\r\n\r\n", 200),
        (b"HEAD /healthz HTTP/1.0\r\n\r\n", 200),
        (b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
        (b"DELETE / HTTP/1.0\r\n\r\n", 405),
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (&big_head, 431),
    ];
    for (request, expected) in cases {
        let mut s = connect(&m);
        s.write_all(request).unwrap();
        let mut r = BufReader::new(s);
        let head_only = request.starts_with(b"HEAD");
        let (status, _, _) = read_response(&mut r, head_only);
        assert_eq!(status, *expected, "{}", String::from_utf8_lossy(request));
        assert_closed(r);
    }
}

/// An HTTP/1.0 client keeps the connection only when the answer says `Connection: keep-alive`
/// (RFC 9112 section 9.3); then a second request is answered on it.
#[test]
fn http_1_0_keep_alive_is_acknowledged() {
    let m = down_monitor();
    let s = connect(&m);
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..2 {
        (&s).write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (status, headers, body) = read_response(&mut r, false);
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    }
}

#[test]
fn method_not_allowed_reads_the_body_and_keeps_the_connection() {
    let m = down_monitor();
    let mut s = connect(&m);
    // The POST body must be skipped, not taken for the next request.
    s.write_all(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
          GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let (status, headers, _) = read_response(&mut r, false);
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    let (status, _, body) = read_response(&mut r, false);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_closed(r);
}

#[test]
fn shutdown_closes_the_listener() {
    let mut m = down_monitor();
    let addr = m.url.trim_start_matches("http://").to_string();
    assert_eq!(http_get(&format!("{}/healthz", m.url), &[]).status, 200);
    m.server.take().unwrap().shutdown();
    // The epoll thread drops the listener once woken; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(&addr) {
            Err(_) => break,
            Ok(_) if std::time::Instant::now() > deadline => {
                panic!("{addr} still accepts connections after shutdown")
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A real etcd's /metrics (~150 KB) through the monitor: answers carry Content-Length (never
/// chunked), also on keep-alive and HEAD.
#[test]
fn large_answers_carry_content_length_over_keep_alive() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let m = InProcess::start(config_for(
        &format!("{}/metrics", etcd.client_url),
        &format!("{}/version", etcd.client_url),
    ));
    let mut s = connect(&m);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let get =
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";
    for request in [&get[..], b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", get] {
        s.write_all(request).unwrap();
        let head_only = request.starts_with(b"HEAD");
        let (status, headers, body) = read_response(&mut r, head_only);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "transfer-encoding"), None);
        let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
        assert!(length > 100_000, "{length}");
        if !head_only {
            assert_eq!(body.len(), length);
            assert!(body.contains("etcd_version_monitor_up 1\n"));
            assert!(body.contains("etcd_version_info{binary_version=\"3.5.1\"} 1\n"));
        }
    }
}

/// One worker and a client that pipelines scrapes without reading the answers: once the socket
/// buffers are full the worker's write blocks, and only the send timeout (set on the listener,
/// inherited by accepted sockets) frees it for other clients.
#[test]
fn a_client_that_stops_reading_does_not_block_the_workers() {
    let etcd = TestEtcd::start(V3_5_1, &[]);
    let mut config = config_for(
        &format!("{}/metrics", etcd.client_url),
        &format!("{}/version", etcd.client_url),
    );
    config.workers = 1;
    config.write_timeout = Duration::from_millis(200);
    let m = InProcess::start(config);
    let mut stuck = connect(&m);
    // 40 answers of ~150 KB: more than the loopback buffers hold (tcp_wmem max 4 MiB plus the
    // receiver's unread window, ~28 answers). Pipelined requests are answered one per turn,
    // behind other clients'; the write that blocks fails after the send timeout and the
    // connection is closed.
    let burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(40);
    stuck.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // http_get gives up (and the test fails) after 30 s; without the send timeout the only
    // worker stays blocked for good.
    for _ in 0..2 {
        let a = http_get(&format!("{}/healthz", m.url), &[]);
        assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    }
    drop(stuck);
}

#[test]
fn custom_metrics_path() {
    let mut config = config_for("http://127.0.0.1:1/metrics", "http://127.0.0.1:1/version");
    config.metrics_path = "/etcd".into();
    let m = InProcess::start(config);
    assert_eq!(http_get(&format!("{}/etcd", m.url), &[]).status, 200);
    assert_eq!(http_get(&format!("{}/metrics", m.url), &[]).status, 404);
}

/// Clients that send a request head slowly (or never finish it) hold no worker: with one
/// worker and 20 of them, another client is answered at once.
#[test]
fn unfinished_request_heads_hold_no_worker() {
    let mut config = config_for("http://127.0.0.1:1/metrics", "http://127.0.0.1:1/version");
    config.workers = 1;
    let m = InProcess::start(config);
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&m);
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let a = http_get(&format!("{}/healthz", m.url), &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    assert!(a.took < Duration::from_secs(2), "{:?}", a.took);
    // The slow ones are still open and are answered once their heads end.
    let mut r = BufReader::new(slow[0].try_clone().unwrap());
    (&slow[0]).write_all(b"1\r\n\r\n").unwrap();
    let (status, _, body) = read_response(&mut r, false);
    assert_eq!(status, 200);
    assert!(body.contains("etcd_version_monitor_up 0\n"));
}

/// A head not complete within the limit (here 300 ms instead of 10 s) is closed.
#[test]
fn a_head_that_takes_too_long_is_closed() {
    let mut config = config_for("http://127.0.0.1:1/metrics", "http://127.0.0.1:1/version");
    config.head_timeout = Duration::from_millis(300);
    let m = InProcess::start(config);
    let mut s = connect(&m);
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // The sweep runs every second: closed within about 1.3 s, with nothing written.
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// A client streaming an endless request body as fast as it can (here to /metrics, answered
/// 405 with the body to be skipped) is closed once the body is not complete within the head
/// time limit (here 300 ms), also when its data never stops; meanwhile the only worker still
/// answers another client.
#[test]
fn an_endless_body_is_closed_at_the_head_time_limit() {
    let mut config = config_for("http://127.0.0.1:1/metrics", "http://127.0.0.1:1/version");
    config.workers = 1;
    config.head_timeout = Duration::from_millis(300);
    let m = InProcess::start(config);
    let mut s = connect(&m);
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
        .unwrap();
    let streamer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 4 << 20];
        let started = std::time::Instant::now();
        // Until the monitor closes the connection, or for 30 s.
        while started.elapsed() < Duration::from_secs(30) && s.write_all(&chunk).is_ok() {}
        started.elapsed()
    });
    let a = http_get(&format!("{}/healthz", m.url), &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    let streamed = streamer.join().unwrap();
    // Closed at the limit (plus a turn); without it, the stream ran the whole 30 s.
    assert!(
        streamed < Duration::from_secs(10),
        "streamed for {streamed:?}"
    );
    eprintln!(
        "healthz answered in {:?}; the body closed after {streamed:?}",
        a.took
    );
}
