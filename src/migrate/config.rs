//! migrate's flags, their env fallbacks and defaults, resolved in the original's order
//! (k8s-etcd-image.md §4.1/§4.2): name, data-dir, port, peer-port, initial-cluster,
//! listen-peer-urls, initial-advertise-peer-urls, listen-client-urls, target-version,
//! target-storage, etcd-data-prefix, ttl-keys-directory, etcd-server-extra-args, bundled
//! versions, binaries. Unlike the original, a bad target is an error (not a panic), and the
//! target must be one of the bundled versions.
//!
//! Resolution is pure: the environment comes in as a function, so tests need no process env.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{HasKind, IoError, Kind};
use crate::version::{EtcdVersion, Storage, VersionPair};

/// Flags exactly as given; empty strings and 0 ports count as unset, as in the original.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub name: Option<String>,
    pub port: Option<u64>,
    pub peer_port: Option<u64>,
    pub listen_peer_urls: Option<String>,
    pub initial_advertise_peer_urls: Option<String>,
    pub listen_client_urls: Option<String>,
    pub bin_dir: Option<String>,
    pub data_dir: Option<String>,
    pub bundled_versions: Option<String>,
    pub etcd_data_prefix: Option<String>,
    pub ttl_keys_directory: Option<String>,
    pub initial_cluster: Option<String>,
    pub target_version: Option<String>,
    pub target_storage: Option<String>,
    pub etcd_server_extra_args: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub ready_timeout: Option<Duration>,
    pub dry_run: bool,
    /// `--allow-member-id-change`: a downgrade may give the member new IDs.
    pub allow_member_id_change: bool,
}

/// Everything migrate needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub port: u16,
    pub peer_port: u16,
    pub initial_cluster: String,
    pub listen_peer_urls: String,
    pub initial_advertise_peer_urls: String,
    pub listen_client_urls: String,
    pub target: VersionPair,
    pub etcd_data_prefix: String,
    pub ttl_keys_directory: String,
    pub etcd_server_extra_args: Vec<String>,
    pub bin_dir: PathBuf,
    /// Sorted, deduplicated.
    pub bundled: Vec<EtcdVersion>,
    /// `DO_NOT_MOVE_BINARIES` is not exactly `true`: copy `etcd-<target>` to `etcd`.
    pub move_binaries: bool,
    pub lock_timeout: Duration,
    pub ready_timeout: Duration,
    pub dry_run: bool,
    /// `--allow-member-id-change` or `ALLOW_MEMBER_ID_CHANGE=true`.
    pub allow_member_id_change: bool,
}

/// A configuration error: which flag (or env var) and why (a usage error, exit 2), or a
/// `--bin-dir` the OS would not list (I/O, exit 4).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

impl HasKind for ConfigError {
    fn kind(&self) -> Kind {
        match self {
            ConfigError::Invalid(_) => Kind::Usage,
            ConfigError::Io(e) => e.kind(),
        }
    }
}

pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// The original's start timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Empty counts as unset (the original checks length).
fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// The original's rule: a data dir path containing `event` anywhere gets the events ports.
fn is_events(data_dir: &Path) -> bool {
    data_dir.to_string_lossy().contains("event")
}

/// `--name`, else `ETCD_NAME`, else `etcd-$ETCD_HOSTNAME`, else `etcd-$HOSTNAME` (logged as the
/// original logs each fallback).
fn resolve_name(
    flag: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    if let Some(n) = nonempty(flag) {
        return Ok(n);
    }
    log::info!("--name unset - falling back to ETCD_NAME variable");
    if let Some(n) = env("ETCD_NAME") {
        return Ok(n);
    }
    log::warn!("ETCD_NAME variable unset - falling back to etcd-ETCD_HOSTNAME variable");
    if let Some(h) = env("ETCD_HOSTNAME") {
        return Ok(format!("etcd-{h}"));
    }
    log::warn!("ETCD_HOSTNAME variable unset - falling back to etcd-HOSTNAME variable");
    match env("HOSTNAME") {
        Some(h) => Ok(format!("etcd-{h}")),
        None => Err(ConfigError::Invalid(
            "defaulting --name failed due to all ETCD_NAME, ETCD_HOSTNAME and HOSTNAME unset"
                .into(),
        )),
    }
}

