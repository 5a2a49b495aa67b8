//! The monitor's HTTP server: std::net sockets, one thread that waits (epoll) for new
//! connections and for requests on open ones, and a fixed pool of workers that read, answer
//! and hand connections back. Resources are bounded by construction: threads = workers + 1
//! whatever the number of connections; at most `max_connections` connections (at the cap the
//! longest idle one is closed to make room); request heads of at most [`MAX_REQUEST_HEAD`]
//! bytes, complete within [`HEAD_TIMEOUT`]. Running out of file descriptors pauses accepting
//! (logged) while open connections are still served; only an unexpected `accept()` error ends
//! the server.
//!
//! tiny_http (the team's first choice) could not do this: one thread per connection, no cap on
//! connections or header size, and a panic when `accept()` takes the last descriptor.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http::{answer, parse_head, write_error, Head};
use super::{lock, normalize_listen_address, Monitor, MonitorError};

/// How long writing one answer may block: a client that stops reading frees its worker.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once, unless `--max-connections` says otherwise; lowered to the
/// open-files limit minus [`RESERVED_FDS`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Descriptors left for everything but client connections: etcd connections, TLS files, logs.
pub const RESERVED_FDS: u64 = 64;
/// Largest request line plus headers; longer gets 431 and the connection is closed.
pub const MAX_REQUEST_HEAD: usize = 16 << 10;
/// A request head must be complete this long after its first byte (slow clients are closed).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long accepting pauses after running out of descriptors before it tries again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
/// TCP keep-alive probes (idle 60 s, then every 10 s, 3 misses) close connections whose
/// peer vanished.
const KEEPALIVE_IDLE: libc::c_int = 60;
const KEEPALIVE_INTERVAL: libc::c_int = 10;
const KEEPALIVE_COUNT: libc::c_int = 3;

const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;

/// An open client connection and what has been read from it but not yet answered.
struct Conn {
    id: u64,
    stream: TcpStream,
    input: Vec<u8>,
    /// Bytes of a request body still to be read and dropped.
    skip: u64,
    /// When it went idle, or when the head now in `input` began.
    since: Instant,
    eof: bool,
}

