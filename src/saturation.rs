//! Noticing, in the master, that requests are queueing: every thread of every worker is busy and
//! connections wait in the listen backlog.
//!
//! Two numbers make the picture, and the master reads both without asking any worker:
//!
//! * **Busy threads.** Each worker counts its threads that are serving a request, from the
//!   moment the request is handed to the app until its response is out (`client::Pulse::occupy`),
//!   in a word of the shared page next to its heartbeat. A thread writing to a slow client counts
//!   as busy: it cannot accept anyone else either.
//! * **Waiting connections.** On Linux, `TCP_INFO` on a *listening* socket reports its accept
//!   queue (`sys::listen_queue`): connections whose handshake is done and that no worker has
//!   taken. With every thread busy nobody is in `accept`, so this is exactly the queue of clients
//!   left waiting. (Unix-socket listeners have no such counter; behind one only, the watch is
//!   blind and stays quiet.)
//!
//! The master samples both on each pass of its loop (about once a second). Saturation starts at
//! the first sample where all threads are busy and the backlog is not empty: one warning, with
//! the numbers. It ends once samples have shown spare capacity or an empty backlog for half a
//! second, so a load that hovers at the limit does not print a pair of lines per second: one
//! info line, with how long it lasted and the longest queue seen. gunicorn has no such line; its
//! `--enable-backlog-metric` (the `gunicorn.backlog` histogram) is sent here too.
//!
//! What it cannot see: keep-alive clients whose next request waits in their own socket rather
//! than in the listen backlog (they were accepted earlier), so a load made only of keep-alive
//! connections shows busy threads and an empty backlog.

use crate::net::Listener;
use crate::statsd;
use crate::sys;
use std::os::fd::AsRawFd;

/// How long the load must stay under capacity before saturation is declared over (ms).
const CALM_MS: u64 = 500;

/// How often `gunicorn.backlog` is sent (ms), as gunicorn's loop does once a second.
const BACKLOG_EVERY_MS: u64 = 1000;

/// One look at the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Threads able to serve: threads per worker times the workers that serve.
    pub capacity: u64,
    /// Threads serving a request now.
    pub busy: u64,
    /// Connections waiting in the listen backlogs; `None` when no listener can tell.
    pub waiting: Option<u64>,
}

impl Sample {
    fn saturated(&self) -> bool {
        self.capacity > 0 && self.busy >= self.capacity && self.waiting.is_some_and(|w| w > 0)
    }
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Requests started queueing.
    Started {
        /// Threads, all busy.
        threads: u64,
        /// Connections waiting.
        waiting: u64,
    },
    /// They stopped.
    Ended {
        /// How long the episode lasted (ms).
        lasted_ms: u64,
        /// The longest backlog seen during it.
        peak: u64,
    },
}

/// An episode of saturation in progress.
#[derive(Debug, Clone, Copy)]
struct Episode {
    since_ms: u64,
    peak: u64,
    /// When samples started showing spare capacity, if they do.
    calm_since_ms: Option<u64>,
}

/// The master's view of the load, kept across passes of its loop.
#[derive(Debug, Default)]
pub struct LoadWatch {
    episode: Option<Episode>,
    /// The `gunicorn.workers` value last sent: gunicorn sends it only when it changes.
    workers_sent: Option<usize>,
    /// `--enable-backlog-metric`.
    backlog_metric: bool,
    next_backlog_ms: u64,
}

impl LoadWatch {
    /// A watch; `backlog_metric` sends gunicorn's `gunicorn.backlog` histogram.
    pub fn new(backlog_metric: bool) -> LoadWatch {
        LoadWatch {
            backlog_metric,
            ..LoadWatch::default()
        }
    }

