//! Cluster state (`/0`) for the new store: the newest v2 snapshot's store, then the committed
//! WAL entries after it (conf changes, v2 PUT/DELETE on `/0`, 3.6 membership requests),
//! replayed by `storage::v2store`. Only what can change `/0` is kept from the WAL.

use crate::storage::proto::{Entry, EntryPayload, EntryType, V3Request};
use crate::storage::v2store::{Node, Store, V2Error};

/// What rollback keeps of one WAL entry (`storage::wal::read_whole_with`): never its v3 data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    pub index: u64,
    pub term: u64,
    /// A v3 request that changes keys (put, delete_range, txn, lease_revoke): the db must hold
    /// it (consistent_index at or past it).
    pub v3_write: bool,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing for `/0`.
    None,
    /// Can change `/0`: replayed into the old store.
    Cluster(Entry),
    /// A v2 write outside `/0`: old v2 user data, not carried over (replayed only to count
    /// the keys dropped).
    UserV2Write(Entry),
    /// An entry etcd itself could not apply.
    Bad(String),
}

fn under_zero(path: &str) -> bool {
    path == "/0" || path.starts_with("/0/")
}

/// Summarizes one WAL entry for rollback.
pub fn summarize(e: Entry) -> WalEntry {
    let (index, term) = (e.index, e.term);
    let mut v3_write = false;
    let change = match e.entry_type {
        EntryType::ConfChange => Change::Cluster(e),
        EntryType::ConfChangeV2 => Change::Bad("unsupported entry type 2 (ConfChangeV2)".into()),
        EntryType::Other(t) => Change::Bad(format!("unsupported entry type {t}")),
        EntryType::Normal if e.data.is_empty() => Change::None,
        EntryType::Normal => match EntryPayload::decode(&e.data) {
            Err(err) => Change::Bad(format!(
                "neither a v2 Request nor an InternalRaftRequest: {err}"
            )),
            Ok(EntryPayload::Noop) => Change::None,
            Ok(EntryPayload::V2(r)) => match r.method.as_str() {
                "PUT" | "DELETE" | "POST" if under_zero(&r.path) => Change::Cluster(e),
                "PUT" | "DELETE" | "POST" => Change::UserV2Write(e),
                "QGET" | "SYNC" | "GET" | "HEAD" => Change::None,
                other => Change::Bad(format!("unknown v2 command {other:?}")),
            },
            Ok(EntryPayload::V3(irr)) => match irr.request {
                V3Request::ClusterVersionSet { .. } | V3Request::ClusterMemberAttrSet { .. } => {
                    Change::Cluster(e)
                }
                V3Request::Put { .. }
                | V3Request::DeleteRange { .. }
                | V3Request::Txn { .. }
                | V3Request::LeaseRevoke { .. } => {
                    v3_write = true;
                    Change::None
                }
                _ => Change::None,
            },
        },
    };
    WalEntry {
        index,
        term,
        v3_write,
        change,
    }
}

/// How many keys (files) the store holds under `/1`: old v2 user data.
pub fn user_keys(store: &Store) -> usize {
    let mut n = 0;
    if let Some(one) = store.get("/1") {
        one.walk(&mut |node| {
            if !node.is_dir() {
                n += 1;
            }
        });
    }
    n
}

