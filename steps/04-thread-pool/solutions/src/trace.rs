//! `--trace`: one line on stderr for each thing the server does, so that a class can watch the
//! mechanism at work while it runs. Chapter 1 introduces it; every step has this same file,
//! and only the lines that call `trace!` change from step to step.
//!
//! Why stderr: stdout carries the one line scripts and tests read ("Listening on ..."), and
//! stderr is unbuffered, so each line leaves the moment its event happens, already in the
//! order the events happened, and no line can sit in a buffer that a `fork` would copy.
//!
//! Left out: timestamps, levels and a log file; minigun's `log.rs` has those.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `--trace` was given; set while the flags are read, then only read.
pub static ON: AtomicBool = AtomicBool::new(false);

/// Turns tracing on, for the rest of the process's life.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

// ANCHOR: trace
/// Writes one line about what the server just did to stderr, if `--trace` is on.
///
/// Off, a `trace!` costs one load of a flag and a branch: its arguments are not even
/// evaluated. On, the line is formatted first and written with one `write(2)`, so lines
/// written at the same moment by two threads never mix inside a line.
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::trace::ON.load(std::sync::atomic::Ordering::Relaxed) {
            $crate::trace::write_line(format_args!($($arg)*));
        }
    };
}

/// Formats one trace line and writes it in one piece (the part of `trace!` that runs only
/// when tracing is on).
pub fn write_line(args: std::fmt::Arguments) {
    let line = format!("trace: {args}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}
// ANCHOR_END: trace
