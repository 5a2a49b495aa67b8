//! Executes a migration: lock, recover a half-done swap, read (or detect) the current version,
//! plan, pre-flight, then each step, writing `version.txt` after every one.
//!
//! Crash safety (SIGKILL at any instant, then a rerun, ends at the target with every key):
//! - `version.txt` changes only by temp + fsync + rename, after a step is complete, so a
//!   rerun redoes at most the interrupted step.
//! - A started etcd dies with us (`PR_SET_PDEATHSIG`); the lock is a flock, released by the
//!   kernel.
//! - Everything a rerun needs lives inside the data dir (see `crate::datadir`), which is
//!   never renamed (it may be a mount point). A downgrade never modifies `member/` in place:
//!   it snapshots it, restores into `<dir>/.restore`, writes the target `version.txt` there
//!   and then creates the marker `<dir>/.restore.complete`. Only then is `member/` moved to
//!   `<dir>/.bak` and the restored one moved into its place. On start, the leftovers scan
//!   (`crate::datadir::leftovers`) finishes a swap that began and discards everything else,
//!   after which the data dir holds either the old data with the old `version.txt` (the
//!   downgrade is redone) or the new data with the target.
//! - etcd2 -> etcd3 backs up to `<dir>/.bak` first and records that in `<dir>/.v2v3-backup`;
//!   an interrupted conversion is rolled back from that backup before it is retried.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::config::{join, Config};
use super::plan::{plan, restore_tool, PlanError, Step};
use crate::datadir::leftovers::{Leftovers, View};
use crate::datadir::{names, remove_tree, set_mode, DataDir, DataDirError};
use crate::error::{HasKind, IoError, Kind};
use crate::etcd::client::HttpClient;
use crate::etcd::process::{run_tool, EtcdProcess, EtcdSpec, ProcessError};
use crate::rollback::RollbackError;
use crate::storage::member::{Member, MemberError};
use crate::storage::Finding;
use crate::version::{
    read_version_file, sync_dir, write_version_file, EtcdVersion, Storage, VersionFile,
    VersionFileError, VersionPair,
};

/// How long etcdctl/etcdutl may take (snapshot of a large db, restore, migrate).
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);
/// Grace period after SIGTERM before SIGKILL (the original waited 2 min after SIGINT).
const STOP_GRACE: Duration = Duration::from_secs(120);
/// TTL of the lease attached to the keys under `--ttl-keys-directory` after etcd2 -> etcd3.
const TTL_LEASE_SECONDS: u64 = 3600;
/// How long a cluster member's etcd keeps running after it saw every member run the step's
/// etcd, so the slowest one gets ready with a quorum.
const PEER_GRACE: Duration = Duration::from_secs(2);
/// Test-only hook: when this env var names a crash point, migrate SIGKILLs itself there.
pub const CRASH_POINT_ENV: &str = "ETCDTOOLS_MIGRATE_CRASH_AT";

