//! Thin, safe wrappers over the libc calls minigun needs.
//!
//! This is the only module of the crate with `unsafe` (besides the interpreter start-up in
//! `wsgi::interpreter`, which has to speak CPython's C API). Each wrapper checks the return
//! value, turns `-1` into `io::Error::last_os_error()`, and states in a `// SAFETY:` line why the
//! call cannot touch memory it does not own. Callers never see a raw pointer.

use std::ffi::CString;
use std::io::{self, IoSlice};
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A process id, as returned by `fork` and `waitpid`.
pub type Pid = libc::pid_t;

/// Turns a `-1` return into the `errno` error, anything else into `Ok`.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Same as [`check`], for calls that return `ssize_t`.
fn check_size(rc: libc::ssize_t) -> io::Result<usize> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Which side of a `fork` we are on.
pub enum Fork {
    /// In the new process.
    Child,
    /// In the parent; the child's pid.
    Parent(Pid),
}

/// Forks the process.
///
/// Only the calling thread survives in the child, so the caller must not hold locks another
/// thread could own: the arbiter starts no threads at all, which is why it may call this.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: fork(2) takes no pointers. The arbiter that calls it is single-threaded, so the
    // child cannot inherit a lock held by a thread that no longer exists.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Reaps one exited child without blocking; `None` when no child has exited.
pub fn reap_any() -> io::Result<Option<(Pid, Exit)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable c_int for the duration of the call.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    if pid == 0 {
        return Ok(None);
    }
    let exit = if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    };
    Ok(Some((pid, exit)))
}

/// Sends `sig` to `pid`.
pub fn kill(pid: Pid, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) reads no memory of ours. Callers pass pids of their own children that have
    // not been reaped yet, so the pid cannot name a recycled, unrelated process.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// This process's id.
pub fn getpid() -> Pid {
    // SAFETY: getpid(2) cannot fail and takes no arguments.
    unsafe { libc::getpid() }
}

/// The parent's pid: a worker whose parent changed has lost its arbiter and must exit.
pub fn getppid() -> Pid {
    // SAFETY: getppid(2) cannot fail and takes no arguments.
    unsafe { libc::getppid() }
}

/// Leaves the process at once with `code`, running no destructors or atexit handlers.
///
/// A forked worker ends this way so that it never runs the arbiter's cleanup by accident.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Resident set size of process `pid` in bytes, from `/proc/PID/statm`: what `ps` and `top`
/// show as RSS, shared pages (the interpreter's library, pages a `--preload` master shares)
/// included. `None` once the process is gone.
pub fn rss_of(pid: Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes an integer name.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(page.max(4096) as u64))
}

