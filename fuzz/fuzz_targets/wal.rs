//! The WAL reader and checker on arbitrary bytes, as one or two segments: never a panic, a
//! hang or an allocation beyond the input.
#![no_main]

use std::path::PathBuf;

use etcdtools::storage::proto::WalSnapshot;
use etcdtools::storage::wal;
use libfuzzer_sys::fuzz_target;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("etcdtools-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    // The first byte picks where to split into two segments (0: one segment).
    let (split, body) = match data.split_first() {
        Some((&s, rest)) => (s as usize * rest.len() / 256, rest),
        None => (0, data),
    };
    if split == 0 {
        let _ = std::fs::write(d.join(wal::segment_file_name(0, 0)), body);
    } else {
        let _ = std::fs::write(d.join(wal::segment_file_name(0, 0)), &body[..split]);
        let _ = std::fs::write(d.join(wal::segment_file_name(1, 5)), &body[split..]);
    }
    let _ = wal::check(&d);
    let _ = wal::read_all(&d, &WalSnapshot::new(0, 0));
    let _ = wal::valid_snapshots(&d);
});
