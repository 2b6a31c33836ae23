//! Step 06: step 05's WSGI server, with a forked process per connection instead of threads.
//!
//! The parent loads the app once, then forks a child for every connection. The child serves
//! it with its own copy of the interpreter (so no GIL is shared with anyone) and exits; the
//! parent reaps exited children when SIGCHLD says so (`sys.rs`), so none stays a zombie.
//! Chapter 6 of the book walks through it.
//!
//! Left out on purpose:
//! - A fork per connection pays for a new process every time, and nothing bounds how many
//!   run at once. Step 07 forks a fixed set of workers once, up front.
//! - The body is read whole before the app runs, and the app's answer is buffered whole and
//!   sent with Content-Length. minigun streams responses (`wsgi/response.rs`) and keeps a
//!   large body in a temporary file, not in memory (`conn.rs`, `wsgi/input.rs`).
//! - Shutdown: Ctrl+C reaches every process in the terminal's group and kills them
//!   mid-request. Step 07 stops gracefully.
#![deny(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod trace;
mod http;
mod sys;
mod wsgi;

use http::{HttpError, Request, Status};
use std::convert::Infallible;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// What `--help` prints.
const USAGE: &str = "\
step06-fork: serve a Python WSGI app, forking one child process per connection.

Usage: step06-fork [-b HOST:PORT] [-t SECS] [--keep-alive SECS] [--trace] MODULE:APP

Arguments:
  MODULE:APP                the WSGI callable to serve, e.g. hello:app, imported from the
                            current directory (or the virtualenv named by $VIRTUAL_ENV)
Options:
  -b, --bind HOST:PORT      address to listen on (default 127.0.0.1:8000; port 0 picks one)
  -t, --timeout SECS        time a client has to send a whole request (default 30)
      --keep-alive SECS     how long an idle connection may wait for its next request
                            (default 2)
      --trace               narrate each accept, fork, read, answer and reap on stderr
  -h, --help                print this help and exit
";

/// Settings taken from the command line.
#[derive(Clone)]
struct Config {
    /// Where to listen, as `HOST:PORT`.
    bind: String,
    /// How long a client may take to send one whole request before it gets 408.
    timeout: Duration,
    /// How long a thread waits for the next request on an idle connection.
    keep_alive: Duration,
    /// The WSGI callable to load, as `module:attribute`.
    app: String,
}

