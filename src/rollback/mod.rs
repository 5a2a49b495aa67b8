//! `rollback2`: turns an etcd 3.x data dir back into an etcd 2.x one (v2 store snapshot plus
//! a fresh WAL), offline, without losing anything it does not say it drops.
//!
//! Flow: check and read everything (WAL CRC chain, every `.snap` CRC, bbolt meta and tree)
//! -> pure conversion ([`convert`], [`cluster`]) -> write the result in `DIR/.rollback.tmp`,
//! fsync -> rename it to `DIR/.rollback.new` (= complete) -> move `DIR/member` and
//! `DIR/version.txt` to `DIR/.rollback.backup` -> move the new `member/` into place. DIR itself
//! is never renamed (it may be a mount point). A crash leaves either the untouched original,
//! or the backup plus a complete result (a rerun finishes the swap: `crate::datadir::leftovers`).
//!
//! Fixed against the Go original: tombstoned keys stay deleted; a HardState is written (without
//! it etcd 3.3.21+/3.4.8+ silently ignore the snapshot); `/0/version` is 2.3.0 for 2.3.7;
//! non-UTF-8 values are refused instead of silently mangled; corrupted input is refused before
//! anything is touched; errors exit non-zero instead of `glog.Fatal` after partial changes.
//!
//! All format code is the shared `storage` layer (bolt, mvcc, wal, snap, proto, v2store), and
//! which `.snap` etcd would start from is `storage::member`'s answer: this module only decides
//! and orchestrates. Errors keep their kind ([`RollbackError`]: refusal, damage, I/O).

pub mod cluster;
pub mod convert;

use crate::datadir::leftovers::Leftovers;
use crate::datadir::{names, Cause, DataDir, DataDirError};
use crate::error::{HasKind, IoError, Kind};
use crate::fsutil::sync_dir;
use crate::storage::bolt::{BoltDb, BoltError};
use crate::storage::member::{probe, Member, PathError, Want};
use crate::storage::proto::{ConfState, HardState, SnapshotMetadata, WalMetadata, WalSnapshot};
use crate::storage::snap::SnapError;
use crate::storage::v2store::{FlatTree, Store};
use crate::storage::wal::WalError;
use crate::storage::{mvcc, snap, wal, Finding};
use cluster::{Change, WalEntry};
use convert::{ConvertError, ConvertOptions, KeyScan, LiveKey, TargetVersion};
use std::fmt;
use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// Expiry given to keys that had a lease (the lease's own TTL is not kept).
    pub ttl: Duration,
    pub target: TargetVersion,
    pub dry_run: bool,
    pub lossy: bool,
    /// "Now" for lease expiry; None = the system clock.
    pub now: Option<SystemTime>,
}

impl Default for RollbackOptions {
    fn default() -> Self {
        RollbackOptions {
            ttl: Duration::from_secs(3600),
            target: TargetVersion::V2_2_1,
            dry_run: false,
            lossy: false,
            now: None,
        }
    }
}

