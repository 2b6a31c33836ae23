//! Step 07: a master process and a fixed set of worker processes sharing one listener.
//!
//! The master binds the socket, forks `--workers` workers and from then on only supervises
//! (`arbiter.rs`): it reaps a worker that dies and forks a new one, and on SIGTERM or SIGINT
//! asks every worker to finish its request and exit. Each worker starts its own Python after
//! the fork, loads the app and accepts from the shared listener (`run_worker` below).
//! Chapter 7 of the book walks through it.
//!
//! Left out on purpose:
//! - A worker serves one request per connection, one connection at a time (gunicorn's sync
//!   worker). minigun's `worker/` keeps idle keep-alive connections in an epoll set and
//!   serves them from several threads.
//! - No heartbeat: a worker stuck in the app forever is never replaced, and there is no
//!   reload (HUP) or worker count change (TTIN/TTOU). minigun's `arbiter.rs` has all three.
//! - The body is read whole before the app runs, and the app's answer is buffered whole and
//!   sent with Content-Length. minigun streams responses (`wsgi/response.rs`) and keeps a
//!   large body in a temporary file, not in memory (`conn.rs`, `wsgi/input.rs`).
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod trace;
mod arbiter;
mod http;
mod sys;
mod wsgi;

use http::{HttpError, Request, Status};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// What `--help` prints.
const USAGE: &str = "\
step07-prefork-wsgi: serve a Python WSGI app from a master and N pre-forked workers.

Usage: step07-prefork-wsgi [-b HOST:PORT] [-w N] [-t SECS] [--trace] MODULE:APP

Arguments:
  MODULE:APP                the WSGI callable to serve, e.g. hello:app, imported from the
                            current directory (or the virtualenv named by $VIRTUAL_ENV)
Options:
  -b, --bind HOST:PORT      address to listen on (default 127.0.0.1:8000; port 0 picks one)
  -t, --timeout SECS        time a client has to send a whole request (default 30)
  -w, --workers N           worker processes to keep running (default 1)
      --trace               narrate forks, signals, accepts, reads and answers on stderr
  -h, --help                print this help and exit
";

/// Settings taken from the command line.
struct Config {
    /// Where to listen, as `HOST:PORT`.
    bind: String,
    /// How long a client may take to send one whole request before it gets 408.
    timeout: Duration,
    /// How many worker processes the master keeps running.
    workers: usize,
    /// The WSGI callable to load, as `module:attribute`.
    app: String,
}

// ANCHOR: parse-args
/// Reads the flags and `MODULE:APP`. `Ok(None)` means `--help` was asked for; `Err` is a one-line message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        bind: "127.0.0.1:8000".to_string(),
        timeout: Duration::from_secs(30),
        workers: 1,
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
            "-t" | "--timeout" => config.timeout = parse_seconds(&flag, &value()?)?,
            "-w" | "--workers" => config.workers = parse_count(&flag, &value()?)?,
            "--trace" => trace::enable(),
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

/// Reads a positive whole number such as `4`.
fn parse_count(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{flag} needs a positive whole number, not {value:?}"
        )),
    }
}

