//! etcd versions, the storage kind (`etcd2`/`etcd3`) and `version.txt`, the file the image's
//! tools keep inside the data dir to record which etcd last owned it (`3.5.1/etcd3`).
//!
//! Reading distinguishes a missing file, an empty one (a disk that filled up while it was
//! written) and one that does not parse; writing compares first and then goes through
//! `version.txt-next`, fsync, rename and a fsync of the directory, so a crash leaves either
//! the old or the new content, never a torn or empty file.

use std::fmt;

use crate::error::{HasKind, IoError, Kind};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The file name inside the data dir.
pub const VERSION_FILE: &str = "version.txt";
/// The temporary name it is written under before the rename.
pub const VERSION_FILE_NEXT: &str = "version.txt-next";
/// Longest `version.txt` we read; anything longer is not a version file.
const MAX_VERSION_FILE: u64 = 4096;

/// A strict SemVer 2.0 etcd version (`3.5.1`, `1.1.1-rc.0`); `3.5`, `v3.5.1`, `03.5.1` are not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtcdVersion(semver::Version);

impl EtcdVersion {
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        EtcdVersion(semver::Version::new(major, minor, patch))
    }

    pub fn major(&self) -> u64 {
        self.0.major
    }

    pub fn minor(&self) -> u64 {
        self.0.minor
    }

    pub fn patch(&self) -> u64 {
        self.0.patch
    }

    /// Same major and minor (patch and pre-release ignored), as the original's `MajorMinorEquals`.
    pub fn major_minor_equals(&self, other: &EtcdVersion) -> bool {
        self.major() == other.major() && self.minor() == other.minor()
    }

    /// `3.5.1-rc.0`: pre-releases are never picked as intermediate steps.
    pub fn is_prerelease(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// `3.5` for `3.5.1`.
    pub fn minor_string(&self) -> String {
        format!("{}.{}", self.major(), self.minor())
    }
}

impl FromStr for EtcdVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        semver::Version::parse(s.trim())
            .map(EtcdVersion)
            .map_err(|e| format!("invalid etcd version {s:?} (want <major>.<minor>.<patch>): {e}"))
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which store holds the keys: etcd2 (v2 store in WAL + snap) or etcd3 (mvcc in bbolt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    Etcd2,
    Etcd3,
}

impl FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "etcd2" => Ok(Storage::Etcd2),
            "etcd3" => Ok(Storage::Etcd3),
            _ => Err(format!("unrecognized storage version: {s}")),
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storage::Etcd2 => "etcd2",
            Storage::Etcd3 => "etcd3",
        })
    }
}

/// What `version.txt` holds: `<version>/<storage>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionPair {
    pub version: EtcdVersion,
    pub storage: Storage,
}

impl VersionPair {
    pub fn new(version: EtcdVersion, storage: Storage) -> Self {
        VersionPair { version, storage }
    }
}

impl FromStr for VersionPair {
    type Err = String;
    /// Surrounding whitespace (a shell's trailing newline) is ignored, as in the original.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let parts: Vec<&str> = t.split('/').collect();
        if parts.len() != 2 {
            return Err(format!(
                "malformed version file, expected <major>.<minor>.<patch>/<storage> but got {t}"
            ));
        }
        Ok(VersionPair {
            version: parts[0].parse()?,
            storage: parts[1].parse()?,
        })
    }
}

impl fmt::Display for VersionPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.version, self.storage)
    }
}

/// What was found in `<data-dir>/version.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionFile {
    Missing,
    /// Present but empty or only whitespace (typically a write that hit a full disk).
    Empty,
    Parsed(VersionPair),
}