/// A flag that falls back to a required env var.
fn required(
    flag: Option<String>,
    flag_name: &str,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    if let Some(v) = nonempty(flag) {
        return Ok(v);
    }
    log::info!("{flag_name} unset - falling back to {var} variable");
    env(var).ok_or_else(|| ConfigError::Invalid(format!("{var} variable unset - expected failure")))
}

/// The port the health probe and etcdctl use: etcd must listen on plain
/// `http://127.0.0.1:<port>` (the original then timed out after 2 min). Without `--port`, a
/// plain loopback URL in the list gives the port, so LISTEN_CLIENT_URLS alone is enough.
fn probe_port(listen_client_urls: &str, port: u16, explicit: bool) -> Result<u16, ConfigError> {
    let urls: Vec<&str> = listen_client_urls
        .split(',')
        .map(|u| u.trim().trim_end_matches('/'))
        .collect();
    let mut port = port;
    if !explicit && !urls.contains(&format!("http://127.0.0.1:{port}").as_str()) {
        if let Some(p) = urls.iter().find_map(|u| {
            u.strip_prefix("http://127.0.0.1:")
                .and_then(|p| p.parse::<u16>().ok())
        }) {
            log::info!(
                "--port unset and --listen-client-urls has no http://127.0.0.1:{port}: using \
                 port {p} from it"
            );
            port = p;
        }
    }
    let probe_url = format!("http://127.0.0.1:{port}");
    if !urls.contains(&probe_url.as_str()) {
        return Err(ConfigError::Invalid(format!(
            "--listen-client-urls {listen_client_urls:?} does not include {probe_url}: migrate \
             checks the etcd it starts over plain HTTP on 127.0.0.1:<port> (client TLS during \
             migration is not supported); add {probe_url} to the list"
        )));
    }
    Ok(port)
}

/// Client URLs in the extra args would override ours (etcd takes the last flag), and the
/// probe then finds nothing on plain `http://127.0.0.1:<port>`.
fn refuse_client_urls(extra: &[String], probe_url: &str) -> Result<(), ConfigError> {
    match extra.iter().find(|a| {
        let flag = a.trim_start_matches('-');
        flag.starts_with("listen-client-urls") || flag.starts_with("advertise-client-urls")
    }) {
        Some(a) => Err(ConfigError::Invalid(format!(
            "--etcd-server-extra-args / ETCD_CREDS sets {a:?}: migrate sets the client URLs of \
             the etcd it starts itself (plain {probe_url}; client TLS during migration is not \
             supported); put extra plain URLs into --listen-client-urls / LISTEN_CLIENT_URLS"
        ))),
        None => Ok(()),
    }
}

/// `--bundled-versions`, or the `etcd-<version>` binaries found in `bin_dir`.
fn resolve_bundled(flag: Option<String>, bin_dir: &Path) -> Result<Vec<EtcdVersion>, ConfigError> {
    if let Some(list) = nonempty(flag) {
        return parse_bundled(&list);
    }
    let found = scan_bin_dir(bin_dir)?;
    if found.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--bundled-versions unset and no etcd-<version> binaries found in --bin-dir '{}'",
            bin_dir.display()
        )));
    }
    log::info!(
        "--bundled-versions unset - using the versions found in {}: {}",
        bin_dir.display(),
        join(&found)
    );
    Ok(found)
}

/// `--target-version` and `--target-storage` (or their env vars), parsed.
fn resolve_target(
    version: Option<String>,
    storage: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(EtcdVersion, Storage), ConfigError> {
    let v = required(version, "--target-version", "TARGET_VERSION", env)?
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("--target-version: {e}")))?;
    let s = required(storage, "--target-storage", "TARGET_STORAGE", env)?
        .parse()
        .map_err(|e| {
            ConfigError::Invalid(format!("--target-storage: {e} (want etcd2 or etcd3)"))
        })?;
    Ok((v, s))
}

