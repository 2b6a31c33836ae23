//! The master and its workers as an operator sees them: signals, supervision, timeouts,
//! recycling, app load failures and the virtualenv the app runs in.
//!
//! Each test starts the real binary against a fixture in `tests/apps/`, sends real signals to
//! the pids it started, and waits on log lines and `/proc` with bounded deadlines.

mod common;

use common::{
    http_get, is_alive, poll, run_bounded, send_signal, try_http_get, Server, TempDir, WAIT,
};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The pid a `tests/apps/slow.py` response names (`pid=N` or `slept pid=N`).
fn pid_in(text: &str) -> u32 {
    text.trim()
        .rsplit("pid=")
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

/// Results of a client loop: how many requests succeeded, the failures, and which worker pids
/// answered.
#[derive(Default)]
struct LoopReport {
    ok: usize,
    failures: Vec<String>,
    pids: Vec<u32>,
}

/// Requests `/` on fresh connections, back to back, until `stop` is set; at most five minutes.
fn client_loop(port: u16, stop: Arc<AtomicBool>, report: Arc<Mutex<LoopReport>>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let result = try_http_get(port, "/");
        let mut report = report.lock().unwrap();
        match result {
            Ok(r) if r.status == 200 => {
                report.ok += 1;
                let pid = pid_in(&r.text());
                if !report.pids.contains(&pid) {
                    report.pids.push(pid);
                }
            }
            Ok(r) => report
                .failures
                .push(format!("status {}: {}", r.status, r.text())),
            Err(e) => report.failures.push(e),
        }
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let server = Server::start(&[
        "--chdir",
        "tests/apps",
        "-w",
        "2",
        "--threads",
        "2",
        "slow:app",
    ]);
    server.wait_for_workers(2, WAIT);
    let port = server.port();
    let clients: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || try_http_get(port, "/sleep?s=2")))
        .collect();
    // Signal only once all three are inside the app, not merely queued in the backlog.
    server.wait_for_lines("slow-app: sleeping", 3, WAIT);
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    server.wait_for_line("Handling signal: term", WAIT);

    for client in clients {
        let response = client
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| server.fail(&format!("an in-flight request failed: {e}")));
        assert_eq!(response.status, 200, "in-flight request: {response:?}");
        assert!(response.text().starts_with("slept pid="), "{response:?}");
    }
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "master exit status after SIGTERM");
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "graceful stop took {:?}",
        sent.elapsed()
    );
    server.wait_for_line("Shutting down: Master", WAIT);
}

#[test]
fn sigterm_stops_accepting_new_connections() {
    let server = Server::start(&["--chdir", "tests/apps", "slow:app"]);
    let port = server.port();
    assert_eq!(http_get(port, "/").status, 200);
    server.signal(libc::SIGTERM);
    server.wait_exit(WAIT);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port still accepts connections after the master exited"
    );
}

#[test]
fn sigint_and_sigquit_stop_the_server() {
    for (sig, name) in [(libc::SIGINT, "int"), (libc::SIGQUIT, "quit")] {
        let server = Server::start(&["--chdir", "tests/apps", "-w", "2", "slow:app"]);
        let workers = server.wait_for_workers(2, WAIT);
        server.signal(sig);
        server.wait_for_line(&format!("Handling signal: {name}"), WAIT);
        let status = server.wait_exit(WAIT);
        assert_eq!(status.code(), Some(0), "exit status after SIG{name}");
        assert!(
            poll(WAIT, || workers.iter().all(|&pid| !is_alive(pid))),
            "workers {workers:?} outlived the master after SIG{name}"
        );
    }
}

#[test]
fn sighup_replaces_every_worker_without_failing_a_request() {
    let server = Server::start(&["--chdir", "tests/apps", "-w", "2", "slow:app"]);
    let old = server.wait_for_workers(2, WAIT);
    let port = server.port();

    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(LoopReport::default()));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (stop, report) = (Arc::clone(&stop), Arc::clone(&report));
            thread::spawn(move || client_loop(port, stop, report))
        })
        .collect();
    assert!(
        poll(WAIT, || report.lock().unwrap().ok >= 20),
        "the client loop is not getting answers"
    );

    server.signal(libc::SIGHUP);
    server.wait_for_line("Handling signal: hup", WAIT);
    let replaced = poll(WAIT, || {
        let now = server.worker_pids();
        now.len() == 2 && now.iter().all(|pid| !old.contains(pid))
    });
    // Keep the loop running a little past the switch so requests hit the new workers too.
    let ok_at_switch = report.lock().unwrap().ok;
    poll(WAIT, || report.lock().unwrap().ok >= ok_at_switch + 20);
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().expect("client loop thread");
    }

    let new = server.worker_pids();
    if !replaced {
        server.fail(&format!(
            "workers not replaced after SIGHUP: {old:?} -> {new:?}"
        ));
    }
    let report = report.lock().unwrap();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during the reload: {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures
    );
    assert!(
        report.pids.iter().any(|pid| new.contains(pid)),
        "no request reached a new worker {new:?}; pids seen {:?}",
        report.pids
    );
    assert!(server.try_exit().is_none(), "the master exited on SIGHUP");
    for pid in old {
        assert!(
            poll(WAIT, || !is_alive(pid)),
            "old worker {pid} still alive after SIGHUP"
        );
    }
}

