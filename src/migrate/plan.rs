//! The migration plan: a pure function of (current version.txt, target, bundled versions) to
//! the steps that move the data there. No file or process is touched here.
//!
//! Rules (k8s-etcd-image.md §4.6, with the original's panics and loops turned into errors):
//! - storage etcd2 -> etcd3 first (`etcdctl migrate` only exists up to 3.4), at the current
//!   minor (or, for 2.x data, at the lowest bundled 3.0-3.4);
//! - same minor, or one minor behind the target: only rewrite `version.txt` (the target etcd
//!   does the last hop itself on start);
//! - further behind: start the highest bundled patch of every intermediate minor in turn;
//! - one minor ahead: snapshot downgrade up to 3.5 data; from 3.6 data (which carries a
//!   storage version) `etcdutl-<cur> migrate --target-version <minor>` on the stopped data dir,
//!   as etcd's 3.6 downgrade guide says; two or more: refused;
//! - into 3.6 from 3.5: etcd wants the 3.5 member on >= 3.5.26 first (zombie members; the
//!   3.5.20 learner fix, etcd#19557, is below that floor too)
//!   ([`V3_6_FROM_3_5_FLOOR`]), so an older 3.5 patch is started on the highest bundled 3.5
//!   at or above it first (refused when none is bundled);
//! - storage etcd3 -> etcd2 last, by the rollback2 library;
//! - anything else (another major, a missing intermediate minor): an error naming what is
//!   missing, never a loop.

use std::fmt;

use super::config::join;
use crate::version::{EtcdVersion, Storage, VersionPair};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Only record `to` in `version.txt`.
    WriteVersion { to: VersionPair },
    /// Start `etcd-<to>` on the data, wait until it serves, stop; then `version.txt` := `to`.
    Upgrade { to: EtcdVersion, storage: Storage },
    /// One minor down: `etcd-<run>` + `etcdctl-<run> snapshot save`, restore with the target's
    /// tool into `<dir>.restore`, swap; then `version.txt` := `to/etcd3`. `run` is the bundled
    /// build of the current minor (the exact current version when bundled).
    Downgrade {
        current: EtcdVersion,
        run: EtcdVersion,
        to: EtcdVersion,
    },
    /// Back up to `<dir>.bak`, `etcdctl-<at> migrate`, start `etcd-<at>`, lease TTL keys;
    /// then `version.txt` := `at/etcd3`.
    MigrateV2ToV3 { at: EtcdVersion },
    /// Back up to `<dir>.bak`, convert v3 -> v2 with the rollback2 library; then
    /// `version.txt` := `to/etcd2`.
    RollbackV3ToV2 { from: EtcdVersion, to: EtcdVersion },
    /// One minor down from 3.6 or later: back up to `<dir>.bak`, then `etcdutl-<run> migrate
    /// --data-dir <dir> --target-version <to's minor>` on the stopped data dir (in place;
    /// idempotent, so a rerun after a crash redoes it); then `version.txt` := `to/etcd3`.
    SchemaDowngrade {
        current: EtcdVersion,
        run: EtcdVersion,
        to: EtcdVersion,
    },
}

/// etcd's advice for 3.5 -> 3.6 (etcd.io blog, "Avoiding Zombie Cluster Members When Upgrading
/// to etcd v3.6"): every 3.5 member runs 3.5.26 or later before 3.6; 3.5.26 syncs the v3
/// store's members from the v2 store, which 3.6 takes as the truth.
pub const V3_6_FROM_3_5_FLOOR: (u64, u64, u64) = (3, 5, 26);

impl Step {
    /// The pair `version.txt` holds once this step is done.
    pub fn result(&self) -> VersionPair {
        match self {
            Step::WriteVersion { to } => to.clone(),
            Step::Upgrade { to, storage } => VersionPair::new(to.clone(), *storage),
            Step::Downgrade { to, .. } | Step::SchemaDowngrade { to, .. } => {
                VersionPair::new(to.clone(), Storage::Etcd3)
            }
            Step::MigrateV2ToV3 { at } => VersionPair::new(at.clone(), Storage::Etcd3),
            Step::RollbackV3ToV2 { to, .. } => VersionPair::new(to.clone(), Storage::Etcd2),
        }
    }

