//! `rollback2`: turns an etcd 3.x data dir back into an etcd 2.x one (v2 store snapshot plus
//! a fresh WAL), offline, without losing anything it does not say it drops.
//!
//! Flow: check and read everything (WAL CRC chain, every `.snap` CRC, bbolt meta and tree)
//! -> pure conversion ([`convert`], [`cluster`]) -> write the result in a temp dir next to
//! DIR, fsync -> rename it to `DIR.rollback.new` (= complete) -> rename DIR to
//! `DIR.rollback.backup` -> rename the new dir to DIR. A crash leaves either the untouched
//! original, or the backup plus a complete result (a rerun finishes the last rename).
//!
//! Fixed against the Go original: tombstoned keys stay deleted; a HardState is written (without
//! it etcd 3.3.21+/3.4.8+ silently ignore the snapshot); `/0/version` is 2.3.0 for 2.3.7;
//! non-UTF-8 values are refused instead of silently mangled; corrupted input is refused before
//! anything is touched; errors exit non-zero instead of `glog.Fatal` after partial changes.

mod bolt;
pub mod cluster;
pub mod convert;
mod pb;
pub mod snap;
pub mod tree;
pub mod wal;

use crate::storage::Finding;
use convert::{ConvertError, ConvertOptions, Folder, TargetVersion};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tree::{ExpireTime, Node, Store};

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
    /// Old v2 user keys (under `/1` of the v2 snapshot) and v2 writes after it: not carried
    /// over, as in the original (an etcd 3 cluster normally has none).
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
    /// True when this run only finished the renames of an interrupted earlier run.
    pub resumed: bool,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.resumed {
            return writeln!(
                f,
                "completed an interrupted rollback of {} (original in {})",
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
                "old v2 data not carried over: {} key(s) in the v2 snapshot, {} v2 write(s) after it",
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

#[derive(Debug)]
pub enum RollbackError {
    /// The data dir is not what rollback can work on (missing parts, etcd running, ...).
    Refused { path: PathBuf, reason: String },
    /// Corrupted or unreadable input, with file and offset.
    Corrupt(Finding),
    /// Values or keys the v2 store cannot hold as they are.
    Convert(ConvertError),
    /// A filesystem operation failed while writing the result; the original is untouched or
    /// in the backup (the message says which).
    Io {
        op: String,
        path: PathBuf,
        source: io::Error,
        state: String,
    },
}

impl fmt::Display for RollbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackError::Refused { path, reason } => write!(f, "{}: {reason}", path.display()),
            RollbackError::Corrupt(finding) => write!(f, "refusing a damaged data dir: {finding}"),
            RollbackError::Convert(e) => write!(f, "{e}"),
            RollbackError::Io {
                op,
                path,
                source,
                state,
            } => {
                write!(f, "{op} {}: {source} ({state})", path.display())
            }
        }
    }
}

impl std::error::Error for RollbackError {}

impl From<Finding> for RollbackError {
    fn from(f: Finding) -> Self {
        RollbackError::Corrupt(f)
    }
}

/// The sibling paths rollback uses for DIR.
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
    pub fn of(dir: &Path) -> Paths {
        let s = dir.as_os_str().to_string_lossy();
        let s = s.trim_end_matches('/');
        let with = |suffix: &str| PathBuf::from(format!("{s}{suffix}"));
        Paths {
            dir: PathBuf::from(s),
            backup: with(".rollback.backup"),
            building: with(".rollback.tmp"),
            ready: with(".rollback.new"),
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
        op,
        path,
        source,
        state,
    }
}

/// Everything read and decided, before any write.
struct Plan<'db> {
    store: Store<'db>,
    report: RollbackReport,
    metadata: Vec<u8>,
}