#[test]
fn a_killed_worker_is_replaced() {
    let server = Server::start(&["--chdir", "tests/apps", "-w", "2", "slow:app"]);
    let old = server.wait_for_workers(2, WAIT);
    let victim = old[0];
    send_signal(victim, libc::SIGKILL);
    server.wait_for_line(
        &format!("Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?"),
        WAIT,
    );
    let mut now = Vec::new();
    let replaced = poll(WAIT, || {
        now = server.worker_pids();
        now.len() == 2 && !now.contains(&victim)
    });
    if !replaced {
        server.fail(&format!("worker {victim} not replaced: {old:?} -> {now:?}"));
    }
    let newcomer = *now
        .iter()
        .find(|pid| !old.contains(pid))
        .expect("a new pid");
    server.wait_for_line(&format!("Booting worker with pid: {newcomer}"), WAIT);
    for _ in 0..10 {
        assert_eq!(http_get(server.port(), "/").status, 200);
    }
}

#[test]
fn a_hung_worker_is_killed_after_the_timeout_and_replaced() {
    let server = Server::start(&[
        "--chdir",
        "tests/apps",
        "-w",
        "1",
        "--timeout",
        "2",
        "slow:app",
    ]);
    let [old] = server.wait_for_workers(1, WAIT)[..] else {
        unreachable!("wait_for_workers returned exactly one pid")
    };
    let port = server.port();
    let hung = thread::spawn(move || try_http_get(port, "/hang"));
    server.wait_for_line("slow-app: hanging", WAIT);
    let started = Instant::now();
    server.wait_for_line(&format!("WORKER TIMEOUT (pid:{old})"), WAIT);
    let waited = started.elapsed();
    // The heartbeat stopped a little before the hang line was printed, so allow some slack
    // below the 2 s timeout, and a few seconds above it for the master's check interval.
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(8),
        "hung worker killed {waited:?} after it hung, with --timeout 2"
    );
    // The hung client's connection dies with the worker: an error or a 5xx, never a hang.
    let hung = hung.join().expect("client thread");
    if let Ok(r) = &hung {
        assert!(r.status >= 500, "the hung request got {r:?}");
    }
    let mut now = Vec::new();
    let replaced = poll(WAIT, || {
        now = server.worker_pids();
        now.len() == 1 && now[0] != old
    });
    if !replaced {
        server.fail(&format!("hung worker {old} not replaced: now {now:?}"));
    }
    let answer = http_get(port, "/");
    assert_eq!(answer.status, 200);
    assert_eq!(
        pid_in(&answer.text()),
        now[0],
        "answer from an unexpected process"
    );
    assert!(!is_alive(old), "the hung worker {old} is still alive");
}

#[test]
fn ttin_and_ttou_change_the_number_of_workers() {
    let server = Server::start(&["--chdir", "tests/apps", "-w", "2", "slow:app"]);
    server.wait_for_workers(2, WAIT);
    server.signal(libc::SIGTTIN);
    server.wait_for_workers(3, WAIT);
    server.signal(libc::SIGTTIN);
    server.wait_for_workers(4, WAIT);
    server.signal(libc::SIGTTOU);
    server.wait_for_workers(3, WAIT);
    server.signal(libc::SIGTTOU);
    server.wait_for_workers(2, WAIT);
    for _ in 0..10 {
        assert_eq!(http_get(server.port(), "/").status, 200);
    }
}

