//! A stand-in for etcd where no real one can serve (a 12 MB or 50 MB /metrics, or one that
//! answers slowly): a loopback server answering /metrics with a given body after a delay,
//! and anything else as etcd 3.5.1's /version. Shared by tests/monitor_limits.rs and
//! examples/bench-monitor-loads.rs (std only, so both can include it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The server's URL, and how many /metrics requests it has answered.
pub fn slow_upstream(body: Vec<u8>, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let (counted, body) = (count.clone(), Arc::new(body));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (body, counted) = (body.clone(), counted.clone());
            std::thread::spawn(move || serve_upstream(conn, &body, delay, &counted));
        }
    });
    (url, count)
}

fn serve_upstream(mut conn: TcpStream, body: &[u8], delay: Duration, count: &AtomicUsize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let metrics = head.starts_with(b"GET /metrics");
        head.clear();
        let body: &[u8] = if metrics {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            body
        } else {
            b"{\"etcdserver\":\"3.5.1\"}"
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if conn.write_all(response.as_bytes()).is_err() || conn.write_all(body).is_err() {
            return;
        }
    }
}
