//! The master process: binds, forks workers, and keeps the right number of healthy ones.
//!
//! Function names follow gunicorn's `arbiter.py` so the two can be read side by side:
//! [`Arbiter::spawn_worker`], [`Arbiter::reap_workers`], [`Arbiter::murder_workers`],
//! [`Arbiter::manage_workers`], and one `handle_*` per signal. The arbiter starts no threads
//! and (without `--preload`) no Python, so `fork` is safe at any moment.
//!
//! Heartbeats: before the first fork the arbiter maps one shared page of `AtomicU64`s, three per
//! worker slot: the worker's heartbeat (monotonic milliseconds, see `worker::Worker::beat`), its
//! state (booted, retiring) and its count of busy threads (see `saturation`). A worker whose heartbeat is older than `--timeout` is killed
//! and replaced. A worker that exits with status 4 (the app failed to import) before any
//! worker ever booted stops the arbiter instead of looping on forks; one that dies during
//! start-up otherwise is restarted with an exponential back-off.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::board::{self, Board};
use crate::config::Settings;
use crate::log::AccessFormat;
use crate::net::{self, Listener};
use crate::notify::Notifier;
use crate::recycle::{Candidate, RssLimit};
use crate::reload::Reloader;
use crate::saturation::LoadWatch;
use crate::signals::{Signal, SignalPipe};
use crate::sys::{self, Exit, Fork, Pid, SharedSlots};
use crate::upgrade::Upgrade;
use crate::worker::{self, slot_state};
use crate::wsgi::hooks::Hooks;
use crate::wsgi::interpreter::{self, APP_LOAD_ERROR, WORKER_BOOT_ERROR};

/// Worker slots in the shared heartbeat page: the most workers that can exist at once,
/// counting old ones still finishing after a reload.
const MAX_SLOTS: usize = 2 * crate::config::MAX_WORKERS;

/// What the arbiter knows of one worker.
struct WorkerInfo {
    slot: usize,
    /// Spawn order: TTOU retires the oldest.
    age: u64,
    /// Part of the generation being replaced by a reload.
    old: bool,
    /// We sent it TERM or HUP: it is on its way out.
    stopping: bool,
    /// We killed it (timeout): its SIGKILL is no news.
    killed: bool,
    /// When we told it it had timed out (tracebacks asked, `worker_abort` run); SIGKILL
    /// follows if it is still there a second later.
    timed_out_at: Option<u64>,
    /// SIGABRT sent after the timeout (`worker_abort`).
    abort_sent: bool,
}

/// Why the arbiter stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// TERM/INT: let requests finish.
    Graceful,
    /// QUIT: now.
    Fast,
}

/// The master process's state.
pub struct Arbiter {
    settings: Settings,
    listeners: Vec<Listener>,
    /// Leaked on purpose: the page lives as long as the process, and workers keep `'static`
    /// references to their slots.
    slots: &'static SharedSlots,
    /// Per worker slot, what each of its threads has in the app (see `board`).
    boards: &'static SharedSlots,
    /// The access-log format, for the lines of timed-out requests.
    access: Option<AccessFormat>,
    workers: HashMap<Pid, WorkerInfo>,
    desired: usize,
    next_age: u64,
    signals: SignalPipe,
    preloaded: Option<Py<PyAny>>,
    /// The config file's hooks, when the master has an interpreter (`--preload`, or hooks that
    /// run here); the workers then fork from it and inherit them.
    hooks: Option<Hooks>,
    /// Some worker has booted at least once: boot failures from now on are retried.
    ever_booted: bool,
    /// Consecutive workers that died before booting, for the back-off.
    boot_failures: u32,
    /// No spawning before this time (ms), after a failed boot.
    spawn_after: u64,
    /// A reload is waiting for the new generation to boot before retiring the old one.
    reloading: bool,
    /// `--reload` saw a change while a reload was under way: another follows it.
    reload_pending: bool,
    /// A worker could not be started for want of a slot, and that has been logged.
    short_of_slots: bool,
    rng: u64,
    /// The directory minigun was started in (before `--chdir`), for re-reading the config.
    start_dir: Option<std::path::PathBuf>,
    /// Busy threads and the listen backlog, for the saturation lines and the master's metrics.
    load: LoadWatch,
    /// systemd's notification socket (does nothing without `NOTIFY_SOCKET`).
    notifier: Notifier,
    /// `READY=1` is owed: at start-up, and after a HUP, until every wanted worker serves.
    ready_owed: bool,
    /// This master's part in a USR2 binary upgrade (see `upgrade`).
    upgrade: Upgrade,
    /// `--reload`: the source watcher (see `reload`).
    reloader: Option<Reloader>,
    /// `--max-worker-rss` (see `recycle`).
    rss_limit: Option<RssLimit>,
}

/// Writes this process's pid to `path` unless it names a live process other than us or
/// `parent` (the old master of an upgrade). The new file appears whole and only if none is
/// there: written beside it, then hard-linked into place, which fails if another process got
/// there first. A stale file (its process gone) is replaced.
fn claim_pidfile(path: &std::path::Path, parent: Option<Pid>) -> Result<(), String> {
    let me = sys::getpid();
    let cannot = |e: std::io::Error| format!("Cannot write pid file {}: {e}", path.display());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{me}.tmp"));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, format!("{me}\n")).map_err(cannot)?;
    let mut result = Err(String::new());
    for _ in 0..2 {
        result = match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match live_pid_in(path) {
                Some(pid) if pid != me && Some(pid) != parent => Err(format!(
                    "Already running on PID {pid} (or pid file '{}' is stale)",
                    path.display()
                )),
                // Ours already (a rename that failed during an upgrade): take it over.
                Some(_) => std::fs::write(path, format!("{me}\n")).map_err(cannot),
                None => {
                    // Stale, or being written by a starter that has not got as far as its
                    // pid (ours appear whole, so that is not a minigun): replace, once.
                    let _ = std::fs::remove_file(path);
                    continue;
                }
            },
            // A file system without hard links: plain write, as gunicorn does.
            Err(_) => std::fs::write(path, format!("{me}\n")).map_err(cannot),
        };
        break;
    }
    let _ = std::fs::remove_file(&tmp);
    match result {
        Err(e) if e.is_empty() => Err(format!(
            "Cannot write pid file {}: another process keeps replacing it",
            path.display()
        )),
        other => other,
    }
}

