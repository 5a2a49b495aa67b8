//! `migrate`: moves an etcd data dir to the target version before etcd starts.
//!
//! - [`config`]: flags + env fallbacks + defaults, in the original's order (pure).
//! - [`plan`]: (current, target, bundled) -> steps (pure).
//! - [`preflight`]: checks of the data dir and flags that refuse before any step.
//! - [`run`]: lock, recovery, pre-flight and the steps themselves (files and processes).
//! - [`verify`]: each step proves it kept the data (keyspace hash before and after).

pub mod config;
pub mod plan;
pub mod preflight;
pub mod run;
pub mod verify;
