//! The real consumer: a Prometheus server (Debian's `prometheus` 2.x binary, our config,
//! loopback only, storage in a temp dir) scrapes the monitor in front of a real etcd 3.5.1;
//! its HTTP API must then show the target up, etcd_version_info and the rewritten
//! etcd_grpc_requests_total with the Put count the test made.
mod common;
mod monitor_support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use etcdtools::etcd::process::{clean_command, free_ports};
use monitor_support::*;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Prometheus as a child; killed (and reaped) on drop, also when the test fails.
struct PrometheusServer {
    child: Child,
    api: String,
}

impl PrometheusServer {
    fn start(dir: &Path, target: &str) -> PrometheusServer {
        let port = free_ports(1).unwrap()[0];
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: etcd-version-monitor\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let mut cmd = clean_command(Path::new(PROMETHEUS), &[]);
        cmd.args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let child = cmd
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/setup.sh installs it)");
        PrometheusServer {
            child,
            api: format!("http://127.0.0.1:{port}/api/v1"),
        }
    }

    /// The instant vector for `query`, as (labels, value) pairs; empty while nothing matches.
    fn query(&self, query: &str) -> Vec<(serde_json::Value, String)> {
        let url = format!("{}/query?query={}", self.api, percent_encode(query));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let Ok(mut resp) = agent.get(&url).call() else {
            return Vec::new(); // not listening yet
        };
        let Ok(body) = resp.body_mut().read_to_string() else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .map(|r| {
                        (
                            r["metric"].clone(),
                            r["value"][1].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `query` until `accept` likes the answer (Prometheus needs a scrape or two).
    fn wait_for(
        &mut self,
        query: &str,
        accept: impl Fn(&[(serde_json::Value, String)]) -> bool,
    ) -> Vec<(serde_json::Value, String)> {
        let started = Instant::now();
        loop {
            let result = self.query(query);
            if accept(&result) {
                return result;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "prometheus never answered {query} as expected; last: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_monitor() {
    let etcd = TestEtcd::start(V3_5_1, &["--metrics=extensive"]);
    let load = grpc_load(&etcd.client_url, &etcdctl_bin(V3_5_1), 7);
    let monitor = BinaryMonitor::start(&[
        &format!("--etcd-metrics-scrape-uri={}/metrics", etcd.client_url),
        &format!("--etcd-version-scrape-uri={}/version", etcd.client_url),
    ]);
    let temp = TempDir::new("prometheus");
    let target = monitor.url.trim_start_matches("http://").to_string();
    let mut prom = PrometheusServer::start(temp.path(), &target);

    let up = prom.wait_for("up{job=\"etcd-version-monitor\"}", |r| {
        r.len() == 1 && r[0].1 == "1"
    });
    assert_eq!(up[0].0["instance"], target.as_str());
    prom.wait_for("etcd_version_monitor_up", |r| r.len() == 1 && r[0].1 == "1");
    let info = prom.wait_for("etcd_version_info", |r| !r.is_empty());
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["binary_version"], "3.5.1");
    assert_eq!(info[0].1, "1");

    let puts = prom.wait_for(
        "etcd_grpc_requests_total{method=\"Put\",service=\"etcdserverpb.KV\"}",
        |r| !r.is_empty(),
    );
    assert_eq!(puts[0].1, load.puts.to_string());
    // The 3.0-style series carry method/service only (plus Prometheus' job/instance).
    let mut label_names: Vec<&str> = puts[0]
        .0
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    label_names.sort();
    assert_eq!(
        label_names,
        ["__name__", "instance", "job", "method", "service"]
    );
    // And the 3.1+ histogram passes through with its grpc_type.
    let hist = prom.wait_for(
        "grpc_server_handling_seconds_count{grpc_method=\"Put\",grpc_type=\"unary\"}",
        |r| !r.is_empty(),
    );
    assert_eq!(hist[0].1, load.puts.to_string());
    // Prometheus saw no sample it had to drop (duplicates, out-of-order, bad lines).
    let bad = prom.query("scrape_samples_post_metric_relabeling - scrape_samples_scraped");
    assert!(bad.iter().all(|(_, v)| v == "0"), "{bad:?}");
}
