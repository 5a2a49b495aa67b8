//! Starting and stopping etcd, etcdctl and etcdutl: the one place that knows how.
//!
//! Children start with a cleared environment plus a short allow-list, because etcd 3.4+ exits
//! when an `ETCD_*` variable duplicates a flag (and a pod's environment often carries some).
//! Their output goes to our log with a prefix, and the last lines are kept for error messages.
//! A started etcd never outlives us: `PR_SET_PDEATHSIG` kills it when the spawning thread
//! dies (also on SIGKILL of our process), and `Drop` stops it on every other path.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::client::HttpClient;
use crate::error::{HasKind, Kind};

/// How often readiness is polled. etcd is usually ready within a few hundred ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Environment variables a child may inherit; everything else is dropped.
/// `ETCD_UNSUPPORTED_ARCH` is no flag (so no conflict) and etcd on arm refuses to start without it.
const ENV_ALLOW_LIST: &[&str] = &[
    "PATH",
    "TZ",
    "LD_LIBRARY_PATH",
    "TMPDIR",
    "ETCD_UNSUPPORTED_ARCH",
];

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The binary could not be started at all.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    /// The process exited while we waited for it to become ready.
    #[error("{name} exited before it was ready ({status}){}", tail(output))]
    ExitedEarly {
        name: String,
        status: String,
        output: Vec<String>,
    },
    /// The process did not become ready in time.
    #[error(
        "{name} not ready at {url} after {waited:?}: {last_error}{}",
        tail(output)
    )]
    NotReady {
        name: String,
        url: String,
        waited: Duration,
        last_error: String,
        output: Vec<String>,
    },
    /// A tool (etcdctl, etcdutl) ran and failed.
    #[error("`{command}` failed ({status}){}", tail(output))]
    ToolFailed {
        command: String,
        status: String,
        output: Vec<String>,
    },
    /// A tool did not finish in time and was killed.
    #[error(
        "`{command}` did not finish within {timeout:?} and was killed{}",
        tail(output)
    )]
    ToolTimedOut {
        command: String,
        timeout: Duration,
        output: Vec<String>,
    },
    /// Waiting for, signalling or reading a child (or finding a free port) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// `stop` or `kill` of an etcd that was already stopped.
    #[error("stop etcd: already stopped")]
    AlreadyStopped,
}

/// Starting or watching a child is I/O (the OS said no: a binary without the x bit, no
/// processes left); what the child itself did is a refusal with its output.
impl HasKind for ProcessError {
    fn kind(&self) -> Kind {
        match self {
            ProcessError::Spawn { .. } | ProcessError::Io { .. } => Kind::Io,
            ProcessError::ExitedEarly { .. }
            | ProcessError::NotReady { .. }
            | ProcessError::ToolFailed { .. }
            | ProcessError::ToolTimedOut { .. }
            | ProcessError::AlreadyStopped => Kind::Refused,
        }
    }
}

/// A child's last lines, one an indented line, after the message.
fn tail(output: &[String]) -> String {
    if output.is_empty() {
        return String::new();
    }
    let mut s = String::from("; its output:");
    for line in output {
        s.push_str("\n    ");
        s.push_str(line);
    }
    s
}

/// Everything needed to start one etcd member. URLs are used for both listen and advertise.
#[derive(Debug, Clone)]
pub struct EtcdSpec {
    pub binary: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    /// Client URLs (listen = advertise). The first one is polled for readiness.
    pub client_urls: Vec<String>,
    /// Peer URL (listen = initial-advertise).
    pub peer_url: String,
    /// `--initial-cluster`; `None` means just this member at `peer_url`.
    pub initial_cluster: Option<String>,
    /// `--initial-cluster-state` (`new` or `existing`); `None` leaves etcd's default.
    pub initial_cluster_state: Option<String>,
    /// Further flags, passed as given (each element is one argv entry).
    pub extra_args: Vec<String>,
}

