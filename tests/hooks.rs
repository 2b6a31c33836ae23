//! Config files and server hooks as a gunicorn deployment uses them, and every worker kill
//! explained: the real binary, real config files in temp directories, tests/apps/hooked.py.
//!
//! - what a config file does to its process (`os.environ`, `sys.path`, imports) holds where
//!   the app runs, whether the file runs in the workers or, with hooks that need it, in the
//!   master; the master starts no interpreter when nothing needs one;
//! - the file's own output goes to the log, never into its settings;
//! - `./minigun.conf.py` and `./gunicorn.conf.py` are read when no `-c` is given;
//! - `--print-config` and `--check-config`;
//! - every hook is called at gunicorn's moment with gunicorn's arguments; a hook that raises is
//!   logged and the server goes on (but `on_starting` stops it, as in gunicorn); a hook with the
//!   wrong number of arguments is refused at start; `pre_exec` runs before USR2 starts a new
//!   master;
//! - a worker killed for `--timeout` leaves its requests, their access-log lines and the
//!   traceback of the stuck code in the logs, and `worker_abort` runs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{http_get, poll, repo_root, Server, TempDir, WAIT};

/// Writes `body` as `name` in `dir` and returns its path as a string.
fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write file");
    path.to_string_lossy().into_owned()
}

/// True when the master said (at debug level) that it started an interpreter of its own.
fn master_has_python(server: &Server) -> bool {
    server.count_lines("Starting Python in the master") > 0
}

/// Config lines that touch the process: an environment variable, a sys.path entry and an
/// import through it.
fn effects() -> String {
    let apps = repo_root().join("tests/apps");
    format!(
        "import os, sys\n\
         os.environ['FROM_CONFIG'] = 'set by the config file'\n\
         sys.path.insert(0, {apps:?})\n\
         import config_marker\n"
    )
}

#[test]
fn a_config_files_effects_reach_the_app_and_the_master_starts_python_only_when_needed() {
    let dir = TempDir::new("hooks-effects");
    for (name, extra, master_python) in [
        ("no master hook", "", false),
        (
            "a master hook",
            "def when_ready(server):\n    server.log.info('ready')\n",
            true,
        ),
    ] {
        let conf = write(dir.path(), "conf.py", &format!("{}{extra}", effects()));
        let server = Server::start(&[
            "-c",
            &conf,
            "--log-level",
            "debug",
            "--chdir",
            "tests/apps",
            "hooked:app",
        ]);
        let port = server.port();
        assert_eq!(
            http_get(port, "/env?name=FROM_CONFIG").text(),
            "set by the config file",
            "{name}"
        );
        assert_eq!(
            http_get(port, "/module").text(),
            "imported by the config file",
            "{name}"
        );
        let master = server.master_pid();
        println!(
            "{name}: master RSS {} KiB, worker RSS {} KiB",
            common::rss_kib(master),
            common::rss_kib(server.worker_pids()[0]),
        );
        assert_eq!(master_has_python(&server), master_python, "{name}");
    }
}

