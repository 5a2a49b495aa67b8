//! `--version` of every binary: the package version, the git commit it was built from (what
//! `git rev-parse` says of this checkout, or "unknown" without git), and for migrate the
//! bundled etcd versions it would use.
use std::path::Path;
use std::process::Command;

fn expected_revision() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match (std::env::var("ETCDTOOLS_REVISION"), out) {
        (Ok(r), _) if !r.trim().is_empty() => r.trim().to_string(),
        (_, Ok(o)) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().into(),
        _ => "unknown".into(),
    }
}

fn version_of(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{bin} --version: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_binary_prints_its_version_and_commit() {
    let head = format!(
        " {}\ncommit: {}\n",
        env!("CARGO_PKG_VERSION"),
        expected_revision()
    );
    for (name, bin) in [
        (
            "etcd-version-monitor",
            env!("CARGO_BIN_EXE_etcd-version-monitor"),
        ),
        ("migrate", env!("CARGO_BIN_EXE_migrate")),
        ("rollback2", env!("CARGO_BIN_EXE_rollback2")),
        ("etcd-inspect", env!("CARGO_BIN_EXE_etcd-inspect")),
    ] {
        let text = version_of(bin, &[]);
        assert!(text.starts_with(&format!("{name}{head}")), "{text}");
    }
}

#[test]
fn migrate_names_the_bundled_etcd_versions() {
    let bin = env!("CARGO_BIN_EXE_migrate");
    let dir = std::env::temp_dir().join(format!("version-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "etcd-3.5.1",
        "etcd-3.4.23",
        "etcdctl-3.5.1",
        "etcd-notaversion",
    ] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let d = dir.to_str().unwrap();
    let last = |t: String| t.lines().last().unwrap().to_string();
    // Flags before or after --version count alike.
    assert_eq!(
        last(version_of(bin, &["--bin-dir", d])),
        format!("bundled etcd: 3.4.23, 3.5.1 (etcd-<version> in {d})")
    );
    let out = Command::new(bin)
        .args([
            "--version",
            "--bin-dir",
            d,
            "--bundled-versions",
            "3.5.1,3.3.25",
        ])
        .output()
        .unwrap();
    assert_eq!(
        last(String::from_utf8(out.stdout).unwrap()),
        format!("bundled etcd: 3.3.25, 3.5.1 (etcd-<version> in {d})")
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let empty = Path::new("/nonexistent/bundle");
    assert_eq!(
        last(version_of(bin, &["--bin-dir", empty.to_str().unwrap()])),
        "bundled etcd: none found (etcd-<version> in /nonexistent/bundle)"
    );
}