/// Why a migration failed; [`HasKind`] gives the exit code (`Migration failed: ...` either way).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    VersionFile(#[from] VersionFileError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The data dir could not be read (I/O) or is damaged (what `etcd-inspect` says).
    #[error(transparent)]
    Member(#[from] MemberError),
    /// The pre-flight integrity check found damage.
    #[error("integrity check of {} failed: {} problem(s): {}", dir.display(), findings.len(), show_findings(findings))]
    Damaged {
        dir: PathBuf,
        findings: Vec<Finding>,
    },
    /// The etcd3 -> etcd2 step failed; the data before it is in `backup`.
    #[error("rollback to etcd {to} failed: {source}; the data before it is in {}", backup.display())]
    Rollback {
        to: EtcdVersion,
        backup: PathBuf,
        source: Box<RollbackError>,
    },
    /// A file operation the OS refused.
    #[error(transparent)]
    Io(#[from] IoError),
    /// As `Io`, with another way out than fixing the file system.
    #[error("{source} ({remedy})")]
    IoWithRemedy {
        source: IoError,
        remedy: &'static str,
    },
    /// What migrate was doing when `source` failed; the kind is `source`'s.
    #[error("{doing}: {source}")]
    During {
        doing: String,
        source: Box<MigrateError>,
    },
    #[error("{0}")]
    Preflight(String),
    #[error("{0}")]
    Other(String),
}

impl HasKind for MigrateError {
    fn kind(&self) -> Kind {
        match self {
            MigrateError::DataDir(e) => e.kind(),
            MigrateError::VersionFile(e) => e.kind(),
            MigrateError::Member(e) => e.kind(),
            // Only a torn last record: etcd repairs that itself; a refusal with its remedy.
            MigrateError::Damaged { findings, .. } if torn_only(findings) => Kind::Refused,
            MigrateError::Damaged { .. } => Kind::Corrupt,
            MigrateError::Rollback { source, .. } => source.kind(),
            MigrateError::During { source, .. } => source.kind(),
            MigrateError::Process(e) => e.kind(),
            MigrateError::Io(_) | MigrateError::IoWithRemedy { .. } => Kind::Io,
            MigrateError::Plan(_) | MigrateError::Preflight(_) | MigrateError::Other(_) => {
                Kind::Refused
            }
        }
    }
}

fn torn_only(findings: &[Finding]) -> bool {
    let shown: Vec<String> = findings.iter().take(10).map(ToString::to_string).collect();
    super::preflight::torn_wal_remedy(&shown).is_some()
}

/// The first ten findings, `; `-separated, and what to do when the only damage is a torn
/// last record.
fn show_findings(findings: &[Finding]) -> String {
    let shown: Vec<String> = findings.iter().take(10).map(ToString::to_string).collect();
    let more = if findings.len() > 10 { "; ..." } else { "" };
    let remedy = super::preflight::torn_wal_remedy(&shown)
        .map(|r| format!(". {r}"))
        .unwrap_or_default();
    format!("{}{more}{remedy}", shown.join("; "))
}

// ---------------------------------------------------------------------------------------
// Seams for work of other engineers: each is ONE function, wired by replacing its body.
// ---------------------------------------------------------------------------------------

/// Why [`detect_version`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The files could not be read (I/O) or decoded.
    #[error(transparent)]
    Unreadable(#[from] MemberError),
    /// They were read but do not tell the version.
    #[error("{0}")]
    Unknown(String),
}

impl From<String> for DetectError {
    fn from(s: String) -> Self {
        DetectError::Unknown(s)
    }
}

/// What [`detect_version`] found in a data dir without a usable `version.txt`.
#[derive(Debug, Clone)]
pub struct Detected {
    pub pair: VersionPair,
    /// What the decision rests on, for the log (e.g. "bbolt cluster/clusterVersion 3.5.0").
    pub evidence: String,
}

/// The version of a non-empty data dir that has no (or an
/// empty) `version.txt`, from its files. Errors unless the answer is unambiguous: the storage
/// kind is known and every cluster version recorded (bbolt `cluster/clusterVersion`, v2 store
/// `/0/version`) names the same minor. Files record only `<major>.<minor>.0`; the caller
/// picks the patch.
pub fn detect_version(data_dir: &Path) -> Result<Detected, DetectError> {
    let member = Member::at(data_dir, None);
    let found = member.version()?;
    let layout = member.paths();
    // Without the db's facts, v2 keys alone do not tell etcd2 data from etcd3 data that was
    // converted from etcd2 (the v2 store keeps its keys); guessing etcd2 there would convert
    // again and overwrite newer v3 values.
    if layout.db.is_file() {
        if let Err(e) = member.db_facts() {
            if e.kind() == Kind::Io {
                return Err(DetectError::Unreadable(MemberError::from(e)));
            }
            return Err(format!("the bbolt db cannot be read: {e}").into());
        }
    }
    let notes = if found.notes.is_empty() {
        String::new()
    } else {
        let notes: Vec<String> = found.notes.iter().map(ToString::to_string).collect();
        format!(" (notes: {})", notes.join("; "))
    };
    if found.storage.is_none() && !layout.db.exists() && found.v2_keys == 0 {
        return Err(format!(
            "the db is missing ({}), and the files are etcd {} data, not etcd2",
            layout.db.display(),
            found.cluster_version_v2.as_deref().unwrap_or_default()
        )
        .into());
    }
    let storage: Storage = match found.storage {
        Some(s) => s,
        None => return Err(format!("cannot tell etcd2 from etcd3 storage{notes}").into()),
    };
    let mut seen: Vec<(EtcdVersion, &str)> = Vec::new();
    for (v, source) in [
        (&found.cluster_version_db, "bbolt cluster/clusterVersion"),
        (&found.cluster_version_v2, "v2 store /0/version"),
    ] {
        if let Some(v) = v {
            let parsed: EtcdVersion = v
                .parse()
                .map_err(|e| DetectError::Unknown(format!("{source} holds {v:?}: {e}")))?;
            seen.push((parsed, source));
        }
    }
    let Some((first, _)) = seen.first() else {
        return Err(format!("no cluster version is recorded in the files{notes}").into());
    };
    if seen.iter().any(|(v, _)| !v.major_minor_equals(first)) {
        let all: Vec<String> = seen.iter().map(|(v, s)| format!("{s} = {v}")).collect();
        return Err(format!("the files disagree: {}{notes}", all.join(", ")).into());
    }
    let evidence: Vec<String> = seen.iter().map(|(v, s)| format!("{s} = {v}")).collect();
    Ok(Detected {
        pair: VersionPair::new(EtcdVersion::new(first.major(), first.minor(), 0), storage),
        evidence: format!("{storage} data, {}{notes}", evidence.join(", ")),
    })
}

/// The integrity check run before a destructive step (etcd-inspect `check`): WAL framing and
/// CRC chain, snap files, v2 store, bbolt meta and page tree, mvcc decoding. `Damaged` holds
/// the findings (file and offset each); a file the OS will not read is an I/O error.
pub fn check_integrity(data_dir: &Path) -> Result<(), MigrateError> {
    let findings = Member::at(data_dir, None).check()?;
    if findings.is_empty() {
        return Ok(());
    }
    Err(MigrateError::Damaged {
        dir: data_dir.to_path_buf(),
        findings,
    })
}

/// Before any etcd starts on the data dir: every path it opens is what it should be (etcd
/// panics on a db that is a directory, blocks on a FIFO).
pub fn check_paths(data_dir: &Path) -> Result<(), MigrateError> {
    Member::at(data_dir, None)
        .probe()
        .map_err(|e| MemberError::from(e).into())
}

// ---------------------------------------------------------------------------------------

/// Test hook: SIGKILL ourselves at a named point when `ETCDTOOLS_MIGRATE_CRASH_AT` names it,
/// so crash tests hit exact points between two effects. Does nothing otherwise.
fn crash_point(name: &str) {
    crate::fsutil::crash_point(CRASH_POINT_ENV, name);
}

/// Test hook: whether `ETCDTOOLS_MIGRATE_CRASH_AT` (a `,`-separated list) names `name`.
pub(super) fn test_hook(name: &str) -> bool {
    std::env::var(CRASH_POINT_ENV).is_ok_and(|v| v.split(',').any(|p| p == name))
}

fn v2v3_journal(data: &DataDir) -> PathBuf {
    data.entry(names::V2V3_JOURNAL)
}

/// After the data reached the target, an etcd2 -> etcd3 journal is stale.
fn finish_v2v3_journal(data: &DataDir) -> Result<(), MigrateError> {
    remove_tree(&v2v3_journal(data))?;
    Ok(())
}

/// Finishes or discards what an interrupted run left (see [`Leftovers`]). Needs the lock.
pub fn recover(data: &DataDir) -> Result<(), MigrateError> {
    Leftovers::scan(data).recover(data, &crash_point)?;
    Ok(())
}

/// What a run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Empty or new data dir: only `version.txt` written.
    Initialized,
    AlreadyAtTarget,
    Migrated {
        from: VersionPair,
        steps: usize,
    },
    DryRun,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Initialized => f.write_str("empty data dir initialized"),
            Outcome::AlreadyAtTarget => f.write_str("already at the target"),
            Outcome::Migrated { from, steps } => {
                write!(f, "migrated from {from} in {steps} step(s)")
            }
            Outcome::DryRun => f.write_str("dry run, nothing changed"),
        }
    }
}

