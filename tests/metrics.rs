//! Metrics and load, as a gunicorn user watching production meets them: `--statsd-host` sends
//! gunicorn's metric names to a real UDP (or unix datagram) socket held by the test, and the
//! master says once when every thread is busy and connections queue, and once when that ends.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{http_get, Conn, Server, TempDir, WAIT};

/// The test's statsD server: every metric the server sends, in order of arrival (a datagram
/// may carry several, one per line), and the datagrams as they came.
struct Statsd {
    socket: Socket,
    got: Vec<String>,
    datagrams: Vec<String>,
}

/// Where the datagrams arrive.
enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Udp(s) => s.recv(buf),
            Socket::Unix(s) => s.recv(buf),
        }
    }
}

impl Statsd {
    /// Listens on a free UDP port; returns it with the `--statsd-host` value naming it.
    fn udp() -> (Statsd, String) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set_read_timeout");
        let addr = socket.local_addr().expect("local_addr").to_string();
        let statsd = Statsd {
            socket: Socket::Udp(socket),
            got: Vec::new(),
            datagrams: Vec::new(),
        };
        (statsd, addr)
    }

    /// Listens on a unix datagram socket in `dir`.
    fn unix(dir: &TempDir) -> (Statsd, String) {
        let path = dir.path().join("statsd.sock");
        let socket = UnixDatagram::bind(&path).expect("bind a unix datagram socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set_read_timeout");
        let statsd = Statsd {
            socket: Socket::Unix(socket),
            got: Vec::new(),
            datagrams: Vec::new(),
        };
        (statsd, format!("unix:{}", path.display()))
    }

    /// Receives until `want` holds for the datagrams so far, or `timeout` passes.
    fn wait_until(
        &mut self,
        server: &Server,
        what: &str,
        timeout: Duration,
        mut want: impl FnMut(&[String]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while !want(&self.got) {
            if Instant::now() >= deadline {
                server.fail(&format!(
                    "statsD: {what} not received within {timeout:?}; got {:#?}",
                    self.got
                ));
            }
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    eprintln!("[statsd] {text:?}");
                    self.got.extend(text.split('\n').map(str::to_owned));
                    self.datagrams.push(text);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("statsD socket: {e}"),
            }
        }
    }

    /// Waits for a datagram equal to `line`.
    fn wait_for(&mut self, server: &Server, line: &str) {
        self.wait_until(server, line, WAIT, |got| got.iter().any(|g| g == line));
    }

    fn count(&self, line: &str) -> usize {
        self.got.iter().filter(|g| *g == line).count()
    }
}

fn start(args: &[&str]) -> Server {
    let mut all = args.to_vec();
    all.extend(["--chdir", "tests/apps", "metrics:app"]);
    Server::start(&all)
}

#[test]
fn sends_gunicorns_request_metrics_with_the_prefix() {
    let (mut statsd, addr) = Statsd::udp();
    // gunicorn's rule: trailing dots become exactly one.
    let server = start(&["--statsd-host", &addr, "--statsd-prefix", "myapp.."]);
    assert_eq!(http_get(server.port(), "/").status, 200);
    assert_eq!(http_get(server.port(), "/missing").status, 404);
    assert_eq!(http_get(server.port(), "/").status, 200);
    statsd.wait_until(&server, "two 200s and a 404", WAIT, |got| {
        got.iter()
            .filter(|g| *g == "myapp.gunicorn.requests:1|c|@1.0")
            .count()
            == 3
            && got
                .iter()
                .any(|g| g == "myapp.gunicorn.request.status.404:1|c|@1.0")
            && got
                .iter()
                .filter(|g| *g == "myapp.gunicorn.request.status.200:1|c|@1.0")
                .count()
                == 2
    });
    // The master's gauge, sent when the number of workers is first known.
    statsd.wait_for(&server, "myapp.gunicorn.workers:1|g");
    let durations: Vec<&String> = statsd
        .got
        .iter()
        .filter(|g| g.starts_with("myapp.gunicorn.request.duration:"))
        .collect();
    assert_eq!(durations.len(), 3, "{:#?}", statsd.got);
    for d in durations {
        // A timer in milliseconds, written as Python writes a float: `0.412|ms`.
        let value = d
            .strip_prefix("myapp.gunicorn.request.duration:")
            .and_then(|v| v.strip_suffix("|ms"))
            .unwrap_or_else(|| panic!("not a timer: {d}"));
        assert!(value.contains('.'), "{d}");
        let ms: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {d}"));
        assert!((0.0..20_000.0).contains(&ms), "{d}");
    }
    for g in &statsd.got {
        assert!(g.starts_with("myapp.gunicorn."), "{g}");
    }
    // A request's three metrics travel together, in gunicorn's order.
    let per_request: Vec<&String> = statsd
        .datagrams
        .iter()
        .filter(|d| d.contains("gunicorn.requests:"))
        .collect();
    assert_eq!(per_request.len(), 3, "{:#?}", statsd.datagrams);
    for d in per_request {
        let lines: Vec<&str> = d.split('\n').collect();
        assert_eq!(lines.len(), 3, "{d:?}");
        assert!(
            lines[0].starts_with("myapp.gunicorn.request.duration:"),
            "{d:?}"
        );
        assert_eq!(lines[1], "myapp.gunicorn.requests:1|c|@1.0");
        assert!(
            lines[2].starts_with("myapp.gunicorn.request.status."),
            "{d:?}"
        );
    }
    // Three quick requests do not saturate anything.
    assert_eq!(server.count_lines("threads busy"), 0);
}

