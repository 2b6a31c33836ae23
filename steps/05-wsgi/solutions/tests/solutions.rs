//! Starts the chapter 5 solution binary and checks exercise 3: an environ copied from a
//! template is still a whole PEP 3333 environ, and nothing leaks from one request to the next.

mod common;

use common::{exchange, get, Server};

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
fn exercise_3_one_requests_keys_never_reach_the_next() {
    let server = Server::fixture("no-leak", &["--threads", "1"]);
    let mut stream = server.connect();
    let first = "GET /environ HTTP/1.1\r\nHost: test\r\nX-Only-Once: 1\r\n\r\n";
    let (_, body) = exchange(&mut stream, first);
    assert!(body.contains("\"HTTP_X_ONLY_ONCE\": \"1\""), "{body}");
    let second = "GET /environ?again HTTP/1.1\r\nHost: test\r\n\r\n";
    let (_, body) = exchange(&mut stream, second);
    assert!(
        !body.contains("X_ONLY_ONCE"),
        "the template was changed: {body}"
    );
    assert!(body.contains("\"QUERY_STRING\": \"again\""), "{body}");
    // wsgi.input is a fresh BytesIO for every request.
    let request = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(exchange(&mut stream, request).1, "hello");
    assert_eq!(get(&server, "/").1, "Hello, World!\n");
}
