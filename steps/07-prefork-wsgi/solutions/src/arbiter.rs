//! The master process of step 07 (chapter 7), named after gunicorn's `arbiter.py`, with the
//! answers to exercises 1 (heartbeats, `murder_workers`), 2 (TTIN and TTOU) and 4 (stop
//! listening first, in `stop`).
//!
//! It binds nothing and loads nothing itself: `main.rs` hands it the bound listener and the
//! settings. It forks the workers (`crate::run_worker` is a worker's whole life),
//! sleeps on the self-pipe, reaps and replaces workers that die, and stops them gracefully on
//! SIGTERM or SIGINT.
//!
//! Left out: heartbeats and killing hung workers (`murder_workers`), reload on HUP, and
//! TTIN/TTOU to change the worker count; minigun's `arbiter.rs` has all of them.

use crate::{run_worker, sys, Config, APP_LOAD_ERROR};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// How long the master waits for workers to finish their requests before it kills them.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);

// ANCHOR: arbiter
/// The master process. It never runs Python or accepts a client: it keeps `config.workers`
/// workers alive and turns signals into actions, like gunicorn's `Arbiter`.
pub struct Arbiter {
    /// Bound once, before any fork, so every worker inherits the same listening socket.
    listener: TcpListener,
    /// The settings, `module:app` and `--workers` among them; each worker gets a copy.
    config: Config,
    /// The workers we forked and have not reaped yet, oldest first.
    workers: Vec<Worker>,
    /// Set by the first TERM or INT: the moment we stop waiting and kill what is left.
    stopping: Option<Instant>,
    /// What the master exits with: 0, or APP_LOAD_ERROR when workers could not load the app.
    exit_code: u8,
}
// ANCHOR_END: arbiter

/// One worker, as the master sees it.
struct Worker {
    pid: libc::pid_t,
    /// Exercise 1: the worker touches this file; its modification time is its last sign of
    /// life. The master opened it and unlinked its name, so only the two of them hold it.
    heartbeat: File,
    /// Exercise 2: sent SIGTERM by TTOU (or by a timeout); not counted as serving.
    retiring: bool,
}