#[test]
fn what_a_config_file_prints_goes_to_the_log_not_into_its_settings() {
    let dir = TempDir::new("hooks-print");
    let conf = write(
        dir.path(),
        "conf.py",
        "print('workers = 9')\nprint('\\0bind\\0')\nimport sys\nsys.stdout.write('x\\0')\nworkers = 3\n",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    server.wait_for_workers(3, WAIT);
    assert!(
        server.count_lines("workers = 9") >= 1,
        "the print is not in the log"
    );
    assert_eq!(server.count_lines("Unknown setting"), 0);
}

#[test]
fn minigun_conf_py_then_gunicorn_conf_py_are_read_by_default() {
    let dir = TempDir::new("hooks-default");
    let examples = repo_root().join("examples");
    let examples = examples.to_str().expect("utf-8");
    write(dir.path(), "gunicorn.conf.py", "workers = 2\n");
    let server = Server::build(&["--chdir", examples, "hello:app"])
        .current_dir(dir.path())
        .start();
    server.wait_for_workers(2, WAIT);
    drop(server);
    write(dir.path(), "minigun.conf.py", "workers = 3\n");
    let server = Server::build(&["--chdir", examples, "hello:app"])
        .current_dir(dir.path())
        .start();
    server.wait_for_workers(3, WAIT);
}

#[test]
fn print_config_and_check_config_answer_and_exit() {
    let dir = TempDir::new("hooks-check");
    let conf = write(dir.path(), "conf.py", "workers = 3\ntimeout = 12\n");
    let server = Server::build(&["-c", &conf, "--workers", "4", "--print-config", "hello:app"])
        .no_default_bind()
        .spawn();
    assert!(server.wait_exit(WAIT).success());
    let out = server.stdout_lines().join("\n");
    assert!(
        out.lines()
            .any(|l| l.starts_with("workers ") && l.ends_with("= 4")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("timeout ") && l.ends_with("= 12")),
        "{out}"
    );

    let good = Server::build(&["--check-config", "--chdir", "tests/apps", "hooked:app"])
        .no_default_bind()
        .spawn();
    assert_eq!(good.wait_exit(WAIT).code(), Some(0));
    let bad = Server::build(&[
        "--check-config",
        "--chdir",
        "tests/apps",
        "import_error:app",
    ])
    .no_default_bind()
    .spawn();
    assert_eq!(bad.wait_exit(WAIT).code(), Some(1));
    assert!(
        bad.count_lines("Traceback") >= 1,
        "{:?}",
        bad.stderr_lines()
    );
}

/// Every hook, each logging its name and the attributes real hooks use.
const ALL_HOOKS: &str = r#"
def on_starting(server):
    server.log.info("HOOK on_starting pid=%s", server.pid)
def when_ready(server):
    server.log.info("HOOK when_ready workers=%s", server.cfg.workers)
def nworkers_changed(server, new, old):
    server.log.info("HOOK nworkers_changed %s %s", new, old)
def pre_fork(server, worker):
    server.log.info("HOOK pre_fork age=%s", worker.age)
def post_fork(server, worker):
    server.log.info("HOOK post_fork pid=%s age=%s", worker.pid, worker.age)
def post_worker_init(worker):
    worker.log.info("HOOK post_worker_init pid=%s", worker.pid)
def pre_request(worker, req):
    worker.log.info("HOOK pre_request %s %s %s", req.method, req.path, req.query)
def post_request(worker, req, environ, resp):
    worker.log.info("HOOK post_request %s %s %s", req.path, resp.status_code, environ["PATH_INFO"])
def on_reload(server):
    server.log.info("HOOK on_reload")
def worker_int(worker):
    worker.log.info("HOOK worker_int pid=%s", worker.pid)
def worker_exit(server, worker):
    server.log.info("HOOK worker_exit pid=%s", worker.pid)
def child_exit(server, worker):
    server.log.info("HOOK child_exit pid=%s", worker.pid)
def on_exit(server):
    server.log.info("HOOK on_exit")
"#;

#[test]
fn every_hook_is_called_at_its_moment_with_gunicorns_arguments() {
    let dir = TempDir::new("hooks-all");
    let conf = write(dir.path(), "conf.py", ALL_HOOKS);
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    let master = server.master_pid();
    let first = server.wait_for_workers(1, WAIT)[0];
    server.wait_for_line(&format!("HOOK on_starting pid={master}"), WAIT);
    server.wait_for_line("HOOK when_ready workers=1", WAIT);
    server.wait_for_line("HOOK nworkers_changed 1 None", WAIT);
    server.wait_for_line("HOOK pre_fork age=1", WAIT);
    server.wait_for_line(&format!("HOOK post_fork pid={first} age=1"), WAIT);
    server.wait_for_line(&format!("HOOK post_worker_init pid={first}"), WAIT);

    assert_eq!(http_get(server.port(), "/page?x=1").text(), "ok");
    server.wait_for_line("HOOK pre_request GET /page x=1", WAIT);
    server.wait_for_line("HOOK post_request /page 200 /page", WAIT);

    server.signal(libc::SIGTTIN);
    server.wait_for_line("HOOK nworkers_changed 2 1", WAIT);
    server.wait_for_workers(2, WAIT);

    // HUP re-reads the settings, as gunicorn's does: the worker count is the configured one
    // again (1), and the hook hears of the change.
    server.signal(libc::SIGHUP);
    server.wait_for_line("HOOK on_reload", WAIT);
    server.wait_for_line("HOOK nworkers_changed 1 2", WAIT);
    server.wait_for_line(&format!("HOOK worker_exit pid={first}"), WAIT);
    server.wait_for_line(&format!("HOOK child_exit pid={first}"), WAIT);

    let worker = server.wait_for_workers(1, WAIT)[0];
    common::send_signal(worker, libc::SIGINT);
    server.wait_for_line(&format!("HOOK worker_int pid={worker}"), WAIT);

    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(WAIT).success());
    assert_eq!(server.count_lines("HOOK on_exit"), 1);
    assert_eq!(
        server.count_lines("Exception in"),
        0,
        "{:?}",
        server.stderr_lines()
    );
}

