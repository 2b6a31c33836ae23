//! The master process of step 07 (chapter 7), named after gunicorn's `arbiter.py`.
//!
//! It binds nothing and loads nothing itself: `main.rs` hands it the bound listener and the
//! settings. It forks the workers (`crate::run_worker` is a worker's whole life),
//! sleeps on the self-pipe, reaps and replaces workers that die, and stops them gracefully on
//! SIGTERM or SIGINT.
//!
//! Left out: heartbeats and killing hung workers (`murder_workers`), reload on HUP, and
//! TTIN/TTOU to change the worker count; minigun's `arbiter.rs` has all of them.

use crate::{run_worker, sys, Config, APP_LOAD_ERROR};
use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// Pids of the workers we forked and have not reaped yet.
    workers: Vec<libc::pid_t>,
    /// Set by the first TERM or INT: the moment we stop waiting and kill what is left.
    stopping: Option<Instant>,
    /// What the master exits with: 0, or APP_LOAD_ERROR when workers could not load the app.
    exit_code: u8,
}
// ANCHOR_END: arbiter

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
        let wake = sys::signal_pipe(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT])?;
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
            for signal in sys::drain(wake) {
                match signal {
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
                for &pid in &self.workers {
                    log!("[{pid}] Worker did not stop in time; killing it");
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    // ANCHOR_END: arbiter-run

    // ANCHOR: manage-workers
    /// Forks workers until there are `--workers` of them (none once we are stopping).
    fn manage_workers(&mut self) {
        while self.stopping.is_none() && self.workers.len() < self.config.workers {
            let (running, wanted) = (self.workers.len(), self.config.workers);
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
        match sys::fork()? {
            sys::Fork::Parent(pid) => self.workers.push(pid),
            sys::Fork::Child => run_worker(&self.listener, &self.config),
        }
        Ok(())
    }
    // ANCHOR_END: spawn-worker

    // ANCHOR: reap-workers
    /// Collects exited workers; `manage_workers` replaces them on the next pass. A worker
    /// that could not load the app stops the master instead: its replacement would fail the
    /// same way, and we would fork in a loop forever.
    fn reap_workers(&mut self) {
        for (pid, status) in sys::reap_children() {
            self.workers.retain(|&worker| worker != pid);
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
        for &pid in &self.workers {
            let _ = sys::kill(pid, libc::SIGTERM);
        }
    }
    // ANCHOR_END: stop
}
