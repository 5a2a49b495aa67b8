//! scripts/demo.sh end to end (the README's first command): it must finish, show each step's
//! result, and leave no process behind. Uses `$STATIC_BIN_DIR` when set (scripts/test.sh sets
//! it), else the demo builds the static binaries itself.
mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

#[test]
fn demo_runs_end_to_end_and_leaves_nothing_behind() {
    let tmp = TempDir::new("demo");
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh"));
    cmd.env("DEMO_SKIP_SETUP", "1")
        .env("TMPDIR", tmp.path())
        .env("ETCD_BIN_DIR", etcd_bin_dir());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    assert!(out.status.success(), "{all}");
    for expected in [
        "version.txt: 3.5.1/etcd3",
        "etcd_version_info{binary_version=\"3.5.1\"} 1",
        "etcd_grpc_requests_total{method=\"Put\",service=\"etcdserverpb.KV\"} 7",
        "version.txt before: 3.5.1/etcd3",
        "version.txt after:  3.4.23/etcd3",
        "keys served by etcd 3.4.23:",
        "all 6 keys are there, the deleted one is not",
        "Finished successfully",
        "==> Done in",
    ] {
        assert!(
            stdout.contains(expected),
            "the demo did not show {expected:?}:\n{all}"
        );
    }
    let left = processes_mentioning(&tmp.path().display().to_string());
    assert!(left.is_empty(), "the demo left processes behind: {left:?}");
    let dirs: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(dirs.is_empty(), "the demo left its work dir: {dirs:?}");
}
