//! The event loop every thread of a worker runs.
//!
//! One epoll set holds the listeners, the signal pipe and every parked connection. A thread
//! (the leader, with `--threads` above one) waits on it, then for each event accepts, or takes
//! the connection out of the table and [drives](Worker::drive) it: the connection reads what
//! has arrived (`conn::Conn::advance`), a complete request is handed to the app, and the
//! connection goes back to the table to wait, or is closed. No hand-off between threads on the
//! way: the thread that took a connection owns it until it parks it again (an event for it
//! meanwhile takes its socket out of the epoll set until then, see `table`).
//!
//! Fairness: one wake-up serves at most [`PIPELINE_BATCH`] requests of one connection; a client
//! that pipelines without pause then goes to the back of the ready queue, and everyone else's
//! events are served first. Once a second a sweep closes connections past their deadline:
//! idle keep-alive ones after `--keep-alive`, and clients that stalled in the middle of a
//! request after `--timeout`, with a 408.

use std::io;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::table::{self, Held, TOKEN_CONN0};
use super::{Mode, Worker, TOKEN_LISTENER0, TOKEN_SIGNALS, TOKEN_WAKE};
use crate::client::{self, ClientIo};
use crate::conn::{Conn, Phase, Step};
use crate::http::proxy;
use crate::http::response::{error_response, simple_response};
use crate::http::Error;
use crate::log::AccessEntry;
use crate::sys::{self, Events, Peer};
use crate::wsgi::call::{self, Request};
use crate::wsgi::environ::{Client, ThreadCache};

/// Requests of one connection served in one go before the others get their turn.
const PIPELINE_BATCH: u32 = 16;

/// Connections accepted in one go, so one busy worker leaves some to the others.
const ACCEPT_BATCH: usize = 16;

/// What becomes of a connection once a thread is done with it for now.
enum Next {
    /// Park it until its socket is readable or its deadline passes.
    Park,
    /// Park it and queue it: it has buffered work that no socket event will announce.
    Requeue,
    /// Close it now.
    Close,
}