struct Shared {
    monitor: Arc<Monitor>,
    epoll: OwnedFd,
    wake: OwnedFd,
    /// Connections waiting in epoll for their next request.
    idle: Mutex<HashMap<u64, Conn>>,
    /// Connections with a request to serve, in arrival order.
    ready: Mutex<VecDeque<Conn>>,
    ready_cv: Condvar,
    open: AtomicUsize,
    stopping: AtomicBool,
    /// Why accepting stopped: the call (when not `accept` itself) and the OS's error.
    failure: Mutex<Option<(&'static str, io::Error)>>,
}

/// The running server; dropping it (or [`Server::shutdown`]) stops it.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(monitor: Arc<Monitor>) -> Result<Server, MonitorError> {
        let address = normalize_listen_address(&monitor.config.listen_address);
        let listen_error = |during: &'static str| {
            let address = address.clone();
            move |source| MonitorError::Listen {
                address,
                during,
                source,
            }
        };
        let listener = TcpListener::bind(address.as_str()).map_err(listen_error(""))?;
        tune_listener(&listener, monitor.config.write_timeout)
            .map_err(listen_error("socket options: "))?;
        let addr = listener.local_addr().map_err(listen_error(""))?;
        let max_connections = connection_cap(monitor.config.max_connections);
        let (epoll, wake) = epoll_with_wake(&listener).map_err(listen_error(""))?;
        let workers = monitor.config.workers.max(1);
        let shared = Arc::new(Shared {
            monitor,
            epoll,
            wake,
            idle: Mutex::default(),
            ready: Mutex::default(),
            ready_cv: Condvar::new(),
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            failure: Mutex::default(),
        });
        let mut server = Server {
            shared: Arc::clone(&shared),
            addr,
            threads: Vec::with_capacity(workers + 1),
        };
        let poller = Poller {
            shared: Arc::clone(&shared),
            listener,
            max_connections,
            next_id: 0,
            paused_until: None,
            starved: false,
        };
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(listen_error("cannot start a thread: "))
        };
        server
            .threads
            .push(spawn("http-poll".into(), Box::new(move || poller.run()))?);
        for i in 0..workers {
            let shared = Arc::clone(&shared);
            let worker = move || Worker::new(shared).run();
            server
                .threads
                .push(spawn(format!("http-worker-{i}"), Box::new(worker))?);
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    /// Blocks while the server runs; an error when it stopped because `accept()` failed in a
    /// way waiting does not cure.
    pub fn join(mut self) -> Result<(), MonitorError> {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        match lock(&self.shared.failure).take() {
            Some((during, source)) => Err(MonitorError::Serve {
                address: self.addr.to_string(),
                during,
                source,
            }),
            None => Ok(()),
        }
    }

    /// Stops: answers being written finish, the listener and idle connections close.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

impl Shared {
    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        let _guard = lock(&self.ready);
        self.ready_cv.notify_all();
    }

    fn close(&self, conn: Conn) {
        drop(conn);
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// Back to epoll until its next request arrives. The re-arm happens under the lock, so
    /// the poller cannot close (evict) the socket and hand its number to a new one meanwhile.
    fn park(&self, mut conn: Conn) {
        let (id, fd) = (conn.id, conn.stream.as_raw_fd());
        if conn.input.is_empty() {
            conn.input = Vec::new();
        }
        let mut idle = lock(&self.idle);
        idle.insert(id, conn);
        if epoll_ctl(&self.epoll, libc::EPOLL_CTL_MOD, fd, CONN_EVENTS, id).is_err() {
            if let Some(conn) = idle.remove(&id) {
                drop(idle);
                self.close(conn);
            }
        }
    }

    fn push_ready(&self, conn: Conn) {
        lock(&self.ready).push_back(conn);
        self.ready_cv.notify_one();
    }
}

const CONN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;

/// The thread that accepts connections and hands those with input to the workers.
struct Poller {
    shared: Arc<Shared>,
    listener: TcpListener,
    max_connections: usize,
    next_id: u64,
    /// Accepting is paused (out of descriptors) until then.
    paused_until: Option<Instant>,
    /// accept() failed for want of descriptors and has not worked since (logged once).
    starved: bool,
}

impl Poller {
    fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_sweep = Instant::now();
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let timeout = if self.paused_until.is_some() {
                ACCEPT_PAUSE
            } else {
                Duration::from_secs(1)
            };
            let n = match epoll_wait(&self.shared.epoll, &mut events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail("epoll_wait: ", e),
            };
            for ev in &events[..n] {
                match ev.u64 {
                    LISTENER => {
                        if let Err(e) = self.accept_all() {
                            return self.fail("", e);
                        }
                    }
                    WAKE => {}
                    id => {
                        let conn = lock(&self.shared.idle).remove(&id);
                        if let Some(conn) = conn {
                            self.shared.push_ready(conn);
                        }
                    }
                }
            }
            self.maybe_resume();
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                self.close_slow_heads();
                last_sweep = Instant::now();
            }
        }
    }

    fn fail(&self, during: &'static str, error: io::Error) {
        *lock(&self.shared.failure) = Some((during, error));
        self.shared.stop();
    }

    /// Accepts until none is pending. Err: an error that waiting does not cure.
    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.starved {
                        self.starved = false;
                        log::info!("accepting connections again");
                    }
                    self.admit(stream)
                }
                Err(e) => {
                    return match accept_error_kind(&e) {
                        AcceptError::NoneLeft => Ok(()),
                        AcceptError::Transient => continue,
                        AcceptError::OutOfResources => {
                            self.pause(&e);
                            Ok(())
                        }
                        AcceptError::Fatal => Err(e),
                    }
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream) {
        if self.shared.open.load(Ordering::SeqCst) >= self.max_connections
            && !self.evict_longest_idle()
        {
            log::debug!(
                "{} connections busy: closing a new one",
                self.max_connections
            );
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let fd = stream.as_raw_fd();
        let conn = Conn {
            id,
            stream,
            input: Vec::new(),
            skip: 0,
            since: Instant::now(),
            eof: false,
        };
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        lock(&self.shared.idle).insert(id, conn);
        if let Err(e) = epoll_ctl(&self.shared.epoll, libc::EPOLL_CTL_ADD, fd, CONN_EVENTS, id) {
            log::warn!("cannot watch a new connection: {e}");
            if let Some(conn) = lock(&self.shared.idle).remove(&id) {
                self.shared.close(conn);
            }
        }
    }

    /// Closes the connection idle the longest (HTTP clients reopen a closed idle connection).
    fn evict_longest_idle(&self) -> bool {
        let mut idle = lock(&self.shared.idle);
        let oldest = idle.values().min_by_key(|c| c.since).map(|c| c.id);
        match oldest.and_then(|id| idle.remove(&id)) {
            Some(conn) => {
                drop(idle);
                self.shared.close(conn);
                true
            }
            None => false,
        }
    }

    fn pause(&mut self, e: &io::Error) {
        if !self.starved {
            self.starved = true;
            log::warn!(
                "cannot accept connections: {e} ({} open); still serving those, accepting \
                 again when descriptors are free",
                self.shared.open.load(Ordering::SeqCst)
            );
        }
        self.paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        let fd = self.listener.as_raw_fd();
        let _ = epoll_ctl(&self.shared.epoll, libc::EPOLL_CTL_MOD, fd, 0, LISTENER);
    }

    fn maybe_resume(&mut self) {
        if self.paused_until.is_some_and(|t| Instant::now() >= t) {
            let fd = self.listener.as_raw_fd();
            let events = libc::EPOLLIN as u32;
            if epoll_ctl(
                &self.shared.epoll,
                libc::EPOLL_CTL_MOD,
                fd,
                events,
                LISTENER,
            )
            .is_ok()
            {
                self.paused_until = None;
                if let Err(e) = self.accept_all() {
                    self.fail("", e);
                }
            }
        }
    }

    /// Closes connections whose request head (or body to skip) is not complete in time.
    fn close_slow_heads(&self) {
        let limit = self.shared.monitor.config.head_timeout;
        let mut idle = lock(&self.shared.idle);
        let slow: Vec<u64> = idle
            .values()
            .filter(|c| (!c.input.is_empty() || c.skip > 0) && c.since.elapsed() > limit)
            .map(|c| c.id)
            .collect();
        let closed: Vec<Conn> = slow.iter().filter_map(|id| idle.remove(id)).collect();
        drop(idle);
        for conn in closed {
            log::debug!("closing a connection whose request took over {limit:?}");
            self.shared.close(conn);
        }
    }
}

