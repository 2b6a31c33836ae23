//! Binary upgrade, as an operator runs it: USR2 starts a new master from the binary on disk,
//! WINCH retires the old master's workers, TERM ends the old master; or HUP and TERM roll back.
//!
//! The old master is the process the harness spawned; the new master is its child, in the same
//! process group, so the harness's `Drop` ends it too. Once the old master has exited the
//! harness's log readers keep collecting the new master's lines (it writes to the same pipes),
//! but `wait_for_line` gives up on an exited master, so these tests poll the log themselves.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    children_of, http_get, is_alive, minigun_bin, poll, send_signal, try_http_get, Server, TempDir,
    WAIT,
};

/// What a client loop saw: answers, failures, and which worker pids answered.
#[derive(Default)]
struct LoopReport {
    ok: usize,
    failures: Vec<String>,
    pids: Vec<u32>,
}

/// Clients requesting `/` of `tests/apps/slow.py` on fresh connections, back to back, until
/// stopped (at most five minutes).
struct ClientLoop {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoopReport>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl ClientLoop {
    fn start(port: u16, clients: usize) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoopReport::default()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, report) = (Arc::clone(&stop), Arc::clone(&report));
                thread::spawn(move || {
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
                            Ok(r) => report.failures.push(format!("status {}", r.status)),
                            Err(e) => report.failures.push(e),
                        }
                    }
                })
            })
            .collect();
        ClientLoop {
            stop,
            report,
            threads,
        }
    }

    fn ok(&self) -> usize {
        self.report.lock().unwrap().ok
    }

    fn answered_by(&self, pid: u32) -> bool {
        self.report.lock().unwrap().pids.contains(&pid)
    }

    /// Waits until `n` more requests have been answered, so the loop demonstrably runs across
    /// whatever just happened.
    fn wait_for_more(&self, n: usize, server: &Server) {
        let target = self.ok() + n;
        if !poll(WAIT, || self.ok() >= target) {
            server.fail(&format!("the client loop stalled at {} answers", self.ok()));
        }
    }

    /// Stops the clients and returns their report.
    fn finish(self) -> LoopReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client thread");
        }
        Arc::try_unwrap(self.report)
            .ok()
            .expect("the client threads are joined")
            .into_inner()
            .unwrap()
    }
}

/// The pid in a `tests/apps/slow.py` answer (`pid=N`).
fn pid_in(text: &str) -> u32 {
    text.trim()
        .rsplit("pid=")
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"))
}

/// The pid a pid file holds, if it exists and holds one.
fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn oldbin(pidfile: &Path) -> PathBuf {
    PathBuf::from(format!("{}.oldbin", pidfile.display()))
}

/// Sends USR2 to the old master and waits for the new one: the pid file names it, the old
/// master's file is renamed `.oldbin`, and the new master's `workers` workers serve. Returns
/// the new master's pid and workers.
fn upgrade(server: &Server, pidfile: &Path, workers: usize) -> (u32, Vec<u32>) {
    let old = server.master_pid();
    server.signal(libc::SIGUSR2);
    let mut new = None;
    let started = poll(WAIT, || {
        new = read_pid(pidfile).filter(|&p| p != old);
        new.is_some()
    });
    let Some(new) = new.filter(|_| started) else {
        server.fail("no new master wrote the pid file after USR2");
    };
    assert_eq!(
        read_pid(&oldbin(pidfile)),
        Some(old),
        "the old master's pid file is not .oldbin"
    );
    let mut theirs = Vec::new();
    if !poll(WAIT, || {
        theirs = children_of(new);
        theirs.len() == workers
    }) {
        server.fail(&format!("new master {new} has workers {theirs:?}"));
    }
    (new, theirs)
}

/// Polls the log (the harness's `wait_for_line` stops at the old master's exit).
fn wait_for_log(server: &Server, pattern: &str) {
    if !poll(WAIT, || server.count_lines(pattern) > 0) {
        server.fail(&format!("no log line containing {pattern:?}"));
    }
}

