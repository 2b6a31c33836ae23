//! Step 02: a web server that answers every request with the same small page.
//!
//! The accept loop is step 01's. What changed is the conversation on each connection: read the
//! request head (the lines up to the first empty line), print it so you can see what a browser
//! sends, write one fixed HTTP response that says `Connection: close`, and hang up.
//! Chapter 2 of the book walks through it.
//!
//! Left out on purpose:
//! - Parsing: the head is only printed, never understood, and a request body is ignored.
//!   Step 03 parses the head, reads a `Content-Length` body and answers 400 to garbage.
//! - Timeouts: a client that connects and says nothing holds the server forever. Step 03.
//! - Concurrency and keep-alive: one client, one request at a time. Step 04 adds both.

#[macro_use]
mod trace;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// What `--help` prints.
const USAGE: &str = "\
step02-hello-http: an HTTP server that answers every request with one fixed page.

Usage: step02-hello-http [-b HOST:PORT] [--trace]

Options:
  -b, --bind HOST:PORT  address to listen on (default 127.0.0.1:8000; port 0 picks a free one)
      --trace           narrate each accept, read and close on stderr
  -h, --help            print this help and exit
";

/// Settings taken from the command line.
struct Config {
    /// Where to listen, as `HOST:PORT`.
    bind: String,
}

// ANCHOR: parse-args
/// Reads the flags. `Ok(None)` means `--help` was asked for; `Err` is a one-line message.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config = Config {
        bind: "127.0.0.1:8000".to_string(),
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
            "--trace" => trace::enable(),
            _ => return Err(format!("unknown flag {arg}")),
        }
    }
    Ok(Some(config))
}
// ANCHOR_END: parse-args

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
    serve(&listener)
}

// ANCHOR: accept-loop
/// Accepts clients forever, one at a time: the next `accept` runs only after
/// `handle_connection` has returned.
fn serve(listener: &TcpListener) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                trace!("accepted fd {} from {peer}", stream.as_raw_fd());
                // A failing client ends only its own connection, never the server.
                if let Err(e) = handle_connection(stream) {
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

// ANCHOR: page
/// The page every request gets, whatever it asked for.
const PAGE: &str = "<!DOCTYPE html>
<html>
<head><title>minigun step 02</title></head>
<body><h1>Hello from step 02!</h1><p>Every request gets this same page.</p></body>
</html>
";
// ANCHOR_END: page

/// The most bytes of request head we keep before giving up on a client. Browsers send well
/// under 2 KiB; without a limit one client could make us buffer until memory runs out.
const MAX_HEAD: usize = 8192;

// ANCHOR: handle-connection
/// Reads one request head, shows it on stderr, answers with [`PAGE`] and closes.
fn handle_connection(mut stream: TcpStream) -> io::Result<()> {
    let head = read_head(&mut stream)?;
    // Lossy: header values may hold bytes that are not UTF-8, and this is only for show.
    eprint!("{}", String::from_utf8_lossy(&head));
    write_page(&mut stream)?;
    trace!("fd {}: answered 200 OK, close", stream.as_raw_fd());
    Ok(())
    // `stream` is dropped here, which closes the connection, as `Connection: close` promised.
}
// ANCHOR_END: handle-connection

// ANCHOR: read-head
/// Reads until the empty line that ends the head (`\r\n\r\n`) and returns the bytes so far.
///
/// A head may arrive in one `read` or in twenty, so we keep reading and look again each time.
/// Anything after the empty line (a body) is ignored: step 03 learns to read it.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into()); // hung up mid-head
        }
        head.extend_from_slice(&chunk[..n]);
        trace!("fd {}: read {n} bytes", stream.as_raw_fd());
    }
    Ok(head)
}
// ANCHOR_END: read-head

// ANCHOR: write-page
/// Writes the whole response: status line, headers, empty line, body.
fn write_page(stream: &mut TcpStream) -> io::Result<()> {
    // Content-Length tells the client where the body ends; Connection: close tells it that
    // we hang up afterwards, so it must open a new connection for its next request.
    let response = format!(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {PAGE}",
        PAGE.len()
    );
    // One write for head and body: two small writes can cost a round trip (Nagle's algorithm
    // waiting for the client's delayed ACK).
    stream.write_all(response.as_bytes())
}
// ANCHOR_END: write-page
