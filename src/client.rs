//! The client-I/O layer: every read, write, wait and sendfile on a client socket goes through
//! here, below both the worker's event loop and the WSGI glue.
//!
//! Three things live here because both sides need them and neither may own them:
//!
//! * **One EINTR-correct loop.** A signal (USR1 from logrotate, HUP from a deploy, TERM) can
//!   arrive during any blocking call. Handlers are installed with `SA_RESTART`, but poll(2)
//!   and calls with a timeout are never restarted, so `EINTR` still reaches us. It means
//!   "again", never "the client is gone": [`read_available`], [`write_available`] and
//!   [`ClientIo::send_until_done`] retry it, and a wait it cuts short is waited again against
//!   the same deadline.
//! * **The heartbeat.** The arbiter kills a worker whose heartbeat is older than `--timeout`
//!   (see `arbiter::murder_workers`). Its value is the start of the oldest request still in
//!   the app, so one stuck request gets the worker replaced. A request that waits on its
//!   *client* (a full send buffer) is not stuck in the app: [`Clock::waiting_on_client`] takes
//!   it off the heartbeat for the wait, and the wait beats between slices, so a slow reader
//!   cannot get the worker and its other clients killed.
//! * **Revocation.** What the app is handed (`write`, `wsgi.input`) can outlive its request and
//!   be called from another thread. Those objects reach the socket only through a [`Lease`];
//!   the worker revokes it when the request ends, waiting for a call in progress to finish, so
//!   a descriptor number that now belongs to another client is never written to.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use crate::sys::{self, Ready};

/// What writes a worker's heartbeat: the per-thread "busy since" slots and the shared slot the
/// arbiter reads.
#[derive(Clone, Copy)]
pub struct Pulse {
    /// Per thread: when its current request entered the app (ms), 0 when it is not in one.
    busy: &'static [AtomicU64],
    /// The worker's slot in the arbiter's shared page.
    heartbeat: &'static AtomicU64,
    /// Threads serving a request now, in the shared page too: the arbiter adds these up to
    /// notice that every thread is taken (see `saturation`).
    occupied: &'static AtomicU64,
}

impl Pulse {
    /// A pulse over `busy` (one slot per thread) writing into `heartbeat` and counting busy
    /// threads in `occupied`. The count starts from zero: a slot reused after a worker died in
    /// the middle of requests still holds that worker's count.
    pub fn new(
        busy: &'static [AtomicU64],
        heartbeat: &'static AtomicU64,
        occupied: &'static AtomicU64,
    ) -> Pulse {
        occupied.store(0, Ordering::Relaxed);
        Pulse {
            busy,
            heartbeat,
            occupied,
        }
    }

    /// Counts the calling thread as busy until the guard is dropped. Unlike the heartbeat's
    /// clock, waits on the client count too: a thread writing to a slow reader accepts nobody
    /// else. A guard rather than a pair of calls, so a panic on the way cannot leave a thread
    /// counted busy for ever. Two uncontended atomic adds; no system call.
    pub fn occupy(self) -> Occupied {
        self.occupied.fetch_add(1, Ordering::Relaxed);
        Occupied(self.occupied)
    }