enum AcceptError {
    NoneLeft,
    Transient,
    OutOfResources,
    Fatal,
}

/// What an `accept()` error means (accept(2): pending network errors of the new connection
/// are reported by accept and are to be retried).
fn accept_error_kind(e: &io::Error) -> AcceptError {
    if e.kind() == io::ErrorKind::WouldBlock {
        return AcceptError::NoneLeft;
    }
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            AcceptError::OutOfResources
        }
        Some(
            libc::EINTR
            | libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT,
        ) => AcceptError::Transient,
        _ => AcceptError::Fatal,
    }
}

/// A thread that serves connections with input, one request at a time.
struct Worker {
    shared: Arc<Shared>,
    scratch: Vec<u8>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            shared,
            scratch: vec![0; 16 << 10],
        }
    }

    fn run(mut self) {
        while let Some(conn) = self.next() {
            self.serve(conn);
        }
    }

    fn next(&self) -> Option<Conn> {
        let mut ready = lock(&self.shared.ready);
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(conn) = ready.pop_front() {
                return Some(conn);
            }
            ready = self
                .shared
                .ready_cv
                .wait(ready)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Answers a head we will not serve with `status` and closes the connection.
    fn refuse(&self, mut conn: Conn, status: u16) {
        let _ = write_error(
            &mut conn.stream,
            status,
            self.shared.monitor.config.write_timeout,
        );
        self.shared.close(conn);
    }

    /// Reads what has arrived and answers one request; the connection then waits in epoll,
    /// goes back in line (more pipelined requests) or is closed.
    fn serve(&mut self, mut conn: Conn) {
        let had_input = !conn.input.is_empty();
        if self.fill(&mut conn).is_err() {
            return self.shared.close(conn);
        }
        // The time limit is checked here too: the poller's sweep sees only parked connections,
        // and one whose data never stops is hardly ever parked.
        let late = conn.since.elapsed() > self.shared.monitor.config.head_timeout;
        if conn.skip > 0 {
            if conn.eof || late {
                return self.shared.close(conn);
            }
            return self.shared.park(conn);
        }
        let (consumed, keep) = match parse_head(&conn.input, MAX_REQUEST_HEAD) {
            Head::Partial if conn.eof || (had_input && late) => return self.shared.close(conn),
            Head::Partial => {
                // A head's time limit runs from its first byte.
                if !had_input {
                    conn.since = Instant::now();
                }
                return self.shared.park(conn);
            }
            Head::Complete(request, len) => {
                let keep = answer(&self.shared.monitor, &request, &mut conn.stream);
                conn.skip = request.content_length;
                (len, keep && !request.chunked)
            }
            Head::TooLarge => return self.refuse(conn, 431),
            Head::Bad => return self.refuse(conn, 400),
        };
        conn.input.drain(..consumed);
        let skipped = conn.skip.min(conn.input.len() as u64);
        conn.input.drain(..skipped as usize);
        conn.skip -= skipped;
        conn.since = Instant::now();
        if !keep || (conn.eof && conn.input.is_empty()) {
            self.shared.close(conn)
        } else if !conn.input.is_empty() || conn.eof {
            // Pipelined requests wait behind other clients' (one answer per turn).
            self.shared.push_ready(conn)
        } else {
            self.shared.park(conn)
        }
    }

    /// Reads what has arrived without blocking, dropping body bytes to skip, up to a little
    /// more than one request head.
    fn fill(&mut self, conn: &mut Conn) -> io::Result<()> {
        while !conn.eof && conn.input.len() <= MAX_REQUEST_HEAD {
            let fd = conn.stream.as_raw_fd();
            // SAFETY: reads into our own buffer of the given length.
            let n = unsafe {
                libc::recv(
                    fd,
                    self.scratch.as_mut_ptr().cast(),
                    self.scratch.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let mut got = &self.scratch[..n as usize];
            if got.is_empty() {
                conn.eof = true;
                break;
            }
            let skipped = conn.skip.min(got.len() as u64);
            conn.skip -= skipped;
            got = &got[skipped as usize..];
            conn.input.extend_from_slice(got);
        }
        Ok(())
    }
}

/// Writes `head` and `body` with as few system calls as the socket takes (usually one), all
/// within `limit`. The socket's send timeout (also `limit`) bounds one call only: a client
/// reading just fast enough to keep each call moving would otherwise hold the worker for as
/// long as it likes, so after a partial write the next call gets only what is left.
pub(super) fn write_all_2(
    stream: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    let mut slices = [IoSlice::new(head), IoSlice::new(body)];
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, 0);
    let mut shortened = false;
    while !rest.is_empty() {
        match stream.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = format!("the client took more than {limit:?} to read the answer");
                return Err(io::Error::new(io::ErrorKind::TimedOut, why));
            }
            stream.set_write_timeout(Some(left))?;
            shortened = true;
        }
    }
    if shortened {
        // The next answer on this connection gets the whole limit again.
        stream.set_write_timeout(Some(limit))?;
    }
    Ok(())
}

