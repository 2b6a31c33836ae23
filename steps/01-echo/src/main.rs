//! Step 01: an echo server, the smallest program that accepts TCP connections.
//!
//! It binds a listening socket, then loops forever: accept one client, send every byte the
//! client sends straight back until the client hangs up, then accept the next client.
//! Chapter 1 of the book walks through it.
//!
//! Left out on purpose:
//! - HTTP: bytes are only bytes here. Step 02 speaks HTTP.
//! - Timeouts: a client that never hangs up holds the server forever. Step 03 adds them.
//! - Concurrency: one client at a time. Step 04 adds a pool of threads.

#[macro_use]
mod trace;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

/// What `--help` prints.
const USAGE: &str = "\
step01-echo: a TCP echo server that serves one client at a time.

Usage: step01-echo [-b HOST:PORT] [--trace]

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

// ANCHOR: handle-connection
/// Sends back every byte the client sends, until the client closes its side.
fn handle_connection(mut stream: TcpStream) -> io::Result<()> {
    let (mut buf, fd) = ([0u8; 4096], stream.as_raw_fd());
    loop {
        // `read` returns as soon as *some* bytes are there: 1 or 4096, whatever arrived.
        let n = stream.read(&mut buf)?;
        if n == 0 {
            trace!("fd {fd}: read 0 bytes: the client hung up");
            return Ok(()); // end of stream; dropping `stream` closes our side too
        }
        trace!("fd {fd}: read {n} bytes, writing them back");
        stream.write_all(&buf[..n])?;
    }
}
// ANCHOR_END: handle-connection
