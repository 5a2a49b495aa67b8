//! `etcd-version-monitor`: a Prometheus exporter in front of etcd's `/metrics`.
//!
//! Each scrape of the metrics path fetches etcd's metrics fresh, parses them strictly,
//! applies the Go original's rewrite rules ([`crate::prom::rewrite`]), and answers with every
//! etcd family unchanged plus `etcd_version_info` and the monitor's own metrics. When etcd is
//! down or answers garbage the answer is still 200 with `etcd_version_monitor_up 0`, so
//! Prometheus keeps the target's `up` for the monitor and this gauge for etcd; the error is
//! logged once per change of state, not once per scrape.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod buffers;

use crate::etcd::client::{ClientError, HttpClient, TlsFiles, DEFAULT_BODY_LIMIT};
use crate::prom::pass::{self, PassError, Template};
use crate::prom::rewrite::{self, SERVER_VERSION};
use crate::prom::{self, Family, Label, MetricType, ParseError};
use buffers::Buffers;
use std::borrow::Cow;

pub const DEFAULT_LISTEN_ADDRESS: &str = "localhost:9101";
pub const DEFAULT_METRICS_PATH: &str = "/metrics";
pub const DEFAULT_VERSION_URI: &str = "http://localhost:2379/version";
pub const DEFAULT_METRICS_URI: &str = "http://localhost:2379/metrics";
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(15);
/// How many requests are handled at once; more wait for a free slot.
pub const DEFAULT_WORKERS: usize = 8;
/// `/version` is asked again after this long, or at once when etcd's `etcd_server_version`
/// gauge changes (a restart with another binary).
pub const VERSION_REFRESH: Duration = Duration::from_secs(30);
/// What we ask etcd for: the text format, never protobuf or OpenMetrics.
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const PROMETHEUS_TIMEOUT_HEADER: &str = "X-Prometheus-Scrape-Timeout-Seconds";

pub const VERSION_INFO: &str = "etcd_version_info";
pub const UP: &str = "etcd_version_monitor_up";
pub const SCRAPE_DURATION: &str = "etcd_version_monitor_scrape_duration_seconds";
pub const SCRAPE_ERRORS: &str = "etcd_version_monitor_scrape_errors_total";
const OWN_FAMILIES: [&str; 4] = [VERSION_INFO, UP, SCRAPE_DURATION, SCRAPE_ERRORS];

/// Values of the `reason` label of `etcd_version_monitor_scrape_errors_total`.
pub const ERROR_REASONS: [&str; 6] = [
    "timeout",
    "connect",
    "http_status",
    "too_large",
    "invalid_body",
    "parse",
];

#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub listen_address: String,
    pub metrics_path: String,
    pub version_uri: String,
    pub metrics_uri: String,
    pub scrape_timeout: Duration,
    pub tls: TlsFiles,
    /// Largest etcd answer accepted.
    pub body_limit: u64,
    pub workers: usize,
    /// How long writing one answer may block (a client that stops reading).
    pub write_timeout: Duration,
    /// Log scrape failures and recoveries (off for `--once`, which reports the error itself).
    pub log_state_changes: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            listen_address: DEFAULT_LISTEN_ADDRESS.into(),
            metrics_path: DEFAULT_METRICS_PATH.into(),
            version_uri: DEFAULT_VERSION_URI.into(),
            metrics_uri: DEFAULT_METRICS_URI.into(),
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
            tls: TlsFiles::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            workers: DEFAULT_WORKERS,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            log_state_changes: true,
        }
    }
}

/// Bad configuration or a listener that cannot be opened.
#[derive(Debug)]
pub enum MonitorError {
    Config {
        flag: &'static str,
        reason: String,
    },
    Tls(ClientError),
    Listen {
        address: String,
        reason: String,
    },
    /// The server stopped accepting connections.
    Serve {
        address: String,
        reason: String,
    },
}

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorError::Config { flag, reason } => write!(f, "{flag}: {reason}"),
            MonitorError::Tls(e) => write!(f, "TLS set-up: {e}"),
            MonitorError::Listen { address, reason } => {
                write!(f, "cannot listen on {address}: {reason}")
            }
            MonitorError::Serve { address, reason } => {
                write!(f, "stopped accepting connections on {address}: {reason}")
            }
        }
    }
}