/// The connection cap: the flag's, else the default lowered to what the open-files limit
/// leaves after [`RESERVED_FDS`].
fn connection_cap(flag: Option<usize>) -> usize {
    let budget = open_files_limit()
        .map(|n| n.saturating_sub(RESERVED_FDS).max(1) as usize)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    match flag {
        Some(n) => {
            if n > budget {
                log::warn!(
                    "--max-connections {n} is more than the open-files limit leaves ({budget}): \
                     when descriptors run out, accepting pauses until some are free"
                );
            }
            n.max(1)
        }
        None => DEFAULT_MAX_CONNECTIONS.min(budget),
    }
}

fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Raises the soft limit of open files to the hard limit, as Go programs do at start (more
/// connections fit under the default cap). Returns the new soft limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// An epoll instance watching the (non-blocking) listener, and an eventfd that wakes it.
fn epoll_with_wake(listener: &TcpListener) -> io::Result<(OwnedFd, OwnedFd)> {
    listener.set_nonblocking(true)?;
    // SAFETY: plain system calls; each returned descriptor is owned right away.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(io::Error::last_os_error());
    }
    let wake = unsafe { OwnedFd::from_raw_fd(wake) };
    let fd = listener.as_raw_fd();
    epoll_ctl(
        &epoll,
        libc::EPOLL_CTL_ADD,
        fd,
        libc::EPOLLIN as u32,
        LISTENER,
    )?;
    epoll_ctl(
        &epoll,
        libc::EPOLL_CTL_ADD,
        wake.as_raw_fd(),
        libc::EPOLLIN as u32,
        WAKE,
    )?;
    Ok((epoll, wake))
}

