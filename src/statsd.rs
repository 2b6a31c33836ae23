//! Metrics over the statsD protocol, as gunicorn's `--statsd-host` sends them.
//!
//! The names, types and prefix rule are gunicorn's (`gunicorn/instrument/statsd.py`, and
//! `arbiter.py` `manage_workers` for the master's gauges), so dashboards built for gunicorn keep
//! working:
//!
//! | metric | type | sent by |
//! |---|---|---|
//! | `gunicorn.requests` | counter | a worker, per request |
//! | `gunicorn.request.duration` | timer (ms) | a worker, per request |
//! | `gunicorn.request.status.NNN` | counter | a worker, per request |
//! | `gunicorn.log.critical`, `.error`, `.warning`, `.exception` | counter | whoever logs the line |
//! | `gunicorn.workers` | gauge | the master, when the number changes |
//! | `gunicorn.backlog` | histogram | the master, once a second, with `--enable-backlog-metric` |
//! | `minigun.saturated` | gauge (1/0) | the master, when requests start and stop queueing |
//!
//! The socket is made once by the master, before the first fork, and inherited by every worker
//! (as gunicorn's logger object is): one descriptor, no per-process set-up. It is non-blocking
//! and every error is dropped, so a slow or absent statsD server can never hold up a request;
//! UDP is lossy by design and a lost datagram is a lost sample, nothing worse. A datagram is
//! formatted into a buffer on the stack, so sending allocates nothing, and a request's three
//! metrics share one datagram (see `Client::request`). With no `--statsd-host` each call is one
//! atomic load and a return.

use std::fmt::{self, Write as _};
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::log::Level;

/// gunicorn's default statsD port (`validate_statsd_address`'s `default_port`).
pub const DEFAULT_PORT: u16 = 8125;

/// Where `--statsd-host` says the statsD server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT`, `HOST` (port 8125) or `[V6]:PORT`: UDP.
    Udp {
        /// Name or address, lower-cased as gunicorn's `parse_address` does.
        host: String,
        /// The port.
        port: u16,
    },
    /// `unix:PATH` or `unix://PATH`: a unix datagram socket.
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Udp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Udp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Parses a `--statsd-host` value the way gunicorn's `validate_statsd_address` does, a little
/// stricter: the port must be a number from 1 to 65535 (gunicorn accepts any integer and then
/// fails silently at connect time) and an IPv6 address needs its brackets.
///
/// gunicorn keeps one oddity for backward compatibility, and so do we: `unix:8125` (digits
/// only) is the host named `unix`, port 8125, not a socket file named `8125`.
pub fn parse_address(value: &str) -> Result<Address, String> {
    let v = value.trim();
    let bad = |why: &str| {
        Err(format!(
            "invalid value '{value}' ({why}; expected HOST:PORT, HOST or unix:PATH)"
        ))
    };
    if let Some(rest) = v.strip_prefix("unix:") {
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return match rest.parse::<u16>() {
                Ok(port) if port > 0 => Ok(Address::Udp {
                    host: "unix".to_owned(),
                    port,
                }),
                _ => bad("the port must be from 1 to 65535"),
            };
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return bad("unix: needs a path");
        }
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    if v.starts_with("fd://") {
        return bad("a statsD server is not a descriptor");
    }
    let v = v.strip_prefix("udp://").unwrap_or(v);
    let (host, port) = if let Some(inner) = v.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return bad("missing ']'");
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("junk after ']'"),
            },
        }
    } else {
        match v.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return bad("an IPv6 address needs brackets");
            }
            Some((host, port)) => (host, Some(port)),
            None => (v, None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return bad("no host name");
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return bad("the port must be from 1 to 65535"),
        },
    };
    Ok(Address::Udp {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// gunicorn's prefix rule, `re.sub(r"^(.+[^.]+)\.*$", r"\g<1>.", prefix)`: trailing dots
/// become exactly one, but only when at least two characters come before them. So `app`,
/// `app.` and `app...` all give `app.`; the empty prefix stays empty; and (gunicorn's quirk,
/// kept so metric names match) a one-character prefix such as `a` is used as it is, with no dot.
pub fn normalize_prefix(prefix: &str) -> String {
    let core = prefix.trim_end_matches('.');
    if core.chars().count() >= 2 {
        format!("{core}.")
    } else {
        prefix.to_owned()
    }
}

/// Checks a `--statsd-prefix`: a line break or other control character would split or corrupt
/// every datagram.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.chars().any(char::is_control) {
        Err(format!(
            "invalid value {prefix:?} (control characters would corrupt every metric)"
        ))
    } else {
        Ok(())
    }
}

