//! Starts the step 03 binary and checks the promise of chapter 3: a request parsed across
//! any number of reads, garbage answered with 400, a stalled client with 408.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_step03-parser");

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

#[test]
fn curl_gets_its_request_described_back() {
    let server = Server::start(&[]);
    let transcript = curl(&server, &["-si", "-d", "name=ada"], "/greet?lang=en");
    assert!(transcript.contains("HTTP/1.1 200 OK\n"), "{transcript}");
    assert!(
        transcript.contains("You sent POST /greet?lang=en"),
        "{transcript}"
    );
    assert!(transcript.contains("8 bytes of body"), "{transcript}");
    check_transcript("curl-post.txt", &transcript);
}

#[test]
fn a_request_sent_byte_by_byte_is_parsed() {
    let server = Server::start(&[]);
    let request = b"POST /slowly HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap(); // one TCP segment per byte
    for byte in request {
        stream.write_all(&[*byte]).unwrap();
    }
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("POST /slowly (HTTP/1.1) with 2 headers and 5 bytes of body"),
        "{reply}"
    );
}

#[test]
fn the_body_is_read_even_when_it_arrives_after_the_head() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(b"PUT /f HTTP/1.0\r\nContent-Length: 11\r\n\r\n")
        .unwrap();
    stream.write_all(b"hello").unwrap();
    stream.write_all(b" world").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("PUT /f (HTTP/1.0) with 1 headers and 11 bytes of body"),
        "{reply}"
    );
}

#[test]
fn garbage_gets_400_at_once() {
    let server = Server::start(&[]);
    let request = "HELLO?\r\n\r\n";
    let reply = exchange(&server, request.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    check_transcript("nc-garbage.txt", &nc_transcript(request, &reply));
    // A TLS handshake never contains an empty line; we still answer without waiting.
    let started = Instant::now();
    let reply = exchange(&server, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn protocol_errors_get_their_own_status_codes() {
    let server = Server::start(&[]);
    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"), // no Host
        (b"GET / HTTP/1.1\nHost: x\n\n", "400 Bad Request"), // bare LF
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "505 HTTP Version Not Supported"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400 Bad Request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "501 Not Implemented"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", "413 Content Too Large"),
    ];
    for (request, status) in cases {
        let reply = exchange(&server, request);
        let expected = format!("HTTP/1.1 {status}\r\n");
        assert!(
            reply.starts_with(&expected),
            "{:?} got {reply}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn an_oversized_head_gets_431() {
    let server = Server::start(&[]);
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 9000));
    let reply = exchange(&server, &request);
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
}

#[test]
fn head_gets_headers_without_a_body() {
    let server = Server::start(&[]);
    let reply = exchange(&server, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "{reply}");
}

#[test]
fn a_stalled_client_gets_408_and_the_next_client_is_served() {
    let server = Server::start(&["--timeout", "0.3"]);
    let started = Instant::now();
    let request = "GET / HTTP/1.1\r\nHost: x\r\n";
    let reply = exchange(&server, request.as_bytes()); // no empty line: the head never ends
    assert!(
        reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{reply}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    check_transcript("nc-stall.txt", &nc_transcript(request, &reply));
    let reply = exchange(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[test]
fn a_client_trickling_bytes_cannot_outlast_the_deadline() {
    let server = Server::start(&["--timeout", "0.5"]);
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    // One byte every 100 ms: each read is quick, but the request as a whole is late.
    let mut reply = Vec::new();
    for byte in b"GET /drip HTTP/1.1\r\nHost: x\r\n\r\n" {
        if stream.write_all(&[*byte]).is_err() {
            break; // the server already answered and closed
        }
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut chunk = [0u8; 256];
        if let Ok(n @ 1..) = stream.read(&mut chunk) {
            reply.extend_from_slice(&chunk[..n]);
            break;
        }
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn help_says_what_the_step_does() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("parses") && text.contains("--timeout"),
        "{text}"
    );
}

#[test]
fn rejects_bad_flags_with_exit_code_2() {
    for args in [
        &["--threads", "2"][..],
        &["--timeout", "soon"],
        &["--timeout=-1"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains(args[0].split('=').next().unwrap()), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
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
fn trace_narrates_a_request_read_in_three_pieces() {
    let (server, rx) = Server::start_traced(&[]);
    let mut client = server.connect();
    client.set_nodelay(true).unwrap();
    let me = client.local_addr().unwrap();
    let (a, b, c) = (
        "POST /p HTTP/1.1\r\nHost: x\r\n",
        "Content-Length: 5\r\n\r\nhel",
        "lo",
    );
    let head_len = a.len() + b.len() - 3;
    // Each piece is sent only once the trace shows the server has taken in the one before,
    // so the server's reads are exactly these three.
    assert_eq!(
        trace_lines(&rx, 2),
        [
            format!("trace: accepted fd 4 from {me}"),
            "trace: fd 4: need more (0 bytes buffered)".to_string(),
        ]
    );
    client.write_all(a.as_bytes()).unwrap();
    assert_eq!(
        trace_lines(&rx, 2),
        [
            format!("trace: fd 4: read {} bytes", a.len()),
            format!("trace: fd 4: need more ({} bytes buffered)", a.len()),
        ]
    );
    client.write_all(b.as_bytes()).unwrap();
    assert_eq!(
        trace_lines(&rx, 3),
        [
            format!("trace: fd 4: read {} bytes", b.len()),
            format!("trace: fd 4: head complete: POST /p, {head_len} bytes"),
            "trace: fd 4: body 3 of 5 bytes".to_string(),
        ]
    );
    client.write_all(c.as_bytes()).unwrap();
    assert_eq!(
        trace_lines(&rx, 3),
        [
            "trace: fd 4: read 2 bytes".to_string(),
            "trace: fd 4: body 5 of 5 bytes".to_string(),
            "trace: fd 4: answered 200 OK, close".to_string(),
        ]
    );
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("5 bytes of body"), "{reply}");
}

#[test]
fn trace_shows_an_error_answer() {
    let (server, rx) = Server::start_traced(&[]);
    let reply = exchange(&server, b"GET / HTTP/1.1\nHost: x\n\n");
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    let lines = trace_lines(&rx, 4);
    assert_eq!(lines[3], "trace: fd 4: answered 400 Bad Request, close");
}