#[test]
fn usr2_winch_and_term_move_the_sockets_to_the_new_binary_without_failing_a_request() {
    let dir = TempDir::new("upgrade");
    // A binary of its own, so the test can replace it on disk the way an installer does.
    let exe = dir.path().join("minigun");
    std::fs::copy(minigun_bin(), &exe).expect("copy the binary");
    let exe_arg = exe.to_str().expect("utf-8 temp path");
    let pidfile = dir.path().join("minigun.pid");
    let pid_arg = pidfile.to_str().expect("utf-8 temp path");
    let server = Server::build(&[
        "--chdir",
        "tests/apps",
        "-w",
        "2",
        "--pid",
        pid_arg,
        "slow:app",
    ])
    .program(&[exe_arg])
    .start();
    let old = server.master_pid();
    let old_workers = server.wait_for_workers(2, WAIT);
    let clients = ClientLoop::start(server.port(), 2);
    clients.wait_for_more(20, &server);

    // Install "the new version": written beside the old file and renamed over it.
    let staged = dir.path().join("minigun.new");
    std::fs::copy(minigun_bin(), &staged).expect("stage the new binary");
    std::fs::rename(&staged, &exe).expect("replace the binary");
    let (new, new_workers) = upgrade(&server, &pidfile, 2);
    let exe_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    assert_eq!(
        exe_of(new),
        exe,
        "the new master runs the file now at the path"
    );
    assert!(
        exe_of(old).to_string_lossy().ends_with(" (deleted)"),
        "the old master should still run the replaced file: {:?}",
        exe_of(old)
    );
    server.wait_for_line(
        "Taking over 1 listening socket(s) from the old master",
        WAIT,
    );

    // Both generations serve; a second upgrade is refused while this one runs, by either.
    assert!(
        poll(WAIT, || new_workers.iter().any(|&w| clients.answered_by(w))),
        "no request reached the new workers {new_workers:?}"
    );
    server.signal(libc::SIGUSR2);
    server.wait_for_line("USR2 signal ignored. Child exists", WAIT);
    send_signal(new, libc::SIGUSR2);
    server.wait_for_line("USR2 signal ignored. Parent exists", WAIT);

    // WINCH: the old workers finish and are not replaced.
    server.signal(libc::SIGWINCH);
    server.wait_for_line("Graceful stop of workers", WAIT);
    assert!(
        poll(WAIT, || old_workers.iter().all(|&w| !is_alive(w))),
        "old workers {old_workers:?} outlived WINCH"
    );
    clients.wait_for_more(30, &server);
    assert_eq!(
        children_of(old),
        vec![new],
        "the old master started workers again after WINCH"
    );

    // TERM: the old master leaves, without closing the sockets the new one accepts from.
    server.signal(libc::SIGTERM);
    if !poll(WAIT, || server.try_exit().is_some()) {
        server.fail("the old master did not exit on TERM");
    }
    assert_eq!(server.try_exit().and_then(|s| s.code()), Some(0));
    wait_for_log(&server, "Master has been promoted.");
    clients.wait_for_more(30, &server);
    let report = clients.finish();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures
    );
    assert_eq!(
        read_pid(&pidfile),
        Some(new),
        "the pid file names the new master"
    );
    assert!(
        !oldbin(&pidfile).exists(),
        "the old master left its .oldbin"
    );
    assert_eq!(
        children_of(new),
        new_workers,
        "the new workers kept serving"
    );
    let port = server.port();
    assert!(new_workers.contains(&pid_in(&http_get(port, "/").text())));

    // The promoted master owns the sockets: its stop shuts them and removes its pid file.
    send_signal(new, libc::SIGTERM);
    assert!(poll(WAIT, || !is_alive(new)), "the new master ignored TERM");
    assert!(!pidfile.exists(), "the new master left its pid file");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port still accepts after the last master stopped"
    );
}