/// Removes the pid file when `run` returns, if it still names this process (after a USR2 it
/// names the new master, which owns it then).
struct PidFileGuard(std::path::PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|text| text.trim() == sys::getpid().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The pid a pid file names, if a process with that pid exists (one we may not signal
/// exists too).
fn live_pid_in(path: &std::path::Path) -> Option<Pid> {
    let pid: Pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    match sys::kill(pid, 0) {
        Ok(()) => Some(pid),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Some(pid),
        Err(_) => None,
    }
}

/// Binds, boots the workers and supervises them until stopped. Returns the exit status.
pub fn run(settings: Settings) -> i32 {
    let start_dir = std::env::current_dir().ok();
    sys::umask(settings.umask);
    if let Err(e) = crate::log::configure(
        settings.loglevel,
        Some(&settings.errorlog),
        settings.accesslog.as_deref(),
    ) {
        eprintln!("minigun: error: cannot open log file: {e}");
        return 1;
    }
    if let Some(dir) = &settings.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            crate::error!("Cannot change directory to {}: {e}", dir.display());
            return 1;
        }
    }
    if settings.check_config {
        return check_config(&settings);
    }
    crate::info!("Starting minigun {}", env!("CARGO_PKG_VERSION"));
    crate::statsd::configure(settings.statsd_host.as_ref(), &settings.statsd_prefix);
    let _ = sys::ignore_signal(libc::SIGPIPE);
    // The sockets of the old master that started us (USR2), or those systemd passed
    // (LISTEN_FDS), replace --bind, as in gunicorn's create_sockets.
    let (mut upgrade, handed_over) = match Upgrade::from_env() {
        Ok(found) => found,
        Err(e) => {
            crate::error!("{e}");
            return 2;
        }
    };
    // gunicorn's check, before anything is bound: a pid file naming a live process other than
    // us (or the old master that started us) means another minigun serves from here. The file
    // is claimed at once, atomically (see `claim_pidfile`), so of two minigun started together
    // one is refused instead of both binding; the guard removes it on the early returns below.
    let _pidfile = match &settings.pidfile {
        Some(path) => match claim_pidfile(path, upgrade.parent) {
            Ok(()) => Some(PidFileGuard(path.clone())),
            Err(e) => {
                crate::error!("{e}");
                return 1;
            }
        },
        None => None,
    };
    let passed = match handed_over {
        Some(listeners) => Ok(Some(listeners)),
        None => net::activated_listeners(),
    };
    let mut listeners = match passed {
        Ok(passed) => passed.unwrap_or_default(),
        Err(e) => {
            crate::error!("{e}");
            return 2;
        }
    };
    // Before the first fork, and before any interpreter starts here (it reads PYTHON*
    // variables once): every worker inherits the pipe it reports its modules on.
    let reloader = if settings.reload {
        match Reloader::start(&settings.reload_extra_files) {
            Ok(r) => Some(r),
            Err(e) => {
                crate::error!("Cannot start the --reload watcher: {e}");
                return 1;
            }
        }
    } else {
        None
    };

    // The master needs an interpreter only to import the app before forking (--preload) or to
    // call hooks that run here. Then the config file runs here, as gunicorn runs it, and the
    // workers inherit what it did through fork; otherwise each worker runs it.
    let hooks = if settings.preload_app || settings.has_master_hooks() {
        crate::debug!(
            "Starting Python in the master for {}",
            if settings.preload_app {
                "--preload".to_owned()
            } else {
                format!("the hooks {}", settings.hooks.join(", "))
            }
        );
        match start_master_python(&settings) {
            Ok(h) => Some(h),
            Err(code) => return code,
        }
    } else {
        None
    };
    let preloaded = if settings.preload_app {
        match preload(&settings) {
            Ok(app) => Some(app),
            Err(code) => return code,
        }
    } else {
        None
    };
    if let Some(h) = &hooks {
        let started = Python::attach(|py| h.call(py, "on_starting", (h.server.bind(py),)));
        if !started {
            crate::info!("Shutting down: Master");
            crate::info!("Reason: the on_starting hook failed.");
            return crate::wsgi::hooks::exit_requested().unwrap_or(1);
        }
    }
    match sys::raise_open_files_limit() {
        Ok(n) => crate::debug!("Open files limit: {n}"),
        Err(e) => crate::warning!("Cannot raise the open files limit: {e}"),
    }

    for l in &listeners {
        crate::info!("Listening at: {} ({})", l.addr, sys::getpid());
    }
    let binds = if listeners.is_empty() {
        settings.bind.as_slice()
    } else {
        &[]
    };
    for spec in binds {
        match net::bind(spec, settings.backlog) {
            Ok(l) => {
                if let Err(e) = net::set_owner(&l, settings.user, settings.group) {
                    crate::error!("Cannot give {} to --user/--group: {e}", l.addr);
                    return 1;
                }
                crate::info!("Listening at: {} ({})", l.addr, sys::getpid());
                listeners.push(l);
            }
            Err(e) => {
                crate::error!("Connection in use or unavailable: {spec} ({e})");
                crate::error!("Can't connect to {spec}");
                return 1;
            }
        }
    }
    crate::info!("Using worker: threads ({} per worker)", settings.threads);

    let slots: &'static SharedSlots = match SharedSlots::new(MAX_SLOTS * 4) {
        Ok(s) => Box::leak(Box::new(s)),
        Err(e) => {
            crate::error!("Cannot map the heartbeat page: {e}");
            return 1;
        }
    };
    // Records for the threads each worker has now; a HUP that raises --threads leaves the
    // extra threads unrecorded (the timeout explanation says so).
    let board_words = board::slot_words(settings.threads);
    let boards: &'static SharedSlots = match SharedSlots::new(MAX_SLOTS * board_words) {
        Ok(s) => Box::leak(Box::new(s)),
        Err(e) => {
            crate::error!("Cannot map the request boards: {e}");
            return 1;
        }
    };
    let signals = match SignalPipe::install(&Signal::ALL) {
        Ok(s) => s,
        Err(e) => {
            crate::error!("Cannot install signal handlers: {e}");
            return 1;
        }
    };

    if let Some(h) = &hooks {
        Python::attach(|py| {
            let server = h.server.bind(py);
            h.call(py, "when_ready", (server,));
            h.call(
                py,
                "nworkers_changed",
                (server, settings.workers, py.None()),
            );
        });
    }
    upgrade.set_pidfile(settings.pidfile.clone());
    let rss_limit = RssLimit::new(settings.max_worker_rss);

    let desired = settings.workers;
    let access = settings.access_format();
    let backlog_metric = settings.enable_backlog_metric;
    let mut arbiter = Arbiter {
        settings,
        listeners,
        slots,
        boards,
        access,
        workers: HashMap::new(),
        desired,
        next_age: 0,
        signals,
        preloaded,
        hooks,
        ever_booted: false,
        boot_failures: 0,
        spawn_after: 0,
        reloading: false,
        reload_pending: false,
        short_of_slots: false,
        start_dir,
        load: LoadWatch::new(backlog_metric),
        rng: sys::monotonic_ms() ^ (sys::getpid() as u64) << 20,
        notifier: Notifier::from_env(),
        ready_owed: true,
        upgrade,
        reloader,
        rss_limit,
    };
    let code = arbiter.main_loop();
    arbiter.call_hook("on_exit", |py, _| Ok(PyTuple::empty(py)));
    arbiter.cleanup();
    code
}

