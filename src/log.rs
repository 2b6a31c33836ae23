//! The error log and the access log.
//!
//! Lines look like gunicorn's (`[2026-11-22 10:00:00 +0000] [1234] [INFO] Booting worker with pid:
//! 1235`), so alerts and log parsers written for gunicorn keep working. Every line is formatted
//! into one buffer and handed to a single `write(2)` on an `O_APPEND` descriptor: lines from
//! threads and processes never interleave, and no lock is needed. Times are UTC.
//!
//! The access log is off unless `--access-logfile` is given, as in gunicorn. Its lines follow
//! either a format string of gunicorn's `%(x)s` atoms (`glogging.Logger.atoms`), compiled once
//! at start into [`AccessFormat`], or, with `--access-log-json`, one JSON object per line for
//! log pipelines that would otherwise need a Python logging configuration to get one. Either way
//! the bytes a client chose (path, headers) are escaped so that one request is one line and,
//! in JSON, the line always parses.
//!
//! With `--statsd-host`, every warning, error and critical line is also counted: the metrics
//! module registers itself with [`count_lines_with`] (this module calls no other, so anything
//! may log), and counts them as gunicorn's statsD logger does.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::date::{Civil, MONTHS};
use crate::http::parse::percent_decode;
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

/// Who counts the warning, error and critical lines (the statsd module registers itself),
/// once metrics are on.
static LINE_COUNTER: OnceLock<fn(Level, bool)> = OnceLock::new();

/// Has `count` called for every warning, error and critical line from now on, with its level
/// and whether it reports an exception. Set once, before the first fork.
pub fn count_lines_with(count: fn(Level, bool)) {
    let _ = LINE_COUNTER.set(count);
}

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
    // Kept absolute: USR1 reopens them after `--chdir` has moved the process elsewhere, and
    // must reopen the files the paths named when minigun started.
    let absolute = |path: &str| -> String {
        if path == "-" || path.starts_with('/') {
            return path.to_owned();
        }
        match std::env::current_dir() {
            Ok(dir) => dir.join(path).to_string_lossy().into_owned(),
            Err(_) => path.to_owned(),
        }
    };
    let _ = TARGETS.set((error_log.map(absolute), access_log.map(absolute)));
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
    emit(level, false, args)
}

/// Writes an error line about an exception that ended a request: ERROR level, counted as
/// `gunicorn.log.exception` rather than `.error`, as gunicorn's `Logger.exception` is.
pub fn exception(args: std::fmt::Arguments<'_>) {
    emit(Level::Error, true, args)
}

fn emit(level: Level, exception: bool, args: std::fmt::Arguments<'_>) {
    // Counted before the level filter: gunicorn's statsD logger counts the lines it is asked
    // to write, shown or not.
    if level >= Level::Warning {
        if let Some(count) = LINE_COUNTER.get() {
            count(level, exception);
        }
    }
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
    /// `%({name}i)s`: a request header (name lower-cased).
    RequestHeader(String),
    /// `%({name}o)s`: a response header (name lower-cased).
    ResponseHeader(String),
    /// `%({name}e)s`: a key of the request's WSGI environ (name lower-cased).
    Environ(String),
    /// A name gunicorn has no atom for: `-`, as its `SafeAtoms` answers.
    Unknown,
}

/// How access-log lines are written.
#[derive(Debug, Clone)]
enum Shape {
    /// A gunicorn `--access-logformat`, compiled.
    Text(Vec<Piece>),
    /// `--access-log-json`: one object per line; the request id comes from this header.
    Json { request_id: String },
}

/// The access log's format, compiled once per worker.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    shape: Shape,
}

