//! Step 06: step 05's WSGI server, with a forked process per connection instead of threads.
//!
//! Chapter 6 of the book. The parent loads the app once, then forks a child for every
//! connection; the child serves it with its own copy of the interpreter (so no GIL is shared)
//! and exits. The parent reaps exited children on SIGCHLD (`sys.rs`), so none stays a zombie.
//!
//! Left out on purpose:
//! - A fork per connection costs a process creation every time and has no upper bound on
//!   how many children run at once. Step 07 forks a fixed set of workers once, up front.
//! - Ctrl+C reaches every process in the terminal's group and kills them mid-request; step 07
//!   adds a graceful shutdown.
//! - The request body is read whole (up to `MAX_BODY`) before the app runs, and the response
//!   is buffered whole and sent with Content-Length. minigun streams both (`http/body.rs`,
//!   `wsgi/` input stream, chunked responses in `http/response.rs`).
//! - Chunked request bodies are refused with 501; minigun's `http/body.rs` decodes them.
#![deny(clippy::undocumented_unsafe_blocks)]

mod sys;
mod wsgi;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// Largest request head we buffer; a bigger one gets 431.
const MAX_HEAD: usize = 8 * 1024;
/// Largest request body we read into memory; a bigger one gets 413.
const MAX_BODY: usize = 1024 * 1024;
/// How long a read may stall, mid-request (408) or between keep-alive requests (quiet close).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What `--help` prints.
const USAGE: &str = "\
step06-fork: serve a Python WSGI app, forking one child process per connection.

Usage: step06-fork [-b HOST:PORT] MODULE:APP

Arguments:
  MODULE:APP            the WSGI callable to serve, e.g. hello:app, imported from the current
                        directory (or from the virtualenv named by $VIRTUAL_ENV)
Options:
  -b, --bind HOST:PORT  address to listen on (default 127.0.0.1:8000; port 0 picks a free one)
  -h, --help            print this help and exit
";

/// Settings taken from the command line.
struct Config {
    /// Where to listen, as `HOST:PORT`.
    bind: String,
    /// The WSGI callable to load, as `module:attribute`.
    app: String,
}

// ANCHOR: parse-args
/// Reads the flags and `MODULE:APP`. `Ok(None)` means `--help` was asked for; `Err` is a
/// one-line message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        bind: "127.0.0.1:8000".to_string(),
        app: String::new(),
    };
    while let Some(arg) = args.next() {
        // Both `--bind ADDR` and `--bind=ADDR` are accepted, as gunicorn does.
        let (flag, mut inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        let mut value = || match inline.take() {
            Some(value) => Ok(value.to_string()),
            None => args.next().ok_or(format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "-b" | "--bind" => config.bind = value()?,
            _ if arg.starts_with('-') => return Err(format!("unknown flag {arg}")),
            _ if config.app.is_empty() => config.app = arg,
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    if config.app.is_empty() {
        return Err("missing MODULE:APP, e.g. hello:app".to_string());
    }
    Ok(Some(config))
}
// ANCHOR_END: parse-args

// ANCHOR: main
fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message} (see --help)");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&config.bind) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.bind);
            return ExitCode::FAILURE;
        }
    };
    let app = match wsgi::App::load(&config.app) {
        Ok(app) => app,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(4); // gunicorn's APP_LOAD_ERROR
        }
    };
    let Ok(local) = listener.local_addr() else {
        return ExitCode::FAILURE;
    };
    println!("Listening on http://{local}");
    let _ = io::stdout().flush();
    if let Err(e) = serve(listener, app) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
// ANCHOR_END: main