/// Makes `command` keep the descriptors `fds` open across its `exec`: they are close-on-exec
/// everywhere else (so no worker, app subprocess or earlier child inherits them), and only the
/// child that is about to become the new master clears the flag, between its fork and exec.
pub fn keep_across_exec(command: &mut std::process::Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it calls fcntl(2), which is one, and allocates nothing (the vector was
    // built before the fork and is only read). The descriptors are the arbiter's listeners,
    // open for the whole life of the arbiter.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Sets the file-mode creation mask, returning the old one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask(2) cannot fail and reads no memory.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Changes the real and effective group id (privilege drop, done before the user id).
pub fn setgid(gid: u32) -> io::Result<()> {
    // SAFETY: setgid(2) takes a plain integer.
    check(unsafe { libc::setgid(gid) }).map(drop)
}

/// Changes the real and effective user id.
pub fn setuid(uid: u32) -> io::Result<()> {
    // SAFETY: setuid(2) takes a plain integer.
    check(unsafe { libc::setuid(uid) }).map(drop)
}

/// Sets the supplementary groups (privilege drop: a worker must not keep root's groups).
pub fn setgroups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`, which outlives the call; gid_t is u32.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }).map(drop)
}

/// The primary group of a user id, from the password database.
pub fn primary_gid(uid: u32) -> Option<u32> {
    // SAFETY: getpwuid returns a pointer into static storage that we read at once; the arbiter
    // and a freshly forked worker are single-threaded when they call this.
    let pw = unsafe { libc::getpwuid(uid) };
    // SAFETY: a non-null result points at a valid passwd record.
    NonNull::new(pw).map(|pw| unsafe { pw.as_ref().pw_gid })
}

/// The real and effective user and group ids, and the supplementary groups.
pub struct Ids {
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Real group id.
    pub gid: u32,
    /// Effective group id.
    pub egid: u32,
    /// Supplementary groups; `None` when they cannot be read.
    pub groups: Option<Vec<u32>>,
}

/// This process's [`Ids`].
pub fn ids() -> Ids {
    // SAFETY: with a size of 0, getgroups(2) only returns the count and writes nothing.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let groups = usize::try_from(count).ok().and_then(|count| {
        let mut groups = vec![0 as libc::gid_t; count];
        // SAFETY: the pointer and length describe `groups`; getgroups(2) writes at most that
        // many, and fails (EINVAL) rather than overflow if the groups grew meanwhile.
        let n = unsafe { libc::getgroups(count as libc::c_int, groups.as_mut_ptr()) };
        let n = usize::try_from(n).ok()?;
        groups.truncate(n);
        Some(groups)
    });
    // SAFETY: the get*id(2) calls cannot fail and read no memory of ours.
    unsafe {
        Ids {
            uid: libc::getuid(),
            euid: libc::geteuid(),
            gid: libc::getgid(),
            egid: libc::getegid(),
            groups,
        }
    }
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() }
}

/// Looks up a user by name, returning `(uid, primary gid)`.
pub fn user_by_name(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: `cname` is NUL-terminated and outlives the call. getpwnam returns a pointer into
    // static storage that we read at once, before any other call could overwrite it; the arbiter
    // is single-threaded when it calls this.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    // SAFETY: a non-null result points at a valid passwd record (see above).
    NonNull::new(pw).map(|pw| unsafe { (pw.as_ref().pw_uid, pw.as_ref().pw_gid) })
}

/// Looks up a group by name.
pub fn group_by_name(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: as in `user_by_name`: a NUL-terminated name, a static result read at once.
    let gr = unsafe { libc::getgrnam(cname.as_ptr()) };
    // SAFETY: a non-null result points at a valid group record.
    NonNull::new(gr).map(|gr| unsafe { gr.as_ref().gr_gid })
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// Installs `handler` for `sig`, with `SA_RESTART`: a read or write the signal interrupts is
/// restarted by the kernel instead of failing with `EINTR`. Calls the kernel never restarts
/// (poll, epoll_wait, and any call with a timeout) still return `EINTR`, which every loop in
/// the crate treats as "again" (see `client`).
///
/// The handler must be async-signal-safe (signal-safety(7)): minigun's handlers only `write`
/// one byte to a pipe, and save and restore `errno` around it.
pub fn set_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset_t we own.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised and outlives the call; the old action is not asked for.
    check(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) }).map(drop)
}

/// The signal mask of the calling thread, as saved by [`block_all_signals`].
pub struct SignalMask(libc::sigset_t);

/// Blocks every signal in the calling thread and returns the mask to restore. The arbiter
/// forks with signals blocked, so a signal sent to a new worker before the worker has its own
/// self-pipe waits, pending, instead of running the arbiter's handler in the child (which
/// would write into the arbiter's pipe).
pub fn block_all_signals() -> SignalMask {
    // SAFETY: all-zero sigset_t values are valid buffers for sigfillset and sigprocmask to fill.
    let mut all: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { mem::zeroed() };
    // SAFETY: `all` and `old` are valid sigset_t values we own, for the duration of the calls.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    SignalMask(old)
}

/// Restores a mask saved by [`block_all_signals`]; signals that arrived meanwhile are delivered
/// now, to the handlers installed by then.
pub fn restore_signals(mask: &SignalMask) {
    // SAFETY: `mask.0` is a valid sigset_t filled by pthread_sigmask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) };
}

/// Makes `sig` ignored (`SIG_IGN`).
pub fn ignore_signal(sig: libc::c_int) -> io::Result<()> {
    set_disposition(sig, libc::SIG_IGN)
}

/// Restores the default action of `sig` (`SIG_DFL`).
pub fn default_signal(sig: libc::c_int) -> io::Result<()> {
    set_disposition(sig, libc::SIG_DFL)
}

fn set_disposition(sig: libc::c_int, disposition: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = disposition;
    // SAFETY: `action` is initialised and outlives the call.
    check(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) }).map(drop)
}

/// Writes one byte to `fd` from a signal handler: `write(2)` is async-signal-safe, and errors
/// (a full pipe means a wake-up is already pending) are deliberately ignored. `errno` is saved
/// and restored: the handler may interrupt code that is about to read it.
pub fn signal_safe_write_byte(fd: RawFd, byte: u8) {
    let buf = [byte];
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life;
    // `buf` is a valid one-byte buffer for the duration of the write.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(fd, buf.as_ptr().cast(), 1);
        *errno = saved;
    }
}

// ---------------------------------------------------------------------------------------------
// File descriptors
// ---------------------------------------------------------------------------------------------

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes an integer argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// Sets or clears `FD_CLOEXEC`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD takes no pointer argument.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: F_SETFD takes an integer argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }).map(drop)
}

/// Makes `target` refer to the file `new` refers to, then closes `new` (log reopening).
pub fn dup2_and_close(new: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2(2) and close(2) take plain integers; `new` is a descriptor we opened and own,
    // `target` one of our log descriptors.
    let rc = unsafe { libc::dup2(new, target) };
    // SAFETY: as above; `new` is not used again.
    unsafe { libc::close(new) };
    check(rc).map(drop)
}

/// `read(2)` into `buf`; `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    check_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// `read(2)` of at most `max` bytes into the spare capacity of `buf`, growing its length by what
/// was read. Unlike reading into a zero-filled slice, this never touches bytes the kernel is
/// about to overwrite.
pub fn read_into_spare(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = &mut buf.spare_capacity_mut()[..max];
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes; read(2) writes at most that
    // many and reports how many.
    let n = check_size(unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) })?;
    // SAFETY: the kernel initialised the first `n` spare bytes (n <= spare.len()).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `write(2)` of `buf`; may write less than all of it.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes. MSG_NOSIGNAL is not available for
    // write(2), so processes ignore SIGPIPE instead (see `arbiter`).
    check_size(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// `writev(2)`: gathers several buffers into one system call (head and body in one packet).
pub fn writev(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let count = bufs.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
    // SAFETY: IoSlice is guaranteed ABI-compatible with iovec, and every slice is valid for reads
    // for the duration of the call.
    check_size(unsafe { libc::writev(fd, bufs.as_ptr().cast(), count) })
}

/// `sendfile(2)`: copies up to `count` bytes of `file` from `offset` to `socket` in the kernel.
pub fn sendfile(socket: RawFd, file: RawFd, offset: &mut i64, count: usize) -> io::Result<usize> {
    // SAFETY: `offset` is a valid, writable off_t; the kernel updates it by the bytes sent.
    check_size(unsafe { libc::sendfile(socket, file, offset, count) })
}

/// Creates an anonymous temporary file in `dir`: opened read-write and close-on-exec, with no
/// name (O_TMPFILE), so it disappears with its last descriptor even if the process is killed.
/// Falls back to a named file that is unlinked at once where the file system has no O_TMPFILE.
pub fn anonymous_file(dir: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let cdir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `cdir` is NUL-terminated and outlives the call; the mode is a plain integer.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC | libc::O_EXCL,
            0o600 as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: open returned a new descriptor that nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut template = dir.as_os_str().as_bytes().to_vec();
    template.extend_from_slice(b"/minigun-body-XXXXXX\0");
    // SAFETY: `template` is a writable, NUL-terminated buffer ending in six X, as mkostemp
    // requires; it replaces the X in place.
    let fd = check(unsafe { libc::mkostemp(template.as_mut_ptr().cast(), libc::O_CLOEXEC) })?;
    // SAFETY: mkostemp returned a new descriptor that nobody else owns.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `template` now holds the NUL-terminated name mkostemp created.
    unsafe { libc::unlink(template.as_ptr().cast()) };
    Ok(file)
}

/// Writes all of `data` to a regular file at `offset`.
pub fn pwrite_all(fd: RawFd, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of `data.len()` bytes for the duration of the call.
        let rc = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset as i64) };
        match check_size(rc) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads from a regular file at `offset` into `buf`, as much as is there (short only at the
/// end of the file).
pub fn pread_full(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes for the duration of the call.
        let rc = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + done as u64) as i64,
            )
        };
        match check_size(rc) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The size of the file behind `fd`, or `None` when it is not a regular file.