#[test]
fn counts_log_lines_by_level_whatever_the_log_level() {
    let (mut statsd, addr) = Statsd::udp();
    // --log-level critical hides the exception and the warning, but gunicorn's statsD logger
    // counts them all the same. A short timeout, so a stuck request gets its worker killed
    // (critical); one connection per worker, so a second one is refused with a warning.
    // At that level the "Listening at" line is not written either: the test binds the socket
    // and hands it over (`fd://3`), so it knows the port without reading the log.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local_addr").port();
    let server = Server::build(&[
        "-b",
        "fd://3",
        "--statsd-host",
        &addr,
        "--log-level",
        "critical",
        "--worker-connections",
        "1",
        "--timeout",
        "2",
        "--chdir",
        "tests/apps",
        "metrics:app",
    ])
    .pass_fd3(listener.as_raw_fd())
    .spawn();
    assert_eq!(http_get(port, "/boom").status, 500);
    statsd.wait_for(&server, "gunicorn.log.exception:1|c|@1.0");
    statsd.wait_for(&server, "gunicorn.request.status.500:1|c|@1.0");
    assert_eq!(
        statsd.count("gunicorn.log.error:1|c|@1.0"),
        0,
        "an app exception is counted as an exception, not an error: {:#?}",
        statsd.got
    );
    assert_eq!(server.count_lines("Error handling request"), 0);

    // A request stuck in the app: the master logs WORKER TIMEOUT, at critical level, and
    // starts another worker.
    let mut stuck = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stuck
        .write_all(b"GET /sleep?s=10 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    statsd.wait_for(&server, "gunicorn.log.critical:1|c|@1.0");
    server.wait_for_line("WORKER TIMEOUT", WAIT);
    let _ = stuck.set_read_timeout(Some(WAIT));
    let _ = stuck.read(&mut [0u8; 64]);
    drop(stuck);

    // The new worker holds one connection; the next one is refused with a warning.
    let mut held = Conn::open(port);
    held.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(held.read_response("GET").status, 200);
    // The 503 is written at once and the socket closed unread, so the answer may be followed
    // by a reset: keep what arrived.
    let mut refused = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    refused
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    refused
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    let mut answer = Vec::new();
    let _ = refused.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
    statsd.wait_for(&server, "gunicorn.log.warning:1|c|@1.0");
}

#[test]
fn a_unix_statsd_host_gets_the_metrics_without_a_prefix() {
    let dir = TempDir::new("statsd-unix");
    let (mut statsd, addr) = Statsd::unix(&dir);
    let server = start(&["--statsd-host", &addr]);
    assert_eq!(http_get(server.port(), "/empty").status, 204);
    statsd.wait_for(&server, "gunicorn.requests:1|c|@1.0");
    statsd.wait_for(&server, "gunicorn.request.status.204:1|c|@1.0");
    statsd.wait_for(&server, "gunicorn.workers:1|g");
}

#[test]
fn a_statsd_server_that_is_not_there_costs_nothing() {
    // Nobody listens on this port: every send fails (ECONNREFUSED comes back on the next one),
    // and requests are served as usual.
    let (statsd, addr) = Statsd::udp();
    drop(statsd);
    let server = start(&["--statsd-host", &addr]);
    for _ in 0..20 {
        assert_eq!(http_get(server.port(), "/").status, 200);
    }
    assert_eq!(
        server.count_lines("statsd"),
        0,
        "{:#?}",
        server.stderr_lines()
    );
}

#[test]
fn a_bad_statsd_host_exits_2_with_one_line_naming_it() {
    for value in [
        "localhost:port",
        "127.0.0.1:99999",
        "host:0",
        "[::1",
        "::1",
        "unix:",
        "fd://3",
    ] {
        let server = Server::build(&[
            "--statsd-host",
            value,
            "--chdir",
            "tests/apps",
            "metrics:app",
        ])
        .no_default_bind()
        .spawn();
        let status = server.wait_exit(WAIT);
        let lines: Vec<String> = server
            .stderr_lines()
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(status.code(), Some(2), "{value}: {lines:#?}");
        assert_eq!(lines.len(), 1, "{value}: {lines:#?}");
        assert!(
            lines[0].contains("--statsd-host") && lines[0].contains(&format!("'{value}'")),
            "{value}: {}",
            lines[0]
        );
    }
    let server = Server::build(&[
        "--statsd-prefix",
        "a\nb",
        "--chdir",
        "tests/apps",
        "metrics:app",
    ])
    .no_default_bind()
    .spawn();
    assert_eq!(server.wait_exit(WAIT).code(), Some(2));
    assert!(server.stderr_lines()[0].contains("--statsd-prefix"));
}

#[test]
fn help_lists_the_metrics_and_log_flags() {
    let server = Server::build(&["--help"]).no_default_bind().spawn();
    assert_eq!(server.wait_exit(WAIT).code(), Some(0));
    let text = server.stdout_lines().join("\n");
    for flag in [
        "--statsd-host",
        "--statsd-prefix",
        "--enable-backlog-metric",
        "--access-log-json",
        "--request-id-header",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
}

/// Sends `GET path` with `Connection: close` on a new connection and reads the whole answer.
fn get_on_new_connection(port: u16, path: &str) -> std::thread::JoinHandle<Result<u16, String>> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || {
        let raw = common::exchange(port, request.as_bytes(), WAIT)?;
        common::parse_response(&raw).map(|r| r.status)
    })
}

