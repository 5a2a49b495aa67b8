//! The monitor's HTTP protocol: a request head parsed from bytes (pure), routing, and answers
//! written head and body in one `writev`. The sockets and threads are in `server.rs`.

use std::fmt;
use std::io::Write as _;
use std::net::TcpStream;
use std::sync::Arc;

use crate::civil::civil_from_days;

use super::server::write_all_2;
use super::{Monitor, CONTENT_TYPE, PROMETHEUS_TIMEOUT_HEADER};

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Healthz,
    Index,
    NotFound,
    MethodNotAllowed,
}

/// Routes by path (query string ignored) and method.
pub fn route(method: &str, url: &str, metrics_path: &str) -> Route {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let known = if path == metrics_path {
        Route::Metrics
    } else if path == "/healthz" {
        Route::Healthz
    } else if path == "/" {
        Route::Index
    } else {
        return Route::NotFound;
    };
    if method == "GET" || method == "HEAD" {
        known
    } else {
        Route::MethodNotAllowed
    }
}

/// The parts of a request head the monitor uses.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The client keeps the connection open after the answer (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    pub content_length: u64,
    /// A `Transfer-Encoding` body, which we do not read: the connection is closed.
    pub chunked: bool,
    pub prometheus_timeout: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Head<'a> {
    /// A request and the length of its head in bytes.
    Complete(Request<'a>, usize),
    /// More bytes needed.
    Partial,
    /// No end of the head within the limit.
    TooLarge,
    Bad,
}

/// Parses the request head at the start of `buf` (empty lines before it are skipped, as
/// RFC 9112 allows), at most `max` bytes long.
pub fn parse_head(buf: &[u8], max: usize) -> Head<'_> {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'));
    let Some(start) = start else {
        return if buf.len() > max {
            Head::TooLarge
        } else {
            Head::Partial
        };
    };
    let Some(end) = buf[start..].windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > max {
            Head::TooLarge
        } else {
            Head::Partial
        };
    };
    if end + 4 > max {
        return Head::TooLarge;
    }
    let Ok(text) = std::str::from_utf8(&buf[start..start + end]) else {
        return Head::Bad;
    };
    match parse_text(text) {
        Some(request) => Head::Complete(request, start + end + 4),
        None => Head::Bad,
    }
}

fn parse_text(text: &str) -> Option<Request<'_>> {
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let is_token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if parts.next().is_some() || !is_token(method) || !is_token(target) {
        return None;
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return None,
    };
    let mut request = Request {
        method,
        target,
        minor,
        keep_alive: minor == 1,
        content_length: 0,
        chunked: false,
        prometheus_timeout: None,
    };
    let mut length: Option<u64> = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if !is_token(name) || name.contains(':') {
            return None;
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    request.keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    request.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            request.chunked = true;
        } else if name.eq_ignore_ascii_case(PROMETHEUS_TIMEOUT_HEADER) {
            request.prometheus_timeout = Some(value);
        }
    }
    request.content_length = length.unwrap_or(0);
    Some(request)
}

/// Answers `request` on `stream`; false when the connection is to be closed.
pub fn answer(monitor: &Monitor, request: &Request, stream: &mut TcpStream) -> bool {
    let route = route(request.method, request.target, &monitor.config.metrics_path);
    let page;
    let mut scrape = None;
    let (status, content_type, body): (u16, &str, &[u8]) = match route {
        Route::Metrics => {
            let shared = scrape.insert(monitor.scrape_shared(request.prometheus_timeout));
            (200, CONTENT_TYPE, shared.body().as_bytes())
        }
        Route::Healthz => (200, TEXT_CONTENT_TYPE, b"ok\n"),
        Route::Index => {
            page = format!(
                "<html><head><title>etcd-version-monitor</title></head><body>\
                 <h1>etcd-version-monitor</h1><p><a href=\"{0}\">{0}</a></p></body></html>\n",
                html_escape(&monitor.config.metrics_path)
            );
            (200, "text/html; charset=utf-8", page.as_bytes())
        }
        Route::NotFound => (404, TEXT_CONTENT_TYPE, b"not found\n"),
        Route::MethodNotAllowed => (405, TEXT_CONTENT_TYPE, b"method not allowed\n"),
    };
    let keep_alive = request.keep_alive && !request.chunked;
    let head = ResponseHead {
        minor: request.minor,
        status,
        content_type,
        allow: route == Route::MethodNotAllowed,
        content_length: body.len(),
        close: !keep_alive,
        date: std::time::SystemTime::now(),
    };
    let mut head_bytes = Vec::with_capacity(256);
    head.write(&mut head_bytes);
    let body = if request.method == "HEAD" {
        &[][..]
    } else {
        body
    };
    let written = write_all_2(stream, &head_bytes, body, monitor.config.write_timeout);
    // The last writer of a shared answer keeps its buffer for a later scrape.
    if let Some(Ok(done)) = scrape.map(Arc::try_unwrap) {
        monitor.recycle(done.buffer.into_bytes());
    }
    match written {
        Ok(()) => keep_alive,
        Err(e) => {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
            ) {
                log::debug!("cannot answer {:?}: {e}", stream.peer_addr().ok());
            }
            false
        }
    }
}

