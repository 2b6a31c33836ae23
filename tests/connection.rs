//! One connection's faults must stay that connection's: what an app does wrong, or one client
//! does on purpose, never costs another client its request, never sends a byte to the wrong
//! client, and never takes the worker down. Each test is a case found by trying minigun as a
//! user and a reviewer would, against the real binary and tests/apps/misuse.py:
//!
//! - a `write()` callable kept past its request raises instead of writing into whichever
//!   socket now has its descriptor number;
//! - a malformed status or header list from the app gets a 500, and the worker lives on;
//! - bytes written with `write()` before a `wsgi.file_wrapper` result are sent once, in order;
//! - two app threads reading `wsgi.input` at once neither deadlock nor mix their bytes;
//! - a request body that never arrives (or half of it) holds no thread;
//! - a client pipelining without pause cannot starve another of the same thread;
//! - an app that forks leaves no dead descriptor in the worker's epoll set (no spinning);
//! - 200 unfinished 720 KB heads (or finished ones whose body never comes) cannot grow the
//!   worker without bound, and a body past the spool cap is refused at once;
//! - a request that arrived on time is not answered 408 because the thread was busy;
//! - pipelined requests to a slow app with two threads do not stall;
//! - random header names do not fill the interpreter's table of interned strings;
//! - a client that hangs up or pipelines while another thread serves it makes no thread spin;
//! - an idle worker with four threads sleeps; 32 slow uploaders hold no thread;
//! - TERM closes the listening socket at once, while in-flight requests finish.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{poll, rss_kib, Client, Conn, Server, WAIT};

/// Starts misuse:app with one worker and `extra` flags; returns it and the worker's pid.
fn misuse(extra: &[&str]) -> (Server, u32) {
    let mut args = vec!["-w", "1", "--chdir", "tests/apps"];
    args.extend_from_slice(extra);
    args.push("misuse:app");
    let server = Server::start(&args);
    let worker = server.wait_for_workers(1, WAIT)[0];
    if !poll(WAIT, || common::try_http_get(server.port(), "/pid").is_ok()) {
        server.fail("the worker never answered");
    }
    (server, worker)
}

/// `GET path` on a fresh connection, returning the status and body text.
fn get(port: u16, path: &str) -> (u16, String) {
    let r = common::http_get(port, path);
    (r.status, r.text())
}

/// Asserts the one worker is still `worker` and answers.
fn same_worker_answers(server: &Server, worker: u32) {
    let (status, body) = get(server.port(), "/pid");
    if status != 200 || body != worker.to_string() || server.worker_pids() != vec![worker] {
        server.fail(&format!(
            "worker {worker} did not survive: /pid gave {status} {body:?}, workers {:?}",
            server.worker_pids()
        ));
    }
    assert_eq!(server.count_lines("exited with code"), 0);
}