#[test]
fn saturation_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let (mut statsd, addr) = Statsd::udp();
    let server = start(&[
        "--threads",
        "2",
        "--statsd-host",
        &addr,
        "--enable-backlog-metric",
    ]);
    // Six clients, two threads: two requests sleep in the app while the other connections wait
    // in the listen backlog, nobody being free to accept them.
    let clients: Vec<_> = (0..6)
        .map(|_| get_on_new_connection(server.port(), "/sleep?s=1.5"))
        .collect();
    let started = server.wait_for_line("threads busy", WAIT);
    assert!(
        started.contains("[WARNING] All 2 threads busy and ")
            && started.contains("connections waiting"),
        "{started}"
    );
    for client in clients {
        let status = client.join().expect("client thread");
        assert_eq!(status, Ok(200));
    }
    let ended = server.wait_for_line("Requests no longer queueing", WAIT);
    assert!(ended.contains("[INFO]"), "{ended}");
    statsd.wait_for(&server, "minigun.saturated:1|g");
    statsd.wait_for(&server, "minigun.saturated:0|g");
    // gunicorn's --enable-backlog-metric histogram saw the queue.
    statsd.wait_until(&server, "a non-empty gunicorn.backlog", WAIT, |got| {
        got.iter().any(|g| {
            g.strip_prefix("gunicorn.backlog:")
                .and_then(|v| v.strip_suffix("|h"))
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n > 0)
        })
    });
    // Stopping gives the master every pass it will ever make: still one line of each.
    server.signal(libc::SIGTERM);
    server.wait_exit(WAIT);
    assert_eq!(server.count_lines("threads busy"), 1);
    assert_eq!(server.count_lines("Requests no longer queueing"), 1);
    assert_eq!(statsd.count("minigun.saturated:1|g"), 1);
}