#[test]
fn hup_on_the_old_master_and_term_on_the_new_one_roll_back_without_failing_a_request() {
    let dir = TempDir::new("rollback");
    let pidfile = dir.path().join("minigun.pid");
    let pid_arg = pidfile.to_str().expect("utf-8 temp path");
    let server = Server::start(&[
        "--chdir",
        "tests/apps",
        "-w",
        "2",
        "--pid",
        pid_arg,
        "slow:app",
    ]);
    let old = server.master_pid();
    let first = server.wait_for_workers(2, WAIT);
    let clients = ClientLoop::start(server.port(), 2);
    clients.wait_for_more(20, &server);

    let (new, new_workers) = upgrade(&server, &pidfile, 2);
    server.signal(libc::SIGWINCH);
    assert!(
        poll(WAIT, || first.iter().all(|&w| !is_alive(w))),
        "old workers {first:?} outlived WINCH"
    );
    clients.wait_for_more(20, &server);

    // Roll back: HUP brings the old master's workers back, TERM stops the new master, which
    // must leave the shared sockets open for the old one.
    server.signal(libc::SIGHUP);
    let mut back = Vec::new();
    if !poll(WAIT, || {
        back = children_of(old);
        back.len() == 3
    }) {
        server.fail(&format!(
            "HUP after WINCH: the old master has children {back:?}"
        ));
    }
    let back: Vec<u32> = back.into_iter().filter(|&p| p != new).collect();
    assert!(
        poll(WAIT, || back.iter().any(|&w| clients.answered_by(w))),
        "no request reached the old master's new workers {back:?}"
    );
    send_signal(new, libc::SIGTERM);
    server.wait_for_line(&format!("New master (pid:{new}) exited"), WAIT);
    server.wait_for_line(
        &format!("Leaving the listening sockets open for the other master (pid: {old})"),
        Duration::ZERO,
    );
    assert!(
        poll(WAIT, || new_workers.iter().all(|&w| !is_alive(w))),
        "the new master's workers {new_workers:?} outlived it"
    );
    clients.wait_for_more(30, &server);
    let report = clients.finish();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during the rollback: {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures
    );
    assert_eq!(
        read_pid(&pidfile),
        Some(old),
        "the pid file is the old master's again"
    );
    assert!(!oldbin(&pidfile).exists());
    assert!(back.contains(&pid_in(&http_get(server.port(), "/").text())));
    assert!(server.try_exit().is_none(), "the old master exited");
}

#[test]
fn a_new_master_that_fails_to_start_or_dies_leaves_the_old_one_serving() {
    let dir = TempDir::new("upgrade-fails");
    let pidfile = dir.path().join("minigun.pid");
    let conf = dir.path().join("minigun.conf.py");
    std::fs::write(&conf, "workers = 2\n").expect("write config");
    let (pid_arg, conf_arg) = (
        pidfile.to_str().expect("utf-8 temp path"),
        conf.to_str().expect("utf-8 temp path"),
    );
    let server = Server::start(&[
        "-c",
        conf_arg,
        "--chdir",
        "tests/apps",
        "--pid",
        pid_arg,
        "slow:app",
    ]);
    let old = server.master_pid();
    let workers = server.wait_for_workers(2, WAIT);

    // The new master reads the configuration afresh, and this one is broken: it exits 2.
    std::fs::write(&conf, "workers = 'many'\n").expect("break config");
    server.signal(libc::SIGUSR2);
    server.wait_for_line("exited with code 2; this master goes on serving", WAIT);
    assert_eq!(
        read_pid(&pidfile),
        Some(old),
        "the pid file was not given back"
    );
    assert!(!oldbin(&pidfile).exists());
    assert_eq!(children_of(old), workers, "the old workers were touched");
    assert_eq!(http_get(server.port(), "/").status, 200);

    // A new master that dies after WINCH: the old master serves again on its own.
    std::fs::write(&conf, "workers = 2\n").expect("fix config");
    let (new, orphans) = upgrade(&server, &pidfile, 2);
    server.signal(libc::SIGWINCH);
    assert!(
        poll(WAIT, || workers.iter().all(|&w| !is_alive(w))),
        "old workers {workers:?} outlived WINCH"
    );
    send_signal(new, libc::SIGKILL);
    server.wait_for_line(&format!("New master (pid:{new}) was sent signal 9"), WAIT);
    server.wait_for_line("Starting this master's workers again", WAIT);
    let again = server.wait_for_workers(2, WAIT);
    // Its workers serve on until they notice their master is gone (at most a second).
    assert!(
        poll(WAIT, || orphans.iter().all(|&w| !is_alive(w))),
        "the dead master's workers {orphans:?} stayed"
    );
    assert!(again.iter().all(|w| !workers.contains(w)));
    assert!(again.contains(&pid_in(&http_get(server.port(), "/").text())));
    assert_eq!(read_pid(&pidfile), Some(old));
    assert!(!oldbin(&pidfile).exists());

    // And the next USR2 is accepted again.
    let (newer, _) = upgrade(&server, &pidfile, 2);
    assert_ne!(newer, new);
}

