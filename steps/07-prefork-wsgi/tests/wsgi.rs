//! Starts the step 07 binary with `tests/fixture_app.py` and checks the promise of chapter 5:
//! the app sees a PEP 3333 environ, its start_response and write() reach the client, close()
//! is called on every result, an exception becomes a 500, and a Flask app runs.

mod common;

use common::{check_transcript, exchange, get, has_flask, Server, BIN};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

#[test]
fn the_app_sees_a_pep_3333_environ() {
    let server = Server::fixture("environ", &[]);
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
        "\"wsgi.multithread\": false",
        "\"wsgi.multiprocess\": true",
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
    let server = Server::fixture("latin1", &[]);
    // UTF-8 bytes of "é" arrive as two latin-1 characters; the app encodes them back.
    let (_, body) = get(&server, "/path/caf%C3%A9/a%2Fb%zz");
    assert_eq!(body, "/path/café/a/b%zz");
}

#[test]
fn the_request_body_reaches_wsgi_input() {
    let server = Server::fixture("echo", &[]);
    let request = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello wsgi!";
    let (_, body) = exchange(&mut server.connect(), request);
    assert_eq!(body, "hello wsgi!");
}

#[test]
fn write_output_comes_before_the_iterable_and_close_is_called() {
    let server = Server::fixture("close", &[]);
    // A sync worker closes the connection after every response.
    let (head, body) = get(&server, "/write");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert_eq!(body, "written, then iterated\n");
    let (_, body) = get(&server, "/");
    assert_eq!(body, "Hello, World!\n");
    get(&server, "/echo");
    // close() runs before the response is written, so the log is complete by now.
    let log = std::fs::read_to_string(server.dir.join("closed.log")).unwrap_or_default();
    assert_eq!(log, "/write\n/\n/echo\n");
}

#[test]
fn an_exception_in_the_app_is_a_500_and_the_server_goes_on() {
    let server = Server::fixture("error", &[]);
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
    let server = Server::fixture("head", &[]);
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
    let server = Server::fixture("curl", &[]);
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
    let server = Server::start("flask", &examples, &["hello_flask:app"], Some(&venv));
    let (head, body) = get(&server, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "Hello from Flask!\n");
    // Chapter 5's exercise 4 loads this route.
    let (_, body) = get(&server, "/cpu");
    assert_eq!(body, "333328333350000\n");
    let (head, _) = get(&server, "/no/such/route");
    assert!(head.starts_with("HTTP/1.1 404 NOT FOUND\r\n"), "{head}");
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
        .args(["--threads=2", "app:app"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("--threads") && text.lines().count() == 1,
        "{text}"
    );
}