/// Converts `dir` (an etcd 3.x data dir, etcd stopped) into an etcd 2.x data dir.
/// This is the one entry point: `rollback2` and `migrate` call it.
///
/// On success `dir` holds only `member/{snap,wal}`; the original (with its `db`, any
/// `version.txt` and anything else) is `<dir>.rollback.backup`. The caller writes the new
/// `version.txt` (`2.2.1/etcd2`). On error nothing under `dir` was changed (see
/// [`RollbackError`]); with `opts.dry_run` nothing is written at all. If a previous run was
/// interrupted between its two final renames, this call finishes it (`report.resumed`).
pub fn rollback_data_dir(
    dir: &Path,
    opts: &RollbackOptions,
) -> Result<RollbackReport, RollbackError> {
    let paths = Paths::of(dir);
    if let Some(r) = resume(&paths)? {
        return Ok(r);
    }
    if !paths.dir.is_dir() {
        return Err(refused(&paths.dir, "no such data directory"));
    }
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
        if !d.is_dir() {
            return Err(refused(
                d,
                format!("missing: not an etcd 3.x data dir, or damaged ({UNTOUCHED})"),
            ));
        }
    }
    let db_path = snap_dir.join("db");
    if !db_path.is_file() {
        return Err(refused(
            &db_path,
            format!("missing: no v3 backend to roll back ({UNTOUCHED})"),
        ));
    }
    let lock = lock_db(&db_path)?;
    let db = bolt::Db::open(&db_path)?;
    let mut plan = plan(&paths, &db, opts)?;
    if opts.dry_run {
        plan.report.dry_run = true;
        return Ok(plan.report);
    }
    let t0 = std::time::Instant::now();
    write_and_swap(&paths, &mut plan)?;
    log::debug!("wrote and swapped in {:?}", t0.elapsed());
    drop(lock);
    Ok(plan.report)
}

/// The etcd3 -> etcd2 step of `migrate`: target 2.2.x or 2.3.x, `--ttl 1h` like the Go migrator's
/// `RollbackV3ToV2(dataDir, time.Hour)`. The plan is logged at info level.
pub fn rollback_for_migrate(
    data_dir: &Path,
    target: &crate::version::EtcdVersion,
) -> Result<(), String> {
    let target = match (target.major(), target.minor()) {
        (2, 2) => TargetVersion::V2_2_1,
        (2, 3) => TargetVersion::V2_3_7,
        _ => {
            return Err(format!(
                "rollback2 converts to etcd 2.2 or 2.3 only, not {target}"
            ))
        }
    };
    let opts = RollbackOptions {
        target,
        ..RollbackOptions::default()
    };
    let report = rollback_data_dir(data_dir, &opts).map_err(|e| e.to_string())?;
    for line in report.to_string().lines() {
        log::info!("rollback2: {line}");
    }
    Ok(())
}

/// Finishes an interrupted run: DIR gone, backup and complete result present.
fn resume(paths: &Paths) -> Result<Option<RollbackReport>, RollbackError> {
    if paths.dir.exists() || !paths.backup.is_dir() || !paths.ready.is_dir() {
        return Ok(None);
    }
    let state = format!("the original is in {}", paths.backup.display());
    fs::rename(&paths.ready, &paths.dir).map_err(io_err("cannot rename", &paths.ready, &state))?;
    sync_parent(&paths.dir).map_err(io_err("cannot fsync parent of", &paths.dir, &state))?;
    Ok(Some(RollbackReport {
        data_dir: paths.dir.clone(),
        backup: paths.backup.clone(),
        resumed: true,
        ..Default::default()
    }))
}

/// An exclusive non-blocking flock on the db: etcd holds one while it runs, and ours keeps
/// an etcd from starting on the dir while we read it.
fn lock_db(db: &Path) -> Result<fs::File, RollbackError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(db).map_err(|e| refused(db, format!("cannot open: {e}")))?;
    // SAFETY: flock on an fd we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(refused(
                db,
                format!(
                    "locked: is etcd still running on this data dir? Stop it first ({UNTOUCHED})"
                ),
            ));
        }
        return Err(refused(db, format!("cannot lock: {e}")));
    }
    Ok(f)
}