// ANCHOR: parse-args
/// Reads the flags and `MODULE:APP`. `Ok(None)` means `--help` was asked for; `Err` is a one-line message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        bind: "127.0.0.1:8000".to_string(),
        timeout: Duration::from_secs(30),
        keep_alive: Duration::from_secs(2),
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
            "--keep-alive" => config.keep_alive = parse_seconds(&flag, &value()?)?,
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
    // ANCHOR: load-app
    // Python starts here, once, in the parent: every child gets a copy of it, app loaded.
    let app = match wsgi::App::load(&config.app) {
        Ok(app) => app,
        Err(message) => {
            log!("error: {message}");
            return ExitCode::from(4); // gunicorn's APP_LOAD_ERROR
        }
    };
    // ANCHOR_END: load-app
    match serve(&listener, &config, &app) {
        Ok(never) => match never {},
        Err(e) => {
            log!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: accept-loop
/// Accepts clients forever, forking a child for each, and reaps children whenever SIGCHLD
/// says one has exited. `poll` waits for either, so a child is collected at once even when no
/// new client comes.
fn serve(listener: &TcpListener, config: &Config, app: &wsgi::App) -> io::Result<Infallible> {
    let wake = sys::signal_pipe(&[libc::SIGCHLD])?;
    let fds = [listener.as_raw_fd(), wake];
    loop {
        let ready = match sys::wait_readable(&fds, None) {
            Ok(ready) => ready,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue, // SIGCHLD came
            Err(e) => return Err(e),
        };
        if ready[1] {
            sys::drain(wake);
            trace!("SIGCHLD received");
            for (pid, status) in sys::reap_children() {
                trace!("reaped child {pid} ({status})");
            }
        }
        if ready[0] {
            match listener.accept() {
                Ok((stream, peer)) => {
                    trace!("accepted fd {} from {peer}", stream.as_raw_fd());
                    spawn_child(stream, peer, config, app);
                }
                Err(e) => {
                    // Usually "too many open files". Retrying at once would spin the CPU, so
                    // back off a little; the waiting clients stay queued in the backlog.
                    log!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
// ANCHOR_END: accept-loop

// ANCHOR: spawn-child
/// Forks a child that serves `stream` and exits; the parent goes straight back to `poll`.
fn spawn_child(stream: TcpStream, peer: SocketAddr, config: &Config, app: &wsgi::App) {
    match sys::fork_with_python() {
        Ok(sys::Fork::Child) => {
            // Only the child traces: its lines and the parent's would race for the terminal.
            trace!("forked: this child serves fd {}", stream.as_raw_fd());
            if let Err(e) = handle_connection(stream, config, app) {
                log!("{peer}: {e}");
            }
            app.flush_output();
            trace!("child exits");
            sys::exit_child(0);
        }
        Ok(sys::Fork::Parent) => {}
        Err(e) => {
            log!("fork failed: {e}");
            reject(stream);
        }
    }
    // The parent drops its copy of the socket here. The connection stays open in the child:
    // the kernel closes it only when every process holding it has closed it.
}
// ANCHOR_END: spawn-child

/// How long we keep reading (and dropping) after an error reply, see [`write_error`].
const LINGER: Duration = Duration::from_secs(1);

// ANCHOR: handle-connection
/// Serves requests on one connection until the client or HTTP says it is over.
fn handle_connection(mut stream: TcpStream, config: &Config, app: &wsgi::App) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        // Between requests the client owes us nothing, so no 408: wait up to --keep-alive
        // for its next request and hang up quietly if none comes. Bytes already in `buf`
        // (a pipelined request) need no wait.
        if !first && buf.is_empty() && !wait_for_next_request(&stream, config.keep_alive)? {
            return Ok(());
        }
        first = false;
        let deadline = Instant::now() + config.timeout;
        match read_request(&mut stream, &mut buf, deadline) {
            Ok(request) => {
                let keep_alive = wants_keep_alive(&request);
                respond(&mut stream, &request, keep_alive, app)?;
                if !keep_alive {
                    return Ok(());
                }
            }
            Err(HttpError::Closed) => return Ok(()), // nobody left to answer
            Err(HttpError::Io(e)) => return Err(e),
            Err(error) => return write_error(stream, &error),
        }
    }
}
// ANCHOR_END: handle-connection

// ANCHOR: keep-alive
/// RFC 9112 §9.3: an HTTP/1.1 connection persists unless a side sends `Connection: close`;
/// an HTTP/1.0 one only when the client sends `Connection: keep-alive`.
fn wants_keep_alive(request: &Request) -> bool {
    let says = |option: &str| {
        let connection = request.header("connection").unwrap_or("");
        connection
            .split(',')
            .any(|o| o.trim().eq_ignore_ascii_case(option))
    };
    match request.minor_version {
        1 => !says("close"),
        _ => says("keep-alive"),
    }
}

/// Waits up to `idle` for the first byte of another request; `false` if none came.
fn wait_for_next_request(stream: &TcpStream, idle: Duration) -> io::Result<bool> {
    stream.set_read_timeout(Some(idle))?;
    let fd = stream.as_raw_fd();
    trace!("fd {fd}: waiting up to {idle:?} for a next request");
    // peek looks without taking, so read_request still sees the byte.
    let (next, why) = match stream.peek(&mut [0u8; 1]) {
        Ok(0) => (false, "the client closed"),
        Ok(_) => (true, "a next request is coming"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            (false, "none came")
        }
        Err(e) => return Err(e),
    };
    trace!("fd {fd}: {why}");
    Ok(next)
}
// ANCHOR_END: keep-alive

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

// ANCHOR: reject
/// Answers 503 and closes, without ever blocking the accept loop that calls it (here: when
/// fork fails, usually because the process limit is reached).
fn reject(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let body = "all connections are busy, try again\n";
    let _ = write_response(&mut stream, "503 Service Unavailable", body, false, false);
    // As in write_error: take in what the client already sent, so that the close is a FIN
    // and not a reset. Non-blocking, and at most 16 reads, so a flood cannot stall us here.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.read(&mut sink), Ok(1..)) {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}
// ANCHOR_END: reject
