//! `etcd-inspect snap`: prints the snapshot etcd would start from ([`Member::shown_snapshot`]:
//! metadata, ConfState) and its v2 store, node by node.

use std::io::Write;

use super::output::{preview, JsonLine};
use super::InspectError;
use crate::storage::member::{Member, MemberError, ShownSnapshot};
use crate::storage::snap::LoadedSnapshot;
use crate::storage::v2store::{Node, Store};

/// Prints the newest usable snapshot. Without a readable WAL, the newest readable `.snap`,
/// after a warning that says why.
pub fn print_snap(member: &Member, json: bool, out: &mut dyn Write) -> Result<(), InspectError> {
    let shown = member.shown_snapshot()?;
    let point = match &shown {
        ShownSnapshot::Start(p) => *p,
        ShownSnapshot::WithoutWal { wal, newest } => {
            let problem = format!("WAL not used to choose the snapshot: {wal}");
            if json {
                let line = JsonLine::new()
                    .str("record", "warning")
                    .str("problem", &problem);
                out.write_all(line.finish().as_bytes())?;
            } else {
                writeln!(out, "warning: {problem}")?;
            }
            newest
        }
    };
    super::print_skipped_snapshots(&point.skipped, json, out)?;
    let Some(loaded) = &point.snapshot else {
        if json {
            let line = JsonLine::new().str("record", "no_snapshot");
            out.write_all(line.finish().as_bytes())?;
        } else {
            let dir = &member.paths().snap_dir;
            writeln!(out, "no usable snapshot in {}", dir.display())?;
        }
        return Ok(());
    };
    let store = loaded.store().map_err(MemberError::Store)?;
    out.write_all(snapshot_line(loaded, json).as_bytes())?;
    out.write_all(store_lines(&store, json).as_bytes())?;
    let mut result = Ok(());
    store.root.walk(&mut |n: &Node| {
        if n.path != "/" && result.is_ok() {
            result = out.write_all(node_line(n, json).as_bytes());
        }
    });
    Ok(result?)
}

fn hex(v: &[u64]) -> Vec<String> {
    v.iter().map(|id| format!("{id:x}")).collect()
}

fn snapshot_line(loaded: &LoadedSnapshot, json: bool) -> String {
    let m = &loaded.snapshot.metadata;
    if json {
        return JsonLine::new()
            .str("record", "snapshot")
            .str("file", &loaded.path.display().to_string())
            .num("index", m.index)
            .num("term", m.term)
            .strs("voters", &hex(&m.conf_state.voters))
            .strs("learners", &hex(&m.conf_state.learners))
            .num("data_bytes", loaded.snapshot.data.len() as u64)
            .finish();
    }
    format!(
        "snapshot {}: index {} term {}, voters [{}], learners [{}], {} bytes of v2 store\n",
        loaded.path.display(),
        m.index,
        m.term,
        hex(&m.conf_state.voters).join(" "),
        hex(&m.conf_state.learners).join(" "),
        loaded.snapshot.data.len()
    )
}

/// The store's summary (text: and its problems, one per line).
fn store_lines(store: &Store, json: bool) -> String {
    let events = store.watcher_hub.event_history.queue.size;
    if json {
        return JsonLine::new()
            .str("record", "store")
            .num("current_index", store.current_index)
            .num("current_version", store.current_version)
            .num("events", events as u64)
            .opt_str("cluster_version", store.cluster_version())
            .strs("members", &hex(&store.member_ids()))
            .finish();
    }
    let mut s = format!(
        "v2 store: current index {}, version {}, {events} events in history, cluster version {}\n",
        store.current_index,
        store.current_version,
        store.cluster_version().unwrap_or("(none)")
    );
    for p in store.problems() {
        s.push_str(&format!("problem: {p}\n"));
    }
    s
}

fn node_line(n: &Node, json: bool) -> String {
    let expires = (!n.is_permanent()).then_some(n.expire_time.as_str());
    if json {
        return JsonLine::new()
            .str("record", "node")
            .str("key", &n.path)
            .bool("dir", n.is_dir())
            .str("value", &n.value)
            .num("created_index", n.created_index)
            .num("modified_index", n.modified_index)
            .opt_str("expire_time", expires)
            .finish();
    }
    let mut line = if n.is_dir() {
        format!("{}/ (dir)", n.path)
    } else {
        format!("{} = {}", n.path, preview(&n.value, 120))
    };
    line.push_str(&format!(
        " created {} modified {}",
        n.created_index, n.modified_index
    ));
    if let Some(t) = expires {
        line.push_str(&format!(" expires {t}"));
    }
    line.push('\n');
    line
}