#[test]
fn max_requests_recycles_the_worker() {
    let server = Server::start(&[
        "--chdir",
        "tests/apps",
        "-w",
        "1",
        "--max-requests",
        "5",
        "slow:app",
    ]);
    let [first] = server.wait_for_workers(1, WAIT)[..] else {
        unreachable!("wait_for_workers returned exactly one pid")
    };
    let port = server.port();
    let pids: Vec<u32> = (0..12)
        .map(|i| {
            let r = try_http_get(port, "/")
                .unwrap_or_else(|e| server.fail(&format!("request {} failed: {e}", i + 1)));
            assert_eq!(r.status, 200, "request {}: {r:?}", i + 1);
            pid_in(&r.text())
        })
        .collect();
    assert!(
        pids[..5].iter().all(|&p| p == first),
        "the first 5 requests should be served by worker {first}: {pids:?}"
    );
    assert!(
        pids[5..].iter().all(|&p| p != first),
        "worker {first} served more than 5 requests: {pids:?}"
    );
    assert!(
        poll(WAIT, || !is_alive(first)),
        "retired worker {first} still alive"
    );
    assert_eq!(server.wait_for_workers(1, WAIT).len(), 1);
}

#[test]
fn an_app_that_fails_to_import_stops_the_server_with_status_4() {
    let server = Server::build(&["--chdir", "tests/apps", "-w", "1", "import_error:app"]).spawn();
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(4),
        "exit status when the app cannot load"
    );
    assert_eq!(
        server.count_lines("Traceback (most recent call last)"),
        1,
        "the traceback should be printed once"
    );
    assert_eq!(
        server.count_lines("RuntimeError: minigun-fixture: this module fails at import on purpose"),
        1
    );
    server.wait_for_line("Reason: App failed to load.", Duration::ZERO);
    assert!(
        server.count_lines("Booting worker with pid:") <= 1,
        "the master kept forking workers for an app that cannot load"
    );
}

#[test]
fn an_app_that_fails_to_import_in_many_workers_does_not_respawn_loop() {
    let server = Server::build(&["--chdir", "tests/apps", "-w", "3", "import_error:app"]).spawn();
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4));
    assert!(
        server.count_lines("Booting worker with pid:") <= 3,
        "more workers booted than asked for"
    );
    assert!(server.count_lines("Reason: App failed to load.") >= 1);
}

#[test]
fn a_missing_module_or_attribute_stops_the_server_with_status_4() {
    let cases = [
        ("no_such_module_anywhere:app", "no_such_module_anywhere"),
        ("hello:no_such_callable", "no_such_callable"),
    ];
    for (app, name) in cases {
        let server = Server::build(&["--chdir", "examples", app]).spawn();
        let status = server.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(4), "exit status for {app}");
        assert!(
            server.count_lines(name) >= 1,
            "the log does not name {name:?}: {:#?}",
            server.stderr_lines()
        );
        server.wait_for_line("Reason: App failed to load.", Duration::ZERO);
    }
}

#[test]
fn pid_file_holds_the_master_pid_while_running() {
    let dir = TempDir::new("pidfile");
    let pidfile = dir.path().join("minigun.pid");
    let pidfile_arg = pidfile.to_str().expect("utf-8 temp path");
    let server = Server::start(&["--chdir", "examples", "--pid", pidfile_arg, "hello:app"]);
    let text = std::fs::read_to_string(&pidfile).expect("pid file written at start");
    assert_eq!(text.trim(), server.master_pid().to_string());
    server.signal(libc::SIGTERM);
    server.wait_exit(WAIT);
    assert!(!pidfile.exists(), "pid file left behind after a clean stop");
}

#[test]
fn workers_exit_when_the_master_is_killed() {
    let server = Server::start(&["--chdir", "tests/apps", "-w", "2", "slow:app"]);
    let workers = server.wait_for_workers(2, WAIT);
    send_signal(server.master_pid(), libc::SIGKILL);
    server.wait_exit(WAIT);
    // Orphans are reparented; what matters is that they notice and leave.
    assert!(
        poll(Duration::from_secs(40), || workers
            .iter()
            .all(|&p| !is_alive(p))),
        "workers {workers:?} kept running after their master died"
    );
}