/// What was (or, with `dry_run`, would be) written.
#[derive(Debug, Clone, Default)]
pub struct RollbackReport {
    pub data_dir: PathBuf,
    pub dry_run: bool,
    /// v3 keys written under `/1`.
    pub keys: usize,
    pub dirs: usize,
    pub leased: usize,
    /// The first 10 leased keys (printable).
    pub leased_examples: Vec<String>,
    /// Old v2 user keys (under `/1` of the v2 store, snapshot plus WAL) and the v2 writes in
    /// the WAL: not carried over, as in the original (an etcd 3 cluster normally has none).
    pub old_v2_keys: usize,
    pub old_v2_writes: usize,
    /// Live v3 keys without a leading `/` (printable), not written.
    pub skipped: Vec<String>,
    /// Keys whose newest revision is a delete: absent from the result.
    pub deleted: usize,
    pub lossy_values: usize,
    pub revisions: u64,
    pub members: Vec<u64>,
    pub cluster_version: String,
    /// Raft index and term of the new snapshot: the old HardState's commit, and the term of
    /// the entry at that index.
    pub index: u64,
    pub term: u64,
    /// The member's current term (the old HardState's), kept in the new HardState.
    pub raft_term: u64,
    /// The v2 snapshot the cluster state came from (None: replayed from the start of the WAL).
    pub source_snapshot: Option<PathBuf>,
    pub consistent_index: Option<u64>,
    pub snap_file: PathBuf,
    pub wal_file: PathBuf,
    pub backup: PathBuf,
    /// True when this run only finished the swap of an interrupted earlier run.
    pub resumed: bool,
    /// What an interrupted run left and this run dealt with (or, dry, would deal with):
    /// the `recover: ...` lines of `crate::datadir::leftovers`, as migrate prints them.
    pub leftovers: Vec<String>,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.leftovers {
            writeln!(f, "{line}")?;
        }
        if self.resumed {
            return writeln!(
                f,
                "{} an interrupted rollback of {} (original in {})",
                if self.dry_run {
                    "would complete"
                } else {
                    "completed"
                },
                self.data_dir.display(),
                self.backup.display()
            );
        }
        let verb = if self.dry_run { "would write" } else { "wrote" };
        writeln!(f, "data dir: {}", self.data_dir.display())?;
        writeln!(f, "v3 revisions read: {}", self.revisions)?;
        writeln!(
            f,
            "keys: {} under {} directories ({} with a lease -> ttl)",
            self.keys, self.dirs, self.leased
        )?;
        if !self.leased_examples.is_empty() {
            writeln!(
                f,
                "leased keys: {}{}",
                self.leased_examples.join(", "),
                if self.leased > self.leased_examples.len() {
                    ", ..."
                } else {
                    ""
                }
            )?;
        }
        writeln!(f, "deleted keys left out: {}", self.deleted)?;
        if self.old_v2_keys + self.old_v2_writes > 0 {
            writeln!(
                f,
                "old v2 data not carried over: {} key(s) in the v2 store ({} v2 write(s) in the WAL)",
                self.old_v2_keys, self.old_v2_writes
            )?;
        }
        write!(
            f,
            "skipped keys without a leading '/': {}",
            self.skipped.len()
        )?;
        if !self.skipped.is_empty() {
            let shown: Vec<&str> = self.skipped.iter().take(10).map(|s| s.as_str()).collect();
            write!(
                f,
                " ({}{})",
                shown.join(", "),
                if self.skipped.len() > 10 { ", ..." } else { "" }
            )?;
        }
        writeln!(f)?;
        if self.lossy_values > 0 {
            writeln!(
                f,
                "values changed by --lossy (invalid UTF-8 -> U+FFFD): {}",
                self.lossy_values
            )?;
        }
        let ids: Vec<String> = self.members.iter().map(|m| format!("{m:x}")).collect();
        writeln!(f, "members: {}", ids.join(", "))?;
        writeln!(f, "cluster version: {}", self.cluster_version)?;
        writeln!(
            f,
            "snapshot index/term: {}/{} (raft term {})",
            self.index, self.term, self.raft_term
        )?;
        if let Some(ci) = self.consistent_index {
            writeln!(f, "v3 consistent_index: {ci}")?;
        }
        match &self.source_snapshot {
            Some(p) => writeln!(f, "cluster state from: {} + WAL", p.display())?,
            None => writeln!(f, "cluster state from: WAL only")?,
        }
        writeln!(f, "{verb}: {}", self.snap_file.display())?;
        writeln!(f, "{verb}: {}", self.wal_file.display())?;
        write!(
            f,
            "original {}: {}",
            if self.dry_run {
                "would move to"
            } else {
                "moved to"
            },
            self.backup.display()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// The data dir is not what rollback can work on (missing parts, etcd running, ...).
    #[error("{}: {reason}", path.display())]
    Refused { path: PathBuf, reason: String },
    /// Corrupted input, with file and offset.
    #[error("refusing a damaged data dir: {0}")]
    Corrupt(Finding),
    /// A damaged WAL (`WAL damaged at <file> offset N: ...`).
    #[error("{0} ({UNTOUCHED})")]
    Wal(WalError),
    /// Values or keys the v2 store cannot hold as they are.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The OS refused a read or a write; `state` says where the original is (untouched, or
    /// in the backup).
    #[error("{error} ({state})")]
    Io { error: IoError, state: String },
}

impl HasKind for RollbackError {
    fn kind(&self) -> Kind {
        match self {
            RollbackError::Refused { .. } | RollbackError::Convert(_) => Kind::Refused,
            RollbackError::Corrupt(_) => Kind::Corrupt,
            RollbackError::Wal(e) => e.kind(),
            RollbackError::Io { .. } => Kind::Io,
        }
    }
}

impl From<Finding> for RollbackError {
    fn from(f: Finding) -> Self {
        RollbackError::Corrupt(f)
    }
}

/// The paths rollback uses inside DIR (see `crate::datadir::names`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
    pub backup: PathBuf,
    /// Being built (incomplete by definition).
    pub building: PathBuf,
    /// Complete, fsynced, waiting for the swap.
    pub ready: PathBuf,
}

impl Paths {
    pub fn of(data: &DataDir) -> Paths {
        Paths {
            dir: data.path().to_path_buf(),
            backup: data.entry(names::ROLLBACK_BACKUP),
            building: data.entry(names::ROLLBACK_TMP),
            ready: data.entry(names::ROLLBACK_NEW),
        }
    }
}

const UNTOUCHED: &str = "the data dir is untouched";