impl EtcdSpec {
    /// A single member on 127.0.0.1 with the given ports.
    pub fn single(
        binary: &Path,
        name: &str,
        data_dir: &Path,
        client_port: u16,
        peer_port: u16,
    ) -> Self {
        EtcdSpec {
            binary: binary.to_path_buf(),
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            client_urls: vec![format!("http://127.0.0.1:{client_port}")],
            peer_url: format!("http://127.0.0.1:{peer_port}"),
            initial_cluster: None,
            initial_cluster_state: None,
            extra_args: Vec::new(),
        }
    }

    /// The argv (without the binary) etcd is started with.
    pub fn args(&self) -> Vec<String> {
        let client_urls = self.client_urls.join(",");
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.peer_url));
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client_urls}"),
            format!("--advertise-client-urls={client_urls}"),
            format!("--listen-peer-urls={}", self.peer_url),
            format!("--initial-advertise-peer-urls={}", self.peer_url),
            format!("--initial-cluster={initial_cluster}"),
        ];
        if let Some(state) = &self.initial_cluster_state {
            args.push(format!("--initial-cluster-state={state}"));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    pub fn client_url(&self) -> &str {
        self.client_urls.first().map(String::as_str).unwrap_or("")
    }
}

/// The lines of a child's output kept for error messages, shared with the threads that read
/// its pipes (see [`Excerpt`]).
#[derive(Clone, Default)]
struct OutputTail(Arc<Mutex<Excerpt>>);

impl OutputTail {
    fn push(&self, line: String) {
        if let Ok(mut kept) = self.0.lock() {
            kept.push(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().map(|k| k.lines()).unwrap_or_default()
    }
}

/// How many first lines are quoted: etcd prints a flag error first and then pages of usage.
const HEAD_LINES: usize = 5;
/// How many last lines are quoted.
const TAIL_LINES: usize = 10;
/// How many cause lines (see [`is_cause_line`]) are kept, wherever they are.
const CAUSE_LINES: usize = 10;

/// Does this line of etcd's (or a Go program's) output carry the cause of a failure? A Go
/// panic or fatal error, capnslog's critical level (`C |`, what `plog.Fatal` prints), zap's
/// `"level":"fatal"`/`"panic"` (JSON) or `FATAL`/`PANIC` (console).
pub fn is_cause_line(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("panic:")
        || l.starts_with("fatal error:")
        || l.starts_with("C | ")
        || l.contains(" C | ")
        || l.contains("\"level\":\"fatal\"")
        || l.contains("\"level\":\"panic\"")
        || l.contains("\"level\":\"dpanic\"")
        || l.contains("\tFATAL\t")
        || l.contains("\tPANIC\t")
}

/// A bounded excerpt of a long output, fed line by line: the first lines, every line that
/// carries the cause (up to a bound), and the last lines, in output order with `...` where
/// lines were left out.
#[derive(Debug, Default)]
pub struct Excerpt {
    seen: usize,
    head: Vec<(usize, String)>,
    causes: Vec<(usize, String)>,
    tail: VecDeque<(usize, String)>,
}

impl Excerpt {
    pub fn push(&mut self, line: String) {
        let n = self.seen;
        self.seen += 1;
        if self.head.len() < HEAD_LINES {
            self.head.push((n, line));
            return;
        }
        if self.causes.len() < CAUSE_LINES && is_cause_line(&line) {
            self.causes.push((n, line.clone()));
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back((n, line));
    }

    pub fn lines(&self) -> Vec<String> {
        let mut kept: Vec<&(usize, String)> = self
            .head
            .iter()
            .chain(&self.causes)
            .chain(&self.tail)
            .collect();
        kept.sort_by_key(|(n, _)| *n);
        kept.dedup_by_key(|(n, _)| *n);
        let mut out = Vec::new();
        let mut next = 0;
        for (n, line) in kept {
            if *n > next {
                out.push("...".to_string());
            }
            out.push(line.clone());
            next = n + 1;
        }
        out
    }
}

/// The excerpt of a whole output (see [`Excerpt`]).
pub fn excerpt(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut e = Excerpt::default();
    for line in lines {
        e.push(line);
    }
    e.lines()
}

/// A command with a cleared environment (plus the allow-list and `extra_env`) that dies with
/// the thread that spawns it.
pub fn clean_command(binary: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_clear();
    for key in ENV_ALLOW_LIST {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    cmd
}

/// Spawns `cmd` with its stdout and stderr logged line by line under `prefix`.
fn spawn_logged(
    mut cmd: Command,
    binary: &Path,
    prefix: &str,
) -> Result<(Child, OutputTail, Vec<thread::JoinHandle<()>>), ProcessError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ProcessError::Spawn {
        binary: binary.to_path_buf(),
        source: e,
    })?;
    let tail = OutputTail::default();
    let mut readers = Vec::new();
    let pipes: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for pipe in pipes {
        let tail = tail.clone();
        let prefix = prefix.to_string();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                log::debug!("[{prefix}] {line}");
                tail.push(line);
            }
        }));
    }
    Ok((child, tail, readers))
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// A running etcd. Dropping it stops it.
pub struct EtcdProcess {
    child: Option<Child>,
    spec: EtcdSpec,
    tail: OutputTail,
    readers: Vec<thread::JoinHandle<()>>,
}

