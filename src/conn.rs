//! One client connection, and the state machine that reads its requests.
//!
//! A connection is always in exactly one [`Phase`], and what may happen next is a `match` on
//! it, never a guess from buffers, flags and counters:
//!
//! ```text
//!  (--proxy-protocol)
//!   Proxy ──┐ header read
//!           ▼  first byte            blank line            body complete
//!         Idle ───────────────▶ Head ──────────────▶ Body ──────────────────▶ Ready ──▶ (the app)
//!          ▲                      │  4xx               │ 4xx, 408                          │
//!          │ keep-alive           ▼                    ▼                                   │
//!          └──────────────── (answered) ◀──────────────────────────────────────────────────┘
//!                                  │ close
//!                                  ▼
//!                              Lingering ──▶ closed
//! ```
//!
//! [`Conn::advance`] reads what the socket has (never waiting: the socket is non-blocking and
//! the worker's event loop does the waiting) and moves the phase on as far as the bytes allow.
//! It reads the *whole* request before the app is called: the head, then the body, which goes
//! into a [`Spool`] (memory, then a temporary file). A client that uploads slowly therefore
//! holds a parked connection, not one of the worker's threads; and `Expect: 100-continue` is
//! answered as soon as the head is accepted, as gunicorn answers it (PEP 3333 allows either).
//!
//! With `--proxy-protocol`, a connection starts in [`Phase::Proxy`] instead of `Idle`: the
//! PROXY header a TCP balancer sends comes once per connection, before the first request, and
//! names the client for all of them; so it is a phase of the connection, not a step of every
//! request's head. Without the flag no connection ever enters it, and the only cost is one
//! `match` arm never taken. The phase reads what has arrived and hands it to [`proxy::parse`]
//! until the header is complete (it may come one byte at a time), then replaces `remote` and
//! `port` with the client the header names, keeps the socket's own peer in `peer` (forwarded
//! headers are trusted on that, never on what a header claims), drops the header from the
//! buffer, and goes on to `Idle`, or to `Head` when the request came along. A peer outside
//! `--proxy-allow-from` is not expected to send a header: its bytes are HTTP, and a header from
//! it is refused (403, as gunicorn's `ForbiddenProxyRequest`).
//!
//! Memory is bounded twice for request heads: per connection by the `--limit-request-*`
//! settings, and per worker by [`HEAD_BUDGET`], shared by every connection whose head buffer has
//! outgrown [`HEAD_SOLO`] (hyper's `max_buf_size` idea, across connections), for as long as it
//! holds that head: 200 clients sending 720 KB heads that never end, or that end and are
//! followed by a body that never comes, get 431, not 146 MiB of the worker's memory. Bodies are
//! bounded by `--limit-request-body`, or by [`SPOOL_MAX`] when that is unlimited.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::client::{self, Got};
use crate::http::body::ChunkedDecoder;
use crate::http::parse::parse_head;
use crate::http::proxy::{self, Header};
use crate::http::{Error, Framing, Head, HeadScanner, Limits, Status};
use crate::sys;
use crate::wsgi::input::Spool;

/// Initial read buffer of a connection.
pub const BUF_START: usize = 8 * 1024;
/// A request head may grow to this many bytes of buffer on its own.
pub const HEAD_SOLO: usize = 32 * 1024;
/// Buffer beyond [`HEAD_SOLO`] that all unfinished heads of a worker may hold together.
pub const HEAD_BUDGET: usize = 16 << 20;
/// The slowest average pace (bytes a second) at which a request may go on arriving past its
/// `--timeout`: a request whose body has come in at least this fast since its first byte is
/// not cut off. A steady upload of any size completes (64 KiB/s is half a megabit); a trickle
/// (slowloris on the body) gets its 408 when `--timeout` is up, like Apache's mod_reqtimeout
/// with its `MinRate`.
pub const MIN_BODY_RATE: u64 = 64 * 1024;
/// The largest body read without a `--limit-request-body`: bodies are spooled to disk before
/// the app runs, and without a cap any client could fill the disk with one request. 1 GiB, as
/// waitress caps its spooled bodies by default; a larger `--limit-request-body` raises it.
pub const SPOOL_MAX: u64 = 1 << 30;
/// How long a closing connection is drained so our last response is not destroyed by a reset.
pub const LINGER_MS: u64 = 2_000;
/// Most bytes drained while lingering.
pub const LINGER_MAX: usize = 1 << 20;

