//! What a binary says about its own build: the package version and the git commit it was built
//! from (set by `build.rs`; "unknown" when built outside a git checkout, e.g. from a tarball,
//! unless `ETCDTOOLS_REVISION` was set at build time).

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("ETCDTOOLS_REVISION");

/// The first lines of every binary's `--version`: `<name> <version>` and `commit: <revision>`.
pub fn version_text(name: &str) -> String {
    format!("{name} {VERSION}\ncommit: {REVISION}\n")
}

#[path = "build_revision.rs"]
mod revision;
pub use revision::revision_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_is_the_checkouts_commit_or_unknown() {
        let tmp = std::env::temp_dir().join(format!("build-info-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        // A tarball: no .git anywhere above a fresh directory in /tmp.
        assert_eq!(revision_of(&tmp, None).0, "unknown");
        assert_eq!(revision_of(&tmp, Some("v1-abc")).0, "v1-abc");
        std::fs::remove_dir_all(&tmp).unwrap();
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let git = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(here)
            .output();
        let expected = match git {
            Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_string(),
            _ => "unknown".to_string(),
        };
        assert_eq!(revision_of(here, None).0, expected);
        assert!(version_text("x").starts_with(&format!("x {VERSION}\ncommit: ")));
    }
}
