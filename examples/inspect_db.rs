//! `print_db` as a command, for scripts/bench-db.sh until `etcd-inspect db` exists:
//! `inspect_db <data-dir|db-file> [--json] [--revisions] [--bucket NAME]`.
use etcdtools::inspect::db::{print_db, DbOptions};

fn main() {
    let mut opts = DbOptions::default();
    let mut path = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => opts.json = true,
            "--revisions" => opts.revisions = true,
            "--bucket" => opts.bucket = args.next(),
            _ => path = Some(std::path::PathBuf::from(a)),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: inspect_db <data-dir|db-file> [--json] [--revisions] [--bucket NAME]");
        std::process::exit(2);
    };
    let stdout = std::io::stdout();
    if let Err(e) = print_db(&path, &opts, &mut stdout.lock()) {
        eprintln!("inspect_db: {e}");
        std::process::exit(1);
    }
}
