//! HTTP/1.1 on the wire (RFC 9112), checked with raw sockets against the real binary: framing,
//! keep-alive, pipelining, `Expect: 100-continue`, chunked uploads, HEAD, limits, and the
//! errors a malformed or oversized request gets.

mod common;

use common::{exchange, find, json_field, parse_response, Conn, Response, Server, WAIT};
use std::thread;
use std::time::{Duration, Instant};

/// The echo fixture: `/` reports the environ, `body` echoes the request body.
fn echo() -> Server {
    Server::start(&["--chdir", "tests/apps", "echo:app"])
}

fn echo_body(extra: &[&str]) -> Server {
    let mut args = vec!["--chdir", "tests/apps"];
    args.extend_from_slice(extra);
    args.push("echo:body");
    Server::start(&args)
}

/// Sends `request` on a fresh connection and parses the single response it gets before close.
fn one_shot(port: u16, request: &str) -> Response {
    let raw = exchange(port, request.as_bytes(), WAIT).expect("an answer");
    parse_response(&raw).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&raw)))
}

/// Asserts that `request` gets `status` and that the server then closes the connection.
fn assert_rejected(port: u16, request: &[u8], status: u16) {
    let mut conn = Conn::open(port);
    conn.send(request);
    let head = conn.read_head();
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "request {:?} got {head:?}, expected {status}",
        String::from_utf8_lossy(request)
    );
    conn.read_to_close();
}