/// Buffer bytes held beyond [`HEAD_SOLO`] by this worker's unfinished heads (one worker per
/// process, so a process-wide counter is the worker's).
static HEAD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Just accepted with `--proxy-protocol`: waiting for the PROXY header.
    Proxy(ProxyIn),
    /// Between requests (or just accepted): waiting for a request's first byte.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// The head is parsed; the body is arriving.
    Body(BodyIn),
    /// Head and body are complete: the request is ready for the app. The body is taken out
    /// when the app is called.
    Ready(Option<Spool>),
    /// Closing: our side is shut for writing; what the client still sends is read and dropped
    /// until it closes, [`LINGER_MAX`] bytes, or the deadline (RFC 9112 §9.6).
    Lingering {
        /// Bytes drained so far.
        drained: usize,
    },
}

/// What the PROXY phase expects of this connection.
#[derive(Debug, Clone, Copy)]
pub struct ProxyIn {
    /// The header versions `--proxy-protocol` accepts.
    mode: proxy::Mode,
    /// The socket's peer is in `--proxy-allow-from`: it must send a header (the spec's "MUST
    /// not try to guess whether the protocol header is present"). Otherwise it must not.
    allowed: bool,
}

/// A body on its way in.
#[derive(Debug)]
pub struct BodyIn {
    framing: BodyFraming,
    spool: Spool,
}

#[derive(Debug)]
enum BodyFraming {
    /// This many bytes still to come.
    Length(u64),
    /// Chunked; the decoder knows when it ends.
    Chunked(ChunkedDecoder),
}

/// What [`Conn::advance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do until the socket is readable (or the deadline passes).
    Wait,
    /// A whole request is here: call the app.
    Request,
    /// Refuse the request with this answer, then linger.
    Refuse(Error),
    /// Close the connection now.
    Close,
}

/// The settings [`Conn::advance`] needs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Size limits of heads and bodies.
    pub limits: Limits,
    /// `--timeout` in ms: how long a client has to send a whole request.
    pub request_ms: u64,
    /// `--keep-alive` in ms: how long an idle connection is kept.
    pub keepalive_ms: u64,
}

/// A client connection.
pub struct Conn {
    /// The socket (non-blocking).
    pub fd: OwnedFd,
    /// Which listener accepted it.
    pub listener: usize,
    /// The client's address for `REMOTE_ADDR` (empty on unix sockets).
    pub remote: String,
    /// The client's port for `REMOTE_PORT` (empty on unix sockets).
    pub port: String,
    /// The socket's own peer address, kept here when a PROXY header replaced `remote` with the
    /// client it relays (empty on unix sockets); `None` when `remote` is the socket's peer.
    /// Trust in forwarded headers is decided on this, never on an address a header claims.
    pub peer: Option<String>,
    /// `remote` and `port` as Python strings, made on the first request.
    pub py_strings: Option<(Py<PyString>, Py<PyString>)>,
    /// Bytes read and not consumed: the current head at the front (its spans point here), then
    /// whatever the client pipelined after it.
    pub buf: Vec<u8>,
    scanner: HeadScanner,
    /// The current request's head, once parsed.
    pub head: Head,
    /// Where the connection is.
    pub phase: Phase,
    /// When the current wait ends (ms, monotonic): keep-alive, request, or linger deadline.
    pub deadline: u64,
    /// When the current request's first byte arrived (ms, monotonic).
    started: u64,
    /// Body bytes of the current request received so far.
    received: u64,
    /// Requests answered on this connection.
    pub served: u64,
    /// Parked with work waiting on the worker's ready queue, not on the client: no deadline
    /// applies until it is taken up again.
    pub queued: bool,
    /// Bytes of [`HEAD_BYTES`] this connection holds.
    charged: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Conn(fd {}, {:?}, {} buffered, {} served)",
            self.fd.as_raw_fd(),
            self.phase,
            self.buf.len(),
            self.served
        )
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.release_head_bytes();
    }
}

impl Conn {
    /// A freshly accepted connection, with `request_ms` to send its first request.
    pub fn new(
        fd: OwnedFd,
        listener: usize,
        remote: String,
        port: String,
        request_ms: u64,
    ) -> Conn {
        Conn {
            fd,
            listener,
            remote,
            port,
            peer: None,
            py_strings: None,
            buf: Vec::with_capacity(BUF_START),
            scanner: HeadScanner::default(),
            head: Head::default(),
            phase: Phase::Idle,
            deadline: sys::monotonic_ms() + request_ms,
            started: 0,
            received: 0,
            served: 0,
            queued: false,
            charged: 0,
        }
    }