/// What one finished request looks like to the access log. Everything borrows from the
/// connection's buffer and the response: making an entry allocates nothing.
pub struct AccessEntry<'a> {
    /// Client address (`h`, `REMOTE_ADDR`); empty for a unix-socket peer.
    pub remote: &'a str,
    /// Client port (`REMOTE_PORT`); empty for a unix-socket peer.
    pub remote_port: &'a str,
    /// The request line as received (`r`).
    pub request_line: &'a [u8],
    /// The method (`m`).
    pub method: &'a [u8],
    /// The request target as sent (`RAW_URI`).
    pub target: &'a [u8],
    /// The path as sent, still percent-encoded; `U` decodes it, as `PATH_INFO` is.
    pub path: &'a [u8],
    /// The query string (`q`), without `?`.
    pub query: &'a [u8],
    /// `HTTP/1.1` or `HTTP/1.0` (`H`).
    pub protocol: &'a str,
    /// Response status code (`s`).
    pub status: u16,
    /// Body bytes sent (`b`, `B`).
    pub body_bytes: u64,
    /// Time taken (`T`, `D`, `M`, `L`).
    pub elapsed: Duration,
    /// A request header by name (ASCII case-insensitive), for `f`, `a`, `u`, `{x}i`, `{x}e`.
    pub request_header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
    /// The response headers as (lower-case name, value), for `{x}o`; empty unless the format
    /// asks for one (see `wsgi::prepare_app`).
    pub response_headers: &'a [(String, String)],
}

impl AccessEntry<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        (self.request_header)(name)
    }
}

impl AccessFormat {
    /// The JSON shape, with the request id taken from `request_id_header`.
    pub fn json(request_id_header: &str) -> AccessFormat {
        AccessFormat {
            shape: Shape::Json {
                request_id: request_id_header.to_owned(),
            },
        }
    }

    /// Compiles a gunicorn-style format. gunicorn applies it with Python's `%` operator to a
    /// `SafeAtoms` dict, so: `%(name)s` is an atom, `%%` is one `%`, and a name it has no
    /// atom for prints `-`. (Python would raise on a lone `%`; we keep it as text.)
    pub fn compile(format: &str) -> AccessFormat {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(start) = rest.find('%') {
            text.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                text.push('%');
                rest = tail;
                continue;
            }
            let parsed = after
                .strip_prefix('(')
                .and_then(|inner| inner.find(")s").map(|close| (&inner[..close], close)));
            let Some((name, close)) = parsed else {
                text.push('%');
                rest = after;
                continue;
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::parse(name));
            rest = &after[1 + close + 2..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        AccessFormat {
            shape: Shape::Text(pieces),
        }
    }

    /// Formats and writes one access-log line.
    pub fn log(&self, e: &AccessEntry<'_>) {
        let fd = SINKS.access_fd.load(Ordering::Relaxed);
        if fd < 0 {
            return;
        }
        let mut line = String::with_capacity(256);
        match &self.shape {
            Shape::Text(pieces) => {
                for piece in pieces {
                    piece.write(e, &mut line);
                }
            }
            Shape::Json { request_id } => write_json(e, request_id, &mut line),
        }
        line.push('\n');
        write_all(fd, line.as_bytes());
    }
}

impl Piece {
    /// The piece for the name inside `%(...)s`.
    fn parse(name: &str) -> Piece {
        if let Some(inner) = name.strip_prefix('{') {
            if let Some((key, kind)) = inner.rsplit_once('}') {
                let key = key.to_ascii_lowercase();
                return match kind {
                    "i" => Piece::RequestHeader(key),
                    "o" => Piece::ResponseHeader(key),
                    "e" => Piece::Environ(key),
                    _ => Piece::Unknown,
                };
            }
        }
        let mut chars = name.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if "hlutrsmUqHbBfaTDMLp".contains(c) => Piece::Atom(c),
            _ => Piece::Unknown,
        }
    }

    fn write(&self, e: &AccessEntry<'_>, line: &mut String) {
        match self {
            Piece::Text(t) => line.push_str(t),
            Piece::Atom(c) => atom(*c, e, line),
            Piece::RequestHeader(h) => push_escaped_or_dash(line, e.header(h)),
            Piece::ResponseHeader(h) => {
                let value = e
                    .response_headers
                    .iter()
                    .find(|(k, _)| k == h)
                    .map(|(_, v)| v.as_bytes());
                push_escaped_or_dash(line, value)
            }
            Piece::Environ(key) => match environ(e, key) {
                Some(value) => push_escaped(line, &value),
                None => line.push('-'),
            },
            Piece::Unknown => line.push('-'),
        }
    }
}