fn plan<'db>(
    paths: &Paths,
    db: &'db bolt::Db,
    opts: &RollbackOptions,
) -> Result<Plan<'db>, RollbackError> {
    let member = paths.dir.join("member");
    let snap_dir = member.join("snap");
    let t0 = std::time::Instant::now();
    // The WAL (up to hundreds of MB) is read on a second thread while this one scans the db.
    let wal_dir = member.join("wal");
    let (wal, scanned) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let r = wal::read(&wal_dir);
            log::debug!("read the WAL in {:?}", t0.elapsed());
            r
        });
        let scanned = scan_keys(paths, db);
        let wal = match reader.join() {
            Ok(r) => r,
            Err(_) => Err(Finding::in_file(&wal_dir, "the WAL reader thread failed")),
        };
        (wal, scanned)
    });
    let wal = wal?;
    let folder = scanned?;
    let hs = wal.hard_state.ok_or_else(|| {
        refused(
            &member.join("wal"),
            format!("the WAL has no HardState: nothing was ever committed ({UNTOUCHED})"),
        )
    })?;

    // Every .snap must be sound; the one used is the newest that the WAL confirms (as etcd
    // 3.4.8+ chooses).
    let snaps = snap::list(&snap_dir)?;
    let mut chosen = None;
    for s in &snaps {
        let body = snap::read(&s.path)?;
        if (body.index, body.term) != (s.index, s.term) {
            return Err(Finding::in_file(
                &s.path,
                format!(
                    "file name says term {} index {}, metadata says term {} index {}",
                    s.term, s.index, body.term, body.index
                ),
            )
            .into());
        }
        let confirmed = wal.snapshots.contains(&(s.index, s.term)) && s.index <= hs.commit;
        if chosen.is_none() && confirmed {
            chosen = Some((s.path.clone(), body));
        }
    }
    let start = chosen.as_ref().map_or(0, |(_, b)| b.index);
    if let Some(first) = wal.first_index {
        if first > start + 1 {
            return Err(Finding::in_file(
                &wal.files[0],
                format!("the WAL starts at entry {first} but the newest usable snapshot is at {start}: entries are missing"),
            )
            .into());
        }
    } else if hs.commit > start {
        return Err(Finding::in_file(
            &wal.files[0],
            format!(
                "HardState commit {} but no entries after snapshot {start}",
                hs.commit
            ),
        )
        .into());
    }
    if wal.last_index < hs.commit && wal.first_index.is_some() {
        return Err(Finding::in_file(
            wal.files.last().cloned().unwrap_or_default(),
            format!(
                "HardState commit {} is past the last entry {}",
                hs.commit, wal.last_index
            ),
        )
        .into());
    }

    log::debug!("scanned bucket key in {:?}", t0.elapsed());
    let consistent_index = db
        .get(b"meta", b"consistent_index")?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes);
    // The db may lag the WAL (3.4 after a crash: up to one uncommitted batch). Committed v3
    // writes the db does not have yet would be lost: refuse, etcd itself would replay them.
    let ci = consistent_index.unwrap_or(0);
    let missing = wal
        .v3_writes
        .iter()
        .filter(|i| **i > ci && **i <= hs.commit)
        .count();
    if missing > 0 {
        return Err(refused(
            &db_path(paths),
            format!(
                "the v3 db is behind the WAL: {missing} committed v3 write(s) after consistent_index {ci} \
                 (commit {}) are not in it; start etcd on this dir once, stop it cleanly, then rerun ({UNTOUCHED})",
                hs.commit
            ),
        ));
    }
    let scan = folder.finish();
    let now = opts.now.unwrap_or_else(SystemTime::now);
    let expiry = now + opts.ttl;
    let since = expiry.duration_since(UNIX_EPOCH).unwrap_or_default();
    let copts = ConvertOptions {
        lossy: opts.lossy,
        lease_expiry: ExpireTime {
            unix_secs: since.as_secs() as i64,
            nanos: since.subsec_nanos(),
        },
    };
    log::debug!("folded {} revisions in {:?}", scan.revisions, t0.elapsed());
    let user = convert::user_tree(&scan.live, &copts).map_err(RollbackError::Convert)?;
    log::debug!("built the v2 tree in {:?}", t0.elapsed());

    // cluster state
    let (source_snapshot, mut zero) = match &chosen {
        Some((p, body)) => (
            Some(p.clone()),
            cluster::from_store_json(&body.data)
                .map_err(|e| RollbackError::Corrupt(Finding::in_file(p, e)))?,
        ),
        None => (None, Node::dir(0)),
    };
    // raft's snapshot term is the term of the entry at the snapshot index (members at the
    // same commit agree on it; their current terms, in the HardState, may differ)
    let snap_term = match wal.entry_term(hs.commit) {
        Some(t) => t,
        None => match &chosen {
            Some((_, b)) if b.index == hs.commit => b.term,
            _ => {
                return Err(Finding::in_file(
                    &wal.files[0],
                    format!("no entry or snapshot for the committed index {}", hs.commit),
                )
                .into())
            }
        },
    };
    let committed: Vec<_> = wal
        .entries
        .iter()
        .filter(|e| e.index > start && e.index <= hs.commit)
        .cloned()
        .collect();
    cluster::replay(&mut zero, &committed)
        .map_err(|e| RollbackError::Corrupt(Finding::in_file(member.join("wal"), e)))?;
    let old_v2_keys = chosen
        .as_ref()
        .map_or(0, |(_, b)| cluster::user_keys_in_store_json(&b.data));
    let old_v2_writes = committed
        .iter()
        .filter(|e| e.change == wal::ClusterChange::UserV2Write)
        .count();
    let cluster_version = opts.target.cluster_version().to_string();
    zero.set_file(
        &["version"],
        Node::File {
            value: cluster_version.clone().into(),
            created: 0,
            modified: 0,
            expire: None,
        },
        0,
    )
    .map_err(|_| refused(&member, "/0/version is a directory in the old store"))?;
    let members = cluster::member_ids(&zero)
        .map_err(|e| RollbackError::Corrupt(Finding::in_file(&snap_dir, e)))?;
    if members.is_empty() {
        return Err(refused(
            &member,
            format!("no members found in the snapshot and WAL ({UNTOUCHED})"),
        ));
    }
    let last = cluster::reindex(&mut zero, user.last_index);

    let mut root = Node::dir(0);
    if let Some(ch) = root.children_mut() {
        ch.insert("0".into(), zero);
        ch.insert("1".into(), user.tree);
    }
    let report = RollbackReport {
        data_dir: paths.dir.clone(),
        dry_run: false,
        keys: user.keys,
        dirs: user.dirs,
        leased: user.leased,
        leased_examples: user.leased_examples,
        old_v2_keys,
        old_v2_writes,
        skipped: user.skipped,
        deleted: scan.deleted,
        lossy_values: user.lossy_values,
        revisions: scan.revisions,
        members: members.clone(),
        cluster_version,
        index: hs.commit,
        term: snap_term,
        raft_term: hs.term,
        source_snapshot,
        consistent_index,
        snap_file: paths
            .dir
            .join("member/snap")
            .join(snap::name(snap_term, hs.commit)),
        wal_file: paths
            .dir
            .join("member/wal/0000000000000000-0000000000000000.wal"),
        backup: paths.backup.clone(),
        resumed: false,
    };
    Ok(Plan {
        store: Store {
            root,
            current_index: last,
        },
        report,
        metadata: wal.metadata,
    })
}

