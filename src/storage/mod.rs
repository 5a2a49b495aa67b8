//! etcd's files, one module per format, and [`member`]: the member dir as one thing (what each
//! path is, where etcd starts). Readers never trust a length field: every length is checked
//! against the bytes that are there; damage is a [`Finding`] (file and byte offset), and what
//! the OS refuses is an [`crate::error::IoError`], never a finding.

use std::path::PathBuf;

/// Something wrong found at a place in a file: what integrity checks report, and what format
/// errors carry. Shown as `<file>: offset N: <problem>` (or `<file>: <problem>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), offset_prefix(offset))]
pub struct Finding {
    pub file: PathBuf,
    /// Byte offset in `file`, when the problem has one.
    pub offset: Option<u64>,
    pub problem: String,
}

impl Finding {
    pub fn at(file: impl Into<PathBuf>, offset: u64, problem: impl Into<String>) -> Finding {
        Finding {
            file: file.into(),
            offset: Some(offset),
            problem: problem.into(),
        }
    }

    pub fn in_file(file: impl Into<PathBuf>, problem: impl Into<String>) -> Finding {
        Finding {
            file: file.into(),
            offset: None,
            problem: problem.into(),
        }
    }
}

impl Finding {
    /// `<file> offset N` (or just the file): where, for `damaged at <place>` messages.
    pub fn place(&self) -> String {
        match self.offset {
            Some(offset) => format!("{} offset {offset}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

fn offset_prefix(offset: &Option<u64>) -> String {
    offset.map_or(String::new(), |o| format!("offset {o}: "))
}

impl crate::error::HasKind for Finding {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Corrupt
    }
}

/// `%016x-%016x<suffix>` (WAL segments, snap files), parsed strictly: exactly 16 hex digits
/// each, as etcd's `fmt.Sscanf` patterns accept them.
pub(crate) fn parse_hex_pair_name(name: &str, suffix: &str) -> Option<(u64, u64)> {
    let (a, b) = name.strip_suffix(suffix)?.split_once('-')?;
    let hex = |s: &str| {
        if s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(a)?, hex(b)?))
}

#[cfg(test)]
mod tests {
    use super::Finding;
    use crate::error::{HasKind, Kind};

    #[test]
    fn a_finding_names_file_then_offset() {
        let at = Finding::at("/d/member/wal/0.wal", 4096, "crc mismatch");
        assert_eq!(
            at.to_string(),
            "/d/member/wal/0.wal: offset 4096: crc mismatch"
        );
        assert_eq!(at.place(), "/d/member/wal/0.wal offset 4096");
        let whole = Finding::in_file("/d/member/snap/db", "not a bbolt file");
        assert_eq!(whole.to_string(), "/d/member/snap/db: not a bbolt file");
        assert_eq!(whole.kind(), Kind::Corrupt);
    }
}

/// The never-panic tests' inputs: `rounds` copies of `orig`, each with one byte set at random
/// and every `truncate_every`th also cut short first (xorshift64 from `seed`: reproducible).
#[cfg(test)]
pub(crate) fn damaged_copies(
    orig: &[u8],
    mut seed: u64,
    truncate_every: usize,
    rounds: usize,
) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..rounds).map(move |round| {
        let mut b = orig.to_vec();
        if round % truncate_every == 0 {
            b.truncate((next() as usize) % b.len());
        }
        if !b.is_empty() {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        b
    })
}

pub mod bolt;
pub mod mapped;
pub mod member;
pub mod mvcc;
pub mod proto;
pub mod protowire;
pub mod recover;
pub mod snap;
pub mod v2store;
pub mod wal;
