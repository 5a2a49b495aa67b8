//! The monitor's threads and memory under loads a node or a client can hand it (run by
//! scripts/bench-monitor.sh): 1000 idle connections; 300 idle connections with only 256 file
//! descriptors; a 300 MiB request header; 8 scrapes at once of a 12 MB and of a 50 MB upstream
//! (a loopback stand-in that answers after 300 ms: no etcd serves that much). After each, one
//! scrape of real etcd must still be answered. Prints figures; asserts nothing.
//!
//! Usage: bench-monitor-loads --monitor PATH --etcd PATH

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use etcdtools::etcd::client::HttpClient;

#[path = "../tests/monitor_support/upstream.rs"]
mod upstream;
use etcdtools::etcd::process::{clean_command, free_ports, EtcdProcess, EtcdSpec};
use upstream::slow_upstream;

struct Monitor {
    child: Child,
    url: String,
}

impl Monitor {
    fn start(bin: &Path, nofile: Option<u32>, metrics: &str, version: &str) -> Monitor {
        let port = free_ports(1).expect("port")[0];
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = clean_command(Path::new("/usr/bin/prlimit"), &[]);
                c.arg(format!("--nofile={n}")).arg("--").arg(bin);
                c
            }
            None => clean_command(bin, &[]),
        };
        cmd.args([
            format!("--listen-address=127.0.0.1:{port}"),
            format!("--etcd-metrics-scrape-uri={metrics}"),
            format!("--etcd-version-scrape-uri={version}"),
            "--log-level=error".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("start the monitor");
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while get(&format!("{url}/healthz")).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "monitor not up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Monitor { child, url }
    }

    fn status(&self, field: &str) -> String {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(path).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "-".into())
    }

    /// Threads, RSS and peak RSS now, and whether it still runs and answers a scrape.
    fn report(&mut self, what: &str, scrape_url: &str) {
        let (threads, rss, hwm) = (
            self.status("Threads"),
            self.status("VmRSS"),
            self.status("VmHWM"),
        );
        let answer = match self.child.try_wait() {
            Ok(Some(status)) => format!("EXITED ({status})"),
            _ => match get(scrape_url) {
                Some(body) if body.contains("etcd_version_monitor_up 1\n") => {
                    "then answers a scrape (up 1)".into()
                }
                Some(_) => "then answers a scrape (up 0)".into(),
                None => "then does NOT answer".into(),
            },
        };
        println!("  {what:<52} threads {threads:>5}, RSS {rss:>10}, peak {hwm:>10}; {answer}");
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent.get(url).call().ok()?;
    resp.body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .ok()
}

fn connections(url: &str, n: usize) -> Vec<TcpStream> {
    let addr = url.trim_start_matches("http://");
    (0..n)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect()
}

fn exposition(bytes: usize) -> Vec<u8> {
    let mut body = b"# HELP big A big family.\n# TYPE big gauge\n".to_vec();
    let mut i = 0u64;
    while body.len() < bytes {
        body.extend_from_slice(format!("big{{n=\"{i:08}\"}} 1\n").as_bytes());
        i += 1;
    }
    body
}

fn concurrent_scrapes(url: &str, n: usize) -> usize {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, url) = (barrier.clone(), url.to_string());
            std::thread::spawn(move || {
                barrier.wait();
                get(&url).is_some()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or(false))
        .filter(|ok| *ok)
        .count()
}

fn main() {
    let mut p = lexopt::Parser::from_env();
    let (mut bin, mut etcd_bin) = (PathBuf::new(), PathBuf::new());
    while let Ok(Some(arg)) = p.next() {
        match arg {
            lexopt::Arg::Long("monitor") => bin = p.value().expect("--monitor PATH").into(),
            lexopt::Arg::Long("etcd") => etcd_bin = p.value().expect("--etcd PATH").into(),
            _ => {
                eprintln!("usage: bench-monitor-loads --monitor PATH --etcd PATH");
                std::process::exit(2)
            }
        }
    }
    let temp = std::env::temp_dir().join(format!("bench-loads-{}", std::process::id()));
    let ports = free_ports(2).expect("ports");
    let spec = EtcdSpec::single(&etcd_bin, "bench", &temp.join("data"), ports[0], ports[1]);
    let mut etcd = EtcdProcess::start(&spec).expect("start etcd");
    etcd.wait_ready(&HttpClient::plain(), Duration::from_secs(30))
        .expect("etcd ready");
    let (metrics, version) = (
        format!("{}/metrics", spec.client_url()),
        format!("{}/version", spec.client_url()),
    );
    println!("monitor under load ({}):", bin.display());

    let mut m = Monitor::start(&bin, None, &metrics, &version);
    let scrape = format!("{}/metrics", m.url);
    m.report("idle", &scrape);
    let held = connections(&m.url, 1000);
    std::thread::sleep(Duration::from_millis(500));
    m.report(&format!("{} idle connections", held.len()), &scrape);
    drop((held, m));

    let mut m = Monitor::start(&bin, Some(256), &metrics, &version);
    let scrape = format!("{}/metrics", m.url);
    let held = connections(&m.url, 300);
    std::thread::sleep(Duration::from_millis(500));
    m.report("--nofile=256, 300 idle connections", &scrape);
    drop((held, m));

    let mut m = Monitor::start(&bin, None, &metrics, &version);
    let scrape = format!("{}/metrics", m.url);
    if let Ok(mut s) = TcpStream::connect(m.url.trim_start_matches("http://")) {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..300 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    m.report("a 300 MiB request header", &scrape);
    drop(m);

    for mb in [12, 50] {
        let (url, fetches) = slow_upstream(exposition(mb << 20), Duration::from_millis(300));
        let mut m = Monitor::start(
            &bin,
            None,
            &format!("{url}/metrics"),
            &format!("{url}/version"),
        );
        let answered = concurrent_scrapes(&format!("{}/metrics", m.url), 8);
        let what = format!(
            "8 scrapes of a {mb} MB upstream ({answered} answered, {} fetches)",
            fetches.load(Ordering::SeqCst)
        );
        // The scrape afterwards goes to the stand-in (up 0 when it is over the body limit).
        let after = format!("{}/metrics", m.url);
        m.report(&what, &after);
    }
    let _ = etcd.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&temp);
}
