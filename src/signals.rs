//! Signals, the self-pipe way.
//!
//! A handler may only do async-signal-safe things (signal-safety(7)), so ours does one: it
//! writes the signal's number as a byte into a pipe. The arbiter's loop and each worker's event
//! loop watch the read end like any other descriptor and act on the bytes in normal code, where
//! logging, allocating and calling Python are allowed. This is gunicorn's `SIG_QUEUE` plus
//! wakeup pipe, without the queue: the pipe is the queue.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::sys;

/// The signals minigun reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Graceful stop.
    Term,
    /// Graceful stop (Ctrl+C).
    Int,
    /// Fast stop.
    Quit,
    /// Reload: new workers, old ones retired gracefully.
    Hup,
    /// One worker more.
    Ttin,
    /// One worker less.
    Ttou,
    /// Reopen log files.
    Usr1,
    /// Binary upgrade: start a new master from the executable on disk (see `upgrade`).
    Usr2,
    /// Old master of an upgrade: retire every worker and start none.
    Winch,
    /// A child exited.
    Chld,
}

impl Signal {
    /// The libc signal number.
    pub fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Hup => libc::SIGHUP,
            Signal::Ttin => libc::SIGTTIN,
            Signal::Ttou => libc::SIGTTOU,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Winch => libc::SIGWINCH,
            Signal::Chld => libc::SIGCHLD,
        }
    }

    /// Every signal minigun handles; the arbiter listens to all of them.
    pub const ALL: [Signal; 10] = [
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Ttin,
        Signal::Ttou,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Winch,
        Signal::Chld,
    ];

    /// The signal for a number written into the pipe.
    pub fn from_number(n: libc::c_int) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.number() == n)
    }

    /// The lower-case name gunicorn logs (`Handling signal: term`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "term",
            Signal::Int => "int",
            Signal::Quit => "quit",
            Signal::Hup => "hup",
            Signal::Ttin => "ttin",
            Signal::Ttou => "ttou",
            Signal::Usr1 => "usr1",
            Signal::Usr2 => "usr2",
            Signal::Winch => "winch",
            Signal::Chld => "chld",
        }
    }
}

/// The write end of the current process's self-pipe, for the handler.
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        sys::signal_safe_write_byte(fd, sig as u8);
    }
}

/// The write end of the worker's abort pipe: SIGABRT (the arbiter's "you timed out") goes to a
/// thread of its own, since the event loop's threads may all be stuck in the app.
static ABORT_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_abort(sig: libc::c_int) {
    let fd = ABORT_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        sys::signal_safe_write_byte(fd, sig as u8);
    }
}

/// Routes SIGABRT into a new pipe and returns its read end, for a thread that waits on it.
pub fn install_abort_pipe() -> io::Result<OwnedFd> {
    let (read, write) = sys::pipe()?;
    // The write end lives as long as the process: the handler may fire at any time.
    ABORT_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write);
    sys::set_handler(libc::SIGABRT, on_abort)?;
    Ok(read)
}

/// The read end of the self-pipe, owned by the loop that watches it.
pub struct SignalPipe {
    read: OwnedFd,
    /// Kept open for the handler; closed (with the pipe) when this is dropped.
    _write: OwnedFd,
}

impl SignalPipe {
    /// Creates the pipe and routes `signals` into it. Replaces any earlier pipe of this process
    /// (a forked worker makes its own, so it never wakes the arbiter).
    pub fn install(signals: &[Signal]) -> io::Result<SignalPipe> {
        let (read, write) = sys::pipe()?;
        PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        for s in signals {
            sys::set_handler(s.number(), on_signal)?;
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Takes every pending signal, in arrival order.
    pub fn drain(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = sys::read(self.read.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::from_number(b as libc::c_int)),
            );
        }
        out
    }
}
