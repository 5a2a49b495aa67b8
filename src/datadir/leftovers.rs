//! What an interrupted migrate or rollback2 left in (or, before this layout, beside) a data
//! dir, and what a rerun does with it. The one owner of that fact: `migrate` recovery,
//! `migrate --dry-run` and `rollback2` all ask [`Leftovers::scan`], so a preview and the
//! real run cannot disagree.
//!
//! The rule for a staged copy (a restore with its marker, rollback2's `.rollback.new`): it
//! replaces `member/` only once the swap began (`member/` moved to the backup); before that
//! the data dir still holds its data untouched and the staged copy is dropped (the step is
//! redone from that data).

use std::fmt;
use std::path::{Path, PathBuf};

use super::{names, remove_tree, rename_synced, DataDir, DataDirError};

/// One thing a rerun does about a leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A swap of `staged` into `member/` began: finish it (the old data goes to `backup`).
    FinishSwap {
        staged: PathBuf,
        backup: PathBuf,
        marker: Option<PathBuf>,
    },
    /// An older release renamed the data dir itself away (`DIR.restore` with its marker, or
    /// `DIR.rollback.new` beside `DIR.rollback.backup`): move the complete copy into place.
    FinishLegacySwap {
        staged: PathBuf,
        marker: Option<PathBuf>,
    },
    /// An etcd2 -> etcd3 conversion was interrupted: its step first puts `backup` back.
    RedoV2V3 { backup: PathBuf },
    /// An older release's etcd2 -> etcd3 backup and its marker beside the data dir: moved
    /// inside (`.bak`, `.v2v3-backup`), where the conversion step looks for them.
    AdoptLegacyV2V3 { backup: PathBuf, journal: PathBuf },
    /// migrate's step journal says `backup` is the data before an etcd3 -> etcd2 step that
    /// did not finish (crashed before its proof passed and `version.txt` said etcd2, or
    /// while the backup was being put back after a failed proof): `backup` is put back
    /// ([`DataDir::put_back_backup`], which redoes a put-back from any point: `.restore`
    /// and its marker are its own), rollback2's `.rollback.backup` and the journal go, and
    /// the step is redone from that data. Never trusts rollback2's unproved output.
    PutBack { backup: PathBuf, journal: PathBuf },
    /// Incomplete or superseded work: removed.
    Remove(PathBuf),
}

impl Leftover {
    fn is_rollback(&self) -> bool {
        match self {
            Leftover::FinishSwap { staged, .. } | Leftover::FinishLegacySwap { staged, .. } => {
                staged.to_string_lossy().ends_with(names::ROLLBACK_NEW)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::FinishSwap { staged, backup, .. } => write!(
                f,
                "finish the interrupted swap: {} replaces member/ (old data in {})",
                staged.display(),
                backup.display()
            ),
            Leftover::FinishLegacySwap { staged, .. } => write!(
                f,
                "finish the interrupted swap of an older release: rename {} to the data dir",
                staged.display()
            ),
            Leftover::RedoV2V3 { backup } => write!(
                f,
                "an etcd2 -> etcd3 conversion was interrupted: its step restores {} first",
                backup.display()
            ),
            Leftover::AdoptLegacyV2V3 { backup, .. } => write!(
                f,
                "an etcd2 -> etcd3 conversion of an older release was interrupted: move its \
                 backup {} into the data dir",
                backup.display()
            ),
            Leftover::PutBack { backup, .. } => write!(
                f,
                "a step (etcd3 -> etcd2, or one whose backup was being put back) was \
                 interrupted before it proved itself: put its backup {} back and redo it",
                backup.display()
            ),
            Leftover::Remove(p) => write!(f, "remove {}", p.display()),
        }
    }
}

/// Where the version and the files are once the leftovers are dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Holds the `version.txt` that will be in force.
    pub version_dir: PathBuf,
    /// Holds the `member/` that will be in force.
    pub files_dir: PathBuf,
}

impl View {
    /// The data dir itself: nothing left to finish.
    pub fn here(data: &DataDir) -> View {
        View {
            version_dir: data.path().to_path_buf(),
            files_dir: data.path().to_path_buf(),
        }
    }
}

