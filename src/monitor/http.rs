//! The monitor's HTTP side on tiny_http: routing, the worker threads, the listening socket's
//! options, and answers written head and body in one `write_all`.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{
    lock, normalize_listen_address, Monitor, MonitorError, CONTENT_TYPE, HEAD_ROOM,
    PROMETHEUS_TIMEOUT_HEADER,
};

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

/// How long writing one answer may block: a client that stops reading frees its worker.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP keep-alive probes (idle 60 s, then every 10 s, 3 misses) close connections whose
/// peer vanished, so they don't hold a tiny_http connection thread forever.
const KEEPALIVE_IDLE: libc::c_int = 60;
const KEEPALIVE_INTERVAL: libc::c_int = 10;
const KEEPALIVE_COUNT: libc::c_int = 3;

/// The HTTP side: tiny_http reads requests on its own thread per connection and queues them;
/// `workers` threads take them off the queue, so at most that many scrapes run at once.
pub struct Server {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    workers: Vec<JoinHandle<()>>,
}

/// One of the threads taking requests off tiny_http's queue.
struct Worker {
    http: Arc<tiny_http::Server>,
    monitor: Arc<Monitor>,
    stopping: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    count: usize,
}

impl Worker {
    fn run(self) {
        loop {
            match self.http.recv() {
                Ok(request) => respond(request, &self.monitor),
                Err(_) if self.stopping.load(Ordering::SeqCst) => return,
                Err(e) => {
                    // tiny_http's accept thread ends at its first accept() error (e.g. out
                    // of file descriptors): stop all workers, so the process exits loudly
                    // instead of silently accepting nothing.
                    *lock(&self.failure) = Some(e.to_string());
                    self.stopping.store(true, Ordering::SeqCst);
                    for _ in 0..self.count {
                        self.http.unblock();
                    }
                    return;
                }
            }
        }
    }
}