#[test]
fn the_app_runs_in_the_activated_virtualenv() {
    let dir = TempDir::new("venv");
    let venv = dir.path().join("venv");
    // The base interpreter minigun was built against; tests/run.sh exports it as PYO3_PYTHON.
    let base = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = run_bounded(
        Command::new(&base)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "python3 -m venv failed: {out:?}");
    let out = run_bounded(
        Command::new(venv.join("bin/python")).args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let site_packages = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mark = format!("venv-mark-{}", std::process::id());
    std::fs::write(
        std::path::Path::new(&site_packages).join("minigun_venv_marker.py"),
        format!("MARK = {mark:?}\n"),
    )
    .expect("write the marker module");

    let venv_str = venv.to_str().expect("utf-8 temp path");
    let path = format!(
        "{}/bin:{}",
        venv_str,
        std::env::var("PATH").unwrap_or_default()
    );
    let server = Server::build(&["--chdir", "tests/apps", "uses_marker:app"])
        .env("VIRTUAL_ENV", venv_str)
        .env("PATH", &path)
        .start();
    let answer = http_get(server.port(), "/");
    assert_eq!(answer.status, 200, "{answer:?}");
    let text = answer.text();
    assert!(text.contains(&format!("\"marker\": \"{mark}\"")), "{text}");
    let real_venv = std::fs::canonicalize(&venv).expect("venv exists");
    assert!(
        text.contains(&format!("\"prefix\": \"{}\"", real_venv.display()))
            || text.contains(&format!("\"prefix\": \"{venv_str}\"")),
        "sys.prefix is not the virtualenv {venv_str}: {text}"
    );
    drop(server);

    // Without the virtualenv activated the marker is not importable: the app fails to load.
    let server = Server::build(&["--chdir", "tests/apps", "uses_marker:app"])
        .env_remove("VIRTUAL_ENV")
        .spawn();
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "app loaded without its virtualenv");
    assert!(server.count_lines("minigun_venv_marker") >= 1);
}

#[test]
fn preload_imports_the_app_once_in_the_master() {
    let server = Server::start(&["--chdir", "tests/apps", "-w", "2", "--preload", "echo:app"]);
    let workers = server.wait_for_workers(2, WAIT);
    let text = http_get(server.port(), "/").text();
    let master = server.master_pid();
    assert!(
        text.contains(&format!("\"import_pid\": {master}")),
        "with --preload the app should be imported by the master {master}: {text}"
    );
    assert!(
        workers
            .iter()
            .any(|w| text.contains(&format!("\"pid\": {w}"))),
        "answer not from a worker {workers:?}: {text}"
    );

    let server = Server::start(&["--chdir", "tests/apps", "-w", "1", "echo:app"]);
    let [worker] = server.wait_for_workers(1, WAIT)[..] else {
        unreachable!("wait_for_workers returned exactly one pid")
    };
    let text = http_get(server.port(), "/").text();
    assert!(
        text.contains(&format!("\"import_pid\": {worker}")),
        "without --preload the worker {worker} imports the app: {text}"
    );
}

#[test]
fn graceful_timeout_bounds_how_long_a_stop_waits() {
    let server = Server::start(&[
        "--chdir",
        "tests/apps",
        "--graceful-timeout",
        "1",
        "slow:app",
    ]);
    let port = server.port();
    let client = thread::spawn(move || try_http_get(port, "/sleep?s=20"));
    server.wait_for_line("slow-app: sleeping", WAIT);
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    let took = sent.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after the graceful timeout"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(8),
        "with --graceful-timeout 1 the stop took {took:?}"
    );
    // The request that outlived the timeout is cut off rather than answered.
    let answer = client.join().expect("client thread");
    assert!(
        answer.as_ref().map_or(true, |r| r.status >= 500),
        "a request cut off by the graceful timeout got {answer:?}"
    );
}

#[test]
fn sighup_reloads_the_application_code() {
    let dir = TempDir::new("reload");
    let app = dir.path().join("reloadable.py");
    let version = |v: &str| {
        format!(
            "def app(environ, start_response):\n    \
             start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
             return [b'{v}\\n']\n"
        )
    };
    std::fs::write(&app, version("version 1")).expect("write the app");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path");
    let server = Server::start(&["--chdir", dir_arg, "-w", "2", "reloadable:app"]);
    assert_eq!(http_get(server.port(), "/").text(), "version 1\n");

    std::fs::write(&app, version("version 2")).expect("rewrite the app");
    // Python may reuse a cached .pyc whose source mtime matches to the second; drop it.
    let _ = std::fs::remove_dir_all(dir.path().join("__pycache__"));
    server.signal(libc::SIGHUP);
    let mut seen = String::new();
    let reloaded = poll(WAIT, || {
        seen = http_get(server.port(), "/").text();
        seen == "version 2\n"
    });
    assert!(reloaded, "still serving {seen:?} after SIGHUP");
}

