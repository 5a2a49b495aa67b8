//! Our static binaries for the image's other architectures, run on this amd64 host under
//! Debian's qemu-user-static: `--help` and `--version`, `etcd-inspect check` on a real data dir,
//! `migrate --dry-run`, `etcd-version-monitor --once` against a real etcd.
//!
//! Which arches: `$CROSS_ARCHES` (space-separated; scripts/test.sh sets it, default `arm64`).
//! Their binaries must be built first: `scripts/build-static.sh ARCH` (scripts/test.sh does;
//! `make test-all-arch` builds and tests every arch that can be built here). The arch ->
//! Rust target / qemu mapping is read from scripts/arch.sh, the one place that knows it.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const OURS: [&str; 4] = [
    "migrate",
    "rollback2",
    "etcd-inspect",
    "etcd-version-monitor",
];

struct Arch {
    name: String,
    bin_dir: PathBuf,
    qemu: String,
}

fn arches() -> Vec<Arch> {
    let list = std::env::var("CROSS_ARCHES").unwrap_or_else(|_| "arm64".into());
    list.split_whitespace()
        .map(|name| {
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    ". {REPO}/scripts/arch.sh && arch_info {name} && echo \"$RUST_TARGET $QEMU\""
                ))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let cols: Vec<&str> = text.split_whitespace().collect();
            assert!(
                out.status.success() && cols.len() == 2,
                "scripts/arch.sh does not know a cross arch {name}: {text}"
            );
            Arch {
                name: name.to_string(),
                bin_dir: Path::new(REPO).join(format!("target/{}/release", cols[0])),
                qemu: cols[1].to_string(),
            }
        })
        .collect()
}

/// Fails naming each missing binary and how to build it.
fn require(arch: &Arch, names: &[&str]) {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !arch.bin_dir.join(n).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "no {} binary for {} in {} (run scripts/build-static.sh {}; a binary not yet written \
         or merged cannot be there)",
        missing.join(", "),
        arch.name,
        arch.bin_dir.display(),
        arch.name
    );
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {}", arch.qemu))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{} not found: apt-get install qemu-user-static (scripts/setup.sh does)",
        arch.qemu
    );
}