/// Member IDs under `/0/members`, sorted. A name that is not hex is an error, like the original.
pub fn member_ids(store: &Store) -> Result<Vec<u64>, String> {
    let mut ids = Vec::new();
    if let Some(ch) = store.get("/0/members").and_then(|m| m.children.as_ref()) {
        for name in ch.keys() {
            let id = u64::from_str_radix(name, 16)
                .map_err(|e| format!("failed to parse member ID ({name}): {e}"))?;
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Copies everything below `/0` of `from` into `to`, in path order (a dir before what it
/// holds), each node taking `to`'s next index. Membership keys never expire: a TTL under `/0`
/// would be meaningless after rollback.
pub fn copy_zero(from: &Store, to: &mut Store, now_nanos: i64) -> Result<(), V2Error> {
    fn copy(n: &Node, to: &mut Store, now: i64) -> Result<(), V2Error> {
        for child in n.children.iter().flat_map(|c| c.values()) {
            if child.is_dir() {
                to.set_dir(&child.path, None, now)?;
                copy(child, to, now)?;
            } else {
                to.set(&child.path, &child.value, None, now)?;
            }
        }
        Ok(())
    }
    match from.get("/0") {
        Some(zero) => copy(zero, to, now_nanos),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::protowire::{put_bytes, put_uint};

    fn v2(method: &str, path: &str, value: &str) -> Vec<u8> {
        let mut r = Vec::new();
        put_uint(&mut r, 1, 7);
        put_bytes(&mut r, 2, method.as_bytes());
        put_bytes(&mut r, 3, path.as_bytes());
        put_bytes(&mut r, 4, value.as_bytes());
        put_uint(&mut r, 5, 0);
        r
    }

    fn normal(index: u64, data: Vec<u8>) -> Entry {
        Entry {
            entry_type: EntryType::Normal,
            term: 2,
            index,
            data,
        }
    }

    #[test]
    fn keeps_only_what_can_change_slash0() {
        let put0 = normal(3, v2("PUT", "/0/version", "3.4.0"));
        assert_eq!(summarize(put0.clone()).change, Change::Cluster(put0));
        let put1 = normal(4, v2("PUT", "/1/x", "v"));
        assert_eq!(summarize(put1.clone()).change, Change::UserV2Write(put1));
        assert_eq!(
            summarize(normal(5, v2("QGET", "/0/version", ""))).change,
            Change::None
        );
        assert!(matches!(
            summarize(normal(6, v2("FROB", "/0/x", ""))).change,
            Change::Bad(_)
        ));
        // a v3 put (InternalRaftRequest field 4): a v3 write, nothing for /0
        let mut irr = Vec::new();
        put_bytes(&mut irr, 4, b"\x0a\x01a");
        let s = summarize(normal(7, irr));
        assert_eq!((s.v3_write, s.change), (true, Change::None));
        // a range is not a write
        let mut range = Vec::new();
        put_bytes(&mut range, 3, b"\x0a\x01a");
        assert!(!summarize(normal(8, range)).v3_write);
        let cc = Entry {
            entry_type: EntryType::ConfChange,
            term: 1,
            index: 1,
            data: vec![],
        };
        assert!(matches!(summarize(cc).change, Change::Cluster(_)));
        let cc2 = Entry {
            entry_type: EntryType::ConfChangeV2,
            term: 1,
            index: 1,
            data: vec![],
        };
        assert!(matches!(summarize(cc2).change, Change::Bad(_)));
    }

    #[test]
    fn members_users_and_the_copy_of_slash0() {
        let json = br#"{"Root":{"Path":"/","Children":{"0":{"Path":"/0","Children":{"members":{"Path":"/0/members","Children":{"1177386ae0746d8e":{"Path":"/0/members/1177386ae0746d8e","Children":{"raftAttributes":{"Path":"/0/members/1177386ae0746d8e/raftAttributes","Value":"{}","Children":null}}}}},"version":{"Path":"/0/version","Value":"3.4.0","Children":null}}},"1":{"Path":"/1","Children":{"a":{"Path":"/1/a","Children":null},"d":{"Path":"/1/d","Children":{"b":{"Path":"/1/d/b","Children":null},"e":{"Path":"/1/d/e","Children":{}}}}}}}},"CurrentIndex":31}"#;
        let old = Store::load(json).unwrap();
        assert_eq!(member_ids(&old).unwrap(), vec![0x1177386ae0746d8e]);
        assert_eq!(user_keys(&old), 2);
        let mut new = Store::new();
        new.set("/1/k", "v", None, 0).unwrap();
        copy_zero(&old, &mut new, 0).unwrap();
        // path order, dirs first, indexes after the user keys
        let idx = |p: &str| new.get(p).unwrap().created_index;
        assert_eq!(idx("/0/members"), 2);
        assert_eq!(idx("/0/members/1177386ae0746d8e"), 3);
        assert_eq!(idx("/0/members/1177386ae0746d8e/raftAttributes"), 4);
        assert_eq!(idx("/0/version"), 5);
        assert_eq!(new.current_index, 5);
        assert_eq!(new.get("/0/version").unwrap().value, "3.4.0");
        let mut bad = Store::new();
        bad.set_dir("/0/members/zz", None, 0).unwrap();
        assert!(member_ids(&bad)
            .unwrap_err()
            .contains("failed to parse member ID (zz)"));
    }
}
