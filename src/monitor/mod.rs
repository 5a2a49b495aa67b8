//! `etcd-version-monitor`: a Prometheus exporter in front of etcd's `/metrics`.
//!
//! Each scrape of the metrics path fetches etcd's metrics fresh, checks them strictly,
//! applies the Go original's rewrite rules in one pass over the text ([`crate::prom::pass`],
//! replaying the last scrape's template), and answers with every etcd family unchanged plus
//! `etcd_version_info` and the monitor's own metrics. When etcd is down or answers garbage the
//! answer is still 200 with `etcd_version_monitor_up 0`, so Prometheus keeps the target's `up`
//! for the monitor and this gauge for etcd; the error is logged once per change of state, not
//! once per scrape. The HTTP protocol is in `http.rs`, sockets and threads in `server.rs`;
//! `buffers.rs` keeps body buffers between scrapes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod buffers;
mod http;
mod server;

pub use http::{route, Route};
pub use server::{
    raise_open_files_limit, Server, DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT, HEAD_TIMEOUT,
    MAX_REQUEST_HEAD,
};

use crate::build_info;
use crate::etcd::client::{ClientError, HttpClient, TlsFiles};
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
/// Most bytes read from etcd per scrape (a fresh etcd serves 150 to 250 KB); more is
/// `too_large`. With one fetch at a time this bounds a scrape's memory.
pub const DEFAULT_BODY_LIMIT: u64 = 16 << 20;
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
pub const BUILD_INFO: &str = "etcd_version_monitor_build_info";
const OWN_FAMILIES: [&str; 5] = [VERSION_INFO, UP, SCRAPE_DURATION, SCRAPE_ERRORS, BUILD_INFO];

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
    /// Most connections open at once; `None`: [`DEFAULT_MAX_CONNECTIONS`], lowered to what the
    /// open-files limit leaves.
    pub max_connections: Option<usize>,
    /// How long a request head may take from its first byte ([`HEAD_TIMEOUT`]).
    pub head_timeout: Duration,
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
            max_connections: None,
            head_timeout: HEAD_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            log_state_changes: true,
        }
    }
}

