//! Helpers for the monitor's integration tests: the monitor in-process or as the real binary,
//! HTTP GETs, gRPC load on a real etcd, promtool, and an exposition reader that shares no code
//! with `etcdtools::prom` (so checks against etcd's own output are independent).
#![allow(dead_code)]

pub mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{clean_command, free_ports, run_tool};
use etcdtools::monitor::{Monitor, MonitorConfig, Server};

pub const MONITOR_BIN: &str = env!("CARGO_BIN_EXE_etcd-version-monitor");

/// The monitor's library server on a free loopback port.
pub struct InProcess {
    pub server: Option<Server>,
    pub url: String,
}

impl InProcess {
    pub fn start(config: MonitorConfig) -> InProcess {
        let config = MonitorConfig {
            listen_address: "127.0.0.1:0".into(),
            ..config
        };
        let monitor = Arc::new(Monitor::new(config).expect("monitor config"));
        let server = Server::start(monitor).expect("listen");
        let url = format!("http://{}", server.local_addr().expect("an IP address"));
        InProcess {
            server: Some(server),
            url,
        }
    }

    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.url)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

pub fn config_for(metrics_uri: &str, version_uri: &str) -> MonitorConfig {
    MonitorConfig {
        metrics_uri: metrics_uri.into(),
        version_uri: version_uri.into(),
        ..MonitorConfig::default()
    }
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub took: Duration,
}

pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let started = Instant::now();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .unwrap();
    Answer {
        status,
        content_type,
        body,
        took: started.elapsed(),
    }
}

/// etcd's own /metrics text.
pub fn etcd_metrics(url: &str) -> String {
    let a = http_get(url, &[]);
    assert_eq!(a.status, 200, "{url}: {}", a.body);
    a.body
}

