//! monitoring/etcd-version-alerts.yml: valid for Prometheus (`promtool check rules`) and
//! firing as its unit tests say (`promtool test rules`); a rule changed under the tests makes
//! them fail. (tests/image_podman.rs checks the metric names against the real monitor.)
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TempDir;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    let dir = monitoring();
    let out = promtool(&["check", "rules", "etcd-version-alerts.yml"], &dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("SUCCESS: 3 rules found"),
        "{}",
        text(&out)
    );
    let out = promtool(&["test", "rules", "etcd-version-alerts.test.yml"], &dir);
    assert!(out.status.success(), "{}", text(&out));
}

/// The unit tests pin the rules: a shorter `for:` or another threshold fails them.
#[test]
fn the_unit_tests_catch_a_changed_rule() {
    let rules = std::fs::read_to_string(monitoring().join("etcd-version-alerts.yml")).unwrap();
    let tests = monitoring().join("etcd-version-alerts.test.yml");
    for (from, to) in [
        ("for: 30m", "for: 20m"),
        ("for: 5m", "for: 2m"),
        (
            "etcd_version_monitor_up == 0",
            "etcd_version_monitor_up < 2",
        ),
        (") > 1", ") > 2"),
    ] {
        assert!(rules.contains(from), "{from} is not in the rules");
        let temp = TempDir::new("alert-rules");
        std::fs::write(
            temp.path().join("etcd-version-alerts.yml"),
            rules.replacen(from, to, 1),
        )
        .unwrap();
        std::fs::copy(&tests, temp.path().join("etcd-version-alerts.test.yml")).unwrap();
        let out = promtool(
            &["test", "rules", "etcd-version-alerts.test.yml"],
            temp.path(),
        );
        assert!(
            !out.status.success(),
            "{from} -> {to} passed: {}",
            text(&out)
        );
    }
}
