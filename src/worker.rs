//! A worker process: its event loop, its threads, its connections.
//!
//! Shape (leader/followers, see DESIGN.md): one epoll set per worker holds the listeners, the
//! signal pipe and every connection that waits for bytes. Each of the `--threads` threads runs
//! the same loop — `epoll_wait`, then accept, or read and parse, or call the app and write —
//! with no hand-off between threads on the way. Connections are registered `EPOLLONESHOT`: the
//! thread woken for one owns it until it parks it again, so two threads never serve the same
//! connection, and a slow app call blocks only its own connection while the other threads keep
//! serving the rest. With `--threads 1` nothing is shared with anyone and the locks are
//! uncontended.
//!
//! Parked connections live in a [`Slab`]; a sweep once a second closes the ones past their
//! deadline: idle keep-alive connections after `--keep-alive`, and clients that stalled in the
//! middle of a request after `--timeout`, with a 408 first. Small request bodies are read in the
//! loop before the app is called, so a client trickling a body ties up no thread.
//!
//! Supervision: the worker writes a heartbeat into shared memory (see `arbiter`). Its value is
//! the start time of the oldest request still running, or now when none is, so one request
//! stuck for longer than `--timeout` gets the worker replaced, like a silent sync worker in
//! gunicorn. Stopping is graceful: no more accepting, in-flight requests finish (answered with
//! `Connection: close`), and a retiring worker (HUP, `--max-requests`) answers each idle
//! keep-alive connection's next request before closing it, so clients see no failed request.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::config::Settings;
use crate::http::body::ChunkedDecoder;
use crate::http::parse::parse_head;
use crate::http::response::{error_response, simple_response};
use crate::http::{Error, Framing, Head, HeadScanner, Limits, Status};
use crate::log::{AccessEntry, AccessFormat};
use crate::net::{ListenAddr, Listener};
use crate::signals::{Signal, SignalPipe};
use crate::sys::{self, Epoll, Event, Peer};
use crate::wsgi::call::{self, App, Exchange};
use crate::wsgi::environ::{Client, ThreadCache};
use crate::wsgi::interpreter;

/// Bodies up to this size are read before the app is called (unless the client asked for
/// 100-continue): the app then never waits on the network for them.
const PREBUFFER: u64 = 64 * 1024;
/// Initial read buffer of a connection.
const BUF_START: usize = 8 * 1024;
/// How long a closing connection is drained so our last response is not destroyed by a reset.
const LINGER_MS: u64 = 2_000;
/// Most bytes drained while lingering.
const LINGER_MAX: usize = 1 << 20;

/// epoll tokens below this are not connections.
const TOKEN_SIGNALS: u64 = 0;
const TOKEN_LISTENER0: u64 = 1;
const TOKEN_CONN0: u64 = 1 << 16;

/// Heartbeat slot states, written by the worker and read by the arbiter.
pub mod slot_state {
    /// The app is loaded and the worker serves.
    pub const BOOTED: u64 = 1;
    /// The worker stopped accepting and will exit; the arbiter may start its replacement.
    pub const RETIRING: u64 = 2;
}

/// What the worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Accepting and serving.
    Running = 0,
    /// HUP or max-requests: no accepting; each kept-alive connection gets its next request
    /// answered, then closes.
    Retiring = 1,
    /// TERM/INT: no accepting; idle connections close now, in-flight requests finish.
    Stopping = 2,
}

/// Everything a worker is given by the arbiter.
pub struct Setup<'a> {
    /// The settings.
    pub settings: &'a Settings,
    /// The listening sockets, inherited across fork.
    pub listeners: &'a [Listener],
    /// This worker's heartbeat slot.
    pub heartbeat: &'static AtomicU64,
    /// This worker's state slot.
    pub state: &'static AtomicU64,
    /// The arbiter's pid: if our parent changes, the arbiter is gone and we exit.
    pub ppid: sys::Pid,
    /// The app, when `--preload` imported it before the fork.
    pub preloaded: Option<Py<PyAny>>,
    /// Requests before retiring (max-requests plus this worker's jitter); 0 = never.
    pub max_requests: u64,
}

/// A client connection.
struct Conn {
    fd: OwnedFd,
    listener: usize,
    remote: String,
    port: String,
    /// `remote` and `port` as Python strings, made once per connection.
    py_strings: Option<(Py<pyo3::types::PyString>, Py<pyo3::types::PyString>)>,
    buf: Vec<u8>,
    scanner: HeadScanner,
    head: Head,
    /// Set once the head is complete (the body may still be arriving).
    head_len: Option<usize>,
    /// When this connection's current wait ends (ms, monotonic).
    deadline: u64,
    /// Registered with epoll at least once (then re-arm with MOD).
    registered: bool,
    /// Closing: we only read and discard until the client closes or `deadline`.
    lingering: usize,
    lingering_on: bool,
    served: u64,
}

/// Where a connection goes after a thread is done with it.
enum Next {
    /// Wait for bytes until the deadline.
    Park,
    /// Close it now.
    Close,
}

#[derive(Default)]
struct Slot {
    gen: u32,
    used: bool,
    conn: Option<Box<Conn>>,
}

/// The parked connections, indexed by epoll token.
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<usize>,
    open: usize,
}