/// `GET /` over a unix socket, with `Connection: close`; the answer's body.
fn unix_get(path: &Path) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let response = common::parse_response(&raw)?;
    if response.status != 200 {
        return Err(format!("status {}", response.status));
    }
    Ok(response.text())
}

#[test]
fn a_socket_systemd_passed_is_handed_on_and_never_closed_by_either_master() {
    let dir = TempDir::new("upgrade-systemd");
    let sock = dir.path().join("minigun.sock");
    // The test plays systemd: it binds the socket unit's socket and passes it as descriptor 3
    // with LISTEN_FDS=1 and (set by `sh` just before it execs minigun) LISTEN_PID.
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind the unit's socket");
    let pidfile = dir.path().join("minigun.pid");
    let pid_arg = pidfile.to_str().expect("utf-8 temp path");
    let server = Server::build(&[
        "--chdir",
        "tests/apps",
        "-w",
        "1",
        "--pid",
        pid_arg,
        "slow:app",
    ])
    .program(&[
        "sh",
        "-c",
        r#"LISTEN_PID=$$; export LISTEN_PID; exec "$@""#,
        "sh",
        minigun_bin(),
    ])
    .pass_fd3(std::os::fd::AsRawFd::as_raw_fd(&listener))
    .env("LISTEN_FDS", "1")
    .no_default_bind()
    .start();
    server.wait_for_line("Using socket from systemd", WAIT);
    let old = server.master_pid();
    let first = server.wait_for_workers(1, WAIT);
    assert!(unix_get(&sock).is_ok_and(|t| first.contains(&pid_in(&t))));

    let (new, new_workers) = upgrade(&server, &pidfile, 1);
    server.signal(libc::SIGWINCH);
    assert!(
        poll(WAIT, || !is_alive(first[0])),
        "the old worker outlived WINCH"
    );
    assert_eq!(children_of(old), vec![new]);
    server.signal(libc::SIGTERM);
    if !poll(WAIT, || server.try_exit().is_some()) {
        server.fail("the old master did not exit on TERM");
    }
    wait_for_log(&server, "Master has been promoted.");
    let answer = unix_get(&sock).unwrap_or_else(|e| server.fail(&e));
    assert!(new_workers.contains(&pid_in(&answer)), "{answer:?}");

    // Even promoted, the new master leaves systemd's socket open and its file in place: a
    // client that connects after it stopped waits for the next minigun instead of being
    // refused.
    send_signal(new, libc::SIGTERM);
    assert!(poll(WAIT, || !is_alive(new)), "the new master ignored TERM");
    assert!(
        sock.exists(),
        "the new master removed systemd's socket file"
    );
    let waiting = std::os::unix::net::UnixStream::connect(&sock);
    assert!(
        waiting.is_ok(),
        "systemd's socket refuses connections after the upgrade: {waiting:?}"
    );
    drop(listener);
}
