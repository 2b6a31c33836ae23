//! The access log as operators read it: every gunicorn atom of `--access-logformat`, the JSON
//! lines of `--access-log-json` (parsed by Python's strict `json` module), bytes a hostile
//! client chose that must never split a line or break the JSON, and USR1 reopening the files
//! after logrotate moved them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use common::{python, Server, TempDir, WAIT};

/// Sends `request` on a new connection and returns what came back, even when the server ends
/// with a reset (a refused request is answered, then closed unread).
fn send_raw(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// Requests whose bytes try to end a log line early, fake a second one, or break JSON: quotes,
/// backslashes, a tab, obs-text that is not UTF-8, UTF-8 that is, Unicode's line separator and
/// C1's NEL, and a path whose percent-decoding holds CR and LF.
const HOSTILE: &[&[u8]] = &[
    b"GET /a%0D%0Ab\"c\\d?q=\"x\\y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
      User-Agent: ua\"q\\b\tt\xff\xfe caf\xc3\xa9 \xe2\x80\xa8 \xc2\x85 end\r\n\
      Referer: http://r/\"\r\n\
      X-Request-ID: id\"\\\xff\r\n\r\n",
    b"GET /caf\xc3\xa9/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    // Refused (a control byte in the target): logged from the raw request line.
    b"GET /\x01\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"\x7f\x00BAD\r\n\r\n",
];

fn start(extra: &[&str]) -> Server {
    let mut args = extra.to_vec();
    args.extend(["--chdir", "tests/apps", "metrics:app"]);
    Server::start(&args)
}

#[test]
fn a_text_line_carries_every_gunicorn_atom() {
    let format = "%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(b)s|%(B)s|\
                  %(f)s|%(a)s|%(T)s|%(D)s|%(M)s|%(L)s|%(p)s|%({X-Custom}i)s|%({x-resp}o)s|\
                  %({REMOTE_ADDR}e)s|%({http_x_custom}e)s|%({nope}e)s|%(zz)s|100%%";
    let server = start(&["--access-logfile", "-", "--access-logformat", format]);
    let answer = send_raw(
        server.port(),
        b"GET /p%20q?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nReferer: http://ref/\r\n\
          User-Agent: agent/1.0\r\nAuthorization: Basic dXNlcjpwYXNz\r\nX-Custom: custom\r\n\r\n",
    );
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let line = server.wait_for_stdout_line("|GET|", WAIT);
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), 26, "{line}");
    let pid = server.worker_pids()[0];
    assert_eq!(f[0], "127.0.0.1");
    assert_eq!(f[1], "-");
    assert_eq!(f[2], "user", "the Basic auth user");
    assert!(f[3].starts_with('[') && f[3].ends_with(" +0000]"), "{line}");
    assert_eq!(f[4], "GET /p%20q?a=1 HTTP/1.1");
    assert_eq!(f[5], "GET");
    assert_eq!(f[6], "/p q", "U is PATH_INFO, decoded");
    assert_eq!(f[7], "a=1");
    assert_eq!(f[8], "HTTP/1.1");
    assert_eq!(f[9], "200");
    assert_eq!((f[10], f[11]), ("3", "3"));
    assert_eq!(f[12], "http://ref/");
    assert_eq!(f[13], "agent/1.0");
    assert_eq!(f[14], "0", "T: whole seconds");
    let micros: u64 = f[15].parse().expect("D is a number");
    let millis: u64 = f[16].parse().expect("M is a number");
    assert_eq!(millis, micros / 1000, "{line}");
    let (secs, frac) = f[17].split_once('.').expect("L is seconds.micros");
    assert_eq!((secs, frac.len()), ("0", 6), "{line}");
    assert_eq!(f[18], format!("<{pid}>"));
    assert_eq!(f[19], "custom");
    assert_eq!(f[20], "resp-value");
    assert_eq!(f[21], "127.0.0.1", "an environ key, any case");
    assert_eq!(f[22], "custom", "HTTP_X_CUSTOM");
    assert_eq!(f[23], "-", "a key the environ does not have");
    assert_eq!(f[24], "-", "an atom gunicorn does not know");
    assert_eq!(f[25], "100%");

    // An empty body is 0, as gunicorn writes str(resp.sent), not CLF's '-'.
    let answer = send_raw(
        server.port(),
        b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with(b"HTTP/1.1 204"), "{answer:?}");
    let line = server.wait_for_stdout_line("|/empty|", WAIT);
    assert!(line.contains("|204|0|0|"), "{line}");
}

