//! WAL, snap and v2 store readers/writers: real etcd files (fixtures made by etcd 3.4.23 and
//! data dirs made here by 3.4.23 and 3.5.1), round trips, and corruption of every structure.
mod common;

use common::copy_tree;

use std::path::{Path, PathBuf};

use etcdtools::storage::proto::*;
use etcdtools::storage::{snap, wal};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/3.4.23")
        .join(name)
}

#[test]
fn reads_the_real_3_4_wal_fixture() {
    let dir = fixture("v2-datadir/member/wal");
    let snaps = wal::valid_snapshots(&dir).unwrap();
    let idx: Vec<u64> = snaps.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![0, 11, 22, 33]);
    let c = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap();
    let m = c.metadata.unwrap();
    assert_eq!(format!("{:x}", m.node_id), "1177386ae0746d8e");
    assert_eq!(format!("{:x}", m.cluster_id), "31a90000e1835586");
    assert_eq!(c.entries.first().unwrap().index, 1);
    assert_eq!(c.entries.first().unwrap().entry_type, EntryType::ConfChange);
    assert!(c.hard_state.unwrap().commit <= c.last_index);
    assert!(!c.tail.is_torn());
    println!("last {} {:?}", c.last_index, c.hard_state);
    assert!(
        wal::check(&dir).unwrap().is_empty(),
        "{:?}",
        wal::check(&dir).unwrap()
    );
    // From the newest snapshot.
    let from = wal::read_all(&dir, &WalSnapshot::new(33, 2)).unwrap();
    assert_eq!(from.entries.first().unwrap().index, 34);
    assert_eq!(from.last_index, c.last_index);
}

#[test]
fn reads_the_real_3_4_snap_fixtures() {
    let dir = fixture("v2-datadir/member/snap");
    let choice = snap::load_newest(&dir).unwrap();
    let s = choice.loaded.unwrap();
    assert!(choice.skipped.is_empty());
    assert_eq!(s.snapshot.metadata.index, 0x21);
    assert_eq!(s.snapshot.metadata.term, 2);
    assert_eq!(
        s.snapshot.metadata.conf_state.voters,
        vec![0x1177386ae0746d8e]
    );
    assert!(s.snapshot.data.starts_with(b"{\"Root\""));
    assert!(snap::check(&dir).unwrap().is_empty());
    let wal_snaps = wal::valid_snapshots(&fixture("v2-datadir/member/wal")).unwrap();
    let avail = snap::load_newest_available(&dir, &wal_snaps).unwrap();
    assert_eq!(avail.loaded.unwrap().snapshot.metadata.index, 0x21);
}

#[test]
fn loads_the_real_v2_stores_and_round_trips_them() {
    use etcdtools::storage::v2store::Store;
    for f in [
        "v2-datadir/member/snap/0000000000000002-000000000000000b.snap",
        "v2-datadir/member/snap/0000000000000002-0000000000000016.snap",
        "v2-datadir/member/snap/0000000000000002-0000000000000021.snap",
        "v2-rollback-synthetic/member/snap/0000000000000005-0000000000000064.snap",
    ] {
        let s = snap::read_snap_file(&fixture(f)).unwrap();
        let store = Store::load(&s.data).unwrap();
        assert!(store.problems().is_empty(), "{f}: {:?}", store.problems());
        assert_eq!(store.member_ids(), vec![0x1177386ae0746d8e], "{f}");
        assert_eq!(store.cluster_version(), Some("3.4.0"));
        let again = Store::load(&go_json(&store)).unwrap();
        assert_eq!(again, store, "{f}");
        // Byte-identical to what Go wrote, except Go's HTML escaping (none in these files).
        if !f.contains("synthetic") {
            let ours: serde_json::Value = serde_json::from_slice(&go_json(&store)).unwrap();
            let go: serde_json::Value = serde_json::from_slice(&s.data).unwrap();
            assert_eq!(ours, go, "{f}");
        }
    }
    let newest = snap::read_snap_file(&fixture(
        "v2-datadir/member/snap/0000000000000002-0000000000000021.snap",
    ))
    .unwrap();
    let store = Store::load(&newest.data).unwrap();
    assert_eq!(store.get("/1/v2/key1").unwrap().value, "value1");
    assert!(store.get("/1/v2/emptydir").unwrap().is_dir());
    assert_eq!(store.current_index, 30);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Frame boundaries (offsets of each length field) of a padded or unpadded WAL file.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let raw = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
        if raw == 0 {
            break;
        }
        let len = (raw & 0x00ff_ffff_ffff_ffff) as usize;
        let pad = if (raw as i64) < 0 {
            ((raw >> 56) & 7) as usize
        } else {
            0
        };
        out.push(pos);
        pos += 8 + len + pad;
    }
    out
}