// ANCHOR: serve
/// The accept loop: a new child process for every connection, and a reap whenever SIGCHLD
/// says a child has exited. `poll` waits for either, so a child is collected at once even
/// when no new client arrives.
fn serve(listener: TcpListener, app: wsgi::App) -> io::Result<()> {
    let wake = sys::signal_pipe(&[libc::SIGCHLD])?;
    let fds = [listener.as_raw_fd(), wake];
    loop {
        let ready = match sys::wait_readable(&fds, None) {
            Ok(ready) => ready,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // SIGCHLD arrived
            Err(e) => return Err(e),
        };
        if ready[1] {
            sys::drain(wake);
            for (pid, status) in sys::reap_children() {
                eprintln!("[{pid}] child exited ({status})");
            }
        }
        if ready[0] {
            match listener.accept() {
                Ok((stream, peer)) => spawn_child(stream, peer, &app),
                Err(e) => {
                    // Usually "too many open files": back off instead of spinning.
                    eprintln!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
// ANCHOR_END: serve

// ANCHOR: spawn-child
/// Forks a child that serves `stream` and exits; the parent goes straight back to `accept`.
fn spawn_child(mut stream: TcpStream, peer: SocketAddr, app: &wsgi::App) {
    match sys::fork_with_python() {
        Ok(sys::Fork::Child) => {
            handle_connection(stream, app);
            app.flush_output();
            sys::exit_child(0);
        }
        Ok(sys::Fork::Parent(pid)) => eprintln!("[{pid}] child serving {peer}"),
        Err(e) => {
            eprintln!("fork failed: {e}");
            let _ = write_error(&mut stream, "503 Service Unavailable");
        }
    }
    // The parent drops its copy of the socket here. The connection stays open in the child;
    // it closes only when every process that holds it has closed it.
}
// ANCHOR_END: spawn-child

// ANCHOR: handle-connection
/// Serves requests on one connection until the client or an error ends it.
fn handle_connection(mut stream: TcpStream, app: &wsgi::App) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buf) {
            Ok(Some(request)) => request,
            Ok(None) => return, // clean close, or idle too long between requests
            Err(e) => {
                let _ = write_error(&mut stream, e.status());
                return;
            }
        };
        let response = app.call(&request, peer, local);
        let keep_alive = request.keep_alive();
        let head_only = request.method == "HEAD";
        if write_response(&mut stream, &response, keep_alive, head_only).is_err() || !keep_alive {
            return;
        }
    }
}
// ANCHOR_END: handle-connection

/// Why a request could not be read; each maps to one status line.
#[derive(Debug)]
enum HttpError {
    /// Malformed request line or header.
    BadRequest,
    /// The head grew past `MAX_HEAD`.
    HeadTooLarge,
    /// Content-Length above `MAX_BODY`.
    BodyTooLarge,
    /// `Transfer-Encoding` bodies are not supported by this step.
    NotImplemented,
    /// The client stalled in the middle of a request.
    Timeout,
}

impl HttpError {
    /// The status line sent for this error.
    fn status(&self) -> &'static str {
        match self {
            HttpError::BadRequest => "400 Bad Request",
            HttpError::HeadTooLarge => "431 Request Header Fields Too Large",
            HttpError::BodyTooLarge => "413 Content Too Large",
            HttpError::NotImplemented => "501 Not Implemented",
            HttpError::Timeout => "408 Request Timeout",
        }
    }
}

/// A parsed request: head fields, raw header bytes, and the whole body.
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target as sent, e.g. `/search?q=rust`.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Header names and values as sent (values may hold any byte but CR and LF).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Exactly Content-Length bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// HTTP/1.1 keeps the connection open unless the client says `Connection: close`.
    /// HTTP/1.0 keep-alive is an old extension we do not offer.
    fn keep_alive(&self) -> bool {
        let close = self.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case(b"close")
        });
        self.version == "HTTP/1.1" && !close
    }
}

