//! Tools that live in a minimal etcd container image and keep an etcd member healthy
//! across version changes. The binaries in `src/bin/` only parse flags and call into here.
//!
//! - [`prom`]: the Prometheus text model (parse, rewrite, write).
//! - [`monitor`]: `etcd-version-monitor`, the exporter.
//! - [`etcd`]: talking to a running etcd over HTTP, and starting/stopping etcd processes.
//! - [`storage`]: etcd's files, one module per format (WAL, snap, bbolt, mvcc, v2 store), and
//!   `storage::member`, the member dir as one thing (path kinds, start point).
//! - [`error`]: error kinds and exit codes shared by the tools; [`fsutil`]: fsync, flock, crash
//!   points; [`civil`]: calendar dates.
//! - [`inspect`]: what `etcd-inspect` prints, on top of `storage`.
//! - [`version`], [`datadir`], [`migrate`]: `version.txt`, the data dir, the migration plan
//!   (pure) and its executor.
//! - [`rollback`]: `rollback2`, v3 data dir -> v2 store, on top of `storage`.

pub mod base64;
pub mod build_info;
pub mod civil;
pub mod datadir;
pub mod duration;
pub mod error;
pub mod etcd;
pub mod fsutil;
pub mod inspect;
pub mod logging;
pub mod migrate;
pub mod monitor;
pub mod prom;
pub mod rollback;
pub mod storage;
pub mod version;