/// The leftovers of one data dir, in the order a rerun deals with them.
#[derive(Debug, Clone)]
pub struct Leftovers {
    pub items: Vec<Leftover>,
}

impl Leftovers {
    /// Reads the data dir (and, for an older release's leftovers, its parent); changes
    /// nothing.
    pub fn scan(data: &DataDir) -> Leftovers {
        let mut items = Vec::new();
        legacy(data, &mut items);
        // An etcd2 -> etcd3 journal is live until version.txt says etcd3 (written once the
        // conversion step is complete); after that it is stale.
        let converted = says_etcd3(data.path());
        let (old_bak, old_journal) = (beside(data, ".bak"), beside(data, ".v2v3-backup"));
        if data.exists() && present(&old_journal) {
            if converted || !old_bak.is_dir() {
                items.push(Leftover::Remove(old_journal));
            } else {
                items.push(Leftover::AdoptLegacyV2V3 {
                    backup: old_bak,
                    journal: old_journal,
                });
            }
        }
        if data.exists() {
            let journal = data.entry(names::V2V3_JOURNAL);
            let journal_live = present(&journal) && !converted;
            // While the etcd2 -> etcd3 journal (or migrate's step journal) says `.bak` is the
            // backup of the data before a step, a restore is that backup being put back: what
            // it replaces is discarded.
            let step_journal = data.entry(names::STEP_JOURNAL);
            let step_live = step_journal_live(data);
            if present(&step_journal) && !step_live {
                items.push(Leftover::Remove(step_journal.clone()));
            }
            let restore_backup = if journal_live || step_live {
                data.entry(names::DISCARD)
            } else {
                data.backup_path()
            };
            // An etcd3 -> etcd2 step's put-back is redone from any point (`PutBack`, last),
            // and so is any step's put-back that dropped `member/` before its copy was complete.
            let restore_done =
                present(&data.restore_marker()) && data.restore_path().join("member").is_dir();
            let v3v2_live = step_live
                && (step_journal_is_etcd2(data) || !present(&data.member_path()) && !restore_done);
            if !v3v2_live {
                staged(
                    data,
                    &data.restore_path(),
                    Some(data.restore_marker()),
                    &restore_backup,
                    &mut items,
                );
            }
            staged(
                data,
                &data.entry(names::ROLLBACK_NEW),
                None,
                &data.entry(names::ROLLBACK_BACKUP),
                &mut items,
            );
            for name in [
                names::BACKUP_TMP,
                names::DISCARD,
                names::SNAPSHOT,
                names::ROLLBACK_TMP,
                crate::version::VERSION_FILE_NEXT,
            ] {
                if present(&data.entry(name)) {
                    items.push(Leftover::Remove(data.entry(name)));
                }
            }
            if v3v2_live {
                items.push(Leftover::PutBack {
                    backup: data.backup_path(),
                    journal: step_journal,
                });
            }
            let adopted = items
                .iter()
                .any(|l| matches!(l, Leftover::AdoptLegacyV2V3 { .. }));
            if present(&journal) && !journal_live {
                items.push(Leftover::Remove(journal));
            } else if adopted || journal_live && data.backup_path().is_dir() {
                items.push(Leftover::RedoV2V3 {
                    backup: data.backup_path(),
                });
            }
        }
        Leftovers { items }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// One line per leftover, as `recover` logs them and `--dry-run` prints them.
    pub fn lines(&self) -> Vec<String> {
        self.items.iter().map(|l| format!("recover: {l}")).collect()
    }

    /// True when a rollback2 swap is among the leftovers (rollback2 reports a resume).
    pub fn finishes_rollback(&self) -> bool {
        self.items.iter().any(Leftover::is_rollback)
    }

    /// The data dir as it will be after [`Leftovers::recover`].
    pub fn view(&self, data: &DataDir) -> View {
        if let Some(Leftover::PutBack { backup, .. }) = self
            .items
            .iter()
            .find(|l| matches!(l, Leftover::PutBack { .. }))
        {
            return View {
                version_dir: backup.clone(),
                files_dir: backup.clone(),
            };
        }
        for l in &self.items {
            match l {
                Leftover::FinishSwap { staged, .. } => {
                    let files_dir = if staged.join("member").exists() {
                        staged.clone()
                    } else {
                        data.path().to_path_buf()
                    };
                    // The staged version.txt replaces the old one; a staged copy without
                    // one (rollback2) leaves none.
                    return View {
                        version_dir: staged.clone(),
                        files_dir,
                    };
                }
                Leftover::FinishLegacySwap { staged, .. } => {
                    return View {
                        version_dir: staged.clone(),
                        files_dir: staged.clone(),
                    }
                }
                _ => {}
            }
        }
        View::here(data)
    }

    /// Bytes that recovery frees (negative: uses): the leftovers it removes, and a put-back
    /// that drops `member/` and copies the backup in. `--dry-run` adds this to the free space
    /// it measures, as the run measures after recovery.
    pub fn freed_bytes(&self, data: &DataDir) -> i64 {
        let size = |p: &Path| data.size_of(p).map_or(0, |n| n as i64);
        self.items
            .iter()
            .map(|l| match l {
                Leftover::Remove(p) => size(p),
                Leftover::PutBack { backup, .. } => size(&data.member_path()) - size(backup),
                _ => 0,
            })
            .sum()
    }

    /// Whether the data dir holds no data once recovered (see [`DataDir::is_empty`]).
    pub fn data_is_empty(&self, data: &DataDir) -> Result<bool, DataDirError> {
        if self.view(data).files_dir != data.path() {
            return Ok(false);
        }
        data.is_empty()
    }

    /// Finishes an older release's swap of a missing data dir (before the dir can be created
    /// and locked); [`Leftovers::recover`] then skips it.
    pub fn recover_legacy_swap(&self, data: &DataDir) -> Result<(), DataDirError> {
        let legacy = Leftovers {
            items: self
                .items
                .iter()
                .filter(|l| matches!(l, Leftover::FinishLegacySwap { .. }))
                .cloned()
                .collect(),
        };
        legacy.recover(data, &|_| {})
    }

    /// Does what [`Leftovers::lines`] says, logging each line. `hook` gets the swap's
    /// crash points.
    pub fn recover(&self, data: &DataDir, hook: &dyn Fn(&str)) -> Result<(), DataDirError> {
        for (l, line) in self.items.iter().zip(self.lines()) {
            if matches!(l, Leftover::FinishLegacySwap { staged, .. } if !present(staged)) {
                continue;
            }
            log::warn!("{line}");
            match l {
                Leftover::FinishSwap {
                    staged,
                    backup,
                    marker,
                } => {
                    data.swap_in(staged, backup, hook)?;
                    if let Some(m) = marker {
                        remove_tree(m)?;
                    }
                }
                Leftover::FinishLegacySwap { staged, marker } => {
                    if !data.exists() {
                        rename_synced(staged, data.path())?;
                    }
                    if let Some(m) = marker {
                        remove_tree(m)?;
                    }
                }
                Leftover::RedoV2V3 { .. } => {}
                Leftover::AdoptLegacyV2V3 { backup, journal } => {
                    remove_tree(&data.backup_path())?;
                    rename_synced(backup, &data.backup_path())?;
                    rename_synced(journal, &data.entry(names::V2V3_JOURNAL))?;
                }
                Leftover::PutBack { journal, .. } => {
                    data.put_back_backup(hook, true)?;
                    remove_tree(&data.entry(names::ROLLBACK_BACKUP))?;
                    remove_tree(journal)?;
                }
                Leftover::Remove(p) => remove_tree(p)?,
            }
        }
        Ok(())
    }
}

/// Whether `dir/version.txt` names etcd3 storage.
/// migrate's step journal names the pair its step ends at; until `version.txt` holds that
/// pair, `.bak` is the data before the step.
pub fn step_journal_live(data: &DataDir) -> bool {
    let Ok(pair) = std::fs::read_to_string(data.entry(names::STEP_JOURNAL)) else {
        return false;
    };
    let now =
        std::fs::read_to_string(data.path().join(crate::version::VERSION_FILE)).unwrap_or_default();
    pair.trim() != now.trim() && data.backup_path().is_dir()
}

/// Whether migrate's step journal is of an etcd3 -> etcd2 step (it names an etcd2 pair).
fn step_journal_is_etcd2(data: &DataDir) -> bool {
    std::fs::read_to_string(data.entry(names::STEP_JOURNAL))
        .is_ok_and(|pair| pair.trim().ends_with("/etcd2"))
}

fn says_etcd3(dir: &Path) -> bool {
    matches!(
        crate::version::read_version_file(dir),
        Ok(crate::version::VersionFile::Parsed(p)) if p.storage == crate::version::Storage::Etcd3
    )
}

fn present(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// A staged copy inside the data dir: finished when its swap began, else removed.
fn staged(
    data: &DataDir,
    staged: &Path,
    marker: Option<PathBuf>,
    backup: &Path,
    items: &mut Vec<Leftover>,
) {
    let complete = marker.as_deref().is_none_or(present);
    if present(staged) && complete && staged.is_dir() {
        let began = !staged.join("member").exists() || !data.member_path().exists();
        if began {
            items.push(Leftover::FinishSwap {
                staged: staged.to_path_buf(),
                backup: backup.to_path_buf(),
                marker,
            });
            return;
        }
    }
    if present(staged) {
        items.push(Leftover::Remove(staged.to_path_buf()));
    }
    if let Some(m) = marker.filter(|m| present(m)) {
        items.push(Leftover::Remove(m));
    }
}

/// `DIR<suffix>` beside the data dir (the layout of releases before this one).
fn beside(data: &DataDir, suffix: &str) -> PathBuf {
    let mut name = data.path().file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    data.path().with_file_name(name)
}

/// An older release's leftovers beside the data dir: a swap that renamed the data dir away
/// is finished; its incomplete work is removed; its backups (`DIR.bak`,
/// `DIR.rollback.backup`) stay where they are.
fn legacy(data: &DataDir, items: &mut Vec<Leftover>) {
    let restore = beside(data, ".restore");
    let marker = beside(data, ".restore.complete");
    let rb_new = beside(data, ".rollback.new");
    let mut used = None;
    if !data.exists() {
        if restore.is_dir() && present(&marker) {
            used = Some(restore.clone());
            items.push(Leftover::FinishLegacySwap {
                staged: restore.clone(),
                marker: Some(marker.clone()),
            });
        } else if rb_new.is_dir() && beside(data, ".rollback.backup").is_dir() {
            used = Some(rb_new.clone());
            items.push(Leftover::FinishLegacySwap {
                staged: rb_new.clone(),
                marker: None,
            });
        }
    }
    let used_marker = (used.as_ref() == Some(&restore)).then(|| marker.clone());
    for p in [
        restore,
        marker,
        beside(data, ".bak.tmp"),
        beside(data, ".discard"),
        beside(data, ".snapshot.db"),
        beside(data, ".rollback.tmp"),
        rb_new,
    ] {
        if present(&p) && used.as_ref() != Some(&p) && used_marker.as_ref() != Some(&p) {
            items.push(Leftover::Remove(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VERSION_FILE;
    use std::fs;

    fn temp(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "etcdtools-leftovers-{label}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::canonicalize(&d).unwrap()
    }

    fn data_with(t: &Path, version: &str) -> DataDir {
        let d = DataDir::resolve(&t.join("data")).unwrap();
        let _ = fs::remove_dir_all(d.path());
        fs::create_dir_all(d.member_path()).unwrap();
        fs::write(d.path().join(VERSION_FILE), version).unwrap();
        d
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn a_marked_restore_is_finished_once_the_swap_began_and_dropped_before() {
        let t = temp("restore");
        let d = data_with(&t, "3.5.1/etcd3");
        fs::create_dir_all(d.restore_path().join("member")).unwrap();
        fs::write(d.restore_path().join(VERSION_FILE), "3.4.23/etcd3").unwrap();
        // Not begun: dropped, the data stays.
        fs::write(d.restore_marker(), "").unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(
            l.items,
            vec![
                Leftover::Remove(d.restore_path()),
                Leftover::Remove(d.restore_marker())
            ]
        );
        assert_eq!(l.view(&d).version_dir, d.path());
        // Begun (member/ moved to the backup): finished.
        fs::create_dir_all(d.backup_path()).unwrap();
        fs::rename(d.member_path(), d.backup_path().join("member")).unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(l.items.len(), 1, "{:?}", l.items);
        assert!(matches!(l.items[0], Leftover::FinishSwap { .. }));
        assert_eq!(l.view(&d).version_dir, d.restore_path());
        assert!(!l.data_is_empty(&d).unwrap());
        l.recover(&d, &|_| {}).unwrap();
        assert_eq!(read(&d.path().join(VERSION_FILE)), "3.4.23/etcd3");
        assert_eq!(read(&d.backup_path().join(VERSION_FILE)), "3.5.1/etcd3");
        assert!(Leftovers::scan(&d).is_empty());
        // Without the marker a restore is incomplete: dropped.
        fs::create_dir_all(d.restore_path().join("member")).unwrap();
        assert_eq!(
            Leftovers::scan(&d).items,
            vec![Leftover::Remove(d.restore_path())]
        );
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn rollback2_swap_and_stale_files() {
        let t = temp("rollback");
        let d = data_with(&t, "3.5.1/etcd3");
        let new = d.entry(names::ROLLBACK_NEW);
        fs::create_dir_all(new.join("member")).unwrap();
        fs::write(d.snapshot_path(), "x").unwrap();
        fs::write(d.path().join("version.txt-next"), "3.").unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(
            l.items,
            vec![
                Leftover::Remove(new.clone()),
                Leftover::Remove(d.snapshot_path()),
                Leftover::Remove(d.path().join("version.txt-next")),
            ]
        );
        assert!(!l.finishes_rollback());
        fs::remove_file(d.snapshot_path()).unwrap();
        fs::remove_file(d.path().join("version.txt-next")).unwrap();
        let backup = d.entry(names::ROLLBACK_BACKUP);
        fs::create_dir_all(&backup).unwrap();
        fs::rename(d.member_path(), backup.join("member")).unwrap();
        let l = Leftovers::scan(&d);
        assert!(l.finishes_rollback());
        let v = l.view(&d);
        assert_eq!(
            (v.version_dir.as_path(), v.files_dir.as_path()),
            (new.as_path(), new.as_path())
        );
        l.recover(&d, &|_| {}).unwrap();
        assert!(d.member_path().is_dir() && !new.exists());
        assert!(!d.path().join(VERSION_FILE).exists());
        assert_eq!(read(&backup.join(VERSION_FILE)), "3.5.1/etcd3");
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn an_older_releases_swap_beside_a_missing_data_dir_is_finished() {
        let t = temp("legacy");
        let d = DataDir::resolve(&t.join("data")).unwrap();
        fs::create_dir_all(t.join("data.rollback.new/member")).unwrap();
        fs::create_dir_all(t.join("data.rollback.backup/member")).unwrap();
        fs::write(t.join("data.snapshot.db"), "").unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(
            l.items,
            vec![
                Leftover::FinishLegacySwap {
                    staged: t.join("data.rollback.new"),
                    marker: None
                },
                Leftover::Remove(t.join("data.snapshot.db")),
            ]
        );
        assert!(!l.data_is_empty(&d).unwrap());
        l.recover(&d, &|_| {}).unwrap();
        assert!(d.member_path().is_dir());
        assert!(Leftovers::scan(&d).is_empty());
        assert!(t.join("data.rollback.backup").is_dir(), "backups stay");
        // A marked legacy restore.
        fs::remove_dir_all(d.path()).unwrap();
        fs::create_dir_all(t.join("data.restore/member")).unwrap();
        fs::write(t.join("data.restore.complete"), "").unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(l.items.len(), 1, "{:?}", l.items);
        l.recover(&d, &|_| {}).unwrap();
        assert!(d.member_path().is_dir() && !t.join("data.restore.complete").exists());
        // An older release's interrupted etcd2 -> etcd3 conversion: its backup moves inside.
        fs::remove_dir_all(d.path()).unwrap();
        fs::create_dir_all(d.member_path()).unwrap();
        fs::create_dir_all(t.join("data.bak/member")).unwrap();
        fs::write(t.join("data.v2v3-backup"), "").unwrap();
        let l = Leftovers::scan(&d);
        assert!(
            matches!(l.items[0], Leftover::AdoptLegacyV2V3 { .. }),
            "{:?}",
            l.items
        );
        assert!(
            matches!(l.items.last(), Some(Leftover::RedoV2V3 { .. })),
            "{:?}",
            l.items
        );
        l.recover(&d, &|_| {}).unwrap();
        assert!(d.backup_path().join("member").is_dir());
        assert!(d.entry(names::V2V3_JOURNAL).exists() && !t.join("data.bak").exists());
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn an_etcd2_to_etcd3_journal_is_live_until_version_txt_says_etcd3() {
        let t = temp("journal");
        let d = data_with(&t, "2.2.1/etcd2");
        fs::create_dir_all(d.backup_path().join("member")).unwrap();
        fs::write(d.entry(names::V2V3_JOURNAL), "").unwrap();
        fs::create_dir_all(d.restore_path().join("member")).unwrap();
        fs::write(d.restore_marker(), "").unwrap();
        fs::create_dir_all(d.entry(names::DISCARD)).unwrap();
        fs::rename(d.member_path(), d.entry(names::DISCARD).join("member")).unwrap();
        let l = Leftovers::scan(&d);
        // Putting the etcd2 backup back: what it replaces goes to .discard, never to .bak.
        assert_eq!(
            l.items[0],
            Leftover::FinishSwap {
                staged: d.restore_path(),
                backup: d.entry(names::DISCARD),
                marker: Some(d.restore_marker()),
            }
        );
        assert!(matches!(l.items.last(), Some(Leftover::RedoV2V3 { .. })));
        let d = data_with(&t, "3.4.23/etcd3");
        fs::write(d.entry(names::V2V3_JOURNAL), "").unwrap();
        assert_eq!(
            Leftovers::scan(&d).items,
            vec![Leftover::Remove(d.entry(names::V2V3_JOURNAL))]
        );
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_step_journal_is_live_until_version_txt_holds_its_pair() {
        let t = temp("step-journal");
        let d = data_with(&t, "3.3.25/etcd3");
        fs::create_dir_all(d.backup_path().join("member")).unwrap();
        fs::write(d.entry(names::STEP_JOURNAL), "3.4.23/etcd3").unwrap();
        fs::create_dir_all(d.restore_path().join("member")).unwrap();
        fs::write(d.restore_marker(), "").unwrap();
        // Not begun: dropped (the rerun puts the backup back again).
        assert_eq!(
            Leftovers::scan(&d).items,
            vec![
                Leftover::Remove(d.restore_path()),
                Leftover::Remove(d.restore_marker())
            ]
        );
        // Begun: putting the step's backup back; what it replaces is discarded, never in .bak.
        fs::create_dir_all(d.entry(names::DISCARD)).unwrap();
        fs::rename(d.member_path(), d.entry(names::DISCARD).join("member")).unwrap();
        assert_eq!(
            Leftovers::scan(&d).items[0],
            Leftover::FinishSwap {
                staged: d.restore_path(),
                backup: d.entry(names::DISCARD),
                marker: Some(d.restore_marker()),
            }
        );
        // member/ dropped before the copy was complete: the backup is put back again.
        fs::remove_file(d.restore_marker()).unwrap();
        assert_eq!(
            Leftovers::scan(&d).items.last(),
            Some(&Leftover::PutBack {
                backup: d.backup_path(),
                journal: d.entry(names::STEP_JOURNAL),
            })
        );
        assert_eq!(Leftovers::scan(&d).view(&d).files_dir, d.backup_path());
        fs::write(d.restore_marker(), "").unwrap();
        // Once version.txt holds the step's pair, the journal is stale and goes.
        fs::remove_dir_all(d.restore_path()).unwrap();
        fs::remove_file(d.restore_marker()).unwrap();
        fs::remove_dir_all(d.entry(names::DISCARD)).unwrap();
        fs::create_dir_all(d.member_path()).unwrap();
        fs::write(d.path().join("version.txt"), "3.4.23/etcd3").unwrap();
        assert_eq!(
            Leftovers::scan(&d).items,
            vec![Leftover::Remove(d.entry(names::STEP_JOURNAL))]
        );
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn an_etcd3_to_etcd2_step_journal_puts_the_backup_back() {
        let t = temp("v3v2-journal");
        // rollback2 swapped its unproved output in (no version.txt), then the run died.
        let d = data_with(&t, "3.4.23/etcd3");
        fs::create_dir_all(d.backup_path().join("member")).unwrap();
        fs::write(d.backup_path().join("member/db"), "before").unwrap();
        fs::write(d.backup_path().join(VERSION_FILE), "3.4.23/etcd3").unwrap();
        fs::write(d.entry(names::STEP_JOURNAL), "2.2.1/etcd2").unwrap();
        let rb = d.entry(names::ROLLBACK_BACKUP);
        fs::create_dir_all(&rb).unwrap();
        fs::rename(d.member_path(), rb.join("member")).unwrap();
        fs::rename(d.path().join(VERSION_FILE), rb.join(VERSION_FILE)).unwrap();
        fs::create_dir_all(d.member_path()).unwrap();
        fs::write(d.member_path().join("v2"), "unproved").unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(
            l.items,
            vec![Leftover::PutBack {
                backup: d.backup_path(),
                journal: d.entry(names::STEP_JOURNAL)
            }]
        );
        assert_eq!(l.view(&d).files_dir, d.backup_path());
        l.recover(&d, &|_| {}).unwrap();
        assert_eq!(read(&d.member_path().join("db")), "before");
        assert!(!d.member_path().join("v2").exists());
        assert_eq!(read(&d.path().join(VERSION_FILE)), "3.4.23/etcd3");
        assert!(!rb.exists() && !d.entry(names::STEP_JOURNAL).exists());
        assert!(
            d.backup_path().join("member/db").exists(),
            "the backup is kept"
        );
        assert!(Leftovers::scan(&d).is_empty());
        // A put-back whose swap began (member/ in .discard) is redone from the backup.
        fs::write(d.entry(names::STEP_JOURNAL), "2.2.1/etcd2").unwrap();
        fs::remove_file(d.path().join(VERSION_FILE)).unwrap();
        fs::create_dir_all(&rb).unwrap();
        crate::datadir::copy_tree(&d.backup_path(), &d.restore_path()).unwrap();
        fs::write(d.restore_marker(), "").unwrap();
        fs::create_dir_all(d.entry(names::DISCARD)).unwrap();
        fs::rename(d.member_path(), d.entry(names::DISCARD).join("member")).unwrap();
        let l = Leftovers::scan(&d);
        assert_eq!(
            l.items,
            vec![
                Leftover::Remove(d.entry(names::DISCARD)),
                Leftover::PutBack {
                    backup: d.backup_path(),
                    journal: d.entry(names::STEP_JOURNAL)
                },
            ]
        );
        assert_eq!(l.view(&d).files_dir, d.backup_path());
        l.recover(&d, &|_| {}).unwrap();
        assert_eq!(read(&d.member_path().join("db")), "before");
        assert_eq!(read(&d.path().join(VERSION_FILE)), "3.4.23/etcd3");
        assert!(Leftovers::scan(&d).is_empty());
        // Once version.txt says etcd2, the step finished: the journal is stale.
        fs::write(d.entry(names::STEP_JOURNAL), "2.2.1/etcd2").unwrap();
        fs::write(d.path().join(VERSION_FILE), "2.2.1/etcd2").unwrap();
        assert_eq!(
            Leftovers::scan(&d).items,
            vec![Leftover::Remove(d.entry(names::STEP_JOURNAL))]
        );
        fs::remove_dir_all(&t).unwrap();
    }
}