// ANCHOR: read-request
/// Reads one request from `stream`; `buf` carries bytes of the next request between calls.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Request>, HttpError> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut request = parse_head(&buf[..end + 2])?;
            let length = content_length(&request)?;
            let body_start = end + 4;
            while buf.len() < body_start + length {
                let n = read_some(stream, &mut chunk, false)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            request.body = buf[body_start..body_start + length].to_vec();
            buf.drain(..body_start + length);
            return Ok(Some(request));
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        let n = read_some(stream, &mut chunk, buf.is_empty())?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
// ANCHOR_END: read-request

/// One `read`. Between requests (`idle`), EOF or a timeout is a quiet `Ok(0)`; inside a
/// request EOF is a 400 and a timeout a 408.
fn read_some(stream: &mut TcpStream, chunk: &mut [u8], idle: bool) -> Result<usize, HttpError> {
    loop {
        return match stream.read(chunk) {
            Ok(0) if !idle => Err(HttpError::BadRequest),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) if idle => Ok(0),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(HttpError::Timeout)
            }
            Err(_) => Err(HttpError::BadRequest),
        };
    }
}

/// Parses the request line and header lines (RFC 9112 §3 and §5), each ending in CRLF.
fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let mut lines = head
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r\n"));
    let line = lines.next().flatten().ok_or(HttpError::BadRequest)?;
    let line = std::str::from_utf8(line).map_err(|_| HttpError::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest);
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(method) || !token(target) || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(HttpError::BadRequest);
    }
    let mut headers = Vec::new();
    for line in lines {
        // A bare LF (no CR) or a line without a colon is malformed.
        let line = line.ok_or(HttpError::BadRequest)?;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::BadRequest)?;
        let name = std::str::from_utf8(&line[..colon]).map_err(|_| HttpError::BadRequest)?;
        if !token(name) {
            return Err(HttpError::BadRequest);
        }
        let value = line[colon + 1..].trim_ascii();
        headers.push((name.to_string(), value.to_vec()));
    }
    let (method, target) = (method.to_string(), target.to_string());
    let version = version.to_string();
    Ok(Request {
        method,
        target,
        version,
        headers,
        body: Vec::new(),
    })
}

/// The body length (RFC 9112 §6.3): none without Content-Length; two different ones, or one
/// that is not a number, is a 400.
fn content_length(request: &Request) -> Result<usize, HttpError> {
    let mut length = None;
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::NotImplemented);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let ok = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
            let text = std::str::from_utf8(value).ok().filter(|_| ok);
            let n: usize = text
                .and_then(|t| t.parse().ok())
                .ok_or(HttpError::BadRequest)?;
            if length.is_some_and(|old| old != n) {
                return Err(HttpError::BadRequest);
            }
            length = Some(n);
        }
    }
    match length {
        Some(n) if n > MAX_BODY => Err(HttpError::BodyTooLarge),
        n => Ok(n.unwrap_or(0)),
    }
}

// ANCHOR: write-response
/// Sends the app's response with our own framing: Content-Length is the length of the
/// buffered body (for HEAD, the app's headers go out unchanged and no body follows).
fn write_response(
    stream: &mut TcpStream,
    response: &wsgi::Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {}\r\n", response.status).into_bytes();
    for (name, value) in &response.headers {
        let framing = name.eq_ignore_ascii_case("content-length") && !head_only;
        if framing || name.eq_ignore_ascii_case("connection") {
            continue; // we decide these two
        }
        // PEP 3333: header values are latin-1 strings, one byte per character.
        out.extend(name.bytes().chain(*b": "));
        out.extend(value.chars().map(|c| c as u8).chain(*b"\r\n"));
    }
    if !head_only {
        out.extend(format!("Content-Length: {}\r\n", response.body.len()).bytes());
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    out.extend(format!("Connection: {connection}\r\n\r\n").bytes());
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    stream.write_all(&out)
}
// ANCHOR_END: write-response

/// Answers a request we could not hand to the app, and lets the caller close.
fn write_error(stream: &mut TcpStream, status: &str) -> io::Result<()> {
    let body = format!("{status}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(format!("{head}{body}").as_bytes())
}