/// Writes one of gunicorn's atoms (`glogging.Logger.atoms`).
fn atom(c: char, e: &AccessEntry<'_>, line: &mut String) {
    match c {
        'h' => push_escaped_or_dash(line, Some(e.remote.as_bytes()).filter(|r| !r.is_empty())),
        'l' => line.push('-'),
        'u' => match e.header("authorization").and_then(basic_auth_user) {
            Some(user) => push_escaped(line, &user),
            None => line.push('-'),
        },
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
        'r' => push_escaped(line, e.request_line),
        's' => {
            let _ = write!(line, "{}", e.status);
        }
        'm' => push_escaped(line, e.method),
        'U' => push_escaped(line, &path_info(e.path)),
        'q' => push_escaped(line, e.query),
        'H' => line.push_str(e.protocol),
        // gunicorn writes `str(resp.sent)` for both, so an empty body is `0`, not CLF's `-`.
        'b' | 'B' => {
            let _ = write!(line, "{}", e.body_bytes);
        }
        'f' => push_escaped_or_dash(line, e.header("referer")),
        'a' => push_escaped_or_dash(line, e.header("user-agent")),
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
            let _ = write!(
                line,
                "{}.{:06}",
                e.elapsed.as_secs(),
                e.elapsed.subsec_micros()
            );
        }
        'p' => {
            let _ = write!(line, "<{}>", sys::getpid());
        }
        _ => line.push('-'),
    }
}

/// `PATH_INFO`: the path percent-decoded (as `wsgi::environ` builds it). Borrowed when there
/// is nothing to decode.
fn path_info(path: &[u8]) -> Cow<'_, [u8]> {
    if path.contains(&b'%') {
        let mut decoded = Vec::with_capacity(path.len());
        percent_decode(path, &mut decoded);
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(path)
    }
}

/// `%({key}e)s`. gunicorn offers every key of the request's WSGI environ, lower-cased. The
/// environ is a Python dict we no longer hold when the line is written, so this rebuilds the
/// CGI variables from the request itself; keys the app or a middleware added are not known
/// and print `-`.
fn environ<'e>(e: &'e AccessEntry<'_>, key: &str) -> Option<Cow<'e, [u8]>> {
    let value: &[u8] = match key {
        "request_method" => e.method,
        "path_info" => return Some(path_info(e.path)),
        "query_string" => e.query,
        "raw_uri" => e.target,
        "server_protocol" => e.protocol.as_bytes(),
        "remote_addr" => e.remote.as_bytes(),
        "remote_port" if !e.remote_port.is_empty() => e.remote_port.as_bytes(),
        "content_type" => e.header("content-type")?,
        "content_length" => e.header("content-length")?,
        _ => {
            // HTTP_X_FORWARDED_FOR is the header X-Forwarded-For.
            let name = key.strip_prefix("http_")?.replace('_', "-");
            return e.header(&name).map(Cow::Borrowed);
        }
    };
    Some(Cow::Borrowed(value))
}

/// The JSON shape: one object per line. Strings are JSON-escaped from the bytes the client
/// sent; absent headers are `null`.
fn write_json(e: &AccessEntry<'_>, request_id: &str, line: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let c = Civil::from_unix(now.as_secs());
    let _ = write!(
        line,
        "{{\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"pid\":{},\"remote\":",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        now.subsec_millis(),
        sys::getpid()
    );
    push_json_or_null(line, Some(e.remote.as_bytes()).filter(|r| !r.is_empty()));
    line.push_str(",\"method\":");
    push_json(line, e.method);
    line.push_str(",\"path\":");
    push_json(line, e.path);
    line.push_str(",\"query\":");
    push_json(line, e.query);
    line.push_str(",\"protocol\":");
    push_json(line, e.protocol.as_bytes());
    let _ = write!(
        line,
        ",\"status\":{},\"bytes\":{},\"duration_us\":{},\"user_agent\":",
        e.status,
        e.body_bytes,
        e.elapsed.as_micros()
    );
    push_json_or_null(line, e.header("user-agent"));
    line.push_str(",\"referer\":");
    push_json_or_null(line, e.header("referer"));
    line.push_str(",\"request_id\":");
    push_json_or_null(line, e.header(request_id));
    line.push('}');
}

