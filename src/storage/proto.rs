//! The etcd messages found in WAL records and `.snap` files: raftpb, walpb, snappb, the v2
//! `etcdserverpb.Request` and enough of `InternalRaftRequest` to tell what a v3 entry does.
//!
//! Encoders write what etcd's gogo-generated marshallers write, byte for byte: non-nullable
//! scalar fields always emitted, repeated uint64 unpacked (etcd 2.3.7 rejects packed), fields in
//! number order. Decoders accept what any protobuf writer may produce (packed or not, any order,
//! unknown fields skipped) but reject a known field with the wrong wire type, which is also how
//! a v2 `Request` is told from an `InternalRaftRequest`.

use super::protowire::{nested, put_bool, put_bytes, put_int, put_uint, Field, Fields, WireError};

type Result<T> = std::result::Result<T, WireError>;

fn each<'a>(buf: &'a [u8], mut f: impl FnMut(Field<'a>) -> Result<()>) -> Result<()> {
    for field in Fields::new(buf) {
        f(field?)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// raftpb

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Normal,
    ConfChange,
    ConfChangeV2,
    Other(u64),
}

impl EntryType {
    pub fn from_raw(v: u64) -> EntryType {
        match v {
            0 => EntryType::Normal,
            1 => EntryType::ConfChange,
            2 => EntryType::ConfChangeV2,
            o => EntryType::Other(o),
        }
    }

    pub fn raw(self) -> u64 {
        match self {
            EntryType::Normal => 0,
            EntryType::ConfChange => 1,
            EntryType::ConfChangeV2 => 2,
            EntryType::Other(o) => o,
        }
    }

    /// etcd's Go name, as `etcd-dump-logs` prints it.
    pub fn name(self) -> String {
        match self {
            EntryType::Normal => "EntryNormal".into(),
            EntryType::ConfChange => "EntryConfChange".into(),
            EntryType::ConfChangeV2 => "EntryConfChangeV2".into(),
            EntryType::Other(o) => format!("EntryType({o})"),
        }
    }
}

/// A raft log entry. `data` empty means a leader's no-op (Go nil and empty are not told apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub entry_type: EntryType,
    pub term: u64,
    pub index: u64,
    pub data: Vec<u8>,
}

