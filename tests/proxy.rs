//! `--proxy-protocol` against the real binary: the PROXY header a TCP balancer puts first on a
//! connection (HAProxy's proxy-protocol.txt, v1 text and v2 binary) names the client the app
//! sees in `REMOTE_ADDR`/`REMOTE_PORT` and the access log shows, for every request on the
//! connection; a peer outside `--proxy-allow-from` sends plain HTTP, and a header from it gets
//! 403; a missing or malformed header gets 400 and the connection closed, logged once.
//! Headers are sent from raw sockets, and last through Debian's HAProxy (`send-proxy`,
//! `send-proxy-v2`) when it is installed (tests/run.sh installs it).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{json_field, parse_response, poll, Conn, Server, TempDir, WAIT};

/// The fixture whose `/environ` route answers the environ as JSON.
const APP: [&str; 3] = ["--chdir", "tests/apps", "proto:app"];

/// A v2 header (proxy-protocol.txt §2.2): signature, version 2 and `command`, `family`, the
/// block's length, the block.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// A v2 TCP-over-IPv4 address block: source, destination, source port, destination port.
fn v2_tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut block = Vec::new();
    block.extend_from_slice(&src);
    block.extend_from_slice(&dst);
    block.extend_from_slice(&sport.to_be_bytes());
    block.extend_from_slice(&dport.to_be_bytes());
    block
}

/// `GET /environ` that keeps the connection open, with extra header lines.
fn environ_request(extra: &str) -> Vec<u8> {
    format!("GET /environ HTTP/1.1\r\nHost: h\r\n{extra}\r\n").into_bytes()
}

/// A string field of `/environ`'s JSON, without its quotes.
fn field(env: &str, key: &str) -> String {
    json_field(env, key)
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {key} in {env}"))
}

