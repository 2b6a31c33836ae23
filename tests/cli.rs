//! The command line, config file and environment, as a gunicorn user moving to minigun meets
//! them: the same flag names, `-c config.py`, `MINIGUN_CMD_ARGS`, and clear exits on bad input.

mod common;

use common::{curl, http_get, Server, TempDir, WAIT};

/// Runs minigun with `args` (no bind added) and returns its exit code and stdout/stderr lines.
fn run_to_exit(args: &[&str]) -> (Option<i32>, Vec<String>, Vec<String>) {
    let server = Server::build(args).no_default_bind().spawn();
    let status = server.wait_exit(WAIT);
    (status.code(), server.stdout_lines(), server.stderr_lines())
}

/// The lines that carry text.
fn non_empty(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn version_prints_the_package_version() {
    let (code, stdout, stderr) = run_to_exit(&["--version"]);
    assert_eq!(code, Some(0), "stderr: {stderr:?}");
    let text = stdout.join("\n");
    assert!(
        text.contains("minigun") && text.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {text:?}"
    );
}

#[test]
fn help_lists_gunicorns_flag_names() {
    let (code, stdout, stderr) = run_to_exit(&["--help"]);
    assert_eq!(code, Some(0), "stderr: {stderr:?}");
    let text = stdout.join("\n");
    for flag in [
        "--bind",
        "--workers",
        "--threads",
        "--timeout",
        "--graceful-timeout",
        "--keep-alive",
        "--max-requests",
        "--max-requests-jitter",
        "--limit-request-line",
        "--limit-request-fields",
        "--limit-request-field_size",
        "--limit-request-body",
        "--access-logfile",
        "--access-logformat",
        "--error-logfile",
        "--log-level",
        "--config",
        "--chdir",
        "--pythonpath",
        "--env",
        "--preload",
        "--pid",
        "--version",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
    let (code, short, _) = run_to_exit(&["-h"]);
    assert_eq!(code, Some(0));
    assert_eq!(short, stdout, "-h and --help differ");
}

#[test]
fn an_unknown_flag_exits_2_with_one_line_naming_it() {
    let (code, stdout, stderr) =
        run_to_exit(&["--no-such-flag", "--chdir", "examples", "hello:app"]);
    assert_eq!(code, Some(2), "stderr: {stderr:?}");
    let lines = non_empty(&stderr);
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {stderr:#?}"
    );
    assert!(lines[0].contains("--no-such-flag"), "{lines:?}");
    assert!(stdout.is_empty(), "stdout: {stdout:?}");
}

#[test]
fn a_flag_with_non_ascii_letters_exits_2_with_one_line_naming_it() {
    for flag in ["-é", "-wé", "--é", "-\u{1F600}"] {
        let (code, _, stderr) = run_to_exit(&[flag, "--chdir", "examples", "hello:app"]);
        let lines = non_empty(&stderr);
        assert_eq!(code, Some(2), "{flag}: stderr {stderr:#?}");
        assert_eq!(lines.len(), 1, "{flag}: expected one line, got {stderr:#?}");
    }
}

#[test]
fn a_bad_value_exits_2_with_one_line_naming_the_flag_and_value() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["-w", "lots"], "-w", "lots"),
        (&["--threads", "many"], "--threads", "many"),
        (&["--timeout", "soon"], "--timeout", "soon"),
        (&["--max-requests", "1e3"], "--max-requests", "1e3"),
        (
            &["--limit-request-line", "long"],
            "--limit-request-line",
            "long",
        ),
        (&["--keep-alive", "forever"], "--keep-alive", "forever"),
        (&["--log-level", "loud"], "--log-level", "loud"),
        // Durations are kept in milliseconds: past a year they are refused, not overflowed.
        (
            &["--timeout", "18446744073709551"],
            "--timeout",
            "18446744073709551",
        ),
        (
            &["--graceful-timeout", "99999999999"],
            "--graceful-timeout",
            "99999999999",
        ),
        (&["--keep-alive", "31536001"], "--keep-alive", "31536001"),
        // A reload runs two generations side by side; the arbiter has room for so many.
        (&["-w", "100000"], "-w", "100000"),
        (&["-b", "fd://-1"], "--bind", "fd://-1"),
        (
            &["-b", "127.0.0.1:0", "-b", "fd://3", "-b", "fd://3"],
            "--bind",
            "fd://3",
        ),
        (
            &["--limit-request-field_size", "100000000"],
            "--limit-request-field_size",
            "100000000",
        ),
    ];
    for (flags, flag, value) in cases {
        let mut args = flags.to_vec();
        args.extend(["--chdir", "examples", "hello:app"]);
        let (code, _, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{flags:?}: stderr {stderr:?}");
        let lines = non_empty(&stderr);
        assert_eq!(
            lines.len(),
            1,
            "{flags:?}: expected one line, got {stderr:#?}"
        );
        let long = match *flag {
            "-w" => "--workers",
            other => other,
        };
        assert!(
            (lines[0].contains(flag) || lines[0].contains(long)) && lines[0].contains(value),
            "{flags:?}: the line should name {flag} and {value:?}: {}",
            lines[0]
        );
    }
}