/// Resolves flags against `env` in the original's order. Logs each fallback as it does.
pub fn resolve(flags: Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let env = |k: &str| nonempty(env(k));
    let fail = |m: String| Err(ConfigError::Invalid(m));

    // 1. name
    let name = resolve_name(flags.name, &env)?;
    // 2. data-dir
    let data_dir = PathBuf::from(required(
        flags.data_dir,
        "--data-dir",
        "DATA_DIRECTORY",
        &env,
    )?);
    // 3, 4. ports
    let events = is_events(&data_dir);
    let port_explicit = flags.port.is_some_and(|p| p != 0);
    let port = port_or_default(flags.port, if events { 18631 } else { 18629 }, "--port")?;
    let peer_port = port_or_default(
        flags.peer_port,
        if events { 2381 } else { 2380 },
        "--peer-port",
    )?;
    // 5-8. URLs and the initial cluster
    let with_default = |flag: Option<String>, var: &str, flag_name: &str, default: String| {
        nonempty(flag).or_else(|| env(var)).unwrap_or_else(|| {
            log::warn!("{var} variable for {flag_name} flag unset - defaulting to {default}");
            default
        })
    };
    let initial_cluster = with_default(
        flags.initial_cluster,
        "INITIAL_CLUSTER",
        "--initial-cluster",
        format!("{name}=http://localhost:{peer_port}"),
    );
    let listen_peer_urls = with_default(
        flags.listen_peer_urls,
        "LISTEN_PEER_URLS",
        "--listen-peer-urls",
        format!("http://localhost:{peer_port}"),
    );
    let initial_advertise_peer_urls = with_default(
        flags.initial_advertise_peer_urls,
        "INITIAL_ADVERTISE_PEER_URLS",
        "--initial-advertise-peer-urls",
        format!("http://localhost:{peer_port}"),
    );
    let listen_client_urls = with_default(
        flags.listen_client_urls,
        "LISTEN_CLIENT_URLS",
        "--listen-client-urls",
        format!("http://127.0.0.1:{port}"),
    );
    let port = probe_port(&listen_client_urls, port, port_explicit)?;
    let probe_url = format!("http://127.0.0.1:{port}");
    // 9, 10. target
    let (target_version, target_storage) =
        resolve_target(flags.target_version, flags.target_storage, &env)?;
    // 11, 12. prefix and TTL dir
    let etcd_data_prefix = with_default(
        flags.etcd_data_prefix,
        "ETCD_DATA_PREFIX",
        "--etcd-data-prefix",
        "/registry".into(),
    );
    let ttl_keys_directory = nonempty(flags.ttl_keys_directory).unwrap_or_else(|| {
        let d = format!("{etcd_data_prefix}/events");
        log::info!("--ttl-keys-directory unset - defaulting to {d}");
        d
    });
    // 13. extra args
    let extra = nonempty(flags.etcd_server_extra_args)
        .or_else(|| env("ETCD_CREDS"))
        .unwrap_or_default();
    let etcd_server_extra_args = split_args(&extra)
        .map_err(|e| ConfigError::Invalid(format!("--etcd-server-extra-args / ETCD_CREDS: {e}")))?;
    refuse_client_urls(&etcd_server_extra_args, &probe_url)?;
    // 14. bundled versions (default: what --bin-dir holds)
    let bin_dir = PathBuf::from(nonempty(flags.bin_dir).unwrap_or_else(|| DEFAULT_BIN_DIR.into()));
    let bundled = resolve_bundled(flags.bundled_versions, &bin_dir)?;
    if !bundled.contains(&target_version) {
        return fail(format!(
            "target version {target_version} is not one of the bundled versions ({}); bundle \
             etcd-{target_version} or pick one of those",
            join(&bundled)
        ));
    }
    Ok(Config {
        name,
        data_dir,
        port,
        peer_port,
        initial_cluster,
        listen_peer_urls,
        initial_advertise_peer_urls,
        listen_client_urls,
        target: VersionPair::new(target_version, target_storage),
        etcd_data_prefix,
        ttl_keys_directory,
        etcd_server_extra_args,
        bin_dir,
        bundled,
        move_binaries: env("DO_NOT_MOVE_BINARIES").as_deref() != Some("true"),
        lock_timeout: flags.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
        ready_timeout: flags.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
        dry_run: flags.dry_run,
        allow_member_id_change: flags.allow_member_id_change
            || env(super::preflight::ALLOW_MEMBER_ID_CHANGE_ENV).as_deref() == Some("true"),
    })
}

