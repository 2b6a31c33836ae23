//! `--trace`: one line on stderr for each thing the server does, so that a class can watch the
//! mechanism at work while it runs. Chapter 1 introduces it; every step has this file, and
//! only the lines that call `trace!` change from step to step, except two: from step 06 on
//! there are several processes, so each line starts with the pid of the one that wrote it,
//! and `log!` takes the place of `eprintln!` for the lines printed without `--trace`.
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
/// written at the same moment by two processes never mix inside a line.
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
    write_whole(format_args!("trace: [{}] {args}", std::process::id()));
}
// ANCHOR_END: trace

// ANCHOR: log
/// `eprintln!` for a program of several processes: the line is formatted first and written
/// with one `write(2)`. `eprintln!` hands the kernel a line in pieces (the text, each value,
/// the newline), so two processes printing at the same moment could mix their lines.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::trace::write_whole(format_args!($($arg)*))
    };
}
// ANCHOR_END: log

/// Writes `args` and a newline to stderr in one piece. A write of up to `PIPE_BUF` (4096)
/// bytes to a pipe is atomic (pipe(7)), and a terminal takes a short line whole.
pub fn write_whole(args: std::fmt::Arguments) {
    let line = format!("{args}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}
