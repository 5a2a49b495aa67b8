//! A whole file as one read-only byte slice: memory-mapped, so readers borrow keys and values
//! straight from the page cache without copying them (the bbolt db of rollback2's 130+ MB
//! scans), or read into memory where the file system cannot map.
//!
//! Two costs of a map are handled here, once:
//! - Resident memory: mapped pages count in RSS. Readers call [`Mapped::touched`] with what
//!   they read; every [`RELEASE_EVERY`] bytes the mapped pages are dropped (`MADV_DONTNEED`:
//!   the file's bytes stay in the page cache, and a slice read again faults them back in), so
//!   a scan of any size holds a bounded window.
//! - A read error of the disk (or a file truncated under us) arrives as SIGBUS, not as an
//!   `io::Error`: the handler installed on the first map names the file and exits with the I/O
//!   exit code (4) instead of dying with "Bus error". Maps are only made on files read before
//!   anything is written, so such an exit leaves the data dir as it was.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

/// Mapped bytes read between two releases of the resident pages.
pub const RELEASE_EVERY: u64 = 32 << 20;

/// Something whose resident pages readers account for (see the module doc).
pub trait Touch {
    /// `bytes` more were read from it.
    fn touched(&self, bytes: u64);
}

enum Bytes {
    Map { ptr: *mut libc::c_void, len: usize },
    Owned(Vec<u8>),
}

/// The file's bytes (see the module doc).
pub struct Mapped {
    bytes: Bytes,
    since_release: Cell<u64>,
}

impl Mapped {
    /// Maps `file` (`len` bytes, > 0) read-only; reads it instead where mapping fails.
    pub fn new(file: &File, path: &Path, len: u64) -> io::Result<Mapped> {
        let n = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // SAFETY: a fresh read-only shared mapping of our own descriptor; checked for failure.
        let ptr = if n == 0 {
            libc::MAP_FAILED
        } else {
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    n,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            }
        };
        let bytes = if ptr == libc::MAP_FAILED {
            let mut data = Vec::with_capacity(n);
            file.take(len).read_to_end(&mut data)?;
            Bytes::Owned(data)
        } else {
            on_sigbus_name(path);
            Bytes::Map { ptr, len: n }
        };
        Ok(Mapped {
            bytes,
            since_release: Cell::new(0),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            // SAFETY: the mapping lives as long as `self` and is never written.
            Bytes::Map { ptr, len } => unsafe {
                std::slice::from_raw_parts(*ptr as *const u8, *len)
            },
            Bytes::Owned(v) => v,
        }
    }
}

impl Touch for Mapped {
    /// Counts `n` bytes read; past [`RELEASE_EVERY`], drops the resident mapped pages.
    fn touched(&self, n: u64) {
        let total = self.since_release.get() + n;
        if total < RELEASE_EVERY {
            self.since_release.set(total);
            return;
        }
        self.since_release.set(0);
        if let Bytes::Map { ptr, len } = self.bytes {
            // SAFETY: advice on our own read-only shared mapping; its contents come back from
            // the file on the next access, so every slice handed out stays valid.
            unsafe {
                libc::madvise(ptr, len, libc::MADV_DONTNEED);
            }
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Bytes::Map { ptr, len } = self.bytes {
            // SAFETY: unmapping our own mapping once; no slice outlives `self`.
            unsafe {
                libc::munmap(ptr, len);
            }
        }
    }
}

/// The message the SIGBUS handler writes (set before the first map, leaked on purpose).
static SIGBUS_MESSAGE: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

fn on_sigbus_name(path: &Path) {
    let msg = format!(
        "error: I/O error reading {} (SIGBUS on its memory map: the disk failed or the file \
         was truncated by another process); nothing was changed\n",
        path.display()
    );
    // An earlier file's message is leaked, not freed: the handler may be reading it.
    SIGBUS_MESSAGE.store(Box::into_raw(Box::new(msg.into_bytes())), Ordering::SeqCst);
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: installs an async-signal-safe handler (write + _exit only).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_sigbus(_: libc::c_int) {
    let msg = SIGBUS_MESSAGE.load(Ordering::SeqCst);
    // SAFETY: the message is never freed; write(2) and _exit(2) are async-signal-safe.
    unsafe {
        if !msg.is_null() {
            libc::write(2, (*msg).as_ptr() as *const libc::c_void, (*msg).len());
        }
        libc::_exit(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file truncated under its map: the read faults (SIGBUS) and the process exits 4 with
    /// a message naming the file. Runs itself in a child process (the exit ends it).
    #[test]
    fn a_truncated_map_exits_with_the_io_code_naming_the_file() {
        if let Some(path) = std::env::var_os("ETCDTOOLS_SIGBUS_CHILD") {
            let path = std::path::PathBuf::from(path);
            std::fs::write(&path, vec![7u8; 3 * 4096]).unwrap();
            let f = File::open(&path).unwrap();
            let m = Mapped::new(&f, &path, 3 * 4096).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(0)
                .unwrap();
            let byte = std::hint::black_box(m.bytes()[2 * 4096]);
            panic!("read {byte} from a truncated map without SIGBUS");
        }
        let path = std::env::temp_dir().join(format!("etcdtools-sigbus-{}", std::process::id()));
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "storage::mapped::tests::a_truncated_map_exits_with_the_io_code_naming_the_file",
            ])
            .env("ETCDTOOLS_SIGBUS_CHILD", &path)
            .output()
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains("I/O error reading") && stderr.contains("etcdtools-sigbus-"),
            "{stderr}"
        );
    }

    #[test]
    fn maps_a_file_and_survives_releases() {
        let dir = std::env::temp_dir().join(format!("etcdtools-mapped-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut f = File::create(&dir).unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        drop(f);
        let f = File::open(&dir).unwrap();
        let m = Mapped::new(&f, &dir, data.len() as u64).unwrap();
        let slice = &m.bytes()[4000..4200];
        assert_eq!(slice, &data[4000..4200]);
        m.touched(RELEASE_EVERY); // drops the resident pages
        assert_eq!(
            &m.bytes()[4000..4200],
            &data[4000..4200],
            "refaulted from the file"
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