#[test]
fn worker_hooks_alone_run_in_the_worker_from_the_config_file() {
    let dir = TempDir::new("hooks-worker");
    let conf = write(
        dir.path(),
        "conf.py",
        "def post_fork(server, worker):\n    server.log.info('HOOK post_fork %s', worker.pid)\n\
         def post_request(worker, req, environ, resp):\n    worker.log.info('HOOK post_request %s', resp.status)\n",
    );
    let server = Server::start(&[
        "-c",
        &conf,
        "--log-level",
        "debug",
        "--chdir",
        "tests/apps",
        "hooked:app",
    ]);
    let worker = server.wait_for_workers(1, WAIT)[0];
    server.wait_for_line(&format!("HOOK post_fork {worker}"), WAIT);
    assert!(!master_has_python(&server));
    http_get(server.port(), "/");
    server.wait_for_line("HOOK post_request 200 OK", WAIT);
}

#[test]
fn a_hook_that_raises_is_logged_and_the_server_goes_on_except_on_starting() {
    let dir = TempDir::new("hooks-raise");
    let conf = write(
        dir.path(),
        "conf.py",
        "def pre_request(worker, req):\n    raise RuntimeError('pre_request failed on purpose')\n",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    let worker = server.wait_for_workers(1, WAIT)[0];
    for _ in 0..2 {
        assert_eq!(http_get(server.port(), "/").status, 200);
    }
    server.wait_for_lines("pre_request failed on purpose", 2, WAIT);
    assert_eq!(server.worker_pids(), vec![worker]);

    let conf = write(
        dir.path(),
        "starting.py",
        "def on_starting(server):\n    raise RuntimeError('not today')\n",
    );
    let stopped = Server::build(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]).spawn();
    assert_eq!(stopped.wait_exit(WAIT).code(), Some(1));
    assert!(stopped.count_lines("not today") >= 1);
}

#[test]
fn a_hook_with_the_wrong_arguments_is_refused_with_one_line() {
    let dir = TempDir::new("hooks-arity");
    let conf = write(dir.path(), "conf.py", "def post_fork(worker):\n    pass\n");
    let server = Server::build(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]).spawn();
    assert_eq!(server.wait_exit(WAIT).code(), Some(2));
    let lines: Vec<String> = server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("minigun: error"))
        .collect();
    assert_eq!(lines.len(), 1, "{:?}", server.stderr_lines());
    assert!(lines[0].contains("post_fork"), "{lines:?}");
}