/// Reads one interim (1xx) response head, byte by byte so nothing after it is consumed.
fn read_interim(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("no interim response: {other:?} after {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// CPU time (user + system) of `pid` in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Voluntary context switches of every thread of `pid`: how often its threads went to sleep,
/// which is how often they woke.
fn wakeups(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[test]
fn a_kept_write_callable_raises_instead_of_writing_to_another_client() {
    let (server, worker) = misuse(&[]);
    let port = server.port();

    // The first connection closes, freeing its descriptor number for the next one.
    let (status, body) = get(port, "/keep-write");
    assert_eq!((status, body.as_str()), (200, "kept\n"));
    let mut other = Conn::open(port);
    other.send(b"GET /use-kept-write HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let raw = other.read_to_close();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200 ") && !text.contains("INJECTED"),
        "another client's connection carried the kept write: {text:?}"
    );
    assert!(
        !text.contains("kept write: no error"),
        "the kept write() was accepted after its request ended: {text:?}"
    );

    // The first connection still open: it must not receive a byte more.
    let mut first = Client::connect(port, WAIT).expect("connect");
    let r = first
        .request(b"GET /keep-write HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("keep-write");
    assert_eq!(r.text(), "kept\n");
    let (status, body) = get(port, "/use-kept-write");
    assert_eq!(status, 200);
    assert!(!body.contains("no error"), "{body:?}");
    first
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut extra = [0u8; 64];
    match first.stream.read(&mut extra) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "the kept write reached its old, idle connection: {other:?} {:?}",
            String::from_utf8_lossy(&extra)
        ),
    }
    same_worker_answers(&server, worker);
}

#[test]
fn bytes_written_before_a_file_wrapper_are_neither_lost_nor_counted_twice() {
    let (server, worker) = misuse(&[]);
    // write() sends ten bytes, then the app returns a 100-byte file through wsgi.file_wrapper:
    // the body is the 110 bytes, framed as announced (Content-Length 110) or chunked, and the
    // next request on the connection gets its own, intact response.
    for path in ["/write-then-file?cl=1", "/write-then-file"] {
        let mut c = Client::connect(server.port(), WAIT).expect("connect");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n");
        c.stream.write_all(request.as_bytes()).expect("requests");
        let first = c.read_response().expect("first response");
        let mut expected = vec![b'W'; 10];
        expected.extend_from_slice(&[b'F'; 100]);
        assert_eq!(
            (
                first.status,
                String::from_utf8_lossy(&first.body).into_owned()
            ),
            (200, String::from_utf8_lossy(&expected).into_owned()),
            "{path}"
        );
        let second = c.read_response().expect("second response");
        assert_eq!(
            (second.status, second.text()),
            (200, worker.to_string()),
            "{path}"
        );
    }
    same_worker_answers(&server, worker);
}

#[test]
fn a_malformed_status_or_header_list_gets_a_500_and_the_worker_lives() {
    let (server, worker) = misuse(&[]);
    let port = server.port();
    for status in [
        "20",
        "",
        "2",
        "2000%20OK",
        "200OK",
        "abc",
        "099%20Low",
        "200%20OK%0D%0AX:%20y",
    ] {
        let (code, _) = get(port, &format!("/status?s={status}"));
        assert_eq!(code, 500, "start_response({status:?}) gave {code}");
        same_worker_answers(&server, worker);
    }
    for kind in [
        "not-a-list",
        "triple",
        "int-value",
        "bytes-name",
        "newline",
        "non-latin1",
        "bad-name",
    ] {
        let (code, body) = get(port, &format!("/headers?kind={kind}"));
        assert_eq!(code, 500, "headers {kind}: {code} {body:?}");
        same_worker_answers(&server, worker);
    }
    // One traceback per bad call, not a panic.
    assert_eq!(server.count_lines("panicked"), 0);
}

#[test]
fn two_app_threads_reading_wsgi_input_neither_deadlock_nor_lose_bytes() {
    let (server, worker) = misuse(&["--timeout", "10"]);
    let port = server.port();
    let size = 1 << 20;
    // A body sent at once, and one sent after the server's 100 Continue: both are read in full
    // by the worker before the app runs, and the app's two threads share one stream.
    for expect in [false, true] {
        let mut c = Client::connect(port, WAIT).expect("connect");
        let head = format!(
            "POST /two-readers HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n{}\r\n",
            if expect {
                "Expect: 100-continue\r\n"
            } else {
                ""
            }
        );
        c.stream.write_all(head.as_bytes()).expect("head");
        if expect {
            let interim = read_interim(&mut c.stream);
            assert!(interim.starts_with("HTTP/1.1 100 "), "{interim:?}");
        }
        let body = vec![b'r'; size];
        c.stream.write_all(&body).expect("body");
        let started = Instant::now();
        let r = c
            .read_response()
            .unwrap_or_else(|e| server.fail(&format!("two readers (expect {expect}): {e}")));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().contains(&format!("\"total\": {size}")),
            "the two readers together did not read the body exactly once: {}",
            r.text()
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(server.count_lines("WORKER TIMEOUT"), 0);
    same_worker_answers(&server, worker);
}

#[test]
fn a_body_that_never_arrives_does_not_hold_the_only_thread() {
    let (server, worker) = misuse(&["--threads", "1", "--timeout", "30"]);
    let port = server.port();
    for (name, head) in [
        (
            "silent",
            "POST /no-read HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n",
        ),
        (
            "half-sent",
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n",
        ),
        (
            "100-continue, then silent",
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\
             Expect: 100-continue\r\n\r\n",
        ),
    ] {
        // A POST announcing 100 000 bytes that sends none, or half, or asks for 100 Continue
        // and then sends nothing: whatever the server makes of it, the next client of the
        // only thread is served at once.
        let mut stalled = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stalled.write_all(head.as_bytes()).expect("head");
        if name == "half-sent" {
            stalled.write_all(&[b'p'; 50_000]).expect("half the body");
        }
        let started = Instant::now();
        let (status, body) = get(port, "/pid");
        let took = started.elapsed();
        assert_eq!((status, body), (200, worker.to_string()), "{name}");
        assert!(
            took < Duration::from_secs(3),
            "{name}: a client waited {took:?} behind a body that never came"
        );
        drop(stalled);
    }
    same_worker_answers(&server, worker);
}

#[test]
fn a_client_pipelining_without_pause_does_not_starve_another() {
    for threads in ["1", "2"] {
        let (server, worker) = misuse(&["--threads", threads]);
        let port = server.port();
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));

        let mut flood = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut reader = flood.try_clone().expect("clone");
        let reading = {
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&answered);
            thread::spawn(move || {
                reader
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let mut chunk = vec![0u8; 256 * 1024];
                let mut seen = 0u64;
                while !stop.load(Ordering::Acquire) {
                    match reader.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            seen +=
                                chunk[..n].windows(9).filter(|w| w == b"HTTP/1.1 ").count() as u64;
                            answered.store(seen, Ordering::Release);
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        let writing = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                flood
                    .set_write_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let batch = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
                let give_up = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Acquire) && Instant::now() < give_up {
                    let _ = flood.write_all(&batch);
                }
            })
        };
        assert!(
            poll(WAIT, || answered.load(Ordering::Acquire) > 1000),
            "the pipelining client was not being served"
        );
        let started = Instant::now();
        let probe = common::try_http_get(port, "/pid");
        let took = started.elapsed();
        let flooding = !writing.is_finished();
        stop.store(true, Ordering::Release);
        let _ = writing.join();
        let _ = reading.join();
        assert_eq!(probe.map(|r| r.status), Ok(200));
        // Before the fix the probe waited for the whole 30 s flood.
        assert!(
            flooding && took < Duration::from_secs(5),
            "--threads {threads}: a client waited {took:?} behind a pipelining one \
             (flood still running: {flooding})"
        );
        same_worker_answers(&server, worker);
    }
}

