//! Sets ETCDTOOLS_REVISION, the git commit the binaries report in `--version` (and the
//! monitor in `etcd_version_monitor_build_info`).

#[path = "src/build_revision.rs"]
mod revision;

fn main() {
    println!("cargo:rerun-if-changed=src/build_revision.rs");
    println!("cargo:rerun-if-env-changed=ETCDTOOLS_REVISION");
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let given = std::env::var("ETCDTOOLS_REVISION").ok();
    let (commit, watch) = revision::revision_of(&dir, given.as_deref());
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rustc-env=ETCDTOOLS_REVISION={commit}");
}