/// Exercise 1: a new heartbeat file, already unlinked, so it vanishes with its last holder.
fn heartbeat_file() -> io::Result<File> {
    let path = std::env::temp_dir().join(format!(
        "step07-heartbeat-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let file = File::options().write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

impl Arbiter {
    /// A master for `config.workers` workers, none forked yet (`run` does that).
    pub fn new(listener: TcpListener, config: Config) -> Arbiter {
        let workers = Vec::with_capacity(config.workers);
        Arbiter {
            listener,
            config,
            workers,
            stopping: None,
            exit_code: 0,
        }
    }

    // ANCHOR: arbiter-run
    /// The master's loop: top the workers up, sleep until a signal (or a second) passes,
    /// handle what came. It ends once a stop was asked for and every worker is gone.
    pub fn run(&mut self) -> io::Result<ExitCode> {
        let wake = sys::signal_pipe(&[
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ])?;
        loop {
            self.manage_workers();
            if self.stopping.is_some() && self.workers.is_empty() {
                return Ok(ExitCode::from(self.exit_code));
            }
            match sys::wait_readable(&[wake], Some(Duration::from_secs(1))) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.murder_workers();
            for signal in sys::drain(wake) {
                match signal {
                    // Exercise 2: one worker more, or one fewer (never none).
                    libc::SIGTTIN => self.config.workers += 1,
                    libc::SIGTTOU => self.config.workers = (self.config.workers - 1).max(1),
                    libc::SIGCHLD => {
                        trace!("master: SIGCHLD received");
                        self.reap_workers();
                    }
                    _ => {
                        trace!("master: SIGTERM or SIGINT received");
                        self.stop();
                    }
                }
            }
            if self
                .stopping
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                for worker in &self.workers {
                    log!("[{}] Worker did not stop in time; killing it", worker.pid);
                    let _ = sys::kill(worker.pid, libc::SIGKILL);
                }
            }
        }
    }
    // ANCHOR_END: arbiter-run

    // ANCHOR: manage-workers
    /// Forks workers until there are `--workers` of them (none once we are stopping), and
    /// retires the oldest while there are more (exercise 2).
    fn manage_workers(&mut self) {
        let serving = |workers: &[Worker]| workers.iter().filter(|w| !w.retiring).count();
        while self.stopping.is_none() && serving(&self.workers) > self.config.workers {
            // The oldest goes, as in gunicorn: it has run longest, and grown the most.
            if let Some(oldest) = self.workers.iter_mut().find(|w| !w.retiring) {
                log!("[{}] Retiring the oldest worker", oldest.pid);
                let _ = sys::kill(oldest.pid, libc::SIGTERM);
                oldest.retiring = true;
            }
        }
        while self.stopping.is_none() && serving(&self.workers) < self.config.workers {
            let (running, wanted) = (serving(&self.workers), self.config.workers);
            // Traced before the fork, so it never races with the new worker's own lines.
            trace!("master: {running} of {wanted} workers running, forking one");
            if let Err(e) = self.spawn_worker() {
                log!("fork failed: {e}"); // tried again on the next pass, a second later
                return;
            }
        }
    }
    // ANCHOR_END: manage-workers

    // ANCHOR: spawn-worker
    /// Forks one worker. In the child this never returns: the worker's life is `run_worker`.
    fn spawn_worker(&mut self) -> io::Result<()> {
        let heartbeat = heartbeat_file()?;
        match sys::fork()? {
            sys::Fork::Parent(pid) => self.workers.push(Worker {
                pid,
                heartbeat,
                retiring: false,
            }),
            sys::Fork::Child => run_worker(&self.listener, &self.config, &heartbeat),
        }
        Ok(())
    }
    // ANCHOR_END: spawn-worker

    // ANCHOR: murder-workers
    /// Exercise 1: kills every worker whose heartbeat is older than `--timeout`, the way
    /// gunicorn's `murder_workers` does; `reap_workers` then replaces it as for any death.
    fn murder_workers(&mut self) {
        for worker in &mut self.workers {
            let beat = worker.heartbeat.metadata().and_then(|m| m.modified());
            let silent = beat.ok().and_then(|beat| beat.elapsed().ok());
            if silent.is_some_and(|silent| silent > self.config.timeout) {
                log!(
                    "[{}] WORKER TIMEOUT: no heartbeat for {silent:?}",
                    worker.pid
                );
                let _ = sys::kill(worker.pid, libc::SIGKILL);
            }
        }
    }
    // ANCHOR_END: murder-workers

    // ANCHOR: reap-workers
    /// Collects exited workers; `manage_workers` replaces them on the next pass. A worker
    /// that could not load the app stops the master instead: its replacement would fail the
    /// same way, and we would fork in a loop forever.
    fn reap_workers(&mut self) {
        for (pid, status) in sys::reap_children() {
            self.workers.retain(|worker| worker.pid != pid);
            if status.signal() == Some(libc::SIGKILL) {
                log!("[{pid}] Worker was sent SIGKILL! Perhaps out of memory?");
            } else {
                log!("[{pid}] Worker exited ({status})");
            }
            if status.code() == Some(APP_LOAD_ERROR.into()) && self.stopping.is_none() {
                log!("App failed to load in a worker; shutting down");
                self.exit_code = APP_LOAD_ERROR;
                self.stop();
            }
        }
    }
    // ANCHOR_END: reap-workers

    // ANCHOR: stop
    /// The graceful stop: every worker gets SIGTERM, finishes the request it is serving and
    /// exits; the loop in `run` waits for them, up to GRACEFUL_TIMEOUT.
    fn stop(&mut self) {
        if self.stopping.is_some() {
            return; // a second TERM or INT changes nothing
        }
        log!("Shutting down: waiting for {} workers", self.workers.len());
        self.stopping = Some(Instant::now() + GRACEFUL_TIMEOUT);
        for worker in &self.workers {
            let _ = sys::kill(worker.pid, libc::SIGTERM);
        }
        // Exercise 4: no new connection from now on. Dropping our copy of the listener would
        // not do it (every worker holds one); shutting the socket down does, for all copies.
        // After the kills, so that idle workers see their SIGTERM rather than a dead listener.
        if let Err(e) = sys::stop_listening(&self.listener) {
            log!("cannot stop listening: {e}");
        }
    }
    // ANCHOR_END: stop
}
