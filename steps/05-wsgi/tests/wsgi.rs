//! Starts the step 05 binary with `tests/fixture_app.py` and checks the promise of chapter 5:
//! the app sees a PEP 3333 environ, its start_response and write() reach the client, close()
//! is called on every result, an exception becomes a 500, and a Flask app runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_step05-wsgi");

/// A running server; killing it on drop means a failed test leaks no process.
struct Server {
    child: Child,
    addr: String,
    /// Where the fixture records close() calls (`$FIXTURE_DIR`).
    dir: PathBuf,
}

impl Server {
    /// Starts the binary on port 0 in `dir` (so `app` imports from there) and waits at most
    /// 20 s for its "Listening on" line. `venv` sets `$VIRTUAL_ENV`.
    fn start(name: &str, dir: &Path, app: &str, venv: Option<&str>) -> Server {
        let scratch = std::env::temp_dir().join(format!("step05-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).expect("the temp dir is writable");
        let mut command = Command::new(BIN);
        command
            .args(["--bind", "127.0.0.1:0", app])
            .current_dir(dir)
            .env("FIXTURE_DIR", &scratch)
            .env_remove("VIRTUAL_ENV")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
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
        let mut server = Server {
            child,
            addr: String::new(),
            dir: scratch,
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

    /// The server with the stdlib fixture app.
    fn fixture(name: &str) -> Server {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        Server::start(name, &tests, "fixture_app:app", None)
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).expect("the server listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a positive timeout is valid");
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one request on `stream` and reads one response framed by Content-Length.
fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
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
fn get(server: &Server, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    exchange(&mut server.connect(), &request)
}

#[test]
fn the_app_sees_a_pep_3333_environ() {
    let server = Server::fixture("environ");
    let request = "GET /environ?x=1&y=%20 HTTP/1.1\r\nHost: test\r\nX-Tag: a\r\nX-Tag: b\r\n\
                   X_Sneaky: no\r\nContent-Type: text/plain\r\n\r\n";
    let (head, body) = exchange(&mut server.connect(), request);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let port = server.addr.rsplit(':').next().unwrap();
    for expected in [
        "\"REQUEST_METHOD\": \"GET\"",
        "\"SCRIPT_NAME\": \"\"",
        "\"PATH_INFO\": \"/environ\"",
        "\"QUERY_STRING\": \"x=1&y=%20\"",
        "\"SERVER_PROTOCOL\": \"HTTP/1.1\"",
        "\"SERVER_NAME\": \"127.0.0.1\"",
        &format!("\"SERVER_PORT\": \"{port}\""),
        "\"REMOTE_ADDR\": \"127.0.0.1\"",
        "\"HTTP_HOST\": \"test\"",
        "\"HTTP_X_TAG\": \"a,b\"",
        "\"CONTENT_TYPE\": \"text/plain\"",
        "\"wsgi.version\": [1, 0]",
        "\"wsgi.url_scheme\": \"http\"",
        "\"wsgi.input\": \"BytesIO\"",
        "\"wsgi.multithread\": true",
        "\"wsgi.multiprocess\": false",
    ] {
        assert!(body.contains(expected), "{expected} missing from {body}");
    }
    assert!(
        !body.contains("SNEAKY"),
        "a header with _ must be dropped: {body}"
    );
}

#[test]
fn path_info_is_percent_decoded_as_latin_1() {
    let server = Server::fixture("latin1");
    // UTF-8 bytes of "é" arrive as two latin-1 characters; the app encodes them back.
    let (_, body) = get(&server, "/path/caf%C3%A9/a%2Fb%zz");
    assert_eq!(body, "/path/café/a/b%zz");
}

#[test]
fn the_request_body_reaches_wsgi_input() {
    let server = Server::fixture("echo");
    let request = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello wsgi!";
    let (_, body) = exchange(&mut server.connect(), request);
    assert_eq!(body, "hello wsgi!");
}

#[test]
fn write_output_comes_before_the_iterable_and_close_is_called() {
    let server = Server::fixture("close");
    let mut stream = server.connect();
    // Two requests on one keep-alive connection, then a third on a fresh one.
    let (head, body) = exchange(&mut stream, "GET /write HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.contains("Connection: keep-alive"), "{head}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert_eq!(body, "written, then iterated\n");
    let (_, body) = exchange(&mut stream, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(body, "Hello, World!\n");
    get(&server, "/echo");
    // close() runs before the response is written, so the log is complete by now.
    let log = std::fs::read_to_string(server.dir.join("closed.log")).unwrap_or_default();
    assert_eq!(log, "/write\n/\n/echo\n");
}

#[test]
fn an_exception_in_the_app_is_a_500_and_the_server_goes_on() {
    let server = Server::fixture("error");
    let (head, _) = get(&server, "/error");
    assert!(
        head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{head}"
    );
    let (head, _) = get(&server, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[test]
fn head_gets_headers_without_a_body() {
    let server = Server::fixture("head");
    let mut stream = server.connect();
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\n"),
        "no body after a HEAD: {reply:?}"
    );
}

#[test]
fn curl_gets_hello_from_the_app() {
    let server = Server::fixture("curl");
    let url = format!("http://{}/", server.addr);
    let out = Command::new("curl")
        .args(["-si", &url])
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "curl failed: {out:?}");
    let body = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let transcript = format!("$ curl -si http://127.0.0.1:8000/\n{body}");
    check_transcript("curl-hello.txt", &transcript);
}

#[test]
fn a_flask_app_runs_when_the_venv_has_flask() {
    let Some(venv) = std::env::var("VIRTUAL_ENV").ok().filter(|v| has_flask(v)) else {
        eprintln!("skipped: $VIRTUAL_ENV is unset or has no flask (python3 -m venv /tmp/v && /tmp/v/bin/pip install flask)");
        return;
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let server = Server::start("flask", &examples, "hello_flask:app", Some(&venv));
    let (head, body) = get(&server, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "Hello from Flask!\n");
    let (head, _) = get(&server, "/no/such/route");
    assert!(head.starts_with("HTTP/1.1 404 NOT FOUND\r\n"), "{head}");
}

/// Whether the venv at `venv` has Flask installed, judged by its site-packages.
fn has_flask(venv: &str) -> bool {
    let Ok(lib) = std::fs::read_dir(Path::new(venv).join("lib")) else {
        return false;
    };
    lib.flatten()
        .any(|python| python.path().join("site-packages/flask").is_dir())
}

#[test]
fn a_missing_module_exits_with_code_4_and_a_traceback() {
    let out = Command::new(BIN)
        .args(["-b", "127.0.0.1:0", "no_such_module_here:app"])
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("ModuleNotFoundError"), "{text}");
}

#[test]
fn help_says_what_the_step_does() {
    let out = Command::new(BIN).arg("-h").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WSGI app") && text.contains("MODULE:APP"),
        "{text}"
    );
}

#[test]
fn rejects_an_unknown_flag_with_exit_code_2() {
    let out = Command::new(BIN)
        .args(["--workers=2", "app:app"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--workers") && text.lines().count() == 1,
        "{text}"
    );
}

/// Compares `actual` with the golden file `transcripts/NAME`, which the book includes.
/// With `UPDATE_TRANSCRIPTS=1` in the environment the file is (re)written instead.
fn check_transcript(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("transcripts")
        .join(name);
    if std::env::var_os("UPDATE_TRANSCRIPTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
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