const FIXTURE_WAL: &str = "v2-datadir/member/wal/0000000000000000-0000000000000000.wal";

// ---------------------------------------------------------------------------------------------
// Corruption

#[test]
fn every_flipped_wal_byte_is_reported_and_never_panics() {
    let tmp = common::TempDir::new("walflip");
    let dir = tmp.path().join("wal");
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read(fixture(FIXTURE_WAL)).unwrap();
    let file = dir.join(wal::segment_file_name(0, 0));
    for i in 0..original.len() {
        let mut bytes = original.clone();
        bytes[i] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let findings = wal::check(&dir).unwrap();
        assert!(!findings.is_empty(), "flip at {i} not reported");
        assert!(
            findings.iter().all(|f| f.offset.is_some() || f.file == dir),
            "{findings:?}"
        );
        // One decoder: the check is the reader run to the end, so the damage that stops the
        // reader is among the check's findings, word for word.
        if let Err(e @ wal::WalError::Corrupt(_)) = wal::read_whole_with(&dir, drop) {
            let f = e.finding().unwrap();
            assert!(
                findings.contains(&f),
                "flip at {i}: {f} not in {findings:?}"
            );
        }
        // The reader gives an error or the documented recovery (torn tail); never a panic.
        match wal::read_all(&dir, &WalSnapshot::new(0, 0)) {
            Ok(c) => {
                let in_padding_or_torn =
                    c.tail.is_torn() || findings.iter().any(|f| f.problem.contains("padding"));
                assert!(
                    in_padding_or_torn,
                    "flip at {i}: read cleanly: {findings:?}"
                );
            }
            Err(e) => assert!(e.to_string().contains("wal"), "{e}"),
        }
    }
}

#[test]
fn truncation_at_every_boundary_and_in_the_middle() {
    let tmp = common::TempDir::new("waltrunc");
    let original = std::fs::read(fixture(FIXTURE_WAL)).unwrap();
    let frames = frame_offsets(&original);
    assert!(frames.len() > 20);
    let dir = tmp.path().join("one");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(wal::segment_file_name(0, 0));
    let full = wal::read_all(&dir_with(&dir, &file, &original), &WalSnapshot::new(0, 0)).unwrap();
    for (n, &at) in frames.iter().enumerate() {
        // At a boundary of the last segment: a valid shorter log (etcd cannot tell either),
        // unless the snapshot record {0,0} itself is gone.
        std::fs::write(&file, &original[..at]).unwrap();
        match wal::read_all(&dir, &WalSnapshot::new(0, 0)) {
            Ok(c) => {
                assert!(!c.tail.is_torn());
                assert_eq!(c.entries[..], full.entries[..c.entries.len()], "frame {n}");
                assert!(n >= 3, "snapshot record was cut at frame {n}");
            }
            Err(e) => {
                assert!(n < 3, "frame {n}: {e}");
                // An emptied segment is damage at offset 0 (every segment starts with a record).
                let emptied =
                    n == 0 && matches!(&e, wal::WalError::Corrupt(f) if f.offset == Some(0));
                assert!(
                    emptied || matches!(e, wal::WalError::SnapshotNotFound { .. }),
                    "frame {n}: {e}"
                );
            }
        }
        // In the middle of the frame (length field and body).
        for cut in [at + 3, at + 9] {
            if cut >= original.len() {
                continue;
            }
            std::fs::write(&file, &original[..cut]).unwrap();
            let findings = wal::check(&dir).unwrap();
            assert!(
                findings
                    .iter()
                    .any(|f| f.offset == Some(at as u64) && f.problem.contains("torn")),
                "cut at {cut}: {findings:?}"
            );
            if n >= 3 {
                let c = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap();
                assert!(
                    matches!(&c.tail, wal::WalTail::Torn { file: f, offset, .. }
                        if *f == file && *offset == at as u64),
                    "cut at {cut}: {:?}",
                    c.tail
                );
            }
        }
    }
}

