//! Starts the chapter 7 solutions binary and checks exercises 1, 2 and 4.

mod common;

use common::{get, wait_for, Server};
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

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
    let mut server = Server::fixture("refuse", &["-w", "1"]);
    let mut slow = server.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = server.dir.join("slow-started");
    wait_for("the slow request to start", Duration::from_secs(5), || {
        started.exists().then_some(())
    });
    let begin = Instant::now();
    send(server.pid(), libc::SIGTERM);
    // While the slow request is still running, a new client is refused outright.
    wait_for(
        "a refused connection",
        Duration::from_secs(5),
        || match TcpStream::connect(&server.addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        },
    );
    assert!(
        begin.elapsed() < Duration::from_millis(900),
        "{:?}",
        begin.elapsed()
    );
    let mut reply = String::new();
    slow.read_to_string(&mut reply).unwrap();
    assert!(reply.ends_with("slow done\n"), "{reply}");
    let status = wait_for("the master to exit", Duration::from_secs(10), || {
        server.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}
