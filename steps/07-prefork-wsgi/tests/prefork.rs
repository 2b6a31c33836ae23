//! Checks the promise of chapter 7: the master keeps N workers, a killed worker is replaced
//! and requests go on succeeding, SIGTERM lets an in-flight request finish before the master
//! exits 0, and a worker that cannot load the app stops the master instead of a fork loop.

mod common;

use common::{exchange, get, wait_for, Server};
use std::collections::HashSet;
use std::io::Write;
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
fn a_killed_worker_is_replaced_and_requests_still_succeed() {
    let server = Server::fixture("respawn", &["--workers", "2"]);
    let master = server.pid();
    let first = wait_for("two workers", Duration::from_secs(10), || {
        let workers = children(master);
        (workers.len() == 2).then_some(workers)
    });
    let victim = *first.iter().next().expect("two workers");
    send(victim, libc::SIGKILL);
    let second = wait_for("a replacement worker", Duration::from_secs(10), || {
        let workers = children(master);
        (workers.len() == 2 && !workers.contains(&victim)).then_some(workers)
    });
    let newcomer = *second.difference(&first).next().expect("one new pid");
    assert!(server
        .log_line(
            &format!("[{victim}] Worker was sent SIGKILL"),
            Duration::from_secs(5)
        )
        .is_some());
    // Every request is answered, and only ever by a current worker, never by the master.
    for _ in 0..6 {
        let (head, body) = get(&server, "/pid");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let pid: i32 = body.trim().parse().expect("the fixture answers its pid");
        assert!(second.contains(&pid), "pid {pid} is not one of {second:?}");
    }
    assert!(children(master).contains(&newcomer));
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_the_master_exits_0() {
    let mut server = Server::fixture("graceful", &["--workers", "2"]);
    let mut slow = server.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = server.dir.join("slow-started");
    wait_for("the slow request to start", Duration::from_secs(10), || {
        started.exists().then_some(())
    });
    send(server.pid(), libc::SIGTERM);
    // The app sleeps one second after the signal; its answer must still arrive whole.
    let (head, body) = exchange(&mut slow, "");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "slow done\n");
    let status = wait_for("the master to exit", Duration::from_secs(10), || {
        server.child.try_wait().expect("the master is our child")
    });
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_worker_that_cannot_load_the_app_stops_the_master_with_code_4() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let args = ["-w", "2", "no_such_module_here:app"];
    let mut server = Server::start("noapp", &tests, &args, None);
    let status = wait_for("the master to give up", Duration::from_secs(20), || {
        server.child.try_wait().expect("the master is our child")
    });
    assert_eq!(status.code(), Some(4), "{status:?}");
}

#[test]
fn workers_accept_from_the_shared_listener() {
    let server = Server::fixture("shared", &["-w", "3"]);
    let workers = wait_for("three workers", Duration::from_secs(10), || {
        let workers = children(server.pid());
        (workers.len() == 3).then_some(workers)
    });
    // Hold one worker busy in /slow; the others keep answering meanwhile.
    let mut slow = server.connect();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = server.dir.join("slow-started");
    wait_for("the slow request to start", Duration::from_secs(10), || {
        started.exists().then_some(())
    });
    let (_, body) = get(&server, "/pid");
    let pid: i32 = body.trim().parse().expect("the fixture answers its pid");
    assert!(
        workers.contains(&pid),
        "pid {pid} is not one of {workers:?}"
    );
    let (_, body) = exchange(&mut slow, "");
    assert_eq!(body, "slow done\n");
}

#[test]
fn trace_narrates_the_master_a_worker_and_a_graceful_stop() {
    let mut server = Server::fixture("trace", &["--trace", "-w", "1"]);
    let mut client = server.connect();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut client, &mut reply).unwrap();
    assert!(reply.ends_with("Hello, World!\n"), "{reply}");
    let me = client.local_addr().unwrap();
    let master = format!("[{}]", server.pid());
    let lines = server.trace_lines(8);
    assert_eq!(
        lines[0],
        format!("{master} master: 0 of 1 workers running, forking one")
    );
    let worker = lines[1]
        .split(' ')
        .next()
        .expect("a [pid] prefix")
        .to_string();
    let fd = lines[1]
        .strip_prefix(&format!("{worker} worker took fd "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("second line {:?}", lines[1]));
    let expected = [
        format!("{worker} worker took fd {fd} from {me}"),
        format!("{worker} fd {fd}: need more (0 bytes buffered)"),
        format!("{worker} fd {fd}: read 27 bytes"),
        format!("{worker} fd {fd}: head complete: GET /, 27 bytes"),
        format!("{worker} fd {fd}: body 0 of 0 bytes"),
        format!("{worker} fd {fd}: calling the app"),
        format!("{worker} fd {fd}: the app answered 200 OK, 14 bytes"),
    ];
    assert_eq!(lines[1..], expected);
    // The stop: the master's lines come before its kill(2), the worker's after.
    send(server.pid(), libc::SIGTERM);
    assert_eq!(
        server.trace_lines(3),
        [
            format!("{master} master: SIGTERM or SIGINT received"),
            format!("{worker} SIGTERM or SIGINT received: this worker stops"),
            format!("{master} master: SIGCHLD received"),
        ]
    );
    let status = wait_for("the master to exit", Duration::from_secs(10), || {
        server.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}
