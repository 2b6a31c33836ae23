//! `--max-worker-rss`: replacing workers whose memory has grown past a limit.
//!
//! gunicorn has no such setting (its answer to leaks is `--max-requests`); uWSGI's
//! `reload-on-rss` and Apache's `MaxMemFree` are the models. A worker past the limit retires
//! as a `--max-requests` worker does (HUP to the worker): it stops accepting, finishes the
//! requests it has, answers each kept-alive connection's next request, and exits, while the
//! arbiter starts its replacement at once.
//!
//! The arbiter checks, not the worker, and it checks at most once per [`CHECK_MS`]:
//!
//! * **Staggered by construction.** Workers of one app grow alike, so they tend to cross the
//!   limit together; retiring all of them at once would leave only booting workers. The
//!   arbiter retires at most one worker per check, the largest over the limit, and none while
//!   fewer than the wanted number of workers have booted and serve, so at most one worker is
//!   ever on its way out for memory, and capacity never drops by more than one worker. A check
//!   in each worker, even at jittered times, could not know what the others are doing.
//! * **Cheap.** One read of `/proc/PID/statm` per worker per second, in a process that has
//!   nothing else to do; the workers' request path is untouched.
//!
//! The size measured is the resident set (RSS), shared pages included, as `ps` and `top` show
//! it: the number an operator compares with the machine's memory. Each worker notes its size
//! as it starts serving; one that starts over the limit is not replaced (its successor would
//! start just as large, and replacing would never end), and the operator is told once.

use crate::sys::{self, Pid};

/// How often the arbiter reads its workers' sizes.
pub const CHECK_MS: u64 = 1000;

/// The largest `--max-worker-rss`, in MiB (a tebibyte): the byte count must fit a `u64` with
/// room to spare, and nobody means more.
pub const MAX_MIB: u64 = 1 << 20;

/// One worker as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The worker's pid.
    pub pid: Pid,
    /// Its resident size (bytes) as it started serving; 0 when unknown.
    pub boot_rss: u64,
    /// It imported the app and serves, and is not already on its way out.
    pub serving: bool,
}

/// The limit and when to look next.
#[derive(Debug)]
pub struct RssLimit {
    limit_bytes: u64,
    next_check: u64,
    /// Said once: a worker was over the limit from its start.
    warned_born_over: bool,
}

impl RssLimit {
    /// `mib` from `--max-worker-rss`; `None` when it is 0 (no limit).
    pub fn new(mib: u64) -> Option<RssLimit> {
        (mib > 0).then(|| RssLimit {
            limit_bytes: mib.min(MAX_MIB) << 20,
            next_check: 0,
            warned_born_over: false,
        })
    }

    /// The limit in MiB, for the log.
    pub fn limit_mib(&self) -> u64 {
        self.limit_bytes >> 20
    }

    /// The worker to retire now, with its size in bytes, if one is over the limit and the
    /// others leave room for it: every one of the `wanted` workers must be serving (none is
    /// booting or retiring), so one leaves at a time.
    pub fn pick(&mut self, workers: &[Candidate], wanted: usize) -> Option<(Pid, u64)> {
        let now = sys::monotonic_ms();
        if now < self.next_check {
            return None;
        }
        self.next_check = now + CHECK_MS;
        let serving = workers.iter().filter(|w| w.serving).count();
        if serving < wanted || serving < workers.len() {
            return None;
        }
        // A worker that was over the limit before it served anything would be replaced by
        // one just as large, and that one by another, for ever: such workers are left alone
        // (and the operator told once) — the limit is below what the app needs to start.
        let born_over = workers.iter().find(|w| w.boot_rss > self.limit_bytes);
        if let (Some(w), false) = (born_over, self.warned_born_over) {
            self.warned_born_over = true;
            crate::warning!(
                "Worker (pid:{}) was over --max-worker-rss {} MiB as it started serving ({} \
                 MiB): workers that start over the limit are not replaced for memory",
                w.pid,
                self.limit_mib(),
                w.boot_rss >> 20
            );
        }
        self.pick_from(
            workers
                .iter()
                .filter(|w| w.boot_rss <= self.limit_bytes)
                .map(|w| (w.pid, sys::rss_of(w.pid))),
        )
    }

    /// The largest of `sizes` above the limit.
    fn pick_from(&self, sizes: impl Iterator<Item = (Pid, Option<u64>)>) -> Option<(Pid, u64)> {
        sizes
            .filter_map(|(pid, rss)| Some((pid, rss?)))
            .filter(|&(_, rss)| rss > self.limit_bytes)
            .max_by_key(|&(_, rss)| rss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_largest_worker_over_the_limit() {
        let limit = RssLimit::new(100).expect("a limit");
        let mib = |n: u64| Some(n << 20);
        assert_eq!(
            limit.pick_from([(1, mib(90)), (2, mib(150)), (3, mib(120)), (4, None)].into_iter()),
            Some((2, 150 << 20))
        );
        assert_eq!(
            limit.pick_from([(1, mib(100)), (2, None)].into_iter()),
            None
        );
        assert!(RssLimit::new(0).is_none());
    }

    #[test]
    fn waits_until_every_wanted_worker_serves() {
        let mut limit = RssLimit::new(1).expect("a limit");
        let me = sys::getpid();
        let booting = [
            Candidate {
                pid: me,
                boot_rss: 0,
                serving: true,
            },
            Candidate {
                pid: 0,
                boot_rss: 0,
                serving: false,
            },
        ];
        assert_eq!(limit.pick(&booting, 2), None, "one is still booting");
        limit.next_check = 0;
        let alone = [Candidate {
            pid: me,
            boot_rss: 0,
            serving: true,
        }];
        assert_eq!(
            limit.pick(&alone, 2),
            None,
            "its replacement is not there yet"
        );
        limit.next_check = 0;
        let picked = limit
            .pick(&alone, 1)
            .expect("this test process is over 1 MiB");
        assert_eq!(picked.0, me);
        assert_eq!(limit.pick(&alone, 1), None, "once per check period");
    }
}