#[test]
fn a_flag_missing_its_value_exits_2() {
    let (code, _, stderr) = run_to_exit(&["--chdir", "examples", "hello:app", "--workers"]);
    assert_eq!(code, Some(2), "stderr: {stderr:?}");
    let lines = non_empty(&stderr);
    assert_eq!(lines.len(), 1, "{stderr:#?}");
    assert!(lines[0].contains("--workers"), "{lines:?}");
}

#[test]
fn starts_with_gunicorns_log_lines() {
    let server = Server::start(&["--chdir", "examples", "-w", "2", "hello:app"]);
    let workers = server.wait_for_workers(2, WAIT);
    let master = server.master_pid();
    let starting = server.wait_for_line(
        &format!(
            "[{master}] [INFO] Starting minigun {}",
            env!("CARGO_PKG_VERSION")
        ),
        WAIT,
    );
    assert!(starting.starts_with('['), "no timestamp: {starting}");
    let listening = server.wait_for_line("Listening at: ", WAIT);
    assert!(
        listening.contains(&format!(
            "[{master}] [INFO] Listening at: http://127.0.0.1:{} ({master})",
            server.port()
        )),
        "{listening}"
    );
    for worker in workers {
        server.wait_for_line(&format!("[INFO] Booting worker with pid: {worker}"), WAIT);
    }
    assert_eq!(http_get(server.port(), "/").text(), "Hello, World!\n");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(WAIT).code(), Some(0));
    server.wait_for_line(&format!("[{master}] [INFO] Handling signal: term"), WAIT);
    server.wait_for_line(&format!("[{master}] [INFO] Shutting down: Master"), WAIT);
}

#[test]
fn config_file_sets_workers_and_bind() {
    let dir = TempDir::new("config");
    let socket = dir.path().join("minigun.sock");
    let config = dir.path().join("minigun.conf.py");
    std::fs::write(
        &config,
        format!(
            "# A gunicorn-style config: module-level names are settings.\n\
             bind = {:?}\nworkers = 3\ntimeout = 10\n",
            format!("unix:{}", socket.display())
        ),
    )
    .expect("write config");
    let config_arg = config.to_str().expect("utf-8 temp path");
    let server = Server::build(&["-c", config_arg, "--chdir", "examples", "hello:app"])
        .no_default_bind()
        .spawn();
    server.wait_for_line(&format!("Listening at: unix:{}", socket.display()), WAIT);
    server.wait_for_workers(3, WAIT);
    let out = curl(&[
        "--unix-socket",
        socket.to_str().expect("utf-8"),
        "http://localhost/",
    ]);
    assert!(out.status.success(), "curl over the unix socket: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!\n");
}

#[test]
fn flags_override_the_config_file() {
    let dir = TempDir::new("config-precedence");
    let config = dir.path().join("minigun.conf.py");
    std::fs::write(&config, "workers = 3\n").expect("write config");
    let config_arg = config.to_str().expect("utf-8 temp path");
    let server = Server::start(&[
        "--config",
        config_arg,
        "-w",
        "2",
        "--chdir",
        "examples",
        "hello:app",
    ]);
    server.wait_for_workers(2, WAIT);
}

#[test]
fn minigun_cmd_args_sits_between_config_file_and_flags() {
    let dir = TempDir::new("cmd-args");
    let config = dir.path().join("minigun.conf.py");
    std::fs::write(&config, "workers = 2\n").expect("write config");
    let config_arg = config.to_str().expect("utf-8 temp path");

    // The environment alone: it sets the workers and the bind.
    let server = Server::build(&["--chdir", "examples", "hello:app"])
        .env("MINIGUN_CMD_ARGS", "--workers 3 --bind 127.0.0.1:0")
        .no_default_bind()
        .start();
    server.wait_for_workers(3, WAIT);
    assert_eq!(http_get(server.port(), "/").status, 200);
    drop(server);

    // The environment beats the config file.
    let server = Server::build(&["-c", config_arg, "--chdir", "examples", "hello:app"])
        .env("MINIGUN_CMD_ARGS", "--workers 3")
        .start();
    server.wait_for_workers(3, WAIT);
    drop(server);

    // A flag beats the environment.
    let server = Server::build(&[
        "-c",
        config_arg,
        "-w",
        "1",
        "--chdir",
        "examples",
        "hello:app",
    ])
    .env("MINIGUN_CMD_ARGS", "--workers 3")
    .start();
    server.wait_for_workers(1, WAIT);
}