fn dir_with(dir: &Path, file: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(file, bytes).unwrap();
    dir.to_path_buf()
}

#[test]
fn truncating_a_segment_that_is_not_the_last_is_an_error() {
    // Split the real WAL into two segments: the second starts with a crc record carrying the
    // running CRC, as etcd's cut does.
    let tmp = common::TempDir::new("walsplit");
    let original = std::fs::read(fixture(FIXTURE_WAL)).unwrap();
    let frames = frame_offsets(&original);
    let split = frames[frames.len() / 2];
    let mut reader = wal::WalReader::over(vec![wal::Segment {
        path: fixture(FIXTURE_WAL),
        seq: 0,
        index: 0,
        size: original.len() as u64,
    }]);
    let mut crc_at_split = 0;
    let mut first_index_after = 0;
    while let Some(rec) = reader.next_record().unwrap() {
        if rec.offset as usize == split {
            if rec.rec_type == ENTRY_TYPE {
                first_index_after = Entry::decode(rec.data.as_ref().unwrap()).unwrap().index;
            }
            break;
        }
        crc_at_split = reader.crc();
    }
    let dir = tmp.path().join("wal");
    std::fs::create_dir_all(&dir).unwrap();
    let seg0 = dir.join(wal::segment_file_name(0, 0));
    let seg1 = dir.join(wal::segment_file_name(1, first_index_after));
    let crc_rec = RecordRef {
        rec_type: CRC_TYPE,
        crc: crc_at_split,
        data: None,
    }
    .encode();
    let mut second = (crc_rec.len() as u64).to_le_bytes().to_vec();
    second.extend_from_slice(&crc_rec);
    second.extend_from_slice(&original[split..]);
    std::fs::write(&seg0, &original[..split]).unwrap();
    std::fs::write(&seg1, &second).unwrap();
    let whole = wal::read_all(&fixture("v2-datadir/member/wal"), &WalSnapshot::new(0, 0)).unwrap();
    let two = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap();
    assert_eq!(two.entries, whole.entries);
    assert_eq!(two.hard_state, whole.hard_state);
    assert!(
        wal::check(&dir).unwrap().is_empty(),
        "{:?}",
        wal::check(&dir).unwrap()
    );

    // Cut the first segment at its last boundary and in its last record.
    let seg0_frames = frame_offsets(&original[..split]);
    let last = *seg0_frames.last().unwrap();
    for cut in [last, last + 5] {
        std::fs::write(&seg0, &original[..cut]).unwrap();
        let e = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap_err();
        assert!(matches!(e, wal::WalError::Corrupt(_)), "{e}");
        let findings = wal::check(&dir).unwrap();
        assert!(!findings.is_empty());
        assert!(findings.iter().all(|f| f.offset.is_some()), "{findings:?}");
    }
    // A missing middle segment is a sequence gap.
    std::fs::write(&seg0, &original[..split]).unwrap();
    std::fs::rename(
        &seg1,
        dir.join(wal::segment_file_name(2, first_index_after)),
    )
    .unwrap();
    assert!(matches!(
        wal::read_all(&dir, &WalSnapshot::new(0, 0)),
        Err(wal::WalError::SeqGap { .. })
    ));
    assert!(!wal::check(&dir).unwrap().is_empty());
}