pub fn regular_file_size(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        return None;
    }
    ((st.st_mode & libc::S_IFMT) == libc::S_IFREG).then_some(st.st_size as u64)
}

/// Which readiness `poll_one` waits for.
#[derive(Clone, Copy)]
pub enum Ready {
    /// Bytes to read (or end of file).
    Read,
    /// Room in the send buffer.
    Write,
}

/// Waits until `fd` is ready or `timeout_ms` passes; `Ok(false)` on timeout.
///
/// A signal ends the wait early with `Interrupted` (poll(2) is never restarted, `SA_RESTART` or
/// not): the caller waits again against its own deadline. Error and hang-up conditions count as
/// ready: the following read or write reports them.
pub fn poll_one(fd: RawFd, ready: Ready, timeout_ms: i32) -> io::Result<bool> {
    let events = match ready {
        Ready::Read => libc::POLLIN,
        Ready::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd, matching the count of 1.
    let n = check(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
    Ok(n > 0)
}

/// Waits for any of `fds` to become readable, for up to `timeout_ms`. Used by the arbiter's
/// sleep. Returns `Ok(())` on readiness, timeout or `EINTR` alike: the caller rechecks state.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` holds `pfds.len()` valid pollfd structs.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    match check(rc) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// Where a connection came from.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A client on a unix socket (they have no useful address).
    Unix,
}

/// Converts a filled `sockaddr_storage` into a [`Peer`].
fn peer_from_storage(storage: &libc::sockaddr_storage) -> Peer {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large enough
            // and suitably aligned for every sockaddr type.
            let sin: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Peer::Tcp(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6 (see above).
            let sin6: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Peer::Tcp(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Peer::Unix,
    }
}

/// Accepts one connection as a non-blocking, close-on-exec socket.
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, Peer)> {
    // SAFETY: an all-zero sockaddr_storage is a valid buffer.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` are valid and describe a buffer of `len` bytes.
    let fd = check(unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 returned a new descriptor that nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((fd, peer_from_storage(&storage)))
}

/// The local address a socket is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<Peer> {
    // SAFETY: an all-zero sockaddr_storage is a valid buffer.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` describe a writable buffer of `len` bytes.
    check(unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    Ok(peer_from_storage(&storage))
}

/// Sets an integer socket option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int and the length passed matches it.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads an integer socket option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` describe a writable c_int.
    check(unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) })?;
    Ok(value)
}

