//! Cluster state (`/0`) for the new store: the newest v2 snapshot's `/0`, then the committed
//! WAL entries after it (conf changes, v2 PUT/DELETE on `/0`, 3.6 membership requests).

use super::tree::Node;
use super::wal::{ClusterChange, ClusterEntry};
use std::borrow::Cow;

/// `/0` of a v2 store JSON (a `.snap`'s data), as a tree. Missing `/0` gives an empty dir.
pub fn from_store_json(json: &[u8]) -> Result<Node<'static>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("v2 store JSON: {e}"))?;
    match v
        .get("Root")
        .and_then(|r| r.get("Children"))
        .and_then(|c| c.get("0"))
    {
        Some(n) => node(n).map_err(|e| format!("v2 store JSON /0: {e}")),
        None => Ok(Node::dir(0)),
    }
}

fn node(v: &serde_json::Value) -> Result<Node<'static>, String> {
    let idx = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    match v.get("Children") {
        Some(serde_json::Value::Object(ch)) => {
            let mut children = std::collections::BTreeMap::new();
            for (name, c) in ch {
                children.insert(name.clone(), node(c)?);
            }
            Ok(Node::Dir {
                children,
                created: idx("CreatedIndex"),
                modified: idx("ModifiedIndex"),
            })
        }
        Some(serde_json::Value::Null) | None => {
            let value = v
                .get("Value")
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string();
            // Membership keys never expire; a TTL under /0 would be meaningless after rollback.
            Ok(Node::File {
                value: Cow::Owned(value),
                created: idx("CreatedIndex"),
                modified: idx("ModifiedIndex"),
                expire: None,
            })
        }
        Some(other) => Err(format!("Children is {other}, not an object or null")),
    }
}

fn file(value: String) -> Node<'static> {
    Node::File {
        value: Cow::Owned(value),
        created: 0,
        modified: 0,
        expire: None,
    }
}

/// Path components below `/0` of a store path, or None when it is not under `/0`.
fn under0(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix("/0")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(rest.split('/').filter(|p| !p.is_empty()).collect())
}