/// The real binary, serving on a free loopback port, its stderr collected. Killed on drop.
pub struct BinaryMonitor {
    child: Option<Child>,
    pub url: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl BinaryMonitor {
    pub fn start(args: &[&str]) -> BinaryMonitor {
        Self::start_under(&[], args)
    }

    /// The binary run by `wrapper` (e.g. `["prlimit", "--nofile=256", "--"]`, which execs it:
    /// the child's pid is the monitor's).
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> BinaryMonitor {
        let port = free_ports(1).unwrap()[0];
        let mut cmd = match wrapper.split_first() {
            None => clean_command(Path::new(MONITOR_BIN), &[]),
            Some((program, rest)) => {
                let mut c = clean_command(Path::new(program), &[]);
                c.args(rest).arg(MONITOR_BIN);
                c
            }
        };
        cmd.arg(format!("--listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start etcd-version-monitor");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[monitor] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(1)))
                .build()
                .into();
            if agent.get(&format!("{url}/healthz")).call().is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("monitor exited: {status}: {:?}", stderr.lock().unwrap());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "monitor not up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BinaryMonitor {
            child: Some(child),
            url,
            stderr,
        }
    }

    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The process still runs (no exit, no abort).
    pub fn assert_running(&mut self) {
        let status = self.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            status.is_none(),
            "monitor exited: {status:?}: {:?}",
            self.stderr.lock().unwrap()
        );
    }

    /// A field of /proc/PID/status (`Threads`, `VmHWM`, ...), as its number.
    pub fn status_field(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Like [`Self::log_lines_containing`], after waiting (up to 5 s) for at least one: the
    /// reader thread may not have read a line the monitor wrote before answering.
    pub fn logged(&self, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log_lines_containing(needle) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log_lines_containing(needle)
    }

    pub fn log_lines_containing(&self, needle: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for BinaryMonitor {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An exposition read by splitting lines: families from `# TYPE`, HELP lines, and series
/// (`name{labels}` exactly as written) with their values.
#[derive(Debug)]
pub struct Plain {
    pub types: BTreeMap<String, String>,
    pub help_lines: BTreeSet<String>,
    pub series: BTreeMap<String, f64>,
}

pub fn plain(text: &str) -> Plain {
    let mut p = Plain {
        types: BTreeMap::new(),
        help_lines: BTreeSet::new(),
        series: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            p.types.insert(name.into(), kind.into());
        } else if line.starts_with("# HELP ") {
            p.help_lines.insert(line.into());
        } else if !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.rsplit_once(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            assert!(
                p.series.insert(key.into(), value).is_none(),
                "series twice: {key}"
            );
        }
    }
    p
}

/// The family a series key belongs to, given the TYPE'd names.
pub fn family_of<'a>(key: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let name = key.split('{').next().unwrap();
    if let Some((n, _)) = types.get_key_value(name) {
        return Some(n);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((n, _)) = types.get_key_value(base) {
                return Some(n);
            }
        }
    }
    None
}

/// Unary `grpc_server_handled_total` summed per (method, service), by splitting lines.
pub fn unary_sums(text: &str) -> BTreeMap<(String, String), f64> {
    let mut sums = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("grpc_server_handled_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let get = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap()
        };
        if get("grpc_type") == "unary" {
            *sums
                .entry((get("grpc_method"), get("grpc_service")))
                .or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    sums
}

/// `etcd_grpc_requests_total` series of a monitor answer, per (method, service).
pub fn legacy_requests(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("etcd_grpc_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let get = |key: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap()
        };
        out.insert(
            (get("method"), get("service")),
            value.parse::<f64>().unwrap(),
        );
    }
    out
}

/// `promtool check metrics` on `text`: (exit code, lint warnings, error lines). This promtool
/// (2.42) prints lint warnings on stderr when reading stdin; errors start with "error".
pub fn promtool(text: &str) -> (i32, Vec<String>, Vec<String>) {
    let mut child = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (errors, lint): (Vec<String>, Vec<String>) = all
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .partition(|l| l.to_lowercase().starts_with("error"));
    (out.status.code().unwrap_or(-1), lint, errors)
}

/// Checks our exposition with promtool: no errors, and every lint warning also appears for
/// etcd's own exposition (so it comes from etcd). Returns etcd's warnings for the report.
pub fn promtool_clean(ours: &str, etcds: &str) -> Vec<String> {
    let (code, lint, errors) = promtool(ours);
    assert!(
        (code == 0 || code == 3) && errors.is_empty(),
        "promtool failed ({code}): {errors:?}"
    );
    let (_, etcd_lint, _) = promtool(etcds);
    for line in &lint {
        assert!(
            etcd_lint.contains(line),
            "lint warning not from etcd: {line}"
        );
    }
    etcd_lint
}

pub fn b64(data: &[u8]) -> String {
    etcdtools::base64::encode(data)
}

/// What [`grpc_load`] did, for exact checks.
pub struct Load {
    pub puts: u64,
    pub ranges_at_least: u64,
}

/// Unary gRPC calls on etcd through the JSON gateway and etcdctl: puts, ranges, a txn,
/// deletes, leases (one revoke of an unknown lease: NotFound), compactions (one repeated:
/// OutOfRange). Every Put is counted.
pub fn grpc_load(client_url: &str, etcdctl: &Path, gateway_puts: u64) -> Load {
    let c = HttpClient::plain();
    let t = Duration::from_secs(10);
    // etcd 3.3 serves its gateway under /v3beta only.
    let probe = serde_json::json!({"key": b64(b"load/0")});
    let prefix = match c.post_json(&format!("{client_url}/v3/kv/range"), &probe, t) {
        Err(etcdtools::etcd::client::ClientError::Status { status: 404, .. }) => "v3beta",
        _ => "v3",
    };
    let post = |path: &str, body: serde_json::Value| {
        c.post_json(&format!("{client_url}/{prefix}/{path}"), &body, t)
    };
    for i in 0..gateway_puts {
        post(
            "kv/put",
            serde_json::json!({"key": b64(format!("load/{i}").as_bytes()), "value": b64(b"v")}),
        )
        .unwrap();
    }
    for i in 0..5 {
        post(
            "kv/range",
            serde_json::json!({"key": b64(format!("load/{i}").as_bytes())}),
        )
        .unwrap();
    }
    post("kv/txn", serde_json::json!({
        "compare": [{"key": b64(b"load/0"), "result": "EQUAL", "target": "VALUE", "value": b64(b"v")}],
        "success": [{"request_range": {"key": b64(b"load/0")}}],
    }))
    .unwrap();
    post("kv/deleterange", serde_json::json!({"key": b64(b"load/1")})).unwrap();
    let lease = post("lease/grant", serde_json::json!({"TTL": 60})).unwrap();
    let id = lease["ID"].as_str().unwrap().to_string();
    post("kv/lease/revoke", serde_json::json!({"ID": id})).unwrap();
    assert!(post("kv/lease/revoke", serde_json::json!({"ID": "12345"})).is_err());
    let status = post("kv/range", serde_json::json!({"key": b64(b"load/0")})).unwrap();
    let rev = status["header"]["revision"].as_str().unwrap().to_string();
    post("kv/compaction", serde_json::json!({"revision": rev})).unwrap();
    assert!(post("kv/compaction", serde_json::json!({"revision": rev})).is_err());
    // etcdctl speaks gRPC directly (not through the gateway).
    let endpoint = client_url.to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--endpoints".to_string(), endpoint.clone()];
        all.extend(args.iter().map(|s| s.to_string()));
        run_tool(etcdctl, &all, &[("ETCDCTL_API", "3")], t).unwrap()
    };
    ctl(&["put", "load/ctl", "x"]);
    ctl(&["get", "--prefix", "load/"]);
    Load {
        puts: gateway_puts + 1,
        // The probe above is one more Range.
        ranges_at_least: 5 + 1 + 1 + 1,
    }
}
