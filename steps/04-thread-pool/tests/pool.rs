//! Starts the step 04 binary and checks the promise of chapter 4: keep-alive serves several
//! requests per connection, one stalled client no longer blocks the others, and a flood
//! beyond threads plus queue gets 503 instead of an ever longer wait.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_step04-thread-pool");

/// A running server; killing it on drop means a failed test leaks no process.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts the binary on port 0 with `extra` flags and waits (at most 10 s) for its
    /// "Listening on" line.
    fn start(extra: &[&str]) -> Server {
        Server::start_with(extra, Stdio::null())
    }

    /// Starts the binary with `--trace` (and `extra`) and returns its stderr, line by line.
    fn start_traced(extra: &[&str]) -> (Server, mpsc::Receiver<String>) {
        let args: Vec<&str> = ["--trace"].iter().chain(extra).copied().collect();
        let mut server = Server::start_with(&args, Stdio::piped());
        let stderr = server.child.stderr.take().expect("stderr was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (server, rx)
    }

    fn start_with(extra: &[&str], stderr: Stdio) -> Server {
        let mut child = Command::new(BIN)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the step binary was built by cargo");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            lines.for_each(drop); // keep the pipe open until the server exits
        });
        let mut server = Server {
            child,
            addr: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server prints its address within 10 s");
        server.addr = line
            .strip_prefix("Listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        server
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).expect("the server listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a positive timeout is valid");
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes and reads the reply until the server closes the connection.
fn exchange(server: &Server, request: &[u8]) -> String {
    let mut stream = server.connect();
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("the server replies and closes within 5 s");
    String::from_utf8_lossy(&reply).into_owned()
}

/// Runs curl against the server and returns a transcript as a learner would see it in a
/// terminal listening on the book's default port 8000.
#[allow(dead_code)] // kept identical to the helper of steps 02 and 03
fn curl(server: &Server, args: &[&str], path: &str) -> String {
    let url = format!("http://{}{path}", server.addr);
    let out = Command::new("curl")
        .args(args)
        .arg(&url)
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "curl failed: {out:?}");
    let shown = format!("$ curl {} http://127.0.0.1:8000{path}\n", args.join(" "));
    let body = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    (shown + &body).replace(&server.addr, "127.0.0.1:8000")
}

/// Compares `actual` with the golden file `transcripts/NAME`, which the book includes.
/// With `UPDATE_TRANSCRIPTS=1` in the environment the file is (re)written instead.
fn check_transcript(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("transcripts")
        .join(name);
    if std::env::var_os("UPDATE_TRANSCRIPTS").is_some() {
        std::fs::write(&path, actual).expect("transcripts/ is writable");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_TRANSCRIPTS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        expected, actual,
        "transcript {name} changed; rerun with UPDATE_TRANSCRIPTS=1"
    );
}

/// Renders a raw exchange the way `printf '...' | nc 127.0.0.1 8000` shows it.
fn nc_transcript(request: &str, reply: &str) -> String {
    let shown = request.replace("\r\n", "\\r\\n");
    format!(
        "$ printf '{shown}' | nc 127.0.0.1 8000\n{}",
        reply.replace("\r\n", "\n")
    )
}