fn port_or_default(flag: Option<u64>, default: u16, name: &str) -> Result<u16, ConfigError> {
    match flag.filter(|p| *p != 0) {
        None => {
            log::info!("{name} unset - defaulting to {default}");
            Ok(default)
        }
        Some(p) => u16::try_from(p)
            .map_err(|_| ConfigError::Invalid(format!("{name} {p}: not a TCP port (1-65535)"))),
    }
}

pub fn join(versions: &[EtcdVersion]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `3.4.23,3.5.1` or `3.4.23, 3.5.1`: sorted and deduplicated.
pub fn parse_bundled(list: &str) -> Result<Vec<EtcdVersion>, ConfigError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(item.parse::<EtcdVersion>().map_err(|e| {
            ConfigError::Invalid(format!("failed to parse --bundled-versions: {e}"))
        })?);
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "failed to parse --bundled-versions: no version in {list:?}"
        )));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The bundle a run with `flags` would use (for `--version`): `--bin-dir` and the versions of
/// `--bundled-versions`, else those found there (the rule of `resolve`'s step 14).
pub fn bundled_versions(flags: &Flags) -> (PathBuf, Result<Vec<EtcdVersion>, ConfigError>) {
    let bin_dir = PathBuf::from(nonempty(flags.bin_dir.clone()).unwrap_or(DEFAULT_BIN_DIR.into()));
    let versions = match nonempty(flags.bundled_versions.clone()) {
        Some(list) => parse_bundled(&list),
        None => scan_bin_dir(&bin_dir).map_err(ConfigError::from),
    };
    (bin_dir, versions)
}