#[derive(serde::Deserialize)]
struct MemberContext {
    id: u64,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

fn raft_attributes(m: &MemberContext) -> String {
    let mut o = serde_json::Map::new();
    o.insert("peerURLs".into(), m.peer_urls.clone().into());
    if m.is_learner {
        o.insert("isLearner".into(), true.into());
    }
    serde_json::Value::Object(o).to_string()
}

/// Applies committed entries to `/0`. Errors name the raft index.
pub fn replay(zero: &mut Node<'static>, entries: &[ClusterEntry]) -> Result<(), String> {
    for e in entries {
        let at = |m: String| format!("raft entry {}: {m}", e.index);
        match &e.change {
            ClusterChange::Conf {
                kind,
                node,
                context,
            } => {
                let id = format!("{node:x}");
                match kind {
                    0 | 2 | 3 => {
                        let m: MemberContext = serde_json::from_slice(context).map_err(|err| {
                            at(format!("conf change context is not a member: {err}"))
                        })?;
                        if m.id != *node {
                            return Err(at(format!(
                                "conf change for {node:x} carries member {:x}",
                                m.id
                            )));
                        }
                        zero.set_file(
                            &["members", &id, "raftAttributes"],
                            file(raft_attributes(&m)),
                            0,
                        )
                        .map_err(|_| at("cannot set raftAttributes".into()))?;
                    }
                    1 => {
                        zero.delete(&["members", &id]);
                        zero.set_file(&["removed_members", &id], file(String::new()), 0)
                            .map_err(|_| at("cannot record removed member".into()))?;
                    }
                    other => return Err(at(format!("unknown conf change type {other}"))),
                }
            }
            ClusterChange::V2 {
                method,
                path,
                value,
                dir,
                recursive,
            } => {
                let Some(parts) = under0(path) else { continue };
                match method.as_str() {
                    "PUT" if *dir => {
                        zero.mkdir(&parts, 0)
                            .map_err(|_| at(format!("cannot mkdir {path}")))?;
                    }
                    "PUT" => {
                        zero.set_file(&parts, file(value.clone()), 0)
                            .map_err(|_| at(format!("cannot set {path}")))?;
                    }
                    "DELETE" => {
                        let is_dir = zero.get(&parts).is_some_and(|n| n.children().is_some());
                        if !is_dir || *recursive || *dir {
                            zero.delete(&parts);
                        }
                    }
                    _ => {} // POST under /0: etcd never does it
                }
            }
            ClusterChange::ClusterVersion(v) => {
                zero.set_file(&["version"], file(v.clone()), 0)
                    .map_err(|_| at("cannot set /0/version".into()))?;
            }
            ClusterChange::UserV2Write => {}
            ClusterChange::MemberAttributes { id, json } => {
                let hex = format!("{id:x}");
                zero.set_file(&["members", &hex, "attributes"], file(json.clone()), 0)
                    .map_err(|_| at("cannot set attributes".into()))?;
            }
        }
    }
    Ok(())
}

/// How many keys (files) a v2 store JSON holds under `/1`: old v2 user data.
pub fn user_keys_in_store_json(json: &[u8]) -> usize {
    fn files(v: &serde_json::Value) -> usize {
        match v.get("Children") {
            Some(serde_json::Value::Object(ch)) => ch.values().map(files).sum(),
            _ => 1,
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return 0;
    };
    match v.pointer("/Root/Children/1/Children") {
        Some(serde_json::Value::Object(ch)) => ch.values().map(files).sum(),
        _ => 0,
    }
}

/// Member IDs under `/0/members`, sorted. A name that is not hex is an error, like the original.
pub fn member_ids(zero: &Node<'_>) -> Result<Vec<u64>, String> {
    let mut ids = Vec::new();
    if let Some(ch) = zero.get(&["members"]).and_then(|m| m.children()) {
        for name in ch.keys() {
            let id = u64::from_str_radix(name, 16)
                .map_err(|e| format!("failed to parse member ID ({name}): {e}"))?;
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Gives every node below `n` a fresh index, in path order, starting after `last`.
/// Returns the last index used.
pub fn reindex(n: &mut Node<'_>, mut last: u64) -> u64 {
    if let Some(ch) = n.children_mut() {
        for c in ch.values_mut() {
            last += 1;
            match c {
                Node::File {
                    created, modified, ..
                }
                | Node::Dir {
                    created, modified, ..
                } => {
                    *created = last;
                    *modified = last;
                }
            }
            last = reindex(c, last);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(index: u64, kind: u64, node: u64, ctx: &str) -> ClusterEntry {
        ClusterEntry {
            index,
            change: ClusterChange::Conf {
                kind,
                node,
                context: ctx.as_bytes().to_vec(),
            },
        }
    }

    fn put(index: u64, path: &str, value: &str) -> ClusterEntry {
        ClusterEntry {
            index,
            change: ClusterChange::V2 {
                method: "PUT".into(),
                path: path.into(),
                value: value.into(),
                dir: false,
                recursive: false,
            },
        }
    }

    #[test]
    fn replay_builds_members_and_version() {
        let mut zero = Node::dir(0);
        let entries = vec![
            conf(
                1,
                0,
                0xa,
                r#"{"id":10,"peerURLs":["http://a:2380"],"name":"a"}"#,
            ),
            conf(
                2,
                0,
                0xb,
                r#"{"id":11,"peerURLs":["http://b:2380"],"name":"b"}"#,
            ),
            put(
                3,
                "/0/members/a/attributes",
                r#"{"name":"a","clientURLs":["http://a:2379"]}"#,
            ),
            put(4, "/0/version", "3.4.0"),
            conf(5, 1, 0xb, ""),
            ClusterEntry {
                index: 6,
                change: ClusterChange::MemberAttributes {
                    id: 0xa,
                    json: "{}".into(),
                },
            },
        ];
        replay(&mut zero, &entries).unwrap();
        assert_eq!(member_ids(&zero).unwrap(), vec![0xa]);
        assert!(zero.get(&["removed_members", "b"]).is_some());
        match zero.get(&["members", "a", "raftAttributes"]).unwrap() {
            Node::File { value, .. } => assert_eq!(value, r#"{"peerURLs":["http://a:2380"]}"#),
            n => panic!("{n:?}"),
        }
        match zero.get(&["version"]).unwrap() {
            Node::File { value, .. } => assert_eq!(value, "3.4.0"),
            n => panic!("{n:?}"),
        }
        let last = reindex(&mut zero, 10);
        assert_eq!(last, 10 + 7);
    }

    #[test]
    fn reads_slash0_of_a_real_snapshot_store() {
        let json = br#"{"Root":{"Path":"/","Children":{"0":{"Path":"/0","Children":{"members":{"Path":"/0/members","Children":{"1177386ae0746d8e":{"Children":{"raftAttributes":{"Value":"{}","Children":null}}}}},"version":{"Value":"3.4.0","Children":null}}},"1":{"Children":{}}}},"CurrentIndex":31}"#;
        let zero = from_store_json(json).unwrap();
        assert_eq!(member_ids(&zero).unwrap(), vec![0x1177386ae0746d8e]);
        assert_eq!(user_keys_in_store_json(json), 0);
        let with_user = br#"{"Root":{"Children":{"1":{"Children":{"a":{"Children":null},"d":{"Children":{"b":{"Children":null},"e":{"Children":{}}}}}}}}}"#;
        assert_eq!(user_keys_in_store_json(with_user), 2);
        let mut bad = Node::dir(0);
        bad.mkdir(&["members", "zz"], 0).unwrap();
        assert!(member_ids(&bad)
            .unwrap_err()
            .contains("failed to parse member ID (zz)"));
    }
}