fn epoll_ctl(
    epoll: &OwnedFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    token: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a live epoll_event; the descriptors are open.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn epoll_wait(
    epoll: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout: Duration,
) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `events.len()` entries into `events`.
    let n = unsafe {
        libc::epoll_wait(
            epoll.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as libc::c_int,
            timeout.as_millis().min(60_000) as libc::c_int,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Options set on the listening socket, which Linux copies to every accepted one:
/// TCP_NODELAY (an answer's last segment must not wait for the client's delayed ACK), a send
/// timeout (a client that stops reading frees its worker) and TCP keep-alive.
fn tune_listener(listener: &TcpListener, write_timeout: Duration) -> io::Result<()> {
    let fd = listener.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        set_option(fd, level, name, &value)
    };
    set(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_COUNT)?;
    let timeout = libc::timeval {
        tv_sec: write_timeout.as_secs() as _,
        tv_usec: write_timeout.subsec_micros() as _,
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)
}

fn set_option<T>(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; `fd` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_limit_is_raised_to_the_hard_limit() {
        let soft = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((soft, soft), (limit.rlim_cur, limit.rlim_max));
    }

    #[test]
    fn accept_errors_pause_retry_or_end() {
        let kind = |code| accept_error_kind(&io::Error::from_raw_os_error(code));
        assert!(matches!(kind(libc::EAGAIN), AcceptError::NoneLeft));
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(matches!(kind(code), AcceptError::OutOfResources));
        }
        assert!(matches!(kind(libc::ECONNABORTED), AcceptError::Transient));
        assert!(matches!(kind(libc::EBADF), AcceptError::Fatal));
        assert!(matches!(kind(libc::EINVAL), AcceptError::Fatal));
    }

    #[test]
    fn the_default_cap_leaves_descriptors_for_etcd() {
        let limit = open_files_limit().unwrap();
        let cap = connection_cap(None);
        assert!(cap <= DEFAULT_MAX_CONNECTIONS);
        assert!(cap as u64 + RESERVED_FDS <= limit.max(RESERVED_FDS + 1));
        assert_eq!(connection_cap(Some(3)), 3);
    }

    /// SO_SNDTIMEO bounds one send call only: a client that reads just fast enough to keep
    /// each call moving must still lose the answer once the whole write took `limit`.
    #[test]
    fn a_client_reading_just_fast_enough_is_cut_off_at_the_write_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // Small buffers on both sides, so that the answer takes many calls.
        let small: libc::c_int = 8 << 10;
        set_option(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &small,
        )
        .unwrap();
        set_option(
            server.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &small,
        )
        .unwrap();
        let limit = Duration::from_millis(300);
        server.set_write_timeout(Some(limit)).unwrap();
        // 4 KiB every 10 ms: every call moves, the whole answer would take about 10 s.
        let reader = thread::spawn(move || {
            let mut client = client;
            let (mut buf, mut total) = ([0u8; 4096], 0);
            loop {
                match io::Read::read(&mut client, &mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        let body = vec![b'x'; 4 << 20];
        let started = Instant::now();
        let written = write_all_2(&mut server, b"head", &body, limit);
        let took = started.elapsed();
        drop(server);
        let read = reader.join().unwrap();
        eprintln!("{written:?} after {took:?}, {read} bytes read");
        assert!(written.is_err(), "the whole answer was written");
        // Cut off at the limit: what the reader took in about 300 ms, not most of the answer
        // (without a limit on the whole write, it read nearly all in about 30 s).
        assert!(read < body.len() / 4, "{read} bytes read in {took:?}");
    }
}
