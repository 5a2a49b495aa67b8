//! An etcd member's data dir as one thing, opened once: [`Member`] owns where its parts are
//! ([`Paths`]), what each path actually is ([`probe`]), where etcd starts (which `.snap`,
//! which WAL position), what etcd recovers on start ([`Member::recover`]), what the files say
//! the version is ([`Member::version`]), who the member is ([`Member::identity`]) and the
//! integrity check ([`Member::check`]).
//! `etcd-inspect` prints these answers, `migrate` and `rollback2` decide on them; none of them
//! computes such a fact itself. Reading is lazy: nothing is read when the member is opened
//! beyond the probe of its paths, the start point is read when first asked (then kept), the
//! db is opened only for a db fact.

mod check;
mod db;
mod identity;
mod probe;
mod version;

pub use db::{check_db_file, DbFacts};
pub use identity::{Identity, StoredMember};
pub use probe::{probe, PathError, Want, WrongKind};
pub use version::{DataVersion, Note};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::bolt::BoltError;
use super::proto::WalSnapshot;
use super::snap::{load_newest, load_newest_available, LoadedSnapshot, SnapError};
use super::wal::{self, WalContents, WalError};
use super::Finding;
use crate::error::{HasKind, IoError, Kind};
use crate::fsutil::{try_flock, Lock};