/// Runs migrate with a resolved config.
pub fn run(cfg: &Config) -> Result<Outcome, MigrateError> {
    super::preflight::check_not_member_dir(&cfg.data_dir).map_err(MigrateError::Preflight)?;
    let data = DataDir::resolve(&cfg.data_dir)?;
    log::info!("Starting migration to {}", cfg.target);
    check_bundle(cfg)?;
    if cfg.dry_run {
        return dry_run(cfg, &data);
    }
    // An older release may have renamed the data dir away: put it back before it is created.
    Leftovers::scan(&data).recover_legacy_swap(&data)?;
    data.create_if_missing()?;
    let _lock = data.lock(cfg.lock_timeout)?;
    recover(&data)?;
    if data.is_empty()? {
        log::info!(
            "data directory '{}' is empty, writing target version '{}' to version.txt",
            data.path().display(),
            cfg.target
        );
        move_binaries(cfg)?;
        write_version_file(data.path(), &cfg.target)?;
        return Ok(Outcome::Initialized);
    }
    let here = View::here(&data);
    let current = current_version(&data, &here, cfg)?;
    let steps = plan(&current, &cfg.target, &cfg.bundled)?;
    if steps.is_empty() {
        log::info!("data is already at the target {}", cfg.target);
        move_binaries(cfg)?;
        // A detected version is recorded, so the next run need not detect again.
        write_version_file(data.path(), &cfg.target)?;
        finish_v2v3_journal(&data)?;
        super::verify::finish_step(&data)?;
        return Ok(Outcome::AlreadyAtTarget);
    }
    log::info!(
        "Converging current version '{current}' to target version '{}'",
        cfg.target
    );
    for (i, s) in steps.iter().enumerate() {
        log::info!("  step {}: {s}", i + 1);
    }
    preflight(cfg, &data, &here, &steps, 0)?;
    move_binaries(cfg)?;
    let runner = Runner {
        cfg,
        data: &data,
        client: HttpClient::plain(),
        step_no: Default::default(),
        last_after: Default::default(),
        offline_before: Default::default(),
    };
    let (mut at, mut served) = (current.clone(), None);
    for (i, step) in steps.iter().enumerate() {
        let started = Instant::now();
        served = runner.verified_step(i + 1, step, &at, served)?;
        write_version_file(data.path(), &step.result())?;
        super::verify::finish_step(&data)?;
        at = step.result();
        crash_point("after-version-write");
        log::info!(
            "done in {:?}: {step}; version.txt is {}",
            started.elapsed(),
            step.result()
        );
    }
    finish_v2v3_journal(&data)?;
    Ok(Outcome::Migrated {
        from: current,
        steps: steps.len(),
    })
}

/// The current pair: `version.txt` in `view.version_dir` checked against the files in
/// `view.files_dir` (see [`super::preflight::judge_claim`]), or for a missing/empty one the
/// version detected from those files.
fn current_version(data: &DataDir, view: &View, cfg: &Config) -> Result<VersionPair, MigrateError> {
    let bundled = &cfg.bundled;
    let file = data.path().join(crate::version::VERSION_FILE);
    let why = match read_version_file(&view.version_dir)? {
        VersionFile::Parsed(p) => {
            let journal = v2v3_journal(data).exists();
            return super::preflight::check_claim(view, p, cfg, journal)
                .map_err(MigrateError::Preflight);
        }
        VersionFile::Missing => "has no version.txt",
        VersionFile::Empty => {
            "has an empty version.txt (a disk that filled up while it was written?)"
        }
    };
    match detect_version(&view.files_dir) {
        Ok(d) => {
            // The files name only the minor; take the highest bundled patch of it.
            let mut pair = d.pair.clone();
            if let Some(v) = bundled
                .iter()
                .filter(|b| b.major_minor_equals(&pair.version) && !b.is_prerelease())
                .max()
            {
                pair.version = v.clone();
            }
            log::warn!(
                "data directory '{}' {why}; detected etcd {} from the files ({}); going on as {pair}",
                data.path().display(),
                d.pair.version.minor_string(),
                d.evidence
            );
            Ok(pair)
        }
        // Unreadable or damaged files: a version.txt would not help, say what is wrong.
        Err(DetectError::Unreadable(e)) => Err(e.into()),
        Err(reason) => Err(MigrateError::Other(format!(
            "existing data directory '{}' {why}; cannot tell the version: {reason}; \
             write the version of the etcd that last ran on this data into {} (e.g. \
             `printf 3.5.1/etcd3 > {}`; format <major>.<minor>.<patch>/<etcd2|etcd3>) and rerun",
            data.path().display(),
            file.display(),
            file.display()
        ))),
    }
}

/// `etcd-<v>`, `etcdctl-<v>` (and `etcdutl-<v>` from 3.5) exist and are executable for every
/// bundled version (the original only checked the first two exist).
fn check_bundle(cfg: &Config) -> Result<(), MigrateError> {
    for v in &cfg.bundled {
        let mut names = vec![format!("etcd-{v}"), format!("etcdctl-{v}")];
        let tool = restore_tool(v);
        if !names.contains(&tool) {
            names.push(tool);
        }
        for name in names {
            check_executable(&cfg.bin_dir.join(&name)).map_err(|reason| {
                MigrateError::Preflight(format!(
                    "failed to validate that the binaries of the bundled version {v} are in \
                     --bin-dir '{}' (bundled: {}): {reason}",
                    cfg.bin_dir.display(),
                    join(&cfg.bundled)
                ))
            })?;
        }
    }
    Ok(())
}

