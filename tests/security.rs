//! Security defaults against the real binary (issue 4, "Security defaults"): header names with
//! `_` cannot pose as `X-Forwarded-*`, the scheme headers are trusted only from
//! `--forwarded-allow-ips`, `--umask` sets a unix socket's mode, and `--user`/`--group` drop
//! the workers' privileges while the master keeps its own.

mod common;

use common::{exchange, json_field, parse_response, poll, Response, Server, TempDir, WAIT};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// Sends `GET /environ` with `headers` to `proto:app` and returns the environ it reports.
fn environ_with(port: u16, headers: &str) -> String {
    let request = format!("GET /environ HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
    let raw = exchange(port, request.as_bytes(), WAIT).expect("an answer");
    let r = parse_response(&raw).expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

#[test]
fn headers_with_underscores_cannot_pose_as_forwarding_headers() {
    let server = Server::start(&["--chdir", "tests/apps", "proto:app"]);
    let port = server.port();

    // Alone, an underscored name leaves no trace in the environ.
    let env = environ_with(
        port,
        "X_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nX_Real_IP: 6.6.6.6\r\n",
    );
    assert_eq!(json_field(&env, "HTTP_X_FORWARDED_FOR"), None, "{env}");
    assert_eq!(json_field(&env, "HTTP_X_FORWARDED_PROTO"), None, "{env}");
    assert_eq!(json_field(&env, "HTTP_X_REAL_IP"), None, "{env}");
    assert!(
        !env.contains("6.6.6.6"),
        "a spoofed value got through: {env}"
    );
    assert_eq!(
        json_field(&env, "wsgi.url_scheme").as_deref(),
        Some("\"http\""),
        "X_Forwarded_Proto switched the scheme: {env}"
    );

    // Beside the real header, it is not joined into its value either.
    let env = environ_with(
        port,
        "X-Forwarded-For: 203.0.113.7\r\nX_Forwarded_For: 6.6.6.6\r\n",
    );
    assert_eq!(
        json_field(&env, "HTTP_X_FORWARDED_FOR").as_deref(),
        Some("\"203.0.113.7\""),
        "{env}"
    );
}

#[test]
fn x_forwarded_proto_is_trusted_only_from_forwarded_allow_ips() {
    let scheme = |server: &Server, headers: &str| {
        let env = environ_with(server.port(), headers);
        json_field(&env, "wsgi.url_scheme").unwrap_or_else(|| panic!("no scheme in {env}"))
    };

    // The default trusts loopback, where the test client connects from.
    let default = Server::start(&["--chdir", "tests/apps", "proto:app"]);
    assert_eq!(
        scheme(&default, "X-Forwarded-Proto: https\r\n"),
        "\"https\""
    );
    assert_eq!(scheme(&default, ""), "\"http\"");
    assert_eq!(scheme(&default, "X-Forwarded-Proto: http\r\n"), "\"http\"");

    // Trusting another address only: the same request from loopback keeps http.
    let other = Server::start(&[
        "--forwarded-allow-ips",
        "10.0.0.1",
        "--chdir",
        "tests/apps",
        "proto:app",
    ]);
    for header in [
        "X-Forwarded-Proto: https\r\n",
        "X-Forwarded-Ssl: on\r\n",
        "X-Forwarded-Protocol: ssl\r\n",
    ] {
        assert_eq!(
            scheme(&other, header),
            "\"http\"",
            "{header:?} from an untrusted peer switched the scheme"
        );
    }

    // `*` trusts everyone.
    let any = Server::start(&[
        "--forwarded-allow-ips",
        "*",
        "--chdir",
        "tests/apps",
        "proto:app",
    ]);
    assert_eq!(scheme(&any, "X-Forwarded-Proto: https\r\n"), "\"https\"");
}

/// `GET /hello` over the unix socket at `path`.
fn get_over_unix(path: &std::path::Path) -> Response {
    let mut stream =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set_read_timeout");
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    parse_response(&raw).expect("a response")
}

#[test]
fn umask_sets_the_mode_of_a_unix_socket() {
    let dir = TempDir::new("umask");
    for (umask, mode) in [("0o077", 0o700), ("027", 0o750), ("0", 0o777)] {
        let path = dir.path().join(format!("minigun-{umask}.sock"));
        let bind = format!("unix:{}", path.display());
        let server = Server::build(&[
            "-b",
            &bind,
            "--umask",
            umask,
            "--chdir",
            "tests/apps",
            "proto:app",
        ])
        .start();
        let meta = std::fs::metadata(&path).expect("the socket file exists");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            mode,
            "--umask {umask}: socket mode {:o}",
            meta.permissions().mode() & 0o777
        );
        assert_eq!(get_over_unix(&path).status, 200);
        drop(server);
        assert!(
            poll(WAIT, || !path.exists()),
            "the socket file outlived the server"
        );
    }
}

/// `(real uid, real gid)` of `pid` from /proc/PID/status.
fn ids_of(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let first = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} for {pid}"))
    };
    (first("Uid:"), first("Gid:"))
}

