//! The error log and the access log.
//!
//! Lines look like gunicorn's (`[2026-11-22 10:00:00 +0000] [1234] [INFO] Booting worker with pid:
//! 1235`), so alerts and log parsers written for gunicorn keep working. Every line is formatted
//! into one buffer and handed to a single `write(2)` on an `O_APPEND` descriptor: lines from
//! threads and processes never interleave, and no lock is needed. Times are UTC.
//!
//! The access log is off unless `--access-logfile` is given, as in gunicorn; its format string
//! uses gunicorn's `%(x)s` atoms, compiled once at start into [`AccessFormat`].

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::date::{Civil, MONTHS};
use crate::sys;

/// Severity of an error-log line, gunicorn's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Per-request detail.
    Debug = 0,
    /// Lifecycle events: boot, listen, signals.
    Info = 1,
    /// Something odd that the server survived.
    Warning = 2,
    /// A failure: an app exception, a dead worker.
    Error = 3,
    /// The server cannot go on as asked.
    Critical = 4,
}

impl Level {
    /// Parses `--log-level`.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// The error log's threshold and descriptor; the access log's descriptor (-1 when off).
struct Sinks {
    level: AtomicU8,
    error_fd: AtomicI32,
    access_fd: AtomicI32,
}

static SINKS: Sinks = Sinks {
    level: AtomicU8::new(Level::Info as u8),
    error_fd: AtomicI32::new(2),
    access_fd: AtomicI32::new(-1),
};

/// Where the logs go, as configured.
static TARGETS: OnceLock<(Option<String>, Option<String>)> = OnceLock::new();

/// Sets the error-log level and opens the log files (`-` means stderr for the error log and
/// stdout for the access log, as in gunicorn).
pub fn configure(
    level: Level,
    error_log: Option<&str>,
    access_log: Option<&str>,
) -> io::Result<()> {
    SINKS.level.store(level as u8, Ordering::Relaxed);
    let _ = TARGETS.set((error_log.map(str::to_owned), access_log.map(str::to_owned)));
    if let Some(path) = error_log {
        let fd = if path == "-" { 2 } else { open_append(path)? };
        SINKS.error_fd.store(fd, Ordering::Relaxed);
    }
    if let Some(path) = access_log {
        let fd = if path == "-" { 1 } else { open_append(path)? };
        SINKS.access_fd.store(fd, Ordering::Relaxed);
    }
    Ok(())
}

/// Reopens the log files in place (SIGUSR1, after logrotate moved them): the new file is
/// `dup2`ed onto the old descriptor number, so every thread keeps writing to the same fd.
pub fn reopen() {
    let Some((error_log, access_log)) = TARGETS.get() else {
        return;
    };
    for (path, fd) in [(error_log, &SINKS.error_fd), (access_log, &SINKS.access_fd)] {
        let Some(path) = path.as_deref().filter(|p| *p != "-") else {
            continue;
        };
        match open_append(path) {
            Ok(new) => {
                let _ = sys::dup2_and_close(new, fd.load(Ordering::Relaxed));
            }
            Err(e) => error(format_args!("Cannot reopen log file {path}: {e}")),
        }
    }
}

fn open_append(path: &str) -> io::Result<RawFd> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let fd = file.into_raw_fd();
    sys::set_cloexec(fd, true)?;
    Ok(fd)
}

/// True when lines of `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 >= SINKS.level.load(Ordering::Relaxed)
}

/// The error log's descriptor, for `wsgi.errors`.
pub fn error_fd() -> RawFd {
    SINKS.error_fd.load(Ordering::Relaxed)
}

/// True when an access log was asked for.
pub fn access_enabled() -> bool {
    SINKS.access_fd.load(Ordering::Relaxed) >= 0
}

/// Writes one error-log line at `level`.
pub fn log(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(128);
    let _ = write!(
        line,
        "[{}] [{}] [{}] {}",
        ErrorTime(SystemTime::now()),
        sys::getpid(),
        level.name(),
        args
    );
    if !line.ends_with('\n') {
        line.push('\n');
    }
    write_all(SINKS.error_fd.load(Ordering::Relaxed), line.as_bytes());
}

/// Writes raw text (a Python traceback, `wsgi.errors`) to the error log as it is.
pub fn write_raw(text: &[u8]) {
    write_all(SINKS.error_fd.load(Ordering::Relaxed), text);
}

