//! Starts the chapter 3 solutions binary and checks what the exercises ask for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_step03-solutions");

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

/// Sends `pieces` one after another and reads the whole reply (the server closes after it).
fn exchange(server: &Server, pieces: &[&[u8]]) -> String {
    let mut client = connect(server);
    for piece in pieces {
        client.write_all(piece).unwrap();
    }
    let mut reply = String::new();
    client
        .read_to_string(&mut reply)
        .expect("a reply, then the close");
    reply
}

#[test]
fn exercise_1_a_head_sent_byte_by_byte_is_parsed() {
    let server = start(&[]);
    let request = b"GET /slowly HTTP/1.1\r\nHost: x\r\n\r\n";
    let pieces: Vec<&[u8]> = request.chunks(1).collect();
    let reply = exchange(&server, &pieces);
    assert!(reply.contains("You sent GET /slowly (HTTP/1.1)"), "{reply}");
}

#[test]
fn exercise_2_a_chunked_body_is_decoded_across_reads() {
    let server = start(&[]);
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let reply = exchange(
        &server,
        &[head, b"5\r\nhel", b"lo\r\n3\r\n ab\r\n", b"0\r\n\r\n"],
    );
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.contains("8 bytes of body"), "{reply}");
    let long = exchange(&server, &[head, b"fffffffff\r\n"]);
    assert!(long.starts_with("HTTP/1.1 413 "), "{long}");
    let gzip = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert!(exchange(&server, &[gzip]).starts_with("HTTP/1.1 501 "));
}

#[test]
fn exercise_3_an_empty_line_before_the_request_line_is_ignored() {
    let server = start(&[]);
    let reply = exchange(
        &server,
        &[b"\r\n", b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"],
    );
    assert!(reply.contains("You sent GET /after"), "{reply}");
}

#[test]
fn exercise_4_a_request_line_over_4_kib_gets_414() {
    let server = start(&[]);
    let line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    let reply = exchange(&server, &[line.as_bytes()]);
    assert!(
        reply.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
        "{reply}"
    );
}
