//! The etcd v2 store as it is saved in a `.snap` file: a node tree in Go's JSON shape.
//!
//! `Store::load` / `Store::save` read and write the JSON etcd's `store.Recovery` / `store.Save`
//! use; the mutations (`set`, `create`, `update`, `delete`, ...) follow etcd's v2 store rules:
//! every successful mutation takes the next store index (store indexes are not raft indexes),
//! missing parent directories are created with that index, `/`, `/0` and `/1` are read-only,
//! and each mutation is recorded in the 1000-slot event history the way etcd records it.
//! Membership lives under `/0`, user keys under `/1`.

use std::collections::BTreeMap;
use std::io::{self, Write as _};

use serde::{Deserialize, Serialize};

mod flat;
pub use flat::{FlatKey, FlatTree};

use crate::civil::{civil_from_days, days_from_civil};

use super::proto::{
    ConfChange, ConfChangeType, Entry, EntryPayload, EntryType, V2Request, V3Request,
};

/// Go's zero `time.Time` in RFC 3339: a permanent node.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// The event history etcd keeps (and requires on recovery: exactly this many slots).
pub const EVENT_HISTORY_CAPACITY: usize = 1000;
/// Deepest path `set`/`create` accept (components, `/1` counted). serde_json refuses JSON
/// nested deeper than 128 levels (2 per tree level), so a deeper store could be written but
/// not read back; refusing it up front keeps every store we write loadable.
pub const MAX_PATH_DEPTH: usize = 60;
/// etcd treats an expiry before 2000-01-01 as "permanent".
const MIN_EXPIRE_UNIX_NANOS: i64 = 946_684_800_000_000_000;

/// etcd v2 error codes (`v2error`), for the mutations that fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2ErrorCode {
    KeyNotFound = 100,
    TestFailed = 101,
    NotFile = 102,
    NotDir = 104,
    NodeExist = 105,
    RootReadOnly = 107,
    DirNotEmpty = 108,
    InvalidField = 209,
}

impl V2ErrorCode {
    /// etcd's words for the code.
    pub fn message(self) -> &'static str {
        match self {
            V2ErrorCode::KeyNotFound => "Key not found",
            V2ErrorCode::TestFailed => "Compare failed",
            V2ErrorCode::NotFile => "Not a file",
            V2ErrorCode::NotDir => "Not a directory",
            V2ErrorCode::NodeExist => "Key already exists",
            V2ErrorCode::RootReadOnly => "Root is read only",
            V2ErrorCode::DirNotEmpty => "Directory not empty",
            V2ErrorCode::InvalidField => "Invalid field",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V2Error {
    /// A store operation refused, as etcd would (code, path).
    #[error("v2 store: {} ({}): {path}", code.message(), *code as u32)]
    Op { code: V2ErrorCode, path: String },
    /// The JSON is not a v2 store.
    #[error("v2 store JSON: {0}")]
    Json(String),
    /// A v2 request or conf change this store cannot apply.
    #[error("v2 store: {0}")]
    Unsupported(String),
}

/// `compare`'s test of a node (an empty prev value and a 0 prev index are not compared).
fn compare_node(n: &Node, compare: Option<(&str, u64)>, path: &str) -> Result<(), V2Error> {
    match compare {
        Some((pv, pi))
            if (!pv.is_empty() && pv != n.value) || (pi != 0 && pi != n.modified_index) =>
        {
            Err(op_err(V2ErrorCode::TestFailed, path))
        }
        _ => Ok(()),
    }
}

fn op_err(code: V2ErrorCode, path: &str) -> V2Error {
    V2Error::Op {
        code,
        path: path.to_string(),
    }
}

fn zero_time() -> String {
    ZERO_TIME.to_string()
}

/// One node. A directory iff `children` is `Some` (`"Children":{}` when empty, `null` for keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "Path", default)]
    pub path: String,
    #[serde(rename = "CreatedIndex", default)]
    pub created_index: u64,
    #[serde(rename = "ModifiedIndex", default)]
    pub modified_index: u64,
    /// RFC 3339 (nanoseconds); [`ZERO_TIME`] for a permanent node.
    #[serde(rename = "ExpireTime", default = "zero_time")]
    pub expire_time: String,
    #[serde(rename = "Value", default)]
    pub value: String,
    #[serde(rename = "Children", default)]
    pub children: Option<BTreeMap<String, Node>>,
}

impl Node {
    pub fn new_dir(path: &str, index: u64) -> Node {
        Node {
            path: path.to_string(),
            created_index: index,
            modified_index: index,
            expire_time: zero_time(),
            value: String::new(),
            children: Some(BTreeMap::new()),
        }
    }

    pub fn new_key(path: &str, value: &str, index: u64, expire_time: String) -> Node {
        Node {
            path: path.to_string(),
            created_index: index,
            modified_index: index,
            expire_time,
            value: value.to_string(),
            children: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.children.is_some()
    }

    pub fn is_permanent(&self) -> bool {
        self.expire_time == ZERO_TIME
    }

    /// Expiry as unix nanoseconds, `None` for a permanent node (or an unparsable time).
    pub fn expire_unix_nanos(&self) -> Option<i64> {
        if self.is_permanent() {
            None
        } else {
            parse_rfc3339_nanos(&self.expire_time)
        }
    }

    /// Visits this node and all below it, depth first in name order.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        f(self);
        if let Some(children) = &self.children {
            for child in children.values() {
                child.walk(f);
            }
        }
    }
}

/// `NodeExtern`, the node as events (and the v2 API) show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeExtern {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeExtern>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ttl: i64,
    #[serde(rename = "modifiedIndex", default, skip_serializing_if = "is_zero")]
    pub modified_index: u64,
    #[serde(rename = "createdIndex", default, skip_serializing_if = "is_zero")]
    pub created_index: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeExtern>,
    #[serde(rename = "prevNode", default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeExtern>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
}