    /// File names (in `--bin-dir`) of the binaries this step runs.
    pub fn binaries(&self) -> Vec<String> {
        match self {
            Step::WriteVersion { .. } | Step::RollbackV3ToV2 { .. } => Vec::new(),
            Step::Upgrade { to, .. } => vec![format!("etcd-{to}")],
            Step::Downgrade { run, to, .. } => vec![
                format!("etcd-{run}"),
                format!("etcdctl-{run}"),
                restore_tool(to),
            ],
            Step::MigrateV2ToV3 { at } => vec![format!("etcdctl-{at}"), format!("etcd-{at}")],
            Step::SchemaDowngrade { run, .. } => vec![format!("etcdutl-{run}")],
        }
    }
}

/// `etcdctl-<v>` restores up to 3.4; from 3.5 on `etcdutl-<v>` (etcdctl lost it in 3.6).
pub fn restore_tool(v: &EtcdVersion) -> String {
    if v.major() > 3 || (v.major() == 3 && v.minor() >= 5) {
        format!("etcdutl-{v}")
    } else {
        format!("etcdctl-{v}")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::WriteVersion { to } => write!(f, "write {to} to version.txt"),
            Step::Upgrade { to, storage } => {
                write!(
                    f,
                    "upgrade: start etcd {to} on the data ({storage}), wait until it serves, stop"
                )
            }
            Step::Downgrade { current, run, to } => {
                write!(
                    f,
                    "downgrade {current} -> {to}: snapshot with etcd {run}, restore with {}",
                    restore_tool(to)
                )
            }
            Step::MigrateV2ToV3 { at } => {
                write!(
                    f,
                    "storage etcd2 -> etcd3 at {at}: etcdctl migrate, then lease the TTL keys"
                )
            }
            Step::RollbackV3ToV2 { from, to } => {
                write!(
                    f,
                    "storage etcd3 -> etcd2: rollback2 converts {from} v3 data for etcd {to}"
                )
            }
            Step::SchemaDowngrade { current, run, to } => write!(
                f,
                "downgrade {current} -> {to}: etcdutl-{run} migrate --target-version {} on the \
                 stopped data dir (after a backup)",
                to.minor_string()
            ),
        }
    }
}

/// Why no plan takes the data to the target: each message says what would make one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Downgrade by more than one minor.
    #[error(
        "rollback from {current} to {target} not supported, only rollbacks to the previous \
         minor version are supported"
    )]
    TooFarDown {
        current: VersionPair,
        target: VersionPair,
    },
    /// No bundled build of a minor the plan must run.
    #[error(
        "no etcd {minor}.x is bundled ({why}); bundled versions: {}; add an etcd {minor}.x \
         to the image's bundle",
        join(bundled)
    )]
    MinorNotBundled {
        minor: String,
        why: String,
        bundled: Vec<EtcdVersion>,
    },
    /// No rule covers this move.
    #[error("cannot migrate from {current} to {target}: {why}")]
    NoRule {
        current: VersionPair,
        target: VersionPair,
        why: String,
    },
}

/// The steps that take data at `current` to `target` with the `bundled` binaries (sorted).
/// Empty when the data is already at the target.
pub fn plan(
    current: &VersionPair,
    target: &VersionPair,
    bundled: &[EtcdVersion],
) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    let mut cur = current.clone();
    if cur.storage == Storage::Etcd2 && target.storage == Storage::Etcd3 {
        let at = v2_to_v3_version(&cur, target, bundled)?;
        steps.push(Step::MigrateV2ToV3 { at: at.clone() });
        cur = VersionPair::new(at, Storage::Etcd3);
    }
    if cur.storage == Storage::Etcd3 && target.storage == Storage::Etcd2 {
        // rollback2 turns 3.x v3 data into an etcd 2.x data dir (2.2.1 or 2.3.7), in one step.
        if cur.version.major() != 3 || target.version.major() != 2 {
            return Err(PlanError::NoRule {
                current: current.clone(),
                target: target.clone(),
                why: "etcd3 -> etcd2 (rollback2) converts etcd 3.x data into etcd 2.x data only \
                      (2.2.1 or 2.3.7)"
                    .into(),
            });
        }
        steps.push(Step::RollbackV3ToV2 {
            from: cur.version.clone(),
            to: target.version.clone(),
        });
        return Ok(dedup_writes(steps));
    }
    steps.extend(version_steps(current, &cur, target, bundled)?);
    Ok(dedup_writes(steps))
}

