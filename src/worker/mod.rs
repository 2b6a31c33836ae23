//! A worker process: boot, signals, and the lifecycle of its threads.
//!
//! | module | concern |
//! |---|---|
//! | this one | booting (signals, interpreter, privileges, the app), stopping, the [`Worker`] |
//! | [`serve`] | the event loop each thread runs: accept, read, call the app, park or close |
//! | [`table`] | the parked connections, their epoll registrations, the ready queue |
//! | [`lead`] | leader/followers for `--threads` above one |
//!
//! A connection's own state machine is `conn`, and everything that touches a client socket
//! goes through `client`; the app is called through `wsgi`.
//!
//! Supervision: the worker writes a heartbeat into shared memory (see `arbiter` and
//! `client::Pulse`). Its value is the start time of the oldest request still in the app, or now
//! when none is, so one request stuck for longer than `--timeout` gets the worker replaced,
//! like a silent sync worker in gunicorn. Stopping is graceful: no more accepting, in-flight
//! requests finish (answered with `Connection: close`), and a retiring worker (HUP,
//! `--max-requests`) answers each idle keep-alive connection's next request before closing it,
//! so clients see no failed request.

mod lead;
mod serve;
mod table;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use pyo3::prelude::*;

use crate::client::Pulse;
use crate::config::Settings;
use crate::conn::{Conn, Rules};
use crate::http::Limits;
use crate::log::AccessFormat;
use crate::net::{ListenAddr, Listener};
use crate::signals::{Signal, SignalPipe};
use crate::sys::{self, Epoll, EventFd};
use crate::wsgi::call::App;
use crate::wsgi::hooks::Hooks;
use crate::wsgi::interpreter;

use lead::Leadership;
use table::Table;

/// epoll token of the signal pipe.
const TOKEN_SIGNALS: u64 = 0;
/// epoll token of the first listener; the others follow.
const TOKEN_LISTENER0: u64 = 1;
/// epoll token of the wake-up eventfd, just below the connections' tokens.
const TOKEN_WAKE: u64 = table::TOKEN_CONN0 - 1;

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
    /// This worker's count of threads serving a request, read by the arbiter (`saturation`).
    pub busy_threads: &'static AtomicU64,
    /// Where the worker notes its resident size once booted (for `--max-worker-rss`).
    pub boot_rss: &'static AtomicU64,
    /// The arbiter's pid: if our parent changes, the arbiter is gone and we exit.
    pub ppid: sys::Pid,
    /// The app, when `--preload` imported it before the fork.
    pub preloaded: Option<Py<PyAny>>,
    /// Requests before retiring (max-requests plus this worker's jitter); 0 = never.
    pub max_requests: u64,
    /// The signal mask to restore once the worker's handlers are in (the arbiter forks with
    /// every signal blocked).
    pub signal_mask: &'a sys::SignalMask,
    /// The master's hooks, when the master has an interpreter (inherited across the fork);
    /// otherwise the worker runs the config file itself.
    pub hooks: Option<&'a Hooks>,
    /// Spawn order (`worker.age` for hooks).
    pub age: u64,
    /// Where this worker notes the requests it has in the app, for the arbiter to read.
    pub board: crate::board::Board,
}

/// State shared by the worker's threads.
struct Worker<'a> {
    setup: &'a Setup<'a>,
    epoll: Epoll,
    signals: SignalPipe,
    /// Wakes the leader out of epoll_wait when another thread queues ready work.
    wake: EventFd,
    listeners: Vec<RawFd>,
    /// Parked connections.
    table: Table,
    app: App,
    /// The config file's hooks (`worker_int`, `worker_exit`, …) and this worker's object.
    hooks: Hooks,
    /// What a connection needs to read requests.
    rules: Rules,
    /// How long one wait for a client to read our response may last (`--timeout`).
    send_wait_ms: u64,
    max_conns: usize,
    mode: AtomicU8,
    /// When a graceful stop must end (ms, monotonic); 0 = not stopping.
    stop_deadline: AtomicU64,
    requests: AtomicU64,
    /// The heartbeat writer over the threads' busy slots.
    pulse: Pulse,
    next_sweep: AtomicU64,
    /// Threads still running their loop.
    running: AtomicUsize,
    access: Option<AccessFormat>,
    /// While accept(2) fails for lack of descriptors or memory: when to try again (ms), else 0.
    accept_paused_until: AtomicU64,
    /// Per listener: whether accepted sockets come with TCP_NODELAY from it (checked once).
    nodelay_inherited: Vec<OnceLock<bool>>,
    /// Leader/followers coordination, with more than one thread.
    lead: Option<Leadership>,
}