/// Bad configuration or a listener that cannot be opened. The socket errors keep the OS's
/// error; `during` names the step when it is not the listening socket itself.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{flag}: {reason}")]
    Config { flag: &'static str, reason: String },
    #[error("TLS set-up: {0}")]
    Tls(#[source] ClientError),
    #[error("cannot listen on {address}: {during}{source}")]
    Listen {
        address: String,
        during: &'static str,
        #[source]
        source: io::Error,
    },
    /// The server stopped accepting connections.
    #[error("stopped accepting connections on {address}: {during}{source}")]
    Serve {
        address: String,
        during: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Why one scrape of etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{}{error}", if *timed_out { "timed out: " } else { "" })]
    Fetch {
        #[source]
        error: ClientError,
        timed_out: bool,
    },
    #[error("{url} answered {content_type:?}, not the text format")]
    NotText { url: String, content_type: String },
    #[error("{url}: malformed metrics: {error}")]
    Parse {
        url: String,
        #[source]
        error: ParseError,
    },
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

/// One answer for the metrics path: always a valid exposition; `error` says whether etcd
/// could be scraped.
pub struct Scrape {
    pub(crate) buffer: String,
    pub error: Option<ScrapeError>,
}

impl Scrape {
    /// The exposition.
    pub fn body(&self) -> &str {
        &self.buffer
    }
}

/// A scrape of etcd in progress, which requests arriving meanwhile wait for and share.
#[derive(Default)]
struct Flight {
    answer: Mutex<Option<Arc<Scrape>>>,
    done: Condvar,
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
    in_flight: Mutex<Option<Arc<Flight>>>,
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
            in_flight: Mutex::default(),
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
        let result = fetched.and_then(|text| {
            // Room for etcd's families, ours, and the response head (see `respond`).
            body.reserve(text.len() + text.len() / 16 + 4096);
            let answered = self.answer(&text, deadline, &mut body);
            self.buffers.give(text.into_bytes());
            answered
        });
        let error = result.err();
        if let Some(e) = &error {
            body.clear();
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

    /// The answer of the scrape of etcd in progress, or of a new one when none is: requests
    /// arriving together share one fetch from etcd (and one answer in memory), so at most one
    /// scrape of etcd runs at a time whatever the number of clients.
    pub fn scrape_shared(&self, prometheus_timeout: Option<&str>) -> Arc<Scrape> {
        let (flight, leads) = {
            let mut slot = lock(&self.in_flight);
            match &*slot {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(Flight::default());
                    *slot = Some(Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if leads {
            let answer = Arc::new(self.scrape(prometheus_timeout));
            *lock(&self.in_flight) = None;
            *lock(&flight.answer) = Some(Arc::clone(&answer));
            flight.done.notify_all();
            return answer;
        }
        let mut answer = lock(&flight.answer);
        loop {
            if let Some(a) = &*answer {
                return Arc::clone(a);
            }
            answer = flight.done.wait(answer).unwrap_or_else(|e| e.into_inner());
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
        let mut f = Family::new(
            BUILD_INFO,
            "1, labelled by the version and git commit etcd-version-monitor was built from.",
            MetricType::Gauge,
        );
        f.push(
            vec![
                Label::new("version", build_info::VERSION),
                Label::new("revision", build_info::REVISION),
            ],
            1.0,
        );
        prom::write_family(&f, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_words_and_the_os_error() {
        let listen = MonitorError::Listen {
            address: "127.0.0.1:9101".into(),
            during: "socket options: ",
            source: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        assert_eq!(
            listen.to_string(),
            "cannot listen on 127.0.0.1:9101: socket options: Address already in use (os error 98)"
        );
        let source = std::error::Error::source(&listen).unwrap();
        let os = source.downcast_ref::<io::Error>().unwrap().raw_os_error();
        assert_eq!(os, Some(libc::EADDRINUSE));
        let serve = MonitorError::Serve {
            address: "[::]:9101".into(),
            during: "",
            source: io::Error::from_raw_os_error(libc::EBADF),
        };
        assert_eq!(
            serve.to_string(),
            "stopped accepting connections on [::]:9101: Bad file descriptor (os error 9)"
        );
        let fetch = |timed_out| ScrapeError::Fetch {
            error: ClientError::TooLarge {
                url: "http://e/metrics".into(),
                limit: 10,
            },
            timed_out,
        };
        let body = "http://e/metrics: response body larger than 10 bytes";
        assert_eq!(fetch(false).to_string(), body);
        assert_eq!(fetch(true).to_string(), format!("timed out: {body}"));
        let parse = ScrapeError::Parse {
            url: "http://e/metrics".into(),
            error: ParseError::at(3, "x{", "unexpected end".into()),
        };
        assert_eq!(
            parse.to_string(),
            "http://e/metrics: malformed metrics: line 3: unexpected end (in \"x{\")"
        );
        assert_eq!(
            ParseError::at(1, "", "empty".into()).to_string(),
            "line 1: empty"
        );
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
        assert_eq!(names, [UP, SCRAPE_DURATION, SCRAPE_ERRORS, BUILD_INFO]);
        assert_eq!(expo.family(UP).unwrap().samples[0].value.number, 0.0);
        let errors = expo.family(SCRAPE_ERRORS).unwrap();
        let connect = errors
            .samples
            .iter()
            .find(|s| s.label("reason") == Some("connect"))
            .unwrap();
        assert_eq!(connect.value.number, 1.0);
        let build = &expo.family(BUILD_INFO).unwrap().samples[0];
        assert_eq!(build.label("version"), Some(build_info::VERSION));
        assert_eq!(build.label("revision"), Some(build_info::REVISION));
        assert_eq!(build.value.number, 1.0);
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