/// The supplementary groups of `pid` from /proc/PID/status.
fn groups_of(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect()
}

/// The id `python_code` prints, e.g. a `pwd` lookup.
fn id_from_python(python_code: &str) -> u32 {
    let out = common::python(python_code);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no id from {python_code:?}: {out:?}"))
}

#[test]
fn user_and_group_drop_the_workers_privileges_when_started_as_root() {
    // SAFETY: geteuid(2) has no preconditions and touches no memory of ours.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("skipping: --user/--group need root to switch ids (running as uid {euid})");
        return;
    }
    // Ids as /etc/passwd and /etc/group give them (65534 on Debian and Ubuntu).
    let uid = id_from_python("import pwd; print(pwd.getpwnam('nobody').pw_uid)");
    let gid = id_from_python("import grp; print(grp.getgrnam('nogroup').gr_gid)");

    // Workers drop privileges before they start Python. Where nobody cannot read the Python
    // installation (a pyenv under /root, say), they could not boot; --preload then starts
    // Python in the master, and each worker drops privileges right after the fork.
    let stdlib = common::python("import sysconfig; print(sysconfig.get_path('stdlib'))");
    let stdlib = String::from_utf8_lossy(&stdlib.stdout).trim().to_owned();
    let probe = common::run_bounded(
        std::process::Command::new("test")
            .uid(uid)
            .gid(gid)
            .args(["-r", &format!("{stdlib}/encodings/__init__.py")]),
        Duration::from_secs(30),
    );
    let mut args = vec![
        "--user",
        "nobody",
        "--group",
        "nogroup",
        "-w",
        "2",
        "--chdir",
        "tests/apps",
    ];
    if !probe.status.success() {
        eprintln!("nobody cannot read the Python library in {stdlib}; starting with --preload");
        args.push("--preload");
    }
    args.push("slow:app");

    // The master's supplementary groups must not reach the workers: give it root's group if
    // the test runner has none, so there is something to leak.
    if groups_of(std::process::id()).is_empty() {
        let root_group: libc::gid_t = 0;
        // SAFETY: setgroups(2) reads one gid from the pointer for the length given; we are
        // root (checked above), and group 0 adds no permission root lacks.
        let rc = unsafe { libc::setgroups(1, &root_group) };
        assert_eq!(rc, 0, "setgroups: {}", std::io::Error::last_os_error());
    }

    let server = Server::start(&args);
    let workers = server.wait_for_workers(2, WAIT);
    let answer = common::http_get(server.port(), "/");
    assert_eq!(answer.status, 200, "{answer:?}");
    for pid in workers {
        // A worker switches after the fork: poll until its ids settle.
        let mut ids = (0, 0);
        let dropped = poll(Duration::from_secs(10), || {
            ids = ids_of(pid);
            ids == (uid, gid)
        });
        assert!(dropped, "worker {pid} runs as {ids:?}, not ({uid}, {gid})");
        let groups = groups_of(pid);
        assert!(
            groups.iter().all(|&g| g == gid),
            "worker {pid} runs as nobody but keeps the master's supplementary groups {groups:?}"
        );
    }
    assert_eq!(
        ids_of(server.master_pid()),
        (0, 0),
        "the master must stay root to bind, reload and signal"
    );
}

#[test]
fn user_and_group_naming_the_current_ids_need_no_privilege() {
    // A config file shared between hosts says `user = "app"`, and on this host minigun already
    // runs as app: gunicorn changes nothing then, and so must we. Without the privilege to
    // change ids (not root, or root without CAP_SETUID/CAP_SETGID as in a container started
    // with --cap-drop ALL), setgroups/setgid/setuid fail with EPERM and no worker boots.
    // SAFETY: getuid(2) and getgid(2) have no preconditions and touch no memory of ours.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let mut launch = Server::build(&[
        "--user",
        &uid,
        "--group",
        &gid,
        "--chdir",
        "tests/apps",
        "slow:app",
    ]);
    if uid == "0" {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipping: running as root and setpriv (util-linux) is missing");
            return;
        }
        // Root with no capabilities left, and a supplementary group besides its own, as
        // most users have: nothing may need changing, so nothing is attempted.
        launch = launch.program(&[
            "setpriv",
            "--groups=0,100",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            common::minigun_bin(),
        ]);
    }
    let server = launch.start();
    server.wait_for_workers(1, WAIT);
    assert_eq!(common::http_get(server.port(), "/").status, 200);
}