/// Runs a worker until it is told to stop; returns the exit status.
pub fn run(setup: Setup<'_>) -> i32 {
    let settings = setup.settings;
    // The arbiter forked us with every signal blocked (see `arbiter::spawn_worker`): one sent
    // to us now waits until our own pipe and handlers are in place.
    let signals = SignalPipe::install(&[
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Usr1,
    ]);
    // SIGCHLD back to its default, for the app's subprocesses. TTIN and TTOU mean something
    // to the master only; their default action would stop a worker that gets one from
    // `pkill -TTIN minigun`, leaving its clients hanging. Ignored, not caught: an app that
    // reads or writes the terminal from the background (a stray breakpoint()) then gets EIO,
    // where a caught signal would be raised again and again at the whole process group,
    // the master included.
    let _ = sys::default_signal(libc::SIGCHLD);
    for sig in [libc::SIGTTIN, libc::SIGTTOU, libc::SIGPIPE] {
        let _ = sys::ignore_signal(sig);
    }
    await_abort();
    sys::restore_signals(setup.signal_mask);
    let signals = match signals {
        Ok(s) => s,
        Err(e) => {
            crate::error!("Cannot install signal handlers: {e}");
            return interpreter::WORKER_BOOT_ERROR;
        }
    };
    // A panic is a bug in minigun: say so in the error log, once, where the operator looks.
    // The request it happened in is answered 500 (see `wsgi::call`) or closed.
    std::panic::set_hook(Box::new(|info| {
        crate::error!("Internal error (a bug in minigun, please report it): {info}");
    }));

    let (app, hooks) = match boot_python(&setup) {
        Ok(booted) => booted,
        Err(code) => return code,
    };
    let worker = match Worker::new(&setup, signals, app, hooks) {
        Ok(w) => w,
        Err(e) => {
            crate::error!("{e}");
            return interpreter::WORKER_BOOT_ERROR;
        }
    };
    setup
        .boot_rss
        .store(sys::rss_bytes().unwrap_or(0), Ordering::Release);
    setup.state.store(slot_state::BOOTED, Ordering::Release);
    worker.pulse.beat();

    let threads = settings.threads.max(1);
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
    call_worker_exit(&worker.hooks);
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

/// Starts the worker's Python side: the interpreter (unless the master's was inherited), the
/// config file and its hooks (unless the master ran them), `post_fork`, the privilege drop,
/// the app, `post_worker_init`. On failure, the exit status.
///
/// The interpreter starts with the arbiter's rights (its standard library may live where only
/// they can read it, as under /root/.pyenv), and `post_fork` runs before the drop, as in
/// gunicorn; the app is imported after it, as gunicorn imports it after set_owner_process.
fn boot_python(setup: &Setup<'_>) -> Result<(App, Hooks), i32> {
    let settings = setup.settings;
    let inherited = setup.hooks.is_some();
    if !inherited {
        if let Err(e) = interpreter::start(settings) {
            crate::error!("{e}");
            return Err(interpreter::WORKER_BOOT_ERROR);
        }
    }
    dump_tracebacks_on_sigusr2();
    let failed = |code: i32| {
        move |msg: String| {
            crate::log::write_raw(format!("{}\n", msg.trim_end()).as_bytes());
            code
        }
    };
    let mut hooks = Python::attach(|py| match setup.hooks {
        Some(h) => Ok(h.clone_ref(py)),
        None => {
            // The loader's own modules, while the standard library is surely readable.
            for module in ["ast", "importlib", "traceback", "runpy"] {
                let _ = py.import(module);
            }
            interpreter::prepare(py, settings)
                .map_err(|e| interpreter::format_traceback(py, &e))
                .and_then(|()| Hooks::load(py, settings, setup.ppid))
        }
    })
    .map_err(failed(interpreter::WORKER_BOOT_ERROR))?;
    let forked = Python::attach(|py| -> Result<(), String> {
        let worker = hooks
            .new_worker(py, sys::getpid(), setup.ppid, setup.age)
            .map_err(|e| interpreter::format_traceback(py, &e))?;
        let ok = hooks.call(py, "post_fork", (hooks.server.bind(py), worker.bind(py)));
        hooks.worker = Some(worker);
        let _ = ABORT_HOOKS.set(hooks.clone_ref(py));
        if ok {
            Ok(())
        } else {
            Err("The post_fork hook failed; the worker does not start".to_owned())
        }
    });
    forked.map_err(failed(interpreter::WORKER_BOOT_ERROR))?;
    if let Err(e) = drop_privileges(settings) {
        crate::error!("{e}");
        return Err(interpreter::WORKER_BOOT_ERROR);
    }
    let addrs: Vec<ListenAddr> = setup.listeners.iter().map(|l| l.addr.clone()).collect();
    let app = Python::attach(|py| {
        let app = match &setup.preloaded {
            Some(app) => app.clone_ref(py),
            None => crate::wsgi::import_app(py, settings)?,
        };
        crate::wsgi::prepare_app(py, app, settings, &addrs, &hooks)
            .map_err(|e| interpreter::format_traceback(py, &e))
    });
    // --reload: tell the arbiter which files the app came from, whether it loaded or not (the
    // files of a failed import are the ones whose fix must reload).
    crate::reload::report_modules();
    let app = app.map_err(failed(interpreter::APP_LOAD_ERROR))?;
    let initialised = Python::attach(|py| match &hooks.worker {
        Some(w) => hooks.call(py, "post_worker_init", (w.bind(py),)),
        None => true,
    });
    if !initialised {
        crate::error!("The post_worker_init hook failed; the worker does not start");
        return Err(interpreter::WORKER_BOOT_ERROR);
    }
    Ok((app, hooks))
}

/// The hooks the abort thread runs `worker_abort` from, once the worker has them.
static ABORT_HOOKS: std::sync::OnceLock<Hooks> = std::sync::OnceLock::new();

/// Calls `worker_exit(server, worker)`, as gunicorn does on every way out of a worker: a
/// normal stop, QUIT, an abort after a timeout, a master that went away. Takes the GIL only
/// when the hook is defined.
pub(crate) fn call_worker_exit(hooks: &Hooks) {
    // Once: the abort thread may race a QUIT, the end of `run`, or another thread finding
    // the master gone. A later caller waits for the first to end the process, rather than
    // cut its hook short.
    static CALLED: AtomicBool = AtomicBool::new(false);
    if !hooks.defines("worker_exit") {
        return;
    }
    if CALLED.swap(true, Ordering::AcqRel) {
        loop {
            std::thread::park();
        }
    }
    Python::attach(|py| {
        if let Some(w) = &hooks.worker {
            hooks.call(py, "worker_exit", (hooks.server.bind(py), w.bind(py)));
        }
    });
}

/// Leaves at once with `code` after `worker_int` (when asked, for QUIT) and `worker_exit`, on
/// the ways out no master will finish for us (QUIT, a master that went away): a watchdog ends
/// the process if a hook, or an app thread holding the GIL, keeps it longer than
/// [`EXIT_HOOK_MS`], so an orphaned worker never holds the listening sockets.
pub(crate) fn exit_after_worker_exit(hooks: &Hooks, code: i32, worker_int: bool) -> ! {
    let worker_int = worker_int && hooks.defines("worker_int");
    if hooks.defines("worker_exit") || worker_int {
        let watchdog = std::thread::Builder::new()
            .name("minigun-exit".to_owned())
            .spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(EXIT_HOOK_MS));
                crate::warning!("worker_exit did not finish in {EXIT_HOOK_MS} ms; exiting");
                sys::exit_now(code);
            });
        if watchdog.is_ok() {
            if worker_int {
                Python::attach(|py| {
                    if let Some(w) = &hooks.worker {
                        hooks.call(py, "worker_int", (w.bind(py),));
                    }
                });
            }
            call_worker_exit(hooks);
        }
    }
    sys::exit_now(code)
}