/// Versions `v` for which `<bin_dir>/etcd-<v>` exists; none when `bin_dir` does not exist.
fn scan_bin_dir(bin_dir: &Path) -> Result<Vec<EtcdVersion>, IoError> {
    let entries = match std::fs::read_dir(bin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::new("cannot list --bin-dir", bin_dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(IoError::on("cannot list --bin-dir", bin_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("etcd-").and_then(|v| v.parse().ok()) {
            found.push(v);
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Splits like a shell would for words and quotes (`'…'`, `"…"`, backslash); no expansion.
/// The original split on whitespace only, so a quoted value with a space broke.
pub fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(format!("trailing \\ in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated \" in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(format!("trailing \\ in {s:?}")),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn base_flags() -> Flags {
        Flags {
            bundled_versions: Some("3.4.23, 3.5.1,3.5.0".into()),
            target_version: Some("3.5.1".into()),
            target_storage: Some("etcd3".into()),
            data_dir: Some("/var/etcd/data".into()),
            ..Flags::default()
        }
    }

    #[test]
    fn name_fallback_order() {
        let r = |env: &[(&str, &str)]| {
            resolve(base_flags(), &env_of(env))
                .map(|c| c.name)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            r(&[
                ("ETCD_NAME", "n"),
                ("ETCD_HOSTNAME", "h"),
                ("HOSTNAME", "x")
            ]),
            Ok("n".into())
        );
        assert_eq!(
            r(&[("ETCD_NAME", ""), ("ETCD_HOSTNAME", "h"), ("HOSTNAME", "x")]),
            Ok("etcd-h".into())
        );
        assert_eq!(r(&[("HOSTNAME", "x")]), Ok("etcd-x".into()));
        let e = r(&[]).unwrap_err();
        assert_eq!(
            e,
            "defaulting --name failed due to all ETCD_NAME, ETCD_HOSTNAME and HOSTNAME unset"
        );
        let mut f = base_flags();
        f.name = Some("flag".into());
        assert_eq!(
            resolve(f, &env_of(&[("ETCD_NAME", "n")])).unwrap().name,
            "flag"
        );
    }

    #[test]
    fn defaults_follow_name_ports_and_event_rule() {
        let c = resolve(base_flags(), &env_of(&[("HOSTNAME", "h")])).unwrap();
        assert_eq!((c.port, c.peer_port), (18629, 2380));
        assert_eq!(c.initial_cluster, "etcd-h=http://localhost:2380");
        assert_eq!(c.listen_peer_urls, "http://localhost:2380");
        assert_eq!(c.initial_advertise_peer_urls, "http://localhost:2380");
        assert_eq!(c.listen_client_urls, "http://127.0.0.1:18629");
        assert_eq!(c.etcd_data_prefix, "/registry");
        assert_eq!(c.ttl_keys_directory, "/registry/events");
        assert!(c.move_binaries);
        assert_eq!(c.bundled.len(), 3);
        assert_eq!(c.bundled[0].to_string(), "3.4.23");
        let mut f = base_flags();
        f.data_dir = Some("/var/etcd/data-events".into());
        let c = resolve(
            f,
            &env_of(&[
                ("HOSTNAME", "h"),
                ("ETCD_DATA_PREFIX", "/p"),
                ("DO_NOT_MOVE_BINARIES", "true"),
            ]),
        )
        .unwrap();
        assert_eq!((c.port, c.peer_port), (18631, 2381));
        assert_eq!(c.initial_cluster, "etcd-h=http://localhost:2381");
        assert_eq!(c.ttl_keys_directory, "/p/events");
        assert!(!c.move_binaries);
    }

    #[test]
    fn env_fallbacks_and_flags_win() {
        let f = Flags {
            bundled_versions: Some("3.5.1".into()),
            ..Flags::default()
        };
        let c = resolve(
            f,
            &env_of(&[
                ("ETCD_NAME", "m"),
                ("DATA_DIRECTORY", "/d"),
                ("TARGET_VERSION", "3.5.1"),
                ("TARGET_STORAGE", "etcd3"),
                ("INITIAL_CLUSTER", "m=http://10.0.0.1:2380"),
                ("LISTEN_PEER_URLS", "http://10.0.0.1:2380"),
                ("INITIAL_ADVERTISE_PEER_URLS", "http://m:2380"),
                (
                    "LISTEN_CLIENT_URLS",
                    "http://127.0.0.1:18629,http://10.0.0.1:18629",
                ),
                ("ETCD_CREDS", "--peer-cert-file='/a b/c' --x=1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.initial_cluster, "m=http://10.0.0.1:2380");
        assert_eq!(c.listen_peer_urls, "http://10.0.0.1:2380");
        assert_eq!(c.initial_advertise_peer_urls, "http://m:2380");
        assert_eq!(
            c.etcd_server_extra_args,
            vec!["--peer-cert-file=/a b/c", "--x=1"]
        );
        assert_eq!(c.target.to_string(), "3.5.1/etcd3");
    }

    #[test]
    fn errors_in_order() {
        let e = |f: Flags, env: &[(&str, &str)]| resolve(f, &env_of(env)).unwrap_err().to_string();
        let mut f = base_flags();
        f.data_dir = None;
        assert_eq!(
            e(f, &[("HOSTNAME", "h")]),
            "DATA_DIRECTORY variable unset - expected failure"
        );
        let mut f = base_flags();
        f.target_version = None;
        assert_eq!(
            e(f, &[("HOSTNAME", "h"), ("TARGET_VERSION", "")]),
            "TARGET_VERSION variable unset - expected failure"
        );
        let mut f = base_flags();
        f.target_storage = None;
        assert_eq!(
            e(f, &[("HOSTNAME", "h")]),
            "TARGET_STORAGE variable unset - expected failure"
        );
        let mut f = base_flags();
        f.target_version = Some("3.5".into());
        assert!(e(f, &[("HOSTNAME", "h")]).starts_with("--target-version: invalid etcd version"));
        let mut f = base_flags();
        f.target_storage = Some("etcd4".into());
        assert!(e(f, &[("HOSTNAME", "h")]).contains("unrecognized storage version: etcd4"));
        let mut f = base_flags();
        f.target_version = Some("3.6.0".into());
        assert!(e(f, &[("HOSTNAME", "h")]).contains("not one of the bundled versions"));
        let mut f = base_flags();
        f.bundled_versions = Some("3.5.1,x".into());
        assert!(e(f, &[("HOSTNAME", "h")]).starts_with("failed to parse --bundled-versions"));
        let mut f = base_flags();
        f.port = Some(70000);
        assert!(e(f, &[("HOSTNAME", "h")]).contains("not a TCP port"));
        let mut f = base_flags();
        f.listen_client_urls = Some("https://127.0.0.1:18629".into());
        assert!(e(f, &[("HOSTNAME", "h")]).contains("client TLS during migration"));
        let mut f = base_flags();
        f.etcd_server_extra_args =
            Some("--peer-cert-file=x --listen-client-urls=https://0.0.0.0:2379".into());
        let msg = e(f, &[("HOSTNAME", "h")]);
        assert!(msg.contains("client TLS during migration"), "{msg}");
        assert!(msg.contains("client URLs of the etcd it starts"), "{msg}");
    }

    #[test]
    fn port_from_listen_client_urls_when_unset() {
        let env = env_of(&[
            ("HOSTNAME", "h"),
            (
                "LISTEN_CLIENT_URLS",
                "http://10.0.0.1:4000,http://127.0.0.1:41234",
            ),
        ]);
        let c = resolve(base_flags(), &env).unwrap();
        assert_eq!(c.port, 41234);
        // An explicit --port must be among the URLs.
        let mut f = base_flags();
        f.port = Some(5000);
        let e = resolve(f, &env).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not include http://127.0.0.1:5000"),
            "{e}"
        );
        let mut f = base_flags();
        f.port = Some(41234);
        assert_eq!(resolve(f, &env).unwrap().port, 41234);
    }

    #[test]
    fn a_bin_dir_the_os_will_not_list_is_io_not_usage() {
        let dir = std::env::temp_dir().join(format!("config-bin-dir-{}", std::process::id()));
        std::fs::write(&dir, b"").unwrap();
        let mut f = base_flags();
        f.bundled_versions = None;
        f.bin_dir = Some(dir.to_string_lossy().into_owned());
        let e = resolve(f, &env_of(&[("HOSTNAME", "h")])).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(e.kind(), Kind::Io, "{e}");
        assert!(e
            .to_string()
            .starts_with(&format!("cannot list --bin-dir {}: ", dir.display())));
        // A bin dir that is not there is a usage error: nothing bundled.
        let mut f = base_flags();
        f.bundled_versions = None;
        f.bin_dir = Some(dir.to_string_lossy().into_owned());
        let e = resolve(f, &env_of(&[("HOSTNAME", "h")])).unwrap_err();
        assert_eq!(e.kind(), Kind::Usage, "{e}");
        assert!(
            e.to_string().contains("no etcd-<version> binaries found"),
            "{e}"
        );
    }

    #[test]
    fn split_args_quotes() {
        assert_eq!(split_args("").unwrap(), Vec::<String>::new());
        assert_eq!(split_args("  a  b\tc ").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(
            split_args(r#"--a="x y" --b='p q' c\ d"#).unwrap(),
            vec!["--a=x y", "--b=p q", "c d"]
        );
        assert!(split_args("'open").is_err());
    }
}