/// Drops exact repeats (a composed plan can produce the same write twice).
fn dedup_writes(steps: Vec<Step>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for s in steps {
        if out.last() == Some(&s) {
            continue;
        }
        out.push(s);
    }
    out
}

/// Moves within one storage kind.
fn version_steps(
    original: &VersionPair,
    cur: &VersionPair,
    target: &VersionPair,
    bundled: &[EtcdVersion],
) -> Result<Vec<Step>, PlanError> {
    let (c, t) = (&cur.version, &target.version);
    let target = VersionPair::new(t.clone(), cur.storage);
    if c == t {
        return Ok(Vec::new());
    }
    if c.major() != t.major() {
        return Err(PlanError::NoRule {
            current: original.clone(),
            target,
            why: format!(
                "moving between major versions ({} -> {}) is not supported",
                c.major(),
                t.major()
            ),
        });
    }
    if c.minor() == t.minor() {
        return Ok(vec![Step::WriteVersion { to: target }]);
    }
    if c.minor() < t.minor() {
        let mut steps = Vec::new();
        let mut at = c.clone();
        for minor in c.minor() + 1..t.minor() {
            let v = highest_of_minor(bundled, c.major(), minor).ok_or_else(|| {
                PlanError::MinorNotBundled {
                    minor: format!("{}.{minor}", c.major()),
                    why: format!("needed to step from {c} to {t} one minor at a time"),
                    bundled: bundled.to_vec(),
                }
            })?;
            if let Some(floor) = patch_floor_before(&at, &v, bundled, original, &target)? {
                steps.push(Step::Upgrade {
                    to: floor.clone(),
                    storage: cur.storage,
                });
            }
            steps.push(Step::Upgrade {
                to: v.clone(),
                storage: cur.storage,
            });
            at = v;
        }
        if let Some(floor) = patch_floor_before(&at, t, bundled, original, &target)? {
            steps.push(Step::Upgrade {
                to: floor,
                storage: cur.storage,
            });
        }
        steps.push(Step::WriteVersion { to: target });
        return Ok(steps);
    }
    if c.minor() == t.minor() + 1 {
        if cur.storage != Storage::Etcd3 {
            return Err(PlanError::NoRule {
                current: original.clone(),
                target,
                why: "a minor downgrade (snapshot + restore) needs etcd3 storage".into(),
            });
        }
        let run = if bundled.contains(c) {
            c.clone()
        } else {
            highest_of_minor(bundled, c.major(), c.minor()).ok_or_else(|| {
                PlanError::MinorNotBundled {
                    minor: c.minor_string(),
                    why: if (c.major(), c.minor()) >= (3, 6) {
                        format!(
                            "the downgrade runs etcdutl {} migrate on the data",
                            c.minor_string()
                        )
                    } else {
                        format!(
                            "the downgrade must start etcd {} to take a snapshot",
                            c.minor_string()
                        )
                    },
                    bundled: bundled.to_vec(),
                }
            })?
        };
        if (c.major(), c.minor()) >= (3, 6) {
            return Ok(vec![Step::SchemaDowngrade {
                current: c.clone(),
                run,
                to: t.clone(),
            }]);
        }
        return Ok(vec![Step::Downgrade {
            current: c.clone(),
            run,
            to: t.clone(),
        }]);
    }
    Err(PlanError::TooFarDown {
        current: cur.clone(),
        target,
    })
}