/// Folds bucket `key` of the db into the newest state of every key.
fn scan_keys<'db>(paths: &Paths, db: &'db bolt::Db) -> Result<Folder<'db>, RollbackError> {
    let mut folder = Folder::default();
    let found = db
        .for_each(b"key", &mut |k, v| folder.add(k, v))
        .map_err(|e| match e {
            bolt::WalkError::Format(f) => RollbackError::Corrupt(f),
            bolt::WalkError::Visit(b) => RollbackError::Corrupt(Finding::in_file(
                db_path(paths),
                format!("bucket key, revision {}: {}", b.revision, b.problem),
            )),
        })?;
    if !found {
        return Err(refused(
            &db_path(paths),
            format!("no `key` bucket: not an etcd 3 backend ({UNTOUCHED})"),
        ));
    }
    Ok(folder)
}

fn db_path(paths: &Paths) -> PathBuf {
    paths.dir.join("member/snap/db")
}

fn write_and_swap(paths: &Paths, plan: &mut Plan<'_>) -> Result<(), RollbackError> {
    use std::os::unix::fs::DirBuilderExt;
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
    let build = || -> io::Result<()> {
        fs::DirBuilder::new().mode(0o700).create(tmp)?;
        let member = tmp.join("member");
        fs::DirBuilder::new().mode(0o700).create(&member)?;
        let snap_dir = member.join("snap");
        fs::DirBuilder::new().mode(0o700).create(&snap_dir)?;
        let r = &plan.report;
        let store = &plan.store;
        snap::write(&snap_dir, r.term, r.index, &r.members, &|w| {
            store.write_json(w)
        })?;
        crash_point("snap-written");
        fs::File::open(&snap_dir)?.sync_all()?;
        wal::write_new(
            &member.join("wal"),
            &plan.metadata,
            r.index,
            r.term,
            r.raft_term,
        )?;
        fs::File::open(&member)?.sync_all()?;
        fs::File::open(tmp)?.sync_all()?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = fs::remove_dir_all(tmp);
        return Err(io_err("cannot write the new data dir in", tmp, UNTOUCHED)(
            e,
        ));
    }
    crash_point("built");
    fs::rename(tmp, &paths.ready).map_err(io_err("cannot rename", tmp, UNTOUCHED))?;
    sync_parent(&paths.dir).map_err(io_err("cannot fsync parent of", &paths.dir, UNTOUCHED))?;
    crash_point("ready");
    fs::rename(&paths.dir, &paths.backup).map_err(io_err(
        "cannot move the original to",
        &paths.backup,
        UNTOUCHED,
    ))?;
    let state = format!(
        "the original is in {}, the complete result in {}; rerun to finish",
        paths.backup.display(),
        paths.ready.display()
    );
    sync_parent(&paths.dir).map_err(io_err("cannot fsync parent of", &paths.dir, &state))?;
    crash_point("backed-up");
    fs::rename(&paths.ready, &paths.dir).map_err(io_err("cannot rename", &paths.ready, &state))?;
    sync_parent(&paths.dir).map_err(io_err("cannot fsync parent of", &paths.dir, &state))?;
    crash_point("swapped");
    Ok(())
}