#[test]
fn a_broken_config_file_stops_with_its_name_and_a_non_zero_status() {
    let dir = TempDir::new("bad-config");
    let config = dir.path().join("broken.conf.py");
    std::fs::write(&config, "workers = (\n").expect("write config");
    let config_arg = config.to_str().expect("utf-8 temp path");
    let (code, _, stderr) = run_to_exit(&["-c", config_arg, "--chdir", "examples", "hello:app"]);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}: {stderr:?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("broken.conf.py")),
        "the error does not name the config file: {stderr:#?}"
    );
}

#[test]
fn binds_tcp_and_unix_sockets_at_once() {
    let dir = TempDir::new("binds");
    let socket = dir.path().join("s.sock");
    let unix = format!("unix:{}", socket.display());
    let server = Server::start(&[
        "-b",
        "127.0.0.1:0",
        "--bind",
        &unix,
        "--chdir",
        "examples",
        "hello:app",
    ]);
    server.wait_for_line(&format!("Listening at: {unix}"), WAIT);
    assert_eq!(http_get(server.port(), "/").text(), "Hello, World!\n");
    let out = curl(&[
        "--unix-socket",
        socket.to_str().expect("utf-8"),
        "http://localhost/",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, World!\n",
        "{out:?}"
    );
}

#[test]
fn host_and_port_flags_bind_like_bind() {
    let server = Server::build(&[
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--chdir",
        "examples",
        "hello:app",
    ])
    .no_default_bind()
    .start();
    assert_eq!(http_get(server.port(), "/").text(), "Hello, World!\n");
}

#[test]
fn env_flag_sets_variables_the_app_can_read() {
    let server = Server::start(&[
        "-e",
        "MINIGUN_TEST_GREETING=hello there",
        "--env",
        "MINIGUN_TEST_OTHER=1",
        "--chdir",
        "tests/apps",
        "echo:app",
    ]);
    let text = http_get(server.port(), "/?osenv=MINIGUN_TEST_GREETING").text();
    assert!(text.contains("\"osenv\": \"hello there\""), "{text}");
    let text = http_get(server.port(), "/?osenv=MINIGUN_TEST_OTHER").text();
    assert!(text.contains("\"osenv\": \"1\""), "{text}");
}

#[test]
fn chdir_puts_the_app_directory_first_on_sys_path() {
    let server = Server::start(&["--chdir", "tests/apps", "echo:app"]);
    let text = http_get(server.port(), "/").text();
    let apps = common::repo_root().join("tests/apps");
    let apps = std::fs::canonicalize(apps).expect("tests/apps exists");
    assert!(
        text.contains(&format!("\"sys.path\": [\"{}\"", apps.display())),
        "sys.path should start with {}: {text}",
        apps.display()
    );
}

#[test]
fn pythonpath_makes_modules_importable_without_chdir() {
    let server = Server::start(&["--pythonpath", "tests/apps", "echo:app"]);
    let response = http_get(server.port(), "/");
    assert_eq!(response.status, 200);
    assert!(response.text().contains("\"REQUEST_METHOD\": \"GET\""));
}

#[test]
fn access_log_goes_to_stdout_in_gunicorns_default_format() {
    let server = Server::start(&["--access-logfile", "-", "--chdir", "examples", "hello:app"]);
    let response = http_get(server.port(), "/hello?x=1");
    assert_eq!(response.status, 200);
    let line = server.wait_for_stdout_line("GET /hello?x=1", WAIT);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("\"GET /hello?x=1 HTTP/1.1\" 200 14 \"-\" \"minigun-tests\""),
        "{line}"
    );
    // The time stamp: [22/Nov/2026:00:17:24 +0000]
    let stamp = &line["127.0.0.1 - - [".len()..line.find(']').expect("closing bracket")];
    assert_eq!(stamp.len(), "22/Nov/2026:00:17:24 +0000".len(), "{stamp}");
}

