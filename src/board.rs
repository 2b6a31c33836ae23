//! What each worker thread is serving, kept in memory the master shares, so that a worker
//! killed for `--timeout` is explained: the master reads, from outside, the requests the stuck
//! worker had in the app and for how long — a worker stuck in the app cannot say it itself.
//!
//! Each worker slot has one record per thread (up to [`MAX_THREADS`]) of [`WORDS`] `AtomicU64`s: the request's start
//! (monotonic ms, 0 when the thread is idle), the length of the text, then the text packed
//! eight bytes to a word: the client's address, the request line, the `Referer` and the
//! `User-Agent`, NUL-separated, cut to fit. A thread writes the text first and the start last
//! (release), and clears the start when its request ends; the master reads the start first
//! (acquire). A record read while it is being rewritten may mix two requests' text: it is a
//! diagnosis printed once, never used for anything else.

use std::sync::atomic::{AtomicU64, Ordering};

/// Most threads per worker with a record; requests of threads beyond them are not reported.
pub const MAX_THREADS: usize = 64;
/// Words per record.
pub const WORDS: usize = 64;

/// Words a worker slot needs for `threads` threads (at most [`MAX_THREADS`] are recorded).
pub fn slot_words(threads: usize) -> usize {
    threads.clamp(1, MAX_THREADS) * WORDS
}
/// Text bytes a record holds.
const TEXT: usize = (WORDS - 2) * 8;

/// One worker's records.
#[derive(Clone, Copy)]
pub struct Board {
    words: &'static [AtomicU64],
}

/// A request a worker had in the app, as the master reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// When it entered the app (monotonic ms).
    pub started: u64,
    /// The client's address.
    pub remote: String,
    /// The request line (`GET /path?q HTTP/1.1`).
    pub request_line: String,
    /// The `Referer` header, or empty.
    pub referer: String,
    /// The `User-Agent` header, or empty.
    pub user_agent: String,
}

impl Board {
    /// The records in `words` (a slot's [`slot_words`] words of the shared page).
    pub fn new(words: &'static [AtomicU64]) -> Board {
        Board { words }
    }

    fn record(&self, thread: usize) -> Option<&'static [AtomicU64]> {
        self.words.get(thread * WORDS..(thread + 1) * WORDS)
    }

    /// Notes that `thread` has a request in the app from now.
    pub fn enter(&self, thread: usize, started: u64, fields: [&[u8]; 4]) {
        let Some(rec) = self.record(thread) else {
            return;
        };
        let mut text = [0u8; TEXT];
        let mut len = 0;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 && len < TEXT {
                len += 1; // the NUL between fields
            }
            let take = field.len().min(TEXT - len);
            text[len..len + take].copy_from_slice(&field[..take]);
            len += take;
        }
        for (word, chunk) in rec[2..].iter().zip(text[..len].chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        rec[1].store(len as u64, Ordering::Relaxed);
        rec[0].store(started.max(1), Ordering::Release);
    }

    /// Notes that `thread`'s request has left the app.
    pub fn leave(&self, thread: usize) {
        if let Some(rec) = self.record(thread) {
            rec[0].store(0, Ordering::Release);
        }
    }

    /// Threads with a record.
    pub fn threads(&self) -> usize {
        self.words.len() / WORDS
    }

    /// Clears every record (a new worker in the slot).
    pub fn reset(&self) {
        for thread in 0..self.threads() {
            self.leave(thread);
        }
    }

    /// The requests in the app now.
    pub fn in_flight(&self) -> Vec<InFlight> {
        let mut out = Vec::new();
        for thread in 0..self.threads() {
            let Some(rec) = self.record(thread) else {
                break;
            };
            let started = rec[0].load(Ordering::Acquire);
            if started == 0 {
                continue;
            }
            let len = (rec[1].load(Ordering::Relaxed) as usize).min(TEXT);
            let mut text = Vec::with_capacity(len);
            for word in &rec[2..] {
                text.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
                if text.len() >= len {
                    break;
                }
            }
            text.truncate(len);
            let mut fields = text
                .split(|&b| b == 0)
                .map(|f| String::from_utf8_lossy(f).into_owned());
            out.push(InFlight {
                started,
                remote: fields.next().unwrap_or_default(),
                request_line: fields.next().unwrap_or_default(),
                referer: fields.next().unwrap_or_default(),
                user_agent: fields.next().unwrap_or_default(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back_what_fits() {
        let words: &'static [AtomicU64] =
            Box::leak((0..slot_words(16)).map(|_| AtomicU64::new(0)).collect());
        let board = Board::new(words);
        board.enter(3, 42, [b"10.0.0.1", b"GET /stuck HTTP/1.1", b"", b"curl/8"]);
        let long = vec![b'x'; 1000];
        board.enter(0, 7, [b"::1", &long, b"r", b"ua"]);
        let seen = board.in_flight();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].request_line, "GET /stuck HTTP/1.1");
        assert_eq!(seen[1].user_agent, "curl/8");
        assert_eq!(seen[1].started, 42);
        assert_eq!(seen[0].request_line.len(), TEXT - 4);
        board.leave(3);
        assert_eq!(board.in_flight().len(), 1);
        board.enter(99, 1, [b"", b"", b"", b""]);
    }
}