impl Event {
    fn index(&self) -> u64 {
        self.node.as_ref().map_or(0, |n| n.modified_index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQueue {
    #[serde(rename = "Events", default)]
    pub events: Vec<Option<Event>>,
    #[serde(rename = "Size", default)]
    pub size: usize,
    #[serde(rename = "Front", default)]
    pub front: usize,
    #[serde(rename = "Back", default)]
    pub back: usize,
    #[serde(rename = "Capacity", default)]
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHistory {
    #[serde(rename = "Queue")]
    pub queue: EventQueue,
    #[serde(rename = "StartIndex", default)]
    pub start_index: u64,
    #[serde(rename = "LastIndex", default)]
    pub last_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherHub {
    #[serde(rename = "EventHistory")]
    pub event_history: EventHistory,
}

impl Default for WatcherHub {
    fn default() -> Self {
        WatcherHub {
            event_history: EventHistory {
                queue: EventQueue {
                    events: vec![None; EVENT_HISTORY_CAPACITY],
                    size: 0,
                    front: 0,
                    back: 0,
                    capacity: EVENT_HISTORY_CAPACITY,
                },
                start_index: 0,
                last_index: 0,
            },
        }
    }
}

impl WatcherHub {
    /// Is the queue one etcd can keep inserting into (etcd panics on a short `Events`)?
    pub fn is_well_formed(&self) -> bool {
        let q = &self.event_history.queue;
        q.capacity > 0
            && q.events.len() == q.capacity
            && q.front < q.capacity
            && q.back < q.capacity
            && q.size <= q.capacity
    }

    /// etcd's `eventQueue.insert` + `EventHistory.addEvent`.
    fn add(&mut self, e: Event) {
        if !self.is_well_formed() {
            *self = WatcherHub::default();
        }
        let h = &mut self.event_history;
        let q = &mut h.queue;
        let index = e.index();
        q.events[q.back] = Some(e);
        q.back = (q.back + 1) % q.capacity;
        if q.size == q.capacity {
            q.front = (q.front + 1) % q.capacity;
        } else {
            q.size += 1;
        }
        h.last_index = index;
        h.start_index = q.events[q.front].as_ref().map_or(0, Event::index);
    }
}

/// Operation counters, lowerCamel in the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Stats {
    pub gets_success: u64,
    pub gets_fail: u64,
    pub sets_success: u64,
    pub sets_fail: u64,
    pub delete_success: u64,
    pub delete_fail: u64,
    pub update_success: u64,
    pub update_fail: u64,
    pub create_success: u64,
    pub create_fail: u64,
    pub compare_and_swap_success: u64,
    pub compare_and_swap_fail: u64,
    pub compare_and_delete_success: u64,
    pub compare_and_delete_fail: u64,
    pub expire_count: u64,
    pub watchers: u64,
}

fn fresh_root() -> Node {
    let mut root = Node::new_dir("/", 0);
    if let Some(children) = root.children.as_mut() {
        children.insert("0".into(), Node::new_dir("/0", 0));
        children.insert("1".into(), Node::new_dir("/1", 0));
    }
    root
}

fn current_version() -> i64 {
    2
}

/// The whole store, field order as Go marshals it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    #[serde(rename = "Root", default = "fresh_root")]
    pub root: Node,
    #[serde(rename = "WatcherHub", default)]
    pub watcher_hub: WatcherHub,
    #[serde(rename = "CurrentIndex", default)]
    pub current_index: u64,
    #[serde(rename = "Stats", default)]
    pub stats: Stats,
    #[serde(rename = "CurrentVersion", default = "current_version")]
    pub current_version: i64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// `path.Clean(path.Join("/", p))`.
pub fn clean_path(p: &str) -> String {
    if is_clean(p) {
        return p.to_string(); // the common case, without splitting into a Vec
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Already what `clean_path` returns: absolute, no empty, `.` or `..` component, no trailing `/`.
fn is_clean(p: &str) -> bool {
    p == "/"
        || (p.starts_with('/')
            && p[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

fn is_read_only(path: &str) -> bool {
    matches!(path, "/" | "/0" | "/1")
}

/// Refuses a path deeper than [`MAX_PATH_DEPTH`].
fn check_depth(path: &str) -> Result<(), V2Error> {
    if path.split('/').filter(|p| !p.is_empty()).count() > MAX_PATH_DEPTH {
        return Err(V2Error::Unsupported(format!(
            "{path}: deeper than {MAX_PATH_DEPTH} levels (the v2 store JSON could not be read back)"
        )));
    }
    Ok(())
}

/// A node's `ExpireTime` for an absolute expiry (etcd: before 2000 means permanent).
fn expire_time_of(expire_nanos: Option<i64>) -> String {
    match expire_nanos {
        Some(n) if n >= MIN_EXPIRE_UNIX_NANOS => format_rfc3339_nanos(n),
        _ => zero_time(),
    }
}

impl Store {
    /// A fresh store with the `/0` and `/1` namespace dirs (etcd's `store.New("/0", "/1")`).
    pub fn new() -> Store {
        Store {
            root: fresh_root(),
            watcher_hub: WatcherHub::default(),
            current_index: 0,
            stats: Stats::default(),
            current_version: 2,
        }
    }

    /// Loads the JSON of a `.snap` file's data, like `store.Recovery` (missing fields keep the
    /// fresh store's values; `/0` and `/1` always exist afterwards).
    pub fn load(json: &[u8]) -> Result<Store, V2Error> {
        let mut store: Store =
            serde_json::from_slice(json).map_err(|e| V2Error::Json(e.to_string()))?;
        if !store.root.is_dir() {
            return Err(V2Error::Json("Root is not a directory".into()));
        }
        for ns in ["0", "1"] {
            if let Some(children) = store.root.children.as_mut() {
                children
                    .entry(ns.to_string())
                    .or_insert_with(|| Node::new_dir(&format!("/{ns}"), 0));
            }
        }
        Ok(store)
    }

    /// Writes the JSON exactly as Go's `encoding/json` (etcd's `store.Save`) does, streamed
    /// (a store of 100+ MB of values is never held twice): HTML-safe `\u003c \u003e \u0026`,
    /// `\u2028 \u2029`, and `\u0008 \u000c` for backspace and form feed.
    pub fn write_go_json(&self, w: &mut dyn io::Write) -> io::Result<()> {
        self.write_go_json_with(w, None)
    }

    /// [`Store::write_go_json`], with the children of the top-level dir `/<name>` taken from
    /// a [`FlatTree`] instead of the store (its own children there are not written).
    pub fn write_go_json_with(
        &self,
        w: &mut dyn io::Write,
        splice: Option<(&str, &FlatTree<'_>)>,
    ) -> io::Result<()> {
        self.write_go_json_as(w, splice, Values::Write)
    }

    /// How many bytes [`Store::write_go_json_with`] writes, without reading the spliced
    /// tree's values again (their lengths were measured as its keys were made).
    pub fn go_json_len_with(&self, splice: Option<(&str, &FlatTree<'_>)>) -> io::Result<u64> {
        let mut count = Count(0);
        self.write_go_json_as(&mut count, splice, Values::Omit)?;
        Ok(count.0 + splice.map_or(0, |(_, flat)| flat.value_bytes()))
    }

    fn write_go_json_as(
        &self,
        w: &mut dyn io::Write,
        splice: Option<(&str, &FlatTree<'_>)>,
        values: Values,
    ) -> io::Result<()> {
        let mut w = io::BufWriter::with_capacity(1 << 16, w);
        // The node tree (all the bytes that matter) by hand; the small rest through serde.
        w.write_all(b"{\"Root\":")?;
        write_go_head(&mut w, &self.root)?;
        w.write_all(b",\"Children\":{")?;
        for (i, (name, child)) in self.root.children.iter().flatten().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            write_go_string(&mut w, name)?;
            w.write_all(b":")?;
            match splice {
                Some((at, flat)) if at == name && child.is_dir() => {
                    write_go_head(&mut w, child)?;
                    w.write_all(b",\"Children\":{")?;
                    flat.write_children(&mut w, values)?;
                    w.write_all(b"}}")?;
                }
                _ => write_go_node(&mut w, child)?,
            }
        }
        w.write_all(b"}}")?;
        w.write_all(b",\"WatcherHub\":")?;
        serde_go(&mut w, &self.watcher_hub)?;
        write!(w, ",\"CurrentIndex\":{},\"Stats\":", self.current_index)?;
        serde_go(&mut w, &self.stats)?;
        write!(w, ",\"CurrentVersion\":{}}}", self.current_version)?;
        w.flush()
    }

    /// Problems etcd would trip over after loading this store.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.watcher_hub.is_well_formed() {
            out.push(format!(
                "event history has {} slots, capacity {}: etcd panics on the next write",
                self.watcher_hub.event_history.queue.events.len(),
                self.watcher_hub.event_history.queue.capacity
            ));
        }
        let mut bad_paths = Vec::new();
        check_paths(&self.root, "/", &mut bad_paths);
        out.extend(bad_paths);
        out
    }

    /// Replaces the event history by an empty one (what a freshly built store should carry).
    pub fn reset_event_history(&mut self) {
        self.watcher_hub = WatcherHub::default();
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        let path = clean_path(path);
        let mut node = &self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node.children.as_ref()?.get(part)?;
        }
        Some(node)
    }

    /// `get` of a path that is already clean.
    fn lookup(&self, path: &str) -> Option<&Node> {
        let mut node = &self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node.children.as_ref()?.get(part)?;
        }
        Some(node)
    }

    fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node = &mut self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node.children.as_mut()?.get_mut(part)?;
        }
        Some(node)
    }

    /// The parent dir of `path` (clean), creating missing dirs with `index` (etcd's `checkDir`
    /// walk). Names are allocated only for the dirs it creates.
    fn parent_dir(&mut self, path: &str, index: u64) -> Result<&mut Node, V2Error> {
        let (parent, _) = split_parent(path);
        let mut node = &mut self.root;
        let mut end = 0;
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            end += 1 + part.len();
            let cur = &parent[..end];
            let children = node
                .children
                .as_mut()
                .ok_or_else(|| op_err(V2ErrorCode::NotDir, cur))?;
            if !children.contains_key(part) {
                children.insert(part.to_string(), Node::new_dir(cur, index));
            }
            let child = children
                .get_mut(part)
                .ok_or_else(|| op_err(V2ErrorCode::NotDir, cur))?;
            if !child.is_dir() {
                return Err(op_err(V2ErrorCode::NotDir, cur));
            }
            node = child;
        }
        Ok(node)
    }

    /// etcd's `internalCreate`. Returns the new node's index.
    #[allow(clippy::too_many_arguments)]
    fn internal_create(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        replace: bool,
        expire_nanos: Option<i64>,
        action: &str,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let mut path = clean_path(path);
        let next = self.current_index + 1;
        if unique {
            path = format!("{}/{next:020}", path.trim_end_matches('/'));
        }
        if is_read_only(&path) {
            return Err(op_err(V2ErrorCode::RootReadOnly, "/"));
        }
        check_depth(&path)?;
        let expire_time = expire_time_of(expire_nanos);
        // Check before creating parents so a failure changes nothing.
        let prev = match self.lookup(&path) {
            Some(_) if !replace => return Err(op_err(V2ErrorCode::NodeExist, &path)),
            Some(n) if n.is_dir() => return Err(op_err(V2ErrorCode::NotFile, &path)),
            Some(n) => Some(node_extern(n, now_nanos)),
            None => None,
        };
        self.check_parents_are_dirs(&path)?;
        let (_, name) = split_parent(&path);
        let name = name.to_string();
        let node = if dir {
            let mut d = Node::new_dir(&path, next);
            d.expire_time = expire_time;
            d
        } else {
            Node::new_key(&path, value, next, expire_time)
        };
        let ext = node_extern(&node, now_nanos);
        let parent = self.parent_dir(&path, next)?;
        if let Some(children) = parent.children.as_mut() {
            children.insert(name, node);
        }
        self.current_index = next;
        self.watcher_hub.add(Event {
            action: action.to_string(),
            node: Some(ext),
            prev_node: prev,
            refresh: false,
        });
        Ok(next)
    }

    /// `path` is clean, so each parent is a prefix of it.
    fn check_parents_are_dirs(&self, path: &str) -> Result<(), V2Error> {
        let (parent, _) = split_parent(path);
        let mut node = &self.root;
        let mut end = 0;
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            end += 1 + part.len();
            match node.children.as_ref().and_then(|c| c.get(part)) {
                Some(child) if child.is_dir() => node = child,
                Some(_) => return Err(op_err(V2ErrorCode::NotDir, &parent[..end])),
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Bulk loading a store being built (rollback writes 100,000s of keys): `set` of a key with
    /// the same rules and indexes (next index, missing dirs created with it, a replaced key gets
    /// a new created index, `NotDir`/`NotFile`/read-only/depth refusals that change nothing),
    /// but the value is moved in, no event is recorded and no stats are counted: one walk,
    /// no copies. Call [`Store::reset_event_history`] before saving if `set` was mixed in.
    pub fn load_key(
        &mut self,
        path: &str,
        value: String,
        expire_nanos: Option<i64>,
    ) -> Result<u64, V2Error> {
        use std::collections::btree_map::Entry;
        let path = clean_path(path);
        if is_read_only(&path) {
            return Err(op_err(V2ErrorCode::RootReadOnly, "/"));
        }
        check_depth(&path)?;
        let (parent, name) = split_parent(&path);
        let next = self.current_index + 1;
        // Errors can only come from nodes that exist, and everything below a created dir is
        // new: a refusal changes nothing.
        let node = self.parent_dir(&path, next)?;
        let Some(children) = node.children.as_mut() else {
            return Err(op_err(V2ErrorCode::NotDir, parent));
        };
        let expire_time = expire_time_of(expire_nanos);
        let key = Node {
            created_index: next,
            modified_index: next,
            expire_time,
            value,
            children: None,
            path: String::new(),
        };
        match children.entry(name.to_string()) {
            Entry::Occupied(o) if o.get().is_dir() => {
                return Err(op_err(V2ErrorCode::NotFile, &path))
            }
            Entry::Occupied(mut o) => {
                o.insert(key);
                o.into_mut().path = path;
            }
            Entry::Vacant(v) => v.insert(key).path = path,
        }
        self.current_index = next;
        Ok(next)
    }

    /// `store.Set`: creates or replaces a key (a replaced key gets a new created index, as in
    /// etcd), creating missing parent dirs. `expire_nanos` is an absolute unix time.
    pub fn set(
        &mut self,
        path: &str,
        value: &str,
        expire_nanos: Option<i64>,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let r = self.internal_create(
            path,
            false,
            value,
            false,
            true,
            expire_nanos,
            "set",
            now_nanos,
        );
        self.count(r.is_ok(), |s| &mut s.sets_success, |s| &mut s.sets_fail);
        r
    }

    /// `store.Set` of a directory (`mkdir`, or replacing a key by a dir), with an optional TTL.
    pub fn set_dir(
        &mut self,
        path: &str,
        expire_nanos: Option<i64>,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let r = self.internal_create(path, true, "", false, true, expire_nanos, "set", now_nanos);
        self.count(r.is_ok(), |s| &mut s.sets_success, |s| &mut s.sets_fail);
        r
    }

    /// `store.Create`: fails if the node exists; `unique` appends the 20-digit next index.
    pub fn create(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        expire_nanos: Option<i64>,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let r = self.internal_create(
            path,
            dir,
            value,
            unique,
            false,
            expire_nanos,
            "create",
            now_nanos,
        );
        self.count(r.is_ok(), |s| &mut s.create_success, |s| &mut s.create_fail);
        r
    }

    /// `store.Update`: changes an existing node's value and TTL, keeping its created index.
    pub fn update(
        &mut self,
        path: &str,
        value: &str,
        expire_nanos: Option<i64>,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let r = self.modify(path, None, value, expire_nanos, "update", now_nanos);
        self.count(r.is_ok(), |s| &mut s.update_success, |s| &mut s.update_fail);
        r
    }

    /// `store.CompareAndSwap` (`prev_value` empty and `prev_index` 0 mean "not compared").
    pub fn compare_and_swap(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        expire_nanos: Option<i64>,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let r = self.modify(
            path,
            Some((prev_value, prev_index)),
            value,
            expire_nanos,
            "compareAndSwap",
            now_nanos,
        );
        self.count(
            r.is_ok(),
            |s| &mut s.compare_and_swap_success,
            |s| &mut s.compare_and_swap_fail,
        );
        r
    }

    fn modify(
        &mut self,
        path: &str,
        compare: Option<(&str, u64)>,
        value: &str,
        expire_nanos: Option<i64>,
        action: &str,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let path = clean_path(path);
        let next = self.current_index + 1;
        let (prev, node) = {
            let n = self.existing(&path)?;
            if n.is_dir() && (compare.is_some() || !value.is_empty()) {
                return Err(op_err(V2ErrorCode::NotFile, &path));
            }
            compare_node(n, compare, &path)?;
            (node_extern(n, now_nanos), n.clone())
        };
        let expire_time = expire_time_of(expire_nanos);
        let mut updated = node;
        if !updated.is_dir() {
            updated.value = value.to_string();
        }
        updated.modified_index = next;
        updated.expire_time = expire_time;
        let ext = node_extern(&updated, now_nanos);
        if let Some(n) = self.get_mut(&path) {
            *n = updated;
        }
        self.current_index = next;
        self.watcher_hub.add(Event {
            action: action.to_string(),
            node: Some(ext),
            prev_node: Some(prev),
            refresh: false,
        });
        Ok(next)
    }

    /// The node at `path` (cleaned) that an update or delete acts on: never the root.
    fn existing(&self, path: &str) -> Result<&Node, V2Error> {
        if is_read_only(path) {
            return Err(op_err(V2ErrorCode::RootReadOnly, "/"));
        }
        self.get(path)
            .ok_or_else(|| op_err(V2ErrorCode::KeyNotFound, path))
    }

    /// `store.Delete`: a key, or a dir (`dir`; non-empty only with `recursive`).
    pub fn delete(&mut self, path: &str, dir: bool, recursive: bool) -> Result<u64, V2Error> {
        let r = self.internal_delete(path, dir, recursive, None, "delete", 0);
        self.count(r.is_ok(), |s| &mut s.delete_success, |s| &mut s.delete_fail);
        r
    }

    /// `store.CompareAndDelete`.
    pub fn compare_and_delete(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
    ) -> Result<u64, V2Error> {
        let r = self.internal_delete(
            path,
            false,
            false,
            Some((prev_value, prev_index)),
            "compareAndDelete",
            0,
        );
        self.count(
            r.is_ok(),
            |s| &mut s.compare_and_delete_success,
            |s| &mut s.compare_and_delete_fail,
        );
        r
    }

    fn internal_delete(
        &mut self,
        path: &str,
        dir: bool,
        recursive: bool,
        compare: Option<(&str, u64)>,
        action: &str,
        now_nanos: i64,
    ) -> Result<u64, V2Error> {
        let path = clean_path(path);
        let dir = dir || recursive;
        let next = self.current_index + 1;
        let prev = {
            let n = self.existing(&path)?;
            if compare.is_some() && n.is_dir() {
                return Err(op_err(V2ErrorCode::NotFile, &path));
            }
            compare_node(n, compare, &path)?;
            if n.is_dir() {
                if !dir {
                    return Err(op_err(V2ErrorCode::NotFile, &path));
                }
                if !recursive && n.children.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err(op_err(V2ErrorCode::DirNotEmpty, &path));
                }
            }
            node_extern(n, now_nanos)
        };
        let (parent, name) = split_parent(&path);
        if let Some(children) = self.get_mut(parent).and_then(|p| p.children.as_mut()) {
            children.remove(name);
        }
        self.current_index = next;
        let node = NodeExtern {
            key: path.clone(),
            dir: prev.dir,
            modified_index: next,
            created_index: prev.created_index,
            ..NodeExtern::default()
        };
        self.watcher_hub.add(Event {
            action: action.to_string(),
            node: Some(node),
            prev_node: Some(prev),
            refresh: false,
        });
        Ok(next)
    }

    /// `store.DeleteExpiredKeys`: removes every node whose expiry is at or before `now_nanos`.
    pub fn delete_expired(&mut self, now_nanos: i64) -> usize {
        let mut expired: Vec<(i64, String)> = Vec::new();
        self.root.walk(&mut |n| {
            if let Some(t) = n.expire_unix_nanos() {
                if t <= now_nanos {
                    expired.push((t, n.path.clone()));
                }
            }
        });
        expired.sort();
        let mut count = 0;
        for (_, path) in expired {
            // A parent dir may have expired (and taken this node) first.
            if self.get(&path).is_some()
                && self
                    .internal_delete(&path, true, true, None, "expire", now_nanos)
                    .is_ok()
            {
                self.stats.expire_count += 1;
                count += 1;
            }
        }
        count
    }

    /// Applies a v2 request from the WAL as etcd's `applierV2store` does. Failing requests
    /// (etcd answers them with an error) change nothing and are returned as `Err`.
    /// `now_nanos` is the apply time (used for TTLs shown in events) unless the request
    /// carries its own (`SYNC`).
    pub fn apply_v2_request(&mut self, r: &V2Request, now_nanos: i64) -> Result<(), V2Error> {
        let expire = (r.expiration != 0).then_some(r.expiration);
        let now = if r.time != 0 { r.time } else { now_nanos };
        let has_compare = !r.prev_value.is_empty() || r.prev_index != 0;
        match r.method.as_str() {
            "POST" => self
                .create(&r.path, r.dir, &r.val, true, expire, now)
                .map(drop),
            "PUT" => {
                let res = match r.prev_exist {
                    Some(true) if has_compare => self.compare_and_swap(
                        &r.path,
                        &r.prev_value,
                        r.prev_index,
                        &r.val,
                        expire,
                        now,
                    ),
                    Some(true) => self.update(&r.path, &r.val, expire, now),
                    Some(false) => self.create(&r.path, r.dir, &r.val, false, expire, now),
                    None if has_compare => self.compare_and_swap(
                        &r.path,
                        &r.prev_value,
                        r.prev_index,
                        &r.val,
                        expire,
                        now,
                    ),
                    None if r.dir => self.set_dir(&r.path, expire, now),
                    None => self.set(&r.path, &r.val, expire, now),
                };
                res.map(drop)
            }
            "DELETE" => {
                if has_compare {
                    self.compare_and_delete(&r.path, &r.prev_value, r.prev_index)
                        .map(drop)
                } else {
                    self.delete(&r.path, r.dir, r.recursive).map(drop)
                }
            }
            "SYNC" => {
                self.delete_expired(r.time);
                Ok(())
            }
            // A quorum read goes through raft and the store counts it.
            "QGET" => {
                let found = self.get(&r.path).is_some();
                self.count(found, |s| &mut s.gets_success, |s| &mut s.gets_fail);
                Ok(())
            }
            "GET" | "HEAD" => Ok(()),
            m => Err(V2Error::Unsupported(format!("unknown v2 method {m:?}"))),
        }
    }

    /// Applies a raft conf change to `/0` the way etcd's membership store does (3.x layout).
    pub fn apply_conf_change(&mut self, cc: &ConfChange, now_nanos: i64) -> Result<(), V2Error> {
        let id = format!("{:x}", cc.node_id);
        match cc.change_type {
            ConfChangeType::AddNode
            | ConfChangeType::AddLearnerNode
            | ConfChangeType::UpdateNode => {
                let member: serde_json::Value = serde_json::from_slice(&cc.context)
                    .map_err(|e| V2Error::Unsupported(format!("conf change context: {e}")))?;
                let mut raft = serde_json::Map::new();
                raft.insert(
                    "peerURLs".into(),
                    member
                        .get("peerURLs")
                        .cloned()
                        .unwrap_or(serde_json::Value::Array(vec![])),
                );
                let learner = cc.change_type == ConfChangeType::AddLearnerNode
                    || member.get("isLearner") == Some(&serde_json::Value::Bool(true));
                if learner {
                    raft.insert("isLearner".into(), serde_json::Value::Bool(true));
                }
                let value = serde_json::Value::Object(raft).to_string();
                let path = format!("/0/members/{id}/raftAttributes");
                if cc.change_type == ConfChangeType::UpdateNode {
                    self.update(&path, &value, None, now_nanos).map(drop)
                } else {
                    self.create(&path, false, &value, false, None, now_nanos)
                        .map(drop)
                }
            }
            ConfChangeType::RemoveNode => {
                self.delete(&format!("/0/members/{id}"), true, true)?;
                self.create(
                    &format!("/0/removed_members/{id}"),
                    false,
                    "",
                    false,
                    None,
                    now_nanos,
                )
                .map(drop)
            }
            ConfChangeType::Other(t) => Err(V2Error::Unsupported(format!("conf change type {t}"))),
        }
    }

    /// Member IDs under `/0/members`.
    pub fn member_ids(&self) -> Vec<u64> {
        self.get("/0/members")
            .and_then(|n| n.children.as_ref())
            .map(|c| {
                c.keys()
                    .filter_map(|k| u64::from_str_radix(k, 16).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `/0/version`, the cluster version, if set.
    pub fn cluster_version(&self) -> Option<&str> {
        self.get("/0/version")
            .filter(|n| !n.is_dir())
            .map(|n| n.value.as_str())
    }

    fn count(
        &mut self,
        ok: bool,
        success: fn(&mut Stats) -> &mut u64,
        fail: fn(&mut Stats) -> &mut u64,
    ) {
        let c = if ok {
            success(&mut self.stats)
        } else {
            fail(&mut self.stats)
        };
        *c += 1;
    }
}

/// What replaying WAL entries into a v2 store did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// v2 requests and conf changes applied.
    pub applied: usize,
    /// Requests etcd would have answered with an error (they change nothing).
    pub refused: usize,
    /// v3 requests (not part of the v2 store) and no-ops.
    pub skipped: usize,
    /// Entries whose data could not be decoded: (index, problem).
    pub undecodable: Vec<(u64, String)>,
}

impl Store {
    /// Replays committed WAL entries after a snapshot into this store, as etcd does on start:
    /// v2 requests, conf changes (membership under `/0`), and 3.6's cluster version and member
    /// attribute requests. `now_nanos` is used for conf changes (no TTL involved).
    pub fn replay_entries(&mut self, entries: &[Entry], now_nanos: i64) -> ReplayStats {
        let mut stats = ReplayStats::default();
        for e in entries {
            let result = match e.entry_type {
                EntryType::ConfChange => match ConfChange::decode(&e.data) {
                    Ok(cc) => self.apply_conf_change(&cc, now_nanos),
                    Err(err) => {
                        stats.undecodable.push((e.index, err.to_string()));
                        continue;
                    }
                },
                EntryType::Normal => match EntryPayload::decode(&e.data) {
                    Ok(EntryPayload::V2(req)) => self.apply_v2_request(&req, now_nanos),
                    Ok(EntryPayload::V3(irr)) => match irr.request {
                        V3Request::ClusterVersionSet { version } => {
                            self.set("/0/version", &version, None, now_nanos).map(drop)
                        }
                        V3Request::ClusterMemberAttrSet {
                            member_id,
                            name,
                            client_urls,
                        } => {
                            let mut attrs = serde_json::Map::new();
                            if !name.is_empty() {
                                attrs.insert("name".into(), name.into());
                            }
                            if !client_urls.is_empty() {
                                attrs.insert("clientURLs".into(), client_urls.into());
                            }
                            let value = serde_json::Value::Object(attrs).to_string();
                            self.set(
                                &format!("/0/members/{member_id:x}/attributes"),
                                &value,
                                None,
                                now_nanos,
                            )
                            .map(drop)
                        }
                        _ => {
                            stats.skipped += 1;
                            continue;
                        }
                    },
                    Ok(EntryPayload::Noop) => {
                        stats.skipped += 1;
                        continue;
                    }
                    Err(err) => {
                        stats.undecodable.push((e.index, err.to_string()));
                        continue;
                    }
                },
                _ => {
                    stats.skipped += 1;
                    continue;
                }
            };
            match result {
                Ok(()) => stats.applied += 1,
                Err(_) => stats.refused += 1,
            }
        }
        stats
    }
}

fn check_paths(node: &Node, expected: &str, out: &mut Vec<String>) {
    if node.path != expected {
        out.push(format!(
            "node at {expected} says its Path is {:?}",
            node.path
        ));
    }
    if let Some(children) = &node.children {
        for (name, child) in children {
            let p = if expected == "/" {
                format!("/{name}")
            } else {
                format!("{expected}/{name}")
            };
            check_paths(child, &p, out);
        }
    }
}

fn node_extern(n: &Node, now_nanos: i64) -> NodeExtern {
    let (expiration, ttl) = match n.expire_unix_nanos() {
        Some(t) => {
            let left = t.saturating_sub(now_nanos);
            let mut ttl = left / 1_000_000_000;
            if left % 1_000_000_000 > 0 {
                ttl += 1;
            }
            (Some(n.expire_time.clone()), ttl)
        }
        None => (None, 0),
    };
    NodeExtern {
        key: n.path.clone(),
        dir: n.is_dir(),
        value: (!n.is_dir()).then(|| n.value.clone()),
        nodes: None,
        expiration,
        ttl,
        modified_index: n.modified_index,
        created_index: n.created_index,
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 3339 with nanoseconds, UTC, as Go's time.RFC3339Nano writes it.

/// Unix nanoseconds as Go's RFC3339Nano in UTC (`2026-11-25T18:14:11.350616914Z`, trailing
/// zeros of the fraction dropped).
pub fn format_rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses RFC 3339 (any fraction, `Z` or `±hh:mm`) to unix nanoseconds.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut pos = 19;
    let mut nanos: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &s[start..pos];
        if digits.is_empty() {
            return None;
        }
        let mut frac = digits.chars().take(9).collect::<String>();
        while frac.len() < 9 {
            frac.push('0');
        }
        nanos = frac.parse().ok()?;
    }
    let offset_secs = match s.get(pos..)? {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let oh = num(pos + 1..pos + 3)?;
            let om = num(pos + 4..pos + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

// ---------------------------------------------------------------------------------------------
// Go's encoding/json string escaping

fn serde_go<W: io::Write, T: Serialize>(w: &mut W, v: &T) -> io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(w, GoFormatter);
    v.serialize(&mut ser).map_err(io::Error::other)
}

/// Whether a [`FlatTree`]'s values are written, or left empty (to count the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    Write,
    Omit,
}

/// A writer that only counts.
struct Count(u64);

impl io::Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `b` as text with its length as a JSON string's body, or None when it is not UTF-8. One
/// pass for the common case, ASCII that needs no escaping.
pub fn json_text(b: &[u8]) -> Option<(&str, u64)> {
    let i = plain_prefix(b);
    if b[i..].iter().all(|&c| c < 0x80 && !GO_SPECIAL[c as usize]) {
        // SAFETY: every byte is ASCII.
        return Some((unsafe { std::str::from_utf8_unchecked(b) }, b.len() as u64));
    }
    let s = std::str::from_utf8(b).ok()?;
    Some((s, go_string_body_len(s)))
}

/// The length of `s` as a JSON string's body, escaped as [`write_go_string`] writes it.
fn go_string_body_len(s: &str) -> u64 {
    let mut count = Count(0);
    let _ = write_go_string_body(&mut count, s); // counting cannot fail
    count.0
}

/// A node's fields up to its value, as Go writes them: `{"Path":…,"Value":…`.
fn write_go_fields<W: io::Write>(
    w: &mut W,
    path: &[&str],
    index: (u64, u64),
    expire_time: &str,
    value: JsonStr<'_>,
) -> io::Result<()> {
    w.write_all(b"{\"Path\":")?;
    write_go_string_parts(w, path)?;
    w.write_all(b",\"CreatedIndex\":")?;
    write_u64(w, index.0)?;
    w.write_all(b",\"ModifiedIndex\":")?;
    write_u64(w, index.1)?;
    w.write_all(b",\"ExpireTime\":")?;
    write_go_string(w, expire_time)?;
    w.write_all(b",\"Value\":")?;
    match value {
        JsonStr::Text(s) => write_go_string(w, s),
        JsonStr::Plain(s) => {
            w.write_all(b"\"")?;
            w.write_all(s.as_bytes())?;
            w.write_all(b"\"")
        }
    }
}

/// A string to write in JSON: any text (escaped as Go does), or one known to need no escaping.
#[derive(Debug, Clone, Copy)]
enum JsonStr<'s> {
    Text(&'s str),
    Plain(&'s str),
}

fn write_go_head<W: io::Write>(w: &mut W, n: &Node) -> io::Result<()> {
    let index = (n.created_index, n.modified_index);
    write_go_fields(
        w,
        &[&n.path],
        index,
        &n.expire_time,
        JsonStr::Text(&n.value),
    )
}

/// A node as `#[derive(Serialize)]` + [`GoFormatter`] writes it, faster (the hot path).
fn write_go_node<W: io::Write>(w: &mut W, n: &Node) -> io::Result<()> {
    write_go_head(w, n)?;
    match &n.children {
        None => w.write_all(b",\"Children\":null}"),
        Some(children) => {
            w.write_all(b",\"Children\":{")?;
            for (i, (name, child)) in children.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write_go_string(w, name)?;
                w.write_all(b":")?;
                write_go_node(w, child)?;
            }
            w.write_all(b"}}")
        }
    }
}

/// Bytes that need a look: controls, `"`, `\\`, `<`, `>`, `&`, and 0xE2 (the lead byte of
/// U+2028/U+2029).
static GO_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xE2] = true;
    t
};

/// True when none of the 8 bytes is a control, `"`, `\\`, `<`, `>`, `&` or non-ASCII (SWAR).
#[inline]
fn plain_ascii8(x: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let below_space = x.wrapping_sub(LO * 0x20) & !x & HI;
    let hit = below_space
        | (x & HI)
        | zero(x ^ (LO * u64::from(b'"')))
        | zero(x ^ (LO * u64::from(b'\\')))
        | zero(x ^ (LO * u64::from(b'<')))
        | zero(x ^ (LO * u64::from(b'>')))
        | zero(x ^ (LO * u64::from(b'&')));
    hit == 0
}

/// How many leading bytes of `b` need no escaping and are ASCII (a lower bound: it may stop
/// early, never late). 16 bytes per step with SSE2 (every x86_64 has it), else 8 with SWAR.
#[inline]
fn plain_prefix(b: &[u8]) -> usize {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; loads are unaligned and within `b`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let lt = _mm_set1_epi8(b'<' as i8);
            let gt = _mm_set1_epi8(b'>' as i8);
            let amp = _mm_set1_epi8(b'&' as i8);
            let space = _mm_set1_epi8(0x20);
            while i + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                // signed compare: controls (< 0x20) and non-ASCII (>= 0x80, negative) at once
                let hit = _mm_or_si128(
                    _mm_or_si128(_mm_cmplt_epi8(x, space), _mm_cmpeq_epi8(x, quote)),
                    _mm_or_si128(
                        _mm_or_si128(_mm_cmpeq_epi8(x, backslash), _mm_cmpeq_epi8(x, lt)),
                        _mm_or_si128(_mm_cmpeq_epi8(x, gt), _mm_cmpeq_epi8(x, amp)),
                    ),
                );
                let mask = _mm_movemask_epi8(hit);
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        if !plain_ascii8(u64::from_le_bytes(a)) {
            break;
        }
        i += 8;
    }
    i
}

/// Writes `n` in decimal (the indexes of every node: `write!` is slow here).
fn write_u64<W: io::Write>(w: &mut W, mut n: u64) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.write_all(&buf[at..])
}

/// A JSON string as Go's encoding/json writes it (what [`GoFormatter`] gives through serde).
fn write_go_string<W: io::Write>(w: &mut W, s: &str) -> io::Result<()> {
    write_go_string_parts(w, &[s])
}

/// [`write_go_string`] of the concatenated `parts` (each part whole UTF-8, as paths split at
/// `/` are).
fn write_go_string_parts<W: io::Write>(w: &mut W, parts: &[&str]) -> io::Result<()> {
    w.write_all(b"\"")?;
    for s in parts {
        write_go_string_body(w, s)?;
    }
    w.write_all(b"\"")
}

fn write_go_string_body<W: io::Write>(w: &mut W, s: &str) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        i += plain_prefix(&b[i..]);
        if i >= b.len() {
            break;
        }
        let c = b[i];
        if !GO_SPECIAL[c as usize] {
            i += 1;
            continue;
        }
        let mut len = 1;
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            b'<' => b"\\u003c",
            b'>' => b"\\u003e",
            b'&' => b"\\u0026",
            0xE2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) => {
                len = 3;
                if b[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                }
            }
            0xE2 => {
                i += 1;
                continue;
            }
            _ => {
                w.write_all(&b[start..i])?;
                w.write_all(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(c >> 4) as usize],
                    HEX[(c & 15) as usize],
                ])?;
                i += 1;
                start = i;
                continue;
            }
        };
        w.write_all(&b[start..i])?;
        w.write_all(esc)?;
        i += len;
        start = i;
    }
    w.write_all(&b[start..])
}