    /// One pass of the master's loop: `workers` processes are kept (gunicorn's
    /// `gunicorn.workers`), `capacity` threads serve, `busy` of them are in a request.
    pub fn observe(&mut self, workers: usize, capacity: u64, busy: u64, listeners: &[Listener]) {
        if self.workers_sent != Some(workers) {
            self.workers_sent = Some(workers);
            statsd::gauge("gunicorn.workers", workers as u64);
        }
        let waiting = backlog(listeners);
        let now = sys::monotonic_ms();
        if self.backlog_metric && now >= self.next_backlog_ms {
            self.next_backlog_ms = now + BACKLOG_EVERY_MS;
            if let Some(waiting) = waiting {
                statsd::histogram("gunicorn.backlog", waiting);
            }
        }
        let sample = Sample {
            capacity,
            busy,
            waiting,
        };
        match self.step(now, sample) {
            Some(Change::Started { threads, waiting }) => {
                crate::warning!(
                    "All {threads} threads busy and {waiting} connections waiting in the listen \
                     backlog: requests are queueing (more --workers or --threads, or a faster \
                     app, would help)"
                );
                statsd::gauge("minigun.saturated", 1);
            }
            Some(Change::Ended { lasted_ms, peak }) => {
                crate::info!(
                    "Requests no longer queueing after {}.{} s (at most {peak} connections \
                     waited)",
                    lasted_ms / 1000,
                    lasted_ms % 1000 / 100
                );
                statsd::gauge("minigun.saturated", 0);
            }
            None => {}
        }
    }

    /// Feeds one sample taken at `now_ms`; returns the change it makes, if any.
    pub fn step(&mut self, now_ms: u64, sample: Sample) -> Option<Change> {
        let saturated = sample.saturated();
        let waiting = sample.waiting.unwrap_or(0);
        match (&mut self.episode, saturated) {
            (None, false) => None,
            (None, true) => {
                self.episode = Some(Episode {
                    since_ms: now_ms,
                    peak: waiting,
                    calm_since_ms: None,
                });
                Some(Change::Started {
                    threads: sample.capacity,
                    waiting,
                })
            }
            (Some(ep), true) => {
                ep.peak = ep.peak.max(waiting);
                ep.calm_since_ms = None;
                None
            }
            (Some(ep), false) => {
                let calm = *ep.calm_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(calm) < CALM_MS {
                    return None;
                }
                let change = Change::Ended {
                    lasted_ms: calm.saturating_sub(ep.since_ms),
                    peak: ep.peak,
                };
                self.episode = None;
                Some(change)
            }
        }
    }
}

/// Connections waiting to be accepted, summed over the listeners that can tell.
fn backlog(listeners: &[Listener]) -> Option<u64> {
    let mut total = None;
    for l in listeners {
        if let Ok((waiting, _limit)) = sys::listen_queue(l.fd.as_raw_fd()) {
            *total.get_or_insert(0) += u64::from(waiting);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(busy: u64, waiting: u64) -> Sample {
        Sample {
            capacity: 2,
            busy,
            waiting: Some(waiting),
        }
    }

    #[test]
    fn one_line_when_saturation_starts_and_one_when_it_ends() {
        let mut w = LoadWatch::new(false);
        assert_eq!(w.step(0, sample(1, 0)), None);
        assert_eq!(w.step(1000, sample(2, 0)), None, "busy but nobody waits");
        assert_eq!(
            w.step(2000, sample(2, 3)),
            Some(Change::Started {
                threads: 2,
                waiting: 3
            })
        );
        assert_eq!(w.step(3000, sample(2, 5)), None);
        // A dip shorter than CALM_MS is not an end.
        assert_eq!(w.step(3100, sample(1, 0)), None);
        assert_eq!(w.step(3200, sample(2, 1)), None);
        assert_eq!(w.step(4000, sample(0, 0)), None);
        assert_eq!(
            w.step(5000, sample(0, 0)),
            Some(Change::Ended {
                lasted_ms: 2000,
                peak: 5
            })
        );
        assert_eq!(w.step(6000, sample(0, 0)), None);
    }

    #[test]
    fn stays_quiet_without_a_backlog_reading_or_without_workers() {
        let mut w = LoadWatch::new(false);
        let blind = Sample {
            capacity: 2,
            busy: 2,
            waiting: None,
        };
        assert_eq!(w.step(0, blind), None);
        let none = Sample {
            capacity: 0,
            busy: 0,
            waiting: Some(4),
        };
        assert_eq!(w.step(1000, none), None);
    }
}