/// `log(Level::Debug, …)`.
pub fn debug(args: std::fmt::Arguments<'_>) {
    log(Level::Debug, args)
}
/// `log(Level::Info, …)`.
pub fn info(args: std::fmt::Arguments<'_>) {
    log(Level::Info, args)
}
/// `log(Level::Warning, …)`.
pub fn warning(args: std::fmt::Arguments<'_>) {
    log(Level::Warning, args)
}
/// `log(Level::Error, …)`.
pub fn error(args: std::fmt::Arguments<'_>) {
    log(Level::Error, args)
}
/// `log(Level::Critical, …)`.
pub fn critical(args: std::fmt::Arguments<'_>) {
    log(Level::Critical, args)
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match sys::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A log that cannot be written is not worth taking a worker down for.
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `2026-11-22 10:00:00 +0000`, the error log's time.
struct ErrorTime(SystemTime);

impl std::fmt::Display for ErrorTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = Civil::from_unix(unix_secs(self.0));
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

/// gunicorn's default access-log format.
pub const DEFAULT_ACCESS_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// One piece of a compiled access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A one-letter atom such as `h` or `s`.
    Atom(char),
    /// `%({name}i)s`: a request header.
    RequestHeader(String),
    /// `%({name}o)s`: a response header.
    ResponseHeader(String),
    /// `%({name}e)s`: an environment variable of the worker process.
    Env(String),
}

/// An access-log format compiled once: literal text and atoms.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    pieces: Vec<Piece>,
}

/// What one finished request looks like to the access log.
pub struct AccessEntry<'a> {
    /// Client address (`h`).
    pub remote: &'a str,
    /// The request line as received (`r`).
    pub request_line: &'a [u8],
    /// Method (`m`), path (`U`), query (`q`), protocol (`H`).
    pub method: &'a [u8],
    /// Path without the query.
    pub path: &'a [u8],
    /// The query string.
    pub query: &'a [u8],
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: &'a str,
    /// Response status code (`s`).
    pub status: u16,
    /// Body bytes sent (`b`, `B`).
    pub body_bytes: u64,
    /// Time taken (`T`, `D`, `M`, `L`).
    pub elapsed: Duration,
    /// Request headers, for `f`, `a`, `u` and `{x}i`.
    pub request_header: &'a dyn Fn(&str) -> Option<String>,
    /// Response headers, for `{x}o`.
    pub response_header: &'a dyn Fn(&str) -> Option<String>,
}

impl AccessFormat {
    /// Compiles a gunicorn-style format; unknown atoms are kept as literal text.
    pub fn compile(format: &str) -> AccessFormat {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(start) = rest.find("%(") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(close) = after.find(")s") else {
                text.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            let piece = if name.starts_with('{') && name.len() >= 3 && name.contains('}') {
                let end = name.rfind('}').unwrap_or(0);
                let key = name[1..end].to_owned();
                match &name[end + 1..] {
                    "i" => Some(Piece::RequestHeader(key.to_ascii_lowercase())),
                    "o" => Some(Piece::ResponseHeader(key.to_ascii_lowercase())),
                    "e" => Some(Piece::Env(key)),
                    _ => None,
                }
            } else if name.chars().count() == 1 {
                name.chars().next().map(Piece::Atom)
            } else {
                None
            };
            match piece {
                Some(p) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(p);
                }
                None => text.push_str(&rest[start..start + 2 + close + 2]),
            }
            rest = &after[close + 2..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        AccessFormat { pieces }
    }

    /// Formats and writes one access-log line.
    pub fn log(&self, e: &AccessEntry<'_>) {
        let fd = SINKS.access_fd.load(Ordering::Relaxed);
        if fd < 0 {
            return;
        }
        let mut line = String::with_capacity(160);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => line.push_str(t),
                Piece::Atom(c) => self.atom(*c, e, &mut line),
                Piece::RequestHeader(h) => {
                    push_escaped(&mut line, (e.request_header)(h).as_deref().unwrap_or("-"))
                }
                Piece::ResponseHeader(h) => {
                    push_escaped(&mut line, (e.response_header)(h).as_deref().unwrap_or("-"))
                }
                Piece::Env(k) => {
                    push_escaped(&mut line, std::env::var(k).as_deref().unwrap_or("-"))
                }
            }
        }
        line.push('\n');
        write_all(fd, line.as_bytes());
    }

    fn atom(&self, c: char, e: &AccessEntry<'_>, line: &mut String) {
        let header = |name: &str| (e.request_header)(name).unwrap_or_else(|| "-".to_owned());
        match c {
            'h' => line.push_str(e.remote),
            'l' => line.push('-'),
            'u' => line.push_str(&basic_auth_user(&header("authorization"))),
            't' => {
                let c = Civil::from_unix(unix_secs(SystemTime::now()));
                let _ = write!(
                    line,
                    "[{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000]",
                    c.day,
                    MONTHS[(c.month - 1) as usize],
                    c.year,
                    c.hour,
                    c.minute,
                    c.second
                );
            }
            'r' => push_escaped(line, &String::from_utf8_lossy(e.request_line)),
            's' => {
                let _ = write!(line, "{}", e.status);
            }
            'b' => {
                if e.body_bytes == 0 {
                    line.push('-')
                } else {
                    let _ = write!(line, "{}", e.body_bytes);
                }
            }
            'B' => {
                let _ = write!(line, "{}", e.body_bytes);
            }
            'f' => push_escaped(line, &header("referer")),
            'a' => push_escaped(line, &header("user-agent")),
            'T' => {
                let _ = write!(line, "{}", e.elapsed.as_secs());
            }
            'D' => {
                let _ = write!(line, "{}", e.elapsed.as_micros());
            }
            'M' => {
                let _ = write!(line, "{}", e.elapsed.as_millis());
            }
            'L' => {
                let _ = write!(line, "{:.6}", e.elapsed.as_secs_f64());
            }
            'p' => {
                let _ = write!(line, "<{}>", sys::getpid());
            }
            'm' => push_escaped(line, &String::from_utf8_lossy(e.method)),
            'U' => push_escaped(line, &String::from_utf8_lossy(e.path)),
            'q' => push_escaped(line, &String::from_utf8_lossy(e.query)),
            'H' => line.push_str(e.protocol),
            other => {
                line.push_str("%(");
                line.push(other);
                line.push_str(")s");
            }
        }
    }
}