/// True for characters that could end or disguise a log line: the C0 and C1 controls and DEL
/// (`char::is_control`), and Unicode's own line and paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Appends `bytes` for a text access-log line. gunicorn itself only turns `"` into `\"`
/// (`SafeAtoms`); that leaves a client free to end a line early or to fake one with a CR or LF
/// in a header value. So, as Apache's `mod_log_config` does: `\` becomes `\\`, and every byte
/// of a control character, of a line separator, or of invalid UTF-8 becomes `\xhh`. Valid
/// UTF-8 text is kept as it is.
fn push_escaped(line: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => line.push_str("\\\""),
                '\\' => line.push_str("\\\\"),
                c if breaks_lines(c) => {
                    let mut utf8 = [0; 4];
                    for b in c.encode_utf8(&mut utf8).bytes() {
                        let _ = write!(line, "\\x{b:02x}");
                    }
                }
                c => line.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(line, "\\x{b:02x}");
        }
    }
}

fn push_escaped_or_dash(line: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => push_escaped(line, b),
        None => line.push('-'),
    }
}

/// Appends `bytes` as a JSON string (RFC 8259 §7): `"` and `\` escaped, control characters
/// and line separators as `\uXXXX` (the common ones by their short escapes), and each invalid
/// UTF-8 sequence as one `\ufffd`, as `String::from_utf8_lossy` would replace it. The result
/// always parses, whatever the client sent.
fn push_json(line: &mut String, bytes: &[u8]) {
    line.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => line.push_str("\\\""),
                '\\' => line.push_str("\\\\"),
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                '\t' => line.push_str("\\t"),
                c if breaks_lines(c) => {
                    let _ = write!(line, "\\u{:04x}", c as u32);
                }
                c => line.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            line.push_str("\\ufffd");
        }
    }
    line.push('"');
}

fn push_json_or_null(line: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => push_json(line, b),
        None => line.push_str("null"),
    }
}

/// The user of a `Basic` Authorization header, as gunicorn's `_get_user` finds it: what comes
/// before the first `:` of the decoded credentials (all of them if there is none), when that is
/// UTF-8; `None` otherwise.
fn basic_auth_user(value: &[u8]) -> Option<Vec<u8>> {
    let scheme_end = value.iter().position(|&b| b == b' ')?;
    if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let mut decoded = base64_decode(value[scheme_end + 1..].trim_ascii());
    if let Some(colon) = decoded.iter().position(|&b| b == b':') {
        decoded.truncate(colon);
    }
    std::str::from_utf8(&decoded).ok()?;
    Some(decoded)
}