fn refused(path: &Path, reason: impl Into<String>) -> RollbackError {
    RollbackError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(op: &str, path: &Path, state: &str) -> impl FnOnce(io::Error) -> RollbackError {
    let (op, path, state) = (op.to_string(), path.to_path_buf(), state.to_string());
    move |source| RollbackError::Io {
        error: IoError::new(op, path, source),
        state,
    }
}

/// A path of the wrong kind is damage; one the OS will not open is I/O.
fn path_err(e: PathError) -> RollbackError {
    match e {
        PathError::Io(e) => read_err(e),
        PathError::Wrong(w) => RollbackError::Corrupt(Finding::in_file(w.path, w.what)),
        PathError::NotADataDir(w) => refused(&w.path, w.what),
    }
}

/// An I/O error reading the input: the data dir is untouched.
fn read_err(error: IoError) -> RollbackError {
    RollbackError::Io {
        error,
        state: UNTOUCHED.to_string(),
    }
}

/// Everything read and decided, before any write.
/// What to write: the store (`/0` and the indexes) and the `/1` keys, borrowed from the db.
struct Plan<'db> {
    store: Store,
    keys: FlatTree<'db>,
    report: RollbackReport,
    metadata: WalMetadata,
}

/// Converts `dir` (an etcd 3.x data dir, etcd stopped) into an etcd 2.x data dir.
/// This is the one entry point of `rollback2`.
///
/// `dir` is resolved to the real directory (a symlink stays a link) and locked (the lock
/// migrate takes too). On success `dir` holds the new `member/{snap,wal}` and no
/// `version.txt`; the original `member/` (with its `db`) and `version.txt` are in
/// `<dir>/.rollback.backup`. The caller writes the new `version.txt` (`2.2.1/etcd2`). On
/// error `member/` and `version.txt` were not changed (see [`RollbackError`]); with
/// `opts.dry_run` nothing is written at all. What an interrupted run left is dealt with
/// first ([`Leftovers`]); when that finishes a rollback, the report says `resumed`.
pub fn rollback_data_dir(
    dir: &Path,
    opts: &RollbackOptions,
) -> Result<RollbackReport, RollbackError> {
    let data = DataDir::resolve(dir).map_err(|e| refused(dir, e.to_string()))?;
    let paths = Paths::of(&data);
    let left = Leftovers::scan(&data);
    let resumed = || RollbackReport {
        data_dir: paths.dir.clone(),
        backup: paths.backup.clone(),
        resumed: true,
        dry_run: opts.dry_run,
        leftovers: left.lines(),
        ..Default::default()
    };
    let finished = left.finishes_rollback();
    if opts.dry_run && finished {
        return Ok(resumed());
    }
    if !opts.dry_run {
        left.recover_legacy_swap(&data)
            .map_err(datadir_err(UNTOUCHED))?;
    }
    match probe(&paths.dir, Want::Dir) {
        Ok(true) => {}
        Ok(false) => return Err(refused(&paths.dir, "no such data directory")),
        Err(PathError::Wrong(w)) => return Err(refused(&w.path, w.what)),
        Err(e) => return Err(path_err(e)),
    }
    // The data dir's own lock (migrate's too): a second rollback2 or a migrate is kept out.
    let _lock = data.lock(Duration::ZERO).map_err(|e| match e.cause {
        Cause::Refused(reason) => refused(&paths.dir, format!("{reason} ({UNTOUCHED})")),
        Cause::Os(_) => datadir_err(UNTOUCHED)(e),
    })?;
    if !opts.dry_run {
        let left = Leftovers::scan(&data);
        left.recover(&data, &crash_point)
            .map_err(datadir_err("rerun to finish the interrupted run"))?;
        if finished || left.finishes_rollback() {
            return Ok(resumed());
        }
    }
    let mut report = rollback_locked(&data, opts)?;
    report.leftovers = left.lines();
    Ok(report)
}

/// [`rollback_data_dir`] for a caller that holds the data dir's lock and has dealt with the
/// leftovers (migrate).
fn rollback_locked(
    data: &DataDir,
    opts: &RollbackOptions,
) -> Result<RollbackReport, RollbackError> {
    let paths = Paths::of(data);
    if paths.backup.exists() {
        return Err(refused(
            &paths.backup,
            format!("backup path already exists; move it away first ({UNTOUCHED})"),
        ));
    }
    let member = paths.dir.join("member");
    let snap_dir = member.join("snap");
    let wal_dir = member.join("wal");
    for d in [&member, &snap_dir, &wal_dir] {
        if !probe(d, Want::Dir).map_err(path_err)? {
            return Err(refused(
                d,
                format!("missing: not an etcd 3.x data dir, or damaged ({UNTOUCHED})"),
            ));
        }
    }
    let db_path = snap_dir.join("db");
    if !probe(&db_path, Want::File).map_err(path_err)? {
        return Err(refused(
            &db_path,
            format!("missing: no v3 backend to roll back ({UNTOUCHED})"),
        ));
    }
    Member::at(&paths.dir, None).probe().map_err(path_err)?;
    // BoltDb holds a shared flock while it is open: refused when etcd runs, and an etcd
    // started meanwhile waits for it until the swap is done.
    let db = open_db(&db_path)?;
    let mut plan = plan(&paths, &db, opts)?;
    if opts.dry_run {
        plan.report.dry_run = true;
        return Ok(plan.report);
    }
    let t0 = std::time::Instant::now();
    write_and_swap(&paths, data, &plan)?;
    log::debug!("wrote and swapped in {:?}", t0.elapsed());
    Ok(plan.report)
}