fn check_executable(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not executable", path.display()));
    }
    Ok(())
}

/// Before anything destructive: binaries, disk space, the integrity check. The one pre-flight:
/// the real run and `--dry-run` both call it (on the data as it is after recovery, `view`),
/// so a dry run refuses exactly what the run would.
fn preflight(
    cfg: &Config,
    data: &DataDir,
    view: &View,
    steps: &[Step],
    freed: i64,
) -> Result<(), MigrateError> {
    for step in steps {
        for name in step.binaries() {
            check_executable(&cfg.bin_dir.join(&name))
                .map_err(|r| MigrateError::Preflight(format!("step '{step}' needs {name}: {r}")))?;
        }
    }
    // Also before a version.txt-only step: the etcd started next must not meet them either.
    check_paths(&view.files_dir)?;
    // verify backs the data dir up before an upgrade step.
    let destructive = steps
        .iter()
        .any(|s| !matches!(s, Step::WriteVersion { .. }));
    super::preflight::check_steps(cfg, data, view, steps).map_err(MigrateError::Preflight)?;
    if !destructive {
        return Ok(());
    }
    check_space(data, view, steps, freed)?;
    let files = &view.files_dir;
    check_integrity(files)?;
    log::info!("integrity check of {} passed", files.display());
    Ok(())
}

/// Every copy goes inside the data dir, so its file system is the one measured; `freed`:
/// what recovery will free first (a dry run measures before it).
fn check_space(
    data: &DataDir,
    view: &View,
    steps: &[Step],
    freed: i64,
) -> Result<(), MigrateError> {
    let facts = super::preflight::SpaceFacts {
        data: data.size_of(&view.files_dir.join("member"))?,
        db: data.size_of(&view.files_dir.join("member/snap/db"))?,
        backup: data.size_of(&data.backup_path())?,
        puts_back: steps
            .first()
            .is_some_and(|s| super::verify::puts_back(data, &s.result())),
    };
    let need = super::preflight::space_needed(steps, &facts);
    let free = data.free_bytes()?.saturating_add_signed(freed);
    log::info!(
        "free space: {free} bytes, the run needs about {}",
        need.bytes
    );
    if free < need.bytes {
        return Err(MigrateError::Preflight(format!(
            "not enough free disk space on the file system of {}: {free} bytes free, about {} \
             needed at the worst moment, {}; make room there (or give the data dir a larger \
             file system) and rerun",
            data.path().display(),
            need.bytes,
            need.why
        )));
    }
    Ok(())
}

/// Unless `DO_NOT_MOVE_BINARIES=true`: `etcd-<target>` -> `etcd`, `etcdctl-<target>` ->
/// `etcdctl` in --bin-dir (via a temp file and rename, keeping the mode).
fn move_binaries(cfg: &Config) -> Result<(), MigrateError> {
    if !cfg.move_binaries {
        return Ok(());
    }
    let v = &cfg.target.version;
    for (from, to) in [
        (format!("etcd-{v}"), "etcd"),
        (format!("etcdctl-{v}"), "etcdctl"),
    ] {
        let src = cfg.bin_dir.join(&from);
        let dst = cfg.bin_dir.join(to);
        let tmp = cfg.bin_dir.join(format!(".{to}.migrate-tmp"));
        let fail = |e: std::io::Error| MigrateError::IoWithRemedy {
            source: IoError::new(format!("Failed to copy {from} to"), &dst, e),
            remedy: "set DO_NOT_MOVE_BINARIES=true to skip this",
        };
        fs::copy(&src, &tmp).map_err(fail)?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(fail)?;
        fs::rename(&tmp, &dst).map_err(fail)?;
        log::info!("copied {} to {}", src.display(), dst.display());
    }
    Ok(())
}

