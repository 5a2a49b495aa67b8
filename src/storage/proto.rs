//! The etcd messages found in WAL records and `.snap` files: raftpb, walpb, snappb, the v2
//! `etcdserverpb.Request` and enough of `InternalRaftRequest` to tell what a v3 entry does.
//!
//! Encoders write what etcd's gogo-generated marshallers write, byte for byte: non-nullable
//! scalar fields always emitted, repeated uint64 unpacked (etcd 2.3.7 rejects packed), fields in
//! number order. Decoders accept what any protobuf writer may produce (packed or not, any order,
//! unknown fields skipped) but reject a known field with the wrong wire type, which is also how
//! a v2 `Request` is told from an `InternalRaftRequest`.
//!
//! A message is declared once, its struct with each field's number (`message!`); how a field
//! of each Rust type is read and written (the gogo rules above) is said once, by `Wire`.

use super::protowire::{nested, put_bool, put_bytes, put_int, put_uint, Field, Fields, WireError};

type Result<T> = std::result::Result<T, WireError>;

fn each<'a>(buf: &'a [u8], mut f: impl FnMut(Field<'a>) -> Result<()>) -> Result<()> {
    for field in Fields::new(buf) {
        f(field?)?;
    }
    Ok(())
}

/// How a struct field of one Rust type travels, as etcd's gogo code writes it: integers, bools
/// and strings always; bytes only when not empty (gogo skips nil, and Go's nil and empty are
/// not told apart); an `Option` only when set; repeated integers unpacked; a nested message
/// length-delimited, always.
trait Wire<'a> {
    /// Takes the value of field `f` (a repeated field appends to what it has).
    fn read(&mut self, f: &Field<'a>) -> Result<()>;
    /// Writes the value as field number `n`, or nothing where etcd writes nothing.
    fn write(&self, out: &mut Vec<u8>, n: u32);
}

/// [`Wire`] for a type that a field replaces whole: how to read it from field `f`, and how
/// to write the value `v` as field `n` into `out`.
macro_rules! wire {
    ($t:ty, |$f:ident| $read:expr, |$out:ident, $n:ident, $v:ident| $write:expr) => {
        impl<'a> Wire<'a> for $t {
            fn read(&mut self, $f: &Field<'a>) -> Result<()> {
                *self = $read;
                Ok(())
            }

            fn write(&self, $out: &mut Vec<u8>, $n: u32) {
                let $v = self;
                $write
            }
        }
    };
}

wire! { u64, |f| f.varint()?, |out, n, v| put_uint(out, n, *v) }
wire! { i64, |f| f.i64()?, |out, n, v| put_int(out, n, *v) }
wire! { u32, |f| f.u32()?, |out, n, v| put_uint(out, n, u64::from(*v)) }
wire! { bool, |f| f.bool()?, |out, n, v| put_bool(out, n, *v) }
wire! { String, |f| f.string()?, |out, n, v| put_bytes(out, n, v.as_bytes()) }
wire! { Option<bool>,
    |f| Some(f.bool()?),
    |out, n, v| if let Some(b) = v { put_bool(out, n, *b) }
}
wire! { Vec<u8>,
    |f| f.bytes()?.to_vec(),
    |out, n, v| if !v.is_empty() { put_bytes(out, n, v) }
}
wire! { Option<&'a [u8]>,
    |f| Some(f.bytes()?),
    |out, n, v| if let Some(d) = v { put_bytes(out, n, d) }
}

/// Repeated uint64: packed or not on the way in, unpacked on the way out (etcd 2.3.7 rejects
/// packed).
impl Wire<'_> for Vec<u64> {
    fn read(&mut self, f: &Field<'_>) -> Result<()> {
        f.repeated_varint(self)
    }

    fn write(&self, out: &mut Vec<u8>, n: u32) {
        for &v in self {
            put_uint(out, n, v);
        }
    }
}