impl EtcdProcess {
    /// Starts etcd; does not wait for it to serve (see [`EtcdProcess::wait_ready`]).
    pub fn start(spec: &EtcdSpec) -> Result<Self, ProcessError> {
        Self::spawn(spec, &[], spec.args())
    }

    /// Starts `spec.binary` with exactly `args` instead of [`EtcdSpec::args`] (for callers that
    /// must reproduce another tool's argv, e.g. migrate's separate listen/advertise peer URLs).
    /// `spec` still names the member and gives the client URL polled by `wait_ready`.
    pub fn start_with_args(spec: &EtcdSpec, args: Vec<String>) -> Result<Self, ProcessError> {
        Self::spawn(spec, &[], args)
    }

    /// Starts etcd through a wrapper command, e.g. `["/usr/sbin/chroot", ROOT]`: runs
    /// `wrapper[0] wrapper[1..] binary args`, with `spec.binary` and `spec.data_dir` as seen by
    /// etcd. The wrapper must exec etcd (chroot(8) does), so that stop signals reach etcd.
    /// An empty wrapper is [`EtcdProcess::start`].
    pub fn start_wrapped(spec: &EtcdSpec, wrapper: &[String]) -> Result<Self, ProcessError> {
        Self::spawn(spec, wrapper, spec.args())
    }