/// Reads a positive number of seconds such as `30` or `0.25`.
fn parse_seconds(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>().ok().map(Duration::try_from_secs_f64) {
        Some(Ok(duration)) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "{flag} needs a positive number of seconds, not {value:?}"
        )),
    }
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            log!("error: {message} (see --help)");
            return ExitCode::from(2);
        }
    };
    // ANCHOR: bind
    // One call does socket(2), setsockopt(2) for SO_REUSEADDR, bind(2) and listen(2). The
    // kernel now queues incoming connections for us (the backlog) even while we are busy.
    let listener = match TcpListener::bind(&config.bind) {
        Ok(listener) => listener,
        Err(e) => {
            log!("error: cannot listen on {}: {e}", config.bind);
            return ExitCode::FAILURE;
        }
    };
    // With port 0 the kernel picked the port, so ask the socket which one it got.
    match listener.local_addr() {
        Ok(addr) => println!("Listening on http://{addr}"),
        Err(e) => log!("warning: cannot read the bound address: {e}"),
    }
    // Tests and scripts read that line through a pipe, where stdout is not flushed by itself.
    let _ = io::stdout().flush();
    // ANCHOR_END: bind
    // The master never starts Python: each worker does, after its fork (`run_worker`).
    let mut arbiter = arbiter::Arbiter::new(listener, config);
    match arbiter.run() {
        Ok(code) => code,
        Err(e) => {
            log!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code of a worker that could not load the app (gunicorn's APP_LOAD_ERROR): the master
/// stops instead of forking new workers that would fail the same way, forever.
const APP_LOAD_ERROR: u8 = 4;

// ANCHOR: run-worker
/// A worker's whole life after the fork: its own signal pipe, its own Python and app, then
/// accept and serve until the master says stop (or disappears).
fn run_worker(listener: &TcpListener, config: &Config) -> ! {
    let master = sys::getppid();
    let wake = match sys::signal_pipe(&[libc::SIGTERM, libc::SIGINT]) {
        Ok(fd) => fd,
        Err(e) => {
            log!("worker cannot set up signals: {e}");
            sys::exit_child(1);
        }
    };
    log!("Booting worker with pid: {}", std::process::id());
    let app = match wsgi::App::load(&config.app) {
        Ok(app) => app,
        Err(msg) => {
            log!("error: {msg}");
            sys::exit_child(APP_LOAD_ERROR.into());
        }
    };
    // Non-blocking, because every idle worker wakes for a new client and only one gets it.
    if let Err(e) = listener.set_nonblocking(true) {
        log!("worker cannot configure the listener: {e}");
        sys::exit_child(1);
    }
    // ANCHOR: worker-loop
    let fds = [listener.as_raw_fd(), wake];
    // The timeout lets us notice, within a second, a master that died without telling us.
    while sys::getppid() == master {
        let Ok(ready) = sys::wait_readable(&fds, Some(Duration::from_secs(1))) else {
            continue; // EINTR: a signal arrived, and its byte is waiting in the pipe
        };
        let signals = if ready[1] {
            sys::drain(wake)
        } else {
            Vec::new()
        };
        if signals
            .iter()
            .any(|&s| s == libc::SIGTERM || s == libc::SIGINT)
        {
            trace!("SIGTERM or SIGINT received: this worker stops");
            break;
        }
        if ready[0] {
            match listener.accept() {
                Ok((stream, peer)) => {
                    trace!("worker took fd {} from {peer}", stream.as_raw_fd());
                    if let Err(e) = handle_connection(stream, config, &app) {
                        log!("{peer}: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    trace!("another worker won the race for that connection");
                }
                Err(e) => {
                    log!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    // ANCHOR_END: worker-loop
    app.flush_output();
    sys::exit_child(0)
}
// ANCHOR_END: run-worker

/// How long we keep reading (and dropping) after an error reply, see [`write_error`].
const LINGER: Duration = Duration::from_secs(1);

// ANCHOR: handle-connection
/// Serves one request and closes the connection, as gunicorn's sync worker does: while a
/// worker waited for a keep-alive client's next request, it could serve nobody else.
fn handle_connection(mut stream: TcpStream, config: &Config, app: &wsgi::App) -> io::Result<()> {
    let mut buf = Vec::new();
    let deadline = Instant::now() + config.timeout;
    match read_request(&mut stream, &mut buf, deadline) {
        Ok(request) => respond(&mut stream, &request, false, app),
        Err(HttpError::Closed) => Ok(()), // nobody left to answer
        Err(HttpError::Io(e)) => Err(e),
        Err(error) => write_error(stream, &error),
    }
}
// ANCHOR_END: handle-connection

// ANCHOR: read-request
/// Reads one whole request (head, then body) from `stream`, using `buf` for bytes read but
/// not yet used. Fails with [`HttpError::Timeout`] once `deadline` has passed.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Request, HttpError> {
    let (mut request, head_len) = read_head(stream, buf, deadline)?;
    let (fd, method, target) = (stream.as_raw_fd(), &request.method, &request.target);
    trace!("fd {fd}: head complete: {method} {target}, {head_len} bytes");
    // The empty line ends the head, not the request: a body may follow (RFC 9112 §6).
    let body_len = http::content_length(&request)?;
    while buf.len() < head_len + body_len {
        trace!("fd {fd}: body {} of {body_len} bytes", buf.len() - head_len);
        read_more(stream, buf, deadline)?;
    }
    trace!("fd {fd}: body {body_len} of {body_len} bytes");
    request.body = buf[head_len..head_len + body_len].to_vec();
    // Whatever follows belongs to the next request, so only this request's bytes go.
    buf.drain(..head_len + body_len);
    Ok(request)
}
// ANCHOR_END: read-request

// ANCHOR: read-head
/// Asks the parser about the bytes so far, and reads more for as long as it says `Partial`.
/// Returns the request (without its body yet) and the length of its head in `buf`.
fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(Request, usize), HttpError> {
    loop {
        match http::parse_head(buf)? {
            Status::Complete(found) => return Ok(found),
            Status::Partial => {
                let (fd, buffered) = (stream.as_raw_fd(), buf.len());
                trace!("fd {fd}: need more ({buffered} bytes buffered)");
                read_more(stream, buf, deadline)?;
            }
        }
    }
}
// ANCHOR_END: read-head

// ANCHOR: read-more
/// Appends whatever one `read` brings to `buf`, waiting no later than `deadline`.
fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), HttpError> {
    // One deadline for the whole request rather than a fresh timeout per read: otherwise a
    // client sending a byte every few seconds could hold us forever ("slowloris").
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HttpError::Timeout);
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) => Err(HttpError::Closed),
        Ok(n) => {
            trace!("fd {}: read {n} bytes", stream.as_raw_fd());
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        // A read timeout shows up as WouldBlock on Unix and TimedOut on Windows.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(HttpError::Timeout)
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()), // a signal; just try again
        Err(e) => Err(e.into()),
    }
}
// ANCHOR_END: read-more

// ANCHOR: respond
/// Answers a request with whatever the WSGI app makes of it.
fn respond(
    stream: &mut TcpStream,
    request: &Request,
    keep_alive: bool,
    app: &wsgi::App,
) -> io::Result<()> {
    let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
    let fd = stream.as_raw_fd();
    trace!("fd {fd}: calling the app");
    let response = app.call(request, peer, local);
    let (status, body_len) = (&response.status, response.body.len());
    trace!("fd {fd}: the app answered {status}, {body_len} bytes");
    // RFC 9110 §9.3.2: HEAD gets the headers GET would get, but no body.
    let head_only = request.method == "HEAD";
    // One write for head and body, as in step 02.
    stream.write_all(&response.encode(head_only, keep_alive))
}
// ANCHOR_END: respond

// ANCHOR: write-response
/// Writes status line, headers, empty line and (unless `head_only`) the body, in one write.
/// The `Connection` header tells the client whether it may send another request.
fn write_response(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut response = format!(
        "HTTP/1.1 {status}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: {connection}\r\n\
         \r\n",
        body.len()
    );
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())?;
    trace!("fd {}: answered {status}, {connection}", stream.as_raw_fd());
    Ok(())
}
// ANCHOR_END: write-response

// ANCHOR: write-error
/// Tells the client why its request failed, then closes without destroying that answer.
fn write_error(mut stream: TcpStream, error: &HttpError) -> io::Result<()> {
    let (status, reason) = error.reply();
    write_response(&mut stream, status, &format!("{reason}\n"), false, false)?;
    // Closing while the client's bytes sit unread in our receive buffer makes the kernel send
    // a reset (RST), and a reset can wipe our answer before the client reads it (RFC 9112
    // §9.6). So shut our sending side first, then read and drop what still comes, briefly.
    stream.shutdown(Shutdown::Write)?;
    let (until, mut sink) = (Instant::now() + LINGER, Vec::new());
    while read_more(&mut stream, &mut sink, until).is_ok() {
        sink.clear(); // stops at the client's close, an error, or `until`
    }
    Ok(())
}
// ANCHOR_END: write-error
