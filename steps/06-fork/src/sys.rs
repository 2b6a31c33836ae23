//! The only `unsafe` code of step 06: starting CPython (chapter 5), and fork, waitpid and a
//! SIGCHLD handler (chapter 6).
//!
//! pyo3 could start the interpreter for us, but then we could not tell CPython which `python`
//! it stands in for. That choice decides `sys.prefix`, and so which site-packages (and which
//! Flask) the app can import. Everything here goes through `pyo3::ffi`, the raw C API.
//!
//! Left out: only SIGCHLD is handled; step 07 adds SIGTERM and SIGINT for a graceful stop.

use pyo3::ffi;
use pyo3::Python;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

// ANCHOR: init-python
/// Starts CPython as if `executable` had been run, then releases the GIL.
///
/// With `$VIRTUAL_ENV/bin/python` as the executable, CPython's start-up finds the venv's
/// `pyvenv.cfg` beside it and puts the venv's site-packages on `sys.path`, exactly as for a
/// gunicorn installed in that venv. Call once, from the main thread, before any
/// `Python::attach`.
pub fn init_python(executable: &str) -> Result<(), String> {
    let exe = CString::new(executable).map_err(|_| format!("bad python path {executable:?}"))?;
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    let config = config.as_mut_ptr();
    // SAFETY: `config` points to writable memory the size of a PyConfig; InitPythonConfig
    // fills every field before anything reads one.
    unsafe { ffi::PyConfig_InitPythonConfig(config) };
    // SAFETY: the struct was initialised just above; we write a plain int field. Our own
    // signal handlers (steps 06 and 07) must not be replaced by Python's.
    unsafe { (*config).install_signal_handlers = 0 };
    let mut status = ffi::PyStatus {
        _type: ffi::_PyStatus_TYPE::_PyStatus_TYPE_OK,
        func: std::ptr::null(),
        err_msg: std::ptr::null(),
        exitcode: 0,
    };
    if !executable.is_empty() {
        // SAFETY: both pointers point into the initialised `config`; `exe` is NUL-terminated
        // and CPython copies it, so it only has to live for the call.
        status = unsafe {
            ffi::PyConfig_SetBytesString(config, &raw mut (*config).executable, exe.as_ptr())
        };
    }
    // SAFETY: PyStatus_Exception only inspects the struct passed by value.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        // SAFETY: `config` is initialised; Py_InitializeFromConfig only reads it.
        status = unsafe { ffi::Py_InitializeFromConfig(config) };
    }
    // SAFETY: `config` is initialised and not used again; Clear frees the strings it owns.
    unsafe { ffi::PyConfig_Clear(config) };
    // SAFETY: PyStatus_Exception only inspects the struct passed by value.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        return Err(status_message(&status));
    }
    // SAFETY: the interpreter is initialised and this thread holds the GIL (start-up leaves
    // it held); we give it up so that any thread, this one included, can `Python::attach`.
    unsafe { ffi::PyEval_SaveThread() };
    Ok(())
}
// ANCHOR_END: init-python

/// Turns a failed `PyStatus` into text for the error message.
fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "Python failed to start".to_string();
    }
    // SAFETY: a non-null `err_msg` is a static NUL-terminated C string set by CPython.
    let msg = unsafe { CStr::from_ptr(status.err_msg) };
    format!("Python failed to start: {}", msg.to_string_lossy())
}

/// Which side of a `fork` we are on.
pub enum Fork {
    /// The original process. It needs no pid in this step: `waitpid(-1, ..)` reaps any child.
    Parent,
    /// The copy.
    Child,
}