    fn spawn(
        spec: &EtcdSpec,
        wrapper: &[String],
        etcd_args: Vec<String>,
    ) -> Result<Self, ProcessError> {
        let (program, mut args) = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut args = rest.to_vec();
                args.push(spec.binary.display().to_string());
                (PathBuf::from(first), args)
            }
            None => (spec.binary.clone(), Vec::new()),
        };
        args.extend(etcd_args);
        let mut cmd = clean_command(&program, &[]);
        cmd.args(&args);
        let prefix = format!("etcd {}", spec.name);
        log::info!("starting {} {}", program.display(), args.join(" "));
        let (child, tail, readers) = spawn_logged(cmd, &program, &prefix)?;
        Ok(EtcdProcess {
            child: Some(child),
            spec: spec.clone(),
            tail,
            readers,
        })
    }

    pub fn spec(&self) -> &EtcdSpec {
        &self.spec
    }

    pub fn client_url(&self) -> &str {
        self.spec.client_url()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An excerpt of what etcd printed: first lines, cause lines, last lines.
    pub fn recent_output(&self) -> Vec<String> {
        self.tail.lines()
    }

    /// Polls `/health` and then a linearizable read over the JSON gateway until both succeed.
    /// Writes nothing into the keyspace. Returns how long it took.
    pub fn wait_ready(
        &mut self,
        client: &HttpClient,
        timeout: Duration,
    ) -> Result<Duration, ProcessError> {
        let started = Instant::now();
        let base = self.client_url().trim_end_matches('/').to_string();
        let mut next_note = PROGRESS_INTERVAL;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.join_readers();
                    return Err(ProcessError::ExitedEarly {
                        name: format!("etcd {}", self.spec.name),
                        status: describe(status),
                        output: self.tail.lines(),
                    });
                }
            }
            let last_error = match probe_ready(client, &base) {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) => e,
            };
            if started.elapsed() >= timeout {
                return Err(ProcessError::NotReady {
                    name: format!("etcd {}", self.spec.name),
                    url: base,
                    waited: started.elapsed(),
                    last_error,
                    output: self.tail.lines(),
                });
            }
            if started.elapsed() >= next_note {
                log::info!(
                    "{}",
                    progress_note(
                        &self.spec.name,
                        &base,
                        started.elapsed(),
                        timeout,
                        &last_error
                    )
                );
                next_note += PROGRESS_INTERVAL;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// SIGTERM, then SIGKILL if etcd has not exited within `grace`. Returns etcd's exit status.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus, ProcessError> {
        self.stop_inner(grace)
    }

    /// SIGKILL at once, without a graceful shutdown (for crash tests).
    pub fn kill(mut self) -> Result<ExitStatus, ProcessError> {
        self.stop_inner(Duration::ZERO)
    }

    fn stop_inner(&mut self, grace: Duration) -> Result<ExitStatus, ProcessError> {
        let Some(mut child) = self.child.take() else {
            return Err(ProcessError::AlreadyStopped);
        };
        let io = |e: std::io::Error| ProcessError::Io {
            what: format!("stop etcd {}", self.spec.name),
            source: e,
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.join_readers();
            return Ok(status);
        }
        if !grace.is_zero() {
            // SAFETY: plain syscall on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().map_err(io)? {
                    self.join_readers();
                    return Ok(status);
                }
                thread::sleep(Duration::from_millis(10));
            }
            log::warn!(
                "etcd {} did not stop within {grace:?} of SIGTERM; killing it",
                self.spec.name
            );
        }
        child.kill().map_err(io)?;
        let status = child.wait().map_err(io)?;
        self.join_readers();
        Ok(status)
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_inner(Duration::from_secs(10));
        }
    }
}

/// How often [`EtcdProcess::wait_ready`] says it is still waiting.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// The line logged while waiting: what for, how long so far, the timeout, the last answer.
pub fn progress_note(
    name: &str,
    url: &str,
    waited: Duration,
    timeout: Duration,
    last_error: &str,
) -> String {
    format!(
        "still waiting for etcd {name} to serve at {url}: {}s of {}s (--ready-timeout) so far; \
         last probe: {last_error}",
        waited.as_secs(),
        timeout.as_secs()
    )
}