#[test]
fn hostile_bytes_never_split_or_fake_a_text_line() {
    let server = start(&["--access-logfile", "-"]);
    for request in HOSTILE {
        send_raw(server.port(), request);
    }
    let lines = wait_for_lines(&server, HOSTILE.len());
    for line in &lines {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(
            !line.contains(['\r', '\u{2028}', '\u{85}', '\u{1b}', '\0']),
            "{line:?}"
        );
    }
    let first = &lines[0];
    assert!(
        first.contains(r#""GET /a%0D%0Ab\"c\\d?q=\"x\\y HTTP/1.1" 200 3 "http://r/\"" "#),
        "{first}"
    );
    assert!(
        first.ends_with(r#""ua\"q\\b\x09t\xff\xfe café \xe2\x80\xa8 \xc2\x85 end""#),
        "{first}"
    );
    assert!(
        lines[1].contains(r#""GET /café/\xff\xfe HTTP/1.1" 200"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(r#""GET /\x01\x1b[31m HTTP/1.1" 400"#),
        "{}",
        lines[2]
    );
    assert!(lines[3].contains(r#""\x7f\x00BAD" 400"#), "{}", lines[3]);
}

/// Waits until the server has written `n` access-log lines to stdout; returns them.
fn wait_for_lines(server: &Server, n: usize) -> Vec<String> {
    let done = common::poll(WAIT, || server.stdout_lines().len() >= n);
    if !done {
        server.fail(&format!("expected {n} access-log lines"));
    }
    server.stdout_lines()
}

/// Parses every line of `path` with Python's strict `json.loads` (control characters inside
/// strings are errors there) and runs `checks` with `rows`, the parsed objects in order.
fn check_json_lines(path: &Path, checks: &str) {
    let script = format!(
        "import json, sys\n\
         rows = []\n\
         with open({path:?}, 'rb') as f:\n\
         \x20   for raw in f.read().split(b'\\n')[:-1]:\n\
         \x20       row = json.loads(raw.decode('utf-8'))\n\
         \x20       assert isinstance(row, dict), raw\n\
         \x20       rows.append(row)\n\
         {checks}\n\
         print('ok', len(rows))\n",
        path = path.display().to_string()
    );
    let out = python(&script);
    assert!(
        out.status.success(),
        "the JSON lines do not check out:\n{}\n--- log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default())
    );
}

#[test]
fn json_lines_parse_and_carry_the_request_whatever_the_client_sent() {
    let dir = TempDir::new("json-access");
    let log = dir.path().join("access.log");
    let log_arg = log.to_str().expect("utf-8 temp path");
    let server = start(&["--access-logfile", log_arg, "--access-log-json"]);
    let ok = send_raw(
        server.port(),
        b"GET /?a=1&b=%22 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUser-Agent: agent/1.0\r\n\
          X-Request-ID: abc-123\r\n\r\n",
    );
    assert!(ok.starts_with(b"HTTP/1.1 200"));
    send_raw(
        server.port(),
        b"GET /missing HTTP/1.0\r\nReferer: http://ref/\r\n\r\n",
    );
    for request in HOSTILE {
        send_raw(server.port(), request);
    }
    let expected = 2 + HOSTILE.len();
    let complete = common::poll(WAIT, || {
        std::fs::read(&log).is_ok_and(|t| t.iter().filter(|&&b| b == b'\n').count() >= expected)
    });
    if !complete {
        server.fail(&format!("expected {expected} lines in {}", log.display()));
    }
    let pid = server.worker_pids()[0];
    check_json_lines(
        &log,
        &format!(
            r#"
assert len(rows) == {expected}, rows
keys = ['time', 'pid', 'remote', 'method', 'path', 'query', 'protocol', 'status', 'bytes',
        'duration_us', 'user_agent', 'referer', 'request_id']
for row in rows:
    assert list(row) == keys, row
    assert row['pid'] == {pid} and row['remote'] == '127.0.0.1', row
    assert isinstance(row['duration_us'], int) and row['duration_us'] >= 0, row
    assert len(row['time']) == 24 and row['time'].endswith('Z') and row['time'][10] == 'T', row
first, second, hostile, utf8, refused, garbage = rows
assert (first['method'], first['path'], first['query'], first['protocol']) == ('GET', '/', 'a=1&b=%22', 'HTTP/1.1'), first
assert (first['status'], first['bytes'], first['user_agent'], first['referer'], first['request_id']) == (200, 3, 'agent/1.0', None, 'abc-123'), first
assert (second['path'], second['protocol'], second['status'], second['bytes'], second['referer'], second['user_agent']) == ('/missing', 'HTTP/1.0', 404, 10, 'http://ref/', None), second
assert hostile['path'] == '/a%0D%0Ab"c\\d' and hostile['query'] == 'q="x\\y', hostile
assert hostile['user_agent'] == 'ua"q\\b\tt\ufffd\ufffd caf\u00e9 \u2028 \u0085 end', repr(hostile['user_agent'])
assert hostile['referer'] == 'http://r/"' and hostile['request_id'] == 'id"\\\ufffd', hostile
assert utf8['path'] == '/caf\u00e9/\ufffd\ufffd', utf8
assert refused['status'] == 400 and refused['path'] == '/\x01\x1b[31m', refused
assert garbage['status'] == 400 and garbage['method'] == '\x7f\x00BAD', garbage
"#
        ),
    );
    // The raw lines hold no control character at all: escapes only.
    let text = std::fs::read(&log).expect("read the log");
    assert!(
        !text.iter().any(|&b| b < 0x20 && b != b'\n'),
        "{}",
        String::from_utf8_lossy(&text)
    );
}

#[test]
fn the_request_id_header_is_configurable() {
    let server = start(&[
        "--access-logfile",
        "-",
        "--access-log-json",
        "--request-id-header",
        "X-Trace-Id",
    ]);
    send_raw(
        server.port(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: not-this\r\n\
          x-trace-id: trace-7\r\n\r\n",
    );
    let line = server.wait_for_stdout_line("\"status\":200", WAIT);
    assert!(line.ends_with(r#""request_id":"trace-7"}"#), "{line}");

    let bad = Server::build(&[
        "--request-id-header",
        "X Bad",
        "--chdir",
        "tests/apps",
        "metrics:app",
    ])
    .no_default_bind()
    .spawn();
    assert_eq!(bad.wait_exit(WAIT).code(), Some(2));
    let lines: Vec<String> = bad
        .stderr_lines()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("--request-id-header") && lines[0].contains("'X Bad'"));
}

#[test]
fn usr1_reopens_the_access_and_error_logs_after_rotation() {
    let dir = TempDir::new("rotate");
    let access = dir.path().join("access.log");
    let error = dir.path().join("error.log");
    let server = Server::build(&[
        "--access-logfile",
        access.to_str().expect("utf-8 temp path"),
        "--access-log-json",
        "--error-logfile",
        error.to_str().expect("utf-8 temp path"),
        "--chdir",
        "tests/apps",
        "metrics:app",
    ])
    .spawn();
    // The error log is the file, so the port comes from there.
    let mut port = None;
    let listening = common::poll(WAIT, || {
        let text = std::fs::read_to_string(&error).unwrap_or_default();
        port = text
            .lines()
            .find_map(|l| l.split("Listening at: http://127.0.0.1:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok());
        port.is_some() && text.contains("Booting worker with pid:")
    });
    if !listening {
        server.fail("no Listening and Booting lines in the error log file");
    }
    let port = port.expect("a port");
    send_raw(
        port,
        b"GET /?before HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let logged = common::poll(WAIT, || {
        std::fs::read_to_string(&access).is_ok_and(|t| t.contains("before"))
    });
    assert!(logged, "the first request is not in {}", access.display());

    // logrotate's move, then its postrotate USR1.
    std::fs::rename(&access, dir.path().join("access.log.1")).expect("rotate access.log");
    std::fs::rename(&error, dir.path().join("error.log.1")).expect("rotate error.log");
    server.signal(libc::SIGUSR1);
    // The master reopens at once, each worker when it handles its USR1: requests go on until
    // one lands in the new file (each one lands in one file or the other, never nowhere).
    let mut sent = 0;
    let reopened = common::poll(WAIT, || {
        sent += 1;
        send_raw(
            port,
            b"GET /?after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        std::fs::read_to_string(&access).is_ok_and(|t| t.contains("after"))
    });
    assert!(
        reopened,
        "no request reached the new access.log after {sent} tries"
    );
    // The master's next line goes to the new error log.
    server.signal(libc::SIGUSR1);
    let new_error = common::poll(WAIT, || {
        std::fs::read_to_string(&error).is_ok_and(|t| t.contains("Handling signal: usr1"))
    });
    assert!(new_error, "nothing written to the new error.log");
    let old = std::fs::read_to_string(dir.path().join("access.log.1")).expect("old log");
    assert!(old.contains("before"), "{old}");
    check_json_lines(
        &access,
        "assert all(r['query'] == 'after' for r in rows), rows",
    );
}

#[test]
fn usr1_reopens_a_relative_log_path_where_it_was_first_opened_despite_chdir() {
    // `--access-logfile access.log` names a file in the directory minigun was started in;
    // `--chdir` must not make USR1's reopen write a second file somewhere else.
    let dir = TempDir::new("rotate-relative");
    let apps = common::repo_root().join("tests/apps");
    let server = Server::build(&[
        "--access-logfile",
        "access.log",
        "--chdir",
        apps.to_str().expect("utf-8 path"),
        "metrics:app",
    ])
    .current_dir(dir.path())
    .start();
    let access = dir.path().join("access.log");
    let port = server.port();
    send_raw(
        port,
        b"GET /?before HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let logged = common::poll(WAIT, || {
        std::fs::read_to_string(&access).is_ok_and(|t| t.contains("before"))
    });
    assert!(logged, "the first request is not in {}", access.display());
    std::fs::rename(&access, dir.path().join("access.log.1")).expect("rotate access.log");
    server.signal(libc::SIGUSR1);
    let mut sent = 0;
    let reopened = common::poll(WAIT, || {
        sent += 1;
        send_raw(
            port,
            b"GET /?after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        std::fs::read_to_string(&access).is_ok_and(|t| t.contains("after"))
    });
    let stray = apps.join("access.log");
    let stray_exists = stray.exists();
    let _ = std::fs::remove_file(&stray);
    assert!(
        !stray_exists,
        "USR1 reopened the log under --chdir's directory"
    );
    assert!(
        reopened,
        "no request reached the new access.log after {sent} tries"
    );
}