#[derive(Debug, thiserror::Error)]
pub enum VersionFileError {
    /// A directory, FIFO, socket or device where the file should be.
    #[error(
        "failed to read version file {}: not a regular file; remove it (migrate then tells \
         the version from the data) or replace it with a file naming the etcd version that \
         last ran on this data, e.g. 3.5.1/etcd3",
        path.display()
    )]
    NotAFile { path: PathBuf },
    /// Content that is not `<version>/<storage>`; `content` is quoted as found (lossy UTF-8).
    #[error(
        "{} holds {content:?}, which is not '<major>.<minor>.<patch>/<etcd2|etcd3>' \
         ({reason}); fix or remove that file by hand (it must name the etcd version \
         that last ran on this data, e.g. 3.5.1/etcd3)",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        content: String,
        reason: String,
    },
    /// Reading or writing it failed (`failed to read version file <path>: ...`).
    #[error(transparent)]
    Io(#[from] IoError),
}

impl HasKind for VersionFileError {
    fn kind(&self) -> Kind {
        match self {
            VersionFileError::NotAFile { .. } | VersionFileError::Malformed { .. } => Kind::Refused,
            VersionFileError::Io(_) => Kind::Io,
        }
    }
}

pub fn version_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(VERSION_FILE)
}

/// Reads `<data_dir>/version.txt`.
pub fn read_version_file(data_dir: &Path) -> Result<VersionFile, VersionFileError> {
    let path = version_file_path(data_dir);
    let read_err = |e: io::Error| IoError::new("failed to read version file", &path, e);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VersionFile::Missing),
        Err(e) => return Err(read_err(e).into()),
    };
    if !meta.is_file() {
        return Err(VersionFileError::NotAFile { path });
    }
    if meta.len() > MAX_VERSION_FILE {
        return Err(VersionFileError::Malformed {
            content: format!("<{} bytes>", meta.len()),
            path,
            reason: format!("longer than {MAX_VERSION_FILE} bytes"),
        });
    }
    let bytes = fs::read(&path).map_err(read_err)?;
    parse_version_file(&path, &bytes)
}

/// Parses the bytes of a version file found at `path` (for messages).
pub fn parse_version_file(path: &Path, bytes: &[u8]) -> Result<VersionFile, VersionFileError> {
    let malformed = |reason: String| VersionFileError::Malformed {
        path: path.to_path_buf(),
        content: String::from_utf8_lossy(bytes).into_owned(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Ok(VersionFile::Empty);
    }
    text.parse::<VersionPair>()
        .map(VersionFile::Parsed)
        .map_err(malformed)
}

/// Writes `pair` to `<data_dir>/version.txt` unless it already says exactly that. Returns
/// whether it wrote. Temp file + fsync + rename + directory fsync: never a torn file.
pub fn write_version_file(data_dir: &Path, pair: &VersionPair) -> Result<bool, VersionFileError> {
    let path = version_file_path(data_dir);
    if let Ok(bytes) = fs::read(&path) {
        if let Ok(VersionFile::Parsed(current)) = parse_version_file(&path, &bytes) {
            if &current == pair {
                return Ok(false);
            }
        }
    }
    let next = data_dir.join(VERSION_FILE_NEXT);
    let write_err = |p: &Path, e: io::Error| IoError::new("failed to write", p, e);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&next)?;
        // No trailing newline, as the Go original (the reader accepts either).
        file.write_all(pair.to_string().as_bytes())?;
        file.sync_all()
    })();
    if let Err(e) = written {
        // A full disk leaves an empty temp file: the data dir stays as it was.
        let _ = fs::remove_file(&next);
        return Err(write_err(&next, e).into());
    }
    fs::rename(&next, &path).map_err(|e| write_err(&path, e))?;
    sync_dir(data_dir).map_err(|e| write_err(data_dir, e))?;
    Ok(true)
}

