//! Starts the chapter 7 solutions binary and checks exercises 1, 2 and 4.

mod common;

use common::{get, wait_for, Server};
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The pids of the live (not zombie) children of `parent`, read from `/proc/PID/stat`.
fn children(parent: i32) -> HashSet<i32> {
    let mut found = HashSet::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is mounted")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // not a pid, or the process is already gone
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so cut at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        let pid = head.split(' ').next().and_then(|p| p.parse::<i32>().ok());
        if let (Some(pid), Some(ppid)) = (pid, ppid) {
            if ppid == parent && state != Some("Z") {
                found.insert(pid);
            }
        }
    }
    found
}

/// Sends `signal` to a process this test started (the master or one of its workers).
fn send(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) reads no memory; `pid` is our server or its child, both still alive.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

#[test]
fn exercise_1_a_worker_without_heartbeat_is_killed_and_replaced() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let args = ["-w", "1", "--timeout", "1", "hang_app:app"];
    let server = Server::start("heartbeat", &here, &args, None);
    let (_, first) = get(&server, "/");
    let mut hung = server.connect();
    hung.write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The worker stops beating inside the app; within --timeout plus a pass of the master's
    // loop it is killed, which closes our connection without an answer.
    let mut reply = Vec::new();
    let _ = hung.read_to_end(&mut reply);
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    assert!(server
        .log_line("WORKER TIMEOUT", Duration::from_secs(5))
        .is_some());
    let (_, second) = wait_for("a replacement worker", Duration::from_secs(10), || {
        let (head, body) = get(&server, "/");
        head.starts_with("HTTP/1.1 200").then_some(((), body))
    });
    assert_ne!(first, second, "the replacement is another process");
}

#[test]
fn exercise_2_ttin_adds_a_worker_and_ttou_retires_the_oldest() {
    let server = Server::fixture("ttin", &["-w", "1"]);
    let first = wait_for("one worker", Duration::from_secs(10), || {
        let found = children(server.pid());
        (found.len() == 1).then_some(found)
    });
    send(server.pid(), libc::SIGTTIN);
    let both = wait_for("a second worker", Duration::from_secs(10), || {
        let found = children(server.pid());
        (found.len() == 2).then_some(found)
    });
    send(server.pid(), libc::SIGTTOU);
    let left = wait_for("back to one worker", Duration::from_secs(10), || {
        let found = children(server.pid());
        (found.len() == 1).then_some(found)
    });
    assert!(
        first.is_disjoint(&left),
        "the oldest worker is the one retired"
    );
    assert!(left.is_subset(&both));
}

#[test]
fn exercise_4_connections_are_refused_as_soon_as_the_stop_begins() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut server = Server::start("refuse", &here, &["-w", "1", "hang_app:app"], None);
    // A request that stays in flight until this test releases it: whatever the refusal
    // below waits for, it cannot be the worker finishing its request and exiting.
    let mut held = server.connect();
    held.write_all(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = server.dir.join("hold-started");
    wait_for("the held request to start", Duration::from_secs(10), || {
        started.exists().then_some(())
    });
    send(server.pid(), libc::SIGTERM);
    // While that request is still running, a new client is refused. Polled, with a
    // deadline that only a hung master reaches: how soon is the machine's business, the
    // order is ours. Without the answer the listener stays open until the last worker
    // exits, which cannot happen before the release, so the wait would run out.
    // Each attempt is bounded too: once the backlog is full, a plain connect would wait out
    // the kernel's SYN retries.
    let addr: SocketAddr = server.addr.parse().expect("the server printed an address");
    wait_for(
        "a refused connection while a request is in flight",
        Duration::from_secs(10),
        || match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    std::fs::write(server.dir.join("release"), b"").expect("the temp dir is writable");
    let mut reply = String::new();
    held.read_to_string(&mut reply).unwrap();
    // "released", not "gave up": the request was still waiting when the refusal came.
    assert!(reply.ends_with("released\n"), "{reply}");
    let status = wait_for("the master to exit", Duration::from_secs(10), || {
        server.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}
