//! One logger setup for every binary: stderr, UTC timestamps, level from a flag or `RUST_LOG`.

use log::LevelFilter;

/// Parses a `--log-level` value (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse::<LevelFilter>().map_err(|_| {
        format!("invalid --log-level {s:?}: expected error, warn, info, debug, trace or off")
    })
}

/// Installs the logger. `RUST_LOG` overrides `level` when set. Safe to call once per process.
pub fn init(level: LevelFilter) {
    let _ = simple_logger::SimpleLogger::new()
        .with_level(level)
        .env()
        .with_utc_timestamps()
        .init();
}