/// A message: its struct, each field with its number, listed in number order (the order etcd
/// writes them), and its `decode` and `encode`. Each field goes by its type's [`Wire`].
/// Unknown field numbers are skipped; a known one with the wrong wire type is an error.
macro_rules! message {
    (
        $(#[$attr:meta])*
        pub struct $name:ident $(<$lt:lifetime>)? {
            $($(#[$field_attr:meta])* $number:literal => pub $field:ident: $type:ty,)+
        }
    ) => {
        $(#[$attr])*
        pub struct $name $(<$lt>)? {
            $($(#[$field_attr])* pub $field: $type,)+
        }

        impl<$($lt)?> $name $(<$lt>)? {
            pub fn decode(buf: &$($lt)? [u8]) -> Result<Self> {
                let mut m = Self::default();
                each(buf, |f| match f.number {
                    $($number => m.$field.read(&f),)+
                    _ => Ok(()),
                })?;
                Ok(m)
            }

            pub fn encode(&self) -> Vec<u8> {
                let mut out = Vec::new();
                $(self.$field.write(&mut out, $number);)+
                out
            }
        }
    };
}

/// [`Wire`] for a message that is a field of another, and for it as an optional field:
/// length-delimited; an error's offset counts from the outer message.
macro_rules! nested_message {
    ($name:ident) => {
        wire! { $name,
            |f| $name::decode(f.bytes()?).map_err(nested(f.value_offset))?,
            |out, n, v| put_bytes(out, n, &v.encode())
        }
        wire! { Option<$name>,
            |f| Some($name::decode(f.bytes()?).map_err(nested(f.value_offset))?),
            |out, n, v| if let Some(m) = v { put_bytes(out, n, &m.encode()) }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// raftpb

/// A raftpb enum: each known value with its number and etcd's Go name (as `etcd-dump-logs`
/// prints it), and `Other` for a number this tool does not know (printed `<Type>(<n>)`).
/// Its zero value is the default, as in Go; it travels as a varint, always written.
macro_rules! raft_enum {
    ($name:ident { $($variant:ident = $raw:literal, $go:literal;)+ }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
            Other(u64),
        }

        impl $name {
            pub fn from_raw(v: u64) -> $name {
                match v {
                    $($raw => $name::$variant,)+
                    o => $name::Other(o),
                }
            }

            pub fn raw(self) -> u64 {
                match self {
                    $($name::$variant => $raw,)+
                    $name::Other(o) => o,
                }
            }

            pub fn name(self) -> String {
                match self {
                    $($name::$variant => $go.into(),)+
                    $name::Other(o) => format!("{}({o})", stringify!($name)),
                }
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name::from_raw(0)
            }
        }

        wire! { $name,
            |f| $name::from_raw(f.varint()?),
            |out, n, v| put_uint(out, n, v.raw())
        }
    };
}

raft_enum! {
    EntryType {
        Normal = 0, "EntryNormal";
        ConfChange = 1, "EntryConfChange";
        ConfChangeV2 = 2, "EntryConfChangeV2";
    }
}

message! {
    /// A raft log entry. `data` empty means a leader's no-op (Go nil and empty are not told apart).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Entry {
        1 => pub entry_type: EntryType,
        2 => pub term: u64,
        3 => pub index: u64,
        4 => pub data: Vec<u8>,
    }
}

message! {
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HardState {
        1 => pub term: u64,
        2 => pub vote: u64,
        3 => pub commit: u64,
    }
}

message! {
    /// Raft membership. Field 1 is `nodes` up to 3.3 and `voters` from 3.4: the same on the wire.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct ConfState {
        1 => pub voters: Vec<u64>,
        2 => pub learners: Vec<u64>,
        3 => pub voters_outgoing: Vec<u64>,
        4 => pub learners_next: Vec<u64>,
        /// 3.4+ always writes it (`28 00`); 2.3.7 keeps it as an unknown field.
        5 => pub auto_leave: Option<bool>,
    }
}

nested_message!(ConfState);

raft_enum! {
    ConfChangeType {
        AddNode = 0, "ConfChangeAddNode";
        RemoveNode = 1, "ConfChangeRemoveNode";
        UpdateNode = 2, "ConfChangeUpdateNode";
        AddLearnerNode = 3, "ConfChangeAddLearnerNode";
    }
}

message! {
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct ConfChange {
        1 => pub id: u64,
        2 => pub change_type: ConfChangeType,
        3 => pub node_id: u64,
        /// For AddNode/UpdateNode: the member's JSON (`{"id":..,"peerURLs":[..],"name":..}`).
        4 => pub context: Vec<u8>,
    }
}

message! {
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct SnapshotMetadata {
        1 => pub conf_state: ConfState,
        2 => pub index: u64,
        3 => pub term: u64,
    }
}

nested_message!(SnapshotMetadata);

message! {
    /// `raftpb.Snapshot`: in a `.snap` file, `data` is the v2 store JSON.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct RaftSnapshot {
        1 => pub data: Vec<u8>,
        2 => pub metadata: SnapshotMetadata,
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

message! {
    /// `walpb.Record`, borrowing its data from the frame it was read from.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct RecordRef<'a> {
        1 => pub rec_type: i64,
        2 => pub crc: u32,
        /// `None` when the field is absent (crc records), as Go's nil slice.
        3 => pub data: Option<&'a [u8]>,
    }
}

message! {
    /// `walpb.Snapshot`: a snapshot record in the WAL. `conf_state` only since 3.5.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct WalSnapshot {
        1 => pub index: u64,
        2 => pub term: u64,
        3 => pub conf_state: Option<ConfState>,
    }
}

impl WalSnapshot {
    pub fn new(index: u64, term: u64) -> WalSnapshot {
        WalSnapshot {
            index,
            term,
            conf_state: None,
        }
    }
}

message! {
    /// `etcdserverpb.Metadata`, the WAL metadata record of an etcd member.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct WalMetadata {
        1 => pub node_id: u64,
        2 => pub cluster_id: u64,
    }
}

message! {
    /// `snappb.Snapshot`: the outer message of a `.snap` file.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct SnapFileMessage {
        1 => pub crc: u32,
        2 => pub data: Vec<u8>,
    }
}

// ---------------------------------------------------------------------------------------------
// etcdserverpb: v2 Request and InternalRaftRequest

message! {
    /// The v2 `etcdserverpb.Request` (what the v2 API and 3.4/3.5 membership publishes propose).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct V2Request {
        1 => pub id: u64,
        2 => pub method: String,
        3 => pub path: String,
        4 => pub val: String,
        5 => pub dir: bool,
        6 => pub prev_value: String,
        7 => pub prev_index: u64,
        8 => pub prev_exist: Option<bool>,
        /// Unix nanoseconds; 0 = no TTL.
        9 => pub expiration: i64,
        10 => pub wait: bool,
        11 => pub since: u64,
        12 => pub recursive: bool,
        13 => pub sorted: bool,
        14 => pub quorum: bool,
        /// Unix nanoseconds (SYNC).
        15 => pub time: i64,
        16 => pub stream: bool,
        17 => pub refresh: Option<bool>,
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
    fn every_message_round_trips_and_writes_what_etcd_writes() {
        let cs = ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            voters_outgoing: vec![4],
            learners_next: vec![5, 6],
            auto_leave: Some(true),
        };
        // Unpacked, in field order, auto_leave last.
        assert_eq!(cs.encode(), hex("0801 0802 1003 1804 2005 2006 2801"));
        assert_eq!(ConfState::decode(&cs.encode()).unwrap(), cs);
        // Packed voters are read too; 2.3.7's ConfState has no auto_leave: none written.
        let packed = ConfState::decode(&hex("0a 02 01 02")).unwrap();
        assert_eq!(packed.voters, vec![1, 2]);
        assert_eq!(packed.encode(), hex("0801 0802"));

        let meta = SnapshotMetadata {
            conf_state: cs.clone(),
            index: 9,
            term: 3,
        };
        assert_eq!(SnapshotMetadata::decode(&meta.encode()).unwrap(), meta);
        let snap = RaftSnapshot {
            data: b"{\"Root\":{}}".to_vec(),
            metadata: meta.clone(),
        };
        assert_eq!(RaftSnapshot::decode(&snap.encode()).unwrap(), snap);
        // Empty data is not written (gogo skips a nil slice); the metadata always is.
        let bare = RaftSnapshot::default();
        assert_eq!(bare.encode(), hex("12 06 0a00 1000 1800"));
        assert_eq!(RaftSnapshot::decode(&bare.encode()).unwrap(), bare);

        let file = SnapFileMessage {
            crc: 0xdead_beef,
            data: snap.encode(),
        };
        assert_eq!(SnapFileMessage::decode(&file.encode()).unwrap(), file);
        assert_eq!(SnapFileMessage::default().encode(), hex("0800"));

        let ws = WalSnapshot {
            index: 63,
            term: 2,
            conf_state: Some(cs.clone()),
        };
        assert_eq!(WalSnapshot::decode(&ws.encode()).unwrap(), ws);
        let crc_record = RecordRef {
            rec_type: CRC_TYPE,
            crc: 7,
            data: None,
        };
        assert_eq!(crc_record.encode(), hex("0804 1007"));
        assert_eq!(RecordRef::decode(&crc_record.encode()).unwrap(), crc_record);
        let md = WalMetadata {
            node_id: u64::MAX,
            cluster_id: 1,
        };
        assert_eq!(WalMetadata::decode(&md.encode()).unwrap(), md);

        let req = V2Request {
            id: 5,
            method: "PUT".into(),
            path: "/0/members/1/attributes".into(),
            val: "{}".into(),
            prev_exist: Some(false),
            expiration: -1,
            time: 1_700_000_000_000_000_000,
            refresh: Some(true),
            ..V2Request::default()
        };
        assert_eq!(V2Request::decode(&req.encode()).unwrap(), req);
    }

    #[test]
    fn raft_enums_keep_unknown_numbers_and_name_them_as_go_does() {
        for raw in 0..5 {
            assert_eq!(EntryType::from_raw(raw).raw(), raw);
            assert_eq!(ConfChangeType::from_raw(raw).raw(), raw);
        }
        assert_eq!(EntryType::default(), EntryType::Normal);
        assert_eq!(EntryType::ConfChangeV2.name(), "EntryConfChangeV2");
        assert_eq!(EntryType::from_raw(7).name(), "EntryType(7)");
        assert_eq!(ConfChangeType::default(), ConfChangeType::AddNode);
        assert_eq!(
            ConfChangeType::from_raw(3).name(),
            "ConfChangeAddLearnerNode"
        );
        assert_eq!(ConfChangeType::from_raw(9).name(), "ConfChangeType(9)");
    }

    #[test]
    fn a_known_field_with_the_wrong_wire_type_is_an_error_at_its_place() {
        // HardState field 2 as bytes.
        let e = HardState::decode(&hex("0801 1201 00")).unwrap_err();
        assert_eq!(e.offset, 2);
        // In a nested ConfState (SnapshotMetadata field 1 at byte 0, its data from byte 2):
        // voters as fixed32 at byte 0 of the ConfState.
        let e = SnapshotMetadata::decode(&hex("0a 05 0d 01000000")).unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(
            e.to_string().contains("field 1 has unexpected wire type 5"),
            "{e}"
        );
        // Unknown fields are skipped.
        let h = HardState::decode(&hex("0801 f807 05 1803")).unwrap();
        assert_eq!((h.term, h.commit), (1, 3));
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