#[test]
fn pipelined_requests_to_a_slow_app_with_two_threads_do_not_stall() {
    // The app takes 10 ms a request, so the leader hands over before each one; every 16
    // requests the connection yields its turn, and the thread that queues it must wake the
    // leader, or the rest wait for the leader's next timeout (a second) each time.
    let (server, _worker) = misuse(&["--threads", "2"]);
    let mut c = Client::connect(server.port(), WAIT).expect("connect");
    let requests = 64;
    let started = Instant::now();
    c.stream
        .write_all(&b"GET /slow?s=0.01 HTTP/1.1\r\nHost: t\r\n\r\n".repeat(requests))
        .expect("pipeline");
    for i in 0..requests {
        let r = c
            .read_response()
            .unwrap_or_else(|e| server.fail(&format!("pipelined response {i}: {e}")));
        assert_eq!(r.text(), "slow done\n");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "64 pipelined 10 ms requests took {took:?} (about 0.7 s without stalls)"
    );
}

#[test]
fn a_request_that_arrived_while_the_only_thread_was_busy_is_not_timed_out() {
    let (server, worker) = misuse(&["--threads", "1", "--timeout", "3"]);
    let port = server.port();
    // B starts a request, the thread then spends 7.5 s in three slow requests, and B's request
    // is completed 0.4 s in: B was on time, and must not get a 408 when the thread comes back.
    let mut b = Client::connect(port, WAIT).expect("connect");
    b.stream
        .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\n")
        .expect("first half");
    let slow: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || common::try_http_get(port, "/slow?s=2.5")))
        .collect();
    server.wait_for_line("slow started", WAIT);
    thread::sleep(Duration::from_millis(400));
    b.stream.write_all(b"\r\n").expect("the rest");
    let r = b.read_response().expect("B's answer");
    assert_eq!(
        (r.status, r.text()),
        (200, worker.to_string()),
        "a request completed in time was answered {}",
        r.status
    );
    for s in slow {
        assert_eq!(s.join().expect("slow").map(|r| r.status), Ok(200));
    }
}