#[test]
fn answers_pipelined_requests_in_order_on_one_connection() {
    let server = echo();
    let mut conn = Conn::open(server.port());
    conn.send(
        b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /second?x=2 HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /third HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /fourth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let mut ports = Vec::new();
    for (method, path) in [("GET", "/first"), ("GET", "/second"), ("HEAD", "/third")] {
        let r = conn.read_response(method);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        if method == "GET" {
            let text = r.text();
            assert!(
                text.contains(&format!("\"PATH_INFO\": \"{path}\"")),
                "{text}"
            );
            ports.push(json_field(&text, "REMOTE_PORT"));
        } else {
            assert!(r.body.is_empty());
        }
    }
    let last = conn.read_response("GET");
    assert!(last.text().contains("\"PATH_INFO\": \"/fourth\""));
    assert!(
        conn.is_closed_by_server(),
        "Connection: close was not honoured"
    );
    assert_eq!(
        ports[0], ports[1],
        "the pipelined requests came on one connection"
    );
}

#[test]
fn parses_a_request_sent_one_byte_at_a_time() {
    let server = echo_body(&[]);
    let mut conn = Conn::open(server.port());
    let request = b"POST /bytes HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world";
    for byte in request {
        conn.send(std::slice::from_ref(byte));
    }
    let r = conn.read_response("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
}

#[test]
fn closes_http10_connections_unless_keep_alive_is_asked() {
    let server = echo_body(&[]);
    let mut conn = Conn::open(server.port());
    conn.send(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    let raw = conn.read_to_close();
    let r = parse_response(&raw).expect("a response");
    assert_eq!(r.text(), "abc");
    assert!(
        r.header("transfer-encoding").is_none(),
        "chunked sent to an HTTP/1.0 client"
    );

    let mut conn = Conn::open(server.port());
    conn.send(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc");
    let r = conn.read_response("POST");
    assert_eq!(r.text(), "abc");
    conn.send(b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nxyz");
    let raw = conn.read_to_close();
    assert!(
        find(&raw, b"xyz").is_some(),
        "second request on a kept-alive 1.0 connection"
    );
}

#[test]
fn keeps_the_apps_content_length_and_chunks_otherwise() {
    let server = Server::start(&["--chdir", "examples", "hello:app"]);
    let r = one_shot(
        server.port(),
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(r.header("transfer-encoding").is_none());
    assert!(r.header("date").is_some(), "no Date header: {r:?}");
    assert!(r.header("server").is_some(), "no Server header: {r:?}");

    // A generator of unknown length on a keep-alive connection can only be framed by chunks.
    let server = Server::start(&["--chdir", "tests/apps", "stream:app"]);
    let mut conn = Conn::open(server.port());
    for _ in 0..2 {
        conn.send(b"GET /?chunks=3 HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = conn.read_response("GET");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
        assert_eq!(r.text(), "chunk 0\nchunk 1\nchunk 2\n");
    }
}

#[test]
fn decodes_a_chunked_request_body_with_extensions_and_trailers() {
    let server = echo_body(&[]);
    let mut conn = Conn::open(server.port());
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=value\r\nhello\r\n\
          1\r\n \r\n\
          5\r\nworld\r\n\
          0\r\nX-Trailer: yes\r\n\r\n",
    );
    let r = conn.read_response("POST");
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    // The connection is still usable after the trailer.
    conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nnext");
    assert_eq!(conn.read_response("POST").text(), "next");
}

#[test]
fn sends_100_continue_as_soon_as_the_head_is_accepted() {
    // PEP 3333 lets a server answer 100 Continue at once (as gunicorn does) or when the app
    // first reads. minigun reads every body before calling the app, so that a slow upload
    // holds no thread: the 100 goes out as soon as the head is accepted, before the app runs.
    for (app, path, expect) in [
        ("proto:app", "/echo", "hello"),
        ("proto:app", "/no-read", "did not read the body\n"),
    ] {
        let server = Server::start(&["--chdir", "tests/apps", app]);
        let mut conn = Conn::open(server.port());
        conn.send(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        );
        let interim = conn.read_head();
        assert!(
            interim.starts_with("HTTP/1.1 100 Continue\r\n"),
            "{interim:?}"
        );
        conn.send(b"hello");
        let r = conn.read_response("POST");
        assert_eq!((r.status, r.text().as_str()), (200, expect));
    }
    // A body refused by its size gets its answer instead of the 100 (see also abuse.rs).
    let server = Server::start(&[
        "--limit-request-body",
        "4",
        "--chdir",
        "tests/apps",
        "proto:app",
    ]);
    let mut conn = Conn::open(server.port());
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let head = conn.read_head();
    assert!(head.starts_with("HTTP/1.1 413 "), "{head:?}");
}

#[test]
fn answers_head_with_headers_only() {
    for app in ["hello:app", "flask_app:app"] {
        if app.starts_with("flask") && common::skip_without("flask") {
            continue;
        }
        let server = Server::start(&["--chdir", "examples", app]);
        let raw = exchange(
            server.port(),
            b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            WAIT,
        )
        .expect("HEAD");
        let end = find(&raw, b"\r\n\r\n").expect("a head") + 4;
        assert!(raw.starts_with(b"HTTP/1.1 200 "), "{app}");
        assert_eq!(raw.len(), end, "{app}: body bytes after a HEAD response");
    }
    let server = Server::start(&["--chdir", "tests/apps", "stream:app"]);
    let mut conn = Conn::open(server.port());
    conn.send(
        b"HEAD /?chunks=3 HTTP/1.1\r\nHost: t\r\n\r\nGET /?chunks=2 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let head = conn.read_response("HEAD");
    assert_eq!(head.status, 200);
    let get = conn.read_response("GET");
    assert_eq!(
        get.text(),
        "chunk 0\nchunk 1\n",
        "HEAD left bytes that desynced the connection"
    );
}

#[test]
fn streams_each_chunk_as_the_app_yields_it() {
    let server = Server::start(&["--chdir", "tests/apps", "stream:app"]);
    let mut conn = Conn::open(server.port());
    let start = Instant::now();
    conn.send(b"GET /?chunks=3&delay=0.8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let head = conn.read_head();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head:?}"
    );
    let first_at = start.elapsed();
    let rest = conn.read_to_close();
    let total = start.elapsed();
    assert!(find(&rest, b"chunk 2\n").is_some());
    assert!(total >= Duration::from_millis(2000), "{total:?}");
    assert!(
        first_at + Duration::from_millis(1000) < total,
        "the head came after {first_at:?} of {total:?}: the body was buffered, not streamed"
    );
}

#[test]
fn rejects_content_length_with_transfer_encoding() {
    let server = echo_body(&[]);
    assert_rejected(
        server.port(),
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n",
        400,
    );
}

#[test]
fn rejects_content_lengths_that_disagree_or_are_not_digits() {
    let server = echo_body(&[]);
    for request in [
        &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc",
    ] {
        assert_rejected(server.port(), request, 400);
    }
}

#[test]
fn rejects_transfer_encodings_that_do_not_end_in_chunked() {
    let server = echo_body(&[]);
    let mut conn = Conn::open(server.port());
    conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
    let head = conn.read_head();
    assert!(
        head.starts_with("HTTP/1.1 400 ") || head.starts_with("HTTP/1.1 501 "),
        "{head:?}"
    );
}

#[test]
fn rejects_malformed_heads_with_400() {
    let server = echo();
    for request in [
        &b"GET / HTTP/1.1\nHost: t\n\n"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\x00\r\n\r\n",
        b"GE(T / HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        assert_rejected(server.port(), request, 400);
    }
}

#[test]
fn rejects_unsupported_http_versions_with_505() {
    let server = echo();
    assert_rejected(server.port(), b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
}

#[test]
fn enforces_the_request_size_limits() {
    let server = Server::start(&[
        "--limit-request-line",
        "100",
        "--limit-request-fields",
        "5",
        "--limit-request-field_size",
        "200",
        "--limit-request-body",
        "10",
        "--chdir",
        "tests/apps",
        "echo:body",
    ]);
    let port = server.port();
    let long_path = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(200));
    assert_rejected(port, long_path.as_bytes(), 414);
    let many: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_rejected(
        port,
        format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
        431,
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(400)
    );
    assert_rejected(port, big.as_bytes(), 431);
    assert_rejected(
        port,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n01234567890123456789",
        413,
    );
    // Within the limits all is well.
    let r = one_shot(
        port,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsmall",
    );
    assert_eq!(r.text(), "small");
}

#[test]
fn closes_idle_keep_alive_connections_after_the_keep_alive_time() {
    let server = Server::start(&["--keep-alive", "1", "--chdir", "examples", "hello:app"]);
    let mut conn = Conn::open(server.port());
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(conn.read_response("GET").status, 200);
    let idle = Instant::now();
    conn.set_read_timeout(Duration::from_secs(10));
    assert!(conn.is_closed_by_server(), "idle connection not closed");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "closed after {waited:?} with --keep-alive 1"
    );
}

#[test]
fn answers_a_stalled_request_with_408() {
    let server = Server::start(&["--timeout", "2", "--chdir", "examples", "hello:app"]);
    let mut conn = Conn::open(server.port());
    conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Half: ");
    conn.set_read_timeout(Duration::from_secs(15));
    let raw = conn.read_to_close();
    assert!(
        raw.starts_with(b"HTTP/1.1 408 "),
        "a stalled request got {:?}",
        String::from_utf8_lossy(&raw)
    );
    // The worker is fine afterwards.
    let r = one_shot(
        server.port(),
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_slow_request_does_not_hold_up_other_connections() {
    let server = Server::start(&["--threads", "4", "--chdir", "tests/apps", "slow:app"]);
    let port = server.port();
    // A keep-alive connection that is idle while the slow request runs.
    let mut idle = Conn::open(port);
    idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response("GET").status, 200);

    let slow = thread::spawn(move || common::try_http_get(port, "/sleep?s=3"));
    server.wait_for_line("slow-app: sleeping", WAIT);
    let start = Instant::now();
    idle.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response("GET").status, 200);
    let fresh = one_shot(
        port,
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(fresh.status, 200);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "other connections waited {:?} behind a slow request",
        start.elapsed()
    );
    let slow = slow.join().expect("slow client").expect("slow request");
    assert_eq!(slow.status, 200);
}