thread_local! {
    /// The epoch this thread leads (or last led) in; see `lead::Leadership`.
    static MY_EPOCH: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Worker<'_> {
    /// The loop of thread `id`, until the worker stops.
    ///
    /// The thread gets a Python thread state once, here, and keeps it, detached (no GIL) while
    /// it runs the event loop: each request's `Python::attach` then only takes the GIL back.
    /// Without it, every attach of a thread Python did not start would create a thread state
    /// and destroy it again (PyGILState_Ensure/Release), which cost `--threads 8` two thirds of
    /// its throughput.
    pub(super) fn thread_loop(&self, id: usize) {
        Python::attach(|py| py.detach(|| self.run_loop(id)));
    }

    fn run_loop(&self, id: usize) {
        let mut cache = ThreadCache::default();
        let mut events = Events::with_capacity(64);
        // With several threads, only the leader waits for events; `epoch` is the term it
        // leads in (see `Leadership`). One thread is always its own leader.
        let mut epoch = if self.lead.is_some() { None } else { Some(0) };
        loop {
            if self.finished() {
                break;
            }
            let Some(my_epoch) = epoch.or_else(|| {
                self.lead
                    .as_ref()
                    .and_then(|l| l.follow(|| self.finished()))
            }) else {
                break;
            };
            epoch = Some(my_epoch);
            MY_EPOCH.with(|e| e.set(my_epoch));
            // Events left over from the last batch first: after a takeover they are the old
            // leader's, which it cannot serve while its slow request runs.
            let pending = self.lead.as_ref().is_some_and(|l| l.has_pending());
            if !pending {
                if let Err(e) = self.epoll.wait(&mut events, self.wait_timeout()) {
                    crate::error!("epoll_wait failed: {e}");
                    break;
                }
                self.pulse.beat();
                if let Some(lead) = &self.lead {
                    lead.push_pending(events.iter().map(|ev| ev.token));
                }
            }
            let ready = self.table.take_ready();
            // With several threads, no GIL here: the event loop's work (accepting, reading,
            // spooling bodies) is not Python's, and a thread still inside a slow request must be
            // able to take the GIL meanwhile. `serve_request` takes it for the app call.
            let serve = |token: u64, cache: &mut ThreadCache| match token {
                TOKEN_SIGNALS => self.handle_signals(),
                TOKEN_WAKE => self.wake.drain(),
                t if t < TOKEN_CONN0 => self.accept((t - TOKEN_LISTENER0) as usize, id, cache),
                t => self.ready(t, id, cache),
            };
            match &self.lead {
                // One thread: one GIL hand-over for the whole batch, not one per request (the
                // app has no other server thread to wait for it; a long body read lets go of
                // it, see `drive`).
                None if !events.is_empty() || !ready.is_empty() => Python::attach(|_py| {
                    for ev in events.iter() {
                        serve(ev.token, &mut cache);
                    }
                    for token in ready {
                        serve(token, &mut cache);
                    }
                }),
                None => {}
                Some(lead) => {
                    lead.push_pending(ready);
                    // One event at a time, and only while leading: a thread that lost the
                    // lead to a takeover leaves the rest to the new leader.
                    while lead.still_leader(my_epoch) {
                        match lead.pop_pending() {
                            Some(token) => serve(token, &mut cache),
                            None => break,
                        }
                    }
                }
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

    /// How long the next epoll_wait may sleep: not at all when queued work waits, briefly
    /// while stopping or while accepting is paused, else up to the next sweep.
    fn wait_timeout(&self) -> i32 {
        if self.table.has_ready() {
            0
        } else if self.mode() == Mode::Running
            && self.accept_paused_until.load(Ordering::Relaxed) == 0
        {
            1000
        } else {
            100
        }
    }

    // ANCHOR: accept
    /// Accepts what is waiting on listener `idx`.
    fn accept(&self, idx: usize, thread: usize, cache: &mut ThreadCache) {
        let Some(&lfd) = self.listeners.get(idx) else {
            return;
        };
        // None once the worker stops (a request just served may have reached --max-requests).
        for _ in 0..ACCEPT_BATCH {
            if self.mode() != Mode::Running {
                return;
            }
            let (fd, peer) = match sys::accept(lfd) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)
                    ) =>
                {
                    continue
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The arbiter shut the listener down (a stop): nothing more will come.
                    self.unwatch_listeners();
                    return;
                }
                Err(e) => {
                    self.pause_accepting(&e);
                    return;
                }
            };
            let open = self.table.open();
            if open >= self.max_conns {
                crate::warning!("Too many connections ({open}); answering 503");
                let _ = client::write_available(
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
            let (remote, port) = match &peer {
                Peer::Tcp(addr) => {
                    self.ensure_nodelay(idx, fd.as_raw_fd());
                    (
                        addr.ip().to_canonical().to_string(),
                        addr.port().to_string(),
                    )
                }
                Peer::Unix => (String::new(), String::new()),
            };
            let mut conn = Conn::new(fd, idx, remote, port, self.rules.request_ms);
            let settings = self.setup.settings;
            if settings.proxy_protocol != proxy::Mode::Off {
                // Decided on the socket's own peer; a unix-socket peer always may.
                let allowed = match &peer {
                    Peer::Tcp(addr) => settings.proxy_allow_ips.allows(addr.ip()),
                    Peer::Unix => true,
                };
                conn.expect_proxy_header(settings.proxy_protocol, allowed);
            }
            let held = self.table.insert(Box::new(conn));
            // Requests often arrive with the connection: try at once, saving an epoll round.
            self.serve_conn(held, thread, cache);
        }
    }
    // ANCHOR_END: accept

    /// EMFILE and friends: the connection stays queued in the kernel. Stop watching the
    /// listeners for a moment instead of spinning on them, as mini-redis backs off its accept
    /// loop; the sweep watches them again.
    fn pause_accepting(&self, e: &io::Error) {
        let until = sys::monotonic_ms() + 100;
        if self.accept_paused_until.swap(until, Ordering::AcqRel) == 0 {
            crate::error!("accept() failed: {e}; pausing accepts for 100 ms");
            self.unwatch_listeners();
        }
    }

    /// Small writes must never wait for a delayed ACK. The listener's TCP_NODELAY is normally
    /// inherited; if this socket says otherwise (an inherited fd:// listener, another kernel),
    /// set it on each accepted socket.
    fn ensure_nodelay(&self, listener: usize, fd: i32) {
        let inherited = *self.nodelay_inherited[listener].get_or_init(|| {
            sys::getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).is_ok_and(|v| v != 0)
        });
        if !inherited {
            let _ = sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
    }

    /// An epoll event (or a ready-queue entry) for a parked connection.
    fn ready(&self, token: u64, thread: usize, cache: &mut ThreadCache) {
        if let Some(mut held) = self.table.take(token, &self.epoll) {
            held.conn.queued = false;
            self.serve_conn(held, thread, cache);
        }
    }

    /// Drives a connection as far as it goes, then parks or closes it. A panic on the way (a
    /// bug) costs this connection only.
    fn serve_conn(&self, mut held: Held, thread: usize, cache: &mut ThreadCache) {
        let next = catch_unwind(AssertUnwindSafe(|| {
            self.drive(&mut held.conn, thread, cache)
        }))
        .unwrap_or(Next::Close);
        match next {
            Next::Park | Next::Requeue => {
                let queue = matches!(next, Next::Requeue);
                held.conn.queued = queue;
                let token = table::token(held.idx, held.gen);
                match self.table.park(held, &self.epoll) {
                    Ok(()) if queue => {
                        self.table.push_ready(token);
                        // The leader may be asleep in epoll_wait with nothing to wake it:
                        // these bytes are already read.
                        if self.lead.is_some() {
                            self.wake.wake();
                        }
                    }
                    Ok(()) => {}
                    Err(conn) => table::close(conn, false, &self.epoll),
                }
                // A stop that began while we held this connection may have found it busy.
                if self.mode() == Mode::Stopping {
                    self.close_idle();
                }
            }
            Next::Close => {
                let armed = self.table.release(held.idx);
                table::close(held.conn, armed, &self.epoll);
            }
        }
    }

    // ANCHOR: drive
    /// Serves requests on `conn` until it must wait for bytes, has had its turn, or closes.
    fn drive(&self, conn: &mut Conn, thread: usize, cache: &mut ThreadCache) -> Next {
        let mut served = 0;
        loop {
            // Reading a body may take a while (64 KiB reads, spooled to disk): with one thread
            // it runs without the GIL this thread holds for its batch, so the app's own
            // threads are not held up meanwhile.
            let step = if self.lead.is_none() && matches!(conn.phase, Phase::Body(_)) {
                Python::attach(|py| py.detach(|| conn.advance(&self.rules)))
            } else {
                conn.advance(&self.rules)
            };
            match step {
                Step::Wait => {
                    if conn.is_mid_request() && conn.deadline <= sys::monotonic_ms() {
                        // Everything that has arrived is read, and the request is still not
                        // whole: the client is late.
                        self.refuse(conn, Error::Timeout);
                        continue;
                    }
                    if self.mode() == Mode::Stopping && conn.may_close_on_stop() {
                        return Next::Close;
                    }
                    return Next::Park;
                }
                Step::Close => return Next::Close,
                Step::Refuse(err) => self.refuse(conn, err),
                Step::Request => {
                    if served == PIPELINE_BATCH {
                        return Next::Requeue;
                    }
                    served += 1;
                    let keep_alive = self.serve_request(conn, thread, cache);
                    if !conn.finish_request(keep_alive, &self.rules) {
                        if conn.can_close_at_once() {
                            return Next::Close;
                        }
                        conn.start_lingering();
                    } else if conn.is_idle() {
                        if self.mode() == Mode::Stopping {
                            if conn.may_close_on_stop() {
                                return Next::Close;
                            }
                            // The answer just sent kept the connection alive, and the client
                            // has begun its next request: read it and answer it (closing
                            // after that answer).
                            continue;
                        }
                        // Nothing pipelined: the next request is in the future, and epoll
                        // will say when it comes. Reading now would only find EAGAIN, one
                        // system call per request for nothing.
                        return Next::Park;
                    }
                }
            }
        }
    }
    // ANCHOR_END: drive

    /// Calls the app for the complete request in `conn`; returns whether the connection may
    /// carry another request.
    fn serve_request(&self, conn: &mut Conn, thread: usize, cache: &mut ThreadCache) -> bool {
        // This thread counts as busy (for the arbiter's saturation watch) until we return.
        let _occupied = self.pulse.occupy();
        let started = Instant::now();
        let clock = self.pulse.clock(thread);
        let entered = sys::monotonic_ms();
        clock.start_at(entered);
        // Only the leader's requests are watched: an old leader finishing its last request
        // after a takeover is no longer anyone's bottleneck.
        let epoch = MY_EPOCH.with(|e| e.get());
        let leading = self.lead.as_ref().filter(|lead| lead.still_leader(epoch));
        if let Some(lead) = leading {
            lead.request_started();
        }
        let may_keep_alive = self.rules.keepalive_ms > 0 && self.mode() == Mode::Running;
        let body = conn.take_body();
        {
            let buf = &conn.buf;
            let head = &conn.head;
            let line = &buf[head.line_start.min(head.line_end)..head.line_end.min(buf.len())];
            let header = |name| head.header(buf, name).unwrap_or_default();
            self.setup.board.enter(
                thread,
                entered,
                [
                    conn.remote.as_bytes(),
                    line,
                    header("referer"),
                    header("user-agent"),
                ],
            );
        }
        let outcome = Python::attach(|py| {
            call::serve(
                py,
                &self.app,
                cache,
                Request {
                    io: ClientIo::new(conn.fd.as_raw_fd(), self.send_wait_ms, clock),
                    client: Client {
                        addr: &conn.remote,
                        port: &conn.port,
                        peer: conn.peer.as_deref().unwrap_or(&conn.remote),
                        listener: conn.listener,
                        strings: &mut conn.py_strings,
                    },
                    buf: &conn.buf,
                    head: &conn.head,
                    body,
                    may_keep_alive,
                },
            )
        });
        clock.stop();
        self.setup.board.leave(thread);
        if let Some(lead) = leading {
            lead.request_finished(epoch, started.elapsed());
        }
        self.pulse.beat();
        // Nothing here costs a request anything while the access log and statsD are off.
        if self.access.is_some() || crate::statsd::enabled() {
            let elapsed = started.elapsed();
            if let Some(format) = &self.access {
                let buf = &conn.buf;
                let head = &conn.head;
                let line_end = head.line_end.min(buf.len());
                let request_header = |name: &str| head.header(buf, name);
                format.log(&AccessEntry {
                    remote: &conn.remote,
                    remote_port: &conn.port,
                    request_line: &buf[head.line_start.min(line_end)..line_end],
                    method: head.method.of(buf),
                    target: head.target.of(buf),
                    path: head.path.of(buf),
                    query: head.query.of(buf),
                    protocol: head.protocol(),
                    status: outcome.status,
                    body_bytes: outcome.body_bytes,
                    elapsed,
                    request_header: &request_header,
                    response_headers: &outcome.response_headers,
                });
            }
            crate::statsd::request(outcome.status, elapsed);
        }
        let served = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let max = self.setup.max_requests;
        if max > 0 && served == max {
            crate::info!("Autorestarting worker after current request.");
            self.begin_stop(Mode::Retiring);
        }
        outcome.keep_alive
    }

    /// Answers a request we refuse, then starts closing the connection (lingering, so the
    /// answer is not destroyed by a reset while the client is still sending).
    fn refuse(&self, conn: &mut Conn, err: Error) {
        let (code, _) = err.status();
        let who = if conn.remote.is_empty() {
            "unix socket"
        } else {
            &conn.remote
        };
        match code {
            408 => crate::debug!("{err} from {who}"),
            500 => crate::error!("Cannot take a request from {who}: {err}"),
            _ => crate::info!("Invalid request from {who}: {err}"),
        }
        // Best effort: whatever the socket takes at once. The connection closes right after,
        // so nothing waits on a client that does not read.
        let _ = client::write_available(conn.fd.as_raw_fd(), &error_response(err));
        if let Some(format) = &self.access {
            // No parsed head to go by: the first line as far as it arrived (at most 200
            // bytes), cut at its spaces, is the best guess at what was asked.
            let buf = &conn.buf;
            let from = buf
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(buf.len());
            let line = &buf[from..];
            let line = &line[..line
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(line.len())
                .min(200)];
            let mut words = line.split(|&b| b == b' ');
            let method = words.next().unwrap_or_default();
            let target = words.next().unwrap_or_default();
            let (path, query) = match target.iter().position(|&b| b == b'?') {
                Some(q) => (&target[..q], &target[q + 1..]),
                None => (target, &b""[..]),
            };
            let no_header = |_: &str| None;
            format.log(&AccessEntry {
                remote: &conn.remote,
                remote_port: &conn.port,
                request_line: line,
                method,
                target,
                path,
                query,
                protocol: "-",
                status: code,
                body_bytes: 0,
                elapsed: Duration::ZERO,
                request_header: &no_header,
                response_headers: &[],
            });
        }
        crate::statsd::request(code, Duration::ZERO);
        conn.start_lingering();
    }

    /// Once a second: close connections past their deadline; check on the arbiter; watch the
    /// listeners again after an accept pause.
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
            super::exit_after_worker_exit(&self.hooks, 0, false);
        }
        // Past its deadline, a connection that is lingering, or idle with nothing new, closes.
        // One in the middle of a request, or with bytes waiting, is not judged on what this
        // worker happened to have read while it was busy elsewhere: it is queued, reads what
        // has arrived, and gets its 408 only if the request is still incomplete (`drive`).
        let expired = |c: &Conn| c.deadline <= now && !c.queued;
        let closing = |c: &Conn| {
            expired(c)
                && (matches!(c.phase, Phase::Lingering { .. })
                    || (!c.is_mid_request() && sys::bytes_waiting(c.fd.as_raw_fd()) == 0))
        };
        for conn in self.table.take_where(closing) {
            table::close(conn, true, &self.epoll);
        }
        if self.table.queue_where(expired) && self.lead.is_some() {
            self.wake.wake();
        }
    }
}
