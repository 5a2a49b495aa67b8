//! The snap decoder, the v2 store loader and the entry payload decoders on arbitrary bytes.
#![no_main]

use std::path::Path;

use etcdtools::storage::proto::{ConfChange, EntryPayload, RaftSnapshot};
use etcdtools::storage::snap;
use etcdtools::storage::v2store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = snap::decode_snap_bytes(Path::new("fuzz.snap"), data) {
        if let Ok(store) = Store::load(&s.data) {
            let _ = store.problems();
            let _ = Store::load(&go_json(&store));
        }
    }
    let _ = RaftSnapshot::decode(data);
    let _ = EntryPayload::decode(data);
    let _ = ConfChange::decode(data);
    if let Ok(mut store) = Store::load(data) {
        let _ = store.set("/1/fuzz/a", "b", None, 0);
        let _ = store.delete("/1", true, true);
        let _ = store.delete_expired(i64::MAX);
        let _ = go_json(&store);
    }
});

/// The store's JSON as etcd's `store.Save` writes it.
fn go_json(s: &etcdtools::storage::v2store::Store) -> Vec<u8> {
    let mut out = Vec::new();
    s.write_go_json(&mut out).unwrap();
    out
}