impl Server {
    pub fn start(monitor: Arc<Monitor>) -> Result<Server, MonitorError> {
        let address = normalize_listen_address(&monitor.config.listen_address);
        let listen_error = |reason: String| MonitorError::Listen {
            address: address.clone(),
            reason,
        };
        let listener =
            TcpListener::bind(address.as_str()).map_err(|e| listen_error(e.to_string()))?;
        tune_listener(&listener, monitor.config.write_timeout)
            .map_err(|e| listen_error(format!("socket options: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| listen_error(e.to_string()))?;
        let http = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .map_err(|e| listen_error(e.to_string()))?,
        );
        let stopping = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let count = monitor.config.workers.max(1);
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let worker = Worker {
                http: http.clone(),
                monitor: monitor.clone(),
                stopping: stopping.clone(),
                failure: failure.clone(),
                count,
            };
            let spawned = thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    stopping.store(true, Ordering::SeqCst);
                    for _ in 0..workers.len() {
                        http.unblock();
                    }
                    return Err(listen_error(format!("cannot start a worker thread: {e}")));
                }
            }
        }
        Ok(Server {
            http,
            addr,
            stopping,
            failure,
            workers,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    /// Blocks while the server runs; an error when it stopped because it could no longer
    /// accept connections.
    pub fn join(mut self) -> Result<(), MonitorError> {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match lock(&self.failure).take() {
            Some(reason) => Err(MonitorError::Serve {
                address: self.addr.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Stops taking requests: answers being written finish, the listener closes.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Each unblock() wakes one thread waiting in recv().
        for _ in 0..self.workers.len() {
            self.http.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Dropping the last tiny_http::Server handle ends its accept thread.
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop();
        }
    }
}

/// Options set on the listening socket, which Linux copies to every accepted one (tiny_http
/// accepts on its own thread and offers no hook): TCP_NODELAY (tiny_http writes the head and
/// the body separately; without it each keep-alive scrape waits ~40 ms for a delayed ACK),
/// a send timeout and TCP keep-alive. A receive timeout cannot be set this way: on the
/// listener it would make accept() fail, which ends tiny_http's accept thread.
fn tune_listener(listener: &TcpListener, write_timeout: Duration) -> std::io::Result<()> {
    let fd = listener.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        set_option(fd, level, name, &value)
    };
    set(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_COUNT)?;
    let timeout = libc::timeval {
        tv_sec: write_timeout.as_secs() as _,
        tv_usec: write_timeout.subsec_micros() as _,
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)
}

/// Raises the soft limit of open files to the hard limit, as Go programs do at start: every
/// connection costs tiny_http two descriptors, and running out ends its accept thread.
/// Returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

fn set_option<T>(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; `fd` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn respond(request: tiny_http::Request, monitor: &Monitor) {
    let route = route(
        request.method().as_str(),
        request.url(),
        &monitor.config.metrics_path,
    );
    let (status, content_type, body) = match route {
        Route::Metrics => {
            let timeout_header = request
                .headers()
                .iter()
                .find(|h| h.field.equiv(PROMETHEUS_TIMEOUT_HEADER))
                .map(|h| h.value.as_str());
            let scrape = monitor.scrape(timeout_header);
            (200, CONTENT_TYPE, scrape.buffer.into_bytes())
        }
        Route::Healthz => (200, TEXT_CONTENT_TYPE, with_head_room("ok\n")),
        Route::Index => (
            200,
            "text/html; charset=utf-8",
            with_head_room(&format!(
                "<html><head><title>etcd-version-monitor</title></head><body>\
                 <h1>etcd-version-monitor</h1><p><a href=\"{0}\">{0}</a></p></body></html>\n",
                html_escape(&monitor.config.metrics_path)
            )),
        ),
        Route::NotFound => (404, TEXT_CONTENT_TYPE, with_head_room("not found\n")),
        Route::MethodNotAllowed => (
            405,
            TEXT_CONTENT_TYPE,
            with_head_room("method not allowed\n"),
        ),
    };
    let version = request.http_version();
    let head = ResponseHead {
        http_version: (version.0, version.1),
        status,
        content_type,
        allow: route == Route::MethodNotAllowed,
        content_length: body.len() - HEAD_ROOM,
        date: std::time::SystemTime::now(),
    };
    let send_body = *request.method() != tiny_http::Method::Head;
    // One buffer, one write: tiny_http's own `respond` copies the body through an 8 KiB
    // `io::copy` into the socket, one system call (and TCP segment burst) per chunk.
    // The head goes into the room left in front of the body, so the body is neither copied
    // nor moved.
    let mut head_bytes = Vec::with_capacity(HEAD_ROOM);
    head.write(&mut head_bytes);
    let (out, from) = if !send_body {
        (head_bytes, 0)
    } else if let Some(from) = HEAD_ROOM.checked_sub(head_bytes.len()) {
        let mut out = body;
        out[from..HEAD_ROOM].copy_from_slice(&head_bytes);
        (out, from)
    } else {
        // A head longer than the room (not one we write): move the body after it.
        let mut out = head_bytes;
        out.extend_from_slice(&body[HEAD_ROOM..]);
        (out, 0)
    };
    let peer = request.remote_addr().copied();
    let mut writer = request.into_writer();
    let written = writer.write_all(&out[from..]).and_then(|()| writer.flush());
    monitor.recycle(out);
    if let Err(e) = written {
        if !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
        ) {
            log::debug!("cannot answer {peer:?}: {e}");
        }
    }
}

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// `body` after [`HEAD_ROOM`] free bytes, as a scrape leaves it.
fn with_head_room(body: &str) -> Vec<u8> {
    let mut out = vec![b' '; HEAD_ROOM];
    out.extend_from_slice(body.as_bytes());
    out
}

/// The status line and headers of an answer, as tiny_http's `respond` wrote them (minus its
/// `Server` header): identity encoding with `Content-Length`, never chunked.
struct ResponseHead {
    http_version: (u8, u8),
    status: u16,
    content_type: &'static str,
    allow: bool,
    content_length: usize,
    date: std::time::SystemTime,
}

impl ResponseHead {
    fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let reason = match self.status {
            200 => "OK",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Unknown",
        };
        let (major, minor) = self.http_version;
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

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    #[test]
    fn open_files_limit_is_raised_to_the_hard_limit() {
        let soft = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((soft, soft), (limit.rlim_cur, limit.rlim_max));
    }
}
