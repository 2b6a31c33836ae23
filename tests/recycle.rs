//! `--max-worker-rss`: a worker whose resident size passes the limit retires gracefully and
//! is replaced, one worker at a time, and no request fails meanwhile.
//!
//! The fixture `tests/apps/hog.py` grows a worker by N MiB on `GET /grow?mb=N`, or every worker
//! as it imports the app with `HOG_MB_AT_IMPORT`. A worker of that app is about 12 MiB (a debug
//! build), so limits of 60 to 100 MiB leave room on both sides.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{http_get, is_alive, poll, try_http_get, Server, WAIT};

/// Requests `/` back to back on fresh connections until `stop`; returns the failures.
fn client_loop(port: u16, stop: Arc<AtomicBool>, failures: Arc<Mutex<Vec<String>>>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match try_http_get(port, "/") {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures
                .lock()
                .unwrap()
                .push(format!("status {}", r.status)),
            Err(e) => failures.lock().unwrap().push(e),
        }
    }
}

/// The pid in a `hog.py` answer (`pid=N`).
fn pid_in(text: &str) -> u32 {
    text.trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

#[test]
fn a_worker_over_max_worker_rss_is_replaced_without_failing_a_request() {
    let server = Server::start(&[
        "--chdir",
        "tests/apps",
        "-w",
        "2",
        "--max-worker-rss",
        "100",
        "hog:app",
    ]);
    let workers = server.wait_for_workers(2, WAIT);
    let port = server.port();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failures) = (Arc::clone(&stop), Arc::clone(&failures));
            thread::spawn(move || client_loop(port, stop, failures))
        })
        .collect();

    let grown = pid_in(&http_get(port, "/grow?mb=150").text());
    assert!(workers.contains(&grown));
    let line = server.wait_for_line(
        &format!("Worker (pid:{grown}) has a resident size of"),
        WAIT,
    );
    let mib: u64 = line
        .split("resident size of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line:?}"));
    assert!(mib > 150, "the log names the RSS, {mib} MiB: {line}");
    assert!(line.contains("over --max-worker-rss 100 MiB"), "{line}");
    assert!(
        poll(WAIT, || !is_alive(grown)),
        "worker {grown} was not retired"
    );
    let now = server.wait_for_workers(2, WAIT);
    assert!(!now.contains(&grown));
    let other = workers.iter().find(|&&w| w != grown).expect("two workers");
    assert!(
        now.contains(other),
        "the worker under the limit was replaced too"
    );

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert_eq!(server.count_lines("has a resident size of"), 1);
}

#[test]
fn workers_that_start_over_the_limit_are_not_replaced_for_ever() {
    // Every worker is over the limit before it serves anything: a replacement would be just as
    // large, so replacing would never end. The operator is told once, and the workers serve.
    let server = Server::build(&[
        "--chdir",
        "tests/apps",
        "-w",
        "2",
        "--max-worker-rss",
        "60",
        "hog:app",
    ])
    .env("HOG_MB_AT_IMPORT", "80")
    .start();
    let workers = server.wait_for_workers(2, WAIT);
    server.wait_for_line("over --max-worker-rss 60 MiB as it started serving", WAIT);
    let port = server.port();
    for _ in 0..20 {
        assert_eq!(http_get(port, "/").status, 200);
    }
    // Three more check periods: still the same two workers, and one warning.
    let until = Instant::now() + Duration::from_millis(3200);
    while Instant::now() < until {
        assert_eq!(server.worker_pids(), workers, "a worker was replaced");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.count_lines("has a resident size of"), 0);
    assert_eq!(server.count_lines("over --max-worker-rss"), 1);
}

#[test]
fn max_worker_rss_refuses_bad_values() {
    for bad in ["-1", "lots", "1048577"] {
        let server = Server::build(&["--max-worker-rss", bad, "hog:app"])
            .no_default_bind()
            .spawn();
        let status = server.wait_exit(WAIT);
        assert_eq!(status.code(), Some(2), "--max-worker-rss {bad}");
        let lines = server.stderr_lines();
        assert_eq!(lines.len(), 1, "one line for {bad}: {lines:?}");
        assert!(lines[0].contains("--max-worker-rss"), "{lines:?}");
    }
}
