//! Starts the step 01 binary and checks the promise of chapter 1: it echoes, and its accept
//! loop serves one client at a time.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_step01-echo");

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

    /// Starts the binary with `--trace` and returns its stderr, line by line.
    fn start_traced() -> (Server, mpsc::Receiver<String>) {
        let mut server = Server::start_with(&["--trace"], Stdio::piped());
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

/// Reads exactly `n` bytes, or panics after the stream's read timeout.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("the echo arrives");
    buf
}

#[test]
fn echoes_what_the_client_sends() {
    let server = Server::start();
    let mut client = server.connect();
    for message in [&b"hello\n"[..], b"second line\n", &[0u8, 255, 10]] {
        client.write_all(message).unwrap();
        assert_eq!(read_n(&mut client, message.len()), message);
    }
}

#[test]
fn serves_a_second_client_only_after_the_first_hangs_up() {
    let server = Server::start();
    let mut first = server.connect();
    first.write_all(b"one\n").unwrap();
    assert_eq!(read_n(&mut first, 4), b"one\n");

    // The kernel completes the second handshake (the backlog), but nobody reads its bytes.
    let mut second = server.connect();
    second.write_all(b"two\n").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    match second.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the second client was served while the first was open: {other:?}"),
    }

    // Once the first client leaves, the accept loop reaches the second one.
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    assert_eq!(read_n(&mut second, 4), b"two\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn help_says_what_the_step_does() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("echo server") && text.contains("--bind"),
        "{text}"
    );
}

#[test]
fn rejects_an_unknown_flag_with_exit_code_2() {
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--bogus") && text.lines().count() == 1,
        "{text}"
    );
}

#[test]
fn rejects_a_missing_bind_value_with_exit_code_2() {
    let out = Command::new(BIN).arg("--bind").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bind"));
}

/// Collects the next `n` lines from a traced server's stderr, waiting at most 5 s in all.
fn trace_lines(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!(
                "only {} of {n} trace lines within 5 s: {lines:#?}",
                lines.len()
            ),
        }
    }
    lines
}

#[test]
fn trace_narrates_one_connection() {
    let (server, rx) = Server::start_traced();
    let mut client = server.connect();
    client.write_all(b"hello\n").unwrap();
    assert_eq!(read_n(&mut client, 6), b"hello\n");
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let lines = trace_lines(&rx, 3);
    // The listener is fd 3, so the first client gets fd 4, as the book shows.
    let me = client.local_addr().unwrap();
    assert_eq!(
        lines,
        [
            format!("trace: accepted fd 4 from {me}"),
            "trace: fd 4: read 6 bytes, writing them back".to_string(),
            "trace: fd 4: read 0 bytes: the client hung up".to_string(),
        ]
    );
}

#[test]
fn without_the_flag_nothing_is_traced() {
    let mut server = Server::start_with(&[], Stdio::piped());
    let mut client = server.connect();
    client.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut client, 1), b"x");
    drop(client);
    let _ = server.child.kill(); // closes the pipe, so the read below ends
    let mut err = String::new();
    let mut stderr = server.child.stderr.take().expect("stderr was piped");
    stderr.read_to_string(&mut err).unwrap();
    assert_eq!(err, "", "the server wrote to stderr without --trace");
}
