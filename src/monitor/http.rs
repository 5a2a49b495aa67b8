//! A small blocking HTTP/1.1 server for the monitor's three GET endpoints.
//!
//! Why not tiny_http: it writes headers and body in separate small writes without
//! TCP_NODELAY, so every keep-alive scrape waited ~40 ms for the client's delayed ACK
//! (measured: 48 ms median through the monitor vs 6 ms straight from etcd); it also has no
//! socket timeouts, no header size limit and an unbounded thread pool. Here: one thread per
//! connection up to [`MAX_CONNECTIONS`] (more get 503 and are closed), socket timeouts, a
//! 16 KiB header limit, keep-alive, one write per response with TCP_NODELAY, and at most
//! `workers` requests handled at once.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Open connections served at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest request head (request line + headers) we read.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long an idle keep-alive connection (or a slow client) may hold its thread.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connection threads do little besides waiting; 256 KiB of stack is plenty.
const THREAD_STACK: usize = 256 * 1024;

/// What a handler sees of a request.
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

impl Request<'_> {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// What a handler answers.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub type Handler = dyn Fn(&Request<'_>) -> Response + Send + Sync;

/// A counting semaphore: at most `n` handlers run at once.
struct Slots {
    free: Mutex<usize>,
    cond: Condvar,
}

impl Slots {
    fn acquire(&self) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cond.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    fn release(&self) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.cond.notify_one();
    }
}

struct Shared {
    handler: Box<Handler>,
    slots: Slots,
    connections: AtomicUsize,
    stop: AtomicBool,
}

/// A listening server; [`HttpServer::shutdown`] (or drop) stops accepting.
pub struct HttpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn bind(
        address: impl ToSocketAddrs,
        workers: usize,
        handler: Box<Handler>,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(address)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler,
            slots: Slots {
                free: Mutex::new(workers.max(1)),
                cond: Condvar::new(),
            },
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let for_acceptor = shared.clone();
        let acceptor = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, for_acceptor))?;
        Ok(HttpServer {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks while the server runs.
    pub fn join(mut self) {
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }

    /// Stops accepting; connections being served finish their current request.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], a.port()))
            }
            a => a,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.stop();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::debug!("accept failed: {e}");
                // EMFILE and the like: don't spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = write_response(
                &mut stream,
                &Response {
                    status: 503,
                    content_type: "text/plain; charset=utf-8",
                    body: b"too many connections\n".to_vec(),
                },
                false,
                false,
            );
            continue;
        }
        let for_conn = shared.clone();
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                serve_connection(stream, &for_conn);
                for_conn.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a connection thread: {e}");
        }
    }
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head_len = match read_head(&mut stream, &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => return, // closed or idle timeout
            Err(HeadError::TooLarge) => {
                let _ = write_response(
                    &mut stream,
                    &plain(431, "request head too large\n"),
                    false,
                    false,
                );
                return;
            }
        };
        let keep_alive = match std::str::from_utf8(&buf[..head_len]) {
            Ok(head) => match parse_head(head) {
                Some((method, target, version, headers)) => {
                    let has_body = headers.iter().any(|(k, v)| {
                        (k.eq_ignore_ascii_case("content-length") && v.trim() != "0")
                            || k.eq_ignore_ascii_case("transfer-encoding")
                    });
                    let connection = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("connection"))
                        .map(|(_, v)| v.to_ascii_lowercase());
                    // We never read request bodies: close after answering one that has one.
                    let keep_alive = !has_body
                        && match version {
                            "HTTP/1.1" => connection.as_deref() != Some("close"),
                            _ => connection.as_deref() == Some("keep-alive"),
                        };
                    let request = Request {
                        method,
                        target,
                        headers: &headers,
                    };
                    shared.slots.acquire();
                    let response = (shared.handler)(&request);
                    shared.slots.release();
                    if write_response(&mut stream, &response, method == "HEAD", keep_alive).is_err()
                    {
                        return;
                    }
                    keep_alive
                }
                None => {
                    let _ = write_response(&mut stream, &plain(400, "bad request\n"), false, false);
                    false
                }
            },
            Err(_) => {
                let _ = write_response(&mut stream, &plain(400, "bad request\n"), false, false);
                false
            }
        };
        if !keep_alive {
            return;
        }
        buf.drain(..head_len);
    }
}

fn plain(status: u16, text: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: text.as_bytes().to_vec(),
    }
}

enum HeadError {
    TooLarge,
}

/// Reads until the end of a request head; returns its length in `buf` (incl. the blank line).
/// `Ok(None)`: the peer closed or went quiet before a complete head.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, HeadError> {
    let mut start = 0;
    loop {
        if let Some(i) = find_head_end(&buf[start..]) {
            return Ok(Some(start + i));
        }
        start = buf.len().saturating_sub(3);
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Index just past the first `\r\n\r\n` (or bare `\n\n`).
fn find_head_end(b: &[u8]) -> Option<usize> {
    for i in 0..b.len() {
        if b[i..].starts_with(b"\r\n\r\n") {
            return Some(i + 4);
        }
        if b[i..].starts_with(b"\n\n") {
            return Some(i + 2);
        }
    }
    None
}

type Head<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);

/// Request line and headers; `None` when malformed.
fn parse_head(head: &str) -> Option<Head<'_>> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let method = parts.next().filter(|m| !m.is_empty())?;
    let target = parts.next().filter(|t| !t.is_empty())?;
    let version = parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    if parts.next().is_some() {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim(), value.trim()));
    }
    Some((method, target, version, headers))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes a response; with TCP_NODELAY nothing waits for a delayed ACK.
fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    if head_only || response.body.len() <= 16 * 1024 {
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&response.body);
        }
        stream.write_all(&out)?;
    } else {
        // Large bodies: two writes rather than a copy (musl's memcpy is slow); with
        // TCP_NODELAY the head does not wait for an ACK.
        stream.write_all(head.as_bytes())?;
        stream.write_all(&response.body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_heads() {
        let (m, t, v, h) = parse_head(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
        )
        .unwrap();
        assert_eq!((m, t, v), ("GET", "/metrics?x=1", "HTTP/1.1"));
        assert_eq!(h[1], ("X-Prometheus-Scrape-Timeout-Seconds", "10"));
        assert!(parse_head("GET /\r\n\r\n").is_none());
        assert!(parse_head("GET / SPDY/3\r\n\r\n").is_none());
        assert!(parse_head("GET / HTTP/1.1\r\nno colon\r\n\r\n").is_none());
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n"), None);
    }
}
