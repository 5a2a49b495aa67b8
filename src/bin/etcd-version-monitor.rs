//! etcd-version-monitor: exports etcd's metrics for Prometheus with etcd 3.0/3.1+ gRPC metric
//! compatibility and etcd's binary version. Flags are parsed here; the work is in
//! `etcdtools::monitor`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use etcdtools::duration::parse_go_duration;
use etcdtools::logging;
use etcdtools::monitor::{raise_open_files_limit, Monitor, MonitorConfig, Server};
use log::LevelFilter;

const USAGE: &str = "\
Usage: etcd-version-monitor [FLAGS]

Serves etcd's Prometheus metrics with 3.0/3.1+ gRPC metric compatibility and
etcd_version_info{binary_version}, plus its own etcd_version_monitor_* metrics.

Flags:
      --listen-address ADDR           address to serve on (default localhost:9101;
                                      \":9101\" means every interface)
      --metrics-path PATH             path of the metrics (default /metrics)
      --etcd-version-scrape-uri URI   etcd's version URL (default http://localhost:2379/version)
      --etcd-metrics-scrape-uri URI   etcd's metrics URL (default http://localhost:2379/metrics)
      --scrape-timeout DURATION       timeout of one scrape of etcd, Go syntax like 500ms, 15s
                                      (default 15s; Prometheus' scrape timeout header lowers it)
      --cacert FILE                   CA bundle (PEM) to verify etcd's https:// certificate
      --cert FILE                     client certificate (PEM) for etcd's https:// endpoints
      --key FILE                      private key (PEM) of --cert
      --max-connections N             most client connections open at once (default 512, lowered
                                      to the open-files limit minus 64); at the cap the longest
                                      idle one is closed
      --once                          scrape once, print the exposition to stdout and exit 0,
                                      or exit 1 with the error when etcd cannot be scraped
      --log-level LEVEL               error, warn, info (default), debug or off (trace: as debug)
  -h, --help                          this help
      --version                       print the version and exit

Also serves /healthz (200 ok). Logs go to stderr. Exit codes: 0 ok, 1 failure, 2 bad usage.
";

struct Args {
    config: MonitorConfig,
    once: bool,
    log_level: LevelFilter,
}

enum Parsed {
    Run(Box<Args>),
    Help,
    Version,
}

fn parse_args() -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut config = MonitorConfig::default();
    let mut once = false;
    let mut log_level = LevelFilter::Info;
    let text = |parser: &mut lexopt::Parser, flag: &str| -> Result<String, String> {
        let value = parser.value().map_err(|e| e.to_string())?;
        value
            .into_string()
            .map_err(|v| format!("{flag}: not valid UTF-8: {v:?}"))
    };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("listen-address") => {
                config.listen_address = text(&mut parser, "--listen-address")?
            }
            Long("metrics-path") => config.metrics_path = text(&mut parser, "--metrics-path")?,
            Long("etcd-version-scrape-uri") => {
                config.version_uri = text(&mut parser, "--etcd-version-scrape-uri")?
            }
            Long("etcd-metrics-scrape-uri") => {
                config.metrics_uri = text(&mut parser, "--etcd-metrics-scrape-uri")?
            }
            Long("scrape-timeout") => {
                let v = text(&mut parser, "--scrape-timeout")?;
                config.scrape_timeout =
                    parse_go_duration(&v).map_err(|e| format!("--scrape-timeout: {e}"))?;
            }
            Long("cacert") => {
                config.tls.ca = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("cert") => {
                config.tls.cert = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("key") => {
                config.tls.key = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("max-connections") => {
                let v = text(&mut parser, "--max-connections")?;
                let n: usize =
                    v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("--max-connections: {v:?} is not a number above 0")
                    })?;
                config.max_connections = Some(n);
            }
            Long("once") => once = true,
            Long("log-level") => {
                log_level = logging::parse_level(&text(&mut parser, "--log-level")?)?
            }
            // glog/klog's flag from the original's pod manifest: logs always go to stderr here.
            Long("logtostderr") | Long("alsologtostderr") => {
                let _ = parser.optional_value();
            }
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("version") => return Ok(Parsed::Version),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if config.tls.cert.is_some() != config.tls.key.is_some() {
        return Err("--cert and --key must be given together".into());
    }
    if once {
        config.log_state_changes = false;
    }
    Ok(Parsed::Run(Box::new(Args {
        config,
        once,
        log_level,
    })))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            print!(
                "{}",
                etcdtools::build_info::version_text("etcd-version-monitor")
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("etcd-version-monitor: {e}\nTry --help.");
            return ExitCode::from(2);
        }
    };
    logging::init(args.log_level);
    let uses_tls = args.config.tls.ca.is_some() || args.config.tls.cert.is_some();
    if uses_tls
        && !args.config.metrics_uri.starts_with("https://")
        && !args.config.version_uri.starts_with("https://")
    {
        log::warn!("--cacert/--cert/--key are given but no scrape URI is https://");
    }
    let monitor = match Monitor::new(args.config) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("etcd-version-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    if args.once {
        let scrape = monitor.scrape(None);
        if let Some(e) = scrape.error {
            eprintln!("etcd-version-monitor: cannot scrape etcd: {e}");
            return ExitCode::FAILURE;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout
            .write_all(scrape.body().as_bytes())
            .and_then(|_| stdout.flush())
        {
            eprintln!("etcd-version-monitor: writing to stdout: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    match raise_open_files_limit() {
        Ok(n) => log::debug!("open files limit: {n}"),
        Err(e) => log::warn!("cannot raise the open files limit: {e}"),
    }
    let server = match Server::start(monitor.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("etcd-version-monitor: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Some(addr) => log::info!("Listening on: {addr}"),
        None => log::info!("Listening on: {}", monitor.config().listen_address),
    }
    match server.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-version-monitor: {e}");
            ExitCode::FAILURE
        }
    }
}
