//! Helpers shared by tests/rollback.rs and tests/rollback_bad.rs: running the `rollback2`
//! binary, its sibling paths, and serving a rolled-back dir with etcd 3.x.
#![allow(dead_code)]

use crate::common::READY_TIMEOUT;
use etcdtools::etcd::client::HttpClient;
use etcdtools::etcd::process::EtcdProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub fn b64(data: &[u8]) -> String {
    etcdtools::base64::encode(data)
}

/// `rollback2 --data-dir DIR ARGS...`, run to completion.
pub fn rollback2_output(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollback2"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// (success, stdout, stderr) of [`rollback2_output`].
pub fn rollback2(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = rollback2_output(dir, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `DIR<suffix>`, e.g. `.rollback.backup`.
pub fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", dir.display()))
}

pub fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sets the value of every `consistent_index` key in a raw bbolt file to `index` and returns
/// how many it found. bbolt has no page checksums, so the 8 bytes after the key (its value)
/// can be patched in place.
pub fn set_consistent_index(db: &mut [u8], index: u64) -> usize {
    let key = b"consistent_index";
    let mut patched = 0;
    let mut i = 0;
    while i + key.len() + 8 <= db.len() {
        if &db[i..i + key.len()] == key {
            db[i + key.len()..i + key.len() + 8].copy_from_slice(&index.to_be_bytes());
            patched += 1;
            i += key.len();
        } else {
            i += 1;
        }
    }
    patched
}

/// Test-only: puts the original v3 db (`original_db`) into the rolled-back `dir` with
/// `consistent_index` = the new snapshot index, because 3.x refuses to start without a v3
/// backend at least that far (etcd-observed.md section 6).
pub fn restore_db_for_3x(dir: &Path, original_db: &Path) {
    let snap = std::fs::read_dir(dir.join("member/snap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".snap"))
        .unwrap();
    let index = u64::from_str_radix(&snap[17..33], 16).unwrap();
    let mut db = std::fs::read(original_db).unwrap();
    assert!(
        set_consistent_index(&mut db, index) > 0,
        "no consistent_index"
    );
    std::fs::write(dir.join("member/snap/db"), db).unwrap();
}

/// Waits until etcd at `url` serves the v2 API. (The harness's readiness check uses the v3
/// API, which etcd 3.5 refuses while the cluster version is the rolled-back 2.x one: "not
/// capable". etcd 2.x would serve exactly this.)
pub fn wait_v2(url: &str, p: &EtcdProcess) {
    let http = HttpClient::plain();
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        match http.get_text(&format!("{url}/v2/keys/"), Duration::from_secs(2), 1 << 28) {
            Ok(t) if t.contains("\"action\":\"get\"") => return,
            r => {
                if std::time::Instant::now() > deadline {
                    panic!(
                        "etcd at {url} never served /v2/keys: {r:?}\n{}",
                        p.recent_output().join("\n")
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
