//! Starts the chapter 4 solutions binary and checks what the exercises ask for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_step04-solutions");

/// A running server, killed on drop.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on port 0 with `extra` flags and waits at most 10 s for its address.
fn start(extra: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo built the binary");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = out.lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        lines.for_each(drop); // keep the pipe open while the server runs
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an address in 10 s");
    let addr = line
        .strip_prefix("Listening on http://")
        .map(str::to_string);
    Server(child, addr.unwrap_or_else(|| panic!("unexpected {line:?}")))
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(&server.1).expect("the server listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a positive timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads one response framed by Content-Length from `client`.
fn read_response(client: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n\r\n") {
        let n = client.read(&mut byte).expect("a response head within 5 s");
        assert!(n == 1, "closed after {:?}", String::from_utf8_lossy(&reply));
        reply.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&reply).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0; length];
    client.read_exact(&mut body).expect("the body");
    head + &String::from_utf8_lossy(&body)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn exercises_1_and_3_the_channel_queue_keeps_its_bound_and_503_says_retry_after() {
    let server = start(&[
        "--threads",
        "1",
        "--worker-connections",
        "2",
        "--keep-alive",
        "10",
    ]);
    // The first connection holds the only thread (kept alive); the second waits in the queue.
    let mut first = connect(&server);
    first.write_all(GET).unwrap();
    assert!(read_response(&mut first).starts_with("HTTP/1.1 200 OK"));
    let mut second = connect(&server);
    second.write_all(GET).unwrap();
    // Two held: waiting plus being served is at the bound, so a third is refused at once.
    let mut third = connect(&server);
    third.write_all(GET).unwrap();
    let refused = read_response(&mut third);
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("\r\nRetry-After: 1\r\n"), "{refused}");
    // When the first leaves, the second is served, and a slot is free again.
    drop(first);
    assert!(read_response(&mut second).starts_with("HTTP/1.1 200 OK"));
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect(&server);
        again
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let reply = read_response(&mut again);
        if reply.starts_with("HTTP/1.1 200 OK") {
            break;
        }
        // The worker may not have called done() for the second connection yet.
        assert!(
            Instant::now() < deadline,
            "no slot freed within 5 s: {reply}"
        );
    }
}

#[test]
fn exercise_2_max_requests_closes_after_the_nth_response() {
    let server = start(&["--max-requests", "2"]);
    let mut client = connect(&server);
    client.write_all(GET).unwrap();
    assert!(read_response(&mut client).contains("Connection: keep-alive"));
    client.write_all(GET).unwrap();
    assert!(read_response(&mut client).contains("Connection: close"));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the server closes");
    assert!(rest.is_empty());
}

#[test]
fn exercise_4_a_panic_costs_one_connection_not_the_thread() {
    let server = start(&["--threads", "1"]);
    for _ in 0..3 {
        let mut doomed = connect(&server);
        doomed
            .write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut nothing = Vec::new();
        let _ = doomed.read_to_end(&mut nothing); // closed without an answer (or reset)
        assert!(nothing.is_empty());
    }
    // The only thread is still there to serve this.
    let mut client = connect(&server);
    client.write_all(GET).unwrap();
    assert!(read_response(&mut client).starts_with("HTTP/1.1 200 OK"));
}
