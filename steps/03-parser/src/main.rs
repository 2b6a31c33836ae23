//! Step 03: a web server that parses what it reads.
//!
//! The accept loop is step 02's. What changed is reading: a request arrives in as many
//! `read`s as the network likes, so we keep a buffer and, after every read, ask a parser
//! whether the head is complete, still partial, or broken. Then we read exactly
//! `Content-Length` body bytes. Garbage gets 400, a client that has not finished within
//! `--timeout` gets 408, and each limit has its own status code.
//! Chapter 3 of the book walks through it.
//!
//! Left out on purpose:
//! - Concurrency and keep-alive: still one request per connection and one connection at a
//!   time, so one slow client delays everyone for up to `--timeout`. Step 04 adds both.
//! - Chunked request bodies (`Transfer-Encoding`) get 501; minigun decodes them.
//! - Empty lines before a request line, and obs-fold continuation lines, get 400.

#[macro_use]
mod trace;
mod http;

use http::{HttpError, Request, Status};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// What `--help` prints.
const USAGE: &str = "\
step03-parser: an HTTP server that parses each request and describes it back.
Garbage gets 400 and a client too slow to send its request gets 408.

Usage: step03-parser [-b HOST:PORT] [-t SECS] [--trace]

Options:
  -b, --bind HOST:PORT  address to listen on (default 127.0.0.1:8000; port 0 picks a free one)
  -t, --timeout SECS    time a client has to send a whole request (default 30; 0.5 is fine)
      --trace           narrate each accept, read, parse and answer on stderr
  -h, --help            print this help and exit
";

/// Settings taken from the command line.
struct Config {
    /// Where to listen, as `HOST:PORT`.
    bind: String,
    /// How long a client may take to send one whole request before it gets 408.
    timeout: Duration,
}

// ANCHOR: parse-args
/// Reads the flags. `Ok(None)` means `--help` was asked for; `Err` is a one-line message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        bind: "127.0.0.1:8000".to_string(),
        timeout: Duration::from_secs(30),
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
            "--trace" => trace::enable(),
            _ => return Err(format!("unknown flag {arg}")),
        }
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
            eprintln!("error: {message} (see --help)");
            return ExitCode::from(2);
        }
    };
    // ANCHOR: bind
    // One call does socket(2), setsockopt(2) for SO_REUSEADDR, bind(2) and listen(2). The
    // kernel now queues incoming connections for us (the backlog) even while we are busy.
    let listener = match TcpListener::bind(&config.bind) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.bind);
            return ExitCode::FAILURE;
        }
    };
    // With port 0 the kernel picked the port, so ask the socket which one it got.
    match listener.local_addr() {
        Ok(addr) => println!("Listening on http://{addr}"),
        Err(e) => eprintln!("warning: cannot read the bound address: {e}"),
    }
    // Tests and scripts read that line through a pipe, where stdout is not flushed by itself.
    let _ = io::stdout().flush();
    // ANCHOR_END: bind
    serve(&listener, &config)
}

// ANCHOR: accept-loop
/// Accepts clients forever, one at a time: the next `accept` runs only after
/// `handle_connection` has returned.
fn serve(listener: &TcpListener, config: &Config) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                trace!("accepted fd {} from {peer}", stream.as_raw_fd());
                // A failing client ends only its own connection, never the server.
                if let Err(e) = handle_connection(stream, config) {
                    eprintln!("{peer}: {e}");
                }
            }
            Err(e) => {
                // Usually "too many open files". Retrying at once would spin the CPU, so back
                // off a little; the waiting clients stay queued in the backlog meanwhile.
                eprintln!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
// ANCHOR_END: accept-loop

/// How long we keep reading (and dropping) after an error reply, see [`write_error`].
const LINGER: Duration = Duration::from_secs(1);

// ANCHOR: handle-connection
/// Reads one request, answers it and closes, all within `--timeout` of the accept.
fn handle_connection(mut stream: TcpStream, config: &Config) -> io::Result<()> {
    let deadline = Instant::now() + config.timeout;
    let mut buf = Vec::new();
    match read_request(&mut stream, &mut buf, deadline) {
        Ok(request) => respond(&mut stream, &request),
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
/// Answers a request by describing it back, which shows what the parser understood.
fn respond(stream: &mut TcpStream, request: &Request) -> io::Result<()> {
    let body = format!(
        "You sent {} {} (HTTP/1.{}) with {} headers and {} bytes of body.\n",
        request.method,
        request.target,
        request.minor_version,
        request.headers.len(),
        request.body.len()
    );
    // RFC 9110 §9.3.2: HEAD gets the headers GET would get, but no body.
    let head_only = request.method == "HEAD";
    write_response(stream, "200 OK", &body, head_only)
}
// ANCHOR_END: respond

// ANCHOR: write-response
/// Writes status line, headers, empty line and (unless `head_only`) the body, in one write.
fn write_response(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n",
        body.len()
    );
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())?;
    trace!("fd {}: answered {status}, close", stream.as_raw_fd());
    Ok(())
}
// ANCHOR_END: write-response

// ANCHOR: write-error
/// Tells the client why its request failed, then closes without destroying that answer.
fn write_error(mut stream: TcpStream, error: &HttpError) -> io::Result<()> {
    let (status, reason) = error.reply();
    write_response(&mut stream, status, &format!("{reason}\n"), false)?;
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
