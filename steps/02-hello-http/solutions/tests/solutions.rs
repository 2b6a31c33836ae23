//! Starts the chapter 2 solutions binary and checks what the exercises ask for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_step02-solutions");

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
    stream
}

/// Sends one request and reads the whole reply (the server closes after it).
fn get(server: &Server, path: &str) -> String {
    let mut client = connect(server);
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    client.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    client
        .read_to_string(&mut reply)
        .expect("a reply, then the close");
    reply
}

#[test]
fn exercise_1_only_the_root_gets_the_page() {
    let server = start(&[]);
    let root = get(&server, "/?at=all");
    assert!(root.starts_with("HTTP/1.1 200 OK\r\n"), "{root}");
    assert!(root.contains("Hello from step 02!"), "{root}");
    for path in ["/anything", "/index.html", "/?x"] {
        let other = get(&server, path);
        let expected = if path.starts_with("/?") { "200" } else { "404" };
        assert!(
            other.starts_with(&format!("HTTP/1.1 {expected} ")),
            "{path}: {other}"
        );
    }
}

#[test]
fn exercise_3_every_response_has_an_imf_fixdate() {
    let server = start(&[]);
    for path in ["/", "/missing"] {
        let reply = get(&server, path);
        let date = reply
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .unwrap_or_else(|| panic!("no Date in {reply}"));
        // "Sun, 06 Nov 1994 08:49:37 GMT": 29 characters, in this shape.
        let shape: String = date
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    '9'
                } else if c.is_ascii_alphabetic() {
                    'a'
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(shape, "aaa, 99 aaa 9999 99:99:99 aaa", "{date}");
        assert!(date.ends_with(" GMT"), "{date}");
    }
}
