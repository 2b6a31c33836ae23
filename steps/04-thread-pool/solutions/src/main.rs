//! Step 04 with the answers to chapter 4's exercises: the queue is built from
//! `std::sync::mpsc::sync_channel` (exercise 1), `--max-requests` closes a connection after N
//! requests (exercise 2), a 503 says `Retry-After: 1` (exercise 3), and a thread whose
//! connection panics survives it (exercise 4; `GET /panic` panics on purpose, to show it).
//! `diff -r steps/04-thread-pool/src steps/04-thread-pool/solutions/src` shows the answers.
//!
//! Step 04: the parser of step 03, served by a pool of threads, with keep-alive.
//!
//! `--threads` threads are started before the first client comes. The accept loop no longer
//! serves anyone itself: it puts each new connection in a queue and goes straight back to
//! `accept`. An idle thread takes the connection and serves request after request on it for
//! as long as the client keeps it alive. The queue is bounded: when `--worker-connections`
//! connections are already held, a newcomer gets 503 at once instead of waiting in a line
//! that only grows. Chapter 4 of the book walks through it.
//!
//! Left out on purpose:
//! - A thread stays with its connection while the client thinks between requests (up to
//!   `--keep-alive`), so `--threads` idle clients can make everyone else wait. minigun hands
//!   idle connections back to an event loop (epoll) instead.
//! - Python: the answer is still our own text. Step 05 calls a WSGI app.
//! - Shutdown: Ctrl+C kills the process mid-request. Step 07 stops gracefully.

#[macro_use]
mod trace;
mod http;

use http::{HttpError, Request, Status};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// What `--help` prints.
const USAGE: &str = "\
step04-thread-pool: step 03's parsing server, run by a pool of threads with keep-alive.
Connections beyond --worker-connections get 503 instead of waiting.

Usage: step04-thread-pool [-b HOST:PORT] [-t SECS] [--threads N] [--worker-connections N]
                          [--keep-alive SECS] [--max-requests N] [--trace]

Options:
  -b, --bind HOST:PORT      address to listen on (default 127.0.0.1:8000; port 0 picks one)
  -t, --timeout SECS        time a client has to send a whole request (default 30)
      --threads N           threads serving connections (default 4)
      --worker-connections N
                            connections held at once, served or queued (default 64)
      --keep-alive SECS     how long an idle connection may wait for its next request
                            (default 2)
      --max-requests N      requests served on one connection before it is closed
                            (default 0: no limit; exercise 2)
      --trace               narrate each accept, queue, read, parse and answer on stderr
  -h, --help                print this help and exit
";

/// Settings taken from the command line.
#[derive(Clone)]
struct Config {
    /// Where to listen, as `HOST:PORT`.
    bind: String,
    /// How long a client may take to send one whole request before it gets 408.
    timeout: Duration,
    /// How many threads serve connections.
    threads: usize,
    /// How many connections we hold at once, being served or queued; more get 503.
    worker_connections: usize,
    /// How long a thread waits for the next request on an idle connection.
    keep_alive: Duration,
    /// Exercise 2: requests per connection before we close it; 0 means no limit.
    max_requests: usize,
}

// ANCHOR: parse-args
/// Reads the flags. `Ok(None)` means `--help` was asked for; `Err` is a one-line message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        bind: "127.0.0.1:8000".to_string(),
        timeout: Duration::from_secs(30),
        threads: 4,
        worker_connections: 64,
        keep_alive: Duration::from_secs(2),
        max_requests: 0,
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
            "--threads" => config.threads = parse_count(&flag, &value()?)?,
            "--worker-connections" => config.worker_connections = parse_count(&flag, &value()?)?,
            "--keep-alive" => config.keep_alive = parse_seconds(&flag, &value()?)?,
            "--trace" => trace::enable(),
            "--max-requests" => config.max_requests = parse_count(&flag, &value()?)?,
            _ => return Err(format!("unknown flag {arg}")),
        }
    }
    if config.worker_connections < config.threads {
        return Err("--worker-connections must be at least --threads".to_string());
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
    let queue = match start_workers(&config) {
        Ok(queue) => queue,
        Err(e) => {
            eprintln!("error: cannot start {} threads: {e}", config.threads);
            return ExitCode::FAILURE;
        }
    };
    serve(&listener, &queue)
}