#[test]
fn a_hup_during_a_reload_replaces_the_generation_still_starting() {
    // Deploy scripts send HUP twice (two hosts' hooks, a retry). The second one replaces the
    // generation the first one is still starting, rather than adding a third beside it, and
    // the server ends with the configured number of workers, all from the newest generation.
    let dir = common::TempDir::new("hup-during-reload");
    let hold = dir.path().join("hold");
    let conf = dir.path().join("conf.py");
    std::fs::write(
        &conf,
        format!(
            "import os, time\n\
             def post_fork(server, worker):\n    \
                 deadline = time.monotonic() + 20\n    \
                 while os.path.exists({hold:?}) and time.monotonic() < deadline:\n        \
                     time.sleep(0.01)\n",
            hold = hold.to_str().expect("utf-8")
        ),
    )
    .expect("write config");
    let server = Server::start(&[
        "-c",
        conf.to_str().expect("utf-8"),
        "-w",
        "2",
        "--chdir",
        "tests/apps",
        "slow:app",
    ]);
    let first = server.wait_for_workers(2, WAIT);
    std::fs::write(&hold, "").expect("hold the next generation in post_fork");
    server.signal(libc::SIGHUP);
    // The master starts a generation's workers one after another: one is enough here.
    let mut second = Vec::new();
    let started = poll(WAIT, || {
        second = server
            .worker_pids()
            .into_iter()
            .filter(|p| !first.contains(p))
            .collect();
        !second.is_empty()
    });
    assert!(started, "no worker of the second generation");
    server.signal(libc::SIGHUP);
    server.wait_for_line("the generation still starting is replaced", WAIT);
    std::fs::remove_file(&hold).expect("let the generations boot");
    let settled = poll(WAIT, || {
        let now = server.worker_pids();
        now.len() == 2
            && now
                .iter()
                .all(|p| !first.contains(p) && !second.contains(p))
    });
    assert!(
        settled,
        "workers now {:?}; first {first:?}, second {second:?}",
        server.worker_pids()
    );
    assert_eq!(http_get(server.port(), "/").status, 200);
}

#[test]
fn a_connection_accepted_just_before_a_graceful_stop_is_still_answered() {
    // A load balancer opens a connection, and the worker accepts it, the moment before a
    // deploy sends TERM; the request follows a moment later. Closing that connection unread
    // (as if it were an idle keep-alive one) fails a request the client had every right to
    // send: it must be answered, and the connection closed after it.
    let server = Server::start(&[
        "-w",
        "1",
        "--log-level",
        "debug",
        "--chdir",
        "tests/apps",
        "slow:app",
    ]);
    let worker = server.wait_for_workers(1, WAIT)[0];
    let sockets = || {
        std::fs::read_dir(format!("/proc/{worker}/fd"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let before = sockets();
    let mut conn = common::Conn::open(server.port());
    assert!(
        poll(WAIT, || sockets() > before),
        "the worker never accepted the connection"
    );
    server.signal(libc::SIGTERM);
    server.wait_for_line(&format!("Worker {worker} handling signal: term"), WAIT);
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    answered_then_closed(&server, &mut conn);
}

/// Reads the answer a stopping worker owes `conn`: a 200 that closes the connection; then the
/// server must exit cleanly.
fn answered_then_closed(server: &Server, conn: &mut common::Conn) {
    let response = conn.read_response("GET");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "a stopping worker keeps no connection: {:?}",
        response.header("connection")
    );
    assert!(server.wait_exit(WAIT).success());
}

#[test]
fn a_request_begun_on_a_kept_alive_connection_as_a_stop_begins_is_answered() {
    // The answer to the first request kept the connection alive, and the client sent the
    // start of its next request; then TERM. The thread that answered is still busy with it (a
    // post_request hook that takes a while) when another thread starts the stop. Closing the
    // connection then, with the next request's bytes unread, resets it: the client's request
    // is lost, and its write fails. It must be read, answered, and the connection closed.
    let dir = common::TempDir::new("stop-mid-head");
    let config = dir.path().join("hook.conf.py");
    std::fs::write(
        &config,
        "import time\n\ndef post_request(worker, req, environ, resp):\n    \
         if req.path == '/first':\n        time.sleep(1)\n",
    )
    .expect("config");
    let server = Server::start(&[
        "-w",
        "1",
        "--threads",
        "2",
        "--log-level",
        "debug",
        "-c",
        config.to_str().expect("utf-8 path"),
        "--chdir",
        "tests/apps",
        "slow:app",
    ]);
    let worker = server.wait_for_workers(1, WAIT)[0];
    let mut conn = common::Conn::open(server.port());
    conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = conn.read_response("GET");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None, "kept alive");
    conn.send(b"GET /second HTTP/1.1\r\nHost: x\r\n");
    server.signal(libc::SIGTERM);
    server.wait_for_line(&format!("Worker {worker} handling signal: term"), WAIT);
    conn.send(b"\r\n");
    answered_then_closed(&server, &mut conn);
}