// ANCHOR: fork
/// Forks this process, following the protocol CPython's own `os.fork()` uses.
///
/// The interpreter has locks of its own (the GIL, the import lock, allocator locks). A child
/// only gets a copy of the thread that called fork, so any lock another thread held at that
/// moment stays locked forever in the child. `PyOS_BeforeFork` takes those locks, so that
/// they are in a known state at the fork; each side then runs its half of the after-fork hooks
/// (`PyOS_AfterFork_Child` also makes this thread the only thread the child's interpreter
/// knows about).
pub fn fork_with_python() -> io::Result<Fork> {
    Python::attach(|_py| {
        // SAFETY: the interpreter is running and this thread holds the GIL (we are inside
        // `attach`), which is what PyOS_BeforeFork requires.
        unsafe { ffi::PyOS_BeforeFork() };
        // SAFETY: this process runs no other threads (step 06 has no pool), and the GIL and
        // the interpreter's locks are held by this thread, so the child's copy of every lock
        // is in a state its only thread can undo.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: we are the child of a fork taken after PyOS_BeforeFork, with the GIL.
            unsafe { ffi::PyOS_AfterFork_Child() };
            return Ok(Fork::Child);
        }
        let result = match pid {
            -1 => Err(io::Error::last_os_error()),
            _ => Ok(Fork::Parent),
        };
        // SAFETY: we are the parent (or fork failed) after PyOS_BeforeFork, with the GIL.
        unsafe { ffi::PyOS_AfterFork_Parent() };
        result
    })
}
// ANCHOR_END: fork

/// Ends a forked child at once, without running exit handlers or flushing C stdio buffers
/// that were copied from the parent (they would be written twice).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit(2) ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}

// ANCHOR: reap
/// Collects every child that has exited, returning each pid with how it ended.
///
/// One SIGCHLD may stand for several exits (signals of one kind do not queue), so we loop
/// until `waitpid` says nobody else is waiting. Until a child is collected like this, the
/// kernel keeps its pid and exit status around: the child is a zombie.
pub fn reap_children() -> Vec<(libc::pid_t, ExitStatus)> {
    let mut reaped = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid place for waitpid(2) to write an int; WNOHANG makes it
        // return 0 instead of blocking when children exist but none has exited.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped; // 0: none exited yet; -1 with ECHILD: no children at all
        }
        reaped.push((pid, ExitStatus::from_raw(status)));
    }
}
// ANCHOR_END: reap

// ANCHOR: self-pipe
/// The write end of the self-pipe, for the signal handler (it cannot take arguments).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Makes each of `signals` write its number, as one byte, into a new pipe, and returns the
/// pipe's read end. A loop can then wait for "a signal came" and "a client came" in one
/// `poll`: the self-pipe trick.
///
/// The handler runs between any two instructions of the main program, so it may only call
/// async-signal-safe functions (signal-safety(7)): no allocation, no locks, no Python.
pub fn signal_pipe(signals: &[libc::c_int]) -> io::Result<RawFd> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2(2) writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    WAKE_FD.store(fds[1], Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags) that we then fill.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SA_RESTART: a signal must not make an unrelated read or write fail with EINTR.
    // SA_NOCLDSTOP: we only care about children that exit, not ones that are stopped.
    action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
    for &signal in signals {
        // SAFETY: `action` is initialised and `on_signal` only does async-signal-safe work.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fds[0])
}

/// The signal handler: one byte into the pipe. errno is saved and restored because the
/// interrupted code may be about to read it.
extern "C" fn on_signal(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: __errno_location returns this thread's errno slot; write(2) is async-signal-
    // safe, and a full non-blocking pipe just drops the byte (a wake-up is already pending).
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(WAKE_FD.load(Ordering::Relaxed), (&raw const byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}
// ANCHOR_END: self-pipe

// ANCHOR: wait-readable
/// Blocks until one of `fds` is readable, or `timeout` passes, and says which ones are.
pub fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs that poll(2) updates.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, millis) };
    if n == -1 {
        return Err(io::Error::last_os_error()); // EINTR included: the caller just loops
    }
    Ok(polls.iter().map(|p| p.revents != 0).collect())
}
// ANCHOR_END: wait-readable

/// Empties the self-pipe, so the next `poll` waits for a new signal, and returns the
/// numbers of the signals that arrived.
pub fn drain(fd: RawFd) -> Vec<libc::c_int> {
    let mut signals = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is writable for its length; the pipe is non-blocking, so this stops
        // with EAGAIN once it is empty.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return signals;
        }
        signals.extend(buf[..n as usize].iter().map(|&b| libc::c_int::from(b)));
    }
}