#[test]
fn access_logformat_picks_the_fields() {
    let server = Server::start(&[
        "--access-logfile",
        "-",
        "--access-logformat",
        "%(h)s|%(r)s|%(s)s|%(b)s|%(U)s|%(q)s|%(m)s|%(a)s|%(D)s",
        "--chdir",
        "examples",
        "hello:app",
    ]);
    http_get(server.port(), "/a/b?c=d");
    let line = server.wait_for_stdout_line("/a/b", WAIT);
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(
        fields[..8],
        [
            "127.0.0.1",
            "GET /a/b?c=d HTTP/1.1",
            "200",
            "14",
            "/a/b",
            "c=d",
            "GET",
            "minigun-tests"
        ],
        "{line}"
    );
    assert!(
        fields[8].parse::<u64>().is_ok(),
        "%(D)s is microseconds: {line}"
    );
}

#[test]
fn no_access_log_unless_asked() {
    let server = Server::start(&["--chdir", "examples", "hello:app"]);
    for _ in 0..3 {
        assert_eq!(http_get(server.port(), "/").status, 200);
    }
    server.signal(libc::SIGTERM);
    server.wait_exit(WAIT);
    assert!(
        server.stdout_lines().is_empty(),
        "stdout: {:?}",
        server.stdout_lines()
    );
    assert!(!server
        .stderr_lines()
        .iter()
        .any(|l| l.contains("\"GET / HTTP/1.1\"")));
}

#[test]
fn error_logfile_receives_the_error_log() {
    let dir = TempDir::new("error-log");
    let log = dir.path().join("error.log");
    let log_arg = log.to_str().expect("utf-8 temp path");
    let server = Server::build(&[
        "--error-logfile",
        log_arg,
        "--chdir",
        "examples",
        "hello:app",
    ])
    .spawn();
    let mut text = String::new();
    let listening = common::poll(WAIT, || {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("Listening at: ") && text.contains("Booting worker with pid: ")
    });
    if !listening {
        server.fail(&format!(
            "no Listening and Booting lines in {}: {text:?}",
            log.display()
        ));
    }
    assert!(
        !server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("Listening at: ")),
        "the error log went to stderr as well as the file"
    );
}

#[test]
fn loads_application_by_default_and_calls_factories() {
    let server = Server::start(&["--chdir", "examples", "hello"]);
    assert_eq!(http_get(server.port(), "/").text(), "Hello, World!\n");
    drop(server);

    let server = Server::start(&["--chdir", "tests/apps", "factory:create_app()"]);
    assert_eq!(http_get(server.port(), "/").text(), "made by a factory\n");
    drop(server);

    let server = Server::start(&["--chdir", "tests/apps", "factory:create_app('hi there')"]);
    assert_eq!(http_get(server.port(), "/").text(), "hi there\n");
}

#[test]
fn a_config_file_list_is_taken_where_gunicorn_takes_one_and_refused_elsewhere() {
    // forwarded_allow_ips may be a list in gunicorn.conf.py; a list for a one-value setting is
    // a mistake that must stop the start with one line naming it, not be half-applied.
    let dir = TempDir::new("config-lists");
    let config = dir.path().join("minigun.conf.py");
    let config_arg = config.to_str().expect("utf-8 temp path");
    std::fs::write(
        &config,
        "forwarded_allow_ips = ['10.0.0.1', '10.0.0.2']\nproxy_allow_ips = ('10.0.0.3',)\n",
    )
    .expect("write config");
    let (code, stdout, stderr) = run_to_exit(&[
        "-c",
        config_arg,
        "--print-config",
        "--chdir",
        "examples",
        "hello:app",
    ]);
    assert_eq!(code, Some(0), "{stderr:?}");
    let line = |name: &str| {
        stdout
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {stdout:#?}"))
    };
    let forwarded = line("forwarded_allow_ips");
    assert!(
        forwarded.contains("10.0.0.1") && forwarded.contains("10.0.0.2"),
        "{forwarded}"
    );
    assert!(line("proxy_allow_ips").contains("10.0.0.3"));

    // An empty list trusts no proxy, as in gunicorn, rather than keeping the default.
    std::fs::write(&config, "forwarded_allow_ips = []\n").expect("write config");
    let (code, stdout, stderr) = run_to_exit(&[
        "-c",
        config_arg,
        "--print-config",
        "--chdir",
        "examples",
        "hello:app",
    ]);
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(
        stdout.iter().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["forwarded_allow_ips", "=", "[]"]),
        "{stdout:#?}"
    );

    // Even a list of one: `workers = [4]` is a mistake gunicorn refuses too; so is a dict.
    for value in ["[4]", "{'a': 1, 'b': 2}"] {
        std::fs::write(&config, format!("workers = {value}\n")).expect("write config");
        let (code, _, stderr) =
            run_to_exit(&["-c", config_arg, "--chdir", "examples", "hello:app"]);
        assert_eq!(code, Some(2), "{value}: {stderr:?}");
        let lines = non_empty(&stderr);
        assert_eq!(lines.len(), 1, "{value}: {stderr:#?}");
        assert!(lines[0].contains("workers"), "{}", lines[0]);
    }
}