/// `--dry-run`: change nothing (no lock taken, no dir created, nothing recovered) and print
/// what the run would do: the leftovers it would deal with (the same scan `recover` acts
/// on), then the plan for the data as it will be after that, after the same pre-flight.
fn dry_run(cfg: &Config, data: &DataDir) -> Result<Outcome, MigrateError> {
    let left = Leftovers::scan(data);
    if left.view(data).files_dir == data.path() {
        data.check_creatable()?;
    }
    let mut out = vec![format!(
        "data dir {}{} ({} bytes free on its file system; every copy is made inside it)",
        data.path().display(),
        if data.given() != data.path() {
            format!(" (given as {})", data.given().display())
        } else {
            String::new()
        },
        data.free_bytes()
            .map_or_else(|e| format!("? ({e})"), |f| f.to_string())
    )];
    if data.exists() {
        out.push(format!(
            "locks {} (flock on the directory itself)",
            data.path().display()
        ));
        if let Err(e) = data.lock(Duration::ZERO) {
            out.push(format!(
                "the run would wait up to {:?}: {e}",
                cfg.lock_timeout
            ));
        }
    }
    out.extend(left.lines());
    if left.data_is_empty(data)? {
        out.push(format!(
            "data directory {} is {}: would write {} to {}",
            data.path().display(),
            if data.exists() || !left.is_empty() {
                "empty"
            } else {
                "missing (would create it, mode 0700)"
            },
            cfg.target,
            data.path().join("version.txt").display()
        ));
        return print_dry(out);
    }
    let view = left.view(data);
    let current = current_version(data, &view, cfg)?;
    let steps = plan(&current, &cfg.target, &cfg.bundled)?;
    out.push(format!("current {current}, target {}", cfg.target));
    if steps.is_empty() {
        out.push("nothing to do".into());
        if !matches!(read_version_file(&view.version_dir)?, VersionFile::Parsed(p) if p == cfg.target)
        {
            out.push(format!(
                "  writes {}/version.txt = {} (records the version)",
                data.path().display(),
                cfg.target
            ));
        }
    }
    preflight(cfg, data, &view, &steps, left.freed_bytes(data))?;
    for (i, step) in steps.iter().enumerate() {
        out.push(format!("step {}: {step}", i + 1));
        out.extend(
            step_uses(cfg, data, step)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
    }
    if cfg.move_binaries {
        let bin = |n: &str| cfg.bin_dir.join(n).display().to_string();
        out.push(format!(
            "copy {} and {} to {} and {} (DO_NOT_MOVE_BINARIES is not true)",
            bin(&format!("etcd-{}", cfg.target.version)),
            bin(&format!("etcdctl-{}", cfg.target.version)),
            bin("etcd"),
            bin("etcdctl")
        ));
    }
    print_dry(out)
}

/// The binaries, ports and files one step uses, for `--dry-run`.
fn step_uses(cfg: &Config, data: &DataDir, step: &Step) -> Vec<String> {
    let mut out: Vec<String> = step
        .binaries()
        .iter()
        .map(|n| format!("runs   {}", cfg.bin_dir.join(n).display()))
        .collect();
    if matches!(
        step,
        Step::Upgrade { .. } | Step::Downgrade { .. } | Step::MigrateV2ToV3 { .. }
    ) {
        out.push(format!(
            "listens on 127.0.0.1:{} (client) and {} (peer)",
            cfg.port, cfg.listen_peer_urls
        ));
    }
    let e = |name: &str| data.entry(name).display().to_string();
    let d = data.path().display();
    // The backup and journal of a step that is put back if it changed the data.
    let step_backup = || {
        vec![
            format!(
                "{} -> {} (backup, replaced; put back if the step changed the data)",
                e(names::BACKUP_TMP),
                e(names::BACKUP)
            ),
            format!(
                "{} (marker: the backup is of the data before this step)",
                e(names::STEP_JOURNAL)
            ),
        ]
    };
    let writes: Vec<String> = match step {
        Step::WriteVersion { .. } => vec![],
        // In-place steps are backed up first (src/migrate/verify.rs).
        Step::Upgrade { .. } | Step::SchemaDowngrade { .. } => step_backup(),
        Step::Downgrade { .. } => vec![
            e(names::SNAPSHOT),
            format!("{} (restored member/ and version.txt)", e(names::RESTORE)),
            format!(
                "{} (marker: the restore is complete)",
                e(names::RESTORE_MARKER)
            ),
            format!(
                "{} (the old member/ and version.txt, replaced)",
                e(names::BACKUP)
            ),
            format!("{d}/member (swapped in)"),
        ],
        Step::MigrateV2ToV3 { .. } => vec![
            format!(
                "{} -> {} (backup, replaced)",
                e(names::BACKUP_TMP),
                e(names::BACKUP)
            ),
            format!(
                "{} (marker: the backup is complete)",
                e(names::V2V3_JOURNAL)
            ),
            format!("{d}/member (converted in place)"),
        ],
        Step::RollbackV3ToV2 { .. } => [
            step_backup(),
            vec![
                format!(
                    "{} -> {} (the converted member/)",
                    e(names::ROLLBACK_TMP),
                    e(names::ROLLBACK_NEW)
                ),
                format!(
                    "{} (the old member/ and version.txt)",
                    e(names::ROLLBACK_BACKUP)
                ),
                format!("{d}/member (swapped in)"),
            ],
        ]
        .concat(),
    };
    out.extend(writes.into_iter().map(|w| format!("writes {w}")));
    out.push(format!(
        "writes {d}/{} -> {d}/version.txt = {}",
        crate::version::VERSION_FILE_NEXT,
        step.result()
    ));
    out
}

fn print_dry(lines: Vec<String>) -> Result<Outcome, MigrateError> {
    for l in lines {
        println!("{l}");
    }
    Ok(Outcome::DryRun)
}

pub(super) struct Runner<'a> {
    pub(super) cfg: &'a Config,
    pub(super) data: &'a DataDir,
    pub(super) client: HttpClient,
    /// The step running now (1-based), for messages of `verify`.
    pub(super) step_no: std::cell::Cell<usize>,
    /// What the step's target etcd served when the step itself read it (`verify`).
    pub(super) last_after: std::cell::Cell<Option<super::verify::Fingerprint>>,
    /// A member of several: its db read offline before the step (`verify`).
    pub(super) offline_before: std::cell::Cell<Option<super::verify::Fingerprint>>,
}