#[test]
fn a_worker_killed_for_timeout_is_explained_in_the_logs() {
    let dir = TempDir::new("hooks-timeout");
    const ABORT: &str =
        "def worker_abort(worker):\n    worker.log.info('HOOK worker_abort %s', worker.pid)\n";
    const EXIT: &str = "def worker_exit(server, worker):\n    \
                        worker.log.info('HOOK worker_exit %s', worker.pid)\n";
    for (abort_hook, exit_hook) in [(false, false), (true, true), (false, true)] {
        let conf = write(
            dir.path(),
            "conf.py",
            &format!(
                "workers = 1\n{}{}",
                if abort_hook { ABORT } else { "" },
                if exit_hook { EXIT } else { "" }
            ),
        );
        let server = Server::start(&[
            "-c",
            &conf,
            "--timeout",
            "2",
            "--access-logfile",
            "-",
            "--chdir",
            "tests/apps",
            "hooked:app",
        ]);
        let port = server.port();
        let worker = server.wait_for_workers(1, WAIT)[0];
        // The stuck request never gets an answer; the connection closes when the worker dies.
        let _ = common::try_http_get(port, "/stuck?why=test");
        server.wait_for_line(&format!("WORKER TIMEOUT (pid:{worker})"), WAIT);
        server.wait_for_line(
            &format!("Worker {worker} was serving \"GET /stuck?why=test HTTP/1.1\" from 127.0.0.1"),
            WAIT,
        );
        server.wait_for_line("in stuck_forever", WAIT);
        server.wait_for_stdout_line("\"GET /stuck?why=test HTTP/1.1\" 500", WAIT);
        if abort_hook {
            server.wait_for_line(&format!("HOOK worker_abort {worker}"), WAIT);
        }
        if exit_hook {
            // gunicorn runs worker_exit on every way out of a worker, this one included.
            server.wait_for_line(&format!("HOOK worker_exit {worker}"), WAIT);
        }
        // Replaced, and serving.
        assert!(poll(WAIT, || {
            let now = server.worker_pids();
            now.len() == 1 && now[0] != worker
        }));
        assert!(poll(Duration::from_secs(10), || common::try_http_get(
            port, "/"
        )
        .is_ok_and(|r| r.status == 200)));
    }
}

