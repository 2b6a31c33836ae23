//! PEP 3333 as a client sees it: what the server does with the app's status, headers, body
//! iterable, `close()`, exceptions and `wsgi.file_wrapper`, plus refusals that must never reach
//! the app. Raw sockets against the real binary and tests/apps/proto.py. (Framing, keep-alive
//! and timeouts are in tests/http.rs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{exchange, find, parse_response, Response, Server};

fn proto(extra: &[&str]) -> Server {
    let mut args = vec!["--chdir", "tests/apps"];
    args.extend_from_slice(extra);
    args.push("proto:app");
    Server::start(&args)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Reads exactly one response from a kept-alive connection (Content-Length or chunked body;
/// no body for HEAD, 1xx, 204 and 304).
fn read_one(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while find(&raw, b"\r\n\r\n").is_none() {
        let n = stream.read(&mut byte).expect("read head");
        assert!(
            n == 1,
            "connection closed before a full head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().expect("status code");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().expect("length"));
    if status == 204 || status == 304 {
        return parse_response(&raw).expect("head parses");
    }
    if let Some(len) = length {
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).expect("body");
        raw.extend_from_slice(&body);
    } else {
        while !raw.ends_with(b"\r\n0\r\n\r\n") {
            let n = stream.read(&mut byte).expect("read chunk");
            assert!(n == 1, "connection closed inside a chunked body");
            raw.push(byte[0]);
        }
    }
    parse_response(&raw).expect("response parses")
}

fn send(port: u16, raw: &[u8]) -> Response {
    let out = exchange(port, raw, Duration::from_secs(10)).expect("exchange");
    parse_response(&out).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out)))
}

