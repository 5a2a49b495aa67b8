//! `migrate`: upgrade/downgrade etcd data across versions before etcd starts (drop-in for the
//! Kubernetes etcd image's Go `migrate`). Flags only here; the work is in `etcdtools::migrate`.

use std::process::ExitCode;

use etcdtools::duration::parse_go_duration;
use etcdtools::error::HasKind;
use etcdtools::migrate::config::{bundled_versions, join, resolve, Flags};
use etcdtools::migrate::run::run;

const HELP: &str = "\
Upgrade/downgrade etcd data across multiple versions.

Given a --bin-dir holding etcd-<v>, etcdctl-<v> (and etcdutl-<v> from 3.5) for the
--bundled-versions, a --data-dir with a version.txt and a target version, migrate moves the
data to the target: upgrades step through every bundled minor, a downgrade goes one minor
down by snapshot and restore. Run it before etcd starts.

Usage: migrate [FLAGS]

Flags (env fallback in brackets):
  --name NAME                     member name [ETCD_NAME, else etcd-$ETCD_HOSTNAME, else etcd-$HOSTNAME]
  --port N                        client port of the etcd started during migration
                                  (default 18629, 18631 if the data dir path contains 'event')
  --peer-port N                   peer port for the defaults below (default 2380, 2381 for 'event')
  --listen-peer-urls URLS         [LISTEN_PEER_URLS] (default http://localhost:<peer-port>)
  --initial-advertise-peer-urls URLS
                                  [INITIAL_ADVERTISE_PEER_URLS] (default http://localhost:<peer-port>)
  --listen-client-urls URLS       [LISTEN_CLIENT_URLS] (default http://127.0.0.1:<port>)
  --bin-dir DIR                   where etcd-<v>, etcdctl-<v>, etcdutl-<v> are (default /usr/local/bin)
  --data-dir DIR                  [DATA_DIRECTORY] the etcd data dir
  --bundled-versions LIST         comma-separated versions in --bin-dir (default: all etcd-<v> found there)
  --etcd-data-prefix PREFIX       [ETCD_DATA_PREFIX] (default /registry)
  --ttl-keys-directory DIR        keys leased after etcd2 -> etcd3 (default <etcd-data-prefix>/events)
  --initial-cluster LIST          [INITIAL_CLUSTER] (default <name>=http://localhost:<peer-port>)
  --target-version VERSION        [TARGET_VERSION] e.g. 3.5.1
  --target-storage etcd2|etcd3    [TARGET_STORAGE]
  --etcd-server-extra-args ARGS   [ETCD_CREDS] extra etcd flags, e.g. the peer TLS flags
                                  (shell-style words and quotes; see docs/migrate.md)
  --lock-timeout DURATION         how long to wait for another migrate on the same dir (default 1m)
  --ready-timeout DURATION        how long a started etcd may take to serve (default 2m)
  --log-level LEVEL               error, warn, info (default), debug, trace
  --dry-run                       print the plan (steps, binaries, files), change nothing
  --allow-member-id-change        [ALLOW_MEMBER_ID_CHANGE=true] let a downgrade give the member a
                                  new member ID and cluster ID when --name or its peer URL differ
                                  from the stored ones (refused by default)
  --version                       print the version and exit
  -h, --help                      this help

Env DO_NOT_MOVE_BINARIES=true skips copying etcd-<target>/etcdctl-<target> to etcd/etcdctl.
Exit status: 0 on success; on failure 'Migration failed: <reason>' on stderr and 1 (refused or
failed), 2 (a bad flag or env value), 3 (the data is damaged) or 4 (I/O: permission, no space,
read-only file system).
";

fn parse_args() -> Result<Option<(Flags, log::LevelFilter)>, String> {
    use lexopt::prelude::*;
    let mut flags = Flags::default();
    let mut level = log::LevelFilter::Info;
    let mut parser = lexopt::Parser::from_env();
    let mut want_version = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let string = |p: &mut lexopt::Parser, name: &str| -> Result<Option<String>, String> {
            let v = p.value().map_err(|e| e.to_string())?;
            v.into_string()
                .map(Some)
                .map_err(|v| format!("{name}: not valid UTF-8: {v:?}"))
        };
        match arg {
            Long("name") => flags.name = string(&mut parser, "--name")?,
            Long("port") | Long("peer-port") => {
                let name = if arg == Long("port") {
                    "--port"
                } else {
                    "--peer-port"
                };
                let v = string(&mut parser, name)?.unwrap_or_default();
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("invalid value {v:?} for {name}: not a number"))?;
                if name == "--port" {
                    flags.port = Some(n);
                } else {
                    flags.peer_port = Some(n);
                }
            }
            Long("listen-peer-urls") => {
                flags.listen_peer_urls = string(&mut parser, "--listen-peer-urls")?
            }
            Long("initial-advertise-peer-urls") => {
                flags.initial_advertise_peer_urls =
                    string(&mut parser, "--initial-advertise-peer-urls")?
            }
            Long("listen-client-urls") => {
                flags.listen_client_urls = string(&mut parser, "--listen-client-urls")?
            }
            Long("bin-dir") => flags.bin_dir = string(&mut parser, "--bin-dir")?,
            Long("data-dir") => flags.data_dir = string(&mut parser, "--data-dir")?,
            Long("bundled-versions") => {
                flags.bundled_versions = string(&mut parser, "--bundled-versions")?
            }
            Long("etcd-data-prefix") => {
                flags.etcd_data_prefix = string(&mut parser, "--etcd-data-prefix")?
            }
            Long("ttl-keys-directory") => {
                flags.ttl_keys_directory = string(&mut parser, "--ttl-keys-directory")?
            }
            Long("initial-cluster") => {
                flags.initial_cluster = string(&mut parser, "--initial-cluster")?
            }
            Long("target-version") => {
                flags.target_version = string(&mut parser, "--target-version")?
            }
            Long("target-storage") => {
                flags.target_storage = string(&mut parser, "--target-storage")?
            }
            Long("etcd-server-extra-args") => {
                flags.etcd_server_extra_args = string(&mut parser, "--etcd-server-extra-args")?
            }
            Long("lock-timeout") | Long("ready-timeout") => {
                let name = if arg == Long("lock-timeout") {
                    "--lock-timeout"
                } else {
                    "--ready-timeout"
                };
                let v = string(&mut parser, name)?.unwrap_or_default();
                let d = parse_go_duration(&v)
                    .map_err(|e| format!("invalid value {v:?} for {name}: {e}"))?;
                if name == "--lock-timeout" {
                    flags.lock_timeout = Some(d);
                } else {
                    flags.ready_timeout = Some(d);
                }
            }
            Long("log-level") => {
                let v = string(&mut parser, "--log-level")?.unwrap_or_default();
                level = etcdtools::logging::parse_level(&v)?;
            }
            Long("dry-run") => flags.dry_run = true,
            Long("allow-member-id-change") => flags.allow_member_id_change = true,
            Long("version") => want_version = true,
            Short('h') | Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            _ => return Err(format!("{} (see --help)", arg.unexpected())),
        }
    }
    if want_version {
        print!("{}", etcdtools::build_info::version_text("migrate"));
        println!("bundled etcd: {}", bundled_summary(&flags));
        return Ok(None);
    }
    Ok(Some((flags, level)))
}

/// The etcd versions a run with these flags would use, and where they come from.
fn bundled_summary(flags: &Flags) -> String {
    let (bin_dir, listed) = bundled_versions(flags);
    let where_ = format!("etcd-<version> in {}", bin_dir.display());
    match listed {
        Ok(v) if v.is_empty() => format!("none found ({where_})"),
        Ok(v) => format!("{} ({where_})", join(&v)),
        Err(e) => e.to_string(),
    }
}

fn main() -> ExitCode {
    let (flags, level) = match parse_args() {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Migration failed: {e}");
            return ExitCode::from(2);
        }
    };
    etcdtools::logging::init(level);
    let env = |k: &str| std::env::var(k).ok();
    // A flag or env value that does not resolve is a usage error, like an unknown flag; a
    // --bin-dir that cannot be listed is I/O.
    let cfg = match resolve(flags, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("Migration failed: {e}");
            return ExitCode::from(e.kind().exit_code());
        }
    };
    match run(&cfg) {
        Ok(outcome) => {
            log::info!("Migration finished: {outcome}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Migration failed: {e}");
            ExitCode::from(e.kind().exit_code())
        }
    }
}
