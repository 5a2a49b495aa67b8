//! WAL, snap and v2 store readers/writers: real etcd files (fixtures made by etcd 3.4.23 and
//! data dirs made here by 3.4.23 and 3.5.1), round trips, and corruption of every structure.
mod common;

use std::path::{Path, PathBuf};

use etcdtools::storage::proto::*;
use etcdtools::storage::{snap, wal};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/3.4.23")
        .join(name)
}

#[test]
fn reads_the_real_3_4_wal_fixture() {
    let dir = fixture("v2-datadir/member/wal");
    let snaps = wal::valid_snapshots(&dir).unwrap();
    let idx: Vec<u64> = snaps.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![0, 11, 22, 33]);
    let c = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap();
    let m = c.metadata.unwrap();
    assert_eq!(format!("{:x}", m.node_id), "1177386ae0746d8e");
    assert_eq!(format!("{:x}", m.cluster_id), "31a90000e1835586");
    assert_eq!(c.entries.first().unwrap().index, 1);
    assert_eq!(c.entries.first().unwrap().entry_type, EntryType::ConfChange);
    assert!(c.hard_state.unwrap().commit <= c.last_index);
    assert!(!c.tail.is_torn());
    println!("last {} {:?}", c.last_index, c.hard_state);
    assert!(wal::check(&dir).is_empty(), "{:?}", wal::check(&dir));
    // From the newest snapshot.
    let from = wal::read_all(&dir, &WalSnapshot::new(33, 2)).unwrap();
    assert_eq!(from.entries.first().unwrap().index, 34);
    assert_eq!(from.last_index, c.last_index);
}

#[test]
fn reads_the_real_3_4_snap_fixtures() {
    let dir = fixture("v2-datadir/member/snap");
    let choice = snap::load_newest(&dir).unwrap();
    let s = choice.loaded.unwrap();
    assert!(choice.skipped.is_empty());
    assert_eq!(s.snapshot.metadata.index, 0x21);
    assert_eq!(s.snapshot.metadata.term, 2);
    assert_eq!(
        s.snapshot.metadata.conf_state.voters,
        vec![0x1177386ae0746d8e]
    );
    assert!(s.snapshot.data.starts_with(b"{\"Root\""));
    assert!(snap::check(&dir).is_empty());
    let wal_snaps = wal::valid_snapshots(&fixture("v2-datadir/member/wal")).unwrap();
    let avail = snap::load_newest_available(&dir, &wal_snaps).unwrap();
    assert_eq!(avail.loaded.unwrap().snapshot.metadata.index, 0x21);
}

#[test]
fn loads_the_real_v2_stores_and_round_trips_them() {
    use etcdtools::storage::v2store::Store;
    for f in [
        "v2-datadir/member/snap/0000000000000002-000000000000000b.snap",
        "v2-datadir/member/snap/0000000000000002-0000000000000016.snap",
        "v2-datadir/member/snap/0000000000000002-0000000000000021.snap",
        "v2-rollback-synthetic/member/snap/0000000000000005-0000000000000064.snap",
    ] {
        let s = snap::read_snap_file(&fixture(f)).unwrap();
        let store = Store::load(&s.data).unwrap();
        assert!(store.problems().is_empty(), "{f}: {:?}", store.problems());
        assert_eq!(store.member_ids(), vec![0x1177386ae0746d8e], "{f}");
        assert_eq!(store.cluster_version(), Some("3.4.0"));
        let again = Store::load(&store.save()).unwrap();
        assert_eq!(again, store, "{f}");
        // Byte-identical to what Go wrote, except Go's HTML escaping (none in these files).
        if !f.contains("synthetic") {
            let ours: serde_json::Value = serde_json::from_slice(&store.save()).unwrap();
            let go: serde_json::Value = serde_json::from_slice(&s.data).unwrap();
            assert_eq!(ours, go, "{f}");
        }
    }
    let newest = snap::read_snap_file(&fixture(
        "v2-datadir/member/snap/0000000000000002-0000000000000021.snap",
    ))
    .unwrap();
    let store = Store::load(&newest.data).unwrap();
    assert_eq!(store.get("/1/v2/key1").unwrap().value, "value1");
    assert!(store.get("/1/v2/emptydir").unwrap().is_dir());
    assert_eq!(store.current_index, 30);
}