/// The etcd3 -> etcd2 step of `migrate` (which holds the lock and has recovered): target
/// 2.2.x or 2.3.x, `--ttl 1h` like the Go migrator's `RollbackV3ToV2(dataDir, time.Hour)`.
/// The plan is logged at info level.
pub fn rollback_for_migrate(
    data: &DataDir,
    target: &crate::version::EtcdVersion,
) -> Result<(), RollbackError> {
    let opts = migrate_options(data.path(), target)?;
    let report = rollback_locked(data, &opts)?;
    for line in report.to_string().lines() {
        log::info!("rollback2: {line}");
    }
    Ok(())
}

fn migrate_options(
    data_dir: &Path,
    target: &crate::version::EtcdVersion,
) -> Result<RollbackOptions, RollbackError> {
    let target = match (target.major(), target.minor()) {
        (2, 2) => TargetVersion::V2_2_1,
        (2, 3) => TargetVersion::V2_3_7,
        _ => {
            return Err(refused(
                data_dir,
                format!("rollback2 converts to etcd 2.2 or 2.3 only, not {target}"),
            ))
        }
    };
    Ok(RollbackOptions {
        target,
        ..RollbackOptions::default()
    })
}

/// `--dry-run` of [`rollback_for_migrate`]: every refusal rollback2 would make, before
/// migrate makes its backup.
pub fn rollback_dry_run_for_migrate(
    data: &DataDir,
    target: &crate::version::EtcdVersion,
) -> Result<(), String> {
    let opts = RollbackOptions {
        dry_run: true,
        ..migrate_options(data.path(), target).map_err(|e| e.to_string())?
    };
    rollback_locked(data, &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// etcd2 data (v2 user keys, no v3 key) is refused: converting v3 keys would leave an empty
/// store. Where both exist, the v2 keys dropped (as the original did) are counted first.
fn judge_v2_keys(dir: &Path, v3_keys: usize, v2_keys: usize) -> Result<(), RollbackError> {
    if v2_keys == 0 {
        return Ok(());
    }
    if v3_keys == 0 {
        return Err(refused(
            dir,
            format!(
                "holds etcd2 data: {v2_keys} key(s) in the v2 store and no v3 key. rollback2 \
                 converts the v3 keys into a v2 store and drops the old v2 store, so the result \
                 would be an empty store; refused ({UNTOUCHED}, no backup made). To run etcd \
                 2.x on these keys, restore the etcd 2.x backup taken before the upgrade to \
                 etcd 3; to keep them in etcd 3, convert them to v3 first (migrate \
                 --target-storage etcd3, which runs `etcdctl migrate`) and roll that back"
            ),
        ));
    }
    log::warn!(
        "{}: {v2_keys} key(s) of the old v2 store will be dropped: only the {v3_keys} v3 key(s) \
         are converted (as the original rollback did)",
        dir.display()
    );
    Ok(())
}

/// A failed step of the swap or of the recovery, with the state it leaves.
fn datadir_err(state: &str) -> impl FnOnce(DataDirError) -> RollbackError {
    let state = state.to_string();
    move |e| match e.cause {
        Cause::Os(source) => RollbackError::Io {
            error: IoError::new(e.what, e.path, source),
            state,
        },
        Cause::Refused(reason) => RollbackError::Refused {
            path: e.path,
            reason: format!("{}: {reason} ({state})", e.what),
        },
    }
}

/// Opens the db read-only with its shared flock (etcd holds an exclusive one while it runs).
fn open_db(db: &Path) -> Result<BoltDb, RollbackError> {
    BoltDb::open(db).map_err(|e| match e {
        BoltError::Locked { .. } => refused(
            db,
            format!("locked: etcd is running on this data dir: stop it first ({UNTOUCHED})"),
        ),
        other => bolt_err(db, other),
    })
}

fn bolt_err(db: &Path, e: BoltError) -> RollbackError {
    match e {
        BoltError::Corrupt(f) => RollbackError::Corrupt(f),
        BoltError::NoBucket { .. } => refused(
            db,
            format!("no `key` bucket: not an etcd 3 backend ({UNTOUCHED})"),
        ),
        BoltError::Io(e) => read_err(e),
        BoltError::Locked { .. } => refused(
            db,
            format!("locked: etcd is running on this data dir: stop it first ({UNTOUCHED})"),
        ),
    }
}

fn wal_err(e: WalError) -> RollbackError {
    match e {
        WalError::Io(e) => read_err(e),
        other => RollbackError::Wal(other),
    }
}

fn snap_err(e: SnapError) -> RollbackError {
    e.into_finding()
        .map_or_else(read_err, RollbackError::Corrupt)
}

fn unix_nanos(t: SystemTime) -> i64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

type Wal = wal::WalContents<WalEntry>;

fn plan<'db>(
    paths: &Paths,
    db: &'db BoltDb,
    opts: &RollbackOptions,
) -> Result<Plan<'db>, RollbackError> {
    let member = paths.dir.join("member");
    let snap_dir = member.join("snap");
    let now = unix_nanos(opts.now.unwrap_or_else(SystemTime::now));
    let ttl = i64::try_from(opts.ttl.as_nanos()).unwrap_or(i64::MAX);
    let copts = ConvertOptions {
        lossy: opts.lossy,
        lease_expiry_nanos: now.saturating_add(ttl),
    };
    let files = Member::at(&paths.dir, None);
    let (wal, scan, built) = read_inputs(paths, &files, db, &copts)?;
    let consistent_index = mvcc::read_meta(db)
        .map_err(|e| bolt_err(&db_path(paths), e))?
        .consistent_index;
    let hs = wal_covers_db(&wal, consistent_index.unwrap_or(0))?;
    let metadata = wal
        .metadata
        .ok_or_else(|| wal_damaged(&wal, "the WAL has no metadata record"))?;

    // Every .snap must be sound; the one used is the newest that the WAL confirms (as etcd
    // 3.4.8+ chooses: a snapshot record with its index and term, covered by the HardState).
    if let Some(f) = snap::check(&snap_dir).map_err(read_err)?.into_iter().next() {
        return Err(f.into());
    }
    let chosen = files
        .start_point_given(&wal.snapshots, hs.commit)
        .map_err(snap_err)?
        .snapshot;
    let start = chosen.as_ref().map_or(WalSnapshot::new(0, 0), |s| {
        WalSnapshot::new(s.snapshot.metadata.index, s.snapshot.metadata.term)
    });
    check_log(&wal, &hs, start.index)?;
    refuse_lagging_db(paths, &wal, &hs, consistent_index.unwrap_or(0))?;
    let convert::Converted {
        tree: user,
        keys,
        mut store,
    } = built?;

    let cluster_version = opts.target.cluster_version().to_string();
    let old = old_cluster_state(&wal, chosen.as_ref(), &hs, now, &cluster_version)?;
    judge_v2_keys(&paths.dir, user.keys + user.skipped.len(), old.v2_keys)?;
    let snap_term = snapshot_term(&wal, &hs, chosen.as_ref().map(|_| &start))?;
    let members = cluster::member_ids(&old.store)
        .map_err(|e| RollbackError::Corrupt(Finding::in_file(&snap_dir, e)))?;
    if members.is_empty() {
        return Err(refused(
            &member,
            format!("no members found in the snapshot and WAL ({UNTOUCHED})"),
        ));
    }
    cluster::copy_zero(&old.store, &mut store, now)
        .map_err(|e| refused(&member, format!("cannot copy /0: {e} ({UNTOUCHED})")))?;
    store.reset_event_history();

    let report = RollbackReport {
        data_dir: paths.dir.clone(),
        dry_run: false,
        keys: user.keys,
        dirs: user.dirs,
        leased: user.leased,
        leased_examples: user.leased_examples,
        old_v2_keys: old.v2_keys,
        old_v2_writes: old.v2_writes,
        skipped: user.skipped,
        deleted: scan.deleted,
        lossy_values: user.lossy_values,
        revisions: scan.revisions,
        members,
        cluster_version,
        index: hs.commit,
        term: snap_term,
        raft_term: hs.term,
        source_snapshot: chosen.map(|s| s.path),
        consistent_index,
        snap_file: paths
            .dir
            .join("member/snap")
            .join(snap::snap_file_name(snap_term, hs.commit)),
        wal_file: paths
            .dir
            .join("member/wal")
            .join(wal::segment_file_name(0, 0)),
        backup: paths.backup.clone(),
        resumed: false,
        leftovers: Vec::new(),
    };
    Ok(Plan {
        store,
        keys,
        report,
        metadata,
    })
}