/// Sends `header` and one `/environ` request on a fresh connection; returns the environ.
fn environ_after(port: u16, header: &[u8], extra: &str) -> String {
    let mut conn = Conn::open(port);
    conn.send(&[header, &environ_request(extra)].concat());
    let r = conn.read_response("GET");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Sends `bytes` and expects `status`, then the connection closed by the server.
fn refused(port: u16, bytes: &[u8], status: u16) {
    let mut conn = Conn::open(port);
    conn.send(bytes);
    let r = conn.read_response("GET");
    assert_eq!(
        r.status,
        status,
        "for {:?}: {}",
        String::from_utf8_lossy(bytes),
        r.text()
    );
    assert!(
        conn.is_closed_by_server(),
        "the connection stayed open after {status}"
    );
}

#[test]
fn v1_and_v2_headers_name_the_client_the_app_sees() {
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let port = server.port();

    let env = environ_after(port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n", "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "203.0.113.7", "{env}");
    assert_eq!(field(&env, "REMOTE_PORT"), "51234", "{env}");

    let header = v2(
        1,
        0x11,
        &v2_tcp4([198, 51, 100, 9], [192, 0, 2, 1], 40000, 80),
    );
    let env = environ_after(port, &header, "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "198.51.100.9", "{env}");
    assert_eq!(field(&env, "REMOTE_PORT"), "40000", "{env}");

    // Behind the header, the request is HTTP as usual: SERVER_NAME still comes from Host.
    assert_eq!(field(&env, "SERVER_NAME"), "h", "{env}");
    assert!(server.count_lines("Invalid request") == 0);
}

#[test]
fn tcp6_headers_name_an_ipv6_client() {
    let server = Server::start(&["--proxy-protocol=auto", APP[0], APP[1], APP[2]]);
    let port = server.port();

    let env = environ_after(
        port,
        b"PROXY TCP6 2001:DB8::7 2001:db8::1 65535 443\r\n",
        "",
    );
    assert_eq!(field(&env, "REMOTE_ADDR"), "2001:db8::7", "{env}");
    assert_eq!(field(&env, "REMOTE_PORT"), "65535", "{env}");

    let mut block = [0u8; 36];
    block[..16].copy_from_slice(
        &"2001:db8::42"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    block[16..32].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    block[32..34].copy_from_slice(&1234u16.to_be_bytes());
    block[34..36].copy_from_slice(&8000u16.to_be_bytes());
    let env = environ_after(port, &v2(1, 0x21, &block), "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "2001:db8::42", "{env}");
    assert_eq!(field(&env, "REMOTE_PORT"), "1234", "{env}");

    // An IPv4 client a balancer relays over IPv6 reads as the IPv4 address it is.
    let env = environ_after(port, b"PROXY TCP6 ::ffff:192.0.2.33 ::1 7 8\r\n", "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "192.0.2.33", "{env}");
}

#[test]
fn unknown_and_local_headers_keep_the_connection_own_peer() {
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let port = server.port();
    for header in [
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".to_vec(),
        // LOCAL: the balancer's own connection (a health check), whatever block it carries.
        v2(0, 0x00, &[]),
        v2(0, 0x11, &v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 9, 10)),
        // PROXY over UDP: a family we take no address from falls back to the real endpoints.
        v2(1, 0x12, &v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 9, 10)),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let local_port = stream.local_addr().expect("local addr").port();
        stream
            .set_read_timeout(Some(WAIT))
            .expect("set_read_timeout");
        stream
            .write_all(
                &[
                    &header[..],
                    b"GET /environ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                ]
                .concat(),
            )
            .expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let r = parse_response(&raw).expect("a response");
        assert_eq!(r.status, 200, "{header:?}: {}", r.text());
        let env = r.text();
        assert_eq!(field(&env, "REMOTE_ADDR"), "127.0.0.1", "{header:?}: {env}");
        assert_eq!(
            field(&env, "REMOTE_PORT"),
            local_port.to_string(),
            "{header:?}: {env}"
        );
    }
}

#[test]
fn the_header_holds_for_every_request_on_a_kept_alive_connection() {
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let port = server.port();

    // One request at a time; the header is sent once.
    let mut conn = Conn::open(port);
    conn.send(b"PROXY TCP4 203.0.113.50 192.0.2.1 1111 80\r\n");
    for _ in 0..3 {
        conn.send(&environ_request(""));
        let r = conn.read_response("GET");
        assert_eq!(r.status, 200);
        assert_eq!(field(&r.text(), "REMOTE_ADDR"), "203.0.113.50");
        assert_eq!(field(&r.text(), "REMOTE_PORT"), "1111");
    }
    // A second header later on the same connection is just bad HTTP.
    conn.send(b"PROXY TCP4 198.51.100.1 192.0.2.1 2222 80\r\n\r\n");
    assert_eq!(conn.read_response("GET").status, 400);

    // Header and two pipelined requests in one write.
    let mut conn = Conn::open(port);
    let header = v2(
        1,
        0x11,
        &v2_tcp4([203, 0, 113, 51], [192, 0, 2, 1], 3333, 80),
    );
    conn.send(&[header, environ_request(""), environ_request("")].concat());
    for _ in 0..2 {
        let r = conn.read_response("GET");
        assert_eq!(field(&r.text(), "REMOTE_ADDR"), "203.0.113.51");
    }
}

#[test]
fn a_header_arriving_one_byte_at_a_time_works() {
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let port = server.port();
    let v2_header = v2(
        1,
        0x11,
        &v2_tcp4([203, 0, 113, 60], [192, 0, 2, 1], 4444, 80),
    );
    for (header, client) in [
        (
            &b"PROXY TCP4 203.0.113.61 192.0.2.1 4445 80\r\n"[..],
            "203.0.113.61",
        ),
        (&v2_header[..], "203.0.113.60"),
    ] {
        let mut conn = Conn::open(port);
        for &b in header {
            conn.send(&[b]);
            // Pacing, not synchronisation: gives each byte a segment of its own, so the
            // server reads the header in pieces (the test passes however they coalesce).
            std::thread::sleep(Duration::from_millis(2));
        }
        conn.send(&environ_request(""));
        let r = conn.read_response("GET");
        assert_eq!(field(&r.text(), "REMOTE_ADDR"), client);
    }
}

#[test]
fn peers_outside_proxy_allow_from_speak_plain_http_and_may_not_send_a_header() {
    let server = Server::start(&[
        "--proxy-protocol",
        "--proxy-allow-from",
        "10.0.0.0/8",
        APP[0],
        APP[1],
        APP[2],
    ]);
    let port = server.port();
    // 127.0.0.1 is not in 10.0.0.0/8: its requests are served as they come.
    let env = environ_after(port, b"", "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "127.0.0.1", "{env}");
    // A request whose method merely starts with "P" is HTTP too.
    let mut conn = Conn::open(port);
    conn.send(b"POST /environ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(conn.read_response("POST").status, 200);
    // A header from it is refused, as gunicorn refuses it (ForbiddenProxyRequest).
    refused(
        port,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        403,
    );
    refused(
        port,
        &v2(1, 0x11, &v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
        403,
    );
    assert!(poll(WAIT, || server.count_lines("forbidden: PROXY header") == 2));
}

#[test]
fn malformed_or_missing_headers_get_400_and_close_logged_once() {
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let port = server.port();
    let cases: Vec<Vec<u8>> = vec![
        // No header from a peer that must send one: the spec's "MUST not try to guess".
        b"GET /environ HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 80\r\n".to_vec(),
        b"PROXY TCP4 2001:db8::1 192.0.2.1 1 80\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 80\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        b"PROXY TCP5 203.0.113.7 192.0.2.1 1 80\r\n".to_vec(),
        [&b"PROXY UNKNOWN "[..], &[b'f'; 200]].concat(),
        v2(1, 0x11, &[0; 11]),
        v2(1, 0x41, &[0; 12]),
        v2(2, 0x11, &[0; 12]),
        [&v2(1, 0x11, &[])[..12], &[0x31, 0x11, 0, 12][..]].concat(),
        // A v2 header announcing more than minigun holds for one (4 KiB).
        [&v2(1, 0x11, &[])[..12], &[0x21, 0x11, 0xFF, 0xFF][..]].concat(),
    ];
    for case in &cases {
        refused(port, case, 400);
    }
    let lines = || server.count_lines("Invalid request from 127.0.0.1: bad request:");
    assert!(
        poll(WAIT, || lines() == cases.len()),
        "{} log lines for {} refusals",
        lines(),
        cases.len()
    );
    // The worker is fine: no panic, and the next client is served.
    assert_eq!(server.count_lines("panicked"), 0);
    let env = environ_after(port, b"PROXY UNKNOWN\r\n", "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "127.0.0.1");
}

#[test]
fn a_header_that_stalls_is_dropped_when_the_request_time_is_up() {
    let server = Server::start(&["--proxy-protocol", "--timeout", "1", APP[0], APP[1], APP[2]]);
    let port = server.port();
    let mut conn = Conn::open(port);
    conn.set_read_timeout(Duration::from_secs(10));
    conn.send(b"PROXY TCP4 203.0.113.7");
    // Closed within --timeout plus a sweep, with no HTTP answer: no request ever began.
    assert_eq!(conn.read_to_close(), b"");
}

#[test]
fn forwarded_headers_are_trusted_on_the_socket_peer_not_on_the_header() {
    // The balancer (127.0.0.1) is trusted for X-Forwarded-Proto: its https counts, whatever
    // client the PROXY header names.
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let env = environ_after(
        server.port(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 443\r\n",
        "X-Forwarded-Proto: https\r\n",
    );
    assert_eq!(field(&env, "wsgi.url_scheme"), "https", "{env}");
    drop(server);

    // The reverse: the header names an address --forwarded-allow-ips trusts, but the socket's
    // peer is not it, so a client cannot buy trust by writing a PROXY line.
    let server = Server::start(&[
        "--proxy-protocol",
        "--proxy-allow-from",
        "*",
        "--forwarded-allow-ips",
        "203.0.113.7",
        APP[0],
        APP[1],
        APP[2],
    ]);
    let env = environ_after(
        server.port(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 443\r\n",
        "X-Forwarded-Proto: https\r\n",
    );
    assert_eq!(field(&env, "REMOTE_ADDR"), "203.0.113.7", "{env}");
    assert_eq!(field(&env, "wsgi.url_scheme"), "http", "{env}");
}

#[test]
fn the_access_log_shows_the_client_the_header_names() {
    let server = Server::start(&[
        "--proxy-protocol",
        "--access-logfile",
        "-",
        APP[0],
        APP[1],
        APP[2],
    ]);
    environ_after(
        server.port(),
        b"PROXY TCP4 203.0.113.99 192.0.2.1 5555 80\r\n",
        "",
    );
    let line = server.wait_for_stdout_line("GET /environ", WAIT);
    assert!(line.starts_with("203.0.113.99 "), "{line}");
}

#[test]
fn a_unix_socket_peer_may_send_the_header() {
    let dir = TempDir::new("proxy-unix");
    let socket = dir.path().join("m.sock");
    let bind = format!("unix:{}", socket.display());
    let server = Server::build(&[
        "--proxy-protocol",
        "--proxy-allow-from",
        "10.0.0.0/8",
        "-b",
        &bind,
        APP[0],
        APP[1],
        APP[2],
    ])
    .spawn();
    server.wait_for_line("Listening at: ", common::START_TIMEOUT);
    let env = over_unix(
        &socket,
        &[
            &b"PROXY TCP4 203.0.113.8 192.0.2.1 6666 80\r\n"[..],
            b"GET /environ HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
        ]
        .concat(),
    );
    assert_eq!(field(&env, "REMOTE_ADDR"), "203.0.113.8", "{env}");
    assert_eq!(field(&env, "REMOTE_PORT"), "6666", "{env}");
    // The peer is still the unix socket's, which gunicorn trusts for forwarded headers.
    assert_eq!(field(&env, "wsgi.url_scheme"), "https", "{env}");
}

/// Sends `bytes` over the unix socket and returns the body of the answer.
fn over_unix(socket: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).expect("connect to the unix socket");
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    stream.write_all(bytes).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let r = parse_response(&raw).expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn without_the_flag_a_header_is_just_bad_http() {
    let server = Server::start(&APP);
    refused(
        server.port(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
    );
    let env = environ_after(server.port(), b"", "");
    assert_eq!(field(&env, "REMOTE_ADDR"), "127.0.0.1");
}

// ---------------------------------------------------------------------------------------------
// HAProxy in front
// ---------------------------------------------------------------------------------------------

/// HAProxy, run in the foreground by this test and stopped by pid when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SIGUSR1: a soft stop; bounded, then SIGKILL.
            common::send_signal(self.0.id(), libc::SIGUSR1);
            if !poll(WAIT, || matches!(self.0.try_wait(), Ok(Some(_)))) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

/// A TCP port nobody listens on right now (bound, then released for HAProxy to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// HAProxy's `show stat` CSV, from its stats socket (empty until it answers).
fn haproxy_stats(socket: &Path) -> String {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(WAIT));
    let _ = stream.write_all(b"show stat\n");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// Whether HAProxy is installed; tests/run.sh installs it, so there it must be.
fn have_haproxy() -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("MINIGUN_REQUIRE_FRAMEWORKS").is_ok_and(|v| v == "1") {
        panic!("haproxy is not installed, and tests/run.sh should have installed it");
    }
    if !found {
        eprintln!("skipping: haproxy is not installed (tests/run.sh installs it)");
    }
    found
}

#[test]
fn haproxy_send_proxy_and_send_proxy_v2_name_the_real_client() {
    if !have_haproxy() {
        return;
    }
    let server = Server::start(&["--proxy-protocol", APP[0], APP[1], APP[2]]);
    let dir = TempDir::new("haproxy");
    let (v1_port, v2_port) = (free_port(), free_port());
    let stats = dir.path().join("stats.sock");
    // TCP mode: one balancer connection per client connection, as send-proxy requires. The
    // health checks send the header too (a LOCAL command with v2), so they exercise it.
    let config = format!(
        "global\n    maxconn 64\n    stats socket {stats}\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend v1\n    bind 127.0.0.1:{v1_port}\n    default_backend minigun_v1\n\
         frontend v2\n    bind 127.0.0.1:{v2_port}\n    default_backend minigun_v2\n\
         backend minigun_v1\n    server m 127.0.0.1:{port} send-proxy check inter 100ms\n\
         backend minigun_v2\n    server m 127.0.0.1:{port} send-proxy-v2 check inter 100ms\n",
        port = server.port(),
        stats = stats.display(),
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdin(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let mut haproxy = Haproxy(child);
    let up = poll(WAIT, || {
        if let Ok(Some(status)) = haproxy.0.try_wait() {
            panic!("haproxy exited: {status}");
        }
        TcpStream::connect(("127.0.0.1", v1_port)).is_ok()
            && TcpStream::connect(("127.0.0.1", v2_port)).is_ok()
    });
    assert!(up, "haproxy is not listening");

    for front in [v1_port, v2_port] {
        // The client HAProxy sees is this socket: its port, not that of HAProxy's own
        // connection to minigun, is what the app must see.
        let mut stream = TcpStream::connect(("127.0.0.1", front)).expect("connect");
        let client_port = stream.local_addr().expect("local addr").port();
        stream
            .set_read_timeout(Some(WAIT))
            .expect("set_read_timeout");
        stream
            .write_all(b"GET /environ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let r = parse_response(&raw).expect("a response");
        assert_eq!(r.status, 200, "{}", r.text());
        let env = r.text();
        assert_eq!(field(&env, "REMOTE_ADDR"), "127.0.0.1", "{env}");
        assert_eq!(field(&env, "REMOTE_PORT"), client_port.to_string(), "{env}");

        // Kept alive through HAProxy: the header was read once, and still holds.
        let mut conn = Conn::open(front);
        let mut ports = Vec::new();
        for _ in 0..2 {
            conn.send(&environ_request(""));
            let env = conn.read_response("GET").text();
            assert_eq!(field(&env, "REMOTE_ADDR"), "127.0.0.1", "{env}");
            ports.push(field(&env, "REMOTE_PORT"));
        }
        assert_eq!(ports[0], ports[1]);
    }
    // Health checks: HAProxy's stats say when both servers have passed some, each a
    // connection that sent its header (a LOCAL command with v2) and closed; none refused.
    let checked = poll(WAIT, || {
        let csv = haproxy_stats(&stats);
        ["minigun_v1,m,", "minigun_v2,m,"].iter().all(|row| {
            csv.lines()
                .any(|l| l.starts_with(row) && l.contains("L4OK"))
        })
    });
    assert!(
        checked,
        "no health checks passed: {}",
        haproxy_stats(&stats)
    );
    assert_eq!(server.count_lines("Invalid request"), 0);
    drop(haproxy);
}
