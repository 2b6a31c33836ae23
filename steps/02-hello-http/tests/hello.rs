//! Starts the step 02 binary and checks the promise of chapter 2: any HTTP client gets a
//! well-formed page, and the connection closes after it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_step02-hello-http");

/// A running server; killing it on drop means a failed test leaks no process.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts the binary on port 0 and waits (at most 10 s) for its "Listening on" line.
    fn start() -> Server {
        Server::start_with(&[], Stdio::null())
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

#[test]
fn curl_gets_the_page() {
    let server = Server::start();
    let transcript = curl(&server, &["-si"], "/");
    assert!(transcript.contains("HTTP/1.1 200 OK\n"), "{transcript}");
    assert!(
        transcript.contains("<h1>Hello from step 02!</h1>"),
        "{transcript}"
    );
    check_transcript("curl-page.txt", &transcript);
}

#[test]
fn every_path_gets_the_same_page_and_the_connection_closes() {
    let server = Server::start();
    let reply = exchange(
        &server,
        b"GET /no/such/page?x=1 HTTP/1.1\r\nHost: example\r\n\r\n",
    );
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .expect("a head ends with an empty line");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    // Content-Length must count the body exactly, or the client hangs or truncates.
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", body.len())),
        "{head}"
    );
}

#[test]
fn a_head_split_over_many_writes_is_still_answered() {
    let server = Server::start();
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap();
    for piece in ["GET / HT", "TP/1.1\r\nHo", "st: x\r\n", "\r", "\n"] {
        stream.write_all(piece.as_bytes()).unwrap();
    }
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
}

#[test]
fn help_says_what_the_step_does() {
    let out = Command::new(BIN).arg("-h").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fixed page") && text.contains("--bind"),
        "{text}"
    );
}

#[test]
fn rejects_an_unknown_flag_with_exit_code_2() {
    let out = Command::new(BIN).arg("--workers=2").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--workers") && text.lines().count() == 1,
        "{text}"
    );
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
fn trace_narrates_one_request() {
    let (server, rx) = Server::start_traced(&[]);
    let mut client = server.connect();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    let me = client.local_addr().unwrap();
    assert_eq!(
        trace_lines(&rx, 3),
        [
            format!("trace: accepted fd 4 from {me}"),
            "trace: fd 4: read 27 bytes".to_string(),
            "trace: fd 4: answered 200 OK, close".to_string(),
        ]
    );
}
