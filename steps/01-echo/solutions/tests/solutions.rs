//! Starts the chapter 1 solutions binary and checks what the exercises ask for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_step01-solutions");

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

#[test]
fn exercise_3_shouts_whole_lines_even_when_a_read_splits_a_character() {
    let server = start(&["--shout"]);
    let mut client = connect(&server);
    // "é" is 0xC3 0xA9; the first write ends between the two bytes.
    let text = "héllo wörld\nsecond";
    let bytes = text.as_bytes();
    let split = text.find('é').expect("an é") + 1;
    client.write_all(&bytes[..split]).unwrap();
    client.write_all(&bytes[split..]).unwrap();
    let mut line = vec![0; "HÉLLO WÖRLD\n".len()];
    client
        .read_exact(&mut line)
        .expect("the first line, shouted");
    assert_eq!(String::from_utf8_lossy(&line), "HÉLLO WÖRLD\n");
    // The last line has no newline: it comes back once the client hangs up.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "SECOND");
}

#[test]
fn without_the_flag_it_is_still_the_plain_echo() {
    let server = start(&[]);
    let mut client = connect(&server);
    client.write_all(b"quiet\n").unwrap();
    let mut back = [0u8; 6];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"quiet\n");
}