impl Entry {
    pub fn decode(buf: &[u8]) -> Result<Entry> {
        let mut e = Entry {
            entry_type: EntryType::Normal,
            term: 0,
            index: 0,
            data: Vec::new(),
        };
        each(buf, |f| {
            match f.number {
                1 => e.entry_type = EntryType::from_raw(f.varint()?),
                2 => e.term = f.varint()?,
                3 => e.index = f.varint()?,
                4 => e.data = f.bytes()?.to_vec(),
                _ => {}
            }
            Ok(())
        })?;
        Ok(e)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 32);
        put_uint(&mut out, 1, self.entry_type.raw());
        put_uint(&mut out, 2, self.term);
        put_uint(&mut out, 3, self.index);
        if !self.data.is_empty() {
            put_bytes(&mut out, 4, &self.data);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl HardState {
    pub fn decode(buf: &[u8]) -> Result<HardState> {
        let mut h = HardState::default();
        each(buf, |f| {
            match f.number {
                1 => h.term = f.varint()?,
                2 => h.vote = f.varint()?,
                3 => h.commit = f.varint()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(h)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        put_uint(&mut out, 1, self.term);
        put_uint(&mut out, 2, self.vote);
        put_uint(&mut out, 3, self.commit);
        out
    }
}

/// Raft membership. Field 1 is `nodes` up to 3.3 and `voters` from 3.4: the same on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    /// 3.4+ always writes it (`28 00`); 2.3.7 keeps it as an unknown field.
    pub auto_leave: Option<bool>,
}

impl ConfState {
    pub fn decode(buf: &[u8]) -> Result<ConfState> {
        let mut c = ConfState::default();
        each(buf, |f| {
            match f.number {
                1 => f.repeated_varint(&mut c.voters)?,
                2 => f.repeated_varint(&mut c.learners)?,
                3 => f.repeated_varint(&mut c.voters_outgoing)?,
                4 => f.repeated_varint(&mut c.learners_next)?,
                5 => c.auto_leave = Some(f.bool()?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(c)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, list) in [
            (1, &self.voters),
            (2, &self.learners),
            (3, &self.voters_outgoing),
            (4, &self.learners_next),
        ] {
            for &id in list.iter() {
                put_uint(&mut out, n, id); // unpacked, as etcd writes
            }
        }
        if let Some(b) = self.auto_leave {
            put_bool(&mut out, 5, b);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfChangeType {
    AddNode,
    RemoveNode,
    UpdateNode,
    AddLearnerNode,
    Other(u64),
}

impl ConfChangeType {
    pub fn from_raw(v: u64) -> ConfChangeType {
        match v {
            0 => ConfChangeType::AddNode,
            1 => ConfChangeType::RemoveNode,
            2 => ConfChangeType::UpdateNode,
            3 => ConfChangeType::AddLearnerNode,
            o => ConfChangeType::Other(o),
        }
    }

    pub fn raw(self) -> u64 {
        match self {
            ConfChangeType::AddNode => 0,
            ConfChangeType::RemoveNode => 1,
            ConfChangeType::UpdateNode => 2,
            ConfChangeType::AddLearnerNode => 3,
            ConfChangeType::Other(o) => o,
        }
    }

    pub fn name(self) -> String {
        match self {
            ConfChangeType::AddNode => "ConfChangeAddNode".into(),
            ConfChangeType::RemoveNode => "ConfChangeRemoveNode".into(),
            ConfChangeType::UpdateNode => "ConfChangeUpdateNode".into(),
            ConfChangeType::AddLearnerNode => "ConfChangeAddLearnerNode".into(),
            ConfChangeType::Other(o) => format!("ConfChangeType({o})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfChange {
    pub id: u64,
    pub change_type: ConfChangeType,
    pub node_id: u64,
    /// For AddNode/UpdateNode: the member's JSON (`{"id":..,"peerURLs":[..],"name":..}`).
    pub context: Vec<u8>,
}

impl ConfChange {
    pub fn decode(buf: &[u8]) -> Result<ConfChange> {
        let mut c = ConfChange {
            id: 0,
            change_type: ConfChangeType::AddNode,
            node_id: 0,
            context: Vec::new(),
        };
        each(buf, |f| {
            match f.number {
                1 => c.id = f.varint()?,
                2 => c.change_type = ConfChangeType::from_raw(f.varint()?),
                3 => c.node_id = f.varint()?,
                4 => c.context = f.bytes()?.to_vec(),
                _ => {}
            }
            Ok(())
        })?;
        Ok(c)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.id);
        put_uint(&mut out, 2, self.change_type.raw());
        put_uint(&mut out, 3, self.node_id);
        if !self.context.is_empty() {
            put_bytes(&mut out, 4, &self.context);
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMetadata {
    pub conf_state: ConfState,
    pub index: u64,
    pub term: u64,
}

impl SnapshotMetadata {
    pub fn decode(buf: &[u8]) -> Result<SnapshotMetadata> {
        let mut m = SnapshotMetadata::default();
        each(buf, |f| {
            match f.number {
                1 => {
                    m.conf_state = ConfState::decode(f.bytes()?).map_err(nested(f.value_offset))?
                }
                2 => m.index = f.varint()?,
                3 => m.term = f.varint()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &self.conf_state.encode());
        put_uint(&mut out, 2, self.index);
        put_uint(&mut out, 3, self.term);
        out
    }
}

/// `raftpb.Snapshot`: in a `.snap` file, `data` is the v2 store JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftSnapshot {
    pub data: Vec<u8>,
    pub metadata: SnapshotMetadata,
}

impl RaftSnapshot {
    pub fn decode(buf: &[u8]) -> Result<RaftSnapshot> {
        let mut s = RaftSnapshot::default();
        each(buf, |f| {
            match f.number {
                1 => s.data = f.bytes()?.to_vec(),
                2 => {
                    s.metadata =
                        SnapshotMetadata::decode(f.bytes()?).map_err(nested(f.value_offset))?
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        let meta = self.metadata.encode();
        let mut out = Vec::with_capacity(self.data.len() + meta.len() + 16);
        if !self.data.is_empty() {
            put_bytes(&mut out, 1, &self.data);
        }
        put_bytes(&mut out, 2, &meta);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// walpb, etcdserverpb.Metadata, snappb

/// WAL record types (`walpb.Record.type`).
pub const METADATA_TYPE: i64 = 1;
pub const ENTRY_TYPE: i64 = 2;
pub const STATE_TYPE: i64 = 3;
pub const CRC_TYPE: i64 = 4;
pub const SNAPSHOT_TYPE: i64 = 5;

/// `walpb.Record`, borrowing its data from the frame it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub rec_type: i64,
    pub crc: u32,
    /// `None` when the field is absent (crc records), as Go's nil slice.
    pub data: Option<&'a [u8]>,
}

impl<'a> RecordRef<'a> {
    pub fn decode(buf: &'a [u8]) -> Result<RecordRef<'a>> {
        let mut r = RecordRef {
            rec_type: 0,
            crc: 0,
            data: None,
        };
        each(buf, |f| {
            match f.number {
                1 => r.rec_type = f.i64()?,
                2 => r.crc = f.u32()?,
                3 => r.data = Some(f.bytes()?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.map_or(0, |d| d.len()) + 20);
        put_int(&mut out, 1, self.rec_type);
        put_uint(&mut out, 2, u64::from(self.crc));
        if let Some(d) = self.data {
            put_bytes(&mut out, 3, d);
        }
        out
    }
}

/// `walpb.Snapshot`: a snapshot record in the WAL. `conf_state` only since 3.5.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalSnapshot {
    pub index: u64,
    pub term: u64,
    pub conf_state: Option<ConfState>,
}

impl WalSnapshot {
    pub fn new(index: u64, term: u64) -> WalSnapshot {
        WalSnapshot {
            index,
            term,
            conf_state: None,
        }
    }

    pub fn decode(buf: &[u8]) -> Result<WalSnapshot> {
        let mut s = WalSnapshot::default();
        each(buf, |f| {
            match f.number {
                1 => s.index = f.varint()?,
                2 => s.term = f.varint()?,
                3 => {
                    s.conf_state =
                        Some(ConfState::decode(f.bytes()?).map_err(nested(f.value_offset))?)
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.index);
        put_uint(&mut out, 2, self.term);
        if let Some(cs) = &self.conf_state {
            put_bytes(&mut out, 3, &cs.encode());
        }
        out
    }
}

/// `etcdserverpb.Metadata`, the WAL metadata record of an etcd member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalMetadata {
    pub node_id: u64,
    pub cluster_id: u64,
}

impl WalMetadata {
    pub fn decode(buf: &[u8]) -> Result<WalMetadata> {
        let mut m = WalMetadata::default();
        each(buf, |f| {
            match f.number {
                1 => m.node_id = f.varint()?,
                2 => m.cluster_id = f.varint()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(22);
        put_uint(&mut out, 1, self.node_id);
        put_uint(&mut out, 2, self.cluster_id);
        out
    }
}

/// `snappb.Snapshot`: the outer message of a `.snap` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapFileMessage {
    pub crc: u32,
    pub data: Vec<u8>,
}

impl SnapFileMessage {
    pub fn decode(buf: &[u8]) -> Result<SnapFileMessage> {
        let mut s = SnapFileMessage::default();
        each(buf, |f| {
            match f.number {
                1 => s.crc = f.u32()?,
                2 => s.data = f.bytes()?.to_vec(),
                _ => {}
            }
            Ok(())
        })?;
        Ok(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 16);
        put_uint(&mut out, 1, u64::from(self.crc));
        if !self.data.is_empty() {
            put_bytes(&mut out, 2, &self.data);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// etcdserverpb: v2 Request and InternalRaftRequest

/// The v2 `etcdserverpb.Request` (what the v2 API and 3.4/3.5 membership publishes propose).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Request {
    pub id: u64,
    pub method: String,
    pub path: String,
    pub val: String,
    pub dir: bool,
    pub prev_value: String,
    pub prev_index: u64,
    pub prev_exist: Option<bool>,
    /// Unix nanoseconds; 0 = no TTL.
    pub expiration: i64,
    pub wait: bool,
    pub since: u64,
    pub recursive: bool,
    pub sorted: bool,
    pub quorum: bool,
    /// Unix nanoseconds (SYNC).
    pub time: i64,
    pub stream: bool,
    pub refresh: Option<bool>,
}

impl V2Request {
    pub fn decode(buf: &[u8]) -> Result<V2Request> {
        let mut r = V2Request::default();
        each(buf, |f| {
            match f.number {
                1 => r.id = f.varint()?,
                2 => r.method = f.string()?,
                3 => r.path = f.string()?,
                4 => r.val = f.string()?,
                5 => r.dir = f.bool()?,
                6 => r.prev_value = f.string()?,
                7 => r.prev_index = f.varint()?,
                8 => r.prev_exist = Some(f.bool()?),
                9 => r.expiration = f.i64()?,
                10 => r.wait = f.bool()?,
                11 => r.since = f.varint()?,
                12 => r.recursive = f.bool()?,
                13 => r.sorted = f.bool()?,
                14 => r.quorum = f.bool()?,
                15 => r.time = f.i64()?,
                16 => r.stream = f.bool()?,
                17 => r.refresh = Some(f.bool()?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_uint(&mut out, 1, self.id);
        put_bytes(&mut out, 2, self.method.as_bytes());
        put_bytes(&mut out, 3, self.path.as_bytes());
        put_bytes(&mut out, 4, self.val.as_bytes());
        put_bool(&mut out, 5, self.dir);
        put_bytes(&mut out, 6, self.prev_value.as_bytes());
        put_uint(&mut out, 7, self.prev_index);
        if let Some(b) = self.prev_exist {
            put_bool(&mut out, 8, b);
        }
        put_int(&mut out, 9, self.expiration);
        put_bool(&mut out, 10, self.wait);
        put_uint(&mut out, 11, self.since);
        put_bool(&mut out, 12, self.recursive);
        put_bool(&mut out, 13, self.sorted);
        put_bool(&mut out, 14, self.quorum);
        put_int(&mut out, 15, self.time);
        put_bool(&mut out, 16, self.stream);
        if let Some(b) = self.refresh {
            put_bool(&mut out, 17, b);
        }
        out
    }
}

/// What a v3 `InternalRaftRequest` asks for: the kind and, where there is one, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Request {
    Range {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    Put {
        key: Vec<u8>,
        value_len: usize,
        lease: i64,
    },
    DeleteRange {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// Keys touched by the success and failure branches (puts, deletes, ranges, nested txns).
    Txn {
        compares: usize,
        success: usize,
        failure: usize,
        keys: Vec<Vec<u8>>,
    },
    Compaction {
        revision: i64,
        physical: bool,
    },
    LeaseGrant {
        ttl: i64,
        id: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseCheckpoint {
        checkpoints: usize,
    },
    Alarm {
        action: u64,
        member_id: u64,
        alarm: u64,
    },
    ClusterVersionSet {
        version: String,
    },
    ClusterMemberAttrSet {
        member_id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    DowngradeInfoSet {
        enabled: bool,
        version: String,
    },
    /// Auth changes: the request's field name (e.g. `auth_user_add`).
    Auth(&'static str),
    /// The compat wrapper `InternalRaftRequest.v2` (no released etcd writes it).
    V2(V2Request),
    /// A field number this tool does not know (newer etcd).
    Unknown(u32),
    /// No request field at all.
    Empty,
}

impl V3Request {
    /// etcdserverpb's field name of the request.
    pub fn kind(&self) -> &'static str {
        match self {
            V3Request::Range { .. } => "range",
            V3Request::Put { .. } => "put",
            V3Request::DeleteRange { .. } => "delete_range",
            V3Request::Txn { .. } => "txn",
            V3Request::Compaction { .. } => "compaction",
            V3Request::LeaseGrant { .. } => "lease_grant",
            V3Request::LeaseRevoke { .. } => "lease_revoke",
            V3Request::LeaseCheckpoint { .. } => "lease_checkpoint",
            V3Request::Alarm { .. } => "alarm",
            V3Request::ClusterVersionSet { .. } => "cluster_version_set",
            V3Request::ClusterMemberAttrSet { .. } => "cluster_member_attr_set",
            V3Request::DowngradeInfoSet { .. } => "downgrade_info_set",
            V3Request::Auth(name) => name,
            V3Request::V2(_) => "v2",
            V3Request::Unknown(_) => "unknown",
            V3Request::Empty => "empty",
        }
    }

    /// The key the request is about, if it has a single one.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            V3Request::Range { key, .. }
            | V3Request::Put { key, .. }
            | V3Request::DeleteRange { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A decoded `InternalRaftRequest`: its request id and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalRaftRequest {
    pub id: u64,
    pub request: V3Request,
}

fn auth_name(n: u32) -> Option<&'static str> {
    Some(match n {
        1000 => "auth_enable",
        1011 => "auth_disable",
        1012 => "authenticate",
        1013 => "auth_status",
        1100 => "auth_user_add",
        1101 => "auth_user_delete",
        1102 => "auth_user_get",
        1103 => "auth_user_change_password",
        1104 => "auth_user_grant_role",
        1105 => "auth_user_revoke_role",
        1106 => "auth_user_list",
        1107 => "auth_role_list",
        1200 => "auth_role_add",
        1201 => "auth_role_delete",
        1202 => "auth_role_get",
        1203 => "auth_role_grant_permission",
        1204 => "auth_role_revoke_permission",
        _ => return None,
    })
}

fn key_and_end(buf: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut key, mut end) = (Vec::new(), Vec::new());
    each(buf, |f| {
        match f.number {
            1 => key = f.bytes()?.to_vec(),
            2 => end = f.bytes()?.to_vec(),
            _ => {}
        }
        Ok(())
    })?;
    Ok((key, end))
}

fn decode_put(buf: &[u8]) -> Result<V3Request> {
    let (mut key, mut value_len, mut lease) = (Vec::new(), 0, 0);
    each(buf, |f| {
        match f.number {
            1 => key = f.bytes()?.to_vec(),
            2 => value_len = f.bytes()?.len(),
            3 => lease = f.i64()?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(V3Request::Put {
        key,
        value_len,
        lease,
    })
}

/// Keys of the ops in one `RequestOp` list, recursing into nested txns (depth-limited).
fn txn_keys(buf: &[u8], depth: u32, keys: &mut Vec<Vec<u8>>) -> Result<(usize, usize, usize)> {
    let (mut compares, mut success, mut failure) = (0, 0, 0);
    each(buf, |f| {
        match f.number {
            1 => {
                f.bytes()?;
                compares += 1;
            }
            2 | 3 => {
                if f.number == 2 {
                    success += 1
                } else {
                    failure += 1
                }
                each(f.bytes()?, |op| {
                    match op.number {
                        1..=3 => {
                            let (k, _) = key_and_end(op.bytes()?)?;
                            keys.push(k);
                        }
                        4 if depth < 8 => {
                            txn_keys(op.bytes()?, depth + 1, keys)?;
                        }
                        _ => {}
                    }
                    Ok(())
                })
                .map_err(nested(f.value_offset))?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((compares, success, failure))
}

/// The cluster-level admin requests (version, member attributes, downgrade info).
fn decode_cluster(number: u32, bytes: &[u8]) -> Result<Option<V3Request>> {
    Ok(Some(match number {
        1300 => {
            let mut version = String::new();
            each(bytes, |g| {
                if g.number == 1 {
                    version = g.string()?;
                }
                Ok(())
            })?;
            V3Request::ClusterVersionSet { version }
        }
        1301 => {
            let (mut member_id, mut name, mut client_urls) = (0, String::new(), vec![]);
            each(bytes, |g| {
                match g.number {
                    1 => member_id = g.varint()?,
                    2 => each(g.bytes()?, |a| {
                        match a.number {
                            1 => name = a.string()?,
                            2 => client_urls.push(a.string()?),
                            _ => {}
                        }
                        Ok(())
                    })?,
                    _ => {}
                }
                Ok(())
            })?;
            V3Request::ClusterMemberAttrSet {
                member_id,
                name,
                client_urls,
            }
        }
        1302 => {
            let (mut enabled, mut version) = (false, String::new());
            each(bytes, |g| {
                match g.number {
                    1 => enabled = g.bool()?,
                    2 => version = g.string()?,
                    _ => {}
                }
                Ok(())
            })?;
            V3Request::DowngradeInfoSet { enabled, version }
        }
        _ => return Ok(None),
    }))
}

/// The admin requests (compaction, leases, alarms, cluster version and member attributes,
/// downgrade info): field number -> request, None for a number not among them.
fn decode_admin(number: u32, bytes: &[u8]) -> Result<Option<V3Request>> {
    Ok(Some(match number {
        7 => {
            let (mut revision, mut physical) = (0, false);
            each(bytes, |g| {
                match g.number {
                    1 => revision = g.i64()?,
                    2 => physical = g.bool()?,
                    _ => {}
                }
                Ok(())
            })?;
            V3Request::Compaction { revision, physical }
        }
        8 => {
            let (mut ttl, mut lid) = (0, 0);
            each(bytes, |g| {
                match g.number {
                    1 => ttl = g.i64()?,
                    2 => lid = g.i64()?,
                    _ => {}
                }
                Ok(())
            })?;
            V3Request::LeaseGrant { ttl, id: lid }
        }
        9 => {
            let mut lid = 0;
            each(bytes, |g| {
                if g.number == 1 {
                    lid = g.i64()?;
                }
                Ok(())
            })?;
            V3Request::LeaseRevoke { id: lid }
        }
        10 => {
            let (mut action, mut member_id, mut alarm) = (0, 0, 0);
            each(bytes, |g| {
                match g.number {
                    1 => action = g.varint()?,
                    2 => member_id = g.varint()?,
                    3 => alarm = g.varint()?,
                    _ => {}
                }
                Ok(())
            })?;
            V3Request::Alarm {
                action,
                member_id,
                alarm,
            }
        }
        11 => {
            let mut checkpoints = 0;
            each(bytes, |g| {
                if g.number == 1 {
                    g.bytes()?;
                    checkpoints += 1;
                }
                Ok(())
            })?;
            V3Request::LeaseCheckpoint { checkpoints }
        }
        1300..=1302 => return decode_cluster(number, bytes),
        _ => return Ok(None),
    }))
}

impl InternalRaftRequest {
    /// Strict: a known field with the wrong wire type is an error (that is how etcd's gogo
    /// decoder rejects a v2 `Request`, whose field 5 is a varint).
    pub fn decode(buf: &[u8]) -> Result<InternalRaftRequest> {
        let mut id = 0;
        let mut header_id = 0;
        let mut request = V3Request::Empty;
        each(buf, |f| {
            let base = f.value_offset;
            let r = match f.number {
                1 => {
                    id = f.varint()?;
                    return Ok(());
                }
                100 => {
                    each(f.bytes()?, |h| {
                        if h.number == 1 {
                            header_id = h.varint()?;
                        }
                        Ok(())
                    })
                    .map_err(nested(base))?;
                    return Ok(());
                }
                2 => V3Request::V2(V2Request::decode(f.bytes()?).map_err(nested(base))?),
                3 => {
                    let (key, range_end) = key_and_end(f.bytes()?).map_err(nested(base))?;
                    V3Request::Range { key, range_end }
                }
                4 => decode_put(f.bytes()?).map_err(nested(base))?,
                5 => {
                    let (key, range_end) = key_and_end(f.bytes()?).map_err(nested(base))?;
                    V3Request::DeleteRange { key, range_end }
                }
                6 => {
                    let mut keys = Vec::new();
                    let (compares, success, failure) =
                        txn_keys(f.bytes()?, 0, &mut keys).map_err(nested(base))?;
                    V3Request::Txn {
                        compares,
                        success,
                        failure,
                        keys,
                    }
                }
                7..=11 | 1300..=1302 => {
                    let bytes = f.bytes()?;
                    match decode_admin(f.number, bytes).map_err(nested(base))? {
                        Some(r) => r,
                        None => return Ok(()),
                    }
                }
                n => {
                    if let Some(name) = auth_name(n) {
                        f.bytes()?;
                        V3Request::Auth(name)
                    } else {
                        // Unknown to us: skip, like protobuf does, but remember it.
                        if matches!(request, V3Request::Empty) {
                            request = V3Request::Unknown(n);
                        }
                        return Ok(());
                    }
                }
            };
            request = r;
            Ok(())
        })?;
        Ok(InternalRaftRequest {
            id: if id != 0 { id } else { header_id },
            request,
        })
    }
}

/// What a normal entry's data is, decided the way etcd's `applyEntryNormal` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPayload {
    /// Empty data: a new leader's no-op.
    Noop,
    V2(V2Request),
    V3(InternalRaftRequest),
}

impl EntryPayload {
    pub fn decode(data: &[u8]) -> Result<EntryPayload> {
        if data.is_empty() {
            return Ok(EntryPayload::Noop);
        }
        match InternalRaftRequest::decode(data) {
            Ok(irr) => match irr.request {
                V3Request::V2(req) => Ok(EntryPayload::V2(req)),
                _ => Ok(EntryPayload::V3(irr)),
            },
            Err(irr_err) => V2Request::decode(data)
                .map(EntryPayload::V2)
                .map_err(|_| irr_err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn metadata_record_matches_real_bytes() {
        // From etcd-formats.md 1.5 (real 3.4.23 WAL).
        let rec = hex("08 01 10 8d 9c f9 16 1a 14 08 c0 c0 ca af c1 ba 96 89 2e 10 87 d5 ed ba 8f d5 9d c1 04");
        let r = RecordRef::decode(&rec).unwrap();
        assert_eq!(r.rec_type, METADATA_TYPE);
        assert_eq!(r.crc, 0x02de4e0d);
        let m = WalMetadata::decode(r.data.unwrap()).unwrap();
        assert_eq!(m.node_id, 0x2e1259d415f2a040);
        assert_eq!(m.cluster_id, 0x048276a8f75b6a87);
        assert_eq!(m.encode(), r.data.unwrap());
        assert_eq!(r.encode(), rec);
        assert_eq!(crc32c::crc32c(r.data.unwrap()), r.crc);
    }

    #[test]
    fn snapshot_and_hardstate_records_match_real_bytes() {
        let s = WalSnapshot::new(63, 2).encode();
        assert_eq!(s, hex("083f1002"));
        assert_eq!(WalSnapshot::new(0, 0).encode(), hex("08001000"));
        let h = HardState {
            term: 2,
            vote: 0,
            commit: 63,
        };
        assert_eq!(h.encode(), hex("0802 1000 183f"));
        assert_eq!(HardState::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn v2_request_bytes_and_classification() {
        let real = hex(
            "08 07 12 03 505554 1a 08 2f312f76326b6579 22 05 763276616c 28 00 32 00 38 00 48 00 50 00 58 00 60 00 68 00 70 00 78 00 80 01 00",
        );
        let req = V2Request::decode(&real).unwrap();
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/1/v2key");
        assert_eq!(req.val, "v2val");
        assert_eq!(req.encode(), real);
        assert_eq!(EntryPayload::decode(&real).unwrap(), EntryPayload::V2(req));
    }

    #[test]
    fn v3_put_is_classified_with_its_key() {
        // 22 11 0a 0b "/registry/a" 12 02 "va" a2 06 02 08 2a
        let mut data = hex("22 11 0a 0b");
        data.extend_from_slice(b"/registry/a");
        data.extend_from_slice(&hex("12 02"));
        data.extend_from_slice(b"va");
        data.extend_from_slice(&hex("a2 06 02 08 2a"));
        match EntryPayload::decode(&data).unwrap() {
            EntryPayload::V3(irr) => {
                assert_eq!(irr.id, 42);
                assert_eq!(irr.request.kind(), "put");
                assert_eq!(irr.request.key(), Some(&b"/registry/a"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(EntryPayload::decode(&[]).unwrap(), EntryPayload::Noop);
        assert!(EntryPayload::decode(&[0x0a, 0x50]).is_err());
    }

    #[test]
    fn snapshot_metadata_matches_real_bytes() {
        let meta = hex("0a 0c 08 c0 c0 ca af c1 ba 96 89 2e 28 00 10 3f 18 02");
        let m = SnapshotMetadata::decode(&meta).unwrap();
        assert_eq!(m.index, 63);
        assert_eq!(m.term, 2);
        assert_eq!(m.conf_state.voters, vec![0x2e1259d415f2a040]);
        assert_eq!(m.conf_state.auto_leave, Some(false));
        assert_eq!(m.encode(), meta);
    }

    #[test]
    fn entries_and_conf_changes_round_trip() {
        let cc = ConfChange {
            id: 0,
            change_type: ConfChangeType::AddNode,
            node_id: 7,
            context: b"{}".to_vec(),
        };
        assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
        let e = Entry {
            entry_type: EntryType::ConfChange,
            term: 2,
            index: 1,
            data: cc.encode(),
        };
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }
}