impl std::error::Error for MonitorError {}

/// Why one scrape of etcd failed.
#[derive(Debug)]
pub enum ScrapeError {
    Fetch { error: ClientError, timed_out: bool },
    NotText { url: String, content_type: String },
    Parse { url: String, error: ParseError },
}

impl ScrapeError {
    /// The `reason` label value.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Fetch {
                timed_out: true, ..
            } => "timeout",
            ScrapeError::Fetch { error, .. } => match error {
                ClientError::Status { .. } => "http_status",
                ClientError::TooLarge { .. } => "too_large",
                ClientError::Body { .. } => "invalid_body",
                _ => "connect",
            },
            ScrapeError::NotText { .. } => "invalid_body",
            ScrapeError::Parse { .. } => "parse",
        }
    }
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScrapeError::Fetch {
                error,
                timed_out: true,
            } => write!(f, "timed out: {error}"),
            ScrapeError::Fetch { error, .. } => write!(f, "{error}"),
            ScrapeError::NotText { url, content_type } => {
                write!(f, "{url} answered {content_type:?}, not the text format")
            }
            ScrapeError::Parse { url, error } => write!(f, "{url}: malformed metrics: {error}"),
        }
    }
}

impl std::error::Error for ScrapeError {}

/// One answer for the metrics path: always a valid exposition; `error` says whether etcd
/// could be scraped.
pub struct Scrape {
    /// [`HEAD_ROOM`] bytes kept free for the HTTP response head, then the exposition: the
    /// head is written in front of the body without moving it.
    buffer: String,
    pub error: Option<ScrapeError>,
}

/// Room before an answer's body for its response head (about 130 bytes).
const HEAD_ROOM: usize = 256;

impl Scrape {
    /// The exposition.
    pub fn body(&self) -> &str {
        &self.buffer[HEAD_ROOM..]
    }
}

/// The scrape timeout: the flag, or Prometheus' header minus a margin to answer in, whichever
/// is smaller. An unusable header is ignored.
pub fn effective_timeout(flag: Duration, header: Option<&str>) -> Duration {
    let Some(seconds) = header.and_then(|h| h.trim().parse::<f64>().ok()) else {
        return flag;
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return flag;
    }
    // Leave 10% (at most 0.5 s, like blackbox_exporter's offset) for our own work.
    let margin = (seconds * 0.1).min(0.5);
    let from_header = Duration::from_secs_f64((seconds - margin).min(1e9));
    flag.min(from_header)
}