    /// Makes a just-accepted connection start with the PROXY header (`--proxy-protocol`):
    /// required from a peer in `--proxy-allow-from` (`allowed`), refused from any other.
    pub fn expect_proxy_header(&mut self, mode: proxy::Mode, allowed: bool) {
        if mode != proxy::Mode::Off {
            self.phase = Phase::Proxy(ProxyIn { mode, allowed });
        }
    }

    /// True between requests: nothing of a next request (or of the PROXY header) has arrived.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Proxy(_)) && self.buf.is_empty()
    }

    /// True when a stopping worker may close this connection now: it has answered a request,
    /// and nothing of a next one has arrived, neither read nor waiting in the socket. Closing
    /// with a request's bytes unread would reset the connection and lose that request.
    pub fn may_close_on_stop(&self) -> bool {
        self.is_idle() && self.served > 0 && sys::bytes_waiting(self.fd.as_raw_fd()) == 0
    }

    /// True while a request is partly received: the sweeper answers 408 when its time is up.
    pub fn is_mid_request(&self) -> bool {
        match self.phase {
            Phase::Head | Phase::Body(_) | Phase::Ready(_) => true,
            Phase::Idle => !self.buf.is_empty(),
            // No request has begun: a header that stalls is dropped without an HTTP answer.
            Phase::Proxy(_) | Phase::Lingering { .. } => false,
        }
    }

    /// Moves the connection on as far as the bytes that have arrived allow, reading what the
    /// socket has without waiting for more.
    pub fn advance(&mut self, rules: &Rules) -> Step {
        loop {
            let step = match &mut self.phase {
                Phase::Proxy(expect) => {
                    let expect = *expect;
                    self.read_proxy(expect, rules)
                }
                Phase::Idle | Phase::Head => self.read_head(rules),
                Phase::Body(_) => self.read_body(rules),
                Phase::Ready(_) => return Step::Request,
                Phase::Lingering { .. } => return self.linger(),
            };
            match step {
                Some(step) => return step,
                None => continue,
            }
        }
    }

    /// `None`: the phase moved on, go round again.
    fn read_head(&mut self, rules: &Rules) -> Option<Step> {
        if !self.buf.is_empty() {
            match self.scanner.scan(&self.buf, &rules.limits) {
                Err(e) => return Some(Step::Refuse(e)),
                Ok(Status::Complete(len)) => return self.head_complete(len, rules),
                Ok(Status::Partial) => {}
            }
        }
        let was_idle = self.buf.is_empty();
        let room = (self.buf.capacity() - self.buf.len()).max(4096);
        match client::read_available(self.fd.as_raw_fd(), &mut self.buf, room) {
            Ok(Got::Bytes(_)) => {
                if was_idle {
                    self.begin_request(rules);
                }
                if !self.charge_buffer() {
                    return Some(Step::Refuse(Error::HeaderTooLarge));
                }
                None
            }
            Ok(Got::Nothing) => Some(Step::Wait),
            Ok(Got::Eof) | Err(_) => Some(Step::Close),
        }
    }

    /// Reads the PROXY header (or, from a peer that may not send one, checks that the bytes
    /// are not one). `None`: the phase moved on.
    fn read_proxy(&mut self, expect: ProxyIn, rules: &Rules) -> Option<Step> {
        if !self.buf.is_empty() {
            if expect.allowed {
                match proxy::parse(&self.buf, expect.mode) {
                    Err(e) => return Some(Step::Refuse(e.into())),
                    Ok(Status::Complete((len, header))) => {
                        self.proxy_header_read(len, header, rules);
                        return None;
                    }
                    Ok(Status::Partial) => {}
                }
            } else {
                match proxy::detect(&self.buf, expect.mode) {
                    Status::Complete(Some(_)) => {
                        return Some(Step::Refuse(Error::Forbidden(
                            "PROXY header from a peer not in --proxy-allow-from",
                        )))
                    }
                    Status::Complete(None) => {
                        self.begin_request(rules);
                        return None;
                    }
                    Status::Partial => {}
                }
            }
        }
        // The header is at most `proxy::V2_MAX` bytes; whatever follows it stays for `Head`.
        let room = (self.buf.capacity() - self.buf.len()).max(4096);
        match client::read_available(self.fd.as_raw_fd(), &mut self.buf, room) {
            Ok(Got::Bytes(_)) => None,
            Ok(Got::Nothing) => Some(Step::Wait),
            Ok(Got::Eof) | Err(_) => Some(Step::Close),
        }
    }

    /// The PROXY header is the first `len` bytes: the client it names is the connection's
    /// remote from now on, for every request.
    fn proxy_header_read(&mut self, len: usize, header: Header, rules: &Rules) {
        self.buf.drain(..len);
        if let Header::Proxied { source, .. } = header {
            // As accept() writes a TCP peer: an IPv4 client relayed over IPv6 is a.b.c.d.
            let client = source.ip().to_canonical().to_string();
            self.peer = Some(std::mem::replace(&mut self.remote, client));
            self.port = source.port().to_string();
        }
        if self.buf.is_empty() {
            // The first request's clock keeps running from the accept.
            self.phase = Phase::Idle;
        } else {
            self.begin_request(rules);
        }
    }

    /// The first byte of a request starts its clock.
    fn begin_request(&mut self, rules: &Rules) {
        self.phase = Phase::Head;
        self.started = sys::monotonic_ms();
        self.received = 0;
        self.deadline = self.started + rules.request_ms;
    }

    /// Charges the buffer beyond [`HEAD_SOLO`] to the worker's budget, or gives back what it
    /// no longer needs; false when more was needed and the budget is spent. The charge stays
    /// while the head is held (its spans point into the buffer), through the body, until the
    /// request is answered.
    fn charge_buffer(&mut self) -> bool {
        let wanted = self.buf.capacity().saturating_sub(HEAD_SOLO);
        if wanted <= self.charged {
            if wanted < self.charged {
                HEAD_BYTES.fetch_sub(self.charged - wanted, Ordering::AcqRel);
                self.charged = wanted;
            }
            return true;
        }
        let more = wanted - self.charged;
        let granted = HEAD_BYTES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + more <= HEAD_BUDGET).then_some(held + more)
            })
            .is_ok();
        if granted {
            self.charged = wanted;
        }
        granted
    }

    fn release_head_bytes(&mut self) {
        if self.charged > 0 {
            HEAD_BYTES.fetch_sub(self.charged, Ordering::AcqRel);
            self.charged = 0;
        }
    }

    /// The head is `len` bytes: parse it and decide how the body is framed.
    fn head_complete(&mut self, len: usize, rules: &Rules) -> Option<Step> {
        if let Err(e) = parse_head(&self.buf, len, &mut self.head) {
            return Some(Step::Refuse(e));
        }
        let limit = match rules.limits.body {
            0 => SPOOL_MAX,
            n => n,
        };
        let framing = match self.head.framing {
            Framing::None | Framing::Length(0) => {
                self.phase = Phase::Ready(None);
                return Some(Step::Request);
            }
            Framing::Length(n) if n > limit => return Some(Step::Refuse(Error::BodyTooLarge)),
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked(ChunkedDecoder::new(limit)),
        };
        // The client waits for our go-ahead unless it has started sending anyway
        // (RFC 9110 §10.1.1).
        if self.head.expect_continue && self.buf.len() == len && !self.send_continue() {
            return Some(Step::Close);
        }
        self.phase = Phase::Body(BodyIn {
            framing,
            spool: Spool::default(),
        });
        None
    }

    /// Sends `100 Continue`. The send buffer is empty unless the client pipelined requests
    /// without reading their answers; then the 100 may not fit at once. Nothing written is
    /// fine (a client that waits for a 100 sends its body anyway after a second or so, RFC
    /// 9110 §10.1.1); half a status line is not, so a partial write is finished, waiting a
    /// little. False when the client would not take it.
    fn send_continue(&mut self) -> bool {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        let fd = self.fd.as_raw_fd();
        let mut sent = match client::write_available(fd, CONTINUE) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if sent == 0 || sent == CONTINUE.len() {
            return true;
        }
        let deadline = sys::monotonic_ms() + 1000;
        while sent < CONTINUE.len() && sys::monotonic_ms() < deadline {
            let _ = sys::poll_one(fd, sys::Ready::Write, 100);
            match client::write_available(fd, &CONTINUE[sent..]) {
                Ok(n) => sent += n,
                Err(_) => return false,
            }
        }
        sent == CONTINUE.len()
    }

    /// Moves body bytes from the buffer into the spool; reads more when they are not all here.
    fn read_body(&mut self, rules: &Rules) -> Option<Step> {
        let Phase::Body(body) = &mut self.phase else {
            return Some(Step::Close);
        };
        let start = self.head.len;
        // What the buffer holds after the head.
        let (used, done) = match &mut body.framing {
            BodyFraming::Length(remaining) => {
                let take = (self.buf.len() - start).min(*remaining as usize);
                if let Err(e) = body.spool.append(&self.buf[start..start + take]) {
                    return Some(Step::Refuse(spool_failed(e)));
                }
                *remaining -= take as u64;
                (take, *remaining == 0)
            }
            BodyFraming::Chunked(decoder) => {
                let mut used = 0;
                while !decoder.is_done() && start + used < self.buf.len() {
                    let d = match decoder.decode(&self.buf[start + used..]) {
                        Ok(d) => d,
                        Err(e) => return Some(Step::Refuse(e)),
                    };
                    let data = start + used + d.data.0..start + used + d.data.1;
                    if let Err(e) = body.spool.append(&self.buf[data]) {
                        return Some(Step::Refuse(spool_failed(e)));
                    }
                    if d.consumed == 0 {
                        break;
                    }
                    used += d.consumed;
                }
                (used, decoder.is_done())
            }
        };
        self.buf.drain(start..start + used);
        if done {
            let spool = std::mem::take(&mut body.spool);
            self.phase = Phase::Ready(Some(spool));
            return Some(Step::Request);
        }
        // Keep the buffer small while a large body streams through it.
        let room = (self.buf.capacity() - self.buf.len()).clamp(4096, 64 * 1024);
        match client::read_available(self.fd.as_raw_fd(), &mut self.buf, room) {
            Ok(Got::Bytes(n)) => {
                self.received += n as u64;
                let earned = self.received.saturating_mul(1000) / MIN_BODY_RATE;
                self.deadline = self.started + rules.request_ms.max(earned);
                // The head was accepted; if the buffer grew past its charge, the budget goes
                // over by one connection's growth rather than failing a request under way.
                let _ = self.charge_buffer();
                None
            }
            Ok(Got::Nothing) => Some(Step::Wait),
            Ok(Got::Eof) | Err(_) => Some(Step::Close),
        }
    }

    /// Takes the complete request's body (if any) for the app.
    pub fn take_body(&mut self) -> Option<Spool> {
        match &mut self.phase {
            Phase::Ready(body) => body.take(),
            _ => None,
        }
    }

    /// The app has answered. Drops the request from the buffer and gets ready for the next one
    /// on a kept-alive connection. Returns false when the connection must close instead.
    pub fn finish_request(&mut self, keep_alive: bool, rules: &Rules) -> bool {
        let consumed = self.head.len.min(self.buf.len());
        self.buf.drain(..consumed);
        self.head.len = 0;
        self.scanner.reset();
        self.served += 1;
        if !keep_alive {
            self.release_head_bytes();
            return false;
        }
        if self.buf.is_empty() {
            if self.buf.capacity() > 4 * BUF_START {
                self.buf = Vec::with_capacity(BUF_START);
            }
            self.phase = Phase::Idle;
            self.deadline = sys::monotonic_ms() + rules.keepalive_ms.max(1);
        } else {
            // Pipelined bytes are the next request's beginning: its clock runs.
            self.begin_request(rules);
        }
        // Only ever less than before: the budget cannot refuse it.
        let _ = self.charge_buffer();
        true
    }

    /// After the last response: true when the connection can simply be closed. A reset, which
    /// could destroy the response on its way, is sent by close(2) only when unread bytes wait in
    /// the receive queue; so when nothing is buffered and a read finds nothing waiting, a plain
    /// close is as safe as lingering and costs three system calls less (the common case: a
    /// client that sent `Connection: close`).
    pub fn can_close_at_once(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = Vec::with_capacity(1);
        matches!(
            client::read_available(self.fd.as_raw_fd(), &mut probe, 1),
            Ok(Got::Nothing | Got::Eof)
        )
    }

    /// Starts the staged close of RFC 9112 §9.6: shut our side for writing, then drain.
    pub fn start_lingering(&mut self) {
        sys::shutdown_write(self.fd.as_raw_fd());
        self.release_head_bytes();
        self.buf = Vec::new();
        self.phase = Phase::Lingering { drained: 0 };
        self.deadline = sys::monotonic_ms() + LINGER_MS;
    }

    fn linger(&mut self) -> Step {
        let Phase::Lingering { drained } = &mut self.phase else {
            return Step::Close;
        };
        let mut scratch = Vec::with_capacity(16 * 1024);
        loop {
            scratch.clear();
            match client::read_available(self.fd.as_raw_fd(), &mut scratch, 16 * 1024) {
                Ok(Got::Bytes(n)) => {
                    *drained += n;
                    if *drained > LINGER_MAX {
                        return Step::Close;
                    }
                }
                Ok(Got::Nothing) => return Step::Wait,
                Ok(Got::Eof) | Err(_) => return Step::Close,
            }
        }
    }
}

/// The body could not be stored (a full disk, say): the server's failure, not the client's.
fn spool_failed(e: std::io::Error) -> Error {
    crate::error!("Cannot store a request body: {e}");
    Error::ServerError("cannot store the request body")
}