/// One readiness probe: `/health` says true, then a linearizable range over the gateway works.
fn probe_ready(client: &HttpClient, base: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let health = client
        .get_text(&format!("{base}/health"), timeout, 1 << 16)
        .map_err(|e| e.to_string())?;
    let json: serde_json::Value =
        serde_json::from_str(&health).map_err(|e| format!("/health: invalid JSON: {e}"))?;
    if json.get("health").and_then(|h| h.as_str()) != Some("true") {
        return Err(format!("/health answered {}", health.trim()));
    }
    // A linearizable read of one key (the empty range at "\0") proves a leader serves reads.
    // etcd 3.3 serves its gateway under /v3beta only (404 on /v3).
    let range = |prefix: &str| {
        client.post_json(
            &format!("{base}{prefix}/kv/range"),
            &serde_json::json!({"key": "AA=="}),
            timeout,
        )
    };
    match range("/v3") {
        Err(crate::etcd::client::ClientError::Status { status: 404, .. }) => range("/v3beta"),
        other => other,
    }
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Output of a finished tool run.
#[derive(Debug)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs a tool (etcdctl, etcdutl) with a cleared environment plus `env`, within `timeout`,
/// logging its output under its file name. Non-zero exit is an error carrying its output.
pub fn run_tool(
    binary: &Path,
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<ToolOutput, ProcessError> {
    let command = format!("{} {}", binary.display(), args.join(" "));
    log::info!("running {command}");
    let mut cmd = clean_command(binary, env);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ProcessError::Spawn {
        binary: binary.to_path_buf(),
        source: e,
    })?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let io = |e: std::io::Error| ProcessError::Io {
        what: command.clone(),
        source: e,
    };
    let started = Instant::now();
    let mut next_note = PROGRESS_INTERVAL;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break Some(status);
        }
        if started.elapsed() >= next_note {
            log::info!(
                "still running {}: {}s of {}s so far",
                binary.display(),
                started.elapsed().as_secs(),
                timeout.as_secs()
            );
            next_note += PROGRESS_INTERVAL;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for line in stdout.lines().chain(stderr.lines()) {
        log::debug!("[{name}] {line}");
    }
    let output = excerpt(stderr.lines().chain(stdout.lines()).map(String::from));
    match status {
        None => Err(ProcessError::ToolTimedOut {
            command,
            timeout,
            output,
        }),
        Some(s) if !s.success() => Err(ProcessError::ToolFailed {
            command,
            status: describe(s),
            output,
        }),
        Some(_) => Ok(ToolOutput { stdout, stderr }),
    }
}

/// `n` distinct TCP ports on 127.0.0.1 for an etcd to listen on, reserved for the rest of
/// this process (for tests, which start members on them, sometimes several times).
///
/// A port the OS hands out for `bind(0)` comes from the ephemeral range, which is also where
/// every outgoing connection (etcd's own loopback gateway and peer connections, HTTP clients)
/// takes its source port: between our check and etcd's bind, such a connection can take it,
/// and etcd exits with "address already in use". So the ports come from below that range, and
/// a flock on `$TMPDIR/etcdtools-ports/<port>` (held until this process exits) keeps other
/// processes using this function off them; a port something else listens on is skipped.
pub fn free_ports(n: usize) -> Result<Vec<u16>, ProcessError> {
    let io = |e: std::io::Error| ProcessError::Io {
        what: "find a free port on 127.0.0.1".into(),
        source: e,
    };
    let dir = std::env::temp_dir().join("etcdtools-ports");
    std::fs::create_dir_all(&dir).map_err(io)?;
    let (lo, hi) = reservable_range();
    let span = u32::from(hi - lo) + 1;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut held = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::with_capacity(n);
    for i in 0..span {
        if ports.len() == n {
            break;
        }
        let port = lo + ((seed.wrapping_add(i)) % span) as u16;
        if held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        let file = std::fs::File::create(dir.join(port.to_string())).map_err(io)?;
        if !crate::fsutil::try_flock(&file, crate::fsutil::Lock::Exclusive).map_err(io)? {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        held.push((port, file));
        ports.push(port);
    }
    if ports.len() < n {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("fewer than {n} unreserved ports in {lo}-{hi}"),
        )));
    }
    Ok(ports)
}

/// Ports handed out by [`free_ports`], with the lock file that reserves each.
static RESERVED: Mutex<Vec<(u16, std::fs::File)>> = Mutex::new(Vec::new());