/// Starts the master's interpreter and runs the config file in it; its hooks come back.
fn start_master_python(settings: &Settings) -> Result<Hooks, i32> {
    if let Err(e) = interpreter::start(settings) {
        crate::error!("{e}");
        return Err(1);
    }
    Python::attach(|py| {
        interpreter::prepare(py, settings)
            .map_err(|e| interpreter::format_traceback(py, &e))
            .and_then(|()| Hooks::load(py, settings, sys::getpid()))
    })
    .map_err(|msg| {
        crate::error!("Cannot run the config file:\n{}", msg.trim_end());
        1
    })
}

/// `--check-config`: the settings were read without error; now the config file runs and the
/// app is imported, in this process. 0 when all is well, else 1 with the error (gunicorn's
/// exit statuses).
fn check_config(settings: &Settings) -> i32 {
    if let Err(e) = interpreter::start(settings) {
        crate::error!("{e}");
        return 1;
    }
    let checked = Python::attach(|py| {
        interpreter::prepare(py, settings)
            .map_err(|e| interpreter::format_traceback(py, &e))
            .and_then(|()| Hooks::load(py, settings, sys::getpid()))
            .and_then(|_| crate::wsgi::import_app(py, settings))
            .map(drop)
    });
    match checked {
        Ok(()) => 0,
        Err(msg) => {
            crate::log::write_raw(format!("{}\n", msg.trim_end()).as_bytes());
            1
        }
    }
}

/// `--preload`: import the app in the arbiter (whose interpreter `start_master_python` started),
/// once, before any fork.
fn preload(settings: &Settings) -> Result<Py<PyAny>, i32> {
    let loaded = Python::attach(|py| crate::wsgi::import_app(py, settings));
    loaded.map_err(|msg| {
        crate::log::write_raw(format!("{}\n", msg.trim_end()).as_bytes());
        crate::info!("Shutting down: Master");
        crate::info!("Reason: App failed to load.");
        APP_LOAD_ERROR
    })
}