type Built<'db> = Result<convert::Converted<'db>, RollbackError>;

/// Reads the WAL (up to hundreds of MB, only entry summaries kept) on a second thread while
/// this one scans the db and builds the new `/1`; the tree's errors come after the WAL's and
/// the checks' (the caller looks at them last).
fn read_inputs<'db>(
    paths: &Paths,
    member: &Member,
    db: &'db BoltDb,
    copts: &ConvertOptions,
) -> Result<(Wal, KeyScan, Built<'db>), RollbackError> {
    let t0 = std::time::Instant::now();
    let (wal, scanned) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let r = member.read_whole_wal_with(cluster::summarize);
            log::debug!("read the WAL in {:?}", t0.elapsed());
            r
        });
        let scanned = scan_keys(paths, db, copts);
        log::debug!("scanned the db and built the v2 tree in {:?}", t0.elapsed());
        // A panic is a bug, not damage: it goes on as one.
        let wal = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
            .map_err(wal_err);
        (wal, scanned)
    });
    let wal = wal?;
    let (scan, built) = scanned?;
    Ok((wal, scan, built))
}

fn first_segment(wal: &Wal) -> PathBuf {
    wal.segments
        .first()
        .map(|s| s.path.clone())
        .unwrap_or_default()
}

/// The log after the snapshot at `start` is whole up to the HardState's commit.
fn check_log(wal: &Wal, hs: &HardState, start: u64) -> Result<(), RollbackError> {
    let problem = match wal.entries.first().map(|e| e.index) {
        Some(first) if first > start + 1 => format!(
            "the WAL starts at entry {first} but the newest usable snapshot is at {start}: \
             entries are missing"
        ),
        None if hs.commit > start => format!(
            "HardState commit {} but no entries after snapshot {start}",
            hs.commit
        ),
        Some(_) if wal.last_index < hs.commit => {
            let last = wal
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            return Err(Finding::in_file(
                last,
                format!(
                    "HardState commit {} is past the last entry {}",
                    hs.commit, wal.last_index
                ),
            )
            .into());
        }
        _ => return Ok(()),
    };
    Err(Finding::in_file(first_segment(wal), problem).into())
}