/// Reads one response with a Content-Length body, leaving the connection open. The head is
/// read a byte at a time so that nothing of a following response is consumed.
fn read_response(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("response head cut short ({other:?}): {head:?}"),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("the whole body");
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn curl_reuses_one_connection_for_two_requests() {
    let server = Server::start(&[]);
    // Given two URLs, curl sends both over one connection if the server keeps it alive.
    let urls = ["/first", "/again"].map(|path| format!("http://{}{path}", server.addr));
    let out = Command::new("curl")
        .arg("-si")
        .args(&urls)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = "$ curl -si http://127.0.0.1:8000/first http://127.0.0.1:8000/again\n";
    let transcript =
        shown.to_string() + &String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert_eq!(
        transcript.matches("Connection: keep-alive").count(),
        2,
        "{transcript}"
    );
    check_transcript("curl-keep-alive.txt", &transcript);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(&["--threads", "1"]);
    let mut stream = server.connect();
    for i in 0..3 {
        let request = format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let reply = read_response(&mut stream);
        assert!(reply.contains("Connection: keep-alive\r\n"), "{reply}");
        assert!(reply.contains(&format!("You sent GET /{i} ")), "{reply}");
    }
    // Two pipelined requests in one write are both answered, in order.
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut stream).contains("GET /a "));
    let last = read_response(&mut stream);
    assert!(
        last.contains("GET /b ") && last.contains("Connection: close\r\n"),
        "{last}"
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the server closes after Connection: close");
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let server = Server::start(&[]);
    let reply = exchange(&server, b"GET / HTTP/1.0\r\n\r\n");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut stream).contains("Connection: keep-alive\r\n"));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_quietly() {
    let server = Server::start(&["--keep-alive", "0.2"]);
    let mut stream = server.connect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    read_response(&mut stream);
    let started = Instant::now();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap(); // EOF once --keep-alive has passed
    assert!(rest.is_empty(), "no 408 after a finished request: {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn other_clients_are_served_while_one_stalls() {
    let server = Server::start(&["--threads", "2"]);
    let mut staller = server.connect();
    staller.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // and never finishes
    let started = Instant::now();
    let reply = exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_flood_beyond_threads_and_queue_gets_503() {
    // 2 threads and 4 slots: connections 1-2 are being served, 3-4 wait, 5-8 are refused.
    let server = Server::start(&[
        "--threads",
        "2",
        "--worker-connections",
        "4",
        "--keep-alive",
        "30",
    ]);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = server.connect();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        held.push(stream);
    }
    // The first two are answered and then kept alive, which keeps both threads busy.
    for stream in &mut held[..2] {
        assert!(read_response(stream).starts_with("HTTP/1.1 200 OK\r\n"));
    }
    let mut refused = 0;
    let mut transcript = String::new();
    for _ in 0..4 {
        let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let reply = exchange(&server, request.as_bytes());
        assert!(
            reply.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{reply}"
        );
        refused += 1;
        transcript = nc_transcript(request, &reply);
    }
    assert_eq!(refused, 4);
    check_transcript("nc-busy.txt", &transcript);
    // When a served client leaves, a waiting one gets its turn.
    held.remove(0);
    assert!(read_response(&mut held[1]).starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn garbage_still_gets_400() {
    let server = Server::start(&[]);
    let reply = exchange(&server, b"HELLO?\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
}

#[test]
fn help_says_what_the_step_does() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pool of threads") && text.contains("--worker-connections"),
        "{text}"
    );
}

#[test]
fn rejects_bad_flags_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--workers", "2"], "--workers"),
        (&["--threads", "0"], "--threads"),
        (&["--threads=many"], "--threads"),
        (&["--keep-alive", "-1"], "--keep-alive"),
        (
            &["--threads", "8", "--worker-connections", "4"],
            "--worker-connections",
        ),
    ];
    for (args, flag) in cases {
        let out = Command::new(BIN).args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(flag) && text.lines().count() == 1,
            "{args:?}: {text}"
        );
    }
}

/// Collects the next `n` lines from a traced server's stderr that start with `trace:`,
/// waiting at most 5 s in all.
fn trace_lines(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("trace: ") => lines.push(line),
            Ok(_) => {} // the step's other stderr output
            Err(_) => panic!(
                "only {} of {n} trace lines within 5 s: {lines:#?}",
                lines.len()
            ),
        }
    }
    lines
}

#[test]
fn trace_narrates_one_request_through_the_queue() {
    let (server, rx) = Server::start_traced(&["--threads", "1"]);
    let mut client = server.connect();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap(); // as `nc -N` does
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    let me = client.local_addr().unwrap();
    let expected = [
        format!("accepted fd 4 from {me}"),
        "fd 4: queued (1 waiting, 0 busy)".to_string(),
        "fd 4: picked up by thread worker-0".to_string(),
        "fd 4: need more (0 bytes buffered)".to_string(),
        "fd 4: read 27 bytes".to_string(),
        "fd 4: head complete: GET /, 27 bytes".to_string(),
        "fd 4: body 0 of 0 bytes".to_string(),
        "fd 4: answered 200 OK, keep-alive".to_string(),
        "fd 4: waiting up to 2s for a next request".to_string(),
        "fd 4: the client closed".to_string(),
        "fd 4: closed; thread worker-0 is free".to_string(),
    ];
    let expected: Vec<String> = expected.iter().map(|l| format!("trace: {l}")).collect();
    assert_eq!(trace_lines(&rx, expected.len()), expected);
}
