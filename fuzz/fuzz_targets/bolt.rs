//! The bbolt reader on arbitrary bytes: opening, `check`, the mvcc walks and every `print_db`
//! mode must return (Ok or a located error) without panicking, hanging or allocating wildly.
//! The input is the file; a small page size (512) lets the fuzzer build trees from few bytes,
//! and `seed` makes well-formed starting inputs from real etcd dbs.
#![no_main]

use std::io::Write;
use std::ops::ControlFlow;

use etcdtools::inspect::db::{print_db, DbOptions};
use etcdtools::storage::bolt::{BoltDb, Direction};
use etcdtools::storage::mvcc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // BoltDb reads a file: one per fuzzing process, in memory-backed /dev/shm when there.
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("etcdtools-fuzz-bolt-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&path).expect("create fuzz file");
        f.write_all(data).expect("write fuzz file");
    }
    if let Ok(db) = BoltDb::open(&path) {
        let _ = db.check();
        let _ = mvcc::check(&db);
        let _ = mvcc::read_meta(&db);
        let _ = mvcc::leases(&db);
        let _ = mvcc::members(&db);
        let _ = mvcc::current_revision(&db);
        if let Ok(names) = db.bucket_names() {
            for name in names {
                if let Ok(Some(b)) = db.bucket(&name) {
                    let _ = db.for_each(&b, Direction::Backward, &mut |_| {
                        Ok(ControlFlow::Continue(()))
                    });
                }
            }
        }
    }
    for opts in [
        DbOptions::default(),
        DbOptions { revisions: true, json: true, bucket: None },
        DbOptions { bucket: Some("meta".into()), ..Default::default() },
    ] {
        let _ = print_db(&path, &opts, &mut std::io::sink());
    }
});