/// The db may lag the WAL (3.4 after a crash: up to one uncommitted batch). Committed v3
/// writes the db does not have yet would be lost: refuse, etcd itself would replay them.
fn refuse_lagging_db(
    paths: &Paths,
    wal: &Wal,
    hs: &HardState,
    ci: u64,
) -> Result<(), RollbackError> {
    let missing = wal
        .entries
        .iter()
        .filter(|e| e.v3_write && e.index > ci && e.index <= hs.commit)
        .count();
    if missing == 0 {
        return Ok(());
    }
    Err(refused(
        &db_path(paths),
        format!(
            "the v3 db is behind the WAL: {missing} committed v3 write(s) after consistent_index {ci} \
             (commit {}) are not in it; start etcd on this dir once, stop it cleanly, then rerun ({UNTOUCHED})",
            hs.commit
        ),
    ))
}

/// The old v2 store (membership, `/0`), and what of the old v2 user data is not carried over.
struct OldState {
    store: Store,
    v2_keys: usize,
    v2_writes: usize,
}

/// Cluster state: the chosen snapshot's store, the committed entries after it replayed, and
/// `/0/version` set to the target's cluster version.
fn old_cluster_state(
    wal: &Wal,
    chosen: Option<&snap::LoadedSnapshot>,
    hs: &HardState,
    now: i64,
    cluster_version: &str,
) -> Result<OldState, RollbackError> {
    let mut old = match chosen {
        Some(s) => s.store().map_err(RollbackError::Corrupt)?,
        None => Store::new(),
    };
    let start = chosen.map_or(0, |s| s.snapshot.metadata.index);
    let mut replay = Vec::new();
    let mut v2_writes = 0;
    for e in wal
        .entries
        .iter()
        .filter(|e| e.index > start && e.index <= hs.commit)
    {
        match &e.change {
            Change::None => {}
            Change::Cluster(entry) => replay.push(entry.clone()),
            Change::UserV2Write(entry) => {
                v2_writes += 1;
                replay.push(entry.clone());
            }
            Change::Bad(why) => {
                return Err(Finding::in_file(
                    first_segment(wal),
                    format!("raft entry {}: {why}", e.index),
                )
                .into())
            }
        }
    }
    old.replay_entries(&replay, now);
    // The v2 user keys as etcd would serve them, snapshot plus WAL: only /0 is carried over.
    let v2_keys = cluster::user_keys(&old);
    old.set("/0/version", cluster_version, None, now)
        .map_err(|_| {
            RollbackError::Corrupt(Finding::in_file(
                first_segment(wal),
                "/0/version is a directory in the old store",
            ))
        })?;
    Ok(OldState {
        store: old,
        v2_keys,
        v2_writes,
    })
}

/// raft's snapshot term is the term of the entry at the snapshot index (members at the same
/// commit agree on it; their current terms, in the HardState, may differ).
fn snapshot_term(
    wal: &Wal,
    hs: &HardState,
    snapshot: Option<&WalSnapshot>,
) -> Result<u64, RollbackError> {
    let at = |index: u64| -> Option<&WalEntry> {
        let first = wal.entries.first()?.index;
        wal.entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)
    };
    match (at(hs.commit), snapshot) {
        (Some(e), _) => Ok(e.term),
        (None, Some(s)) if s.index == hs.commit => Ok(s.term),
        _ => Err(Finding::in_file(
            first_segment(wal),
            format!("no entry or snapshot for the committed index {}", hs.commit),
        )
        .into()),
    }
}

