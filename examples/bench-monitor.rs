//! Benchmark of etcd-version-monitor against one real etcd (run by scripts/bench-monitor.sh):
//! scrape latency through the monitor vs straight from etcd (median, p99), throughput with
//! concurrent clients vs etcd, the monitor's RSS idle and after 1000 scrapes, binary size.
//! Prints figures and ratios; asserts nothing.
//!
//! Usage: bench-monitor --monitor PATH --etcd PATH [--etcd-version V] [--clients N]
//!        [--seconds S] [--samples N] [--extensive]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::{clean_command, free_ports, EtcdProcess, EtcdSpec};

struct Opts {
    monitor: PathBuf,
    etcd: PathBuf,
    clients: usize,
    seconds: u64,
    samples: usize,
    extensive: bool,
}

fn opts() -> Result<Opts, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut o = Opts {
        monitor: PathBuf::new(),
        etcd: PathBuf::new(),
        clients: 4,
        seconds: 5,
        samples: 500,
        extensive: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("monitor") => o.monitor = p.value()?.into(),
            Long("etcd") => o.etcd = p.value()?.into(),
            Long("clients") => o.clients = p.value()?.parse()?,
            Long("seconds") => o.seconds = p.value()?.parse()?,
            Long("samples") => o.samples = p.value()?.parse()?,
            Long("extensive") => o.extensive = true,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One full scrape (body read to the end); returns its wall time.
fn scrape(agent: &ureq::Agent, url: &str) -> Duration {
    let started = Instant::now();
    let mut resp = agent.get(url).call().expect("scrape");
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .expect("body");
    assert!(body.len() > 1000);
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system) of a process so far, from /proc (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Requests per second with `clients` threads hammering `url` for `seconds`, and how many.
fn throughput(url: &str, clients: usize, seconds: u64) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, url) = (stop.clone(), done.clone(), url.to_string());
            std::thread::spawn(move || {
                let a = agent();
                while !stop.load(Ordering::Relaxed) {
                    scrape(&a, &url);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    (n as f64 / started.elapsed().as_secs_f64(), n)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// What one run measured; latencies sorted.
struct Figures {
    body_len: usize,
    direct: Vec<Duration>,
    monitor: Vec<Duration>,
    tp_direct: f64,
    tp_monitor: f64,
    /// CPU milliseconds per scrape.
    etcd_cpu_direct: f64,
    etcd_cpu_via: f64,
    mon_cpu: f64,
    /// KiB.
    rss_idle: u64,
    rss_1000: u64,
    rss_after_load: u64,
    rss_peak: u64,
}

/// Starts etcd in `temp` and gives it a little traffic, so the exposition has non-zero
/// counters as in real life. Returns it and its client URL.
fn start_etcd(o: &Opts, temp: &Path, client_port: u16, peer_port: u16) -> (EtcdProcess, String) {
    let mut spec = EtcdSpec::single(&o.etcd, "bench", &temp.join("data"), client_port, peer_port);
    if o.extensive {
        spec.extra_args.push("--metrics=extensive".into());
    }
    let mut etcd = EtcdProcess::start(&spec).expect("start etcd");
    let client = HttpClient::plain();
    etcd.wait_ready(&client, Duration::from_secs(30))
        .expect("etcd ready");
    for _ in 0..50 {
        client
            .post_json(
                &format!("{}/v3/kv/put", spec.client_url()),
                &serde_json::json!({"key": "YmVuY2g=", "value": "dg=="}),
                Duration::from_secs(5),
            )
            .expect("put");
    }
    (etcd, spec.client_url().to_string())
}

/// Starts the monitor binary on `port` in front of etcd at `client_url`; returns once it
/// answers /healthz.
fn start_monitor(binary: &Path, port: u16, client_url: &str) -> std::process::Child {
    let mut cmd = clean_command(binary, &[]);
    cmd.args([
        format!("--listen-address=127.0.0.1:{port}"),
        format!("--etcd-metrics-scrape-uri={client_url}/metrics"),
        format!("--etcd-version-scrape-uri={client_url}/version"),
        "--log-level=warn".into(),
    ])
    .stdout(Stdio::null());
    let monitor = cmd.spawn().expect("start monitor");
    let health = format!("http://127.0.0.1:{port}/healthz");
    let a = agent();
    let started = Instant::now();
    while a.get(&health).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "monitor not up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    monitor
}

/// Latency (interleaved sequential scrapes, so both see the same conditions), RSS, then
/// throughput and CPU per scrape of etcd `etcd_pid` straight and through monitor `pid`.
fn measure(o: &Opts, etcd_pid: u32, pid: u32, direct: &str, through: &str) -> Figures {
    std::thread::sleep(Duration::from_millis(200));
    let rss_idle = rss_kib(pid, "VmRSS:");
    let a = agent();
    let body_len = a
        .get(direct)
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap()
        .len();
    let mut monitor_scrapes = 1;
    for _ in 0..50 {
        scrape(&a, direct);
        scrape(&a, through);
        monitor_scrapes += 1;
    }
    let (mut d, mut m) = (Vec::new(), Vec::new());
    for _ in 0..o.samples {
        d.push(scrape(&a, direct));
        m.push(scrape(&a, through));
        monitor_scrapes += 1;
    }
    while monitor_scrapes < 1000 {
        scrape(&a, through);
        monitor_scrapes += 1;
    }
    let rss_1000 = rss_kib(pid, "VmRSS:");
    d.sort();
    m.sort();

    let etcd_cpu0 = cpu_time(etcd_pid);
    let (tp_direct, n_direct) = throughput(direct, o.clients, o.seconds);
    let (etcd_cpu1, mon_cpu1) = (cpu_time(etcd_pid), cpu_time(pid));
    let (tp_monitor, n_monitor) = throughput(through, o.clients, o.seconds);
    let (etcd_cpu2, mon_cpu2) = (cpu_time(etcd_pid), cpu_time(pid));
    let per = |d: Duration, n: u64| ms(d) / n.max(1) as f64;
    Figures {
        body_len,
        direct: d,
        monitor: m,
        tp_direct,
        tp_monitor,
        etcd_cpu_direct: per(etcd_cpu1 - etcd_cpu0, n_direct),
        etcd_cpu_via: per(etcd_cpu2 - etcd_cpu1, n_monitor),
        mon_cpu: per(mon_cpu2 - mon_cpu1, n_monitor),
        rss_idle,
        rss_1000,
        rss_after_load: rss_kib(pid, "VmRSS:"),
        rss_peak: rss_kib(pid, "VmHWM:"),
    }
}

fn main() {
    let o = match opts() {
        Ok(o) if !o.monitor.as_os_str().is_empty() && !o.etcd.as_os_str().is_empty() => o,
        Ok(_) => {
            eprintln!("usage: bench-monitor --monitor PATH --etcd PATH [...]");
            std::process::exit(2)
        }
        Err(e) => {
            eprintln!("bench-monitor: {e}");
            std::process::exit(2)
        }
    };
    let temp = std::env::temp_dir().join(format!("bench-monitor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    let ports = free_ports(3).expect("ports");
    let (etcd, client_url) = start_etcd(&o, &temp, ports[0], ports[1]);
    let mut monitor = start_monitor(&o.monitor, ports[2], &client_url);
    let figures = measure(
        &o,
        etcd.pid().unwrap_or(0),
        monitor.id(),
        &format!("{client_url}/metrics"),
        &format!("http://127.0.0.1:{}/metrics", ports[2]),
    );
    let _ = monitor.kill();
    let _ = monitor.wait();
    let _ = etcd.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&temp);
    report(&o, &figures);
}

fn report(o: &Opts, f: &Figures) {
    let (d50, d99, m50, m99) = (
        percentile(&f.direct, 0.5),
        percentile(&f.direct, 0.99),
        percentile(&f.monitor, 0.5),
        percentile(&f.monitor, 0.99),
    );
    let size = std::fs::metadata(&o.monitor).map(|m| m.len()).unwrap_or(0);
    let lat_ratio = m50.as_secs_f64() / d50.as_secs_f64();
    let added = ms(m50) - ms(d50);
    let tp_ratio = f.tp_monitor / f.tp_direct;
    println!(
        "etcd {} ({}), /metrics body {} bytes, {} sequential samples each, {} clients x {} s",
        etcd_version(&o.etcd),
        if o.extensive { "extensive" } else { "basic" },
        f.body_len,
        o.samples,
        o.clients,
        o.seconds
    );
    println!(
        "latency median: direct {:.3} ms, monitor {:.3} ms, added {:.3} ms, ratio {:.2}  (target: added < 1 ms, ratio <= 1.3: {})",
        ms(d50),
        ms(m50),
        added,
        lat_ratio,
        verdict(added < 1.0 && lat_ratio <= 1.3)
    );
    println!(
        "latency p99:    direct {:.3} ms, monitor {:.3} ms, ratio {:.2}",
        ms(d99),
        ms(m99),
        m99.as_secs_f64() / d99.as_secs_f64()
    );
    println!(
        "throughput:     direct {:.0} req/s, monitor {:.0} req/s, ratio {:.2}  (target >= 0.80: {})",
        f.tp_direct,
        f.tp_monitor,
        tp_ratio,
        verdict(tp_ratio >= 0.8)
    );
    println!(
        "CPU per scrape: etcd {:.2} ms (direct) / {:.2} ms (via monitor), monitor {:.2} ms ({:.0}% of etcd's)",
        f.etcd_cpu_direct,
        f.etcd_cpu_via,
        f.mon_cpu,
        100.0 * f.mon_cpu / f.etcd_cpu_via.max(1e-9)
    );
    println!(
        "monitor RSS:    idle {:.1} MB, after 1000 scrapes {:.1} MB, after the throughput run {:.1} MB, peak {:.1} MB  (target <= 5 MB: {})",
        f.rss_idle as f64 / 1024.0,
        f.rss_1000 as f64 / 1024.0,
        f.rss_after_load as f64 / 1024.0,
        f.rss_peak as f64 / 1024.0,
        verdict(f.rss_1000 <= 5 * 1024)
    );
    println!(
        "binary:         {} {:.2} MB  (target <= 3 MB: {})",
        o.monitor.display(),
        size as f64 / 1e6,
        verdict(size <= 3_000_000)
    );
    println!(
        "Go original (issue 2, same kind of machine): ~10 ms added, 107 vs 683 req/s, RSS 10/16 MB, 9 MB binary"
    );
}

fn etcd_version(bin: &Path) -> String {
    bin.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("etcd-"))
        .unwrap_or("?")
        .to_string()
}