/// How long `worker_exit` may take on the ways out that have no master to enforce a limit.
const EXIT_HOOK_MS: u64 = 5000;

/// Readies this worker for the arbiter's SIGABRT (its "you timed out" once `worker_abort` is
/// defined): a thread of its own waits for it, since the serving threads may all be stuck in
/// the app, runs the hook if the worker has got that far (taking the GIL as soon as a stuck
/// thread lets go of it), and exits. Installed first thing, so that a worker that times out
/// while still booting ends cleanly instead of by SIGABRT's default action.
fn await_abort() {
    let pipe = match crate::signals::install_abort_pipe() {
        Ok(p) => p,
        Err(e) => {
            crate::warning!("Cannot route SIGABRT; worker_abort will not run: {e}");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("minigun-abort".to_owned())
        .spawn(move || {
            loop {
                match sys::poll_one(pipe.as_raw_fd(), sys::Ready::Read, -1) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            crate::info!("Worker {} aborting (timeout)", sys::getpid());
            if let Some(hooks) = ABORT_HOOKS.get() {
                Python::attach(|py| {
                    if let Some(w) = &hooks.worker {
                        hooks.call(py, "worker_abort", (w.bind(py),));
                    }
                });
                call_worker_exit(hooks);
            }
            sys::exit_now(1);
        });
    if let Err(e) = spawned {
        crate::warning!("Cannot start the abort thread; worker_abort will not run: {e}");
    }
}

/// Has `faulthandler` write every thread's traceback into the error log on SIGUSR2, from its
/// signal handler, however stuck the threads are (see `arbiter::murder_workers`). Registered as
/// soon as the interpreter runs, so a worker stuck while importing the app is explained too.
fn dump_tracebacks_on_sigusr2() {
    let fd = crate::log::error_fd();
    let registered = Python::attach(|py| {
        py.import("faulthandler").and_then(|fh| {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("file", fd)?;
            kwargs.set_item("all_threads", true)?;
            kwargs.set_item("chain", false)?;
            fh.call_method("register", (libc::SIGUSR2,), Some(&kwargs))
                .map(drop)
        })
    });
    if let Err(e) = registered {
        crate::warning!("Tracebacks on timeout are off: {e}");
    }
}

/// Switches to `--user`/`--group`: groups first, then the user. Only what changes is changed,
/// as in gunicorn, so a process without the privilege to switch ids (not root, or root in a
/// container without CAP_SETUID/CAP_SETGID) starts fine when they name the ids it runs as.
/// Beyond gunicorn, the supplementary groups are reduced to the one group whenever the group
/// or the user changes, or a worker leaving root would keep root's groups.
fn drop_privileges(settings: &Settings) -> Result<(), String> {
    if settings.user.is_none() && settings.group.is_none() {
        return Ok(());
    }
    let now = sys::ids();
    let user_changes = settings
        .user
        .is_some_and(|uid| now.uid != uid || now.euid != uid);
    let gid = settings
        .group
        .or_else(|| settings.user.and_then(sys::primary_gid));
    if let Some(gid) = gid {
        let group_changes = now.gid != gid || now.egid != gid;
        let extra_groups = now
            .groups
            .as_ref()
            .is_none_or(|groups| groups.iter().any(|&g| g != gid));
        if group_changes || (user_changes && extra_groups) {
            sys::setgroups(&[gid])
                .and_then(|()| sys::setgid(gid))
                .map_err(|e| format!("Cannot switch to group {gid}: {e}"))?;
        }
    }
    if let Some(uid) = settings.user.filter(|_| user_changes) {
        sys::setuid(uid).map_err(|e| format!("Cannot switch to user {uid}: {e}"))?;
    }
    Ok(())
}

impl<'a> Worker<'a> {
    /// Sets up the epoll set and the shared state of the threads.
    fn new(
        setup: &'a Setup<'a>,
        signals: SignalPipe,
        app: App,
        hooks: Hooks,
    ) -> Result<Worker<'a>, String> {
        let settings = setup.settings;
        let epoll = Epoll::new().map_err(|e| format!("Cannot create epoll: {e}"))?;
        let mut listeners = Vec::new();
        for l in setup.listeners {
            let fd = l.as_raw_fd();
            sys::set_nonblocking(fd, true)
                .map_err(|e| format!("Cannot use listener {}: {e}", l.addr))?;
            listeners.push(fd);
        }
        epoll
            .add(signals.fd(), libc::EPOLLIN as u32, TOKEN_SIGNALS)
            .map_err(|e| format!("Cannot watch the signal pipe: {e}"))?;
        let wake = EventFd::new().map_err(|e| format!("Cannot create an eventfd: {e}"))?;
        epoll
            .add(wake.fd(), libc::EPOLLIN as u32, TOKEN_WAKE)
            .map_err(|e| format!("Cannot watch the eventfd: {e}"))?;
        let threads = settings.threads.max(1);
        let busy: &'static [AtomicU64] =
            Box::leak((0..threads).map(|_| AtomicU64::new(0)).collect());
        let timeout_ms = settings.timeout_ms().unwrap_or(30_000);
        let worker = Worker {
            setup,
            epoll,
            signals,
            wake,
            listeners,
            table: Table::default(),
            app,
            hooks,
            rules: Rules {
                limits: Limits {
                    request_line: settings.limit_request_line,
                    fields: settings.limit_request_fields,
                    field_size: settings.limit_request_field_size,
                    body: settings.limit_request_body,
                },
                request_ms: timeout_ms,
                keepalive_ms: settings.keepalive.saturating_mul(1000),
            },
            send_wait_ms: timeout_ms,
            max_conns: settings.worker_connections,
            mode: AtomicU8::new(Mode::Running as u8),
            stop_deadline: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            pulse: Pulse::new(busy, setup.heartbeat, setup.busy_threads),
            next_sweep: AtomicU64::new(0),
            running: AtomicUsize::new(threads),
            access: settings.access_format(),
            accept_paused_until: AtomicU64::new(0),
            nodelay_inherited: setup.listeners.iter().map(|_| OnceLock::new()).collect(),
            lead: (threads > 1).then(Leadership::new),
        };
        worker
            .watch_listeners()
            .map_err(|e| format!("Cannot watch the listeners: {e}"))?;
        Ok(worker)
    }

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

    /// Stops watching the listeners.
    fn unwatch_listeners(&self) {
        for &fd in &self.listeners {
            let _ = self.epoll.delete(fd);
        }
    }

    /// Stops accepting and switches to `mode`.
    fn begin_stop(&self, mode: Mode) {
        // The deadline first: a thread that sees the new mode must also see when the stop
        // ends, or it would take "no deadline yet" for "past the deadline" and leave.
        let graceful = self.setup.settings.graceful_timeout.saturating_mul(1000);
        let _ = self.stop_deadline.compare_exchange(
            0,
            sys::monotonic_ms() + graceful,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        let prev = self.mode.fetch_max(mode as u8, Ordering::AcqRel);
        if prev >= mode as u8 {
            return;
        }
        if prev == Mode::Running as u8 {
            self.unwatch_listeners();
            self.setup
                .state
                .store(slot_state::BOOTED | slot_state::RETIRING, Ordering::Release);
        }
        if mode == Mode::Stopping {
            self.close_idle();
        }
    }

    /// Closes every parked connection that is between requests. One whose next request has
    /// begun to arrive (bytes wait in its socket) is not idle: it stays, and is served. Nor is
    /// one just accepted whose first request is still on its way: its client has sent nothing
    /// that could be answered "closed", so it stays and is served (with `Connection: close`),
    /// or meets its request timeout, or the graceful one.
    fn close_idle(&self) {
        for conn in self.table.take_where(Conn::may_close_on_stop) {
            table::close(conn, true, &self.epoll);
        }
    }

    /// True once a stopping worker has no connections left, or its graceful time is up.
    fn finished(&self) -> bool {
        if self.mode() == Mode::Running {
            return false;
        }
        let deadline = self.stop_deadline.load(Ordering::Acquire);
        self.table.open() == 0 || (deadline != 0 && sys::monotonic_ms() >= deadline)
    }

    /// Calls a hook that takes the worker alone (`worker_int`).
    fn call_worker_hook(&self, name: &str) {
        if !self.hooks.defines(name) {
            return;
        }
        Python::attach(|py| {
            if let Some(w) = &self.hooks.worker {
                self.hooks.call(py, name, (w.bind(py),));
            }
        });
    }

    fn handle_signals(&self) {
        for sig in self.signals.drain() {
            crate::debug!("Worker {} handling signal: {}", sys::getpid(), sig.name());
            match sig {
                Signal::Term => self.begin_stop(Mode::Stopping),
                Signal::Int => {
                    self.call_worker_hook("worker_int");
                    self.begin_stop(Mode::Stopping);
                }
                Signal::Hup => self.begin_stop(Mode::Retiring),
                Signal::Quit => {
                    crate::info!("Worker exiting (pid: {})", sys::getpid());
                    exit_after_worker_exit(&self.hooks, 0, true);
                }
                Signal::Usr1 => crate::log::reopen(),
                _ => {}
            }
        }
    }
}