#[test]
fn an_app_that_forks_leaves_the_worker_idle_afterwards() {
    for threads in ["1", "4"] {
        let (server, worker) = misuse(&["--threads", threads]);
        let port = server.port();
        // A keep-alive connection whose request forks a child (which holds a copy of the
        // socket for 3 s); the client then hangs up and the worker closes its side.
        let mut c = Client::connect(port, WAIT).expect("connect");
        let r = c
            .request(b"GET /fork HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("fork");
        assert_eq!(r.text(), "forked\n");
        drop(c);
        let (status, _) = get(port, "/pid");
        assert_eq!(status, 200);
        let before = cpu_ticks(worker);
        thread::sleep(Duration::from_secs(1));
        let spent = cpu_ticks(worker) - before;
        assert!(
            spent < 20,
            "--threads {threads}: the worker burnt {spent} ticks in an idle second after a fork"
        );
        same_worker_answers(&server, worker);
    }
}

/// Opens 200 connections to `port`, each sending `head_start`, 90 header lines of 8 KB (720 KB
/// in all) and `head_end`; returns them, still open, with how many were answered 431.
fn big_heads(port: u16, head_end: &[u8]) -> (Vec<TcpStream>, usize) {
    let line = format!("X-Filler: {}\r\n", "f".repeat(8000));
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.write_all(b"POST /no-read HTTP/1.1\r\nHost: t\r\n");
        held.push(s);
    }
    for _ in 0..90 {
        for s in &mut held {
            let _ = s.write_all(line.as_bytes());
        }
    }
    for s in &mut held {
        let _ = s.write_all(head_end);
    }
    // Every connection has been read as far as the server will: those refused have their
    // answer waiting, the others sit in the server's buffers.
    let mut refused = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut answer = [0u8; 12];
        if matches!(s.read(&mut answer), Ok(n) if n >= 12 && &answer[..12] == b"HTTP/1.1 431") {
            refused += 1;
        }
    }
    (held, refused)
}

#[test]
fn two_hundred_unfinished_big_heads_do_not_grow_the_worker_without_bound() {
    // Unfinished heads, then heads that end but whose announced body never comes: either way
    // the worker holds them against one budget, and the clients past it get 431.
    for (name, head_end) in [
        ("unfinished", &b""[..]),
        (
            "complete, body missing",
            &b"Content-Length: 1000000\r\n\r\n"[..],
        ),
    ] {
        let (server, worker) = misuse(&["--worker-connections", "1000"]);
        let port = server.port();
        let idle = rss_kib(worker);
        let (held, refused) = big_heads(port, head_end);
        let peak = rss_kib(worker);
        let (status, _) = get(port, "/pid");
        assert_eq!(status, 200, "{name}: a normal client was not served");
        println!("200 {name} 720 KB heads: {refused} got 431; worker RSS {idle} -> {peak} KiB");
        assert!(
            refused >= 150,
            "{name}: only {refused} of 200 oversized heads were refused"
        );
        assert!(
            peak.saturating_sub(idle) < 48 * 1024,
            "{name}: 200 big heads grew the worker from {idle} KiB to {peak} KiB"
        );
        drop(held);
        same_worker_answers(&server, worker);
    }
}

