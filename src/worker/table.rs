//! The worker's table of connections that wait: parked in a slab, indexed by epoll token.
//!
//! A connection is either held by the one thread serving it, or parked here. Parking and
//! arming its epoll registration happen under the table's one lock: once the lock is
//! released, the connection is both findable and armed, so the thread woken for it finds it,
//! and the sweeper can never close a descriptor that a parking thread is about to arm.
//! A token carries the slot's generation, so an event for a connection that has since been
//! closed (and its slot reused) is recognised and dropped.
//!
//! Registrations are level-triggered and stay armed across requests: parking a connection
//! again costs no system call. With several threads, an event can come for a connection that
//! another thread holds (its client pipelined or hung up while the app ran, and a follower has
//! taken over the event loop). Level-triggered, it would come again on every wait, so the
//! thread that meets it takes the descriptor out of the epoll set, under the lock, and the
//! holder adds it back when it parks the connection. The common case pays nothing; the
//! re-arm per request that `EPOLLONESHOT` costs was a tenth of `--threads 8`'s throughput.
//!
//! Connections that have work without the socket having anything new — requests pipelined
//! behind the ones just served, left for later so one client cannot monopolise a thread —
//! are parked and their tokens put on the ready queue, which the event loop serves after
//! each wait as if epoll had reported them.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::conn::Conn;
use crate::sys::Epoll;

/// What a parked connection waits for: bytes, or the client's hang-up. Level-triggered.
const CONN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;

/// epoll tokens from here on are connections; below are the signal pipe and the listeners.
pub const TOKEN_CONN0: u64 = 1 << 16;

/// The token of slot `idx` in generation `gen`.
pub fn token(idx: usize, gen: u32) -> u64 {
    TOKEN_CONN0 + ((u64::from(gen) << 32) | idx as u64)
}

fn untoken(token: u64) -> (usize, u32) {
    let t = token - TOKEN_CONN0;
    ((t & 0xffff_ffff) as usize, (t >> 32) as u32)
}

#[derive(Default)]
struct Slot {
    gen: u32,
    /// The slot belongs to an open connection (parked here or held by a thread).
    used: bool,
    conn: Option<Box<Conn>>,
    /// The connection's descriptor, open while `used`: a holder frees the slot before it
    /// closes the descriptor.
    fd: RawFd,
    /// The descriptor is in the epoll set. Always true while parked.
    armed: bool,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Connections open: parked or being served.
    open: usize,
}

impl Slab {
    /// Frees slot `idx`; returns whether its descriptor was still in the epoll set.
    fn release(&mut self, idx: usize) -> bool {
        let Some(slot) = self.slots.get_mut(idx) else {
            return false;
        };
        if !slot.used {
            return false;
        }
        slot.used = false;
        slot.conn = None;
        self.free.push(idx);
        self.open -= 1;
        std::mem::take(&mut slot.armed)
    }
}

/// A connection taken out of the table, with the slot it keeps while it is served.
pub struct Held {
    /// The connection.
    pub conn: Box<Conn>,
    /// Its slot.
    pub idx: usize,
    /// The slot's generation.
    pub gen: u32,
}

/// The table itself.
#[derive(Default)]
pub struct Table {
    slab: Mutex<Slab>,
    ready: Mutex<VecDeque<u64>>,
    /// Tokens on the ready queue: the event loop looks at it after every wait, and most of
    /// the time it is empty, which this says without the lock.
    queued: std::sync::atomic::AtomicUsize,
}

impl Table {
    fn slab(&self) -> MutexGuard<'_, Slab> {
        // A panic while the lock was held cannot leave the slab half-updated: every change
        // is a few field stores with no calls in between.
        self.slab.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open (parked or being served).
    pub fn open(&self) -> usize {
        self.slab().open
    }

    /// Gives a new connection a slot, held by the caller.
    pub fn insert(&self, conn: Box<Conn>) -> Held {
        let mut slab = self.slab();
        let idx = slab.free.pop().unwrap_or_else(|| {
            slab.slots.push(Slot::default());
            slab.slots.len() - 1
        });
        slab.open += 1;
        let slot = &mut slab.slots[idx];
        slot.gen = slot.gen.wrapping_add(1);
        slot.used = true;
        slot.fd = conn.fd.as_raw_fd();
        slot.armed = false;
        let gen = slot.gen;
        Held { conn, idx, gen }
    }