pub use crate::fsutil::sync_dir;

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(s: &str) -> VersionPair {
        s.parse().unwrap()
    }

    #[test]
    fn serialize_round_trip_as_original() {
        for s in [
            "3.1.2/etcd3",
            "1.1.1-rc.0/etcd3",
            "10.100.1000/etcd3",
            "2.2.1/etcd2",
        ] {
            assert_eq!(pair(s).to_string(), s);
        }
        for bad in ["1.1/etcd3", "1.1.1.1/etcd3", "1.1.1/etcd4"] {
            assert!(bad.parse::<VersionPair>().is_err(), "{bad}");
        }
    }

    #[test]
    fn more_malformed_pairs() {
        for bad in [
            "v3.5.1/etcd3",
            "03.5.1/etcd3",
            "3.5/etcd3",
            "3.5.1",
            "3.5.1/etcd3/x",
            "garbage",
            "3.5.1/ETCD3",
            "/etcd3",
            "3.5.1/",
        ] {
            assert!(bad.parse::<VersionPair>().is_err(), "{bad}");
        }
        assert_eq!(pair("  3.5.1/etcd3\n"), pair("3.5.1/etcd3"));
    }

    #[test]
    fn malformed_messages() {
        let e = "3.5.1".parse::<VersionPair>().unwrap_err();
        assert_eq!(
            e,
            "malformed version file, expected <major>.<minor>.<patch>/<storage> but got 3.5.1"
        );
        let e = "3.5.1/etcd4".parse::<VersionPair>().unwrap_err();
        assert_eq!(e, "unrecognized storage version: etcd4");
    }

    #[test]
    fn major_minor_equals() {
        let v = |s: &str| s.parse::<EtcdVersion>().unwrap();
        assert!(v("3.1.2").major_minor_equals(&v("3.1.0")));
        assert!(v("3.1.2").major_minor_equals(&v("3.1.2")));
        assert!(!v("3.0.0").major_minor_equals(&v("3.1.0")));
        assert!(!v("2.0.0").major_minor_equals(&v("3.0.0")));
    }

    fn temp_dir(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("etcdtools-version-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn read_states() {
        let d = temp_dir("read");
        assert_eq!(read_version_file(&d).unwrap(), VersionFile::Missing);
        fs::write(d.join(VERSION_FILE), "").unwrap();
        assert_eq!(read_version_file(&d).unwrap(), VersionFile::Empty);
        fs::write(d.join(VERSION_FILE), " \n").unwrap();
        assert_eq!(read_version_file(&d).unwrap(), VersionFile::Empty);
        fs::write(d.join(VERSION_FILE), "3.1.12/etcd3\n").unwrap();
        assert_eq!(
            read_version_file(&d).unwrap(),
            VersionFile::Parsed(pair("3.1.12/etcd3"))
        );
        fs::write(d.join(VERSION_FILE), "garbage").unwrap();
        let e = read_version_file(&d).unwrap_err().to_string();
        assert!(
            e.contains("\"garbage\"") && e.contains("version.txt"),
            "{e}"
        );
        fs::write(d.join(VERSION_FILE), b"\xff\x00\x013.5.1/etcd3").unwrap();
        let e = read_version_file(&d).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && e.contains("\\0"), "{e}");
        fs::remove_file(d.join(VERSION_FILE)).unwrap();
        fs::create_dir(d.join(VERSION_FILE)).unwrap();
        let e = read_version_file(&d).unwrap_err();
        assert_eq!(e.kind(), Kind::Refused);
        assert!(
            e.to_string().contains("not a regular file; remove it"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn write_compares_then_replaces_atomically() {
        let d = temp_dir("write");
        let p = pair("3.5.1/etcd3");
        assert!(write_version_file(&d, &p).unwrap());
        assert_eq!(
            fs::read_to_string(d.join(VERSION_FILE)).unwrap(),
            "3.5.1/etcd3"
        );
        assert!(!d.join(VERSION_FILE_NEXT).exists());
        // Same content (even with a shell's newline): no write, mtime untouched.
        fs::write(d.join(VERSION_FILE), "3.5.1/etcd3\n").unwrap();
        assert!(!write_version_file(&d, &p).unwrap());
        assert_eq!(
            fs::read_to_string(d.join(VERSION_FILE)).unwrap(),
            "3.5.1/etcd3\n"
        );
        // Different or unparsable content is replaced.
        assert!(write_version_file(&d, &pair("3.4.23/etcd3")).unwrap());
        fs::write(d.join(VERSION_FILE), "").unwrap();
        assert!(write_version_file(&d, &p).unwrap());
        assert_eq!(
            fs::read_to_string(d.join(VERSION_FILE)).unwrap(),
            "3.5.1/etcd3"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
