//! etcd-inspect: read an etcd data dir without running etcd. See docs/inspect.md.
//!
//! Exit codes (etcdtools::error::Kind): 0 ok (for `check`: no problems), 1 refused (etcd holds
//! the db), 2 usage error, 3 the data is damaged (`check`: problems found), 4 I/O error
//! (permission, a file the OS will not open).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use etcdtools::error::{HasKind, Kind};
use etcdtools::inspect::db::DbOptions;
use etcdtools::inspect::{self, InspectError};
use etcdtools::storage::member::Member;

const USAGE: &str = "\
usage: etcd-inspect <command> <data-dir> [options]

commands:
  wal <data-dir>       WAL metadata, HardState and every entry after the snapshot etcd uses
                         --all           every entry from index 0 (needs the first segment)
  db <data-dir|db>     live keys at the latest revision (like etcdctl get --prefix '')
                         --revisions     every revision, tombstones included
                         --bucket NAME   dump one bbolt bucket raw
  snap <data-dir>      newest usable snapshot: metadata and its v2 store
  version <data-dir>   what the data is: version.txt, storage, cluster/storage version,
                       last index/term, members
  check <data-dir>     integrity of WAL, snap files and db; exit 3 with each problem

options:
  --json               one JSON object per line (bytes as base64)
  --wal-dir DIR        WAL directory when etcd ran with --wal-dir
  -h, --help           this help
  --version            print the version

exit status: 0 ok, 1 refused (etcd holds the db), 2 usage, 3 damaged data (check: problems
found), 4 I/O error (permission, missing file)
";

struct Args {
    command: String,
    path: PathBuf,
    json: bool,
    wal_dir: Option<PathBuf>,
    bucket: Option<String>,
    revisions: bool,
    all: bool,
}

fn parse() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut positional: Vec<String> = Vec::new();
    let (mut json, mut revisions, mut all) = (false, false, false);
    let (mut wal_dir, mut bucket) = (None, None);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("json") => json = true,
            Long("revisions") => revisions = true,
            Long("all") => all = true,
            Long("wal-dir") => {
                wal_dir = Some(PathBuf::from(
                    parser.value().map_err(|e| format!("--wal-dir: {e}"))?,
                ))
            }
            Long("bucket") => {
                bucket = Some(
                    parser
                        .value()
                        .map_err(|e| format!("--bucket: {e}"))?
                        .into_string()
                        .map_err(|_| "--bucket: not UTF-8".to_string())?,
                )
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            Long("version") => {
                print!("{}", etcdtools::build_info::version_text("etcd-inspect"));
                std::process::exit(0);
            }
            Value(v) => positional.push(
                v.into_string()
                    .map_err(|v| format!("argument {v:?} is not UTF-8"))?,
            ),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let mut it = positional.into_iter();
    let command = it.next().ok_or("missing command")?;
    let path = it.next().ok_or(format!("{command}: missing <data-dir>"))?;
    if let Some(extra) = it.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    if command != "db" && (bucket.is_some() || revisions) {
        return Err("--bucket and --revisions only apply to `db`".into());
    }
    if command != "wal" && all {
        return Err("--all only applies to `wal`".into());
    }
    Ok(Args {
        command,
        path: PathBuf::from(path),
        json,
        wal_dir,
        bucket,
        revisions,
        all,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("etcd-inspect: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let member = Member::at(&args.path, args.wal_dir.as_deref());
    if args.command != "db" {
        if let Some(locked) = member.locked_by_etcd() {
            let w = inspect::running_etcd_warning(&locked);
            eprintln!("etcd-inspect: warning: {w}");
        }
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result: Result<bool, InspectError> = match args.command.as_str() {
        "wal" => inspect::wal::print_wal(&member, args.json, args.all, &mut out).map(|_| true),
        "snap" => inspect::snap::print_snap(&member, args.json, &mut out).map(|_| true),
        "version" => inspect::version::print_version(&member, args.json, &mut out).map(|_| true),
        "check" => inspect::check::print_check(&member, args.json, &mut out).map(|n| n == 0),
        "db" => {
            let opts = DbOptions {
                bucket: args.bucket.clone(),
                revisions: args.revisions,
                json: args.json,
            };
            inspect::db::print_db(&args.path, &opts, &mut out).map(|_| true)
        }
        other => {
            eprintln!("etcd-inspect: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let flushed = out.flush();
    match (result, flushed) {
        (Err(InspectError::Output(e)), _) | (Ok(_), Err(e))
            if e.kind() == io::ErrorKind::BrokenPipe =>
        {
            ExitCode::SUCCESS // the reader went away (e.g. `| head`)
        }
        (Ok(_), Err(e)) => {
            eprintln!("etcd-inspect: writing output: {e}");
            ExitCode::from(Kind::Io.exit_code())
        }
        (Ok(true), Ok(())) => ExitCode::SUCCESS,
        (Ok(false), Ok(())) => ExitCode::from(Kind::Corrupt.exit_code()),
        (Err(e), _) => {
            eprintln!("etcd-inspect: {e}");
            ExitCode::from(e.kind().exit_code())
        }
    }
}