#[test]
fn zero_tails_end_the_log_and_zeroed_records_are_torn() {
    let tmp = common::TempDir::new("walzero");
    let original = std::fs::read(fixture(FIXTURE_WAL)).unwrap();
    let dir = tmp.path().join("wal");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(wal::segment_file_name(0, 0));
    let whole = wal::read_all(&fixture("v2-datadir/member/wal"), &WalSnapshot::new(0, 0)).unwrap();
    // A preallocated zero tail: the same log, a clean end, no findings.
    let mut bytes = original.clone();
    bytes.resize(original.len() + 1_000_000, 0);
    std::fs::write(&file, &bytes).unwrap();
    let c = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap();
    assert_eq!(c.entries, whole.entries);
    assert_eq!(
        c.tail,
        wal::WalTail::Clean {
            file: file.clone(),
            offset: original.len() as u64
        }
    );
    assert!(wal::check(&dir).unwrap().is_empty());
    // A preallocated next segment (`0.tmp`, all zeros) and a `.broken` copy are ignored.
    std::fs::write(dir.join("0.tmp"), vec![0u8; 4096]).unwrap();
    std::fs::write(
        dir.join("0000000000000000-0000000000000000.wal.broken"),
        b"junk",
    )
    .unwrap();
    assert_eq!(wal::list_segments(&dir).unwrap().len(), 1);
    assert!(wal::check(&dir).unwrap().is_empty());
    assert_eq!(
        wal::read_all(&dir, &WalSnapshot::new(0, 0))
            .unwrap()
            .entries,
        whole.entries
    );
    // Junk after the zero marker: etcd ignores it, check reports it.
    bytes[original.len() + 5000] = 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(wal::read_all(&dir, &WalSnapshot::new(0, 0)).is_ok());
    let f = wal::check(&dir).unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].offset, Some(original.len() as u64 + 5000));
    // The last record's body zeroed (a torn write): etcd's read mode stops before it.
    let frames = frame_offsets(&original);
    let last = *frames.last().unwrap();
    let mut bytes = original.clone();
    for b in &mut bytes[last + 8..] {
        *b = 0;
    }
    std::fs::write(&file, &bytes).unwrap();
    let c = wal::read_all(&dir, &WalSnapshot::new(0, 0)).unwrap();
    assert!(c.tail.is_torn(), "{:?}", c.tail);
    let f = wal::check(&dir).unwrap();
    assert!(
        f.iter()
            .any(|f| f.offset == Some(last as u64) && f.problem.contains("torn")),
        "{f:?}"
    );
    // Zeroed from inside the record, but no whole zero sector: a real error, as in etcd.
    let mut bytes = original.clone();
    for b in &mut bytes[last + 12..] {
        *b = 0;
    }
    std::fs::write(&file, &bytes).unwrap();
    match wal::read_all(&dir, &WalSnapshot::new(0, 0)) {
        Err(wal::WalError::Corrupt(f)) => assert_eq!(f.offset, Some(last as u64)),
        other => panic!("{other:?}"),
    }
}