/// Escapes control characters, backslash and `"` so a client cannot forge log lines.
fn push_escaped(line: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(line, "\\x{:02x}", c as u32);
            }
            c => line.push(c),
        }
    }
}

/// The user name of a `Basic` Authorization header, `-` otherwise.
fn basic_auth_user(value: &str) -> String {
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return "-".to_owned();
    };
    let decoded = base64_decode(encoded.trim());
    match decoded.iter().position(|&b| b == b':') {
        Some(colon) => {
            let mut user = String::new();
            push_escaped(&mut user, &String::from_utf8_lossy(&decoded[..colon]));
            user
        }
        None => "-".to_owned(),
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The descriptor a log writes to, for tests and `wsgi.errors`.
pub fn access_fd() -> RawFd {
    SINKS.access_fd.load(Ordering::Relaxed)
}

/// Formats and logs at info level: `info!("Booting worker with pid: {}", pid)`.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::info(format_args!($($t)*)) };
}
/// Logs at warning level.
#[macro_export]
macro_rules! warning {
    ($($t:tt)*) => { $crate::log::warning(format_args!($($t)*)) };
}
/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::error(format_args!($($t)*)) };
}
/// Logs at critical level.
#[macro_export]
macro_rules! critical {
    ($($t:tt)*) => { $crate::log::critical(format_args!($($t)*)) };
}
/// Logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::debug(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_unix_time_to_calendar() {
        // 2026-11-22 00:17:24 UTC was a Sunday.
        let c = Civil::from_unix(1_795_306_644);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second, c.weekday),
            (2026, 11, 22, 0, 17, 24, 0)
        );
    }

    #[test]
    fn compiles_gunicorn_format() {
        let f = AccessFormat::compile(r#"%(h)s "%(r)s" %({x-id}i)s %(zz)s"#);
        assert_eq!(
            f.pieces,
            vec![
                Piece::Atom('h'),
                Piece::Text(" \"".into()),
                Piece::Atom('r'),
                Piece::Text("\" ".into()),
                Piece::RequestHeader("x-id".into()),
                Piece::Text(" %(zz)s".into()),
            ]
        );
    }

    #[test]
    fn escapes_quotes_and_controls() {
        let mut s = String::new();
        push_escaped(&mut s, "a\"b\n");
        assert_eq!(s, "a\\\"b\\x0a");
        assert_eq!(basic_auth_user("Basic dXNlcjpwYXNz"), "user");
    }
}