/// Go's `:9101` means every interface; Rust's resolver needs a host.
pub fn normalize_listen_address(address: &str) -> String {
    if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

#[derive(Default)]
struct Health {
    /// `None` before the first scrape; `Some(None)` when the last one worked.
    last_error: Option<Option<&'static str>>,
    failures_since_ok: u64,
}

#[derive(Default)]
struct VersionCache {
    checked_at: Option<Instant>,
    /// What `/version` said at the last check; `None` when it could not be read.
    from_endpoint: Option<String>,
    gauge_at_check: Option<String>,
}

/// The exporter's state, shared by the serving threads.
pub struct Monitor {
    config: MonitorConfig,
    client: HttpClient,
    errors: [AtomicU64; ERROR_REASONS.len()],
    /// Buffers for etcd's text and our answers, kept between scrapes.
    buffers: Buffers,
    /// The shape of etcd's last exposition, to answer the next one faster (shared by
    /// concurrent scrapes).
    template: Mutex<Arc<Template>>,
    health: Mutex<Health>,
    version: Mutex<VersionCache>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these plain values inconsistent; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Result<Monitor, MonitorError> {
        for (flag, uri) in [
            ("--etcd-metrics-scrape-uri", &config.metrics_uri),
            ("--etcd-version-scrape-uri", &config.version_uri),
        ] {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                return Err(MonitorError::Config {
                    flag,
                    reason: format!("{uri:?} is not an http:// or https:// URL"),
                });
            }
        }
        if !config.metrics_path.starts_with('/') || config.metrics_path == "/healthz" {
            return Err(MonitorError::Config {
                flag: "--metrics-path",
                reason: format!(
                    "{:?} must start with '/' and not be /healthz",
                    config.metrics_path
                ),
            });
        }
        if config.scrape_timeout.is_zero() {
            return Err(MonitorError::Config {
                flag: "--scrape-timeout",
                reason: "must be more than 0".into(),
            });
        }
        let client = HttpClient::new(&config.tls).map_err(MonitorError::Tls)?;
        Ok(Monitor {
            config,
            client,
            errors: Default::default(),
            buffers: Buffers::default(),
            template: Mutex::default(),
            health: Mutex::default(),
            version: Mutex::default(),
        })
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Scrapes etcd once and builds the answer. `prometheus_timeout` is the raw
    /// `X-Prometheus-Scrape-Timeout-Seconds` header, if any.
    pub fn scrape(&self, prometheus_timeout: Option<&str>) -> Scrape {
        let started = Instant::now();
        let timeout = effective_timeout(self.config.scrape_timeout, prometheus_timeout);
        let deadline = started + timeout;
        let fetched = self.fetch_metrics(timeout);
        let mut body = self.buffers.take_string();
        body.extend(std::iter::repeat_n(' ', HEAD_ROOM));
        let result = fetched.and_then(|text| {
            // Room for etcd's families, ours, and the response head (see `respond`).
            body.reserve(text.len() + text.len() / 16 + 4096);
            let answered = self.answer(&text, deadline, &mut body);
            self.buffers.give(text.into_bytes());
            answered
        });
        let error = result.err();
        if let Some(e) = &error {
            body.truncate(HEAD_ROOM);
            if let Some(i) = ERROR_REASONS.iter().position(|r| *r == e.reason()) {
                self.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.note_outcome(error.as_ref());
        self.write_own_metrics(error.is_none(), started.elapsed(), &mut body);
        Scrape {
            buffer: body,
            error,
        }
    }

    /// A buffer of an answer that has been sent, for a later scrape.
    pub fn recycle(&self, buffer: Vec<u8>) {
        self.buffers.give(buffer);
    }

    /// Appends etcd's families, rewritten, and `etcd_version_info` to `body`.
    fn answer(&self, text: &str, deadline: Instant, body: &mut String) -> Result<(), ScrapeError> {
        let template = Arc::clone(&lock(&self.template));
        let gauge = match pass::answer(text, &OWN_FAMILIES, body, &template) {
            Ok(passed) => {
                if let Some(made) = passed.template {
                    *lock(&self.template) = Arc::new(made);
                }
                passed.server_version.map(Cow::into_owned)
            }
            Err(PassError::UseModel(why)) => {
                log::debug!("etcd's metrics have {why}: answering through the full model");
                self.answer_with_model(text, body)?
            }
            Err(PassError::Parse(error)) => {
                return Err(ScrapeError::Parse {
                    url: self.config.metrics_uri.clone(),
                    error,
                })
            }
        };
        if let Some(version) = self.binary_version(gauge, deadline) {
            let mut info = Family::new(
                VERSION_INFO,
                "Etcd server's binary version (1 for the running version).",
                MetricType::Gauge,
            );
            info.push(vec![Label::new("binary_version", version)], 1.0);
            prom::write_family(&info, body);
        }
        Ok(())
    }

    fn fetch_metrics(&self, timeout: Duration) -> Result<String, ScrapeError> {
        let started = Instant::now();
        let url = &self.config.metrics_uri;
        let response = self
            .client
            .get_text_accept(
                url,
                ACCEPT,
                timeout,
                self.config.body_limit,
                self.buffers.take(),
            )
            .map_err(|error| {
                // ureq reports timeouts as transport errors; the clock tells them apart.
                let timed_out = matches!(error, ClientError::Transport { .. })
                    && started.elapsed() + Duration::from_millis(5) >= timeout;
                ScrapeError::Fetch { error, timed_out }
            })?;
        if let Some(ct) = &response.content_type {
            let ct_lower = ct.to_ascii_lowercase();
            if !(ct_lower.starts_with("text/plain") || ct_lower.is_empty()) {
                return Err(ScrapeError::NotText {
                    url: url.clone(),
                    content_type: ct.clone(),
                });
            }
        }
        Ok(response.body)
    }

    /// The answer for what [`pass::answer`] leaves to the model (etcd 3.0's families, split
    /// families, CRLF); returns the `etcd_server_version` gauge's version.
    fn answer_with_model(
        &self,
        text: &str,
        body: &mut String,
    ) -> Result<Option<String>, ScrapeError> {
        let expo = prom::parse(text).map_err(|error| ScrapeError::Parse {
            url: self.config.metrics_uri.clone(),
            error,
        })?;
        let mut expo = rewrite::apply(expo);
        for name in OWN_FAMILIES {
            if expo.remove(name).is_some() {
                log::debug!("etcd exposes {name} itself; answering with ours only");
            }
        }
        prom::write_exposition(&expo, body);
        let gauge = expo
            .family(SERVER_VERSION)
            .and_then(|f| {
                f.samples
                    .iter()
                    .find(|s| s.value.number == 1.0)
                    .or(f.samples.first())
            })
            .and_then(|s| s.label("server_version"))
            .map(str::to_string);
        Ok(gauge)
    }

    /// etcd's binary version: from `/version` (cached, see [`VERSION_REFRESH`]), else from
    /// `gauge`, the `etcd_server_version{server_version}` gauge's (the metrics-only port has
    /// no /version).
    fn binary_version(&self, gauge: Option<String>, deadline: Instant) -> Option<String> {
        {
            let cache = lock(&self.version);
            let fresh = cache
                .checked_at
                .is_some_and(|t| t.elapsed() < VERSION_REFRESH)
                && cache.gauge_at_check == gauge;
            if fresh {
                return cache.from_endpoint.clone().or(gauge);
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return lock(&self.version).from_endpoint.clone().or(gauge);
        }
        let fetched = self.fetch_version(remaining.min(Duration::from_secs(5)));
        let mut cache = lock(&self.version);
        let had_check = cache.checked_at.is_some();
        let was_ok = cache.from_endpoint.is_some();
        match &fetched {
            Ok(v) if !had_check || !was_ok || cache.from_endpoint.as_ref() != Some(v) => {
                log::info!("etcd binary version {v} (from {})", self.config.version_uri)
            }
            Err(e) if !had_check || was_ok => log::warn!(
                "cannot read etcd's version: {e}; using etcd_server_version from its metrics \
                 ({}) until it works",
                gauge.as_deref().unwrap_or("absent too")
            ),
            _ => {}
        }
        cache.checked_at = Some(Instant::now());
        cache.from_endpoint = fetched.ok();
        cache.gauge_at_check = gauge.clone();
        cache.from_endpoint.clone().or(gauge)
    }

    fn fetch_version(&self, timeout: Duration) -> Result<String, String> {
        let url = &self.config.version_uri;
        let text = self
            .client
            .get_text(url, timeout, 1 << 16)
            .map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: invalid JSON: {e}"))?;
        match json.get("etcdserver").and_then(|v| v.as_str()) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("{url}: no \"etcdserver\" in {}", text.trim())),
        }
    }

    /// Logs when the state changes: first scrape, failure, another kind of failure, recovery.
    fn note_outcome(&self, error: Option<&ScrapeError>) {
        if !self.config.log_state_changes {
            return;
        }
        let mut health = lock(&self.health);
        let now = error.map(ScrapeError::reason);
        let before = health.last_error;
        match (before, error) {
            (Some(Some(prev)), Some(e)) if prev == e.reason() => {
                health.failures_since_ok += 1;
                log::debug!("etcd scrape failed again: {e}");
            }
            (_, Some(e)) => {
                health.failures_since_ok += 1;
                log::error!(
                    "cannot scrape etcd: {e} (answering with {UP} 0; logged again only when \
                     this changes)"
                );
            }
            (Some(Some(_)), None) => {
                log::info!(
                    "etcd scrape works again after {} failed scrapes",
                    health.failures_since_ok
                );
                health.failures_since_ok = 0;
            }
            (None, None) => log::info!("scraping etcd metrics from {}", self.config.metrics_uri),
            (Some(None), None) => {}
        }
        health.last_error = Some(now);
    }

    fn write_own_metrics(&self, up: bool, took: Duration, out: &mut String) {
        let mut f = Family::new(
            UP,
            "1 when the last scrape of etcd's metrics succeeded, 0 when it failed.",
            MetricType::Gauge,
        );
        f.push(Vec::new(), if up { 1.0 } else { 0.0 });
        prom::write_family(&f, out);
        let mut f = Family::new(
            SCRAPE_DURATION,
            "How long the last scrape of etcd took, in seconds.",
            MetricType::Gauge,
        );
        f.push(Vec::new(), took.as_secs_f64());
        prom::write_family(&f, out);
        let mut f = Family::new(
            SCRAPE_ERRORS,
            "Failed scrapes of etcd since the monitor started, by reason.",
            MetricType::Counter,
        );
        for (reason, count) in ERROR_REASONS.iter().zip(&self.errors) {
            f.push(
                vec![Label::new("reason", *reason)],
                count.load(Ordering::Relaxed) as f64,
            );
        }
        prom::write_family(&f, out);
    }
}

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
    fn timeout_follows_prometheus_header_minus_a_margin() {
        let flag = Duration::from_secs(15);
        assert_eq!(effective_timeout(flag, None), flag);
        assert_eq!(
            effective_timeout(flag, Some("10")),
            Duration::from_millis(9500)
        );
        assert_eq!(
            effective_timeout(flag, Some("1")),
            Duration::from_millis(900)
        );
        assert_eq!(effective_timeout(flag, Some("60")), flag);
        for bad in ["", "x", "-1", "0", "NaN", "inf"] {
            assert_eq!(effective_timeout(flag, Some(bad)), flag, "{bad:?}");
        }
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

    #[test]
    fn listen_address_go_style() {
        assert_eq!(normalize_listen_address(":9101"), "0.0.0.0:9101");
        assert_eq!(normalize_listen_address("localhost:9101"), "localhost:9101");
    }

    #[test]
    fn config_is_checked() {
        let bad = [
            MonitorConfig {
                metrics_uri: "localhost:2379/metrics".into(),
                ..Default::default()
            },
            MonitorConfig {
                metrics_path: "metrics".into(),
                ..Default::default()
            },
            MonitorConfig {
                metrics_path: "/healthz".into(),
                ..Default::default()
            },
            MonitorConfig {
                scrape_timeout: Duration::ZERO,
                ..Default::default()
            },
            MonitorConfig {
                tls: TlsFiles {
                    cert: Some("/nonexistent.pem".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(Monitor::new(config).is_err());
        }
    }

    #[test]
    fn own_metrics_when_etcd_is_unreachable() {
        // Port 1 on loopback refuses connections: no etcd needed to see the down answer.
        let monitor = Monitor::new(MonitorConfig {
            metrics_uri: "http://127.0.0.1:1/metrics".into(),
            version_uri: "http://127.0.0.1:1/version".into(),
            ..Default::default()
        })
        .unwrap();
        let scrape = monitor.scrape(None);
        assert_eq!(scrape.error.as_ref().unwrap().reason(), "connect");
        let expo = prom::parse(scrape.body()).unwrap();
        let names: Vec<&str> = expo.families.iter().map(|f| f.name.as_ref()).collect();
        assert_eq!(names, [UP, SCRAPE_DURATION, SCRAPE_ERRORS]);
        assert_eq!(expo.family(UP).unwrap().samples[0].value.number, 0.0);
        let errors = expo.family(SCRAPE_ERRORS).unwrap();
        let connect = errors
            .samples
            .iter()
            .find(|s| s.label("reason") == Some("connect"))
            .unwrap();
        assert_eq!(connect.value.number, 1.0);
        let again = monitor.scrape(None);
        let expo = prom::parse(again.body()).unwrap();
        let total: f64 = expo
            .family(SCRAPE_ERRORS)
            .unwrap()
            .samples
            .iter()
            .map(|s| s.value.number)
            .sum();
        assert_eq!(total, 2.0);
    }
}