/// serde_json output with Go's escaping (see [`Store::write_go_json`]). serde_json already
/// escapes `"`, `\\` and control bytes and hands the runs between them to
/// `write_string_fragment`; the HTML characters and U+2028/9 are escaped there.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let b = fragment.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < b.len() {
            // also stops at `"`, `\\` and controls, which serde never puts in a fragment
            i += plain_prefix(&b[i..]);
            if i >= b.len() {
                break;
            }
            let (esc, len): (&[u8], usize) = match b[i] {
                b'<' => (b"\\u003c", 1),
                b'>' => (b"\\u003e", 1),
                b'&' => (b"\\u0026", 1),
                0xE2 if b.get(i + 1) == Some(&0x80) && b.get(i + 2) == Some(&0xA8) => {
                    (b"\\u2028", 3)
                }
                0xE2 if b.get(i + 1) == Some(&0x80) && b.get(i + 2) == Some(&0xA9) => {
                    (b"\\u2029", 3)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            w.write_all(&b[start..i])?;
            w.write_all(esc)?;
            i += len;
            start = i;
        }
        w.write_all(&b[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape;
        // Go (before 1.22, which etcd 2.x/3.x use) writes \b and \f as \u0008 and \u000c.
        match escape {
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            other => serde_json::ser::CompactFormatter.write_char_escape(w, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_json(s: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        s.write_go_json(&mut out).unwrap();
        out
    }

    #[test]
    fn compare_and_delete_and_swap_refuse_like_etcd() {
        let code = |r: Result<u64, V2Error>| match r {
            Err(V2Error::Op { code, .. }) => Some(code),
            _ => None,
        };
        let mut s = Store::new();
        s.set("/1/k", "v", None, 0).unwrap();
        s.set_dir("/1/d", None, 0).unwrap();
        let k_index = s.get("/1/k").unwrap().modified_index;
        use V2ErrorCode::*;
        let swaps = [
            ("/", "", 0, "x", RootReadOnly),
            ("/1/no", "", 0, "x", KeyNotFound),
            ("/1/d", "", 0, "", NotFile),
            ("/1/k", "w", 0, "x", TestFailed),
            ("/1/k", "", 9, "x", TestFailed),
        ];
        for (path, prev_value, prev_index, value, want) in swaps {
            let r = s.compare_and_swap(path, prev_value, prev_index, value, None, 0);
            assert_eq!(code(r), Some(want), "{path}");
        }
        assert_eq!(code(s.update("/1/d", "x", None, 0)), Some(NotFile));
        assert!(s.update("/1/d", "", None, 0).is_ok());
        assert_eq!(code(s.update("/1/no", "x", None, 0)), Some(KeyNotFound));
        assert!(s
            .compare_and_swap("/1/k", "v", k_index, "x", None, 0)
            .is_ok());
        assert_eq!(s.get("/1/k").unwrap().value, "x");
        assert_eq!(code(s.compare_and_delete("/", "", 0)), Some(RootReadOnly));
        assert_eq!(
            code(s.compare_and_delete("/1/no", "", 0)),
            Some(KeyNotFound)
        );
        assert_eq!(code(s.compare_and_delete("/1/d", "", 0)), Some(NotFile));
        assert_eq!(code(s.compare_and_delete("/1/k", "v", 0)), Some(TestFailed));
        assert_eq!(code(s.delete("/1/d", false, false)), Some(NotFile));
        assert!(s.compare_and_delete("/1/k", "x", 0).is_ok());
        assert!(s.get("/1/k").is_none());
        assert!(s.delete("/1/d", true, false).is_ok());
        assert_eq!(
            (
                s.stats.compare_and_swap_success,
                s.stats.compare_and_swap_fail
            ),
            (1, 5)
        );
        assert_eq!(
            (
                s.stats.compare_and_delete_success,
                s.stats.compare_and_delete_fail
            ),
            (1, 4)
        );
    }

    #[test]
    fn errors_read_like_etcds() {
        let codes = [
            (V2ErrorCode::KeyNotFound, "Key not found (100)"),
            (V2ErrorCode::TestFailed, "Compare failed (101)"),
            (V2ErrorCode::NotFile, "Not a file (102)"),
            (V2ErrorCode::NotDir, "Not a directory (104)"),
            (V2ErrorCode::NodeExist, "Key already exists (105)"),
            (V2ErrorCode::RootReadOnly, "Root is read only (107)"),
            (V2ErrorCode::DirNotEmpty, "Directory not empty (108)"),
            (V2ErrorCode::InvalidField, "Invalid field (209)"),
        ];
        for (code, text) in codes {
            let e = op_err(code, "/1/k").to_string();
            assert_eq!(e, format!("v2 store: {text}: /1/k"));
        }
        assert_eq!(
            Store::load(br#"{"Root":{"Path":"/"}}"#)
                .unwrap_err()
                .to_string(),
            "v2 store JSON: Root is not a directory"
        );
        assert_eq!(
            V2Error::Unsupported("conf change type 9".into()).to_string(),
            "v2 store: conf change type 9"
        );
    }

    /// `load_key` leaves exactly the tree and indexes `set` does, and refuses the same keys
    /// without changing anything.
    #[test]
    fn load_key_builds_what_set_builds() {
        let keys = [
            ("/1/registry/pods/ns/a", "pod", None),
            (
                "/1/registry/pods/ns/b",
                "<b>",
                Some(1_800_000_000_123_000_000),
            ),
            ("/1/top", "", None),
            ("/1/registry/pods/ns/a", "again", None),
            ("/1/top/x", "file in the way", None),
            ("/1/registry/pods", "dir in the way", None),
            ("/0", "read-only", None),
        ];
        let (mut set, mut load) = (Store::new(), Store::new());
        for (path, value, expire) in keys {
            let a = set.set(path, value, expire, 0);
            let b = load.load_key(path, value.to_string(), expire);
            assert_eq!(a, b, "{path}");
        }
        set.reset_event_history();
        set.stats = Stats::default();
        assert_eq!(set, load);
        assert_eq!(load.current_index, 4);
        assert!(load.problems().is_empty(), "{:?}", load.problems());
        let deep = format!("/1{}", "/d".repeat(MAX_PATH_DEPTH));
        assert!(load.load_key(&deep, String::new(), None).is_err());
        assert!(set.set(&deep, "", None, 0).is_err());
    }

    #[test]
    fn clean_path_like_go() {
        for (p, want) in [
            ("/", "/"),
            ("", "/"),
            ("/a/b", "/a/b"),
            ("a/b", "/a/b"),
            ("/a/", "/a"),
            ("//a", "/a"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/..", "/"),
            ("/a//b", "/a/b"),
            ("/.x/..y", "/.x/..y"),
        ] {
            assert_eq!(clean_path(p), want, "{p:?}");
        }
    }

    /// A real etcd 3.4.23 `.snap`'s store, loaded and written back, is byte-identical.
    #[test]
    fn go_json_is_byte_identical_to_etcd() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/3.4.23/v2-datadir/member/snap/0000000000000002-0000000000000021.snap"
        );
        let snap = super::super::snap::read_snap_file(std::path::Path::new(path)).unwrap();
        let store = Store::load(&snap.data).unwrap();
        let mut ours = Vec::new();
        store.write_go_json(&mut ours).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&snap.data)
        );
    }

    fn go_string(v: &str) -> String {
        let mut s = Store::new();
        s.set("/1/k", v, None, 0).unwrap();
        s.reset_event_history();
        let mut out = Vec::new();
        s.write_go_json(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let end = out.find(",\"Children\":null").unwrap();
        let at = out[..end].rfind("\"Value\":").unwrap();
        out[at + "\"Value\":".len()..end].to_string()
    }

    #[test]
    fn go_string_escaping() {
        assert_eq!(go_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_string("<&>"), r#""\u003c\u0026\u003e""#);
        assert_eq!(go_string("x\n\u{1}\u{2028}é"), "\"x\\n\\u0001\\u2028é\"");
        assert_eq!(
            go_string("\u{2029}\u{2000}\t\r"),
            "\"\\u2029\u{2000}\\t\\r\""
        );
        assert_eq!(go_string("\u{8}\u{c}"), r#""\u0008\u000c""#);
        assert_eq!(
            go_string("0123456789abcdef<0123456789\"x"),
            r#""0123456789abcdef\u003c0123456789\"x""#
        );
        assert_eq!(go_string(""), "\"\"");
    }

    /// The hand-written node writer and serde + GoFormatter agree on every ASCII byte and
    /// the characters Go treats specially.
    #[test]
    fn fast_node_writer_equals_serde_with_go_escaping() {
        let mut tricky: String = (0u8..0x80).map(char::from).collect();
        tricky.push_str("\u{2028}x\u{2029}\u{2000}é€<>&\u{7f}");
        let mut s = Store::new();
        s.set("/1/a<b>/k&1", &tricky, Some(1_800_000_000_500_000_000), 0)
            .unwrap();
        s.set(&format!("/1/{}", &tricky[48..60]), "v", None, 0)
            .unwrap();
        s.set_dir("/1/empty", None, 0).unwrap();
        for len in 0..20 {
            s.set(&format!("/1/n{len}"), &tricky[..len * 6], None, 0)
                .unwrap();
        }
        let mut fast = Vec::new();
        s.write_go_json(&mut fast).unwrap();
        let mut slow = Vec::new();
        serde_go(&mut slow, &s).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap()
        );
    }

    #[test]
    fn plain_prefix_stops_at_the_first_special_byte() {
        for c in 0..=255u8 {
            for pos in 0..40 {
                let mut b = vec![b'v'; 40];
                b[pos] = c;
                let n = plain_prefix(&b);
                if GO_SPECIAL[c as usize] || c >= 0x80 {
                    assert!(n <= pos, "byte {c:#x} at {pos}: {n}");
                } else {
                    assert!(n >= 32, "byte {c:#x} at {pos}: {n}");
                }
            }
        }
        let mut out = Vec::new();
        for n in [0, 7, 10, 1234567890123, u64::MAX] {
            out.clear();
            write_u64(&mut out, n).unwrap();
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn swar_agrees_with_the_table() {
        for c in 0..=255u8 {
            for pos in 0..8 {
                let mut a = *b"abcdefgh";
                a[pos] = c;
                let want = !(GO_SPECIAL[c as usize] || c >= 0x80);
                assert_eq!(
                    plain_ascii8(u64::from_le_bytes(a)),
                    want,
                    "byte {c:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn times_round_trip() {
        let t = 1_795_630_451_350_616_914; // 2026-11-25T...
        let s = format_rfc3339_nanos(t);
        assert_eq!(parse_rfc3339_nanos(&s), Some(t));
        assert_eq!(format_rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339_nanos("2025-11-25T11:14:11.350616914-07:00"),
            parse_rfc3339_nanos("2025-11-25T18:14:11.350616914Z")
        );
        assert_eq!(
            format_rfc3339_nanos(1_500_000_000),
            "1970-01-01T00:00:01.5Z"
        );
        assert!(parse_rfc3339_nanos("garbage").is_none());
        // Year 1 is outside i64 nanoseconds: callers treat ZERO_TIME as "permanent" first.
        assert!(parse_rfc3339_nanos(ZERO_TIME).is_none());
    }

    #[test]
    fn set_creates_dirs_and_bumps_the_index() {
        let mut s = Store::new();
        assert_eq!(s.set("/1/a/b/c", "v", None, 0).unwrap(), 1);
        let b = s.get("/1/a/b").unwrap();
        assert!(b.is_dir());
        assert_eq!(b.created_index, 1);
        assert_eq!(s.get("/1/a/b/c").unwrap().value, "v");
        assert_eq!(s.current_index, 1);
        // a key blocks a path below it
        assert!(matches!(
            s.set("/1/a/b/c/d", "x", None, 0),
            Err(V2Error::Op {
                code: V2ErrorCode::NotDir,
                ..
            })
        ));
        assert_eq!(s.current_index, 1);
        assert!(s.set("/1", "x", None, 0).is_err());
        // replace: new created index
        assert_eq!(s.set("/1/a/b/c", "w", None, 0).unwrap(), 2);
        assert_eq!(s.get("/1/a/b/c").unwrap().created_index, 2);
        assert_eq!(s.update("/1/a/b/c", "u", None, 0).unwrap(), 3);
        assert_eq!(s.get("/1/a/b/c").unwrap().created_index, 2);
        assert!(s.delete("/1/a", false, false).is_err());
        assert!(s.delete("/1/a", true, false).is_err());
        assert_eq!(s.delete("/1/a", true, true).unwrap(), 4);
        assert!(s.get("/1/a").is_none());
        assert_eq!(s.watcher_hub.event_history.queue.size, 4);
        assert_eq!(s.watcher_hub.event_history.last_index, 4);
        let json = go_json(&s);
        assert_eq!(Store::load(&json).unwrap(), s);
    }

    #[test]
    fn every_store_we_can_build_loads_back() {
        let deep = |n: usize| format!("/1{}", "/a".repeat(n - 1));
        let mut s = Store::new();
        s.set(&deep(MAX_PATH_DEPTH), "v", None, 0).unwrap();
        assert!(Store::load(&go_json(&s)).is_ok());
        assert!(matches!(
            s.set(&deep(MAX_PATH_DEPTH + 1), "v", None, 0),
            Err(V2Error::Unsupported(_))
        ));
    }

    #[test]
    fn v2_requests_apply_like_etcds_applier() {
        let req = |method: &str, path: &str, val: &str| V2Request {
            method: method.into(),
            path: path.into(),
            val: val.into(),
            ..V2Request::default()
        };
        let mut s = Store::new();
        s.apply_v2_request(&req("PUT", "/1/a", "1"), 0).unwrap();
        // prevExist=false on an existing key: refused, nothing changes.
        let mut create = req("PUT", "/1/a", "2");
        create.prev_exist = Some(false);
        assert!(s.apply_v2_request(&create, 0).is_err());
        assert_eq!(s.current_index, 1);
        // CAS with a wrong prevValue fails, with the right one succeeds.
        let mut cas = req("PUT", "/1/a", "3");
        cas.prev_value = "x".into();
        assert!(s.apply_v2_request(&cas, 0).is_err());
        cas.prev_value = "1".into();
        s.apply_v2_request(&cas, 0).unwrap();
        assert_eq!(s.get("/1/a").unwrap().value, "3");
        assert_eq!(s.get("/1/a").unwrap().created_index, 1);
        // POST: in-order key named by the next index, 20 digits.
        s.apply_v2_request(&req("POST", "/1/q", "job"), 0).unwrap();
        assert_eq!(s.get("/1/q/00000000000000000003").unwrap().value, "job");
        // DELETE of a dir needs dir/recursive.
        assert!(s.apply_v2_request(&req("DELETE", "/1/q", ""), 0).is_err());
        let mut rm = req("DELETE", "/1/q", "");
        rm.recursive = true;
        s.apply_v2_request(&rm, 0).unwrap();
        assert!(s.get("/1/q").is_none());
        // A TTL key expires on SYNC.
        let mut ttl = req("PUT", "/1/t", "v");
        ttl.expiration = 2_000_000_000_000_000_000;
        s.apply_v2_request(&ttl, 0).unwrap();
        let mut sync = req("SYNC", "", "");
        sync.time = 2_000_000_000_000_000_001;
        s.apply_v2_request(&sync, 0).unwrap();
        assert!(s.get("/1/t").is_none());
        assert_eq!(s.stats.expire_count, 1);
        assert!(s.apply_v2_request(&req("FROB", "/1/a", ""), 0).is_err());
    }

    #[test]
    fn conf_changes_maintain_the_member_tree() {
        let mut s = Store::new();
        let add = ConfChange {
            id: 0,
            change_type: ConfChangeType::AddNode,
            node_id: 0xabc,
            context: br#"{"id":2748,"peerURLs":["http://a:2380"],"name":"m"}"#.to_vec(),
        };
        s.apply_conf_change(&add, 0).unwrap();
        assert_eq!(
            s.get("/0/members/abc/raftAttributes").unwrap().value,
            r#"{"peerURLs":["http://a:2380"]}"#
        );
        assert_eq!(s.member_ids(), vec![0xabc]);
        let remove = ConfChange {
            change_type: ConfChangeType::RemoveNode,
            context: vec![],
            ..add
        };
        s.apply_conf_change(&remove, 0).unwrap();
        assert!(s.member_ids().is_empty());
        assert_eq!(s.get("/0/removed_members/abc").unwrap().value, "");
    }

    #[test]
    fn event_history_wraps_at_capacity() {
        let mut s = Store::new();
        for i in 0..1005 {
            s.set(&format!("/1/k{i}"), "v", None, 0).unwrap();
        }
        let h = &s.watcher_hub.event_history;
        assert_eq!(h.queue.size, 1000);
        assert_eq!(h.queue.front, 5);
        assert_eq!(h.start_index, 6);
        assert_eq!(h.last_index, 1005);
    }

    #[test]
    fn ttl_keys_expire_on_sync() {
        let mut s = Store::new();
        let t0 = 1_800_000_000_000_000_000;
        s.set("/1/t", "v", Some(t0 + 5_000_000_000), t0).unwrap();
        assert_eq!(s.delete_expired(t0), 0);
        assert_eq!(s.delete_expired(t0 + 5_000_000_000), 1);
        assert!(s.get("/1/t").is_none());
        assert_eq!(s.stats.expire_count, 1);
    }
}