// ANCHOR: accept-loop
/// Accepts clients forever and queues them for the workers. The loop itself never reads
/// or writes a request, so it is back in `accept` within microseconds.
fn serve(listener: &TcpListener, queue: &Queue) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                trace!("accepted fd {} from {peer}", stream.as_raw_fd());
                // Full means every slot is taken: say so now rather than make the client wait
                // behind a line it cannot see (and that we could not bound).
                if let Err(stream) = queue.push(stream) {
                    eprintln!("{peer}: {} connections held, answering 503", queue.limit);
                    reject(stream);
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

// ANCHOR: queue
/// Exercise 1: the connections accepted and not yet finished, built from two bounded
/// channels instead of a `Mutex<VecDeque>` and a `Condvar`.
///
/// A channel alone would bound only the connections *waiting*. The bound we want is on
/// waiting plus being served, so a second channel counts those: it holds one `()` per
/// connection from `push` to `done`, and its capacity, `limit`, is the bound.
struct Queue {
    /// Accepted connections on their way to a thread. Its capacity is `limit` too, so a
    /// `push` that got a slot never blocks here.
    sender: SyncSender<TcpStream>,
    /// Shared by the threads; the one holding the lock waits in `recv` for the next one.
    receiver: Mutex<Receiver<TcpStream>>,
    /// One message per connection held, waiting or being served.
    slots: SyncSender<()>,
    /// Where `done` takes a message back out, freeing its slot.
    freed: Mutex<Receiver<()>>,
    /// `--worker-connections`: most connections waiting plus being served.
    limit: usize,
}

impl Queue {
    /// An empty queue for at most `limit` connections.
    fn new(limit: usize) -> Queue {
        let (sender, receiver) = mpsc::sync_channel(limit);
        let (slots, freed) = mpsc::sync_channel(limit);
        Queue {
            sender,
            receiver: Mutex::new(receiver),
            slots,
            freed: Mutex::new(freed),
            limit,
        }
    }

    /// Adds a connection, or hands it back when `limit` connections are already held.
    fn push(&self, stream: TcpStream) -> Result<(), TcpStream> {
        if let Err(TrySendError::Full(())) = self.slots.try_send(()) {
            return Err(stream);
        }
        let fd = stream.as_raw_fd();
        trace!("fd {fd}: queued");
        // Cannot block: a slot was free, so fewer than `limit` connections are in here.
        self.sender.send(stream).map_err(|e| e.0)
    }

    /// Blocks until a connection waits, then takes it. Call [`Queue::done`] when finished.
    fn pop(&self) -> TcpStream {
        let receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
        receiver
            .recv()
            .expect("the queue owns a sender, so the channel never closes while it lives")
    }

    /// Frees the slot of a connection taken with [`Queue::pop`].
    fn done(&self) {
        let freed = self.freed.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = freed.try_recv(); // there is one: `push` sent it before this connection came
    }
}
// ANCHOR_END: queue

// ANCHOR: start-workers
/// Starts the pool: `config.threads` threads, each serving one connection at a time from
/// the queue it returns. They are spawned once, up front, not per connection.
fn start_workers(config: &Config) -> io::Result<Arc<Queue>> {
    let queue = Arc::new(Queue::new(config.worker_connections));
    for i in 0..config.threads {
        let (queue, config) = (Arc::clone(&queue), config.clone());
        thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || loop {
                let stream = queue.pop();
                let fd = stream.as_raw_fd();
                // For an error line; a client that has already reset has no address left.
                let peer = stream
                    .peer_addr()
                    .map_or("a client that left".into(), |a| a.to_string());
                let me = thread::current();
                let name = me.name().unwrap_or("?");
                trace!("fd {fd}: picked up by thread {name}");
                // A failing client ends only its own connection, never the thread. Exercise 4:
                // neither does a panic while serving it; the stream is dropped, so the
                // connection closes, and the thread goes back for the next one.
                let served =
                    panic::catch_unwind(AssertUnwindSafe(|| handle_connection(stream, &config)));
                match served {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("{peer}: {e}"),
                    Err(_) => eprintln!("{peer}: a panic while serving; the thread goes on"),
                }
                queue.done();
                trace!("fd {fd}: closed; thread {name} is free");
            })?;
    }
    Ok(queue)
}
// ANCHOR_END: start-workers

// ANCHOR: handle-connection
/// Serves requests on one connection until the client or HTTP says it is over.
fn handle_connection(mut stream: TcpStream, config: &Config) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut first = true;
    let mut served = 0;
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
                // Exercise 2: the last request allowed on this connection says "close".
                served += 1;
                let limit_reached = config.max_requests > 0 && served >= config.max_requests;
                let keep_alive = wants_keep_alive(&request) && !limit_reached;
                respond(&mut stream, &request, keep_alive)?;
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
/// Answers a request by describing it back, which shows what the parser understood.
fn respond(stream: &mut TcpStream, request: &Request, keep_alive: bool) -> io::Result<()> {
    // Exercise 4's demonstration: a bug in request handling, reachable by any client.
    if request.target == "/panic" {
        panic!("GET /panic panics on purpose");
    }
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
    write_response(stream, "200 OK", &body, head_only, keep_alive)
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
         {}\
         \r\n",
        body.len(),
        // Exercise 3: tell a refused client when trying again makes sense (RFC 9110 §10.2.3).
        if status.starts_with("503") {
            "Retry-After: 1\r\n"
        } else {
            ""
        },
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
/// Answers 503 and closes, without ever blocking the accept loop that calls it.
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