impl Arbiter {
    fn heartbeat(&self, slot: usize) -> &'static std::sync::atomic::AtomicU64 {
        &self.slots.slots()[slot * 2]
    }

    fn state(&self, slot: usize) -> &'static std::sync::atomic::AtomicU64 {
        &self.slots.slots()[slot * 2 + 1]
    }

    fn board(&self, slot: usize) -> Board {
        let words = self.boards.slots();
        let n = words.len() / MAX_SLOTS;
        Board::new(&words[slot * n..(slot + 1) * n])
    }

    /// The worker's busy-thread count: the third word of a slot, kept after all the pairs.
    fn busy_threads(&self, slot: usize) -> &'static std::sync::atomic::AtomicU64 {
        &self.slots.slots()[MAX_SLOTS * 2 + slot]
    }

    /// The worker's resident size (bytes) once it had booted, before it served anything: the
    /// fourth word of a slot, for `--max-worker-rss`.
    fn boot_rss(&self, slot: usize) -> &'static std::sync::atomic::AtomicU64 {
        &self.slots.slots()[MAX_SLOTS * 3 + slot]
    }

    fn main_loop(&mut self) -> i32 {
        self.manage_workers();
        loop {
            self.upgrade.maybe_promote_master();
            // Poll often while workers boot or a reload waits on them, so start-up is quick.
            let busy = self.reloading
                || self
                    .workers
                    .values()
                    .any(|w| w.timed_out_at.is_some() && !w.killed)
                || self.workers.len() < self.desired
                || self.reloader.as_ref().is_some_and(Reloader::pending)
                || self
                    .workers
                    .values()
                    .any(|w| self.state(w.slot).load(Ordering::Acquire) & slot_state::BOOTED == 0);
            let mut fds = vec![self.signals.fd()];
            fds.extend(self.reloader.iter().flat_map(Reloader::fds));
            let _ = sys::poll_readable(&fds, if busy { 50 } else { 1000 });
            for sig in self.signals.drain() {
                if sig != Signal::Chld {
                    crate::info!("Handling signal: {}", sig.name());
                }
                match sig {
                    Signal::Term | Signal::Int => return self.stop(Stop::Graceful),
                    Signal::Quit => return self.stop(Stop::Fast),
                    Signal::Hup => self.handle_hup(),
                    Signal::Ttin => self.handle_ttin(),
                    Signal::Ttou => self.handle_ttou(),
                    Signal::Usr1 => self.handle_usr1(),
                    Signal::Usr2 => self.handle_usr2(),
                    Signal::Winch => self.handle_winch(),
                    Signal::Chld => {}
                }
            }
            if let Some(changed) = self.reloader.as_mut().and_then(Reloader::poll) {
                if self.reloading {
                    // One generation at a time: a burst of saves (an editor, a formatter, a
                    // rebase) becomes one more reload once the one under way serves or fails.
                    crate::info!(
                        "{} modified during a reload; reloading again once it is done",
                        changed.display()
                    );
                    self.reload_pending = true;
                } else {
                    crate::info!("Reloading workers: {} modified", changed.display());
                    self.handle_hup();
                }
            } else if self.reload_pending && !self.reloading {
                self.reload_pending = false;
                crate::info!("Reloading workers for the changes made during the last reload");
                self.handle_hup();
            }
            if let Some(code) = crate::wsgi::hooks::exit_requested() {
                self.stop(Stop::Graceful);
                return code;
            }
            if let Some(code) = self.reap_workers() {
                self.stop(Stop::Fast);
                crate::info!(
                    "Reason: {}",
                    if code == APP_LOAD_ERROR {
                        "App failed to load."
                    } else {
                        "Worker failed to boot."
                    }
                );
                return code;
            }
            self.murder_workers();
            self.check_worker_rss();
            self.manage_workers();
            self.watch_load();
        }
    }

    // ANCHOR: spawn-slot
    /// Forks one worker into `slot`.
    fn spawn_worker(&mut self) {
        let Some(slot) = (0..MAX_SLOTS).find(|s| !self.workers.values().any(|w| w.slot == *s))
        else {
            // Only while workers on their way out still hold slots (see `abandon_reload`):
            // said once, and retried on every pass until one exits.
            if !self.short_of_slots {
                self.short_of_slots = true;
                crate::warning!("No free worker slot (at most {MAX_SLOTS} workers); waiting");
            }
            return;
        };
        self.short_of_slots = false;
        self.heartbeat(slot)
            .store(sys::monotonic_ms(), Ordering::Release);
        self.state(slot).store(0, Ordering::Release);
        self.board(slot).reset();
        self.boot_rss(slot).store(0, Ordering::Release);
        // ANCHOR_END: spawn-slot
        let jitter = if self.settings.max_requests_jitter > 0 {
            self.next_random() % (self.settings.max_requests_jitter + 1)
        } else {
            0
        };
        let max_requests = if self.settings.max_requests > 0 {
            self.settings.max_requests + jitter
        } else {
            0
        };
        // ANCHOR: spawn-mask
        let ppid = sys::getpid();
        // Signals stay blocked across the fork: in the child they wait, pending, until the
        // worker has its own self-pipe and handlers (see `worker::run`); run in between, our
        // handler would write into the arbiter's pipe, inherited by the child.
        let mask = sys::block_all_signals();
        // ANCHOR_END: spawn-mask
        let age = self.next_age + 1;
        self.call_hook("pre_fork", |py, h| {
            PyTuple::new(
                py,
                [h.server.clone_ref(py), h.new_worker(py, 0, ppid, age)?],
            )
        });
        let forked = if self.hooks.is_some() {
            // With an interpreter in the master, fork while holding the GIL (so no other
            // thread of Python's is mid-way through anything) and let CPython fix up its state
            // on both sides.
            Python::attach(|py| {
                interpreter::before_fork();
                let forked = sys::fork();
                match forked {
                    Ok(Fork::Child) => {
                        interpreter::after_fork_child();
                        let app = self.preloaded.as_ref().map(|a| a.clone_ref(py));
                        let code = py
                            .detach(|| self.run_worker(slot, ppid, app, max_requests, &mask, age));
                        sys::exit_now(code);
                    }
                    other => {
                        interpreter::after_fork_parent();
                        other
                    }
                }
            })
        } else {
            sys::fork()
        };
        // ANCHOR: spawn-fork
        if !matches!(forked, Ok(Fork::Child)) {
            sys::restore_signals(&mask);
        }
        match forked {
            Ok(Fork::Child) => {
                let code = self.run_worker(slot, ppid, None, max_requests, &mask, age);
                sys::exit_now(code);
            }
            Ok(Fork::Parent(pid)) => {
                self.next_age = age;
                self.workers.insert(
                    pid,
                    WorkerInfo {
                        slot,
                        age,
                        old: false,
                        stopping: false,
                        killed: false,
                        timed_out_at: None,
                        abort_sent: false,
                    },
                );
            }
            Err(e) => crate::error!("Cannot fork a worker: {e}"),
        }
    }
    // ANCHOR_END: spawn-fork

    /// The body of a freshly forked worker.
    fn run_worker(
        &self,
        slot: usize,
        ppid: Pid,
        app: Option<Py<PyAny>>,
        max_requests: u64,
        signal_mask: &sys::SignalMask,
        age: u64,
    ) -> i32 {
        crate::info!("Booting worker with pid: {}", sys::getpid());
        worker::run(worker::Setup {
            board: self.board(slot),
            hooks: self.hooks.as_ref(),
            age,
            settings: &self.settings,
            listeners: &self.listeners,
            heartbeat: self.heartbeat(slot),
            state: self.state(slot),
            busy_threads: self.busy_threads(slot),
            boot_rss: self.boot_rss(slot),
            ppid,
            preloaded: app,
            max_requests,
            signal_mask,
        })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty for spreading restarts.
        let mut x = self.rng | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    // ANCHOR: reap-workers
    /// Collects exited workers. Returns an exit status when the arbiter must halt.
    fn reap_workers(&mut self) -> Option<i32> {
        loop {
            let (pid, exit) = match sys::reap_any() {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => return None,
            };
            // Unknown children (a shell the app started, say) are reaped quietly; the new
            // master of an upgrade is news.
            let Some(info) = self.workers.remove(&pid) else {
                if self.upgrade.reaped(pid, exit) && self.desired == 0 {
                    // WINCH stopped our workers for it; without it, we serve again.
                    crate::info!("Starting this master's workers again");
                    self.desired = self.settings.workers;
                }
                continue;
            };
            self.child_exited(pid, info.age);
            let booted = self.state(info.slot).load(Ordering::Acquire) & slot_state::BOOTED != 0;
            match exit {
                Exit::Code(0) => {}
                Exit::Code(code) => crate::error!("Worker (pid:{pid}) exited with code {code}"),
                Exit::Signal(libc::SIGKILL) if info.killed => {}
                Exit::Signal(libc::SIGKILL) => {
                    crate::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
                }
                Exit::Signal(sig) => crate::error!("Worker (pid:{pid}) was sent signal {sig}!"),
            }
            if booted {
                self.boot_failures = 0;
                continue;
            }
            if let Exit::Code(code @ (APP_LOAD_ERROR | WORKER_BOOT_ERROR)) = exit {
                if !self.ever_booted {
                    return Some(code);
                }
                // Only the generation being started can fail the reload: a worker of one that a
                // later reload already replaced is merely gone.
                if self.reloading && !info.old {
                    crate::error!("New workers failed to boot; the old workers keep serving");
                    self.cancel_reload();
                }
            }
            if !info.stopping {
                self.boot_failures += 1;
                let delay = 100u64 << self.boot_failures.min(7);
                self.spawn_after = sys::monotonic_ms() + delay.min(10_000);
            }
        }
    }
    // ANCHOR_END: reap-workers

    // ANCHOR: murder-workers
    /// Kills workers whose heartbeat is older than `--timeout`, and says why first: which
    /// requests the worker had in the app and for how long (from its board), and the Python
    /// traceback of each of its threads (the worker's `faulthandler` writes them into the error
    /// log on SIGUSR2, from its signal handler, however stuck the threads are). Each timed-out
    /// request gets its access-log line, status 500. A worker with a `worker_abort` hook gets
    /// SIGABRT, as in gunicorn, to run it and exit; SIGKILL follows a second later for one
    /// that is still there (200 ms without the hook).
    fn murder_workers(&mut self) {
        let Some(limit) = self.settings.timeout_ms() else {
            return;
        };
        let now = sys::monotonic_ms();
        // worker_exit runs on the way out of an aborted worker too (see worker::run).
        let abort = self.settings.has_hook("worker_abort") || self.settings.has_hook("worker_exit");
        // Stages after the timeout: the tracebacks (SIGUSR2, written by the worker's signal
        // handler) get TRACEBACK_MS before worker_abort (SIGABRT) may end the worker, and the
        // hook gets ABORT_MS more before SIGKILL; without the hook, SIGKILL follows the dump.
        const TRACEBACK_MS: u64 = 200;
        const ABORT_MS: u64 = 1000;
        let mut timed_out = Vec::new();
        let mut to_abort = Vec::new();
        let mut to_kill = Vec::new();
        for (&pid, info) in &self.workers {
            if info.killed {
                continue;
            }
            match info.timed_out_at {
                Some(at) => {
                    let since = now.saturating_sub(at);
                    if abort && !info.abort_sent && since >= TRACEBACK_MS {
                        to_abort.push(pid);
                    } else if since >= TRACEBACK_MS + if abort { ABORT_MS } else { 0 } {
                        to_kill.push(pid);
                    }
                }
                None => {
                    let beat = self.heartbeat(info.slot).load(Ordering::Acquire);
                    if now.saturating_sub(beat) > limit {
                        timed_out.push(pid);
                    }
                }
            }
        }
        for pid in timed_out {
            crate::critical!("WORKER TIMEOUT (pid:{pid})");
            let Some(info) = self.workers.get_mut(&pid) else {
                continue;
            };
            info.timed_out_at = Some(now);
            let slot = info.slot;
            let board = self.board(slot);
            if self.state(slot).load(Ordering::Acquire) & slot_state::BOOTED == 0 {
                crate::error!("Worker {pid} timed out while booting (loading the app)");
            } else {
                self.explain_timeout(pid, board, now);
            }
            crate::error!("Tracebacks of the threads of worker {pid} (most recent call first):");
            let _ = sys::kill(pid, libc::SIGUSR2);
        }
        for pid in to_abort {
            if let Some(info) = self.workers.get_mut(&pid) {
                info.abort_sent = true;
            }
            let _ = sys::kill(pid, libc::SIGABRT);
        }
        for pid in to_kill {
            if let Some(info) = self.workers.get_mut(&pid) {
                info.killed = true;
            }
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
    // ANCHOR_END: murder-workers

    /// Logs what a timed-out worker was serving, and an access-log line (500) for each request.
    fn explain_timeout(&self, pid: Pid, board: Board, now: u64) {
        let requests = board.in_flight();
        if requests.is_empty() {
            if self.settings.threads > board.threads() {
                crate::error!(
                    "Worker {pid} had no recorded request in the app (requests of threads past \
                     the first {} are not recorded)",
                    board.threads()
                );
            } else {
                crate::error!("Worker {pid} had no request in the app: its loop stopped");
            }
        }
        for r in &requests {
            let secs = now.saturating_sub(r.started) as f64 / 1000.0;
            let from = if r.remote.is_empty() {
                "unix socket"
            } else {
                &r.remote
            };
            crate::error!(
                "Worker {pid} was serving \"{}\" from {from} for {secs:.1} s",
                r.request_line
            );
            if let Some(format) = &self.access {
                let mut parts = r.request_line.splitn(3, ' ');
                let method = parts.next().unwrap_or("-");
                let target = parts.next().unwrap_or("-");
                let protocol = parts.next().unwrap_or("-");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let header = |name: &str| -> Option<&[u8]> {
                    let value = if name.eq_ignore_ascii_case("referer") {
                        &r.referer
                    } else if name.eq_ignore_ascii_case("user-agent") {
                        &r.user_agent
                    } else {
                        return None;
                    };
                    (!value.is_empty()).then_some(value.as_bytes())
                };
                format.log(&crate::log::AccessEntry {
                    remote: &r.remote,
                    remote_port: "",
                    request_line: r.request_line.as_bytes(),
                    method: method.as_bytes(),
                    target: target.as_bytes(),
                    path: path.as_bytes(),
                    query: query.as_bytes(),
                    protocol: if protocol == "HTTP/1.0" {
                        "HTTP/1.0"
                    } else {
                        "HTTP/1.1"
                    },
                    status: 500,
                    body_bytes: 0,
                    elapsed: Duration::from_millis(now.saturating_sub(r.started)),
                    request_header: &header,
                    response_headers: &[],
                });
            }
        }
    }

    /// Starts or retires workers until the number serving is the number wanted.
    fn manage_workers(&mut self) {
        // Note who has booted; finish a reload once the new generation serves.
        for info in self.workers.values() {
            if self.state(info.slot).load(Ordering::Acquire) & slot_state::BOOTED != 0 {
                self.ever_booted = true;
            }
        }
        if self.reloading {
            let new_booted = self
                .workers
                .values()
                .filter(|w| {
                    !w.old
                        && !w.stopping
                        && self.state(w.slot).load(Ordering::Acquire) & slot_state::BOOTED != 0
                })
                .count();
            if new_booted >= self.desired {
                self.reloading = false;
                let old: Vec<Pid> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.old)
                    .map(|(&p, _)| p)
                    .collect();
                for pid in old {
                    self.retire(pid, libc::SIGHUP);
                }
            }
        }

        let serving: Vec<(Pid, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                !w.old
                    && !w.stopping
                    && self.state(w.slot).load(Ordering::Acquire) & slot_state::RETIRING == 0
            })
            .map(|(&pid, w)| (pid, w.age))
            .collect();
        if serving.len() < self.desired {
            if sys::monotonic_ms() < self.spawn_after {
                return;
            }
            // A generation's first worker boots alone, at start-up and after a HUP: an app
            // that cannot load says so once, not N times.
            let booted = |w: &WorkerInfo| {
                self.state(w.slot).load(Ordering::Acquire) & slot_state::BOOTED != 0
            };
            let booting = self.workers.values().any(|w| !w.old && !booted(w));
            let proven = if self.reloading {
                self.workers.values().any(|w| !w.old && booted(w))
            } else {
                self.ever_booted
            };
            let count = if proven {
                self.desired - serving.len()
            } else if booting {
                0
            } else {
                1
            };
            for _ in 0..count {
                self.spawn_worker();
            }
        } else if serving.len() > self.desired {
            let mut by_age = serving;
            by_age.sort_by_key(|&(_, age)| age);
            let extra = by_age.len() - self.desired;
            for &(pid, _) in by_age.iter().take(extra) {
                self.retire(pid, libc::SIGTERM);
            }
        }
        self.announce_ready();
    }

    /// Adds up the busy threads of the workers that serve and hands them to the load watch,
    /// which logs when requests start and stop queueing (see `saturation`).
    fn watch_load(&mut self) {
        let (mut serving, mut busy) = (0u64, 0u64);
        for w in self.workers.values().filter(|w| !w.stopping) {
            if self.state(w.slot).load(Ordering::Acquire) == slot_state::BOOTED {
                serving += 1;
                busy += self.busy_threads(w.slot).load(Ordering::Relaxed);
            }
        }
        let kept = self.workers.values().filter(|w| !w.stopping).count();
        let capacity = serving * self.settings.threads.max(1) as u64;
        self.load.observe(kept, capacity, busy, &self.listeners);
    }

    /// systemd's `READY=1`, owed since start-up or the last HUP, once the wanted number of
    /// workers of the current generation have booted (their listeners watched, the app
    /// imported): from then on a request is served, not merely queued.
    fn announce_ready(&mut self) {
        if !self.ready_owed || self.reloading {
            return;
        }
        let serving = self
            .workers
            .values()
            .filter(|w| {
                !w.old
                    && !w.stopping
                    && self.state(w.slot).load(Ordering::Acquire) & slot_state::BOOTED != 0
            })
            .count();
        if serving >= self.desired {
            self.ready_owed = false;
            self.notifier
                .ready(&format!("{serving} workers serving, pid {}", sys::getpid()));
        }
    }

    /// Asks a worker to finish gracefully.
    fn retire(&mut self, pid: Pid, sig: libc::c_int) {
        if let Some(info) = self.workers.get_mut(&pid) {
            info.stopping = true;
            let _ = sys::kill(pid, sig);
        }
    }

    /// A HUP during a reload replaces it: the generation still booting retires (gracefully,
    /// those that already serve), and the one before it, still serving, waits for the next.
    /// So the workers not on their way out are never more than two generations, which the
    /// slots hold, and a reload that could never finish (an import that hangs until the
    /// timeout kills it) is ended by the next HUP.
    fn abandon_reload(&mut self) {
        crate::info!("Hang up during a reload: the generation still starting is replaced");
        let unfinished: Vec<(Pid, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.old && !w.stopping)
            .map(|(&pid, w)| {
                let booted = self.state(w.slot).load(Ordering::Acquire) & slot_state::BOOTED != 0;
                (pid, booted)
            })
            .collect();
        for (pid, booted) in unfinished {
            self.retire(pid, if booted { libc::SIGHUP } else { libc::SIGTERM });
        }
    }

    fn cancel_reload(&mut self) {
        self.reloading = false;
        // New workers still importing the failed code go too, or they would count as serving
        // and push old ones out.
        let booting: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                !w.old && self.state(w.slot).load(Ordering::Acquire) & slot_state::BOOTED == 0
            })
            .map(|(&pid, _)| pid)
            .collect();
        for pid in booting {
            self.retire(pid, libc::SIGTERM);
        }
        for w in self.workers.values_mut() {
            w.old = false;
        }
    }

    /// HUP: a new generation of workers (re-importing the app unless preloaded), then the old
    /// one retires gracefully once the new one serves.
    fn handle_hup(&mut self) {
        crate::info!("Hang up: Master");
        // RELOADING=1 now, READY=1 when the new generation serves (`announce_ready`); a HUP
        // during start-up or during another reload owes the same READY=1 and says nothing new.
        if !self.ready_owed {
            self.notifier.reloading();
            self.ready_owed = true;
        }
        if self.reloading {
            self.abandon_reload();
        }
        self.reload_settings();
        self.call_hook("on_reload", |py, _| Ok(PyTuple::empty(py)));
        if self.desired == 0 {
            // After WINCH: HUP is the rollback of an upgrade, and brings the workers back.
            self.desired = self.settings.workers;
        }
        for w in self.workers.values_mut() {
            if !w.stopping {
                w.old = true;
            }
        }
        self.reloading = true;
        self.spawn_after = 0;
    }

    /// Reads the command line, `MINIGUN_CMD_ARGS` and the config file again, as gunicorn does on
    /// HUP, so a changed worker count or timeout applies to the new generation. Listeners are
    /// kept: the new workers inherit the sockets that are already bound.
    fn reload_settings(&mut self) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let here = std::env::current_dir().ok();
        // Paths on the command line are relative to where minigun was started.
        if let Some(dir) = &self.start_dir {
            let _ = std::env::set_current_dir(dir);
        }
        let parsed = crate::cli::parse(&args);
        if let Some(dir) = here {
            let _ = std::env::set_current_dir(dir);
        }
        match parsed {
            Ok(crate::cli::Command::Run(new)) => {
                let mut new = *new;
                if new.bind != self.settings.bind {
                    crate::warning!("Changed bind addresses apply only after a restart");
                }
                new.bind = self.settings.bind.clone();
                new.preload_app = self.settings.preload_app;
                new.chdir = self.settings.chdir.clone();
                let _ = crate::log::configure(new.loglevel, None, None);
                if new.has_master_hooks() && self.hooks.is_none() {
                    crate::warning!("Hooks that run in the master apply only after a restart");
                }
                if new.reload != self.settings.reload
                    || new.reload_extra_files != self.settings.reload_extra_files
                {
                    crate::warning!("Changed --reload settings apply only after a restart");
                }
                if new.statsd_host.as_ref().map(|a| a.to_string())
                    != self.settings.statsd_host.as_ref().map(|a| a.to_string())
                    || new.statsd_prefix != self.settings.statsd_prefix
                {
                    crate::warning!("Changed statsd settings apply only after a restart");
                }
                let workers = new.workers;
                self.settings = new;
                // What the master itself does with the settings follows them too.
                self.access = self.settings.access_format();
                self.rss_limit = RssLimit::new(self.settings.max_worker_rss);
                // The config file runs again where it ran before: here, when the master has
                // an interpreter (new hooks, new effects); else in each new worker.
                if self.hooks.is_some() {
                    match Python::attach(|py| Hooks::load(py, &self.settings, sys::getpid())) {
                        Ok(h) => self.hooks = Some(h),
                        Err(msg) => crate::error!(
                            "Cannot run the config file again; keeping its hooks:\n{}",
                            msg.trim_end()
                        ),
                    }
                }
                self.set_desired(workers);
            }
            Ok(crate::cli::Command::Print(_)) => {}
            Err(e) => crate::error!("Keeping the current settings: {e}"),
        }
    }

    /// TTIN: one worker more.
    fn handle_ttin(&mut self) {
        if self.desired < crate::config::MAX_WORKERS {
            self.set_desired(self.desired + 1);
        }
    }

    /// Tells the `child_exit` hook that worker `pid` has been reaped.
    fn child_exited(&self, pid: Pid, age: u64) {
        let master = sys::getpid();
        self.call_hook("child_exit", |py, h| {
            PyTuple::new(
                py,
                [h.server.clone_ref(py), h.new_worker(py, pid, master, age)?],
            )
        });
    }

    /// Changes the number of workers wanted, telling the `nworkers_changed` hook.
    fn set_desired(&mut self, n: usize) {
        let old = self.desired;
        self.desired = n;
        if n != old {
            self.call_hook("nworkers_changed", |py, h| {
                (h.server.clone_ref(py), n, old).into_pyobject(py)
            });
        }
    }

    /// Calls hook `name` when the master has hooks, with the arguments `args` builds (the
    /// `server` object first, for the hooks that take it). False when it raised or called
    /// `sys.exit`.
    fn call_hook(
        &self,
        name: &str,
        args: impl for<'py> FnOnce(Python<'py>, &Hooks) -> PyResult<Bound<'py, PyTuple>>,
    ) -> bool {
        let Some(h) = &self.hooks else {
            return true;
        };
        Python::attach(|py| {
            if !h.has(py, name) {
                return true;
            }
            match args(py, h) {
                Ok(a) if a.is_empty() => h.call(py, name, (h.server.bind(py),)),
                Ok(a) => h.call(py, name, a),
                Err(e) => {
                    crate::error!("Cannot call the {name} hook: {e}");
                    false
                }
            }
        })
    }

    /// TTOU: one worker less (never fewer than one).
    fn handle_ttou(&mut self) {
        if self.desired > 1 {
            self.set_desired(self.desired - 1);
        }
    }

    /// USR1: reopen log files here and in every worker.
    fn handle_usr1(&mut self) {
        crate::log::reopen();
        for &pid in self.workers.keys() {
            let _ = sys::kill(pid, libc::SIGUSR1);
        }
    }

    /// USR2: a new master from the binary on disk, beside this one (see `upgrade`). The
    /// `pre_exec` hook runs first, as gunicorn calls it "just before a new master process is
    /// forked".
    /// A `pre_exec` that raises, or calls `sys.exit`, cancels the upgrade and this master goes
    /// on serving, as in gunicorn, where the hook runs in the forked child that would have
    /// become the new master.
    fn handle_usr2(&mut self) {
        let exit_before = crate::wsgi::hooks::exit_requested();
        if self.upgrade.can_reexec() && !self.call_hook("pre_exec", |py, _| Ok(PyTuple::empty(py)))
        {
            // Its sys.exit is the upgrade's end, not the server's; one another hook asked for
            // before stands.
            crate::wsgi::hooks::restore_exit_request(exit_before);
            crate::error!("Upgrade cancelled: the pre_exec hook failed");
            return;
        }
        self.upgrade
            .reexec(&self.listeners, self.start_dir.as_deref());
    }

    /// WINCH, on the old master of an upgrade: every worker retires gracefully and none is
    /// started again, while this master stays, holding the sockets for a rollback (HUP). The
    /// workers retire as `--max-requests` retires one (HUP to the worker, where gunicorn sends
    /// TERM): each answers its kept-alive connections' next request before closing them, so
    /// no client of the old workers sees a connection closed under a request.
    ///
    /// gunicorn honours WINCH only when daemonized, because a terminal sends it to its
    /// foreground processes whenever its window is resized; minigun has no daemon mode, and
    /// honours it only while a new master it started runs, which no resize can fake.
    fn handle_winch(&mut self) {
        if !self.upgrade.has_child() {
            crate::debug!("SIGWINCH ignored. No new master of an upgrade is running");
            return;
        }
        crate::info!("Graceful stop of workers");
        self.desired = 0;
        self.reloading = false;
        self.reload_pending = false;
        let pids: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.stopping)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in pids {
            self.retire(pid, libc::SIGHUP);
        }
    }

    /// `--max-worker-rss`: retires the largest worker over the limit, one at a time (see
    /// `recycle`).
    fn check_worker_rss(&mut self) {
        if self.rss_limit.is_none() {
            return;
        }
        let candidates: Vec<Candidate> = self
            .workers
            .iter()
            .map(|(&pid, w)| {
                let state = self.state(w.slot).load(Ordering::Acquire);
                Candidate {
                    pid,
                    boot_rss: self.boot_rss(w.slot).load(Ordering::Acquire),
                    serving: !w.old
                        && !w.stopping
                        && state & slot_state::BOOTED != 0
                        && state & slot_state::RETIRING == 0,
                }
            })
            .collect();
        let Some(limit) = self.rss_limit.as_mut() else {
            return;
        };
        let Some((pid, rss)) = limit.pick(&candidates, self.desired) else {
            return;
        };
        crate::info!(
            "Worker (pid:{pid}) has a resident size of {} MiB, over --max-worker-rss {} MiB: \
             replacing it",
            rss >> 20,
            limit.limit_mib()
        );
        self.retire(pid, libc::SIGHUP);
    }

    /// Stops every worker and returns the arbiter's exit status.
    fn stop(&mut self, how: Stop) -> i32 {
        self.notifier.stopping();
        // The listening sockets stop accepting at once, for the workers too (they share them):
        // a load balancer then sees refused connections and goes elsewhere, instead of
        // connections queueing in a backlog nobody will accept from. A unix socket's file goes
        // too, so new clients find nothing there. Not while the other master of an upgrade
        // lives: it accepts from the same sockets.
        let shared = self.upgrade.shares_listeners();
        if let Some(other) = shared {
            crate::info!("Leaving the listening sockets open for the other master (pid: {other})");
        }
        for l in self
            .listeners
            .iter()
            .filter(|l| !l.inherited && shared.is_none())
        {
            sys::stop_listening(l.as_raw_fd());
            if let crate::net::ListenAddr::Unix(path) = &l.addr {
                let _ = std::fs::remove_file(path);
            }
        }
        self.listeners.clear();
        let sig = match how {
            Stop::Graceful => libc::SIGTERM,
            Stop::Fast => libc::SIGQUIT,
        };
        for &pid in self.workers.keys() {
            let _ = sys::kill(pid, sig);
        }
        let limit = match how {
            Stop::Graceful => self.settings.graceful_timeout * 1000,
            Stop::Fast => 2000,
        };
        let deadline = sys::monotonic_ms() + limit;
        while !self.workers.is_empty() && sys::monotonic_ms() < deadline {
            let _ = sys::poll_readable(&[self.signals.fd()], 100);
            for sig in self.signals.drain() {
                if sig == Signal::Quit || (sig == Signal::Int && how == Stop::Graceful) {
                    for &pid in self.workers.keys() {
                        let _ = sys::kill(pid, libc::SIGQUIT);
                    }
                }
            }
            while let Ok(Some((pid, _))) = sys::reap_any() {
                if let Some(info) = self.workers.remove(&pid) {
                    self.child_exited(pid, info.age);
                }
            }
        }
        for &pid in self.workers.keys() {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        let kill_deadline = sys::monotonic_ms() + 1000;
        while !self.workers.is_empty() && sys::monotonic_ms() < kill_deadline {
            match sys::reap_any() {
                Ok(Some((pid, _))) => {
                    self.workers.remove(&pid);
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        crate::info!("Shutting down: Master");
        0
    }

    /// Removes the pid file (wherever an upgrade moved it). The unix socket files we bound went
    /// in `stop`; a `--bind unix:` path is not removed by name here, because with socket
    /// activation that path is systemd's socket, which must outlive us.
    fn cleanup(&mut self) {
        self.upgrade.remove_pidfile();
    }
}