#[test]
fn a_body_past_the_spool_cap_is_refused_at_once_without_a_limit() {
    let (server, worker) = misuse(&[]);
    // Without --limit-request-body, bodies are still capped (1 GiB), since they are spooled
    // to disk before the app runs.
    let mut c = Client::connect(server.port(), WAIT).expect("connect");
    let r = c
        .request(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2147483648\r\n\r\n")
        .expect("an answer to the head alone");
    assert_eq!(r.status, 413);
    same_worker_answers(&server, worker);
}

#[test]
fn random_header_names_do_not_grow_the_worker() {
    let (server, worker) = misuse(&[]);
    let port = server.port();
    let mut c = Client::connect(port, WAIT).expect("connect");
    let mut n = 0u64;
    let mut round = |c: &mut Client, requests: usize| {
        for _ in 0..requests {
            let mut request = String::from("GET /pid HTTP/1.1\r\nHost: t\r\n");
            for _ in 0..90 {
                n += 1;
                request.push_str(&format!("X-Random-Name-{n:x}-{:x}: v\r\n", n * 7919));
            }
            request.push_str("\r\n");
            let r = c.request(request.as_bytes()).expect("request");
            assert_eq!(r.status, 200);
        }
    };
    round(&mut c, 300);
    let before = rss_kib(worker);
    round(&mut c, 1500);
    let after = rss_kib(worker);
    println!("random header names: worker RSS {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) < 6 * 1024,
        "135 000 random header names grew the worker from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_client_that_hangs_up_or_pipelines_during_a_slow_request_does_not_make_the_worker_spin() {
    // With two threads a follower takes over the event loop while the app sleeps. The held
    // connection's socket then has something to report (the next request, or the client's
    // FIN); reported again on every wait, it would keep the new leader busy for the whole
    // second.
    let (server, worker) = misuse(&["--threads", "2"]);
    for (case, after) in [
        ("hang-up", None),
        (
            "pipelined",
            Some(&b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"[..]),
        ),
    ] {
        // A first request, so the connection has been parked (and watched) once.
        let mut c = Client::connect(server.port(), WAIT).expect("connect");
        let r = c.request(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.expect("first request").text(), worker.to_string());
        c.stream
            .write_all(b"GET /slow?s=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("request");
        server.wait_for_lines("slow started", 1 + usize::from(after.is_some()), WAIT);
        let before = cpu_ticks(worker);
        match after {
            Some(next) => c.stream.write_all(next).expect("pipelined request"),
            None => c
                .stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown"),
        }
        let first = c
            .read_response()
            .unwrap_or_else(|e| server.fail(&format!("{case}: {e}")));
        let spent = cpu_ticks(worker) - before;
        assert_eq!(first.text(), "slow done\n", "{case}");
        assert!(
            spent < 30,
            "{case}: the worker burnt {spent} ticks while one request slept a second"
        );
        if after.is_some() {
            let second = c.read_response().expect("the pipelined answer");
            assert_eq!(second.text(), worker.to_string());
        }
    }
    same_worker_answers(&server, worker);
}

#[test]
fn an_idle_worker_with_four_threads_sleeps() {
    let (server, worker) = misuse(&["--threads", "4"]);
    // Let the first request's aftermath settle, then count wake-ups over two idle seconds.
    thread::sleep(Duration::from_millis(500));
    let before = wakeups(worker);
    thread::sleep(Duration::from_secs(2));
    let woke = wakeups(worker) - before;
    assert!(
        woke < 60,
        "an idle worker's threads woke {woke} times in two seconds"
    );
    same_worker_answers(&server, worker);
}

#[test]
fn thirty_two_slow_uploaders_hold_no_thread() {
    let (server, worker) = misuse(&["--threads", "4", "--timeout", "20"]);
    let port = server.port();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let uploaders: Vec<_> = (0..32)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let started = Arc::clone(&started);
            thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let _ = s.write_all(
                    b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n",
                );
                // 80 KiB at once (more than is spooled in memory), then a kilobyte every
                // 100 ms: an upload that would take ten seconds or more.
                let _ = s.write_all(&vec![b's'; 80 * 1024]);
                started.fetch_add(1, Ordering::AcqRel);
                while !stop.load(Ordering::Acquire) {
                    if s.write_all(&[b's'; 1024]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    assert!(poll(WAIT, || started.load(Ordering::Acquire) == 32));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let r = common::try_http_get(port, "/pid");
        worst = worst.max(started.elapsed());
        assert_eq!(r.map(|r| r.status), Ok(200));
    }
    stop.store(true, Ordering::Release);
    for u in uploaders {
        let _ = u.join();
    }
    // Before the fix they waited for the uploads' 20 s deadline.
    assert!(
        worst < Duration::from_secs(5),
        "normal requests waited up to {worst:?} behind 32 slow uploaders"
    );
    same_worker_answers(&server, worker);
}

#[test]
fn term_closes_the_listening_socket_at_once_while_requests_finish() {
    let (server, _worker) = misuse(&["--graceful-timeout", "20"]);
    let port = server.port();
    let mut slow = Client::connect(port, WAIT).expect("connect");
    slow.stream
        .write_all(b"GET /slow?s=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("slow request");
    server.wait_for_line("slow started", WAIT);
    server.signal(libc::SIGTERM);
    let refused = poll(Duration::from_secs(2), || {
        matches!(
            TcpStream::connect(("127.0.0.1", port)),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused
        )
    });
    let r = slow.read_response();
    assert_eq!(r.map(|r| r.text()), Ok("slow done\n".to_owned()));
    assert!(
        refused,
        "new connections were still accepted into the backlog after TERM"
    );
    assert!(server.wait_exit(WAIT).success());
}