/// The zero tail as etcd leaves it: preallocated (fallocate: unwritten extents, read as
/// zeros) or sparse (a hole). check skips holes unread; a byte written anywhere in the tail
/// (inside what the frame reader buffered, deep inside the hole, the very last byte) is still
/// reported at its exact offset.
#[test]
fn non_zero_bytes_anywhere_in_a_preallocated_or_sparse_tail_are_found() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let tmp = common::TempDir::new("walsparse");
    let original = std::fs::read(fixture(FIXTURE_WAL)).unwrap();
    let dir = tmp.path().join("wal");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(wal::segment_file_name(0, 0));
    let size = 8 * 1000 * 1000u64;
    for prealloc in [true, false] {
        let positions = [
            original.len() as u64 + 8,
            original.len() as u64 + 100,
            3_000_001,
            size - 4097,
            size - 1,
        ];
        for at in [None].into_iter().chain(positions.map(Some)) {
            let _ = std::fs::remove_file(&path);
            let file = std::fs::File::create(&path).unwrap();
            if prealloc {
                // As etcd does: fallocate the whole segment, then write the records.
                let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
                assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
            } else {
                file.set_len(size).unwrap();
            }
            file.write_all_at(&original, 0).unwrap();
            if let Some(at) = at {
                file.write_all_at(&[0x5a], at).unwrap();
            }
            drop(file);
            let f = wal::check(&dir).unwrap();
            match at {
                None => assert!(f.is_empty(), "prealloc {prealloc}: {f:?}"),
                Some(at) => {
                    assert_eq!(f.len(), 1, "prealloc {prealloc}, byte at {at}: {f:?}");
                    assert_eq!(f[0].offset, Some(at), "prealloc {prealloc}: {f:?}");
                    assert!(f[0].problem.contains("after the end-of-records marker"));
                }
            }
        }
    }
}

