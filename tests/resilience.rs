//! The server adapting without a restart: SIGHUP re-reads the configuration (as gunicorn does),
//! and a worker out of file descriptors backs off and recovers.

mod common;

use std::time::Duration;

use common::{Server, WAIT};

#[test]
fn hup_rereads_the_config_file() {
    let dir = std::env::temp_dir().join(format!("minigun-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("minigun.conf.py");
    std::fs::write(&conf, "workers = 1\n").expect("write config");
    let conf_arg = conf.to_string_lossy().into_owned();
    let server = Server::start(&["-c", &conf_arg, "--chdir", "examples", "hello:app"]);
    let first = server.wait_for_workers(1, WAIT);

    std::fs::write(&conf, "workers = 3\n").expect("rewrite config");
    server.signal(libc::SIGHUP);
    let pids = server.wait_for_workers(3, WAIT);
    assert!(
        pids.iter().all(|p| !first.contains(p)),
        "the old worker should be retired: {first:?} -> {pids:?}"
    );
    assert_eq!(common::http_get(server.port(), "/").status, 200);
    // Still three once the reload has settled: the new count is the wanted count.
    assert!(common::poll(Duration::from_secs(3), || server
        .worker_pids()
        .len()
        == 3));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads a process's user+system CPU time in clock ticks from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// Out of file descriptors, accept(2) fails while connections wait in the kernel's queue. The
/// worker must back off instead of spinning on the listener, and serve again once descriptors
/// free up.
#[test]
fn running_out_of_descriptors_backs_off_and_recovers() {
    let server = Server::start(&["--chdir", "examples", "hello:app"]);
    let worker = server.wait_for_workers(1, WAIT)[0];
    assert_eq!(common::http_get(server.port(), "/").status, 200);
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &worker.to_string(), "--nofile=40:40"])
        .status()
        .expect("prlimit runs");
    assert!(limited.success(), "prlimit failed");
    // Hold enough connections to exhaust the worker's descriptors.
    let held: Vec<std::net::TcpStream> = (0..60)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", server.port())).ok())
        .collect();
    server.wait_for_line("pausing accepts", WAIT);
    let before = cpu_ticks(worker);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(worker) - before;
    assert!(
        spent < 30,
        "the worker spun on accept: {spent} ticks in one second"
    );
    drop(held);
    assert!(
        common::poll(WAIT, || common::try_http_get(server.port(), "/")
            .is_ok_and(|r| r.status == 200)),
        "the worker did not recover"
    );
}

/// A HUP whose new code cannot be imported: one new worker tries (so the traceback is logged
/// once, not once per worker), fails, and every old worker serves on; none is retired for it.
#[test]
fn hup_with_broken_code_keeps_every_old_worker_and_logs_the_traceback_once() {
    let dir = common::TempDir::new("broken-hup");
    let app = dir.path().join("served.py");
    std::fs::write(
        &app,
        "import os\nos.write(2, b'served: imported\\n')\n\n\
         def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n",
    )
    .expect("write the app");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path");
    let server = Server::start(&["--chdir", dir_arg, "-w", "3", "served:app"]);
    let old = server.wait_for_workers(3, WAIT);
    // All three have imported the good code before it breaks.
    server.wait_for_lines("served: imported", 3, WAIT);

    std::fs::write(&app, "def app(:\n").expect("break the app");
    server.signal(libc::SIGHUP);
    server.wait_for_line(
        "New workers failed to boot; the old workers keep serving",
        WAIT,
    );
    // Past the back-off after the failure: nothing more is started or retired.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.worker_pids(), old, "the old workers were touched");
    assert_eq!(server.count_lines("Traceback (most recent call last)"), 1);
    assert_eq!(server.count_lines("Booting worker with pid:"), 4);
    for _ in 0..6 {
        assert_eq!(common::http_get(server.port(), "/").text(), "ok");
    }
}