/// Runs one of our binaries for `arch` under qemu with exactly `env`.
fn run(arch: &Arch, name: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(&arch.qemu)
        .arg(arch.bin_dir.join(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A stopped etcd 3.5.1 data dir with keys, made by real etcd on this host.
fn real_data_dir() -> (TempDir, PathBuf) {
    let temp = TempDir::new("cross-data");
    let data = temp.path().join("data");
    let mut etcd = TestEtcd::start_on(V3_5_1, &data, "etcd-test", &[]);
    for i in 0..20 {
        etcdtools::etcd::process::run_tool(
            &etcdctl_bin(V3_5_1),
            &[
                "--endpoints".into(),
                etcd.endpoint().to_string(),
                "put".into(),
                format!("/registry/k{i}"),
                format!("v{i}"),
            ],
            &[("ETCDCTL_API", "3")],
            std::time::Duration::from_secs(10),
        )
        .unwrap();
    }
    etcd.stop();
    (temp, data)
}

#[test]
fn every_binary_is_static_for_its_arch_and_starts_under_qemu() {
    for arch in arches() {
        require(&arch, &OURS);
        for name in OURS {
            let file = Command::new("file")
                .arg("-b")
                .arg(arch.bin_dir.join(name))
                .output()
                .unwrap();
            let desc = String::from_utf8_lossy(&file.stdout).into_owned();
            assert!(
                desc.contains("statically linked") || desc.contains("static-pie linked"),
                "{} {name}: {desc}",
                arch.name
            );
            assert!(
                !desc.contains("x86-64"),
                "{} {name} is amd64: {desc}",
                arch.name
            );
            let out = run(&arch, name, &["--help"], &[]);
            let t = text(&out);
            assert!(out.status.success(), "{} {name} --help: {t}", arch.name);
            assert!(t.contains(name), "{} {name} --help: {t}", arch.name);
            let out = run(&arch, name, &["--version"], &[]);
            let t = text(&out);
            assert!(out.status.success(), "{} {name} --version: {t}", arch.name);
            assert!(
                String::from_utf8_lossy(&out.stdout)
                    .contains(&format!("{name} {}", env!("CARGO_PKG_VERSION"))),
                "{} {name} --version: {t}",
                arch.name
            );
        }
    }
}

#[test]
fn inspect_check_on_a_real_data_dir_under_qemu() {
    let arches = arches();
    for arch in &arches {
        require(arch, &["etcd-inspect"]);
    }
    let (_temp, data) = real_data_dir();
    let before = file_tree(&data);
    let data_str = data.display().to_string();
    for arch in &arches {
        let out = run(arch, "etcd-inspect", &["check", &data_str], &[]);
        assert!(
            out.status.success(),
            "{} etcd-inspect check: {}",
            arch.name,
            text(&out)
        );
    }
    assert!(
        file_tree(&data) == before,
        "etcd-inspect check changed the data dir"
    );
}

#[test]
fn migrate_dry_run_on_a_real_data_dir_under_qemu() {
    let arches = arches();
    for arch in &arches {
        require(arch, &["migrate"]);
    }
    let (_temp, data) = real_data_dir();
    std::fs::write(data.join("version.txt"), "3.5.1/etcd3").unwrap();
    let before = file_tree(&data);
    let data_str = data.display().to_string();
    for arch in &arches {
        let ports = etcdtools::etcd::process::free_ports(2).unwrap();
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let bin_dir = etcd_bin_dir().display().to_string();
        let out = run(
            arch,
            "migrate",
            &[
                "--dry-run",
                "--bin-dir",
                &bin_dir,
                "--bundled-versions",
                "3.4.23,3.5.0,3.5.1",
                "--port",
                &ports[0].to_string(),
                "--peer-port",
                &ports[1].to_string(),
            ],
            &[
                ("TARGET_STORAGE", "etcd3".into()),
                ("TARGET_VERSION", "3.4.23".into()),
                ("DATA_DIRECTORY", data_str.clone()),
                ("ETCD_NAME", "etcd-test".into()),
                ("INITIAL_CLUSTER", format!("etcd-test={peer}")),
                ("LISTEN_PEER_URLS", peer.clone()),
                ("INITIAL_ADVERTISE_PEER_URLS", peer.clone()),
                ("DO_NOT_MOVE_BINARIES", "true".into()),
                // The data was made on other peer ports: the identity pre-flight would refuse.
                ("ALLOW_MEMBER_ID_CHANGE", "true".into()),
            ],
        );
        let t = text(&out);
        assert!(out.status.success(), "{} migrate --dry-run: {t}", arch.name);
        assert!(
            t.contains("3.4.23") && t.contains("snapshot"),
            "{} migrate --dry-run should plan a downgrade by snapshot to 3.4.23: {t}",
            arch.name
        );
    }
    assert!(
        file_tree(&data) == before,
        "a dry run or check changed the data dir"
    );
}

#[test]
fn monitor_once_under_qemu_scrapes_real_etcd() {
    let arches = arches();
    for arch in &arches {
        require(arch, &["etcd-version-monitor"]);
    }
    let etcd = TestEtcd::start(V3_5_1, &[]);
    for arch in &arches {
        let out = run(
            arch,
            "etcd-version-monitor",
            &[
                "--once",
                &format!("--etcd-version-scrape-uri={}/version", etcd.client_url),
                &format!("--etcd-metrics-scrape-uri={}/metrics", etcd.client_url),
            ],
            &[],
        );
        let t = text(&out);
        assert!(out.status.success(), "{}: {t}", arch.name);
        assert!(
            t.contains("etcd_version_info{binary_version=\"3.5.1\"} 1"),
            "{}: {t}",
            arch.name
        );
    }
}