    /// Writes the heartbeat: the start of the oldest request still in the app, or now. The
    /// arbiter thus sees a stale heartbeat when the loop has stopped, or when one request has
    /// been inside the app for longer than `--timeout`.
    pub fn beat(self) {
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

    /// The clock of thread `thread` (clamped to the last slot).
    pub fn clock(self, thread: usize) -> Clock {
        let slot = &self.busy[thread.min(self.busy.len().saturating_sub(1))];
        Clock { slot, pulse: self }
    }

    /// When the oldest request still in the app started (ms), if any is.
    pub fn oldest_request(self) -> Option<u64> {
        self.busy
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min()
    }
}

/// A thread counted busy by [`Pulse::occupy`]; dropping it counts the thread free again.
pub struct Occupied(&'static AtomicU64);

impl Drop for Occupied {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One thread's slot in the heartbeat.
#[derive(Clone, Copy)]
pub struct Clock {
    slot: &'static AtomicU64,
    pulse: Pulse,
}

impl Clock {
    /// A request of this thread enters the app.
    pub fn start(self) {
        self.start_at(sys::monotonic_ms());
    }

    /// A request of this thread entered the app at `now` (ms, monotonic), read by the caller.
    pub fn start_at(self, now: u64) {
        self.slot.store(now.max(1), Ordering::Relaxed);
    }

    /// The request is out of the app.
    pub fn stop(self) {
        self.slot.store(0, Ordering::Relaxed);
    }

    /// Writes the worker's heartbeat.
    pub fn beat(self) {
        self.pulse.beat();
    }

    /// Runs `wait` (a wait on the client) without it counting against the request: `--timeout`
    /// kills a worker whose app is stuck, and a slow client is not the app's fault. The clock
    /// restarts when the wait ends.
    pub fn waiting_on_client<T>(self, wait: impl FnOnce() -> T) -> T {
        let was_busy = self.slot.swap(0, Ordering::Relaxed) != 0;
        self.pulse.beat();
        let result = wait();
        if was_busy {
            self.start();
        }
        result
    }
}

/// A request's way to the client socket, for the response.
///
/// INVARIANT: `fd` is the connection's socket for as long as this value exists. The worker
/// only closes or reuses the connection after taking this value back out of the [`Lease`]
/// it was handed to the app in.
pub struct ClientIo {
    fd: RawFd,
    /// How long one wait for room in the send buffer may last before the client counts as
    /// gone (`--timeout`): a reader that stops reading is cut off.
    wait_ms: u64,
    clock: Clock,
}

impl ClientIo {
    /// A handle on `fd` for one request.
    pub fn new(fd: RawFd, wait_ms: u64, clock: Clock) -> ClientIo {
        ClientIo {
            fd,
            wait_ms: wait_ms.max(1),
            clock,
        }
    }

    /// Writes as much of `slices` as the socket takes now, without waiting, advancing them.
    /// `Ok(true)` when everything went out.
    pub fn try_send(&self, slices: &mut &mut [IoSlice<'_>]) -> io::Result<bool> {
        while !slices.is_empty() {
            match sys::writev(self.fd, slices) {
                Ok(n) => IoSlice::advance_slices(slices, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes every slice, waiting for room whenever the socket is full.
    pub fn send(&self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        self.send_until_done(|| {
            if !slices.is_empty() {
                let n = sys::writev(self.fd, slices)?;
                IoSlice::advance_slices(&mut slices, n);
            }
            Ok(slices.is_empty())
        })
    }

    /// Writes all of `data`, waiting for room whenever the socket is full.
    pub fn send_all(&self, mut data: &[u8]) -> io::Result<()> {
        self.send_until_done(|| {
            if !data.is_empty() {
                data = &data[sys::write(self.fd, data)?..];
            }
            Ok(data.is_empty())
        })
    }

    /// Sends `count` bytes of the regular file `file` from `offset` with sendfile(2). Returns
    /// how many bytes went out, with the error that stopped it, if any.
    pub fn send_file(&self, file: RawFd, mut offset: i64, count: u64) -> (u64, io::Result<()>) {
        let mut left = count;
        let result = self.send_until_done(|| {
            if left > 0 {
                match sys::sendfile(self.fd, file, &mut offset, left.min(1 << 30) as usize)? {
                    // The file is shorter than it said: what was promised cannot be sent.
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    n => left -= n as u64,
                }
            }
            Ok(left == 0)
        });
        (count - left, result)
    }

    /// The one send loop: `step` makes one write system call and returns `Ok(true)` once
    /// everything is out. A full socket is waited for, at most `wait_ms` each time; `EINTR` is
    /// retried; the whole loop counts as waiting on the client, not as app time.
    pub fn send_until_done(&self, mut step: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
        self.clock.waiting_on_client(|| loop {
            match step() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(Ready::Write)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        })
    }

    /// Waits until the socket is ready, beating the heartbeat every half second; `TimedOut`
    /// after `wait_ms` without readiness. Signals end a slice early and are waited through.
    fn wait(&self, ready: Ready) -> io::Result<()> {
        let deadline = sys::monotonic_ms() + self.wait_ms;
        loop {
            self.clock.beat();
            let left = deadline.saturating_sub(sys::monotonic_ms());
            if left == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match sys::poll_one(self.fd, ready, left.min(500) as i32) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    crate::debug!(
                        "A signal interrupted the wait on client fd {}; waiting again",
                        self.fd
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What a read that does not wait found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// This many bytes were appended.
    Bytes(usize),
    /// The client closed its side.
    Eof,
    /// Nothing is there yet.
    Nothing,
}

/// Reads what is available on the non-blocking socket `fd` into `buf`'s spare room (at most
/// `max` bytes), retrying `EINTR`.
pub fn read_available(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<Got> {
    loop {
        match sys::read_into_spare(fd, buf, max) {
            Ok(0) => return Ok(Got::Eof),
            Ok(n) => return Ok(Got::Bytes(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Got::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes what the non-blocking socket `fd` takes of `data` now; returns how much, retrying
/// `EINTR`. For the short answers the event loop writes itself (errors, `100 Continue`).
pub fn write_available(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        match sys::write(fd, data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Something handed to the app for one request, revocable.
///
/// The app gets objects (`start_response`'s `write`, `wsgi.input`) that reach this value only
/// through the lease. When the request ends the worker calls [`Lease::revoke`], which waits for
/// a use in progress and takes the value back; every later use finds nothing and raises.
/// Poisoning is ignored: a panic while the value was in use leaves it as it was, and the
/// request it belongs to is answered with an error by the code that caught the panic.
pub struct Lease<T> {
    slot: Mutex<Option<T>>,
}

impl<T> Lease<T> {
    /// A lease on `value`.
    pub fn new(value: T) -> Lease<T> {
        Lease {
            slot: Mutex::new(Some(value)),
        }
    }

    /// Locks the lease without waiting; `None` when another thread is using it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Option<T>>> {
        match self.slot.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Locks the lease, waiting for a use in progress. Callers holding the GIL must release it
    /// around this wait (see `wsgi::lock_lease`): the user may be waiting for the GIL.
    pub fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the lease and returns the value. Waits for a use in progress, so once this returns
    /// nothing the app kept can reach the value.
    pub fn revoke(&self) -> Option<T> {
        self.lock().take()
    }
}
