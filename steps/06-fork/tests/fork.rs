//! Checks the promise of chapter 6: every connection gets its own child process, a slow
//! request holds up nobody else, and exited children are reaped, so no zombie remains.

mod common;

use common::{exchange, get, wait_for, Server};
use std::collections::HashSet;
use std::time::Duration;

/// The children of `parent` as (pid, state letter), read from `/proc/PID/stat`.
fn children(parent: i32) -> Vec<(i32, char)> {
    let mut found = Vec::new();
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
        let state = fields.next().and_then(|s| s.chars().next());
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        let pid = head.split(' ').next().and_then(|p| p.parse::<i32>().ok());
        if let (Some(pid), Some(state), Some(ppid)) = (pid, state, ppid) {
            if ppid == parent {
                found.push((pid, state));
            }
        }
    }
    found
}

#[test]
fn each_connection_is_served_by_a_new_child_and_none_is_left_a_zombie() {
    let server = Server::fixture("zombies", &["--trace"]);
    let mut pids = HashSet::new();
    for _ in 0..8 {
        let (_, body) = get(&server, "/pid");
        let pid: i32 = body.trim().parse().expect("the fixture answers its pid");
        assert_ne!(pid, server.pid(), "the parent must not run the app itself");
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 8, "eight connections, eight different children");
    // Each child exits after its connection closes; the parent must collect every one.
    wait_for("all children to be reaped", Duration::from_secs(5), || {
        children(server.pid()).is_empty().then_some(())
    });
    let mut log = String::new();
    wait_for(
        "a reap traced for every child",
        Duration::from_secs(5),
        || {
            log.extend(server.stderr.try_iter().map(|line| line + "\n"));
            let all = pids
                .iter()
                .all(|pid| log.contains(&format!("reaped child {pid} (exit status: 0)")));
            all.then_some(())
        },
    );
}

#[test]
fn a_slow_request_does_not_hold_up_the_next_client() {
    let server = Server::fixture("slow", &[]);
    let mut slow = server.connect();
    let slow_request = "GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    std::io::Write::write_all(&mut slow, slow_request.as_bytes()).unwrap();
    let started = server.dir.join("slow-started");
    wait_for("the slow request to start", Duration::from_secs(5), || {
        started.exists().then_some(())
    });
    // While one child sleeps in the app, another child answers at once.
    let begin = std::time::Instant::now();
    let (_, body) = get(&server, "/");
    assert_eq!(body, "Hello, World!\n");
    assert!(
        begin.elapsed() < Duration::from_millis(900),
        "took {:?}",
        begin.elapsed()
    );
    let running = children(server.pid());
    assert!(!running.is_empty(), "the slow child is still running");
    let (_, body) = exchange(&mut slow, "");
    assert_eq!(body, "slow done\n");
}

#[test]
fn trace_narrates_the_parent_and_the_child() {
    let server = Server::fixture("trace", &["--trace"]);
    let mut client = server.connect();
    std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap(); // as `nc -N` does
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut client, &mut reply).unwrap();
    assert!(reply.ends_with("Hello, World!\n"), "{reply}");
    let me = client.local_addr().unwrap();
    let lines = server.trace_lines(13);
    let parent = format!("[{}]", server.pid());
    let child = lines[1]
        .split(' ')
        .next()
        .expect("a [pid] prefix")
        .to_string();
    assert_ne!(child, parent, "the second line comes from the child");
    let fd = lines[0]
        .strip_prefix(&format!("{parent} accepted fd "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("first line {:?}", lines[0]));
    let expected = [
        format!("{parent} accepted fd {fd} from {me}"),
        format!("{child} forked: this child serves fd {fd}"),
        format!("{child} fd {fd}: need more (0 bytes buffered)"),
        format!("{child} fd {fd}: read 27 bytes"),
        format!("{child} fd {fd}: head complete: GET /, 27 bytes"),
        format!("{child} fd {fd}: body 0 of 0 bytes"),
        format!("{child} fd {fd}: calling the app"),
        format!("{child} fd {fd}: the app answered 200 OK, 14 bytes"),
        format!("{child} fd {fd}: waiting up to 2s for a next request"),
        format!("{child} fd {fd}: the client closed"),
        format!("{child} child exits"),
        format!("{parent} SIGCHLD received"),
    ];
    assert_eq!(lines[..12], expected);
    let pid = child.trim_matches(['[', ']']);
    assert_eq!(
        lines[12],
        format!("{parent} reaped child {pid} (exit status: 0)")
    );
}