#[test]
fn a_config_file_that_starts_a_thread_does_not_hang_the_start() {
    let dir = TempDir::new("hooks-thread");
    let conf = write(
        dir.path(),
        "conf.py",
        "import threading, time
threading.Thread(target=lambda: time.sleep(3600)).start()
workers = 2
",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    server.wait_for_workers(2, WAIT);
    assert_eq!(http_get(server.port(), "/").text(), "ok");
}

#[test]
fn a_worker_that_times_out_while_booting_is_told_so_and_worker_abort_is_safe() {
    let dir = TempDir::new("hooks-boot-timeout");
    let conf = write(
        dir.path(),
        "conf.py",
        "def worker_abort(worker):\n    worker.log.info('HOOK worker_abort %s', worker.pid)\n",
    );
    let server = Server::build(&[
        "-c",
        &conf,
        "-t",
        "1",
        "--chdir",
        "tests/apps",
        "hooked:app",
    ])
    .env("SLOW_IMPORT", "5")
    .start();
    server.wait_for_line("timed out while booting", WAIT);
    server.wait_for_line("aborting (timeout)", WAIT);
    // SIGABRT is handled from the worker's first moment: no default action, no core dump.
    assert_eq!(
        server.count_lines("was sent signal 6"),
        0,
        "{:?}",
        server.stderr_lines()
    );
}

#[test]
fn hooks_log_with_mappings_and_odd_text_without_failing() {
    let dir = TempDir::new("hooks-log");
    let conf = write(
        dir.path(),
        "conf.py",
        "def post_fork(server, worker):\n    server.log.info('HOOK mapped %(x)s', {'x': 42})\n    server.log.info('HOOK odd %s', '\\udcff')\n",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    server.wait_for_line("HOOK mapped 42", WAIT);
    server.wait_for_line("HOOK odd", WAIT);
    assert_eq!(http_get(server.port(), "/").status, 200);
    assert_eq!(
        server.count_lines("Exception in"),
        0,
        "{:?}",
        server.stderr_lines()
    );
}

#[test]
fn a_master_with_python_still_keeps_its_launch_variables_from_the_app() {
    // The master's interpreter starts after minigun has set up its environment: --reload's
    // "write no bytecode", and the removal of the variables an upgrade or systemd passes.
    let dir = TempDir::new("hooks-env");
    let conf = write(
        dir.path(),
        "conf.py",
        "def on_starting(server):\n    pass\n",
    );
    let server = Server::build(&[
        "-c",
        &conf,
        "--reload",
        "--chdir",
        "tests/apps",
        "hooked:app",
    ])
    .env_remove("PYTHONDONTWRITEBYTECODE")
    .env("LISTEN_FDS", "1")
    .env("MINIGUN_FD", "3")
    .start();
    assert_eq!(http_get(server.port(), "/bytecode").text(), "True");
    assert_eq!(http_get(server.port(), "/listen-env").text(), "none");
}

#[test]
fn pre_exec_runs_before_usr2_starts_the_new_master() {
    let dir = TempDir::new("hooks-pre-exec");
    let conf = write(
        dir.path(),
        "conf.py",
        "def pre_exec(server):\n    server.log.info('HOOK pre_exec %s', server.pid)\n",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    server.wait_for_workers(1, WAIT);
    server.signal(libc::SIGUSR2);
    let hook = server.wait_for_line("HOOK pre_exec", WAIT);
    assert!(hook.contains(&server.master_pid().to_string()), "{hook}");
    server.wait_for_line("Upgrading: new master", WAIT);
    let log = server.stderr_lines();
    let at = |pattern: &str| log.iter().position(|l| l.contains(pattern));
    assert!(
        at("HOOK pre_exec") < at("Upgrading: new master"),
        "{log:#?}"
    );
    // A second USR2 while the new master runs is refused, and runs no pre_exec.
    server.signal(libc::SIGUSR2);
    server.wait_for_line("Child exists", WAIT);
    assert_eq!(server.count_lines("HOOK pre_exec"), 1);
}

#[test]
fn post_request_with_two_or_three_arguments_is_called_as_gunicorn_calls_it() {
    // gunicorn accepts post_request(worker, req) and post_request(worker, req, environ) as
    // well as the four-argument form, and calls each with what it takes.
    let dir = TempDir::new("hooks-post-request-arity");
    for (args, line) in [
        ("worker, req", "HOOK post_request/2 /two"),
        ("worker, req, environ", "HOOK post_request/3 /three GET"),
    ] {
        let log = if args.ends_with("environ") {
            "worker.log.info('HOOK post_request/3 %s %s', req.path, environ['REQUEST_METHOD'])"
        } else {
            "worker.log.info('HOOK post_request/2 %s', req.path)"
        };
        let conf = write(
            dir.path(),
            "conf.py",
            &format!("def post_request({args}):\n    {log}\n"),
        );
        let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
        let path = if args.ends_with("environ") {
            "/three"
        } else {
            "/two"
        };
        assert_eq!(http_get(server.port(), path).status, 200);
        server.wait_for_line(line, WAIT);
    }
}

#[test]
fn hooks_run_in_a_worker_see_the_masters_pid_as_server_pid() {
    // gunicorn's `server` is the arbiter: server.pid is the master's, in every hook.
    let dir = TempDir::new("hooks-server-pid");
    let conf = write(
        dir.path(),
        "conf.py",
        "def post_fork(server, worker):\n    \
             server.log.info('HOOK server.pid=%s worker.ppid=%s', server.pid, worker.ppid)\n",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    let master = server.master_pid();
    server.wait_for_line(
        &format!("HOOK server.pid={master} worker.ppid={master}"),
        WAIT,
    );
}

#[test]
fn sys_exit_in_a_master_hook_ends_the_server_with_pythons_exit_status() {
    // As in gunicorn, where SystemExit leaves the arbiter: sys.exit() is success, sys.exit(n)
    // is status n (modulo 256, as the shell sees it).
    let dir = TempDir::new("hooks-sys-exit");
    for (call, status) in [("sys.exit()", 0), ("sys.exit(3)", 3), ("sys.exit(-1)", 255)] {
        let conf = write(
            dir.path(),
            "conf.py",
            &format!("import sys\ndef when_ready(server):\n    {call}\n"),
        );
        let server = Server::build(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]).spawn();
        assert_eq!(
            server.wait_exit(WAIT).code(),
            Some(status),
            "{call}: {:?}",
            server.stderr_lines()
        );
    }
}

#[test]
fn a_pre_exec_hook_that_fails_cancels_the_upgrade_and_the_old_master_serves_on() {
    // pre_exec is the deploy's last word before the new master starts: one that raises, or
    // calls sys.exit, means "not this binary" — the upgrade is off, and the master that
    // serves now must go on serving, not stop with its clients.
    let dir = TempDir::new("hooks-pre-exec-fails");
    for body in [
        "raise RuntimeError('not this one')",
        "import sys; sys.exit(1)",
    ] {
        let conf = write(
            dir.path(),
            "conf.py",
            &format!("def pre_exec(server):\n    {body}\n"),
        );
        let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
        let worker = server.wait_for_workers(1, WAIT)[0];
        server.signal(libc::SIGUSR2);
        server.wait_for_line("Upgrade cancelled", WAIT);
        assert_eq!(http_get(server.port(), "/").status, 200, "{body}");
        assert!(server.try_exit().is_none(), "{body}: the master stopped");
        assert_eq!(server.count_lines("Upgrading: new master"), 0, "{body}");
        assert_eq!(server.worker_pids(), vec![worker], "{body}");
    }
}

#[test]
fn worker_exit_runs_when_a_worker_quits_at_once() {
    // QUIT is the quick stop; gunicorn's worker still runs worker_int, then worker_exit.
    let dir = TempDir::new("hooks-quit");
    let conf = write(
        dir.path(),
        "conf.py",
        "def worker_exit(server, worker):\n    worker.log.info('HOOK worker_exit %s', worker.pid)\n",
    );
    let server = Server::start(&["-c", &conf, "--chdir", "tests/apps", "hooked:app"]);
    let worker = server.wait_for_workers(1, WAIT)[0];
    common::send_signal(worker, libc::SIGQUIT);
    server.wait_for_line(&format!("HOOK worker_exit {worker}"), WAIT);
}

#[test]
fn server_cfg_holds_typed_values_as_gunicorns_config_does() {
    // Hooks test `if server.cfg.accesslog:` or `server.cfg.umask & 0o077`: None, booleans,
    // numbers and lists must be Python's, not the text --print-config shows.
    let dir = TempDir::new("hooks-cfg-types");
    let conf = write(
        dir.path(),
        "conf.py",
        "import os\ndef post_fork(server, worker):\n    c = server.cfg\n    \
             server.log.info('HOOK cfg %r %r %r %r %r %r %r %r', c.accesslog, c.reload, \
             c.max_worker_rss, c.umask, c.pythonpath, c.pidfile, c.user == os.geteuid(), \
             c.proxy_allow_ips)\n",
    );
    let server = Server::start(&[
        "-c",
        &conf,
        "--umask",
        "022",
        "--chdir",
        "tests/apps",
        "hooked:app",
    ]);
    server.wait_for_line(
        "HOOK cfg None False 0 18 None None True ['127.0.0.1', '::1']",
        WAIT,
    );
}