#[test]
fn every_flipped_snap_byte_is_reported_and_loading_falls_back() {
    let tmp = common::TempDir::new("snapflip");
    let dir = tmp.path().join("snap");
    copy_tree(&fixture("v2-datadir/member/snap"), &dir);
    std::fs::remove_file(dir.join("db")).unwrap();
    let newest = dir.join("0000000000000002-0000000000000021.snap");
    let original = std::fs::read(&newest).unwrap();
    // Every byte of the headers and the metadata at the end, and a sample of the JSON body.
    let n = original.len();
    let positions = (0..n).filter(|&i| i < 32 || i >= n - 64 || i % 37 == 0);
    for i in positions {
        let mut bytes = original.clone();
        bytes[i] ^= 0xff;
        std::fs::write(&newest, &bytes).unwrap();
        let findings = snap::check(&dir).unwrap();
        assert_eq!(findings.len(), 1, "flip at {i}: {findings:?}");
        assert_eq!(findings[0].file, newest);
        let choice = snap::load_newest(&dir).unwrap();
        assert_eq!(
            choice.loaded.unwrap().snapshot.metadata.index,
            0x16,
            "flip at {i} did not fall back to the older snapshot"
        );
        assert_eq!(choice.skipped.len(), 1);
    }
    for cut in [0, 1, 5, original.len() / 2, original.len() - 1] {
        std::fs::write(&newest, &original[..cut]).unwrap();
        assert_eq!(snap::check(&dir).unwrap().len(), 1, "cut at {cut}");
        assert_eq!(
            snap::load_newest(&dir)
                .unwrap()
                .loaded
                .unwrap()
                .snapshot
                .metadata
                .index,
            0x16
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn a_wal_written_by_us_reads_back_padded_and_unpadded() {
    let tmp = common::TempDir::new("walrt");
    let meta = WalMetadata {
        node_id: 0x2e1259d415f2a040,
        cluster_id: 0x048276a8f75b6a87,
    };
    let entries: Vec<Entry> = (64..200u64)
        .map(|i| Entry {
            entry_type: EntryType::Normal,
            term: 2 + i / 100,
            index: i,
            data: vec![(i % 251) as u8; (i as usize * 37) % 3000],
        })
        .collect();
    for style in [wal::FrameStyle::Unpadded, wal::FrameStyle::Padded] {
        let dir = tmp.path().join(format!("{style:?}"));
        let mut w = wal::WalWriter::create(&dir, &meta, style).unwrap();
        w.save_snapshot(&WalSnapshot::new(63, 2)).unwrap();
        w.save_hard_state(&HardState {
            term: 2,
            vote: 0,
            commit: 63,
        })
        .unwrap();
        for e in &entries {
            w.save_entry(e).unwrap();
        }
        let hs = HardState {
            term: 3,
            vote: 7,
            commit: 199,
        };
        w.save_hard_state(&hs).unwrap();
        let path = w.finish().unwrap();
        let c = wal::read_all(&dir, &WalSnapshot::new(63, 2)).unwrap();
        assert_eq!(c.metadata, Some(meta));
        assert_eq!(c.entries, entries);
        assert_eq!(c.hard_state, Some(hs));
        assert_eq!(c.last_index, 199);
        assert!(
            wal::check(&dir).unwrap().is_empty(),
            "{:?}",
            wal::check(&dir).unwrap()
        );
        let bytes = std::fs::read(&path).unwrap();
        let frames = frame_offsets(&bytes);
        let padded = frames.iter().any(|&f| bytes[f + 7] & 0x80 != 0);
        assert_eq!(padded, style == wal::FrameStyle::Padded);
        if style == wal::FrameStyle::Padded {
            assert!(frames.iter().all(|f| f % 8 == 0));
        }
        // Refuses to write over an existing WAL.
        assert!(matches!(
            wal::WalWriter::create(&dir, &meta, style),
            Err(wal::WalError::Exists(_))
        ));
    }
}

#[test]
fn an_unpadded_wal_matches_the_documented_bytes() {
    // etcd-formats.md 1.5: the 2.3.7-style opening with snapshot {63,2} and HardState {2,0,63}.
    let tmp = common::TempDir::new("walbytes");
    let dir = tmp.path().join("wal");
    let mut w = wal::WalWriter::create(
        &dir,
        &WalMetadata {
            node_id: 0x2e1259d415f2a040,
            cluster_id: 0x048276a8f75b6a87,
        },
        wal::FrameStyle::Unpadded,
    )
    .unwrap();
    w.save_snapshot(&WalSnapshot::new(63, 2)).unwrap();
    w.save_hard_state(&HardState {
        term: 2,
        vote: 0,
        commit: 63,
    })
    .unwrap();
    let bytes = std::fs::read(w.finish().unwrap()).unwrap();
    let expected = "04000000 00000000 08041000
        1d000000 00000000 0801108d9cf9161a1408c0c0caafc1ba96892e1087d5edba8fd59dc104
        0e000000 00000000 080510878cc58d0d1a0408001000
        0e000000 00000000 080510c4d3e6de031a04083f1002
        10000000 00000000 080310b389d091031a06080210001 83f";
    let hex: String = expected.split_whitespace().collect();
    let want: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes, want);
}

#[test]
fn a_snap_written_by_us_reads_back() {
    use etcdtools::storage::v2store::Store;
    let tmp = common::TempDir::new("snaprt");
    let dir = tmp.path().join("snap");
    let mut store = Store::new();
    store.set("/1/registry/pods/ns/name", "v", None, 0).unwrap();
    store.set("/0/version", "2.2.0", None, 0).unwrap();
    let snapshot = RaftSnapshot {
        data: go_json(&store),
        metadata: SnapshotMetadata {
            conf_state: ConfState {
                voters: vec![1, 0xffff_ffff_ffff_fff0],
                ..ConfState::default()
            },
            index: 1000,
            term: 7,
        },
    };
    let path = snap::write_snap(&dir, &snapshot).unwrap();
    assert!(path.ends_with("0000000000000007-00000000000003e8.snap"));
    assert_eq!(snap::read_snap_file(&path).unwrap(), snapshot);
    assert!(snap::check(&dir).unwrap().is_empty());
    let loaded = snap::load_newest(&dir).unwrap().loaded.unwrap();
    assert_eq!(Store::load(&loaded.snapshot.data).unwrap(), store);
    assert!(
        snap::write_snap(&dir, &snapshot).is_err(),
        "overwrote a snap file"
    );
}

#[test]
fn a_wal_and_snap_written_by_us_are_accepted_by_etcd_3_4_and_3_5() {
    accepted_by(common::V3_4);
    accepted_by(common::V3_5_1);
}

fn accepted_by(version: &str) {
    // The rollback layout (etcd-observed.md section 6, case A): our .snap at the db's
    // consistent_index (35) and our unpadded WAL [crc, metadata, snapshot{0,0},
    // snapshot{35,2}, HardState{2,0,35}], next to the real 3.4.23 db.
    use etcdtools::storage::v2store::Store;
    let tmp = common::TempDir::new("written-by-us");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("member/snap")).unwrap();
    std::fs::copy(
        fixture("v2-datadir/member/snap/db"),
        data.join("member/snap/db"),
    )
    .unwrap();
    let old_wal =
        wal::read_all(&fixture("v2-datadir/member/wal"), &WalSnapshot::new(0, 0)).unwrap();
    let meta = old_wal.metadata.unwrap();
    let newest = snap::read_snap_file(&fixture(
        "v2-datadir/member/snap/0000000000000002-0000000000000021.snap",
    ))
    .unwrap();
    let mut store = Store::load(&newest.data).unwrap();
    store.set("/1/written/by/us", "yes", None, 0).unwrap();
    store.delete("/1/v2/key2", false, false).unwrap();
    store.reset_event_history();
    let snapshot = RaftSnapshot {
        data: go_json(&store),
        metadata: SnapshotMetadata {
            conf_state: ConfState {
                voters: vec![meta.node_id],
                auto_leave: Some(false),
                ..ConfState::default()
            },
            index: 35,
            term: 2,
        },
    };
    snap::write_snap(&data.join("member/snap"), &snapshot).unwrap();
    let mut w =
        wal::WalWriter::create(&data.join("member/wal"), &meta, wal::FrameStyle::Unpadded).unwrap();
    w.save_snapshot(&WalSnapshot::new(35, 2)).unwrap();
    w.save_hard_state(&HardState {
        term: 2,
        vote: 0,
        commit: 35,
    })
    .unwrap();
    w.finish().unwrap();

    let etcd = common::TestEtcd::start_on(version, &data, "v2snap", &["--enable-v2"]);
    let client = etcdtools::etcd::client::HttpClient::plain();
    let get = |key: &str| {
        client
            .get_text(
                &format!("{}/v2/keys{key}", etcd.client_url),
                std::time::Duration::from_secs(5),
                1 << 20,
            )
            .unwrap_or_else(|e| format!("{e}"))
    };
    assert!(
        get("/written/by/us").contains("\"value\":\"yes\""),
        "{}",
        get("/written/by/us")
    );
    assert!(get("/v2/key1").contains("\"value\":\"value1\""));
    assert!(
        get("/v2/key2").contains("Key not found"),
        "{}",
        get("/v2/key2")
    );
    // etcd accepts a v2 write afterwards (the event history and stats are well formed),
    // and a v3 write (the db's consistent_index equals the snapshot index).
    let body = ureq::put(&format!("{}/v2/keys/after", etcd.client_url))
        .send_form([("value", "ok")])
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(body.contains("\"action\":\"set\""), "{body}");
    assert!(get("/after").contains("\"value\":\"ok\""));
    let put = client
        .post_json(
            &format!("{}/v3/kv/put", etcd.client_url),
            &serde_json::json!({"key": "L2E=", "value": "MQ=="}),
            std::time::Duration::from_secs(10),
        )
        .unwrap();
    assert!(put["header"]["revision"].is_string(), "{put}");
}

#[test]
fn replaying_the_real_wal_rebuilds_etcds_own_v2_snapshots() {
    // etcd 3.4.23 wrote snapshots at raft indexes 11, 22 and 33 of this WAL. Replaying the
    // entries into a fresh store with our v2 store must give the same tree and index.
    use etcdtools::storage::v2store::Store;
    let c = wal::read_all(&fixture("v2-datadir/member/wal"), &WalSnapshot::new(0, 0)).unwrap();
    let mut store = Store::new();
    let mut done = 0;
    for (index, name) in [
        (11, "0000000000000002-000000000000000b.snap"),
        (22, "0000000000000002-0000000000000016.snap"),
        (33, "0000000000000002-0000000000000021.snap"),
    ] {
        let batch: Vec<Entry> = c
            .entries
            .iter()
            .filter(|e| e.index > done && e.index <= index)
            .cloned()
            .collect();
        let stats = store.replay_entries(&batch, 0);
        assert!(stats.undecodable.is_empty(), "{stats:?}");
        done = index;
        let real =
            snap::read_snap_file(&fixture(&format!("v2-datadir/member/snap/{name}"))).unwrap();
        let theirs = Store::load(&real.data).unwrap();
        assert_eq!(store.current_index, theirs.current_index, "at {index}");
        assert_eq!(
            serde_json::to_value(&store.root).unwrap(),
            serde_json::to_value(&theirs.root).unwrap(),
            "tree at raft index {index}"
        );
        assert_eq!(
            store.watcher_hub.event_history.last_index,
            theirs.watcher_hub.event_history.last_index
        );
        assert_eq!(
            store.watcher_hub.event_history.queue.size,
            theirs.watcher_hub.event_history.queue.size
        );
        let ours = &store.watcher_hub.event_history.queue.events;
        let go = &theirs.watcher_hub.event_history.queue.events;
        // The TTL shown in an event depends on the apply time, which the WAL does not hold.
        let no_ttl = |e: &Option<etcdtools::storage::v2store::Event>| {
            let mut e = e.clone();
            if let Some(n) = e.as_mut().and_then(|e| e.node.as_mut()) {
                n.ttl = 0;
            }
            serde_json::to_value(e).unwrap()
        };
        for (i, (a, b)) in ours.iter().zip(go).enumerate() {
            assert_eq!(no_ttl(a), no_ttl(b), "event {i} at raft index {index}");
        }
        // Local (non-quorum) v2 reads are counted too but never reach the WAL.
        let mut stats = theirs.stats.clone();
        stats.gets_success = store.stats.gets_success;
        stats.gets_fail = store.stats.gets_fail;
        assert_eq!(store.stats, stats, "at raft index {index}");
    }
}

#[test]
fn recover_uses_the_snapshot_etcd_uses_and_replays_after_it() {
    use etcdtools::storage::member::{Member, Paths};
    let recover = |wal_dir: &Path, snap_dir: &Path, now| {
        let mut paths = Paths::of(Path::new("unused"), Some(wal_dir));
        paths.snap_dir = snap_dir.to_path_buf();
        Member::with_paths(paths).recover(now)
    };
    let r = recover(
        &fixture("v2-datadir/member/wal"),
        &fixture("v2-datadir/member/snap"),
        0,
    )
    .unwrap();
    assert_eq!(r.start(), WalSnapshot::new(33, 2));
    assert_eq!(r.wal.last_index, 35);
    assert_eq!(r.replay.skipped, 2, "{:?}", r.replay); // two v3 puts
    assert_eq!(r.store.member_ids(), vec![0x1177386ae0746d8e]);
    assert_eq!(r.store.get("/1/v2/key25").unwrap().value, "value25");
    // The crafted rollback layout: WAL {33,2} + HardState{2,0,33}, no entries.
    let r = recover(
        &fixture("v2-rollback-minimal/member/wal"),
        &fixture("v2-rollback-minimal/member/snap"),
        0,
    )
    .unwrap();
    assert_eq!(r.start(), WalSnapshot::new(33, 2));
    assert!(r.wal.entries.is_empty());
    // Without a snap dir: from index 0, everything replayed.
    let r = recover(
        &fixture("v2-datadir/member/wal"),
        &fixture("v2-datadir/member/no-such-dir"),
        0,
    )
    .unwrap();
    assert_eq!(r.start(), WalSnapshot::new(0, 0));
    assert_eq!(r.store.get("/1/v2/key25").unwrap().value, "value25");
    assert_eq!(r.store.current_index, 30);
}

/// The store's JSON as etcd's `store.Save` writes it.
fn go_json(s: &etcdtools::storage::v2store::Store) -> Vec<u8> {
    let mut out = Vec::new();
    s.write_go_json(&mut out).unwrap();
    out
}