/// Why a member's files could not answer: the one error of reading a member, whatever asks
/// (recovery, version detection, the check, `etcd-inspect`). Each variant keeps its kind.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snap(#[from] SnapError),
    /// The snapshot's v2 store JSON cannot be loaded.
    #[error("{0}")]
    Store(Finding),
    /// The bbolt db could not be read.
    #[error(transparent)]
    Db(#[from] BoltError),
    #[error(transparent)]
    Io(#[from] IoError),
    /// Neither a WAL dir nor a snap dir: not a member dir (or not this path).
    #[error("{}: not found", .0.display())]
    NotFound(PathBuf),
    /// A path that is the wrong kind of thing (a FIFO db, a WAL dir that is a file), or that
    /// the OS will not let us open.
    #[error(transparent)]
    Path(#[from] PathError),
}

impl HasKind for MemberError {
    fn kind(&self) -> Kind {
        match self {
            MemberError::Wal(e) => e.kind(),
            MemberError::Snap(e) => e.kind(),
            MemberError::Store(e) => e.kind(),
            MemberError::Db(e) => e.kind(),
            MemberError::Path(e) => e.kind(),
            MemberError::Io(_) | MemberError::NotFound(_) => Kind::Io,
        }
    }
}

impl MemberError {
    /// The OS error inside, if this is one (what ends `version` where damage is a note).
    pub fn io(&self) -> Option<&IoError> {
        match self {
            MemberError::Io(e)
            | MemberError::Wal(WalError::Io(e))
            | MemberError::Snap(SnapError::Io(e))
            | MemberError::Db(BoltError::Io(e))
            | MemberError::Path(PathError::Io(e)) => Some(e),
            _ => None,
        }
    }
}

/// Where the parts of a member dir are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
    pub db: PathBuf,
}

impl Paths {
    /// `<dir>/member/{wal,snap,snap/db}`; `wal_dir` overrides the WAL location (`--wal-dir`).
    pub fn of(data_dir: &Path, wal_dir: Option<&Path>) -> Paths {
        let member = data_dir.join("member");
        Paths {
            data_dir: data_dir.to_path_buf(),
            wal_dir: wal_dir.map_or_else(|| member.join("wal"), Path::to_path_buf),
            snap_dir: member.join("snap"),
            db: member.join("snap").join("db"),
        }
    }
}

/// Where etcd 3.4.8+ starts: the newest readable `.snap` that a WAL snapshot record covered by
/// the last HardState names, or (0, 0) without one.
#[derive(Debug)]
pub struct StartPoint {
    pub snapshot: Option<LoadedSnapshot>,
    /// Newer `.snap` files skipped because they are broken (etcd skips them too).
    pub skipped: Vec<SnapError>,
}

impl StartPoint {
    /// The (index, term) reading starts from.
    pub fn start(&self) -> WalSnapshot {
        self.snapshot.as_ref().map_or(WalSnapshot::new(0, 0), |s| {
            WalSnapshot::new(s.snapshot.metadata.index, s.snapshot.metadata.term)
        })
    }
}

/// etcd's `ValidSnapshotEntries` over records already read: (0, 0) and every snapshot record
/// the HardState's `commit` covers.
pub fn valid_snapshots(records: &[WalSnapshot], commit: u64) -> Vec<WalSnapshot> {
    let mut snaps = vec![WalSnapshot::new(0, 0)];
    snaps.extend(records.iter().filter(|s| s.index <= commit).cloned());
    snaps.dedup();
    snaps
}

/// The snapshot `etcd-inspect snap` shows: where etcd starts, or, when the WAL cannot say,
/// the newest readable `.snap` and why the WAL was not used.
#[derive(Debug)]
pub enum ShownSnapshot<'a> {
    Start(&'a StartPoint),
    WithoutWal {
        wal: WalError,
        newest: Box<StartPoint>,
    },
}

/// An etcd member dir, opened once; see the module comment.
#[derive(Debug)]
pub struct Member {
    paths: Paths,
    start: OnceLock<StartPoint>,
    db: OnceLock<DbFacts>,
}

impl Member {
    /// The member at `data_dir` (`wal_dir`: etcd's `--wal-dir`), nothing read yet.
    pub fn at(data_dir: &Path, wal_dir: Option<&Path>) -> Member {
        Member::with_paths(Paths::of(data_dir, wal_dir))
    }

    /// A member whose parts are where `paths` says (a snap dir elsewhere, for tests and tools
    /// that hold the two dirs).
    pub fn with_paths(paths: Paths) -> Member {
        Member {
            paths,
            start: OnceLock::new(),
            db: OnceLock::new(),
        }
    }

    /// [`Member::at`], then [`Member::require`].
    pub fn open(data_dir: &Path, wal_dir: Option<&Path>) -> Result<Member, MemberError> {
        let m = Member::at(data_dir, wal_dir);
        m.require()?;
        Ok(m)
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Every path a reader opens is what it should be or missing (see [`probe`]): the data
    /// dir, `member`, the WAL dir and its segments, the snap dir and its `.snap` files, the db.
    pub fn probe(&self) -> Result<(), PathError> {
        probe::probe_all(&self.paths)
    }

    /// [`Member::probe`], and there is a WAL dir or a snap dir.
    pub fn require(&self) -> Result<(), MemberError> {
        self.probe()?;
        if !self.paths.wal_dir.is_dir() && !self.paths.snap_dir.is_dir() {
            return Err(MemberError::NotFound(self.paths.data_dir.join("member")));
        }
        Ok(())
    }

    /// The file a running etcd holds, if one does: the newest WAL segment (etcd 3.x holds an
    /// OFD lock on it, 2.x a flock), else the db (an exclusive flock). What is read while it
    /// runs may change under the reader.
    pub fn locked_by_etcd(&self) -> Option<PathBuf> {
        let newest = wal::list_segments(&self.paths.wal_dir)
            .ok()
            .and_then(|mut s| s.pop())
            .map(|s| s.path);
        if let Some(w) = newest.filter(|w| wal::is_locked(w)) {
            return Some(w);
        }
        // Only a regular file is opened: opening a FIFO would block.
        if !std::fs::metadata(&self.paths.db).is_ok_and(|m| m.is_file()) {
            return None;
        }
        let db = std::fs::File::open(&self.paths.db).ok()?;
        // A shared lock we get goes away with the file.
        let held = matches!(try_flock(&db, Lock::Shared), Ok(false));
        held.then(|| self.paths.db.clone())
    }

    /// Where etcd starts: one pass over the whole WAL for its snapshot records and last
    /// HardState, then the `.snap` they allow (a missing snap dir: from (0, 0)). Read once.
    pub fn start_point(&self) -> Result<&StartPoint, MemberError> {
        if let Some(s) = self.start.get() {
            return Ok(s);
        }
        let valid = wal::valid_snapshots(&self.paths.wal_dir)?;
        let point = self.start_from(&valid)?;
        Ok(self.start.get_or_init(|| point))
    }

    /// The start point from snapshot records and the HardState's commit already read (a
    /// caller that reads the whole WAL anyway: rollback2).
    pub fn start_point_given(
        &self,
        records: &[WalSnapshot],
        commit: u64,
    ) -> Result<StartPoint, SnapError> {
        self.start_from(&valid_snapshots(records, commit))
    }

    fn start_from(&self, valid: &[WalSnapshot]) -> Result<StartPoint, SnapError> {
        if !self.paths.snap_dir.is_dir() {
            return Ok(StartPoint {
                snapshot: None,
                skipped: Vec::new(),
            });
        }
        let c = load_newest_available(&self.paths.snap_dir, valid)?;
        Ok(StartPoint {
            snapshot: c.loaded,
            skipped: c.skipped,
        })
    }

    /// The snapshot to show: where etcd starts, or the newest readable `.snap` when the WAL
    /// cannot tell (it is damaged or missing). A missing snap dir is an error.
    pub fn shown_snapshot(&self) -> Result<ShownSnapshot<'_>, MemberError> {
        self.require()?;
        if !self.paths.snap_dir.is_dir() {
            return Err(MemberError::NotFound(self.paths.snap_dir.clone()));
        }
        match self.start_point() {
            Ok(p) => Ok(ShownSnapshot::Start(p)),
            Err(MemberError::Wal(wal)) => {
                let c = load_newest(&self.paths.snap_dir)?;
                let newest = Box::new(StartPoint {
                    snapshot: c.loaded,
                    skipped: c.skipped,
                });
                Ok(ShownSnapshot::WithoutWal { wal, newest })
            }
            Err(e) => Err(e),
        }
    }

    /// The WAL after the start point (`from_start`: from index 0, which needs the first
    /// segment), keeping `keep(entry)` per entry. Returns the start point used too (`None`
    /// from index 0).
    pub fn read_wal_with<E>(
        &self,
        from_start: bool,
        keep: impl FnMut(super::proto::Entry) -> E,
    ) -> Result<(Option<&StartPoint>, WalContents<E>), MemberError> {
        self.require()?;
        let point = if from_start {
            None
        } else {
            Some(self.start_point()?)
        };
        let start = point.map_or(WalSnapshot::new(0, 0), StartPoint::start);
        let contents = wal::read_all_with(&self.paths.wal_dir, &start, keep)?;
        Ok((point, contents))
    }

    /// The whole WAL from its first segment, keeping `keep(entry)` per entry (see
    /// [`wal::read_whole_with`]): for a caller that must see every record once (rollback2).
    pub fn read_whole_wal_with<E>(
        &self,
        keep: impl FnMut(super::proto::Entry) -> E,
    ) -> Result<WalContents<E>, WalError> {
        wal::read_whole_with(&self.paths.wal_dir, keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Storage;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/3.4.23")
            .join(name)
    }

    /// One member answers every fact from the same files: the start point recovery uses is
    /// the one read once, version and identity agree with the WAL metadata, the check is clean.
    #[test]
    fn one_member_answers_every_fact() {
        let m = Member::open(&fixture("v2-datadir"), None).unwrap();
        let point = m.start_point().unwrap();
        assert_eq!(point.start(), WalSnapshot::new(33, 2));
        assert!(std::ptr::eq(point, m.start_point().unwrap()), "read once");
        let r = m.recover(0).unwrap();
        assert_eq!(r.start(), point.start());
        let v = m.version().unwrap();
        assert_eq!(v.storage, Some(Storage::Etcd3), "{:?}", v.notes);
        assert_eq!(v.last_index, Some(r.wal.last_index));
        let Some(Identity::Listed(id)) = m.identity().unwrap() else {
            panic!("the db lists the member")
        };
        assert_eq!(Some(id.id), v.member_id);
        assert_eq!(Some(id.cluster_id), v.cluster_id);
        assert!(v.members.contains(&id.id));
        assert_eq!(m.check().unwrap(), vec![]);
        assert_eq!(m.locked_by_etcd(), None);
    }

    /// Errors keep their kind through the member: a missing member dir is I/O, a data dir that
    /// is a file is a refusal, damage is corruption.
    #[test]
    fn errors_keep_their_kind() {
        let err = Member::open(Path::new("/nonexistent/dir"), None).unwrap_err();
        assert_eq!(err.kind(), Kind::Io, "{err}");
        let file = fixture("v2-datadir/member/snap/db");
        let err = Member::open(&file, None).unwrap_err();
        assert_eq!(err.kind(), Kind::Refused, "{err}");
        let mut paths = Paths::of(&fixture("v2-datadir"), None);
        paths.wal_dir = fixture("v2-datadir/member/snap");
        let err = Member::with_paths(paths).recover(0).unwrap_err();
        assert_eq!(err.kind(), Kind::Corrupt, "{err}");
    }
}