/// Creates a TCP listener bound to `addr` with `SO_REUSEADDR` and the given backlog.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let fd = socket(family)?;
    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: an all-zero sockaddr_in is a valid value that we then fill in.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: `sin` is a complete sockaddr_in and the length matches it.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: an all-zero sockaddr_in6 is a valid value that we then fill in.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: `sin6` is a complete sockaddr_in6 and the length matches it.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    check(rc)?;
    // Linux copies TCP_NODELAY from the listener to each accepted socket, which saves a
    // setsockopt per connection (the worker checks that it did, see `worker::accept`).
    setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    listen(fd.as_raw_fd(), backlog)?;
    Ok(fd)
}

/// Creates a unix-domain stream listener at `path` with the given backlog.
pub fn unix_listener(path: &str, backlog: i32) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sockaddr_un is valid; we fill in the family and path.
    let mut sun: libc::sockaddr_un = unsafe { mem::zeroed() };
    let bytes = path.as_bytes();
    if bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket path too long or contains NUL",
        ));
    }
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let fd = socket(libc::AF_UNIX)?;
    // SAFETY: `sun` is a complete sockaddr_un (NUL-terminated path) and the length matches it.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sun as *const libc::sockaddr_un).cast(),
            mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    })?;
    listen(fd.as_raw_fd(), backlog)?;
    Ok(fd)
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket returned a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) takes plain integers.
    check(unsafe { libc::listen(fd, backlog) }).map(drop)
}

/// Takes ownership of an inherited descriptor (`fd://N`, systemd's LISTEN_FDS) after checking
/// that it is an open socket.
pub fn inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    let kind = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    if kind != libc::SOCK_STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a stream socket",
        ));
    }
    set_cloexec(fd, true)?;
    // SAFETY: the descriptor is open (getsockopt succeeded) and was handed to us to own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An eventfd: a counter one thread bumps to wake another out of epoll_wait.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes plain integers.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: eventfd returned a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// The descriptor to watch.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wakes whoever watches it. A full counter means a wake-up is pending anyway.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: `one` is a valid 8-byte buffer for the duration of the call.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter after a wake-up.
    pub fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: `n` is a valid, writable 8-byte buffer for the duration of the call.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// An inotify instance (inotify(7)): the kernel reports changes in the directories it watches