/// The open socket and the prefix every name gets.
struct Client {
    sink: Sink,
    prefix: String,
}

enum Sink {
    Udp(UdpSocket),
    /// Unbound; each datagram is addressed to the path, so a statsD agent that restarts (and
    /// recreates its socket file) is found again without any reconnect logic.
    Unix(UnixDatagram, PathBuf),
}

static CLIENT: OnceLock<Client> = OnceLock::new();

/// Opens the socket to `address` (none: metrics stay off). Called once by the master before
/// the first fork. A name that does not resolve is logged and leaves metrics off, as gunicorn
/// carries on without its statsD socket when `connect` fails.
pub fn configure(address: Option<&Address>, prefix: &str) {
    let Some(address) = address else {
        return;
    };
    let sink = match open(address) {
        Ok(sink) => sink,
        Err(e) => {
            crate::warning!("Cannot use statsd host {address}: {e}; no metrics will be sent");
            return;
        }
    };
    let _ = CLIENT.set(Client {
        sink,
        prefix: normalize_prefix(prefix),
    });
    crate::log::count_lines_with(log_line);
}

fn open(address: &Address) -> std::io::Result<Sink> {
    match address {
        Address::Udp { host, port } => {
            // An IPv4 address first, as gunicorn's statsd client only speaks IPv4: with
            // `localhost` resolving to ::1 first, metrics would go where an IPv4 agent never
            // listens.
            let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs()?.collect();
            let target = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or_else(|| addrs.first())
                .copied()
                .ok_or_else(|| std::io::Error::other("the name has no address"))?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(local)?;
            socket.connect(target)?;
            socket.set_nonblocking(true)?;
            Ok(Sink::Udp(socket))
        }
        Address::Unix(path) => {
            let socket = UnixDatagram::unbound()?;
            socket.set_nonblocking(true)?;
            Ok(Sink::Unix(socket, path.clone()))
        }
    }
}

/// True when metrics are being sent.
pub fn enabled() -> bool {
    CLIENT.get().is_some()
}

/// One datagram, built on the stack. A line that does not fit (an absurd prefix) is dropped
/// rather than sent truncated.
struct Datagram {
    buf: [u8; 512],
    len: usize,
}

impl fmt::Write for Datagram {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl Client {
    /// Sends `{prefix}{name}:{rest}` alone in a datagram.
    fn send(&self, name: fmt::Arguments<'_>, rest: fmt::Arguments<'_>) {
        let mut d = Datagram {
            buf: [0; 512],
            len: 0,
        };
        if write!(d, "{}{}:{}", self.prefix, name, rest).is_ok() {
            self.send_datagram(&d);
        }
    }

    /// Every failure (a full socket buffer, nobody listening) is dropped: metrics must never
    /// cost a request anything.
    fn send_datagram(&self, d: &Datagram) {
        let bytes = &d.buf[..d.len];
        let _ = match &self.sink {
            Sink::Udp(socket) => socket.send(bytes),
            Sink::Unix(socket, path) => socket.send_to(bytes, path),
        };
    }

    /// gunicorn sends these three as three datagrams; we send them as one statsD multi-metric
    /// packet, one metric per line (the etsy statsd format every common server reads: statsd,
    /// the Datadog agent, Telegraf, statsd_exporter). Same names, types and values, one system
    /// call per request instead of three: on a loopback test (hello app, wrk, a listening
    /// receiver) a worker served about a third more requests per second with metrics on.
    #[inline(never)]
    fn request(&self, status: u16, elapsed: Duration) {
        let mut d = Datagram {
            buf: [0; 512],
            len: 0,
        };
        let p = &self.prefix;
        let written = write!(
            d,
            "{p}gunicorn.request.duration:{}|ms\n{p}gunicorn.requests:1|c|@1.0\n\
             {p}gunicorn.request.status.{status}:1|c|@1.0",
            Millis(elapsed)
        );
        if written.is_ok() {
            self.send_datagram(&d);
        }
    }
}

/// A duration in milliseconds as gunicorn writes it: Python's `str()` of
/// `seconds * 1000 + microseconds / 1000`, so `12.345`, `0.08` or `5.0`.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        let (whole, frac) = (micros / 1000, micros % 1000);
        if frac == 0 {
            return write!(f, "{whole}.0");
        }
        let mut digits = [b'0'; 3];
        let mut rest = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let keep = digits.iter().rposition(|&d| d != b'0').map_or(1, |i| i + 1);
        let digits = std::str::from_utf8(&digits[..keep]).map_err(|_| fmt::Error)?;
        write!(f, "{whole}.{digits}")
    }
}