impl Runner<'_> {
    pub(super) fn step(&self, step: &Step) -> Result<(), MigrateError> {
        match step {
            Step::WriteVersion { .. } => Ok(()),
            Step::Upgrade { to, .. } => {
                log::info!("upgrading etcd to {to}");
                let etcd = self.start_etcd(to)?;
                if !self.single_member() {
                    self.wait_for_peers(to);
                    return self.stop_etcd(etcd);
                }
                let served = self.record(to, "after the step");
                self.stop_etcd(etcd)?;
                self.last_after.set(Some(served?));
                Ok(())
            }
            Step::Downgrade { current, run, to } => self.downgrade(current, run, to),
            Step::MigrateV2ToV3 { at } => self.v2_to_v3(at),
            Step::SchemaDowngrade { run, to, .. } => self.schema_downgrade(run, to),
            Step::RollbackV3ToV2 { from, to } => {
                log::info!("Backup and remove all existing v2 data (from {from})");
                // With the step journal: a crash before the proof passed and version.txt
                // says etcd2 puts this backup back on the rerun (`Leftover::PutBack`).
                self.backup_for_step(&step.result())?;
                let before = super::verify::before_v3v2(self)?;
                crate::rollback::rollback_for_migrate(self.data, to).map_err(|source| {
                    MigrateError::Rollback {
                        to: to.clone(),
                        backup: self.data.backup_path(),
                        source: Box::new(source),
                    }
                })?;
                crash_point("v3v2-converted");
                if let Err(diff) = super::verify::after_v3v2(self, &before)? {
                    crash_point("v3v2-proof-failed");
                    self.put_back_backup()?;
                    remove_tree(&self.data.entry(names::ROLLBACK_BACKUP))?;
                    super::verify::finish_step(self.data)?;
                    return Err(MigrateError::Other(format!(
                        "{diff}; the data from before the step is back in {}, its backup is \
                         kept in {}",
                        self.data.path().display(),
                        self.data.backup_path().display()
                    )));
                }
                Ok(())
            }
        }
    }

    pub(super) fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.cfg.port)
    }

    /// The original's argv order, without the deprecated `--debug`.
    fn etcd_args(&self, data_dir: &Path) -> Vec<String> {
        let c = self.cfg;
        let mut args = vec![
            "--name".into(),
            c.name.clone(),
            "--initial-cluster".into(),
            c.initial_cluster.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client-urls".into(),
            c.listen_client_urls.clone(),
            "--advertise-client-urls".into(),
            self.client_url(),
            "--listen-peer-urls".into(),
            c.listen_peer_urls.clone(),
            "--initial-advertise-peer-urls".into(),
            c.initial_advertise_peer_urls.clone(),
        ];
        args.extend(c.etcd_server_extra_args.iter().cloned());
        args
    }

    pub(super) fn start_etcd(&self, version: &EtcdVersion) -> Result<EtcdProcess, MigrateError> {
        self.start_etcd_on(version, self.data.path())
    }

    /// Starts etcd `version` on `data_dir` (the data dir, or a restored copy beside it).
    pub(super) fn start_etcd_on(
        &self,
        version: &EtcdVersion,
        data_dir: &Path,
    ) -> Result<EtcdProcess, MigrateError> {
        let mut spec = EtcdSpec::single(
            &self.cfg.bin_dir.join(format!("etcd-{version}")),
            &self.cfg.name,
            data_dir,
            self.cfg.port,
            self.cfg.peer_port,
        );
        spec.client_urls = vec![self.client_url()];
        let mut etcd = EtcdProcess::start_with_args(&spec, self.etcd_args(data_dir))?;
        crash_point("etcd-started");
        let took = etcd
            .wait_ready(&self.client, self.cfg.ready_timeout)
            .map_err(|e| {
                let members = self.cfg.initial_cluster.split(',').count();
                if members > 1 {
                    MigrateError::Other(format!(
                        "{e}\n(--initial-cluster lists {members} members: the etcd migrate \
                         starts only gets ready once a quorum of members runs it, so run migrate \
                         on all members at the same time, or upgrade one minor at a time with \
                         a rolling restart, which needs no etcd start in migrate)"
                    ))
                } else {
                    e.into()
                }
            })?;
        log::info!(
            "Etcd on port {} is up (etcd {version}, ready after {took:?}).",
            self.cfg.port
        );
        crash_point("etcd-ready");
        Ok(etcd)
    }

    /// A member of several must not stop its etcd while another member still waits for a
    /// quorum (it would wait forever): wait until every other member of --initial-cluster runs
    /// etcd `version` (its peer URL's /version), then [`PEER_GRACE`] more for the slowest one
    /// to get ready. Bounded by --ready-timeout; a peer not seen is logged, not fatal.
    fn wait_for_peers(&self, version: &EtcdVersion) {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let want = format!("\"etcdserver\":\"{version}\"");
        let peers: Vec<&str> = self
            .cfg
            .initial_cluster
            .split(',')
            .filter_map(|m| m.split_once('='))
            .filter(|(name, _)| *name != self.cfg.name)
            .map(|(_, url)| url.trim_end_matches('/'))
            .collect();
        for peer in peers {
            let url = format!("{peer}/version");
            while !self
                .client
                .get_text(&url, Duration::from_secs(1), 4096)
                .is_ok_and(|v| v.contains(&want))
            {
                if Instant::now() >= deadline {
                    log::warn!("member at {peer} was not seen running etcd {version}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(PEER_GRACE);
    }

    pub(super) fn stop_etcd(&self, etcd: EtcdProcess) -> Result<(), MigrateError> {
        let status = etcd.stop(STOP_GRACE)?;
        log::info!("Stopped etcd server {} ({status})", self.cfg.name);
        crash_point("etcd-stopped");
        Ok(())
    }

    fn downgrade(
        &self,
        current: &EtcdVersion,
        run: &EtcdVersion,
        to: &EtcdVersion,
    ) -> Result<(), MigrateError> {
        let data = self.data;
        let snapshot = data.snapshot_path();
        let restore = data.restore_path();
        log::info!("Performing etcd {current} -> {to} rollback");
        // version.txt says etcd3: any etcd2 -> etcd3 journal is stale, and `.bak` is
        // replaced below.
        finish_v2v3_journal(data)?;
        remove_tree(&snapshot).map_err(|e| MigrateError::During {
            doing: "failed to clean snapshot file before rollback".into(),
            source: Box::new(e.into()),
        })?;
        remove_tree(&restore)?;
        log::info!("Starting etcd version {run} to capture rollback snapshot.");
        let etcd = self.start_etcd(run).map_err(|e| MigrateError::During {
            doing: format!(
                "Unable to automatically downgrade etcd: starting etcd version {run} to capture \
                 rollback snapshot failed"
            ),
            source: Box::new(e),
        })?;
        let before = super::verify::before_downgrade(self, run)?;
        log::info!("Snapshotting etcd {run} to {}", snapshot.display());
        let tool = self.cfg.bin_dir.join(format!("etcdctl-{run}"));
        run_tool(
            &tool,
            &[
                "--endpoints".into(),
                self.client_url(),
                "snapshot".into(),
                "save".into(),
                snapshot.display().to_string(),
            ],
            &[("ETCDCTL_API", "3")],
            TOOL_TIMEOUT,
        )?;
        crash_point("snapshot-saved");
        self.stop_etcd(etcd)?;
        let mode = data.mode()?;
        log::info!("Restoring etcd {to} from {}", snapshot.display());
        let tool_name = restore_tool(to);
        let mut args = vec![
            "snapshot".into(),
            "restore".into(),
            snapshot.display().to_string(),
            "--data-dir".into(),
            restore.display().to_string(),
            "--name".into(),
            self.cfg.name.clone(),
            "--initial-advertise-peer-urls".into(),
            self.cfg.initial_advertise_peer_urls.clone(),
            "--initial-cluster".into(),
            self.cfg.initial_cluster.clone(),
        ];
        if let Some(token) = cluster_token(&self.cfg.etcd_server_extra_args) {
            args.push("--initial-cluster-token".into());
            args.push(token);
        }
        run_tool(
            &self.cfg.bin_dir.join(&tool_name),
            &args,
            &[("ETCDCTL_API", "3")],
            TOOL_TIMEOUT,
        )?;
        crash_point("restored");
        set_mode(&restore, mode)?;
        write_version_file(&restore, &VersionPair::new(to.clone(), Storage::Etcd3))?;
        super::verify::after_downgrade(self, before.as_ref(), to, &restore)?;
        self.mark_restore_complete()?;
        crash_point("restore-complete");
        log::info!(
            "Backing up data before rolling back: {} -> {}",
            data.member_path().display(),
            data.backup_path().display()
        );
        self.swap_in_restore(&data.backup_path())?;
        remove_tree(&snapshot)?;
        Ok(())
    }

    /// 3.6+ -> one minor down: etcdutl of the current minor rewrites the storage version in
    /// place (a bbolt transaction, idempotent; `verify` backs the dir up first).
    fn schema_downgrade(&self, run: &EtcdVersion, to: &EtcdVersion) -> Result<(), MigrateError> {
        run_tool(
            &self.cfg.bin_dir.join(format!("etcdutl-{run}")),
            &[
                "migrate".into(),
                "--data-dir".into(),
                self.data.path().display().to_string(),
                "--target-version".into(),
                to.minor_string(),
            ],
            &[],
            TOOL_TIMEOUT,
        )?;
        Ok(())
    }

    /// `<dir>.bak` (kept) copied back into the data dir through the marked swap.
    pub(super) fn put_back_backup(&self) -> Result<(), MigrateError> {
        let drop_first = crate::datadir::leftovers::step_journal_live(self.data);
        self.data.put_back_backup(&crash_point, drop_first)?;
        Ok(())
    }

    fn mark_restore_complete(&self) -> Result<(), MigrateError> {
        let marker = self.data.restore_marker();
        fs::write(&marker, b"")
            .and_then(|_| sync_dir(self.data.path()))
            .map_err(|e| IoError::new("cannot write", &marker, e).into())
    }

    /// `member/` (and version.txt) -> `old_to`, `<dir>/.restore` -> `member/`, marker
    /// removed. Needs the marker.
    fn swap_in_restore(&self, old_to: &Path) -> Result<(), MigrateError> {
        let data = self.data;
        data.swap_in(&data.restore_path(), old_to, &crash_point)?;
        remove_tree(&data.restore_marker())?;
        Ok(())
    }

    fn v2_to_v3(&self, at: &EtcdVersion) -> Result<(), MigrateError> {
        let data = self.data;
        let journal = v2v3_journal(data);
        if journal.exists() && data.backup_path().exists() {
            log::warn!(
                "an earlier etcd2 -> etcd3 migration was interrupted; restoring the data from \
                 its backup {} before retrying",
                data.backup_path().display()
            );
            self.put_back_backup()?;
        } else {
            log::info!(
                "Backing up {} to {}",
                data.path().display(),
                data.backup_path().display()
            );
            data.backup_copy()?;
            fs::write(&journal, b"")
                .and_then(|_| sync_dir(data.path()))
                .map_err(IoError::on("cannot write", &journal))?;
        }
        crash_point("v2v3-backed-up");
        let before = super::verify::before_v2v3(self)?;
        log::info!("Performing etcd2 -> etcd3 migration");
        run_tool(
            &self.cfg.bin_dir.join(format!("etcdctl-{at}")),
            &[
                "migrate".into(),
                "--data-dir".into(),
                data.path().display().to_string(),
            ],
            &[("ETCDCTL_API", "3")],
            TOOL_TIMEOUT,
        )?;
        crash_point("v2v3-migrated");
        log::info!("Attaching leases to TTL entries");
        let etcd = self.start_etcd(at)?;
        let attached = self.attach_leases(at);
        if let Ok(n) = &attached {
            log::info!(
                "attached a {TTL_LEASE_SECONDS} s lease to {n} keys under {}",
                self.cfg.ttl_keys_directory
            );
        }
        let lone = self.single_member();
        let proof = match &attached {
            Ok(_) if lone => super::verify::after_v2v3(self, at, &before),
            _ => Ok(Ok(())),
        };
        if !lone && attached.is_ok() {
            self.wait_for_peers(at);
        }
        let stopped = self.stop_etcd(etcd);
        attached?;
        stopped?;
        // A member of several reads its converted db once its etcd stopped.
        let proof = match proof? {
            Ok(()) if !lone => super::verify::after_v2v3_offline(self, &before)?,
            proof => proof,
        };
        if let Err(diff) = proof {
            self.put_back_backup()?;
            finish_v2v3_journal(data)?;
            return Err(MigrateError::Other(format!(
                "{diff}; the data from before the step is back in {}, its backup is kept in {}",
                data.path().display(),
                data.backup_path().display()
            )));
        }
        Ok(())
    }

    /// One lease of 1 h on every key under `--ttl-keys-directory` (the original's
    /// `AttachLease`, without its nil dereference). Pages of 1000 keys; each batch of 100 is
    /// one txn that re-puts the keys with the lease only if every value is still the one read,
    /// so a concurrent writer is detected, as the original's previous-value check did.
    fn attach_leases(&self, at: &EtcdVersion) -> Result<usize, MigrateError> {
        const PAGE: u64 = 1000;
        const BATCH: usize = 100;
        let gateway = crate::etcd::client::gateway_prefix(at.major(), at.minor());
        let base = self.client_url();
        let timeout = Duration::from_secs(30);
        let post = |path: &str, body: serde_json::Value| {
            self.client
                .post_json(&format!("{base}{gateway}{path}"), &body, timeout)
                .map_err(|e| MigrateError::Other(format!("attaching leases: {e}")))
        };
        let field = |kv: &serde_json::Value, name: &str| {
            kv.get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let show = |s: &str| {
            String::from_utf8_lossy(&crate::base64::decode(s).unwrap_or_default()).into_owned()
        };
        let mut prefix = self.cfg.ttl_keys_directory.clone().into_bytes();
        if !prefix.ends_with(b"/") {
            prefix.push(b'/');
        }
        let end = crate::base64::encode(&prefix_end(&prefix));
        let mut from = crate::base64::encode(&prefix);
        let mut lease: Option<String> = None;
        let mut attached = 0;
        loop {
            let page = post(
                "/kv/range",
                json!({"key": from, "range_end": end, "limit": PAGE}),
            )?;
            let kvs = page
                .get("kvs")
                .and_then(|k| k.as_array())
                .cloned()
                .unwrap_or_default();
            let Some(last) = kvs.last() else { break };
            let id = match &lease {
                Some(id) => id.clone(),
                None => {
                    let grant = post("/lease/grant", json!({"TTL": TTL_LEASE_SECONDS}))?;
                    let id = grant
                        .get("ID")
                        .and_then(|i| i.as_str())
                        .ok_or_else(|| {
                            MigrateError::Other(format!("lease grant answered {grant}"))
                        })?
                        .to_string();
                    log::info!("Lease with TTL: {TTL_LEASE_SECONDS} created");
                    lease = Some(id.clone());
                    id
                }
            };
            for chunk in kvs.chunks(BATCH) {
                let compare: Vec<_> = chunk
                    .iter()
                    .map(|kv| json!({"key": field(kv, "key"), "result": "EQUAL", "target": "VALUE", "value": field(kv, "value")}))
                    .collect();
                let success: Vec<_> = chunk
                    .iter()
                    .map(|kv| json!({"request_put": {"key": field(kv, "key"), "value": field(kv, "value"), "lease": id}}))
                    .collect();
                let r = post("/kv/txn", json!({"compare": compare, "success": success}))?;
                if r.get("succeeded").and_then(|v| v.as_bool()) != Some(true) {
                    // Name the key that changed, as the original did.
                    for kv in chunk {
                        let now = post("/kv/range", json!({"key": field(kv, "key")}))?;
                        let current = now
                            .get("kvs")
                            .and_then(|k| k.as_array())
                            .and_then(|a| a.first())
                            .map(|c| field(c, "value"))
                            .unwrap_or_default();
                        if current != field(kv, "value") {
                            return Err(MigrateError::Other(format!(
                                "concurrent access to key detected when setting lease on {}, \
                                 expected previous value of {:?} but got {:?}",
                                show(&field(kv, "key")),
                                show(&field(kv, "value")),
                                show(&current)
                            )));
                        }
                    }
                    return Err(MigrateError::Other(format!(
                        "concurrent access detected while setting leases under {}",
                        self.cfg.ttl_keys_directory
                    )));
                }
            }
            attached += kvs.len();
            if page.get("more").and_then(|m| m.as_bool()) != Some(true) {
                break;
            }
            let mut next = crate::base64::decode(&field(last, "key")).unwrap_or_default();
            next.push(0);
            from = crate::base64::encode(&next);
        }
        Ok(attached)
    }
}

/// `--initial-cluster-token` among the extra args, so a restore keeps the cluster's IDs.
pub(crate) fn cluster_token(extra: &[String]) -> Option<String> {
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        let a = a.trim_start_matches('-');
        if let Some(v) = a.strip_prefix("initial-cluster-token=") {
            return Some(v.to_string());
        }
        if a == "initial-cluster-token" {
            return it.next().cloned();
        }
    }
    None
}

/// The end of the range of all keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_keeps_its_kind_through_migrates_wrappers() {
        let eacces = || std::io::Error::from_raw_os_error(libc::EACCES);
        let spawn = MigrateError::Process(ProcessError::Spawn {
            binary: "/usr/local/bin/etcd-3.4.23".into(),
            source: eacces(),
        });
        assert_eq!(spawn.kind(), Kind::Io);
        let during = MigrateError::During {
            doing: "starting etcd version 3.4.23 failed".into(),
            source: Box::new(spawn),
        };
        assert_eq!(during.kind(), Kind::Io);
        assert!(during
            .to_string()
            .starts_with("starting etcd version 3.4.23 failed: cannot start /usr/local/bin/"));
        let copy = MigrateError::IoWithRemedy {
            source: IoError::new(
                "Failed to copy etcd-3.5.1 to",
                "/usr/local/bin/etcd",
                eacces(),
            ),
            remedy: "set DO_NOT_MOVE_BINARIES=true to skip this",
        };
        assert_eq!(copy.kind(), Kind::Io);
        assert_eq!(
            copy.to_string(),
            "Failed to copy etcd-3.5.1 to /usr/local/bin/etcd: Permission denied; run as the \
             data dir's owner (or fix the permissions) (set DO_NOT_MOVE_BINARIES=true to skip \
             this)"
        );
        let exited = MigrateError::Process(ProcessError::AlreadyStopped);
        assert_eq!(exited.kind(), Kind::Refused);
    }

    #[test]
    fn prefix_end_like_etcd() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn token_from_extra_args() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cluster_token(&a(&["--initial-cluster-token=t1"])),
            Some("t1".into())
        );
        assert_eq!(
            cluster_token(&a(&["--x", "--initial-cluster-token", "t2"])),
            Some("t2".into())
        );
        assert_eq!(cluster_token(&a(&["--x=1"])), None);
    }
}