/// as events read from one descriptor, which the arbiter polls with its signal pipe.
pub struct Inotify {
    fd: OwnedFd,
}

/// One inotify event: which watch, what happened, and the name of the entry in the watched
/// directory (empty for events about the directory itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyEvent {
    /// The watch descriptor `add_watch` returned.
    pub wd: i32,
    /// `IN_CLOSE_WRITE`, `IN_MOVED_TO`, … as reported.
    pub mask: u32,
    /// The file's name inside the directory, without the kernel's NUL padding.
    pub name: std::ffi::OsString,
}

impl Inotify {
    /// A non-blocking, close-on-exec inotify instance.
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1(2) takes a flag integer.
        let fd = check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: inotify_init1 returned a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Watches `path` for the events in `mask`; returns the watch descriptor (the same one for
    /// a path watched twice).
    pub fn add_watch(&self, path: &std::path::Path, mask: u32) -> io::Result<i32> {
        use std::os::unix::ffi::OsStrExt;
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: `cpath` is NUL-terminated and outlives the call.
        check(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), cpath.as_ptr(), mask) })
    }

    /// Reads every event waiting (none when nothing happened: the descriptor is non-blocking).
    pub fn read_events(&self) -> Vec<InotifyEvent> {
        let mut events = Vec::new();
        // Room for many events at once; the kernel never splits one across reads.
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = read(self.fd.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            parse_inotify_events(&buf[..n], &mut events);
        }
        events
    }
}

/// Decodes `struct inotify_event` records (inotify(7)): `wd` (i32), `mask`, `cookie` and `len`
/// (u32 each), then `len` bytes of NUL-padded name. Parsed field by field from the bytes, so
/// no pointer into the buffer is needed; a truncated record ends the parse.
pub fn parse_inotify_events(mut buf: &[u8], out: &mut Vec<InotifyEvent>) {
    use std::os::unix::ffi::OsStrExt;
    const HEAD: usize = 16;
    let word = |b: &[u8], at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
    while buf.len() >= HEAD {
        let wd = i32::from_ne_bytes(word(buf, 0));
        let mask = u32::from_ne_bytes(word(buf, 4));
        let len = u32::from_ne_bytes(word(buf, 12)) as usize;
        let Some(name) = buf.get(HEAD..HEAD + len) else {
            break;
        };
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        out.push(InotifyEvent {
            wd,
            mask,
            name: std::ffi::OsStr::from_bytes(name).to_owned(),
        });
        buf = &buf[HEAD + len..];
    }
}

/// The soft limit on open files (how many descriptors this process may hold).
pub fn open_files_limit() -> u64 {
    // SAFETY: an all-zero rlimit is a valid buffer for getrlimit to fill.
    let mut limit: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == -1 {
        return 1024;
    }
    limit.rlim_cur as u64
}

/// Raises the soft limit on open files to the hard limit, and returns the new soft limit. A
/// worker holds a descriptor per connection and one per spooled request body, and the usual
/// soft limit (1024) is below what `--worker-connections` allows.
pub fn raise_open_files_limit() -> io::Result<u64> {
    // SAFETY: an all-zero rlimit is a valid buffer for getrlimit to fill.
    let mut limit: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `limit` is a valid, writable rlimit.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit read from the kernel, with cur <= max.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    }
    Ok(limit.rlim_cur as u64)
}

/// Bytes waiting to be read in a socket's receive queue (0 when it cannot tell).
pub fn bytes_waiting(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc == -1 {
        0
    } else {
        n.max(0) as usize
    }
}