fn base64_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in s {
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

    fn pieces(f: &AccessFormat) -> &[Piece] {
        match &f.shape {
            Shape::Text(p) => p,
            Shape::Json { .. } => panic!("a text format"),
        }
    }

    #[test]
    fn compiles_gunicorn_format() {
        let f =
            AccessFormat::compile(r#"%(h)s "%(r)s" %({X-Id}i)s %(zz)s 100%% %({PATH_INFO}e)s %"#);
        assert_eq!(
            pieces(&f),
            [
                Piece::Atom('h'),
                Piece::Text(" \"".into()),
                Piece::Atom('r'),
                Piece::Text("\" ".into()),
                Piece::RequestHeader("x-id".into()),
                Piece::Text(" ".into()),
                Piece::Unknown,
                Piece::Text(" 100% ".into()),
                Piece::Environ("path_info".into()),
                Piece::Text(" %".into()),
            ]
        );
    }

    /// Formats `entry` with `format` (text) or as JSON, without writing it anywhere.
    fn render(format: Option<&str>, e: &AccessEntry<'_>) -> String {
        let mut line = String::new();
        match format {
            Some(f) => {
                for piece in pieces(&AccessFormat::compile(f)) {
                    piece.write(e, &mut line);
                }
            }
            None => write_json(e, "x-request-id", &mut line),
        }
        line
    }

    fn headers(name: &str) -> Option<&'static [u8]> {
        match name.to_ascii_lowercase().as_str() {
            "user-agent" => {
                Some(b"evil\"\\ \r\n\t\x01\x7f \xff\xfe caf\xc3\xa9 \xe2\x80\xa8 \xc2\x85")
            }
            "authorization" => Some(b"Basic dXNlcjpwYXNz"),
            "x-request-id" => Some(b"req-1"),
            "x-forwarded-for" => Some(b"10.0.0.1"),
            _ => None,
        }
    }

    fn entry() -> AccessEntry<'static> {
        let h: &'static dyn Fn(&str) -> Option<&'static [u8]> = &headers;
        AccessEntry {
            remote: "127.0.0.1",
            remote_port: "5555",
            request_line: b"GET /a%20b%0A?x=1 HTTP/1.1",
            method: b"GET",
            target: b"/a%20b%0A?x=1",
            path: b"/a%20b%0A",
            query: b"x=1",
            protocol: "HTTP/1.1",
            status: 200,
            body_bytes: 0,
            elapsed: Duration::from_micros(1_234_567),
            request_header: h,
            response_headers: &[],
        }
    }

    #[test]
    fn writes_every_gunicorn_atom() {
        let e = entry();
        let line = render(
            Some("%(h)s|%(l)s|%(u)s|%(s)s|%(m)s|%(U)s|%(q)s|%(H)s|%(b)s|%(B)s|%(f)s|%(T)s|%(D)s|%(M)s|%(L)s|%({x-forwarded-for}i)s|%({content-type}o)s|%({REMOTE_PORT}e)s|%({http_x_forwarded_for}e)s|%({RAW_URI}e)s|%({wsgi.nope}e)s"),
            &e,
        );
        assert_eq!(
            line,
            "127.0.0.1|-|user|200|GET|/a b\\x0a|x=1|HTTP/1.1|0|0|-|1|1234567|1234|1.234567|10.0.0.1|-|5555|10.0.0.1|/a%20b%0A?x=1|-"
        );
        let pid = render(Some("%(p)s"), &e);
        assert_eq!(pid, format!("<{}>", sys::getpid()));
        let t = render(Some("%(t)s"), &e);
        assert!(
            t.starts_with('[') && t.ends_with(" +0000]") && t.len() == 28,
            "{t}"
        );
    }

    #[test]
    fn escapes_what_could_break_a_text_line() {
        let line = render(Some("%(a)s"), &entry());
        assert_eq!(
            line,
            "evil\\\"\\\\ \\x0d\\x0a\\x09\\x01\\x7f \\xff\\xfe caf\u{e9} \\xe2\\x80\\xa8 \\xc2\\x85"
        );
        assert!(!line.contains(['\n', '\r', '\u{2028}', '\u{85}']));
    }

    #[test]
    fn writes_one_json_object_with_hostile_bytes_escaped() {
        let line = render(None, &entry());
        assert!(
            line.starts_with("{\"time\":\"") && line.ends_with('}'),
            "{line}"
        );
        let expected_tail = format!(
            "Z\",\"pid\":{},\"remote\":\"127.0.0.1\",\"method\":\"GET\",\"path\":\"/a%20b%0A\",\
             \"query\":\"x=1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":0,\
             \"duration_us\":1234567,\"user_agent\":\"evil\\\"\\\\ \\r\\n\\t\\u0001\\u007f \
             \\ufffd\\ufffd caf\u{e9} \\u2028 \\u0085\",\"referer\":null,\"request_id\":\"req-1\"}}",
            sys::getpid()
        );
        assert!(line.ends_with(&expected_tail), "{line}\n{expected_tail}");
        // 2026-11-22T00:17:24.123Z
        let time = &line["{\"time\":\"".len()..line.find("Z\"").expect("a Z")];
        assert_eq!(time.len(), "2026-11-22T00:17:24.123".len(), "{time}");
    }

    #[test]
    fn finds_the_basic_auth_user_as_gunicorn_does() {
        assert_eq!(
            basic_auth_user(b"Basic dXNlcjpwYXNz").as_deref(),
            Some(&b"user"[..])
        );
        assert_eq!(
            basic_auth_user(b"basic dXNlcg==").as_deref(),
            Some(&b"user"[..])
        );
        assert_eq!(basic_auth_user(b"Bearer abc"), None);
        assert_eq!(basic_auth_user(b"Basic"), None);
        assert_eq!(basic_auth_user(b"Basic /w=="), None, "not UTF-8");
    }
}