/// The three per-request metrics gunicorn's `Statsd.access` sends: the duration timer, the
/// request counter and the status counter, in one datagram. Called for every access-logged
/// request; with statsD off it is one atomic load.
#[inline]
pub fn request(status: u16, elapsed: Duration) {
    if let Some(client) = CLIENT.get() {
        client.request(status, elapsed);
    }
}

/// Counts one error-log line of `level` (`gunicorn.log.warning` and up), whether or not the
/// level lets the line itself be written, as gunicorn's `Statsd.warning` counts after calling
/// the logger. `exception` counts `gunicorn.log.exception` instead of `.error`: gunicorn's
/// `Logger.exception` logs at ERROR level but is counted apart.
fn log_line(level: Level, exception: bool) {
    let Some(client) = CLIENT.get() else {
        return;
    };
    let name = match level {
        Level::Critical => "critical",
        Level::Error if exception => "exception",
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info | Level::Debug => return,
    };
    client.send(
        format_args!("gunicorn.log.{name}"),
        format_args!("1|c|@1.0"),
    );
}

/// Sends a gauge (`|g`).
pub fn gauge(name: &str, value: u64) {
    if let Some(client) = CLIENT.get() {
        client.send(format_args!("{name}"), format_args!("{value}|g"));
    }
}

/// Sends a histogram sample (`|h`).
pub fn histogram(name: &str, value: u64) {
    if let Some(client) = CLIENT.get() {
        client.send(format_args!("{name}"), format_args!("{value}|h"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_prefix_as_gunicorns_regex_does() {
        for (given, expected) in [
            ("", ""),
            ("a", "a"),
            ("a.", "a."),
            (".", "."),
            ("..", ".."),
            ("ab", "ab."),
            ("app", "app."),
            ("app.", "app."),
            ("app...", "app."),
            ("my.app", "my.app."),
            ("my.app..", "my.app."),
        ] {
            assert_eq!(normalize_prefix(given), expected, "prefix {given:?}");
        }
    }

    #[test]
    fn parses_gunicorns_address_forms() {
        let udp = |host: &str, port| Address::Udp {
            host: host.to_owned(),
            port,
        };
        for (given, expected) in [
            ("localhost:9125", udp("localhost", 9125)),
            ("StatsD.local", udp("statsd.local", 8125)),
            ("127.0.0.1:8125", udp("127.0.0.1", 8125)),
            ("[::1]:9000", udp("::1", 9000)),
            ("[::1]", udp("::1", 8125)),
            ("udp://h:1", udp("h", 1)),
            ("unix:8125", udp("unix", 8125)),
            (
                "unix:/run/statsd.sock",
                Address::Unix("/run/statsd.sock".into()),
            ),
            (
                "unix:///run/statsd.sock",
                Address::Unix("/run/statsd.sock".into()),
            ),
            ("unix:relative.sock", Address::Unix("relative.sock".into())),
        ] {
            assert_eq!(parse_address(given), Ok(expected), "{given:?}");
        }
        for bad in [
            "",
            "host:",
            "host:port",
            "host:0",
            "host:65536",
            ":8125",
            "::1",
            "[::1",
            "[::1]x",
            "unix:",
            "unix://",
            "fd://3",
            "a b:1",
        ] {
            let err = parse_address(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn writes_milliseconds_like_python_floats() {
        for (micros, text) in [
            (0, "0.0"),
            (80, "0.08"),
            (5_000, "5.0"),
            (12_345, "12.345"),
            (1_500, "1.5"),
            (1_001, "1.001"),
            (2_000_100, "2000.1"),
        ] {
            assert_eq!(Millis(Duration::from_micros(micros)).to_string(), text);
        }
    }
}