/// An error answer (400, 431) before closing the connection.
pub fn write_error(
    stream: &mut TcpStream,
    status: u16,
    limit: std::time::Duration,
) -> std::io::Result<()> {
    let body: &[u8] = match status {
        431 => b"request header too large\n",
        _ => b"bad request\n",
    };
    let head = ResponseHead {
        minor: 1,
        status,
        content_type: TEXT_CONTENT_TYPE,
        allow: false,
        content_length: body.len(),
        close: true,
        date: std::time::SystemTime::now(),
    };
    let mut head_bytes = Vec::with_capacity(256);
    head.write(&mut head_bytes);
    write_all_2(stream, &head_bytes, body, limit)
}

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The status line and headers of an answer: identity encoding with `Content-Length`, never
/// chunked; `Connection: close` when the connection ends after it, `Connection: keep-alive`
/// when an HTTP/1.0 connection does not.
struct ResponseHead<'a> {
    minor: u8,
    status: u16,
    content_type: &'a str,
    allow: bool,
    content_length: usize,
    close: bool,
    date: std::time::SystemTime,
}

impl ResponseHead<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            _ => "Unknown",
        };
        let (major, minor) = (1, self.minor);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/{major}.{minor} {} {reason}\r\nDate: {}\r\nContent-Type: {}\r\n",
            self.status,
            HttpDate(self.date),
            self.content_type
        );
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.minor == 0 {
            // An HTTP/1.0 client keeps the connection only when told (RFC 9112 9.3).
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.content_length);
    }
}

/// An RFC 9110 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
struct HttpDate(std::time::SystemTime);

impl fmt::Display for HttpDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        write!(
            f,
            "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
            WEEKDAYS[(days % 7) as usize],
            MONTHS[(month - 1) as usize],
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn complete(head: &[u8]) -> (Request<'_>, usize) {
        match parse_head(head, 1024) {
            Head::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_cut_or_damaged_anywhere_do_not_panic() {
        let head: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..=head.len() {
            let _ = parse_head(&head[..cut], 64);
        }
        for at in 0..head.len() {
            for byte in [0u8, b' ', b':', b'\r', b'\n', 0xff] {
                let mut damaged = head.to_vec();
                damaged[at] = byte;
                if let Head::Complete(_, n) = parse_head(&damaged, 64) {
                    assert!(n <= damaged.len());
                }
            }
        }
    }

    #[test]
    fn request_heads() {
        let (r, n) = complete(b"\r\nGET /metrics?x HTTP/1.1\r\nHost: a:1\r\n\r\nGET");
        assert_eq!(n, 40);
        assert_eq!((r.method, r.target, r.minor), ("GET", "/metrics?x", 1));
        assert!(r.keep_alive && !r.chunked && r.content_length == 0);
        let (r, _) = complete(
            b"POST / HTTP/1.1\r\nconnection: Upgrade, close\r\nContent-Length: 2\r\n\
              x-prometheus-scrape-timeout-seconds:  10\r\n\r\nhi",
        );
        assert!(!r.keep_alive);
        assert_eq!((r.content_length, r.prometheus_timeout), (2, Some("10")));
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(r.chunked);
        for partial in [&b""[..], b"\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n"] {
            assert_eq!(parse_head(partial, 1024), Head::Partial);
        }
        for bad in [
            &b"NONSENSE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad, 1024), Head::Bad, "{bad:?}");
        }
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 2000]].concat();
        assert_eq!(parse_head(&long, 1024), Head::TooLarge);
        assert_eq!(parse_head(&long[..1000], 1024), Head::Partial);
        let ended = [&long[..1100], b"\r\n\r\n"].concat();
        assert_eq!(parse_head(&ended, 1024), Head::TooLarge);
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        let at =
            |secs: u64| HttpDate(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's example.
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/metrics", "/metrics"), Route::Metrics);
        assert_eq!(route("HEAD", "/metrics?x=1", "/metrics"), Route::Metrics);
        assert_eq!(route("GET", "/healthz", "/metrics"), Route::Healthz);
        assert_eq!(route("GET", "/", "/metrics"), Route::Index);
        assert_eq!(route("GET", "/metricsx", "/metrics"), Route::NotFound);
        assert_eq!(route("GET", "/other", "/metrics"), Route::NotFound);
        assert_eq!(
            route("POST", "/metrics", "/metrics"),
            Route::MethodNotAllowed
        );
        assert_eq!(route("GET", "/m", "/m"), Route::Metrics);
    }
}
