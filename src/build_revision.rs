// Shared by build.rs (which sets ETCDTOOLS_REVISION) and src/build_info.rs (which tests it).
use std::path::{Path, PathBuf};
use std::process::Command;

/// The revision to report for a build in `dir`: `override_` (the `ETCDTOOLS_REVISION` env var
/// at build time) if set, else git's short commit of HEAD, else "unknown" (no git, or no
/// `.git`, as in a tarball). Also the git files whose change means a new revision.
pub fn revision_of(dir: &Path, override_: Option<&str>) -> (String, Vec<PathBuf>) {
    if let Some(r) = override_.map(str::trim).filter(|r| !r.is_empty()) {
        return (r.to_string(), Vec::new());
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return ("unknown".into(), Vec::new());
    };
    // HEAD moves with checkouts; logs/HEAD (this worktree's reflog) with every commit, also
    // when the branch's ref lives only in packed-refs (a fresh clone).
    let mut watch = Vec::new();
    for what in ["HEAD", "logs/HEAD", "packed-refs"] {
        watch.extend(git(&["rev-parse", "--git-path", what]).map(|p| dir.join(p)));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.extend(git(&["rev-parse", "--git-path", &branch]).map(|p| dir.join(p)));
    }
    (commit, watch)
}