/// The WAL's damage at its end (where it stopped: a torn record, or its clean end).
fn wal_damaged(wal: &Wal, problem: &str) -> RollbackError {
    let (file, offset, why) = match &wal.tail {
        wal::WalTail::Torn {
            file,
            offset,
            problem: torn,
        } => (file, *offset, format!("{problem} ({torn})")),
        wal::WalTail::Clean { file, offset } => (file, *offset, problem.to_string()),
    };
    RollbackError::Wal(WalError::Corrupt(Finding::at(file, offset, why)))
}

/// The last HardState, when the WAL still holds what the db applied. A WAL that lost its
/// HardState, or was cut short behind the db, is damage at the place it ends, whatever the db
/// holds; a WAL without one beside an empty db is a refusal.
fn wal_covers_db(wal: &Wal, consistent_index: u64) -> Result<HardState, RollbackError> {
    match wal.hard_state {
        None if consistent_index > 0 || wal.tail.is_torn() => Err(wal_damaged(
            wal,
            &format!("no HardState, but the db has applied entries up to index {consistent_index}"),
        )),
        None => Err(refused(
            wal.segments
                .first()
                .map_or(Path::new(""), |s| s.path.as_path()),
            format!("the WAL has no HardState: nothing was ever committed ({UNTOUCHED})"),
        )),
        // (A clean WAL may lag the db by one batch: etcd applies while it saves the WAL.)
        Some(hs) if hs.commit < consistent_index && wal.tail.is_torn() => Err(wal_damaged(
            wal,
            &format!(
                "the WAL ends at commit {}, but the db has applied entries up to index \
                 {consistent_index}: committed records are lost",
                hs.commit
            ),
        )),
        Some(hs) => Ok(hs),
    }
}

/// One backward pass over bucket `key`: the newest state of every key, the live ones
/// straight into the `/1` tree (keys and values stay borrowed from the db). Two stages on two
/// threads: this one walks the db and finds each key's newest state, a second checks and
/// measures the live keys (in batches, in order).
fn scan_keys<'db>(
    paths: &Paths,
    db: &'db BoltDb,
    copts: &ConvertOptions,
) -> Result<(KeyScan, Built<'db>), RollbackError> {
    const BATCH: usize = 4096;
    let mut scan = KeyScan::default();
    let (revisions, builder) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<LiveKey<'db>>>(4);
        let checker = scope.spawn(move || {
            let mut builder = convert::UserTreeBuilder::new(copts);
            for kv in rx.iter().flatten() {
                builder.add(&kv);
            }
            builder
        });
        let mut batch = Vec::with_capacity(BATCH);
        let revisions = mvcc::for_each_newest(db, &mut |e| {
            if let Some(kv) = scan.add_newest(e) {
                batch.push(kv);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    // the checker only stops by panicking, which join passes on below
                    let _ = tx.send(full);
                }
            }
            Ok(ControlFlow::Continue(()))
        });
        let _ = tx.send(batch);
        drop(tx);
        (revisions, checker.join())
    });
    let builder = builder.unwrap_or_else(|p| std::panic::resume_unwind(p));
    scan.revisions = revisions.map_err(|e| bolt_err(&db_path(paths), e))?;
    let built = builder.finish().map(|mut c| {
        c.keys.borrowed_from(db);
        c
    });
    Ok((scan, built.map_err(RollbackError::Convert)))
}

fn db_path(paths: &Paths) -> PathBuf {
    paths.dir.join("member/snap/db")
}

fn write_and_swap(paths: &Paths, data: &DataDir, plan: &Plan) -> Result<(), RollbackError> {
    // Leftovers of an earlier run that stopped before the swap: never complete results for
    // this DIR (DIR is still the original), so they can go.
    for stale in [&paths.building, &paths.ready] {
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(io_err(
                "cannot remove leftover",
                stale,
                UNTOUCHED,
            ))?;
        }
    }
    let tmp = &paths.building;
    if let Err(error) = build_new_dir(tmp, plan) {
        // "untouched" only when true: the partial copy inside the data dir is gone too.
        let state = match fs::remove_dir_all(tmp) {
            Err(r) if r.kind() != io::ErrorKind::NotFound => format!(
                "member/ and version.txt are untouched; {} could not be removed: {r}",
                tmp.display()
            ),
            _ => UNTOUCHED.to_string(),
        };
        return Err(RollbackError::Io { error, state });
    }
    crash_point("built");
    fs::rename(tmp, &paths.ready).map_err(io_err("cannot rename", tmp, UNTOUCHED))?;
    sync_dir(&paths.dir).map_err(io_err("cannot fsync", &paths.dir, UNTOUCHED))?;
    crash_point("ready");
    let state = format!(
        "the original member/ is in {} or still in place, the complete result in {}; rerun \
         to finish",
        paths.backup.display(),
        paths.ready.display()
    );
    data.swap_in(&paths.ready, &paths.backup, &crash_point)
        .map_err(datadir_err(&state))
}