impl Slab {
    fn alloc(&mut self) -> (usize, u32) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let slot = &mut self.slots[idx];
        slot.gen = slot.gen.wrapping_add(1);
        slot.used = true;
        self.open += 1;
        (idx, slot.gen)
    }

    fn release(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        if slot.used {
            slot.used = false;
            slot.conn = None;
            self.free.push(idx);
            self.open -= 1;
        }
    }
}

fn token(idx: usize, gen: u32) -> u64 {
    TOKEN_CONN0 + ((u64::from(gen) << 32) | idx as u64)
}

fn untoken(token: u64) -> (usize, u32) {
    let t = token - TOKEN_CONN0;
    ((t & 0xffff_ffff) as usize, (t >> 32) as u32)
}

/// State shared by the worker's threads.
struct Worker<'a> {
    setup: &'a Setup<'a>,
    epoll: Epoll,
    signals: SignalPipe,
    listeners: Vec<RawFd>,
    slab: Mutex<Slab>,
    app: App,
    limits: Limits,
    keepalive_ms: u64,
    timeout_ms: u64,
    max_conns: usize,
    mode: AtomicU8,
    /// When a graceful stop must end (ms, monotonic); 0 = not stopping.
    stop_deadline: AtomicU64,
    requests: AtomicU64,
    /// Per thread: when its current request started (ms), 0 when idle or waiting on its client.
    /// Leaked: it lives as long as the worker process, and each thread keeps a `'static` handle
    /// to its own slot (see [`waiting_on_client`]).
    busy: &'static [AtomicU64],
    next_sweep: AtomicU64,
    /// Threads still running their loop.
    running: AtomicUsize,
    access: Option<AccessFormat>,
    /// More than one thread: connections are registered EPOLLONESHOT, so the thread woken for
    /// one owns it until it re-arms it. With one thread there is nobody to race with.
    oneshot: bool,
    /// The epoll events connections are registered with.
    conn_events: u32,
    /// While accept(2) fails for lack of descriptors or memory: when to try again (ms), else 0.
    accept_paused_until: AtomicU64,
    /// Per listener: whether accepted sockets come with TCP_NODELAY from it (checked once).
    nodelay_inherited: Vec<std::sync::OnceLock<bool>>,
    /// Leader/followers coordination, with more than one thread.
    lead: Option<Leadership>,
}

/// Runs a worker until it is told to stop; returns the exit status.
pub fn run(setup: Setup<'_>) -> i32 {
    let settings = setup.settings;
    let signals = match SignalPipe::install(&[
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Usr1,
    ]) {
        Ok(s) => s,
        Err(e) => {
            crate::error!("Cannot install signal handlers: {e}");
            return interpreter::WORKER_BOOT_ERROR;
        }
    };
    for sig in [libc::SIGTTIN, libc::SIGTTOU, libc::SIGCHLD] {
        let _ = sys::default_signal(sig);
    }
    let _ = sys::ignore_signal(libc::SIGPIPE);

    // The interpreter starts with the arbiter's rights (its standard library may live where
    // only they can read it, as under /root/.pyenv); the app is imported after the drop, as
    // gunicorn imports it in the worker after set_owner_process.
    if setup.preloaded.is_none() {
        if let Err(e) = interpreter::start(settings) {
            crate::error!("{e}");
            return interpreter::WORKER_BOOT_ERROR;
        }
        // The loader's own modules, while the standard library is surely readable.
        Python::attach(|py| {
            for module in ["ast", "importlib", "traceback"] {
                let _ = py.import(module);
            }
        });
    }
    // Drop privileges: groups first (supplementary ones included,
    // or the worker would keep root's), then the user.
    if settings.user.is_some() || settings.group.is_some() {
        let gid = settings
            .group
            .or_else(|| settings.user.and_then(sys::primary_gid));
        if let Some(gid) = gid {
            if let Err(e) = sys::setgroups(&[gid]).and_then(|()| sys::setgid(gid)) {
                crate::error!("Cannot switch to group {gid}: {e}");
                return interpreter::WORKER_BOOT_ERROR;
            }
        }
        if let Some(uid) = settings.user {
            if let Err(e) = sys::setuid(uid) {
                crate::error!("Cannot switch to user {uid}: {e}");
                return interpreter::WORKER_BOOT_ERROR;
            }
        }
    }

    let addrs: Vec<ListenAddr> = setup.listeners.iter().map(|l| l.addr.clone()).collect();
    let app = match &setup.preloaded {
        Some(app) => Python::attach(|py| {
            crate::wsgi::prepare_app(py, app.clone_ref(py), settings, &addrs)
                .map_err(|e| interpreter::format_traceback(py, &e))
        }),
        None => Python::attach(|py| crate::wsgi::load(py, settings, &addrs)),
    };
    let app = match app {
        Ok(app) => app,
        Err(msg) => {
            crate::log::write_raw(format!("{}\n", msg.trim_end()).as_bytes());
            return interpreter::APP_LOAD_ERROR;
        }
    };

    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            crate::error!("Cannot create epoll: {e}");
            return interpreter::WORKER_BOOT_ERROR;
        }
    };
    let mut listeners = Vec::new();
    for l in setup.listeners {
        let fd = l.as_raw_fd();
        if let Err(e) = sys::set_nonblocking(fd, true) {
            crate::error!("Cannot use listener {}: {e}", l.addr);
            return interpreter::WORKER_BOOT_ERROR;
        }
        listeners.push(fd);
    }
    if let Err(e) = epoll.add(signals.fd(), libc::EPOLLIN as u32, TOKEN_SIGNALS) {
        crate::error!("Cannot watch the signal pipe: {e}");
        return interpreter::WORKER_BOOT_ERROR;
    }

    let threads = settings.threads.max(1);
    let worker = Worker {
        setup: &setup,
        epoll,
        signals,
        listeners,
        slab: Mutex::new(Slab::default()),
        app,
        limits: Limits {
            request_line: settings.limit_request_line,
            fields: settings.limit_request_fields,
            field_size: settings.limit_request_field_size,
            body: settings.limit_request_body,
        },
        keepalive_ms: settings.keepalive * 1000,
        timeout_ms: if settings.timeout == 0 {
            30_000
        } else {
            settings.timeout * 1000
        },
        max_conns: settings.worker_connections,
        mode: AtomicU8::new(Mode::Running as u8),
        stop_deadline: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        busy: Box::leak((0..threads).map(|_| AtomicU64::new(0)).collect()),
        next_sweep: AtomicU64::new(0),
        running: AtomicUsize::new(threads),
        access: settings
            .accesslog
            .as_ref()
            .map(|_| AccessFormat::compile(&settings.access_log_format)),
        oneshot: threads > 1,
        conn_events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32
            | if threads > 1 {
                libc::EPOLLONESHOT as u32
            } else {
                0
            },
        accept_paused_until: AtomicU64::new(0),
        nodelay_inherited: setup
            .listeners
            .iter()
            .map(|_| std::sync::OnceLock::new())
            .collect(),
        lead: (threads > 1).then(Leadership::new),
    };
    if let Err(e) = worker.watch_listeners() {
        crate::error!("Cannot watch the listeners: {e}");
        return interpreter::WORKER_BOOT_ERROR;
    }
    setup.state.store(slot_state::BOOTED, Ordering::Release);
    worker.beat();

    std::thread::scope(|scope| {
        for id in 1..threads {
            let w = &worker;
            let spawned = std::thread::Builder::new()
                .name(format!("minigun-{id}"))
                .spawn_scoped(scope, move || w.thread_loop(id));
            if let Err(e) = spawned {
                crate::error!("Cannot start thread {id}: {e}");
                worker.running.fetch_sub(1, Ordering::AcqRel);
            }
        }
        worker.thread_loop(0);
    });
    crate::info!("Worker exiting (pid: {})", sys::getpid());
    // Give the app's atexit handlers their turn, as a Python process exiting normally would.
    Python::attach(|py| {
        let _ = py.run(
            c"import atexit, sys\natexit._run_exitfuncs()\nsys.stdout.flush()\nsys.stderr.flush()",
            None,
            None,
        );
    });
    0
}

