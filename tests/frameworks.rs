//! Real framework sites served by minigun: the Flask, Django, Pyramid, Falcon and Bottle
//! examples in `examples/`, driven with `requests`, curl and raw sockets the way a user's
//! browser or API client would drive them.
//!
//! The five examples expose the same pages (see each file's docstring), so one macro writes
//! the same checks for each framework. Without the frameworks installed the tests skip with a
//! message; tests/run.sh installs them and sets `MINIGUN_REQUIRE_FRAMEWORKS=1` so a skip there
//! fails instead.

mod common;

use common::{curl, exchange, find, parse_response, python_client, skip_without, Server};
use std::time::Duration;

/// Starts the example `app` (e.g. `flask_app:app`) with two workers, or returns `None` when
/// `module` is not importable (see [`skip_without`]).
fn start_example(module: &str, app: &str) -> Option<Server> {
    if skip_without(module) || skip_without("requests") {
        return None;
    }
    Some(Server::start(&["--chdir", "examples", "-w", "2", app]))
}

macro_rules! framework_tests {
    ($name:ident, $module:literal, $app:literal) => {
        mod $name {
            use super::*;

            fn start() -> Option<Server> {
                start_example($module, $app)
            }

            #[test]
            fn serves_the_home_page() {
                let Some(server) = start() else { return };
                python_client(
                    server.port(),
                    r#"
import requests
r = requests.get(BASE + "/", timeout=20)
assert r.status_code == 200, r.status_code
assert r.headers["Content-Type"].startswith("text/html"), r.headers
assert "<form" in r.text and "minigun +" in r.text, r.text[:200]
"#,
                );
            }

            #[test]
            fn answers_head_with_headers_and_no_body() {
                let Some(server) = start() else { return };
                let port = server.port();
                let get = exchange(
                    port,
                    format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                    Duration::from_secs(20),
                )
                .expect("GET /");
                let get = parse_response(&get).expect("a GET response");
                let raw = exchange(
                    port,
                    format!(
                        "HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                    Duration::from_secs(20),
                )
                .expect("HEAD /");
                let head_end = find(&raw, b"\r\n\r\n").expect("a complete head") + 4;
                let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
                assert!(head.starts_with("HTTP/1.1 200"), "HEAD answered: {head}");
                assert!(
                    head.to_ascii_lowercase().contains("content-type: text/html"),
                    "HEAD lacks the page's Content-Type: {head}"
                );
                assert_eq!(
                    raw.len(),
                    head_end,
                    "HEAD response carried a body: {:?}",
                    String::from_utf8_lossy(&raw[head_end..])
                );
                if let Some(length) = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                {
                    assert_eq!(
                        length,
                        get.body.len().to_string(),
                        "HEAD's Content-Length differs from GET's body"
                    );
                }
                let out = curl(&["-I", &format!("{}/", server.base_url())]);
                assert!(out.status.success(), "curl -I failed: {:?}", out);
                assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"));
            }

            #[test]
            fn answers_head_for_a_streamed_page_without_calling_it_empty() {
                let Some(server) = start() else { return };
                let port = server.port();
                let get = exchange(
                    port,
                    format!(
                        "GET /stream?lines=3 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                    Duration::from_secs(20),
                )
                .expect("GET /stream");
                let get = parse_response(&get).expect("a GET response");
                assert_eq!(get.text(), "line 0\nline 1\nline 2\n");
                // The frameworks drop the body of a HEAD response and return an empty one. Its
                // length is not the page's: RFC 9110 §8.6 allows a Content-Length in a HEAD
                // response only when it equals what GET would send, so the server must send
                // the GET length or none (gunicorn sends none).
                let raw = exchange(
                    port,
                    format!(
                        "HEAD /stream?lines=3 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                    Duration::from_secs(20),
                )
                .expect("HEAD /stream");
                let head_end = find(&raw, b"\r\n\r\n").expect("a complete head") + 4;
                assert_eq!(raw.len(), head_end, "HEAD response carried a body");
                let head = common::parse_head(&raw[..head_end - 4]).expect("a HEAD response");
                assert_eq!(head.status, 200, "{:?}", head.headers);
                if let Some(length) = head.header("content-length") {
                    assert_eq!(
                        length,
                        get.body.len().to_string(),
                        "HEAD claims a length GET does not send: {:?}",
                        head.headers
                    );
                }
            }

            #[test]
            fn accepts_a_form_post() {
                let Some(server) = start() else { return };
                let url = format!("{}/greet", server.base_url());
                let out = curl(&["--data-urlencode", "name=Ada Lovelace", &url]);
                assert!(out.status.success(), "curl failed: {out:?}");
                assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, Ada Lovelace!\n");
                python_client(
                    server.port(),
                    r#"
import requests
r = requests.post(BASE + "/greet", data={"name": "Grace Hopper"}, timeout=20)
assert (r.status_code, r.text) == (200, "Hello, Grace Hopper!\n"), (r.status_code, r.text)
r = requests.post(BASE + "/greet", data={"name": ""}, timeout=20)
assert r.status_code == 400, r.status_code
"#,
                );
            }

            #[test]
            fn echoes_json_in_and_out() {
                let Some(server) = start() else { return };
                python_client(
                    server.port(),
                    r#"
import requests
sent = {"name": "café ☕", "n": 42, "items": [1, 2.5, None, True], "nested": {"a": "b"}}
r = requests.post(BASE + "/api/echo", json=sent, timeout=20)
assert r.status_code == 200, (r.status_code, r.text)
assert r.headers["Content-Type"].startswith("application/json"), r.headers
got = r.json()
assert got["you_sent"] == sent, got
assert got["keys"] == sorted(sent), got
r = requests.post(BASE + "/api/echo", data=b"not json",
                  headers={"Content-Type": "application/json"}, timeout=20)
assert r.status_code == 400, r.status_code
"#,
                );
            }

            #[test]
            fn receives_a_multipart_upload() {
                let Some(server) = start() else { return };
                python_client(
                    server.port(),
                    r#"
import hashlib, os, requests
data = os.urandom(1_500_000)
r = requests.post(BASE + "/upload", files={"file": ("photo.jpg", data, "image/jpeg")},
                  data={"note": "holiday"}, timeout=30)
assert r.status_code == 200, (r.status_code, r.text[:500])
assert r.json() == {"filename": "photo.jpg", "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(), "note": "holiday"}, r.json()
"#,
                );
                let dir = common::TempDir::new("upload");
                let file = dir.path().join("notes.txt");
                std::fs::write(&file, "line one\nline two\n").expect("write upload file");
                let out = curl(&[
                    "-F",
                    &format!("file=@{}", file.display()),
                    &format!("{}/upload", server.base_url()),
                ]);
                assert!(out.status.success(), "curl -F failed: {out:?}");
                let body = String::from_utf8_lossy(&out.stdout);
                assert!(
                    body.contains("\"notes.txt\"") && body.contains("18"),
                    "upload summary: {body}"
                );
            }

            #[test]
            fn streams_a_generator_response_as_it_is_produced() {
                let Some(server) = start() else { return };
                python_client(
                    server.port(),
                    r#"
import requests, time
r = requests.get(BASE + "/stream?lines=200", stream=True, timeout=20)
assert r.status_code == 200, r.status_code
assert r.headers.get("Transfer-Encoding") == "chunked", r.headers
assert [l.decode() for l in r.iter_lines()] == [f"line {i}" for i in range(200)]

# Each line is followed by a 0.6 s pause: a streaming server delivers the first line at once,
# a buffering one only after the whole 1.8 s.
start = time.monotonic()
r = requests.get(BASE + "/stream?lines=3&delay=0.6", stream=True, timeout=20)
lines = r.iter_lines()
first = next(lines)
first_at = time.monotonic() - start
rest = list(lines)
total = time.monotonic() - start
assert first == b"line 0" and rest == [b"line 1", b"line 2"], (first, rest)
assert total >= 1.6, total
assert first_at < total - 0.8, f"first line after {first_at:.2f}s of {total:.2f}s: not streamed"
"#,
                );
            }

            #[test]
            fn reuses_one_connection_for_keep_alive_requests() {
                let Some(server) = start() else { return };
                python_client(
                    server.port(),
                    r#"
import requests
with requests.Session() as s:
    ports = set()
    for _ in range(6):
        r = s.get(BASE + "/api/client", timeout=20)
        assert r.status_code == 200, r.status_code
        assert r.headers.get("Connection", "").lower() != "close", r.headers
        ports.add(r.json()["remote_port"])
    r = s.post(BASE + "/api/echo", json={"a": 1}, timeout=20)
    assert r.status_code == 200
    ports.add(s.get(BASE + "/api/client", timeout=20).json()["remote_port"])
assert len(ports) == 1, f"the server saw {len(ports)} connections: {ports}"
"#,
                );
            }

            #[test]
            fn answers_unknown_pages_with_404_and_keeps_serving() {
                let Some(server) = start() else { return };
                python_client(
                    server.port(),
                    r#"
import requests
with requests.Session() as s:
    r = s.get(BASE + "/no/such/page", timeout=20)
    assert r.status_code == 404, r.status_code
    r = s.get(BASE + "/teapot", timeout=20)
    assert r.status_code == 418, r.status_code
    r = s.get(BASE + "/", timeout=20)
    assert r.status_code == 200, r.status_code
"#,
                );
            }
        }
    };
}

framework_tests!(flask, "flask", "flask_app:app");
framework_tests!(django, "django", "django_app:application");
framework_tests!(pyramid, "pyramid", "pyramid_app:app");
framework_tests!(falcon, "falcon", "falcon_app:app");
framework_tests!(bottle, "bottle", "bottle_app:app");