/// Connections in a listening TCP socket's accept queue: handshakes the kernel has completed
/// and nobody has `accept`ed yet. For a listener, Linux's `TCP_INFO` reuses two fields
/// (`tcp_get_info` in net/ipv4/tcp.c): `tcpi_unacked` is this queue's length and `tcpi_sacked`
/// the backlog it may reach. Returns `(waiting, limit)`; an error for anything else (a unix
/// socket has no `TCP_INFO`: `EOPNOTSUPP`).
pub fn listen_queue(fd: RawFd) -> io::Result<(u32, u32)> {
    // SAFETY: an all-zero tcp_info is a valid value (plain integers) for the kernel to fill.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` describe a writable tcp_info; the kernel writes at most `len`
    // bytes and stores how many it wrote back into `len`.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    // TCP_LISTEN is 10 in the kernel's tcp_states.h (libc does not name it).
    if info.tcpi_state != 10 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    Ok((info.tcpi_unacked, info.tcpi_sacked))
}

/// Shuts down the receiving half of a listening socket: the kernel stops accepting on it at
/// once, for every process that shares it, and connections still in its backlog are reset.
/// The arbiter does this on a stop, so a load balancer sees refused connections immediately
/// instead of connections that queue behind workers that will never accept them.
pub fn stop_listening(fd: RawFd) {
    // SAFETY: shutdown(2) takes plain integers; an error (not a listener any more) is harmless.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// Shuts down the writing half: the peer reads end of file while we can still drain its bytes.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown(2) takes plain integers; an error (already closed) needs no handling.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

// ---------------------------------------------------------------------------------------------
// epoll
// ---------------------------------------------------------------------------------------------

/// An epoll instance.
pub struct Epoll {
    fd: OwnedFd,
}

/// One readiness event: the token registered with the descriptor, and the raw event bits.
#[derive(Clone, Copy)]
pub struct Event {
    /// The value given at registration.
    pub token: u64,
    /// `EPOLLIN`, `EPOLLHUP`, … as reported.
    pub bits: u32,
}

impl Epoll {
    /// Creates a close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag integer.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the descriptor is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Registers `fd` for `events` with `token`.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Removes `fd` from the set.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms` for events, filling `events` (cleared first). An interrupted
    /// wait (`EINTR`) returns with no events: the caller's loop comes round again.
    pub fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        events.len = 0;
        // SAFETY: `events.raw` holds `events.raw.len()` initialised epoll_event values; the
        // kernel writes at most that many and reports how many.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.raw.as_mut_ptr(),
                events.raw.len() as libc::c_int,
                timeout_ms,
            )
        };
        match check(n) {
            Ok(n) => {
                events.len = n as usize;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A reusable buffer of epoll events: allocated once per thread, not once per wait.
pub struct Events {
    raw: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait.
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            len: 0,
        }
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.raw[..self.len].iter().map(|ev| Event {
            token: ev.u64,
            bits: ev.events,
        })
    }

    /// True when the last wait returned nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Shared memory and clocks
// ---------------------------------------------------------------------------------------------

/// An anonymous `MAP_SHARED` array of `AtomicU64`, made before fork so that the arbiter and its
/// workers see the same memory: the workers' heartbeats live here.
pub struct SharedSlots {
    ptr: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the memory is only reached through `AtomicU64`, which is Sync.
unsafe impl Send for SharedSlots {}
// SAFETY: as above.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// Maps `len` zeroed slots.
    pub fn new(len: usize) -> io::Result<SharedSlots> {
        let bytes = len.max(1) * mem::size_of::<AtomicU64>();
        // SAFETY: an anonymous mapping with a null hint reads no memory of ours.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedSlots { ptr, len })
    }

    /// The slots as a slice of atomics.
    pub fn slots(&self) -> &[AtomicU64] {
        // SAFETY: INVARIANT: `ptr` points at `len` zero-initialised (valid) AtomicU64 values in a
        // mapping that lives as long as `self`; page alignment satisfies AtomicU64's alignment.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        let bytes = self.len.max(1) * mem::size_of::<AtomicU64>();
        // SAFETY: `ptr`/`bytes` are exactly the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

/// Milliseconds on the monotonic clock, which every process on the machine shares: workers write
/// it into their heartbeat slot and the arbiter compares it with its own reading.
pub fn monotonic_ms() -> u64 {
    // SAFETY: an all-zero timespec is valid for clock_gettime to fill.
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Microseconds on the monotonic clock: the `MONOTONIC_USEC=` of a systemd notification, which
/// systemd compares with its own reading of the same clock (see `notify`).
pub fn monotonic_us() -> u64 {
    // SAFETY: an all-zero timespec is valid for clock_gettime to fill.
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes an integer name.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}