#[test]
fn every_response_has_date_and_server() {
    let server = proto(&[]);
    let r = send(
        server.port(),
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!\n");
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(r.header("server"), Some("minigun"));
    // A list body gets a Content-Length, not chunking.
    assert_eq!(r.header("content-length"), Some("14"));
}

/// Requests the server must refuse, with the status RFC 9110/9112 gives and the rule each
/// one breaks. None of them may reach the app: each targets `/closing?NAME`, and `/closed`
/// lists the names the app saw.
#[test]
fn refuses_malformed_requests_without_calling_the_app() {
    let server = proto(&[
        "--limit-request-line",
        "200",
        "--limit-request-fields",
        "10",
        "--limit-request-field_size",
        "100",
    ]);
    let port = server.port();
    let cases: &[(&str, &[u8], u16)] = &[
        ("§5.1 whitespace before colon", b"GET /closing?a HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ("§5.2 obs-fold", b"GET /closing?b HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
        ("§2.2 bare LF", b"GET /closing?c HTTP/1.1\nHost: x\n\n", 400),
        ("§6.1 CL with TE", b"POST /closing?d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("§6.3 conflicting CL", b"POST /closing?e HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        ("§6.3 chunked not last", b"POST /closing?f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        ("§6.1 unknown coding", b"POST /closing?g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("§3.2 missing Host", b"GET /closing?h HTTP/1.1\r\n\r\n", 400),
        ("§3.2 two Hosts", b"GET /closing?i HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("§2.3 HTTP/2.0 in HTTP/1 syntax", b"GET /closing?j HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("§3 request line too long", b"GET /closing?k0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("§5 field too long", b"GET /closing?l HTTP/1.1\r\nHost: x\r\nX: 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890\r\n\r\n", 431),
        ("§5 too many fields", b"GET /closing?m HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\nI: 1\r\nJ: 1\r\n\r\n", 431),
        ("§5.5 NUL in value", b"GET /closing?n HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 400),
        ("§7.1 bad chunk size", b"POST /closing?o HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("RFC 9110 §10.1.1 unknown expectation", b"GET /closing?p HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n", 417),
    ];
    for (rule, raw, status) in cases {
        let out = exchange(port, raw, Duration::from_secs(10)).expect("exchange");
        let r = parse_response(&out).unwrap_or_else(|e| panic!("{rule}: {e}"));
        assert_eq!(r.status, *status, "{rule}: {:?}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{rule}");
        assert!(
            !r.body.is_empty(),
            "{rule}: error responses explain themselves"
        );
    }
    let closed = send(
        port,
        b"GET /closed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .text();
    assert!(
        closed.contains("\"closed\": []"),
        "the app was called: {closed}"
    );
}

#[test]
fn the_rest_of_a_pipeline_after_an_error_is_not_processed() {
    let server = proto(&[]);
    let raw = b"GET /hello HTTP/1.1\r\nHost : bad\r\n\r\nGET /closing?after-error HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = exchange(server.port(), raw, Duration::from_secs(10)).expect("exchange");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    let closed = send(
        server.port(),
        b"GET /closed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .text();
    assert!(!closed.contains("after-error"), "{closed}");
}

#[test]
fn bodiless_statuses_send_no_body() {
    let server = proto(&[]);
    let mut s = connect(server.port());
    s.write_all(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\nGET /not-modified HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let r204 = read_one(&mut s);
    assert_eq!(r204.status, 204);
    assert_eq!(r204.header("content-length"), None);
    let r304 = read_one(&mut s);
    assert_eq!(r304.status, 304);
    assert_eq!(r304.header("transfer-encoding"), None);
    assert_eq!(read_one(&mut s).text(), "Hello, World!\n");
}

#[test]
fn app_errors_become_500_and_the_worker_stays_up() {
    let server = proto(&[]);
    let port = server.port();
    let pids = server.wait_for_workers(1, common::WAIT);
    for path in ["/raise-before", "/raise-after-start", "/twice", "/str-body"] {
        let r = send(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 500, "{path}");
    }
    // Each failure is logged once, with its traceback.
    server.wait_for_line("failure before start_response", common::WAIT);
    assert_eq!(
        server.count_lines("RuntimeError: failure before start_response"),
        1
    );
    assert_eq!(server.worker_pids(), pids, "the worker survived");
    assert_eq!(common::http_get(port, "/hello").status, 200);
}

#[test]
fn a_failure_mid_body_never_looks_complete() {
    let server = proto(&[]);
    for path in ["/raise-mid", "/raise-mid-length"] {
        let out = exchange(
            server.port(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            Duration::from_secs(10),
        )
        .expect("exchange");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        // Chunked: no last chunk. Content-Length: fewer bytes than announced. Both closed.
        assert!(
            parse_response(&out).is_err(),
            "{path} looked complete: {text}"
        );
    }
}

#[test]
fn header_injection_is_refused_and_never_sent() {
    let server = proto(&[]);
    for path in ["/crlf-header", "/bad-status"] {
        let out = exchange(
            server.port(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            Duration::from_secs(10),
        )
        .expect("exchange");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 500"), "{text}");
        assert!(!text.contains("evil") && !text.contains("X: y"), "{text}");
    }
}

#[test]
fn exc_info_replaces_the_status_before_the_head_is_sent() {
    let server = proto(&[]);
    let r = send(
        server.port(),
        b"GET /exc-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-second"), Some("2"));
    assert_eq!(r.header("x-first"), None);
}

#[test]
fn close_is_called_even_when_it_raises() {
    let server = proto(&[]);
    let r = send(
        server.port(),
        b"GET /close-raises HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.text(), "body is complete\n");
    server.wait_for_line("close() failed on purpose", common::WAIT);
    let closed = send(
        server.port(),
        b"GET /closed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .text();
    assert!(closed.contains("close-raises"), "{closed}");
}

#[test]
fn write_callable_and_file_wrapper_deliver_every_byte() {
    let server = proto(&[]);
    let r = send(
        server.port(),
        b"GET /write HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.text(), "written, then returned\n");
    let r = send(
        server.port(),
        b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-length"), Some("1048576"));
    let expected: Vec<u8> = (0..4096).flat_map(|_| 0..=255u8).collect();
    assert!(r.body == expected, "file body differs");
    let r = send(
        server.port(),
        b"GET /file-offset HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.body == expected[1000..], "file from offset differs");
}

#[test]
fn a_list_of_pieces_gets_one_content_length_and_every_byte() {
    let server = proto(&[]);
    for path in ["/parts", "/parts?tuple"] {
        let r = send(
            server.port(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.header("content-length"), Some("6"), "{path}");
        assert_eq!(r.header("transfer-encoding"), None, "{path}");
        assert_eq!(r.text(), "abcdef", "{path}");
    }
    // HEAD: the same length, no body, and the connection still lines up for the next request.
    let mut s = connect(server.port());
    s.write_all(b"HEAD /parts HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("Hello, World!") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 6\r\n"), "{text}");
    assert!(!text.contains("abcdef"), "HEAD sent a body: {text}");
}