/// The ports [`free_ports`] picks from: 10000 up to the start of the kernel's ephemeral range
/// (`ip_local_port_range`), or above its end when that leaves more.
fn reservable_range() -> (u16, u16) {
    let (eph_lo, eph_hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u16>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999));
    let below = (10000, eph_lo.saturating_sub(1).max(10001));
    let above = (eph_hi.saturating_add(1).min(65534), 65535);
    if above.1 - above.0 > below.1 - below.0 {
        above
    } else {
        below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("line {i}")).collect()
    }

    #[test]
    fn errors_say_what_failed_with_the_output_tail() {
        let out = || vec!["first".to_string(), "last".to_string()];
        let cases = [
            (
                ProcessError::Spawn {
                    binary: "/bin/etcd".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                "cannot start /bin/etcd: No such file or directory (os error 2)",
            ),
            (
                ProcessError::ExitedEarly {
                    name: "etcd m".into(),
                    status: "exit code 1".into(),
                    output: out(),
                },
                "etcd m exited before it was ready (exit code 1); its output:\n    first\n    last",
            ),
            (
                ProcessError::NotReady {
                    name: "etcd m".into(),
                    url: "http://127.0.0.1:1/health".into(),
                    waited: Duration::from_millis(1500),
                    last_error: "connection refused".into(),
                    output: Vec::new(),
                },
                "etcd m not ready at http://127.0.0.1:1/health after 1.5s: connection refused",
            ),
            (
                ProcessError::ToolFailed {
                    command: "etcdctl get".into(),
                    status: "exit code 2".into(),
                    output: out(),
                },
                "`etcdctl get` failed (exit code 2); its output:\n    first\n    last",
            ),
            (
                ProcessError::ToolTimedOut {
                    command: "etcdutl migrate".into(),
                    timeout: Duration::from_secs(600),
                    output: Vec::new(),
                },
                "`etcdutl migrate` did not finish within 600s and was killed",
            ),
            (
                ProcessError::Io {
                    what: "stop etcd m".into(),
                    source: std::io::Error::from_raw_os_error(libc::ECHILD),
                },
                "stop etcd m: No child processes (os error 10)",
            ),
            (ProcessError::AlreadyStopped, "stop etcd: already stopped"),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn cause_lines_of_every_logger() {
        for cause in [
            "panic: runtime error: invalid memory address",
            "fatal error: out of memory",
            "2024-01-01 10:00:00.000000 C | etcdmain: listen tcp 127.0.0.1:2380: bind: address already in use",
            r#"{"level":"fatal","ts":"2024","caller":"etcdmain/etcd.go:204","msg":"discovery failed"}"#,
            r#"{"level":"panic","ts":"2024","msg":"failed to open database"}"#,
            "2024-01-01T10:00:00Z\tFATAL\tetcdmain/etcd.go:204\tdiscovery failed",
        ] {
            assert!(is_cause_line(cause), "{cause}");
        }
        for other in [
            r#"{"level":"info","msg":"panic is not in the level"}"#,
            "2024-01-01 10:00:00.000000 I | etcdmain: etcd Version: 3.4.23",
            "goroutine 1 [running]:",
        ] {
            assert!(!is_cause_line(other), "{other}");
        }
    }

    #[test]
    fn a_cause_in_the_middle_is_kept_between_head_and_tail() {
        let mut lines = numbered(40);
        lines[6] = r#"{"level":"panic","msg":"failed to open database"}"#.into();
        let e = excerpt(lines.clone());
        let mut want: Vec<String> = lines[..5].to_vec();
        want.push("...".into());
        want.push(lines[6].clone());
        want.push("...".into());
        want.extend(lines[30..].iter().cloned());
        assert_eq!(e, want);
    }

    #[test]
    fn short_output_is_whole_and_causes_are_bounded() {
        assert_eq!(excerpt(numbered(15)), numbered(15));
        let lines: Vec<String> = (0..100).map(|i| format!("panic: {i}")).collect();
        let e = excerpt(lines);
        assert_eq!(e.len(), HEAD_LINES + CAUSE_LINES + 1 + TAIL_LINES);
        assert_eq!(e.last().unwrap(), "panic: 99");
    }

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let (lo, hi) = reservable_range();
        let a = free_ports(3).unwrap();
        let b = free_ports(3).unwrap();
        let mut all = [a, b].concat();
        assert!(
            all.iter().all(|p| (lo..=hi).contains(p)),
            "{all:?} not in {lo}-{hi}"
        );
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6, "a port was handed out twice");
        // Reserved: another process calling free_ports cannot take it (its flock fails).
        let file = std::fs::File::open(
            std::env::temp_dir()
                .join("etcdtools-ports")
                .join(all[0].to_string()),
        )
        .unwrap();
        assert!(!crate::fsutil::try_flock(&file, crate::fsutil::Lock::Exclusive).unwrap());
    }

    #[test]
    fn progress_note_names_what_how_long_and_the_timeout() {
        let n = progress_note(
            "m",
            "http://127.0.0.1:1",
            Duration::from_secs(20),
            Duration::from_secs(120),
            "connection refused",
        );
        assert!(n.contains("etcd m to serve at http://127.0.0.1:1"), "{n}");
        assert!(n.contains("20s of 120s"), "{n}");
        assert!(n.contains("connection refused"), "{n}");
    }
}