/// Writes the v2 data dir (snap, WAL, fsynced) at `tmp`.
fn build_new_dir(tmp: &Path, plan: &Plan) -> Result<(), IoError> {
    use std::os::unix::fs::DirBuilderExt;
    let mkdir = |d: &Path| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(d)
            .map_err(IoError::on("cannot create", d))
    };
    mkdir(tmp)?;
    let member = tmp.join("member");
    mkdir(&member)?;
    let snap_dir = member.join("snap");
    mkdir(&snap_dir)?;
    let r = &plan.report;
    let meta = SnapshotMetadata {
        conf_state: ConfState {
            voters: r.members.clone(),
            ..ConfState::default()
        },
        index: r.index,
        term: r.term,
    };
    let user_keys = Some(("1", &plan.keys));
    let len = (plan.store.go_json_len_with(user_keys))
        .map_err(IoError::on("cannot encode", &snap_dir))?;
    snap::write_snap_sized(&snap_dir, &meta, len, &|w| {
        plan.store.write_go_json_with(w, user_keys)
    })
    .map_err(|e| e.into_io(&snap_dir))?;
    crash_point("snap-written");
    // Unpadded frames: etcd 2.x cannot read padded ones, 3.x reads both.
    let wal_dir = member.join("wal");
    let mut w = wal::WalWriter::create(&wal_dir, &plan.metadata, wal::FrameStyle::Unpadded)
        .map_err(|e| e.into_io(&wal_dir))?;
    w.save_snapshot(&WalSnapshot::new(r.index, r.term))
        .and_then(|()| {
            w.save_hard_state(&HardState {
                term: r.raft_term,
                vote: 0,
                commit: r.index,
            })
        })
        .map_err(|e| e.into_io(&wal_dir))?;
    // finish() also fsyncs `member` (the WAL dir's parent, which got `snap` and `wal`)
    w.finish().map_err(|e| e.into_io(&wal_dir))?;
    sync_dir(tmp).map_err(IoError::on("cannot fsync", tmp))
}

/// Test hook: `ROLLBACK2_CRASH_AT=<point>` SIGKILLs the process at that point, so tests can
/// check what a crash leaves behind. Does nothing otherwise.
pub const CRASH_POINT_ENV: &str = "ROLLBACK2_CRASH_AT";

fn crash_point(name: &str) {
    crate::fsutil::crash_point(CRASH_POINT_ENV, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_seam_refuses_other_targets_before_touching_anything() {
        let data = DataDir::resolve(Path::new("/nonexistent/x")).unwrap();
        let v = crate::version::EtcdVersion::new(3, 4, 0);
        let e = rollback_for_migrate(&data, &v).unwrap_err().to_string();
        assert!(e.contains("2.2 or 2.3 only"), "{e}");
        let v = crate::version::EtcdVersion::new(2, 2, 1);
        let e = rollback_for_migrate(&data, &v).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn a_second_rollback_of_the_same_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("rb-lock-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let held = DataDir::resolve(&dir)
            .unwrap()
            .lock(Duration::ZERO)
            .unwrap();
        let e = rollback_data_dir(&dir, &RollbackOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("untouched"), "{e}");
        drop(held);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_are_inside_the_data_dir() {
        let data = DataDir::resolve(Path::new("/var/etcd/data/")).unwrap();
        let p = Paths::of(&data);
        assert_eq!(p.dir, PathBuf::from("/var/etcd/data"));
        assert_eq!(p.backup, PathBuf::from("/var/etcd/data/.rollback.backup"));
        assert_eq!(p.building, PathBuf::from("/var/etcd/data/.rollback.tmp"));
        assert_eq!(p.ready, PathBuf::from("/var/etcd/data/.rollback.new"));
    }

    #[test]
    fn report_lists_what_matters() {
        let r = RollbackReport {
            data_dir: "/d".into(),
            dry_run: true,
            keys: 2,
            dirs: 1,
            leased: 1,
            leased_examples: vec!["\"/a/l\"".into()],
            skipped: vec!["\"compact_rev_key\"".into()],
            members: vec![0xabc, 0x1],
            cluster_version: "2.2.0".into(),
            index: 9,
            term: 3,
            ..Default::default()
        };
        let s = r.to_string();
        for want in [
            "keys: 2 under 1 directories (1 with a lease -> ttl)",
            "leased keys: \"/a/l\"\n",
            "skipped keys without a leading '/': 1 (\"compact_rev_key\")",
            "members: abc, 1",
            "snapshot index/term: 9/3",
            "would write",
        ] {
            assert!(s.contains(want), "{want:?} not in:\n{s}");
        }
    }
}