impl Worker<'_> {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Running,
            1 => Mode::Retiring,
            _ => Mode::Stopping,
        }
    }

    /// Adds the listeners to the epoll set. EPOLLEXCLUSIVE: of all the workers waiting on one
    /// socket, the kernel wakes one, not all of them.
    fn watch_listeners(&self) -> io::Result<()> {
        for (i, &fd) in self.listeners.iter().enumerate() {
            let events = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
            self.epoll.add(fd, events, TOKEN_LISTENER0 + i as u64)?;
        }
        Ok(())
    }

    /// Writes the heartbeat: the start of the oldest running request, or now.
    fn beat(&self) {
        Pulse {
            busy: self.busy,
            heartbeat: self.setup.heartbeat,
        }
        .beat();
    }

    /// Stops accepting and switches to `mode`.
    fn begin_stop(&self, mode: Mode) {
        let prev = self.mode.fetch_max(mode as u8, Ordering::AcqRel);
        if prev >= mode as u8 {
            return;
        }
        if prev == Mode::Running as u8 {
            for &fd in &self.listeners {
                let _ = self.epoll.delete(fd);
            }
            self.setup
                .state
                .store(slot_state::BOOTED | slot_state::RETIRING, Ordering::Release);
            let graceful = self.setup.settings.graceful_timeout * 1000;
            self.stop_deadline
                .store(sys::monotonic_ms() + graceful, Ordering::Release);
        }
        if mode == Mode::Stopping {
            self.close_idle();
        }
    }

    /// Closes every parked connection that is between requests.
    fn close_idle(&self) {
        let mut closing = Vec::new();
        if let Ok(mut slab) = self.slab.lock() {
            for idx in 0..slab.slots.len() {
                let idle = slab.slots[idx]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.buf.is_empty() && c.head_len.is_none());
                if idle {
                    closing.extend(slab.slots[idx].conn.take());
                    slab.release(idx);
                }
            }
        }
        drop(closing);
    }

    fn thread_loop(&self, id: usize) {
        let pulse = Pulse {
            busy: self.busy,
            heartbeat: self.setup.heartbeat,
        };
        THREAD_BUSY.with(|slot| slot.set(self.busy.get(id).map(|b| (b, pulse))));
        let mut cache = ThreadCache::default();
        let mut events: Vec<Event> = Vec::with_capacity(64);
        // With several threads, only the leader waits for events; `epoch` is the term it
        // leads in (see `Leadership`). One thread is always its own leader.
        let mut epoch = if self.lead.is_some() { None } else { Some(0) };
        loop {
            if self.finished() {
                break;
            }
            let Some(my_epoch) = epoch.or_else(|| self.lead.as_ref().and_then(|l| l.follow(self)))
            else {
                break;
            };
            epoch = Some(my_epoch);
            MY_EPOCH.with(|e| e.set(my_epoch));
            let paused = self.accept_paused_until.load(Ordering::Relaxed) != 0;
            let timeout = if self.mode() == Mode::Running && !paused {
                1000
            } else {
                100
            };
            // Events left over from the last batch first: after a takeover they are the old
            // leader's, which it cannot serve while its slow request runs.
            let pending = self.lead.as_ref().is_some_and(|l| l.has_pending());
            if !pending {
                if let Err(e) = self.epoll.wait(&mut events, 64, timeout) {
                    crate::error!("epoll_wait failed: {e}");
                    break;
                }
                self.beat();
                if let Some(lead) = &self.lead {
                    lead.push_pending(&events);
                    events.clear();
                }
            }
            // One attach for the whole batch, not one per request. Everything below is
            // non-blocking, and the few waits inside a request (a full socket, a body still
            // arriving) release the GIL.
            let mut serve = |token: u64| match token {
                TOKEN_SIGNALS => self.handle_signals(),
                t if t < TOKEN_CONN0 => self.accept((t - TOKEN_LISTENER0) as usize, id, &mut cache),
                t => self.ready(t, id, &mut cache),
            };
            match &self.lead {
                None if !events.is_empty() => Python::attach(|_py| {
                    for ev in &events {
                        serve(ev.token);
                    }
                }),
                Some(lead) if pending || lead.has_pending() => Python::attach(|_py| {
                    // One event at a time, and only while leading: a thread that lost the lead
                    // to a takeover leaves the rest of the batch to the new leader.
                    while lead.still_leader(my_epoch) {
                        match lead.pop_pending() {
                            Some(token) => serve(token),
                            None => break,
                        }
                    }
                }),
                _ => {}
            }
            self.maybe_sweep();
            // A follower took over while this request ran long: follow from now on.
            if let Some(lead) = &self.lead {
                if !lead.still_leader(my_epoch) {
                    epoch = None;
                }
            }
        }
        if let Some(lead) = &self.lead {
            lead.shut_down();
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
    }

    /// True once a stopping worker has no connections left, or its graceful time is up.
    fn finished(&self) -> bool {
        if self.mode() == Mode::Running {
            return false;
        }
        let open = self.slab.lock().map(|s| s.open).unwrap_or(0);
        open == 0 || sys::monotonic_ms() >= self.stop_deadline.load(Ordering::Acquire)
    }

    fn handle_signals(&self) {
        for sig in self.signals.drain() {
            match sig {
                Signal::Term | Signal::Int => self.begin_stop(Mode::Stopping),
                Signal::Hup => self.begin_stop(Mode::Retiring),
                Signal::Quit => {
                    crate::info!("Worker exiting (pid: {})", sys::getpid());
                    sys::exit_now(0);
                }
                Signal::Usr1 => crate::log::reopen(),
                _ => {}
            }
        }
    }

    /// Accepts what is waiting on listener `idx`.
    fn accept(&self, idx: usize, thread: usize, cache: &mut ThreadCache) {
        if self.mode() != Mode::Running {
            return;
        }
        let Some(&lfd) = self.listeners.get(idx) else {
            return;
        };
        // A bounded batch, so one busy worker leaves some connections to the others; and none
        // once the worker stops (a request just served may have reached --max-requests).
        for _ in 0..16 {
            if self.mode() != Mode::Running {
                return;
            }
            let (fd, peer) = match sys::accept(lfd) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED) | Some(libc::EINTR)
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // EMFILE and friends: the connection stays queued in the kernel. Stop
                    // watching the listener for a moment instead of spinning on it, as
                    // mini-redis backs off its accept loop.
                    if self
                        .accept_paused_until
                        .swap(sys::monotonic_ms() + 100, Ordering::AcqRel)
                        == 0
                    {
                        crate::error!("accept() failed: {e}; pausing accepts for 100 ms");
                        for &fd in &self.listeners {
                            let _ = self.epoll.delete(fd);
                        }
                    }
                    return;
                }
            };
            let open = self.slab.lock().map(|s| s.open).unwrap_or(0);
            if open >= self.max_conns {
                crate::warning!("Too many connections ({open}); answering 503");
                let _ = sys::write(
                    fd.as_raw_fd(),
                    &simple_response(
                        503,
                        "Service Unavailable",
                        b"Service Unavailable: too many connections\n",
                        true,
                    ),
                );
                continue;
            }
            let (remote, port) = match peer {
                Peer::Tcp(addr) => {
                    // Small writes must never wait for a delayed ACK. The listener's
                    // TCP_NODELAY is normally inherited; if this socket says otherwise (an
                    // inherited fd:// listener, another kernel), set it here.
                    let fd = fd.as_raw_fd();
                    let inherited = *self.nodelay_inherited[idx].get_or_init(|| {
                        sys::getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)
                            .is_ok_and(|v| v != 0)
                    });
                    if !inherited {
                        let _ = sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
                    }
                    (
                        addr.ip().to_canonical().to_string(),
                        addr.port().to_string(),
                    )
                }
                Peer::Unix => (String::new(), String::new()),
            };
            let conn = Box::new(Conn {
                fd,
                listener: idx,
                remote,
                port,
                py_strings: None,
                buf: Vec::with_capacity(BUF_START),
                scanner: HeadScanner::default(),
                head: Head::default(),
                head_len: None,
                deadline: sys::monotonic_ms() + self.timeout_ms,
                registered: false,
                lingering: 0,
                lingering_on: false,
                served: 0,
            });
            let (slot, gen) = match self.slab.lock() {
                Ok(mut slab) => slab.alloc(),
                Err(_) => return,
            };
            // Requests often arrive with the connection: try at once, saving an epoll round.
            self.serve_conn(conn, slot, gen, thread, cache, true);
        }
    }

    /// An epoll event for a connection.
    fn ready(&self, token: u64, thread: usize, cache: &mut ThreadCache) {
        let (idx, gen) = untoken(token);
        let conn = match self.slab.lock() {
            Ok(mut slab) => match slab.slots.get_mut(idx) {
                Some(slot) if slot.used && slot.gen == gen => slot.conn.take(),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(conn) = conn {
            self.serve_conn(conn, idx, gen, thread, cache, false);
        }
    }

    /// Drives a connection as far as it goes, then parks or closes it.
    fn serve_conn(
        &self,
        mut conn: Box<Conn>,
        idx: usize,
        gen: u32,
        thread: usize,
        cache: &mut ThreadCache,
        fresh: bool,
    ) {
        let next = if conn.lingering_on {
            self.linger(&mut conn)
        } else {
            self.drive(&mut conn, thread, cache, fresh)
        };
        match next {
            Next::Park => {
                let fd = conn.fd.as_raw_fd();
                let first = !conn.registered;
                conn.registered = true;
                // Back into the slab before the registration is armed: once armed, another
                // thread may take the event at once, and must find the connection there.
                match self.slab.lock() {
                    Ok(mut slab) => slab.slots[idx].conn = Some(conn),
                    Err(_) => return,
                }
                let armed = if first {
                    self.epoll.add(fd, self.conn_events, token(idx, gen))
                } else if self.oneshot {
                    self.epoll.modify(fd, self.conn_events, token(idx, gen))
                } else {
                    // One thread: the registration stays armed, level-triggered; parking costs
                    // no system call.
                    Ok(())
                };
                if armed.is_err() {
                    // Not armed, so nobody else can have taken it: close it.
                    if let Ok(mut slab) = self.slab.lock() {
                        slab.release(idx);
                    }
                }
                // A stop that began while we held this connection may have found it busy.
                if self.mode() == Mode::Stopping {
                    self.close_idle();
                }
            }
            Next::Close => {
                if let Ok(mut slab) = self.slab.lock() {
                    slab.release(idx);
                }
                drop(conn);
            }
        }
    }

    /// Reads what is available into the connection buffer. `Ok(0)`: the client closed.
    fn fill(&self, conn: &mut Conn, want: usize) -> io::Result<usize> {
        let spare = conn.buf.capacity() - conn.buf.len();
        sys::read_into_spare(
            conn.fd.as_raw_fd(),
            &mut conn.buf,
            want.max(spare).max(4096),
        )
    }

    /// Serves requests on `conn` until it must wait for bytes or close.
    fn drive(&self, conn: &mut Conn, thread: usize, cache: &mut ThreadCache, fresh: bool) -> Next {
        let mut fresh = fresh;
        loop {
            // Phase 1: a complete head.
            let head_len = match conn.head_len {
                Some(len) => len,
                None => {
                    let scanned = if conn.buf.is_empty() {
                        Ok(Status::Partial)
                    } else {
                        conn.scanner.scan(&conn.buf, &self.limits)
                    };
                    match scanned {
                        Err(e) => return self.refuse(conn, e),
                        Ok(Status::Partial) => {
                            let was_idle = conn.buf.is_empty();
                            if was_idle && conn.served > 0 && self.mode() == Mode::Stopping {
                                return Next::Close;
                            }
                            match self.fill(conn, 0) {
                                Ok(0) => return Next::Close,
                                Ok(_) => {
                                    if was_idle {
                                        // The first byte of a request starts its clock.
                                        conn.deadline = sys::monotonic_ms() + self.timeout_ms;
                                    }
                                    fresh = false;
                                    continue;
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    if was_idle && !fresh {
                                        conn.deadline =
                                            sys::monotonic_ms() + self.keepalive_ms.max(1);
                                    }
                                    return Next::Park;
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(_) => return Next::Close,
                            }
                        }
                        Ok(Status::Complete(len)) => {
                            if let Err(e) = parse_head(&conn.buf, len, &mut conn.head) {
                                return self.refuse(conn, e);
                            }
                            if let Framing::Length(n) = conn.head.framing {
                                if self.limits.body > 0 && n > self.limits.body {
                                    return self.refuse(conn, Error::BodyTooLarge);
                                }
                            }
                            conn.head_len = Some(len);
                            len
                        }
                    }
                }
            };

            // Phase 2: a small body, read here so the app never waits for it (and a broken
            // chunked one is refused before the app is called).
            if !conn.head.expect_continue {
                let want = match conn.head.framing {
                    Framing::Length(n) if n <= PREBUFFER => {
                        (head_len + n as usize).saturating_sub(conn.buf.len())
                    }
                    Framing::Chunked if conn.buf.len() - head_len < PREBUFFER as usize => {
                        let mut decoder = ChunkedDecoder::new(self.limits.body);
                        match decode_all(&mut decoder, &conn.buf[head_len..]) {
                            Err(e) => return self.refuse(conn, e),
                            Ok(true) => 0,
                            Ok(false) => 4096,
                        }
                    }
                    _ => 0,
                };
                if want > 0 {
                    match self.fill(conn, want) {
                        Ok(0) => return Next::Close,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Park,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Next::Close,
                    }
                }
            }

            // Phase 3: the app.
            let keep_alive = self.serve_request(conn, thread, cache);
            if !keep_alive {
                return self.close_after_response(conn);
            }
            conn.head_len = None;
            conn.scanner.reset();
            if conn.buf.is_empty() {
                if self.mode() == Mode::Stopping {
                    return Next::Close;
                }
                if conn.buf.capacity() > 4 * BUF_START {
                    conn.buf = Vec::with_capacity(BUF_START);
                }
                conn.deadline = sys::monotonic_ms() + self.keepalive_ms.max(1);
                return Next::Park;
            }
            // Pipelined bytes are waiting: go round again.
            conn.deadline = sys::monotonic_ms() + self.timeout_ms;
        }
    }

    /// Calls the app for the parsed request; returns whether the connection stays open.
    fn serve_request(&self, conn: &mut Conn, thread: usize, cache: &mut ThreadCache) -> bool {
        let started = Instant::now();
        self.busy[thread].store(sys::monotonic_ms().max(1), Ordering::Relaxed);
        // Only the leader's requests are watched: an old leader finishing its last request
        // after a takeover is no longer anyone's bottleneck.
        let epoch = MY_EPOCH.with(|e| e.get());
        let leading = self.lead.as_ref().filter(|lead| lead.still_leader(epoch));
        if let Some(lead) = leading {
            lead.request_started();
        }
        let may_keep_alive = self.keepalive_ms > 0 && self.mode() == Mode::Running;
        let outcome = Python::attach(|py| {
            call::serve(
                py,
                &self.app,
                cache,
                Exchange {
                    fd: conn.fd.as_raw_fd(),
                    client: Client {
                        addr: &conn.remote,
                        port: &conn.port,
                        listener: conn.listener,
                        strings: &mut conn.py_strings,
                    },
                    buf: &mut conn.buf,
                    head: &conn.head,
                    may_keep_alive,
                    deadline_ms: conn.deadline,
                },
            )
        });
        self.busy[thread].store(0, Ordering::Relaxed);
        if let Some(lead) = leading {
            lead.request_finished(epoch, started.elapsed());
        }
        self.beat();
        conn.served += 1;
        if let Some(format) = &self.access {
            let buf = &conn.buf;
            let head = &conn.head;
            let line_end = head.line_end.min(buf.len());
            let request_header = |name: &str| {
                head.header(buf, name)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let response_header = |name: &str| {
                outcome
                    .response_headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            format.log(&AccessEntry {
                remote: if conn.remote.is_empty() {
                    "-"
                } else {
                    &conn.remote
                },
                request_line: &buf[head.line_start.min(line_end)..line_end],
                method: head.method.of(buf),
                path: head.path.of(buf),
                query: head.query.of(buf),
                protocol: head.protocol(),
                status: outcome.status,
                body_bytes: outcome.body_bytes,
                elapsed: started.elapsed(),
                request_header: &request_header,
                response_header: &response_header,
            });
        }
        let consumed = outcome.consumed.min(conn.buf.len());
        conn.buf.drain(..consumed);

        let served = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let max = self.setup.max_requests;
        if max > 0 && served == max {
            crate::info!("Autorestarting worker after current request.");
            self.begin_stop(Mode::Retiring);
        }
        outcome.keep_alive
    }

    /// Answers a request we refuse, then closes (after lingering).
    fn refuse(&self, conn: &mut Conn, err: Error) -> Next {
        let (code, _) = err.status();
        if code == 408 {
            crate::debug!("{err} from {}", conn.remote);
        } else {
            crate::info!(
                "Invalid request from {}: {err}",
                if conn.remote.is_empty() {
                    "unix socket"
                } else {
                    &conn.remote
                }
            );
        }
        let _ = call_write(conn.fd.as_raw_fd(), &error_response(err));
        if let Some(format) = &self.access {
            let line_end = conn
                .buf
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(0)
                .min(200);
            let no_header = |_: &str| None;
            format.log(&AccessEntry {
                remote: &conn.remote,
                request_line: &conn.buf[..line_end],
                method: b"-",
                path: b"-",
                query: b"",
                protocol: "-",
                status: code,
                body_bytes: 0,
                elapsed: std::time::Duration::ZERO,
                request_header: &no_header,
                response_header: &no_header,
            });
        }
        self.close_gracefully(conn)
    }

    /// Ends a connection after a complete response. A reset, which could destroy the response
    /// on its way, is only sent by close(2) when unread bytes wait in the receive queue; so when
    /// a read finds nothing waiting, a plain close is as safe as a staged one and costs three
    /// system calls less (the common case: a client that sent `Connection: close`). Otherwise
    /// the staged close of RFC 9112 §9.6.
    fn close_after_response(&self, conn: &mut Conn) -> Next {
        if conn.buf.is_empty() {
            let mut probe = [0u8; 1];
            match sys::read(conn.fd.as_raw_fd(), &mut probe) {
                Ok(0) => return Next::Close,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Close,
                _ => {}
            }
        }
        self.close_gracefully(conn)
    }

    /// Closes our side for writing and drains what the client still sends for a moment, so a
    /// response we just wrote is not destroyed by a reset (RFC 9112 §9.6).
    fn close_gracefully(&self, conn: &mut Conn) -> Next {
        sys::shutdown_write(conn.fd.as_raw_fd());
        conn.lingering_on = true;
        conn.buf.clear();
        conn.deadline = sys::monotonic_ms() + LINGER_MS;
        self.linger(conn)
    }

    fn linger(&self, conn: &mut Conn) -> Next {
        let mut scratch = [0u8; 4096];
        loop {
            match sys::read(conn.fd.as_raw_fd(), &mut scratch) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    conn.lingering += n;
                    if conn.lingering > LINGER_MAX {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Park,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Once a second: close connections past their deadline; check on the arbiter.
    fn maybe_sweep(&self) {
        let now = sys::monotonic_ms();
        let paused = self.accept_paused_until.load(Ordering::Acquire);
        if paused != 0
            && now >= paused
            && self
                .accept_paused_until
                .compare_exchange(paused, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            && self.mode() == Mode::Running
        {
            if let Err(e) = self.watch_listeners() {
                crate::error!("Cannot watch the listeners again: {e}");
            }
        }
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due
            || self
                .next_sweep
                .compare_exchange(due, now + 1000, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if sys::getppid() != self.setup.ppid {
            crate::info!("Parent changed, shutting down: worker {}", sys::getpid());
            sys::exit_now(0);
        }
        let mut expired = Vec::new();
        if let Ok(mut slab) = self.slab.lock() {
            for idx in 0..slab.slots.len() {
                let past = slab.slots[idx]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.deadline <= now);
                if past {
                    expired.extend(slab.slots[idx].conn.take());
                    slab.release(idx);
                }
            }
        }
        for conn in expired {
            let mid_request =
                !conn.lingering_on && (!conn.buf.is_empty() || conn.head_len.is_some());
            if mid_request {
                crate::debug!("Request from {} timed out", conn.remote);
                let _ = call_write(conn.fd.as_raw_fd(), &error_response(Error::Timeout));
            }
        }
    }
}

/// How long the leader may be inside one request before its successor takes over the event
/// loop: short enough that a slow request barely delays the connections behind it, long enough
/// that a fast app never pays for a thread switch.
const TAKEOVER_MS: u64 = 2;

/// Leader/followers for `--threads > 1`.
///
/// Only the leader waits in epoll_wait and serves what it gets, so a fast app runs on one hot
/// thread with no hand-off and no fight over the GIL. One follower, the successor, checks every
/// [`TAKEOVER_MS`] whether the leader has been inside one request for longer than that; if so,
/// it becomes the new leader and the old one, once its request is done, becomes a follower.
/// When the app is slow on average (a database call, `time.sleep`), the leader hands over
/// before each request instead of after a delay. The other followers sleep until needed.
struct Leadership {
    state: Mutex<LeadState>,
    /// The successor waits here with a timeout.
    successor: std::sync::Condvar,
    /// The other followers wait here.
    followers: std::sync::Condvar,
    /// Bumped each time leadership changes hands; a thread leads while the epoch is its own.
    epoch: AtomicU64,
    /// When the leader's current request started (ms); 0 between requests; 1 asks the successor
    /// to take over now.
    leader_busy_since: AtomicU64,
    /// Moving average of app call times (µs), to tell slow apps from fast ones.
    app_time_us: AtomicU64,
    /// The rest of the leader's last epoll batch, served one by one.
    pending: Mutex<std::collections::VecDeque<u64>>,
}

#[derive(Default)]
struct LeadState {
    has_leader: bool,
    has_successor: bool,
    done: bool,
}

impl Leadership {
    fn new() -> Leadership {
        Leadership {
            state: Mutex::new(LeadState::default()),
            successor: std::sync::Condvar::new(),
            followers: std::sync::Condvar::new(),
            epoch: AtomicU64::new(0),
            leader_busy_since: AtomicU64::new(0),
            app_time_us: AtomicU64::new(0),
            pending: Mutex::new(std::collections::VecDeque::with_capacity(64)),
        }
    }

    fn has_pending(&self) -> bool {
        self.pending.lock().is_ok_and(|p| !p.is_empty())
    }

    fn push_pending(&self, events: &[Event]) {
        if let Ok(mut p) = self.pending.lock() {
            p.extend(events.iter().map(|e| e.token));
        }
    }

    fn pop_pending(&self) -> Option<u64> {
        self.pending.lock().ok()?.pop_front()
    }

    fn still_leader(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch
    }

    /// Waits until this thread leads; returns its epoch, or `None` when the worker is done.
    fn follow(&self, worker: &Worker<'_>) -> Option<u64> {
        let mut st = self.state.lock().ok()?;
        loop {
            if st.done || worker.finished() {
                st.done = true;
                self.successor.notify_all();
                self.followers.notify_all();
                return None;
            }
            if !st.has_leader {
                st.has_leader = true;
                return Some(self.epoch.fetch_add(1, Ordering::AcqRel) + 1);
            }
            if st.has_successor {
                // Woken now and then to notice a stop.
                st = self
                    .followers
                    .wait_timeout(st, Duration::from_millis(200))
                    .ok()?
                    .0;
                continue;
            }
            st.has_successor = true;
            loop {
                if st.done || worker.finished() {
                    st.has_successor = false;
                    break;
                }
                // Checked before every wait, so a hand-over asked for before this thread
                // became the successor is not missed.
                let busy = self.leader_busy_since.load(Ordering::Acquire);
                let stuck = busy != 0 && sys::monotonic_ms().saturating_sub(busy) >= TAKEOVER_MS;
                if stuck || !st.has_leader {
                    st.has_successor = false;
                    st.has_leader = true;
                    self.leader_busy_since.store(0, Ordering::Release);
                    // Someone else becomes the successor.
                    self.followers.notify_one();
                    return Some(self.epoch.fetch_add(1, Ordering::AcqRel) + 1);
                }
                st = self
                    .successor
                    .wait_timeout(st, Duration::from_millis(TAKEOVER_MS))
                    .ok()?
                    .0;
            }
        }
    }

    /// Called by the leader as a request starts: note the time, or hand over at once when the
    /// app is known to be slow.
    fn request_started(&self) {
        if self.app_time_us.load(Ordering::Relaxed) > TAKEOVER_MS * 1000 {
            // Under the lock, so the successor cannot check and then miss the wake-up.
            let _guard = self.state.lock();
            self.leader_busy_since.store(1, Ordering::Release);
            self.successor.notify_one();
        } else {
            self.leader_busy_since
                .store(sys::monotonic_ms().max(2), Ordering::Release);
        }
    }

    /// Called as a request ends, with how long the app took.
    fn request_finished(&self, epoch_was: u64, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let avg = self.app_time_us.load(Ordering::Relaxed);
        self.app_time_us
            .store(avg - avg / 8 + us / 8, Ordering::Relaxed);
        if self.still_leader(epoch_was) {
            self.leader_busy_since.store(0, Ordering::Release);
        }
    }

    /// A thread leaves the loop: wake everyone so they notice.
    fn shut_down(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.done = true;
        }
        self.successor.notify_all();
        self.followers.notify_all();
    }
}

/// What a thread needs to write the worker's heartbeat from anywhere, even from inside a wait
/// on a slow client.
#[derive(Clone, Copy)]
struct Pulse {
    busy: &'static [AtomicU64],
    heartbeat: &'static AtomicU64,
}

impl Pulse {
    /// The heartbeat's value: the start of the oldest request still in the app, or now. So the
    /// arbiter sees a stale heartbeat when the loop has stopped, or when one request has been
    /// inside the app for longer than `--timeout`.
    fn beat(self) {
        let now = sys::monotonic_ms();
        let oldest = self
            .busy
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(now);
        self.heartbeat.store(oldest.min(now), Ordering::Release);
    }
}

thread_local! {
    /// The epoch this thread leads (or last led) in; see `Leadership`.
    static MY_EPOCH: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// This thread's heartbeat slot and the worker's pulse, for [`waiting_on_client`].
    static THREAD_BUSY: std::cell::Cell<Option<(&'static AtomicU64, Pulse)>> = const { std::cell::Cell::new(None) };
}

/// Runs `wait` (a wait on the client: a body still arriving, a full send buffer) without it
/// counting against the request in the heartbeat. `--timeout` kills a worker whose app is stuck;
/// a slow client is not the app's fault and has deadlines of its own, so it must not get the
/// whole worker, and every other client on it, killed. Waits inside call
/// [`wait_for_client`], which keeps the heartbeat fresh.
pub fn waiting_on_client<T>(wait: impl FnOnce() -> T) -> T {
    let slot = THREAD_BUSY.with(|s| s.get());
    let was_busy = slot.is_some_and(|(busy, pulse)| {
        let was = busy.swap(0, Ordering::Relaxed) != 0;
        pulse.beat();
        was
    });
    let result = wait();
    if let (Some((busy, _)), true) = (slot, was_busy) {
        busy.store(sys::monotonic_ms().max(1), Ordering::Relaxed);
    }
    result
}

/// Waits up to `timeout_ms` for the client socket to become ready, in slices of at most half
/// a second, writing the heartbeat between slices: a thread waiting on a slow client is alive
/// even when it is the worker's only one. `Ok(false)` on timeout.
pub fn wait_for_client(fd: RawFd, ready: sys::Ready, timeout_ms: i32) -> io::Result<bool> {
    let deadline = sys::monotonic_ms() + timeout_ms.max(0) as u64;
    loop {
        if let Some((_, pulse)) = THREAD_BUSY.with(|s| s.get()) {
            pulse.beat();
        }
        let left = deadline.saturating_sub(sys::monotonic_ms());
        if sys::poll_one(fd, ready, left.min(500) as i32)? {
            return Ok(true);
        }
        if left <= 500 {
            return Ok(false);
        }
    }
}

/// Sends to a non-blocking client socket until `step` says it is done: `step` makes one write
/// system call and returns `Ok(true)` once everything is out. A full socket is waited for (at
/// most `timeout_ms` each time, see [`wait_for_client`]); `EINTR` is retried.
pub fn send_until_done(
    fd: RawFd,
    timeout_ms: i32,
    mut step: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    loop {
        match step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_for_client(fd, sys::Ready::Write, timeout_ms)? {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs `decoder` over `data`; true when the whole chunked body is there.
fn decode_all(decoder: &mut ChunkedDecoder, mut data: &[u8]) -> Result<bool, Error> {
    while !data.is_empty() && !decoder.is_done() {
        let step = decoder.decode(data)?;
        if step.consumed == 0 {
            break;
        }
        data = &data[step.consumed..];
    }
    Ok(decoder.is_done())
}

/// A best-effort write of a short error response: whatever the socket takes at once. The
/// connection closes right after, so nothing waits on a client that does not read.
fn call_write(fd: RawFd, data: &[u8]) -> io::Result<()> {
    sys::write(fd, data).map(drop)
}