/// The 3.5 patch to run before the hop from `at` (3.5.x) into `t` (3.6+): `None` when `at`
/// is already at or above [`V3_6_FROM_3_5_FLOOR`] or the hop does not cross into 3.6.
fn patch_floor_before(
    at: &EtcdVersion,
    t: &EtcdVersion,
    bundled: &[EtcdVersion],
    original: &VersionPair,
    target: &VersionPair,
) -> Result<Option<EtcdVersion>, PlanError> {
    let (fm, fn_, fp) = V3_6_FROM_3_5_FLOOR;
    let floor = EtcdVersion::new(fm, fn_, fp);
    if (at.major(), at.minor()) != (fm, fn_) || (t.major(), t.minor()) < (3, 6) || *at >= floor {
        return Ok(None);
    }
    match highest_of_minor(bundled, fm, fn_).filter(|v| *v >= floor) {
        Some(v) => Ok(Some(v)),
        None => Err(PlanError::NoRule {
            current: original.clone(),
            target: target.clone(),
            why: format!(
                "etcd's upgrade guide requires every 3.5 member to run etcd >= {floor} before \
                 3.6, and no such 3.5 is bundled (bundled: {}); bundle etcd {floor} or later",
                join(bundled)
            ),
        }),
    }
}

/// Which version's `etcdctl migrate` converts etcd2 data: the current minor for 3.0-3.4 data,
/// the lowest bundled 3.0-3.4 for 2.x data.
fn v2_to_v3_version(
    cur: &VersionPair,
    target: &VersionPair,
    bundled: &[EtcdVersion],
) -> Result<EtcdVersion, PlanError> {
    let v = &cur.version;
    let no_rule = |why: String| PlanError::NoRule {
        current: cur.clone(),
        target: target.clone(),
        why,
    };
    match v.major() {
        3 if v.minor() <= 4 => {
            if bundled.contains(v) {
                Ok(v.clone())
            } else {
                highest_of_minor(bundled, 3, v.minor()).ok_or_else(|| PlanError::MinorNotBundled {
                    minor: v.minor_string(),
                    why: format!("its etcdctl converts the etcd2 data written by etcd {v}"),
                    bundled: bundled.to_vec(),
                })
            }
        }
        3 => Err(no_rule(format!(
            "etcd2 data under etcd {v}: `etcdctl migrate` exists only in etcd 3.0-3.4"
        ))),
        2 => bundled
            .iter()
            .find(|b| b.major() == 3 && b.minor() <= 4)
            .cloned()
            .ok_or_else(|| PlanError::MinorNotBundled {
                minor: "3.0-3.4".into(),
                why: "its etcdctl converts etcd2 data".into(),
                bundled: bundled.to_vec(),
            }),
        _ => Err(no_rule(
            "etcd2 storage is only known for etcd 2.x and 3.x".into(),
        )),
    }
}