    /// Takes the connection parked under `token`, if it is still there. If another thread
    /// holds it, its descriptor leaves the epoll set until that thread parks it (see the
    /// module comment).
    pub fn take(&self, token: u64, epoll: &Epoll) -> Option<Held> {
        let (idx, gen) = untoken(token);
        let mut slab = self.slab();
        match slab.slots.get_mut(idx) {
            Some(slot) if slot.used && slot.gen == gen => match slot.conn.take() {
                Some(conn) => Some(Held { conn, idx, gen }),
                None => {
                    if slot.armed {
                        // The holder frees the slot, under this lock, before it closes the
                        // descriptor: `fd` is still this connection's.
                        let _ = epoll.delete(slot.fd);
                        slot.armed = false;
                    }
                    None
                }
            },
            _ => None,
        }
    }

    /// Parks a held connection, adding its descriptor to the epoll set if it is not there yet,
    /// both under the lock. When that fails the connection is handed back, to be closed.
    pub fn park(&self, held: Held, epoll: &Epoll) -> Result<(), Box<Conn>> {
        let Held { conn, idx, gen } = held;
        let mut slab = self.slab();
        let slot = &mut slab.slots[idx];
        if !slot.armed {
            if epoll
                .add(conn.fd.as_raw_fd(), CONN_EVENTS, token(idx, gen))
                .is_err()
            {
                slab.release(idx);
                return Err(conn);
            }
            slot.armed = true;
        }
        slot.conn = Some(conn);
        Ok(())
    }

    /// Frees the slot of a connection that is being closed by its holder; returns whether its
    /// descriptor is still in the epoll set (for [`close`]).
    pub fn release(&self, idx: usize) -> bool {
        self.slab().release(idx)
    }

    /// Takes out every parked connection `pick` chooses, freeing their slots; the caller
    /// closes them (all are in the epoll set, as parked connections are). (The boxes are the
    /// slab's own, handed over as they are.)
    #[allow(clippy::vec_box)]
    pub fn take_where(&self, mut pick: impl FnMut(&Conn) -> bool) -> Vec<Box<Conn>> {
        let mut slab = self.slab();
        let mut out = Vec::new();
        for idx in 0..slab.slots.len() {
            if slab.slots[idx].conn.as_deref().is_some_and(&mut pick) {
                out.extend(slab.slots[idx].conn.take());
                slab.release(idx);
            }
        }
        out
    }

    /// Queues every parked connection `pick` chooses, as if epoll had reported it; returns
    /// whether any was.
    pub fn queue_where(&self, mut pick: impl FnMut(&Conn) -> bool) -> bool {
        let mut tokens = Vec::new();
        {
            let mut slab = self.slab();
            for idx in 0..slab.slots.len() {
                let gen = slab.slots[idx].gen;
                if let Some(conn) = slab.slots[idx].conn.as_deref_mut() {
                    if pick(conn) {
                        conn.queued = true;
                        tokens.push(token(idx, gen));
                    }
                }
            }
        }
        let any = !tokens.is_empty();
        for t in tokens {
            self.push_ready(t);
        }
        any
    }

    /// Puts a parked connection's token on the ready queue.
    pub fn push_ready(&self, token: u64) {
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        ready.push_back(token);
        self.queued
            .store(ready.len(), std::sync::atomic::Ordering::Release);
    }

    /// True when some parked connection has work waiting.
    pub fn has_ready(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// Takes the tokens queued so far; the ones queued while they are served wait for the next
    /// round, after the next look at the sockets.
    pub fn take_ready(&self) -> VecDeque<u64> {
        if !self.has_ready() {
            return VecDeque::new();
        }
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        self.queued.store(0, std::sync::atomic::Ordering::Release);
        std::mem::take(&mut *ready)
    }
}

/// Closes a connection: out of the epoll set first, if `armed` (it is in it). Closing our
/// descriptor alone does not remove the registration when another process (a child the app
/// forked) holds a copy of the socket, and a registration left behind keeps reporting events
/// for a token nobody owns, which would make the worker spin.
pub fn close(conn: Box<Conn>, armed: bool, epoll: &Epoll) {
    if armed {
        let _ = epoll.delete(conn.fd.as_raw_fd());
    }
    drop(conn);
}