#[test]
fn a_pid_file_naming_a_live_process_stops_the_start_and_a_stale_one_is_replaced() {
    // gunicorn's check: a second `minigun --pid run/minigun.pid` started by mistake (a unit
    // and a shell, two deploy scripts) must not bind beside the first one and take its pid
    // file; a pid file left by a crash names no process and is simply rewritten.
    let dir = TempDir::new("pidfile-live");
    let pidfile = dir.path().join("minigun.pid");
    let pid_arg = pidfile.to_str().expect("utf-8 temp path");
    let first = Server::start(&["--pid", pid_arg, "--chdir", "examples", "hello:app"]);
    let written = || std::fs::read_to_string(&pidfile).unwrap_or_default();
    assert!(
        common::poll(WAIT, || written().trim() == first.master_pid().to_string()),
        "the first master did not write its pid file"
    );
    let (code, _, stderr) = run_to_exit(&[
        "-b",
        "127.0.0.1:0",
        "--pid",
        pid_arg,
        "--chdir",
        "examples",
        "hello:app",
    ]);
    assert_eq!(code, Some(1), "{stderr:?}");
    let refusal = format!("Already running on PID {}", first.master_pid());
    assert!(stderr.iter().any(|l| l.contains(&refusal)), "{stderr:#?}");
    assert!(
        !stderr.iter().any(|l| l.contains("Listening at")),
        "{stderr:#?}"
    );
    assert_eq!(written().trim(), first.master_pid().to_string());
    drop(first);

    // A pid no process has: one of ours that has been reaped.
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait true");
    std::fs::write(&pidfile, format!("{dead}\n")).expect("write stale pid file");
    let second = Server::start(&["--pid", pid_arg, "--chdir", "examples", "hello:app"]);
    assert!(
        common::poll(WAIT, || written().trim() == second.master_pid().to_string()),
        "a stale pid file was not replaced: {:?}",
        written()
    );
}

#[test]
fn the_pid_file_is_written_before_binding_and_removed_when_the_start_fails() {
    // Two minigun started together (two deploy scripts): the second must see the first's pid
    // file even while the first is still starting, or both go on to bind.
    let dir = TempDir::new("pidfile-early");
    let pidfile = dir.path().join("minigun.pid");
    let pid_arg = pidfile.to_str().expect("utf-8 temp path");
    let gate = dir.path().join("go");
    let conf = dir.path().join("conf.py");
    std::fs::write(
        &conf,
        format!(
            "import os, time\n\
             def on_starting(server):\n    \
                 deadline = time.monotonic() + 20\n    \
                 while not os.path.exists({gate:?}) and time.monotonic() < deadline:\n        \
                     time.sleep(0.01)\n",
            gate = gate.to_str().expect("utf-8")
        ),
    )
    .expect("write config");
    let conf_arg = conf.to_str().expect("utf-8 temp path");
    let first = Server::build(&[
        "-c",
        conf_arg,
        "--pid",
        pid_arg,
        "--chdir",
        "examples",
        "hello:app",
    ])
    .spawn();
    let written = || std::fs::read_to_string(&pidfile).unwrap_or_default();
    assert!(
        common::poll(WAIT, || written().trim() == first.master_pid().to_string()),
        "no pid file while the first master starts"
    );
    let (code, _, stderr) = run_to_exit(&[
        "-b",
        "127.0.0.1:0",
        "--pid",
        pid_arg,
        "--chdir",
        "examples",
        "hello:app",
    ]);
    assert_eq!(code, Some(1), "{stderr:?}");
    std::fs::write(&gate, "").expect("open the gate");
    first.wait_for_line("Booting worker", WAIT);
    drop(first);

    // A start that fails after the pid file was written takes it away again.
    std::fs::write(
        &conf,
        "def on_starting(server):\n    raise RuntimeError('no')\n",
    )
    .expect("write config");
    let (code, _, stderr) = run_to_exit(&[
        "-b",
        "127.0.0.1:0",
        "-c",
        conf_arg,
        "--pid",
        pid_arg,
        "--chdir",
        "examples",
        "hello:app",
    ]);
    assert_eq!(code, Some(1), "{stderr:?}");
    assert!(!pidfile.exists(), "the failed start left its pid file");
}
