//! Step 02 with the answers to chapter 2's code exercises: `/` gets the page and every other
//! path a 404 (exercise 1), and every response carries a `Date` header (exercise 3).
//!
//! `diff -r steps/02-hello-http/src steps/02-hello-http/solutions/src` shows exactly the
//! answers.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// Reads one request head, shows it on stderr, answers `/` with [`PAGE`] and any other path
/// with a 404, and closes.
fn handle_connection(mut stream: TcpStream) -> io::Result<()> {
    let head = read_head(&mut stream)?;
    // Lossy: header values may hold bytes that are not UTF-8, and this is only for show.
    eprint!("{}", String::from_utf8_lossy(&head));
    let (status, body) = match request_path(&head) {
        Some(b"/") => ("200 OK", PAGE),
        _ => ("404 Not Found", NOT_FOUND),
    };
    write_page(&mut stream, status, body)?;
    trace!("fd {}: answered {status}, close", stream.as_raw_fd());
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
fn write_page(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    // Content-Length tells the client where the body ends; Connection: close tells it that
    // we hang up afterwards, so it must open a new connection for its next request.
    let response = format!(
        "HTTP/1.1 {status}\r\n\
         Date: {}\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {body}",
        http_date(SystemTime::now()),
        body.len()
    );
    // One write for head and body: two small writes can cost a round trip (Nagle's algorithm
    // waiting for the client's delayed ACK).
    stream.write_all(response.as_bytes())
}
// ANCHOR_END: write-page

/// The page for any path other than `/` (exercise 1).
const NOT_FOUND: &str = "<!DOCTYPE html>\n<title>Not Found</title><h1>404: no such page</h1>\n";

// ANCHOR: request-path
/// Exercise 1: the request target, the second word of the request line, with the query
/// (`?...`) cut off. `None` when the first line has no second word.
fn request_path(head: &[u8]) -> Option<&[u8]> {
    let line = head.split(|&b| b == b'\r').next()?;
    let target = line.split(|&b| b == b' ').nth(1)?;
    target.split(|&b| b == b'?').next()
}
// ANCHOR_END: request-path

// ANCHOR: http-date
/// Exercise 3: `time` as an IMF-fixdate, RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`,
/// always in GMT and always in English.
fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The (year, month, day) of a count of days since 1970-01-01, in the Gregorian calendar.
/// It counts in 400-year eras, which all have the same length (146,097 days), and starts each
/// year on 1 March, so that the leap day falls at the end of the year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
// ANCHOR_END: http-date

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_dates_the_rfc_way() {
        let at = |secs| http_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT"); // a leap day
        assert_eq!(at(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(at(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT"); // 2100 is no leap year
    }

    #[test]
    fn finds_the_path_without_the_query() {
        assert_eq!(
            request_path(b"GET /a?b=c HTTP/1.1\r\n\r\n"),
            Some(&b"/a"[..])
        );
        assert_eq!(request_path(b"GET / HTTP/1.1\r\n\r\n"), Some(&b"/"[..]));
        assert_eq!(request_path(b"hello\r\n\r\n"), None);
    }
}
