//! File-system helpers every tool shares: fsync of a directory (and of a path's parent), the
//! non-blocking flock, and the test hook that SIGKILLs the process at a named crash point.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// fsync of a directory, so a rename or create inside it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsync of the directory holding `p` (`.` for a bare name).
pub fn sync_parent(p: &Path) -> io::Result<()> {
    match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => sync_dir(x),
        _ => sync_dir(Path::new(".")),
    }
}

/// A flock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Shared,
    Exclusive,
}

/// Takes a non-blocking flock on `file`: `Ok(false)` when another holder has a conflicting one.
/// The lock goes with the descriptor.
pub fn try_flock(file: &File, lock: Lock) -> io::Result<bool> {
    let op = match lock {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Test hook: when the env var `env` names `point` (among `,`-separated names), SIGKILL
/// ourselves there (like a power cut for us), so tests can check what a crash between two
/// effects leaves. Does nothing otherwise.
pub fn crash_point(env: &str, point: &str) {
    log::debug!("crash point {point}");
    if std::env::var(env).is_ok_and(|v| v.split(',').any(|p| p == point)) {
        log::warn!("{env}={point}: killing myself (test hook)");
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