/// Test hook: `ROLLBACK2_CRASH_AT=<point>` SIGKILLs the process at that point, so tests can
/// check what a crash leaves behind. Does nothing otherwise.
pub const CRASH_POINT_ENV: &str = "ROLLBACK2_CRASH_AT";

fn crash_point(name: &str) {
    if std::env::var(CRASH_POINT_ENV).ok().as_deref() == Some(name) {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, like a power cut for us.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn sync_parent(p: &Path) -> io::Result<()> {
    let parent = match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x,
        _ => Path::new("."),
    };
    fs::File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_seam_refuses_other_targets_before_touching_anything() {
        let v = crate::version::EtcdVersion::new(3, 4, 0);
        let e = rollback_for_migrate(Path::new("/nonexistent/x"), &v).unwrap_err();
        assert!(e.contains("2.2 or 2.3 only"), "{e}");
        let v = crate::version::EtcdVersion::new(2, 2, 1);
        let e = rollback_for_migrate(Path::new("/nonexistent/x"), &v).unwrap_err();
        assert!(e.contains("no such data directory"), "{e}");
    }

    #[test]
    fn sibling_paths() {
        let p = Paths::of(Path::new("/var/etcd/data/"));
        assert_eq!(p.dir, PathBuf::from("/var/etcd/data"));
        assert_eq!(p.backup, PathBuf::from("/var/etcd/data.rollback.backup"));
        assert_eq!(p.building, PathBuf::from("/var/etcd/data.rollback.tmp"));
        assert_eq!(p.ready, PathBuf::from("/var/etcd/data.rollback.new"));
        assert_eq!(
            Paths::of(Path::new("data")).backup,
            PathBuf::from("data.rollback.backup")
        );
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