fn highest_of_minor(bundled: &[EtcdVersion], major: u64, minor: u64) -> Option<EtcdVersion> {
    bundled
        .iter()
        .filter(|b| b.major() == major && b.minor() == minor && !b.is_prerelease())
        .max()
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> VersionPair {
        s.parse().unwrap()
    }
    fn v(s: &str) -> EtcdVersion {
        s.parse().unwrap()
    }
    fn b(list: &str) -> Vec<EtcdVersion> {
        super::super::config::parse_bundled(list).unwrap()
    }
    fn w(s: &str) -> Step {
        Step::WriteVersion { to: p(s) }
    }
    fn up(s: &str) -> Step {
        Step::Upgrade {
            to: v(s),
            storage: Storage::Etcd3,
        }
    }
    /// A snapshot downgrade of data at `current`, snapshot taken by etcd `run`.
    fn snapshot_down(current: &str, run: &str, to: &str) -> Step {
        Step::Downgrade {
            current: v(current),
            run: v(run),
            to: v(to),
        }
    }

    const BUNDLE: &str = "3.4.23,3.5.0,3.5.1";

    #[test]
    fn at_target_nothing_to_do() {
        assert_eq!(
            plan(&p("3.5.1/etcd3"), &p("3.5.1/etcd3"), &b(BUNDLE)),
            Ok(vec![])
        );
    }

    #[test]
    fn same_minor_or_one_behind_only_rewrites() {
        let bundle = b(BUNDLE);
        for (cur, tgt) in [
            ("3.5.0/etcd3", "3.5.1/etcd3"),
            ("3.5.1/etcd3", "3.5.0/etcd3"),
            ("3.4.23/etcd3", "3.5.1/etcd3"),
            ("3.4.0/etcd3", "3.5.0/etcd3"),
            ("3.4.23/etcd2", "3.4.23/etcd2"),
        ] {
            let expect = if cur == tgt { vec![] } else { vec![w(tgt)] };
            assert_eq!(
                plan(&p(cur), &p(tgt), &bundle),
                Ok(expect),
                "{cur} -> {tgt}"
            );
        }
    }

    #[test]
    fn multi_minor_upgrade_steps_through_highest_patches() {
        let bundle = b("3.2.32,3.3.10,3.3.17,3.4.18,3.5.15");
        assert_eq!(
            plan(&p("3.2.0/etcd3"), &p("3.5.15/etcd3"), &bundle),
            Ok(vec![up("3.3.17"), up("3.4.18"), w("3.5.15/etcd3")])
        );
        // The current minor need not be bundled (the original panicked there).
        assert_eq!(
            plan(&p("3.1.0/etcd3"), &p("3.4.18/etcd3"), &bundle),
            Ok(vec![up("3.2.32"), up("3.3.17"), w("3.4.18/etcd3")])
        );
    }

    #[test]
    fn missing_intermediate_minor_is_an_error() {
        // 3.3 -> 3.5 only needs 3.4, which is bundled; 3.2 -> 3.5 also needs 3.3.
        assert!(plan(&p("3.3.0/etcd3"), &p("3.5.1/etcd3"), &b(BUNDLE)).is_ok());
        let e = plan(&p("3.2.0/etcd3"), &p("3.5.1/etcd3"), &b(BUNDLE)).unwrap_err();
        assert!(matches!(e, PlanError::MinorNotBundled { ref minor, .. } if minor == "3.3"));
        assert!(e.to_string().contains("no etcd 3.3.x is bundled"), "{e}");
        assert!(
            e.to_string()
                .ends_with("; add an etcd 3.3.x to the image's bundle"),
            "{e}"
        );
    }

    #[test]
    fn one_minor_down_is_a_snapshot_downgrade() {
        assert_eq!(
            plan(&p("3.5.1/etcd3"), &p("3.4.23/etcd3"), &b(BUNDLE)),
            Ok(vec![snapshot_down("3.5.1", "3.5.1", "3.4.23")])
        );
        // Current patch not bundled: the highest bundled patch of that minor takes the snapshot.
        assert_eq!(
            plan(&p("3.5.3/etcd3"), &p("3.4.23/etcd3"), &b(BUNDLE)),
            Ok(vec![snapshot_down("3.5.3", "3.5.1", "3.4.23")])
        );
        let e = plan(&p("3.6.0/etcd3"), &p("3.5.1/etcd3"), &b(BUNDLE)).unwrap_err();
        assert!(matches!(e, PlanError::MinorNotBundled { ref minor, .. } if minor == "3.6"));
        let s = snapshot_down("3.5.1", "3.5.1", "3.4.23");
        assert_eq!(
            s.binaries(),
            vec!["etcd-3.5.1", "etcdctl-3.5.1", "etcdctl-3.4.23"]
        );
        assert_eq!(restore_tool(&v("3.5.0")), "etcdutl-3.5.0");
    }

    #[test]
    fn two_minors_down_is_refused_with_the_original_message() {
        let e = plan(
            &p("3.5.1/etcd3"),
            &p("3.3.0/etcd3"),
            &b("3.3.0,3.4.23,3.5.1"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rollback from 3.5.1/etcd3 to 3.3.0/etcd3 not supported, only rollbacks to the \
             previous minor version are supported"
        );
    }

    #[test]
    fn other_majors_have_no_rule() {
        let e = plan(&p("3.5.1/etcd3"), &p("4.0.0/etcd3"), &b("3.5.1,4.0.0")).unwrap_err();
        assert!(matches!(e, PlanError::NoRule { .. }), "{e}");
        let e = plan(&p("4.0.0/etcd3"), &p("3.5.1/etcd3"), &b("3.5.1,4.0.0")).unwrap_err();
        assert!(matches!(e, PlanError::NoRule { .. }), "{e}");
    }

    #[test]
    fn etcd2_to_etcd3() {
        let bundle = b(BUNDLE);
        assert_eq!(
            plan(&p("3.4.23/etcd2"), &p("3.4.23/etcd3"), &bundle),
            Ok(vec![Step::MigrateV2ToV3 { at: v("3.4.23") }])
        );
        assert_eq!(
            plan(&p("3.4.23/etcd2"), &p("3.5.1/etcd3"), &bundle),
            Ok(vec![
                Step::MigrateV2ToV3 { at: v("3.4.23") },
                w("3.5.1/etcd3")
            ])
        );
        assert_eq!(
            plan(&p("3.4.0/etcd2"), &p("3.5.1/etcd3"), &bundle),
            Ok(vec![
                Step::MigrateV2ToV3 { at: v("3.4.23") },
                w("3.5.1/etcd3")
            ])
        );
        assert_eq!(
            plan(&p("2.2.1/etcd2"), &p("3.5.1/etcd3"), &bundle),
            Ok(vec![
                Step::MigrateV2ToV3 { at: v("3.4.23") },
                w("3.5.1/etcd3")
            ])
        );
        let e = plan(&p("3.5.1/etcd2"), &p("3.5.1/etcd3"), &bundle).unwrap_err();
        assert!(e.to_string().contains("only in etcd 3.0-3.4"), "{e}");
        let e = plan(&p("3.3.0/etcd2"), &p("3.5.1/etcd3"), &bundle).unwrap_err();
        assert!(matches!(e, PlanError::MinorNotBundled { ref minor, .. } if minor == "3.3"));
    }

    #[test]
    fn etcd3_to_etcd2() {
        let bundle = b("2.2.1,3.0.17,3.4.23,3.5.1");
        assert_eq!(
            plan(&p("3.0.17/etcd3"), &p("2.2.1/etcd2"), &bundle),
            Ok(vec![Step::RollbackV3ToV2 {
                from: v("3.0.17"),
                to: v("2.2.1")
            }])
        );
        assert_eq!(
            plan(&p("3.5.1/etcd3"), &p("2.2.1/etcd2"), &bundle),
            Ok(vec![Step::RollbackV3ToV2 {
                from: v("3.5.1"),
                to: v("2.2.1")
            }])
        );
        // A 3.x target with etcd2 storage is no rollback2 product (the original "completed" it).
        let e = plan(&p("3.4.23/etcd3"), &p("3.4.23/etcd2"), &bundle).unwrap_err();
        assert!(e.to_string().contains("etcd 2.x data only"), "{e}");
    }

    #[test]
    fn from_3_6_one_minor_down_is_etcdutl_migrate_of_the_current_minor() {
        let bundle = b("3.4.37,3.5.30,3.6.5");
        let down = |cur: &str, run: &str, to: &str| Step::SchemaDowngrade {
            current: v(cur),
            run: v(run),
            to: v(to),
        };
        assert_eq!(
            plan(&p("3.6.5/etcd3"), &p("3.5.30/etcd3"), &bundle),
            Ok(vec![down("3.6.5", "3.6.5", "3.5.30")])
        );
        // Current patch not bundled: the bundled 3.6 knows the same schema.
        assert_eq!(
            plan(&p("3.6.2/etcd3"), &p("3.5.30/etcd3"), &bundle),
            Ok(vec![down("3.6.2", "3.6.5", "3.5.30")])
        );
        let s = down("3.6.5", "3.6.5", "3.5.30");
        assert_eq!(s.binaries(), vec!["etcdutl-3.6.5"]);
        assert!(s.to_string().contains("--target-version 3.5"), "{s}");
        assert_eq!(s.result(), p("3.5.30/etcd3"));
        // 3.7 -> 3.6 likewise; two minors down stays refused.
        assert_eq!(
            plan(&p("3.7.0/etcd3"), &p("3.6.5/etcd3"), &b("3.6.5,3.7.0")),
            Ok(vec![down("3.7.0", "3.7.0", "3.6.5")])
        );
        let e = plan(&p("3.6.5/etcd3"), &p("3.4.37/etcd3"), &bundle).unwrap_err();
        assert!(matches!(e, PlanError::TooFarDown { .. }));
        assert_eq!(
            e.to_string(),
            "rollback from 3.6.5/etcd3 to 3.4.37/etcd3 not supported, only rollbacks to the \
             previous minor version are supported"
        );
        // Up to 3.5 data the snapshot downgrade stays.
        assert!(matches!(
            plan(&p("3.5.30/etcd3"), &p("3.4.37/etcd3"), &bundle).unwrap()[..],
            [Step::Downgrade { .. }]
        ));
    }

    #[test]
    fn into_3_6_the_3_5_data_must_have_run_3_5_26_or_later() {
        // At or above the floor: 3.6 does the hop itself.
        assert_eq!(
            plan(&p("3.5.30/etcd3"), &p("3.6.5/etcd3"), &b("3.5.30,3.6.5")),
            Ok(vec![w("3.6.5/etcd3")])
        );
        // Below it: the highest bundled 3.5 (>= the floor) runs first.
        assert_eq!(
            plan(
                &p("3.5.21/etcd3"),
                &p("3.6.5/etcd3"),
                &b("3.5.21,3.5.30,3.6.5")
            ),
            Ok(vec![up("3.5.30"), w("3.6.5/etcd3")])
        );
        assert_eq!(
            plan(
                &p("3.4.23/etcd3"),
                &p("3.6.5/etcd3"),
                &b("3.4.23,3.5.30,3.6.5")
            ),
            Ok(vec![up("3.5.30"), w("3.6.5/etcd3")])
        );
        // No bundled 3.5 at the floor (3.5.25 is one below it): refused, saying so.
        for cur in ["3.5.25/etcd3", "3.4.37/etcd3"] {
            let e = plan(&p(cur), &p("3.6.5/etcd3"), &b("3.4.37,3.5.25,3.6.5")).unwrap_err();
            assert!(matches!(e, PlanError::NoRule { .. }), "{e}");
            assert!(e.to_string().contains("etcd >= 3.5.26 before 3.6"), "{e}");
        }
        // Also when 3.6 is an intermediate minor.
        assert_eq!(
            plan(
                &p("3.4.23/etcd3"),
                &p("3.7.0/etcd3"),
                &b("3.4.23,3.5.30,3.6.0,3.7.0")
            ),
            Ok(vec![up("3.5.30"), up("3.6.0"), w("3.7.0/etcd3")])
        );
        assert_eq!(
            plan(
                &p("3.5.1/etcd3"),
                &p("3.7.0/etcd3"),
                &b("3.5.1,3.5.30,3.6.0,3.7.0")
            ),
            Ok(vec![up("3.5.30"), up("3.6.0"), w("3.7.0/etcd3")])
        );
        let e = plan(
            &p("3.4.23/etcd3"),
            &p("3.7.0/etcd3"),
            &b("3.4.23,3.5.1,3.6.0,3.7.0"),
        );
        assert!(e.unwrap_err().to_string().contains("3.5.26"));
        // Moves that do not enter 3.6 are not affected.
        assert_eq!(
            plan(&p("3.5.0/etcd3"), &p("3.5.21/etcd3"), &b("3.5.21,3.6.5")),
            Ok(vec![w("3.5.21/etcd3")])
        );
    }

    #[test]
    fn every_step_result_chains_to_the_target() {
        let bundle = b("3.2.32,3.3.17,3.4.18,3.4.23,3.5.0,3.5.1,3.5.30,3.6.5");
        let all = [
            "3.5.30/etcd3",
            "3.6.5/etcd3",
            "3.6.0/etcd3",
            "3.2.0/etcd3",
            "3.3.17/etcd3",
            "3.4.18/etcd3",
            "3.4.23/etcd3",
            "3.5.0/etcd3",
            "3.5.1/etcd3",
            "3.4.23/etcd2",
            "3.3.17/etcd2",
        ];
        for cur in all {
            for tgt in all {
                if let Ok(steps) = plan(&p(cur), &p(tgt), &bundle) {
                    let end = steps.last().map(Step::result).unwrap_or_else(|| p(cur));
                    assert_eq!(end, p(tgt), "{cur} -> {tgt}: {steps:?}");
                }
            }
        }
    }
}
