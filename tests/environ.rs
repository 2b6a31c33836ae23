//! The request as a WSGI application receives it (PEP 3333): environ keys and their string
//! types, `wsgi.input` read every way apps read it, and `close()` on the response iterable even
//! when the client goes away. Status, header and exception handling are in tests/wsgi.rs.

mod common;

use common::{exchange, http_get, json_field, parse_response, Conn, Server, WAIT};
use std::io::Write;
use std::time::Duration;

#[test]
fn environ_carries_the_request_as_pep_3333_describes() {
    let server = Server::start(&["--chdir", "tests/apps", "echo:app"]);
    let port = server.port();
    let raw = exchange(
        port,
        b"POST /caf%C3%A9/a%2Fb?q=caf%C3%A9&x=1 HTTP/1.1\r\nHost: example.test:8080\r\n\
          Content-Type: text/plain\r\nContent-Length: 0\r\nX-Custom: one\r\nX-Custom: two\r\n\
          X_Custom: spoofed\r\nUser-Agent: minigun-tests\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .expect("an answer");
    let r = parse_response(&raw).expect("a response");
    assert_eq!(r.status, 200);
    let env = r.text();
    let field = |key: &str| json_field(&env, key).unwrap_or_else(|| panic!("no {key} in {env}"));
    assert_eq!(field("REQUEST_METHOD"), "\"POST\"");
    assert_eq!(field("SCRIPT_NAME"), "\"\"");
    // Percent-decoded, then held as a latin-1 str: the UTF-8 bytes of "é" are two characters.
    assert_eq!(field("PATH_INFO"), r#""/caf\u00c3\u00a9/a/b""#);
    assert_eq!(field("QUERY_STRING"), "\"q=caf%C3%A9&x=1\"");
    assert_eq!(field("RAW_URI"), "\"/caf%C3%A9/a%2Fb?q=caf%C3%A9&x=1\"");
    assert_eq!(field("SERVER_PROTOCOL"), "\"HTTP/1.1\"");
    assert_eq!(field("CONTENT_TYPE"), "\"text/plain\"");
    assert_eq!(field("CONTENT_LENGTH"), "\"0\"");
    assert_eq!(
        field("HTTP_X_CUSTOM"),
        "\"one, two\"",
        "duplicates are joined"
    );
    assert_eq!(field("HTTP_HOST"), "\"example.test:8080\"");
    assert_eq!(field("HTTP_USER_AGENT"), "\"minigun-tests\"");
    assert_eq!(field("REMOTE_ADDR"), "\"127.0.0.1\"");
    assert!(json_field(&env, "REMOTE_PORT").is_some(), "{env}");
    assert_eq!(field("SERVER_NAME"), "\"example.test\"");
    assert_eq!(field("SERVER_PORT"), "\"8080\"");
    assert_eq!(field("wsgi.url_scheme"), "\"http\"");
    assert_eq!(field("wsgi.version"), "[1, 0]");
    assert_eq!(field("wsgi.multiprocess"), "false", "one worker");
    assert_eq!(field("wsgi.multithread"), "false", "one thread");
    assert_eq!(field("wsgi.run_once"), "false");
    assert!(!env.contains("HTTP_CONTENT_TYPE") && !env.contains("HTTP_CONTENT_LENGTH"));
    assert!(
        !env.contains("spoofed"),
        "a header with '_' posed as X-Custom: {env}"
    );
}

#[test]
fn wsgi_multithread_and_multiprocess_follow_the_settings() {
    let server = Server::start(&[
        "-w",
        "2",
        "--threads",
        "3",
        "--chdir",
        "tests/apps",
        "echo:app",
    ]);
    let env = http_get(server.port(), "/").text();
    assert_eq!(
        json_field(&env, "wsgi.multiprocess").as_deref(),
        Some("true"),
        "{env}"
    );
    assert_eq!(
        json_field(&env, "wsgi.multithread").as_deref(),
        Some("true"),
        "{env}"
    );
}

#[test]
fn wsgi_input_supports_readline_iteration_and_sized_reads() {
    let server = Server::start(&["--chdir", "tests/apps", "echo:lines"]);
    let body = "one\nsecond line\nthree\nfour\nabcdefgh";
    let expected = r#"["one\n", "seco", "nd line\n", "three\n", "four\n", "abc", "defgh", ""]"#;
    // With Content-Length.
    let raw = exchange(
        server.port(),
        format!(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        WAIT,
    )
    .expect("an answer");
    assert_eq!(parse_response(&raw).expect("a response").text(), expected);
    // Chunked, split in awkward places: wsgi.input must hide the framing.
    let mut conn = Conn::open(server.port());
    let mut request = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in ["one\nsec", "ond line\nth", "ree\nfour\nab", "cdefgh"] {
        write!(request, "{:x}\r\n{piece}\r\n", piece.len()).expect("write to a Vec");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    conn.send(&request);
    assert_eq!(conn.read_response("POST").text(), expected);
}

#[test]
fn wsgi_input_never_reads_past_the_body() {
    let server = Server::start(&["--chdir", "tests/apps", "echo:body"]);
    let mut conn = Conn::open(server.port());
    // Two requests in one write: the first app's read() must stop at its Content-Length.
    conn.send(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst\
          POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsecond",
    );
    assert_eq!(conn.read_response("POST").text(), "first");
    assert_eq!(conn.read_response("POST").text(), "second");
}

#[test]
fn close_is_called_on_every_response_iterable() {
    let server = Server::start(&["--chdir", "tests/apps", "closing:app"]);
    let port = server.port();
    for _ in 0..3 {
        assert_eq!(http_get(port, "/").text(), "hello\n");
    }
    assert!(
        common::poll(WAIT, || http_get(port, "/closed").text() == "closed=3\n"),
        "close() calls: {}",
        http_get(port, "/closed").text()
    );
    // A client that goes away mid-body: close() still runs.
    let mut conn = Conn::open(port);
    conn.send(b"GET /big?n=2000 HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.read_head();
    drop(conn);
    assert!(
        common::poll(WAIT, || http_get(port, "/closed").text() == "closed=4\n"),
        "close() not called after a disconnect: {}",
        http_get(port, "/closed").text()
    );
}

#[test]
fn wsgi_input_read_n_waits_for_n_bytes_of_a_body_that_arrives_slowly() {
    // WebOb, and so Pyramid, treats a short read(n) before Content-Length as a disconnect:
    // read(n) must wait for all n bytes (or the end of the body), not return what is buffered.
    let server = Server::start(&["--chdir", "tests/apps", "echo:sized"]);
    let mut conn = Conn::open(server.port());
    let pieces: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 50_000]).collect();
    let total: usize = pieces.iter().map(Vec::len).sum();
    conn.send(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    for piece in &pieces {
        conn.send(piece);
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = conn.read_response("POST");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.text(),
        format!("read {total} bytes; short read: None\n"),
        "wsgi.input.read(n) returned fewer than n bytes before the end of the body"
    );
}
