//! Helpers shared by this step's tests: start the binary, talk HTTP, compare transcripts.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_step05-wsgi");

/// A running server in a process group of its own; dropping it kills the whole group, so a
/// failed test leaks no process (forked children included).
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Where the fixture app writes its files (`$FIXTURE_DIR`).
    pub dir: PathBuf,
    /// Lines the server wrote to stderr, for tests that read its log.
    pub stderr: mpsc::Receiver<String>,
}

impl Server {
    /// Starts the binary with `args` in `cwd` (so `module:app` imports from there), binding
    /// port 0, and waits at most 20 s for its "Listening on" line. `venv` sets `$VIRTUAL_ENV`.
    pub fn start(name: &str, cwd: &Path, args: &[&str], venv: Option<&str>) -> Server {
        let dir = std::env::temp_dir().join(format!("minigun-step-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        let mut command = Command::new(BIN);
        command
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd)
            .env("FIXTURE_DIR", &dir)
            .env_remove("VIRTUAL_ENV")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(venv) = venv {
            command.env("VIRTUAL_ENV", venv);
        }
        let mut child = command.spawn().expect("the step binary was built by cargo");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            lines.for_each(drop); // keep the pipe open until the server exits
        });
        let stderr = child.stderr.take().expect("stderr was piped");
        let (err_tx, err_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            dir,
            stderr: err_rx,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server prints its address within 20 s");
        server.addr = line
            .strip_prefix("Listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        server
    }

    /// The server with the stdlib fixture app `tests/fixture_app.py`.
    pub fn fixture(name: &str, args: &[&str]) -> Server {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let args: Vec<&str> = args.iter().copied().chain(["fixture_app:app"]).collect();
        Server::start(name, &tests, &args, None)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).expect("the server listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a positive timeout is valid");
        stream
    }

    /// The next `n` stderr lines that start with `trace: `, without that prefix; waits at
    /// most 10 s in all. Other lines (logs, tracebacks) are skipped.
    pub fn trace_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        while lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => lines.extend(line.strip_prefix("trace: ").map(str::to_string)),
                Err(_) => panic!(
                    "only {} of {n} trace lines in 10 s: {lines:#?}",
                    lines.len()
                ),
            }
        }
        lines
    }

    /// Waits (at most `limit`) for a stderr line containing `text`, and returns it.
    pub fn log_line(&self, text: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) reads no memory; the group id is the pid of the child we started
            // with process_group(0), not reaped yet, so it names our processes only.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one request on `stream` and reads one response framed by Content-Length.
pub fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let n = reader
            .read_line(&mut head)
            .expect("a response head within 10 s");
        assert!(n > 0, "connection closed after {head:?}");
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the whole body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// One GET on a fresh connection.
pub fn get(server: &Server, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    exchange(&mut server.connect(), &request)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the venv at `venv` has Flask installed, judged by its site-packages.
pub fn has_flask(venv: &str) -> bool {
    let Ok(lib) = std::fs::read_dir(Path::new(venv).join("lib")) else {
        return false;
    };
    lib.flatten()
        .any(|python| python.path().join("site-packages/flask").is_dir())
}

/// Compares `actual` with the golden file `transcripts/NAME`, which the book includes.
/// With `UPDATE_TRANSCRIPTS=1` in the environment the file is (re)written instead.
pub fn check_transcript(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("transcripts")
        .join(name);
    if std::env::var_os("UPDATE_TRANSCRIPTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("transcripts/ has a parent")).unwrap();
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
