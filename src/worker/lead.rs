//! Leader/followers, for `--threads` above one.
//!
//! Only the leader waits in epoll_wait and serves what it gets, so a fast app runs on one hot
//! thread with no hand-off and no fight over the GIL. One follower, the successor, checks every
//! [`TAKEOVER_MS`] whether the leader has been inside one request for longer than that; if so,
//! it becomes the new leader, and the old one, once its request is done, becomes a follower.
//! When the app is slow on average (a database call, `time.sleep`), the leader hands over
//! before each request instead of after a delay. The other followers sleep until needed.
//!
//! An idle worker sleeps: once the successor has seen no request for [`IDLE_CHECKS`] checks in
//! a row, it waits for the next request to wake it instead of checking every 2 ms. Under load
//! nothing is woken per request; the first request after a quiet spell pays one wake-up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::sys;

/// How long the leader may be inside one request before its successor takes over the event
/// loop: short enough that a slow request barely delays the connections behind it, long enough
/// that a fast app never pays for a thread switch.
pub const TAKEOVER_MS: u64 = 2;

/// Checks without a request before the successor goes to sleep (100 ms at 2 ms a check).
const IDLE_CHECKS: u32 = 50;

/// How often sleeping followers look up to notice a stop nobody told them about.
const FOLLOWER_NAP: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    has_leader: bool,
    has_successor: bool,
    done: bool,
}

/// The leadership of one worker's threads.
pub struct Leadership {
    state: Mutex<State>,
    /// The successor waits here with a timeout.
    successor: Condvar,
    /// The other followers wait here.
    followers: Condvar,
    /// Bumped each time leadership changes hands; a thread leads while the epoch is its own.
    epoch: AtomicU64,
    /// When the leader's current request started (ms); 0 between requests; 1 asks the successor
    /// to take over now.
    leader_busy_since: AtomicU64,
    /// Requests the leader has started: how the successor tells a quiet worker from a busy one.
    started: AtomicU64,
    /// The successor sleeps until the next request (see the module comment).
    successor_asleep: AtomicBool,
    /// Moving average of app call times (µs), to tell slow apps from fast ones.
    app_time_us: AtomicU64,
    /// The rest of the leader's last epoll batch, served one by one.
    pending: Mutex<VecDeque<u64>>,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership::new()
    }
}

impl Leadership {
    /// No leader yet; the first thread to [`follow`](Leadership::follow) leads.
    pub fn new() -> Leadership {
        Leadership {
            state: Mutex::new(State::default()),
            successor: Condvar::new(),
            followers: Condvar::new(),
            epoch: AtomicU64::new(0),
            leader_busy_since: AtomicU64::new(0),
            started: AtomicU64::new(0),
            successor_asleep: AtomicBool::new(false),
            app_time_us: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::with_capacity(64)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> MutexGuard<'_, VecDeque<u64>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when events of the last batch wait to be served.
    pub fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }

    /// Queues a batch of tokens for the leader (this one or the next).
    pub fn push_pending(&self, tokens: impl IntoIterator<Item = u64>) {
        self.pending().extend(tokens);
    }

    /// The next queued token.
    pub fn pop_pending(&self) -> Option<u64> {
        self.pending().pop_front()
    }

    /// True while the thread that led in `epoch` still leads.
    pub fn still_leader(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch
    }

    /// Waits until this thread leads; returns its epoch, or `None` once the worker is done
    /// (`finished` is asked whenever the thread wakes).
    pub fn follow(&self, finished: impl Fn() -> bool) -> Option<u64> {
        let mut st = self.state();
        loop {
            if st.done || finished() {
                st.done = true;
                self.successor.notify_all();
                self.followers.notify_all();
                return None;
            }
            if !st.has_leader {
                st.has_leader = true;
                return Some(self.epoch.fetch_add(1, Ordering::AcqRel) + 1);
            }
            if st.has_successor {
                st = self
                    .followers
                    .wait_timeout(st, FOLLOWER_NAP)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            st.has_successor = true;
            let mut quiet: u32 = 0;
            let mut seen = self.started.load(Ordering::SeqCst);
            loop {
                if st.done || finished() {
                    st.has_successor = false;
                    break;
                }
                // Checked before every wait, so a hand-over asked for before this thread
                // became the successor is not missed.
                let busy = self.leader_busy_since.load(Ordering::Acquire);
                let stuck = busy != 0 && sys::monotonic_ms().saturating_sub(busy) >= TAKEOVER_MS;
                if stuck || !st.has_leader {
                    self.successor_asleep.store(false, Ordering::SeqCst);
                    st.has_successor = false;
                    st.has_leader = true;
                    self.leader_busy_since.store(0, Ordering::Release);
                    // Someone else becomes the successor.
                    self.followers.notify_one();
                    return Some(self.epoch.fetch_add(1, Ordering::AcqRel) + 1);
                }
                let now = self.started.load(Ordering::SeqCst);
                if busy == 0 && now == seen {
                    quiet = quiet.saturating_add(1);
                } else {
                    quiet = 0;
                    seen = now;
                }
                let nap = if quiet >= IDLE_CHECKS {
                    // Announce the nap, then look once more: a request that started in
                    // between either is seen here or sees the flag and wakes us (both sides
                    // use SeqCst, so one of them sees the other's write).
                    self.successor_asleep.store(true, Ordering::SeqCst);
                    if self.started.load(Ordering::SeqCst) == seen {
                        FOLLOWER_NAP
                    } else {
                        Duration::ZERO
                    }
                } else {
                    if self.successor_asleep.load(Ordering::Relaxed) {
                        self.successor_asleep.store(false, Ordering::SeqCst);
                    }
                    Duration::from_millis(TAKEOVER_MS)
                };
                if !nap.is_zero() {
                    st = self
                        .successor
                        .wait_timeout(st, nap)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// Called by the leader as a request starts: note the time, or hand over at once when the
    /// app is known to be slow; wake a sleeping successor.
    pub fn request_started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let slow = self.app_time_us.load(Ordering::Relaxed) > TAKEOVER_MS * 1000;
        if slow {
            self.leader_busy_since.store(1, Ordering::Release);
        } else {
            self.leader_busy_since
                .store(sys::monotonic_ms().max(2), Ordering::Release);
        }
        if slow || self.successor_asleep.load(Ordering::SeqCst) {
            // Under the lock, so the successor cannot check and then miss the wake-up.
            let _guard = self.state();
            self.successor.notify_one();
        }
    }

    /// Called as a request ends, with how long the app took.
    pub fn request_finished(&self, epoch_was: u64, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let avg = self.app_time_us.load(Ordering::Relaxed);
        self.app_time_us
            .store(avg - avg / 8 + us / 8, Ordering::Relaxed);
        if self.still_leader(epoch_was) {
            self.leader_busy_since.store(0, Ordering::Release);
        }
    }

    /// A thread leaves the loop: wake everyone so they notice.
    pub fn shut_down(&self) {
        self.state().done = true;
        self.successor.notify_all();
        self.followers.notify_all();
    }
}
