//! Talking to etcd: the HTTP client (`/metrics`, `/version`, `/health`, the JSON gateway) and
//! process control (start an etcd binary, wait until it serves, stop it).

pub mod client;
pub mod process;
