//! rollback2: convert a stopped etcd 3.x data dir back into an etcd 2.x data dir.
//! Flags only; the work is `etcdtools::rollback::rollback_data_dir`.

use etcdtools::duration::parse_go_duration;
use etcdtools::error::HasKind;
use etcdtools::rollback::convert::TargetVersion;
use etcdtools::rollback::{rollback_data_dir, RollbackOptions};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
Usage: rollback2 --data-dir DIR [--ttl 1h] [--target-version 2.2.1|2.3.7] [--dry-run] [--lossy]

Converts a stopped etcd 3.x data dir (v3 keys in member/snap/db) into an etcd 2.x data dir
(a v2 store snapshot and a fresh WAL). The original member/ and version.txt are kept in
DIR/.rollback.backup.
Run it on every member.

  --data-dir DIR          the etcd data dir (required)
  --ttl DURATION          expiry for keys that had a lease, Go syntax (default 1h)
  --target-version V      2.2.1 (default; writes cluster version 2.2.0) or 2.3.7 (2.3.0)
  --dry-run               check and read everything, print the plan, change nothing
  --lossy                 store values that are not UTF-8 with U+FFFD replacements
                          (default: refuse and list them)
  -h, --help              this help
  --version               print the version

Exit status: 0 done, 1 refused, 2 bad flags, 3 the data is damaged, 4 I/O error
(permission, no space, read-only file system).
";

struct Args {
    data_dir: PathBuf,
    opts: RollbackOptions,
}

fn parse() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut data_dir = None;
    let mut opts = RollbackOptions::default();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("data-dir") => {
                data_dir = Some(PathBuf::from(p.value().map_err(|e| e.to_string())?))
            }
            Long("ttl") => {
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|_| "--ttl: not UTF-8".to_string())?;
                opts.ttl = parse_go_duration(&v).map_err(|e| format!("--ttl {v:?}: {e}"))?;
                if opts.ttl.is_zero() {
                    return Err(format!("--ttl {v:?}: must be positive"));
                }
            }
            Long("target-version") => {
                let v = p
                    .value()
                    .map_err(|e| e.to_string())?
                    .string()
                    .map_err(|_| "--target-version: not UTF-8".to_string())?;
                opts.target = TargetVersion::parse(&v)
                    .ok_or_else(|| format!("--target-version {v:?}: must be 2.2.1 or 2.3.7"))?;
            }
            Long("dry-run") => opts.dry_run = true,
            Long("lossy") => opts.lossy = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(None);
            }
            Long("version") => {
                print!("{}", etcdtools::build_info::version_text("rollback2"));
                return Ok(None);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let data_dir = data_dir.ok_or("need to set --data-dir")?;
    if data_dir.as_os_str().is_empty() {
        return Err("--data-dir is empty".into());
    }
    Ok(Some(Args { data_dir, opts }))
}

fn main() -> ExitCode {
    etcdtools::logging::init(log::LevelFilter::Warn);
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollback2: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = etcdtools::migrate::preflight::check_not_member_dir(&args.data_dir) {
        eprintln!("rollback2: error: {e}");
        return ExitCode::FAILURE;
    }
    if !args.opts.dry_run {
        println!(
            "Rolling {} back to etcd {}",
            args.data_dir.display(),
            args.opts.target.name()
        );
    }
    match rollback_data_dir(&args.data_dir, &args.opts) {
        Ok(report) => {
            println!("{report}");
            if report.dry_run {
                println!("Dry run: nothing was changed");
            } else {
                println!("Finished successfully");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollback2: error: {e}");
            ExitCode::from(e.kind().exit_code())
        }
    }
}
