//! The deployment files in `examples/deploy/` (book appendix D), run for real.
//!
//! There is no systemd, nginx service or container runtime in the test environment, so each test
//! plays that party's part from the shipped file itself, substituting only paths and ports:
//!
//! - systemd: binds what `minigun.socket`'s `ListenStream=` names, passes it as descriptor 3 with
//!   `LISTEN_FDS=1` and `LISTEN_PID` set in the child (a `sh` that execs, so the pid is
//!   minigun's), runs `minigun.service`'s `ExecStart=` in its `WorkingDirectory=` with its
//!   `Environment=`, listens on `NOTIFY_SOCKET`, reloads with `ExecReload=` and stops with
//!   `KillSignal=` (SIGTERM), as `systemctl start/reload/stop` would. `User=`/`Group=` are not
//!   played (the account does not exist here); `minigun.socket`'s owner and mode are.
//! - nginx: runs Debian's nginx in the foreground with the shipped site config included from a
//!   minimal main config, in front of minigun on a unix socket, TLS with a throwaway
//!   certificate.
//! - a container: runs `entrypoint.sh` as PID 1 of a new PID namespace (`unshare`), so minigun
//!   really is PID 1.

mod common;

use common::{
    minigun_bin, parse_response, poll, repo_root, run_bounded, Response, Server, TempDir, WAIT,
};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `sh` that puts its own pid in `LISTEN_PID` and then becomes its arguments: the pid systemd
/// writes into `LISTEN_PID` is the one it forked, which after the exec is minigun's.
const SET_LISTEN_PID: &str = r#"LISTEN_PID=$$; export LISTEN_PID; exec "$@""#;

/// The shipped deployment files.
fn deploy_file(name: &str) -> PathBuf {
    repo_root().join("examples").join("deploy").join(name)
}

// ---------------------------------------------------------------------------------------------
// Unit files
// ---------------------------------------------------------------------------------------------

/// A systemd unit file: `(section, key, value)` in file order (systemd.syntax(7): `#` and `;`
/// start comments, a trailing backslash continues a line, a key may repeat).
struct Unit {
    name: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn read(name: &str) -> Unit {
        let text = std::fs::read_to_string(deploy_file(name))
            .unwrap_or_else(|e| panic!("examples/deploy/{name}: {e}"));
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            let line = format!("{pending}{line}");
            pending.clear();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_owned();
            } else if let Some((key, value)) = line.split_once('=') {
                entries.push((
                    section.clone(),
                    key.trim().to_owned(),
                    value.trim().to_owned(),
                ));
            } else {
                panic!("{name}: cannot read line {raw:?}");
            }
        }
        Unit {
            name: name.to_owned(),
            entries,
        }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }

    fn one(&self, section: &str, key: &str) -> &str {
        self.get(section, key)
            .unwrap_or_else(|| panic!("{}: no {key}= in [{section}]", self.name))
    }
}

/// Applies `subs` to a unit's value, in order.
fn substitute(value: &str, subs: &[(&str, String)]) -> String {
    subs.iter()
        .fold(value.to_owned(), |v, (from, to)| v.replace(from, to))
}

/// Splits an `Exec*=` command line. The shipped lines use no quoting, no `%` specifiers and no
/// `$VARIABLE` other than `$MAINPID` (substituted by the caller), so splitting on whitespace is
/// what systemd does with them; the test refuses lines that would need more.
fn command_line(value: &str) -> Vec<String> {
    assert!(
        !value.contains(['"', '\'', '%', '$', '\\']) && !value.starts_with(['-', '@', '+', '!']),
        "this test splits Exec lines on whitespace only; teach it the rest for {value:?}"
    );
    value.split_whitespace().map(str::to_owned).collect()
}

/// The uid or gid `id` reports for a name (`id -u www-data`, `id -g www-data`).
fn id_of(flag: &str, name: &str) -> Option<u32> {
    let out = run_bounded(Command::new("id").args([flag, name]), WAIT);
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock of `MONOTONIC_USEC=`.
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

// ---------------------------------------------------------------------------------------------
// Clients and the notify socket
// ---------------------------------------------------------------------------------------------

/// Opens a connection to a unix socket and sends `GET path`.
fn send_over_unix(socket: &Path, path: &str, headers: &str) -> UnixStream {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream
}

/// Reads the whole answer on a connection made by [`send_over_unix`].
fn read_answer(mut stream: UnixStream) -> Response {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    parse_response(&raw).expect("a response")
}

fn get_over_unix(socket: &Path, path: &str, headers: &str) -> Response {
    read_answer(send_over_unix(socket, path, headers))
}

/// A string field of the JSON object `/environ` answers (`null` becomes `None`).
fn field(json: &str, key: &str) -> Option<String> {
    common::json_field(json, key)
        .filter(|v| v != "null")
        .map(|v| v.trim_matches('"').to_owned())
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { socket, path }
    }

    /// A message already waiting, without blocking.
    fn pending(&self) -> Option<String> {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 4096];
        let got = self.socket.recv(&mut buf).ok();
        self.socket.set_nonblocking(false).expect("blocking");
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next message, which must start with `first` (e.g. `READY=1`).
    fn expect(&self, first: &str, server: &Server) -> String {
        self.socket.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.lines().next() != Some(first) {
                    server.fail(&format!("expected {first} from sd_notify, got {message:?}"));
                }
                message
            }
            Err(e) => server.fail(&format!("no {first} on NOTIFY_SOCKET within {WAIT:?}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

/// What the test needs to start minigun the way `minigun.service` says.
struct Service {
    unit: Unit,
    args: Vec<String>,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Service {
    fn read() -> Service {
        let unit = Unit::read("minigun.service");
        assert_eq!(unit.one("Service", "Type"), "notify");
        let venv = std::env::var("VIRTUAL_ENV").unwrap_or_default();
        let apps = repo_root().join("tests").join("apps");
        let subs = [
            ("/srv/myapp/.venv", venv),
            ("/usr/local/bin/minigun", minigun_bin().to_owned()),
            (
                "/etc/minigun/minigun.conf.py",
                deploy_file("minigun.conf.py").display().to_string(),
            ),
            ("myapp.wsgi:application", "deploy:app".to_owned()),
            ("/srv/myapp", apps.display().to_string()),
        ];
        let mut argv = command_line(&substitute(unit.one("Service", "ExecStart"), &subs));
        assert_eq!(argv[0], minigun_bin(), "ExecStart runs minigun");
        let args = argv.split_off(1);
        let dir = PathBuf::from(substitute(unit.one("Service", "WorkingDirectory"), &subs));
        let env = unit
            .all("Service", "Environment")
            .iter()
            .map(|e| {
                let e = substitute(e, &subs);
                let (k, v) = e.split_once('=').expect("Environment=KEY=VALUE");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Service {
            unit,
            args,
            dir,
            env,
        }
    }

    /// Starts `ExecStart=` with the socket as descriptor 3, as systemd does for a service whose
    /// socket unit has one `ListenStream=`.
    fn start(
        &self,
        socket: &UnixListener,
        notify: &NotifySocket,
        extra: &[(&str, &str)],
    ) -> Server {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut launch = Server::build(&args)
            .program(&["sh", "-c", SET_LISTEN_PID, "sh", minigun_bin()])
            .pass_fd3(socket.as_raw_fd())
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "minigun.socket")
            .env("NOTIFY_SOCKET", &notify.path.display().to_string())
            .no_default_bind()
            .current_dir(&self.dir);
        for (k, v) in &self.env {
            launch = launch.env(k, v);
        }
        for (k, v) in extra {
            launch = launch.env(k, v);
        }
        launch.start()
    }
}

/// Binds the socket `minigun.socket` describes, at `path` instead of `/run/minigun.sock`, with
/// its mode and owner.
fn bind_socket_unit(path: &Path) -> UnixListener {
    let unit = Unit::read("minigun.socket");
    let listen = unit.one("Socket", "ListenStream");
    assert!(
        listen.starts_with('/'),
        "this test plays a unix ListenStream=, not {listen:?}"
    );
    assert_eq!(unit.get("Socket", "Accept").unwrap_or("no"), "no");
    let listener = UnixListener::bind(path).expect("bind the socket unit's socket");
    let mode = u32::from_str_radix(unit.get("Socket", "SocketMode").unwrap_or("0666"), 8)
        .expect("SocketMode= is octal");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if is_root() {
        let user = unit
            .get("Socket", "SocketUser")
            .and_then(|u| id_of("-u", u));
        let group = unit
            .get("Socket", "SocketGroup")
            .and_then(|g| id_of("-g", g));
        std::os::unix::fs::chown(path, user, group).expect("chown");
    }
    listener
}

#[test]
fn systemd_units_start_reload_and_stop_minigun_with_socket_activation_and_notify() {
    let dir = TempDir::new("systemd");
    let socket_path = dir.path().join("minigun.sock");
    let socket = bind_socket_unit(&socket_path);
    let notify = NotifySocket::bind(dir.path().join("notify"));
    let service = Service::read();
    let gate = dir.path().join("gate");
    let gate_env = gate.display().to_string();
    let server = service.start(&socket, &notify, &[("DEPLOY_GATE", &gate_env)]);
    let master = server.master_pid();
    let listening = server.wait_for_line("Listening at: ", WAIT);
    assert!(
        listening.contains(&format!("unix:{}", socket_path.display())),
        "minigun did not take the passed socket: {listening}"
    );
    assert!(
        server.count_lines("Using socket from systemd: fd 3 (minigun.socket)") == 1,
        "{:#?}",
        server.stderr_lines()
    );

    // A worker is importing the app and held there: READY=1 must not have come yet.
    let importing = gate.with_extension("importing");
    if !poll(WAIT, || importing.exists()) {
        server.fail("no worker started importing the app");
    }
    assert_eq!(
        notify.pending(),
        None,
        "READY=1 before the app was imported"
    );
    std::fs::write(&gate, b"").expect("open the gate");
    let ready = notify.expect("READY=1", &server);
    assert!(ready.contains("\nSTATUS="), "{ready:?}");
    let hello = get_over_unix(&socket_path, "/hello", "");
    assert_eq!(hello.status, 200, "{hello:?}");
    let environ = get_over_unix(&socket_path, "/environ", "").text();
    for key in ["os.LISTEN_PID", "os.LISTEN_FDS", "os.LISTEN_FDNAMES"] {
        assert_eq!(
            field(&environ, key),
            None,
            "{key} reached the app: {environ}"
        );
    }

    // systemctl reload: ExecReload= with $MAINPID; RELOADING=1 stamped with the clock systemd
    // compares against, then READY=1 once the new workers serve.
    let reload = substitute(
        service.unit.one("Service", "ExecReload"),
        &[("$MAINPID", master.to_string())],
    );
    let before = monotonic_us();
    let argv = command_line(&reload);
    let out = run_bounded(Command::new(&argv[0]).args(&argv[1..]), WAIT);
    assert!(out.status.success(), "ExecReload failed: {out:?}");
    let reloading = notify.expect("RELOADING=1", &server);
    let after = monotonic_us();
    let stamp: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not between the HUP ({before}) and its receipt ({after})"
    );
    notify.expect("READY=1", &server);
    server.wait_for_line("Hang up: Master", WAIT);
    assert_eq!(get_over_unix(&socket_path, "/hello", "").status, 200);

    // systemctl stop: KillSignal= (SIGTERM unless the unit says otherwise) to the main process.
    assert_eq!(service.unit.get("Service", "KillSignal"), None);
    common::send_signal(master, libc::SIGTERM);
    notify.expect("STOPPING=1", &server);
    let stop_timeout: u64 = service
        .unit
        .one("Service", "TimeoutStopSec")
        .parse()
        .expect("seconds");
    let status = server.wait_exit(Duration::from_secs(stop_timeout));
    assert!(status.success(), "minigun exited with {status}");

    // The socket is systemd's: still there, still listening. A client that connects while no
    // minigun runs waits in its queue and is answered by the next one.
    assert!(
        socket_path.exists(),
        "minigun unlinked systemd's socket file"
    );
    let waiting = send_over_unix(&socket_path, "/hello", "");
    // This time the settings also name the socket's path in --bind, as configurations written
    // for both ways of starting do: the passed socket still wins, and is still left alone.
    let bind = format!("--bind unix:{}", socket_path.display());
    let again = service.start(&socket, &notify, &[("MINIGUN_CMD_ARGS", &bind)]);
    notify.expect("READY=1", &again);
    let answer = read_answer(waiting);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text(), "Hello from deploy\n");
    common::send_signal(again.master_pid(), libc::SIGTERM);
    notify.expect("STOPPING=1", &again);
    assert!(again.wait_exit(WAIT).success());
    assert!(
        socket_path.exists(),
        "minigun unlinked systemd's socket file named in --bind"
    );
    // Still listening: a connection is queued (connect succeeds), not refused.
    let _queued = send_over_unix(&socket_path, "/hello", "");
}

#[test]
fn bad_socket_activation_variables_are_named_and_exit_2() {
    let run = |env: &[(&str, &str)], fd3: Option<i32>| -> Server {
        let mut launch = Server::build(&["--chdir", "tests/apps", "deploy:app"]).program(&[
            "sh",
            "-c",
            SET_LISTEN_PID,
            "sh",
            minigun_bin(),
        ]);
        for (k, v) in env {
            launch = launch.env(k, v);
        }
        if let Some(fd) = fd3 {
            launch = launch.pass_fd3(fd);
        }
        let server = launch.spawn();
        server.wait_exit(WAIT);
        server
    };
    let exit_code = |server: &Server| server.try_exit().and_then(|s| s.code());

    let server = run(&[("LISTEN_FDS", "abc")], None);
    assert_eq!(exit_code(&server), Some(2));
    assert_eq!(
        server.count_lines("LISTEN_FDS: invalid value 'abc' (expected a number of descriptors)"),
        1,
        "{:#?}",
        server.stderr_lines()
    );

    // A LISTEN_PID that is not a number (no wrapper this time, so it stays as given).
    let server = Server::build(&["--chdir", "tests/apps", "deploy:app"])
        .env("LISTEN_PID", "12ab")
        .env("LISTEN_FDS", "1")
        .spawn();
    server.wait_exit(WAIT);
    assert_eq!(exit_code(&server), Some(2));
    assert_eq!(server.count_lines("LISTEN_PID: invalid value '12ab'"), 1);

    // A passed descriptor that is not a listening socket: a regular file, then a connected
    // socket (what a socket unit with Accept=yes would pass).
    let file = std::fs::File::open(deploy_file("minigun.socket")).expect("open");
    let server = run(&[("LISTEN_FDS", "1")], Some(file.as_raw_fd()));
    assert_eq!(exit_code(&server), Some(2));
    assert_eq!(
        server.count_lines("LISTEN_FDS: descriptor 3:"),
        1,
        "{:#?}",
        server.stderr_lines()
    );
    let (connected, _peer) = UnixStream::pair().expect("socketpair");
    let server = run(&[("LISTEN_FDS", "1")], Some(connected.as_raw_fd()));
    assert_eq!(exit_code(&server), Some(2));
    assert_eq!(
        server.count_lines("not a listening socket (a socket unit needs Accept=no)"),
        1
    );

    // Variables meant for another process are ignored (as sd_listen_fds ignores them), with a
    // warning, and minigun binds --bind as usual.
    let server = Server::build(&["--chdir", "tests/apps", "deploy:app"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .start();
    server.wait_for_line("LISTEN_PID is 1, not this process", WAIT);
    assert_eq!(common::http_get(server.port(), "/hello").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Unix sockets behind a proxy
// ---------------------------------------------------------------------------------------------

#[test]
fn a_unix_socket_gets_umask_and_owner_and_its_peers_are_trusted_for_the_scheme() {
    let dir = TempDir::new("unix-owner");
    let path = dir.path().join("minigun.sock");
    let bind = format!("unix:{}", path.display());
    let mut args = vec![
        "-b",
        &bind,
        "--umask",
        "007",
        // Trusting no TCP address at all: the unix peer is trusted anyway, as in gunicorn.
        "--forwarded-allow-ips",
        "192.0.2.1",
        "--chdir",
        "tests/apps",
    ];
    let owner = if is_root() {
        // Workers run as nobody; --preload imports the app while the master is still root,
        // wherever the Python installation lives.
        args.extend(["--user", "nobody", "--group", "www-data", "--preload"]);
        Some((
            id_of("-u", "nobody").expect("nobody"),
            id_of("-g", "www-data").expect("www-data"),
        ))
    } else {
        eprintln!("not root: checking the socket's mode, not its owner");
        None
    };
    args.push("deploy:app");
    let server = Server::start(&args);
    let meta = std::fs::metadata(&path).expect("the socket file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o770, "--umask 007");
    if let Some((uid, gid)) = owner {
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "--user/--group own the socket"
        );
    }
    let environ = get_over_unix(&path, "/environ", "X-Forwarded-Proto: https\r\n").text();
    assert_eq!(
        field(&environ, "wsgi.url_scheme").as_deref(),
        Some("https"),
        "{environ}"
    );
    let environ = get_over_unix(&path, "/environ", "").text();
    assert_eq!(
        field(&environ, "wsgi.url_scheme").as_deref(),
        Some("http"),
        "{environ}"
    );
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// A process this test started, killed by pid when dropped.
struct Started {
    child: Child,
    what: &'static str,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGQUIT: nginx's graceful stop; bounded, then SIGKILL.
            common::send_signal(self.child.id(), libc::SIGQUIT);
            let exited = poll(WAIT, || matches!(self.child.try_wait(), Ok(Some(_))));
            if !exited {
                eprintln!("{} did not stop; killing it", self.what);
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A TCP port nobody listens on right now (bound, then released for nginx to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Whether nginx is installed; tests/run.sh installs it, so there it must be.
fn have_nginx() -> bool {
    let found = Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("MINIGUN_REQUIRE_FRAMEWORKS").is_ok_and(|v| v == "1") {
        panic!("nginx is not installed, and tests/run.sh should have installed it");
    }
    if !found {
        eprintln!("skipping: nginx is not installed (tests/run.sh installs it)");
    }
    found
}

#[test]
fn nginx_site_config_proxies_to_minigun_over_a_unix_socket() {
    if !have_nginx() {
        return;
    }
    let dir = TempDir::new("nginx");
    let prefix = dir.path();
    let socket = prefix.join("minigun.sock");
    let (http_port, https_port) = (free_port(), free_port());

    // A throwaway certificate for example.com.
    let (cert, key) = (prefix.join("cert.pem"), prefix.join("key.pem"));
    let out = run_bounded(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=example.com",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        WAIT,
    );
    assert!(out.status.success(), "openssl: {out:?}");

    // minigun as the deployment runs it, on the socket the site config names.
    let bind = format!("unix:{}", socket.display());
    let conf = deploy_file("minigun.conf.py").display().to_string();
    let mut args = vec![
        "--config",
        &conf,
        "-b",
        &bind,
        "-w",
        "1",
        "--chdir",
        "tests/apps",
    ];
    if is_root() {
        // Only nginx's group may connect, as on a server: nginx's workers run as www-data.
        args.extend(["--umask", "007", "--group", "www-data"]);
    }
    args.push("deploy:app");
    let server = Server::start(&args);

    // The site config, with this test's ports and paths, in a minimal main config.
    let site = std::fs::read_to_string(deploy_file("nginx.conf")).expect("nginx.conf");
    let site = substitute(
        &site,
        &[
            ("listen 80;", format!("listen 127.0.0.1:{http_port};")),
            (
                "listen 443 ssl;",
                format!("listen 127.0.0.1:{https_port} ssl;"),
            ),
            ("/run/minigun.sock", socket.display().to_string()),
            ("/etc/ssl/certs/example.com.pem", cert.display().to_string()),
            (
                "/etc/ssl/private/example.com.key",
                key.display().to_string(),
            ),
        ],
    );
    assert!(site.contains(&socket.display().to_string()) && site.contains(&https_port.to_string()));
    std::fs::write(prefix.join("site.conf"), site).expect("write site.conf");
    let user = if is_root() {
        "user www-data www-data;"
    } else {
        ""
    };
    let p = prefix.display();
    let main = format!(
        "{user}\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         \x20 fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         \x20 include {p}/site.conf;\n}}\n"
    );
    std::fs::write(prefix.join("nginx.conf"), main).expect("write nginx.conf");
    let child = Command::new("nginx")
        .args(["-e", "stderr", "-p"])
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut nginx = Started {
        child,
        what: "nginx",
    };
    let up = poll(WAIT, || {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!("nginx exited: {status}");
        }
        std::net::TcpStream::connect(("127.0.0.1", https_port)).is_ok()
    });
    assert!(up, "nginx is not listening on {https_port}");

    let resolve = format!("example.com:{https_port}:127.0.0.1");
    let base = format!("https://example.com:{https_port}");
    let curl = |extra: &[&str], path: &str| {
        let url = format!("{base}{path}");
        let mut args = vec!["-k", "--resolve", &resolve, "-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = common::curl(&args);
        assert!(out.status.success(), "curl {url}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.to_owned(), body.to_owned())
    };

    let (code, body) = curl(&[], "/hello");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "Hello from deploy\n")
    );
    let (code, environ) = curl(&[], "/environ");
    assert_eq!(code, "200");
    assert_eq!(
        field(&environ, "wsgi.url_scheme").as_deref(),
        Some("https"),
        "{environ}"
    );
    assert_eq!(
        field(&environ, "HTTP_X_FORWARDED_PROTO").as_deref(),
        Some("https")
    );
    assert_eq!(
        field(&environ, "HTTP_X_FORWARDED_FOR").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        field(&environ, "HTTP_HOST"),
        Some(format!("example.com:{https_port}"))
    );
    assert_eq!(
        field(&environ, "REMOTE_ADDR").as_deref(),
        Some(""),
        "a unix peer"
    );

    // An upload nginx reads whole, then passes on.
    let upload = prefix.join("upload.bin");
    std::fs::write(&upload, vec![b'x'; 300_000]).expect("write upload");
    let data = format!("@{}", upload.display());
    let (code, echoed) = curl(&["--data-binary", &data], "/echo");
    assert_eq!(code, "200");
    assert_eq!(echoed.len(), 300_000);

    // Plain HTTP is sent to HTTPS.
    let out = common::curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: example.com",
        &format!("http://127.0.0.1:{http_port}/hello?x=1"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "301 https://example.com/hello?x=1"
    );
    assert!(server.try_exit().is_none(), "minigun died");
    drop(nginx);
}

// ---------------------------------------------------------------------------------------------
// PID 1
// ---------------------------------------------------------------------------------------------

/// The last `NSpid:` field of a process: its pid in its own PID namespace.
fn pid_in_namespace(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Every process whose parent is `parent`, zombies included, with its state letter.
fn children_with_state(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().unwrap_or("?").to_owned();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push((pid, state));
        }
    }
    found
}

fn command_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn as_pid_1_in_a_container_minigun_reaps_orphans_and_stops_on_term() {
    // The honest setting: a new PID namespace, where entrypoint.sh's exec makes minigun PID 1.
    // Where unshare cannot run (no root, no user namespaces), fall back to making minigun a
    // child subreaper (prctl is kept across exec), which gets orphans reparented the same way.
    let unshare_works = run_bounded(
        Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]),
        WAIT,
    )
    .status
    .success();
    let entrypoint = deploy_file("entrypoint.sh").display().to_string();
    let subreaper = "import ctypes, os, sys; \
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0 or sys.exit('prctl'); \
        os.execvp(sys.argv[1], sys.argv[1:])";
    let python = common::python_exe().display().to_string();
    let program: Vec<&str> = if unshare_works {
        vec![
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            &entrypoint,
        ]
    } else {
        eprintln!("unshare --pid does not work here: using PR_SET_CHILD_SUBREAPER instead");
        vec![&python, "-c", subreaper, "sh", &entrypoint]
    };
    let bin_dir = Path::new(minigun_bin())
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let conf = deploy_file("minigun.conf.py").display().to_string();
    let apps = repo_root().join("tests").join("apps").display().to_string();
    let server = Server::build(&["-w", "1", "deploy:app"])
        .program(&program)
        .env("PATH", &path)
        .env("APP_DIR", &apps)
        .env("MINIGUN_CONFIG", &conf)
        .env("PORT", "0")
        .no_default_bind()
        .start();

    let master = if unshare_works {
        let mut kids = Vec::new();
        if !poll(WAIT, || {
            kids = common::children_of(server.master_pid());
            kids.len() == 1
        }) {
            server.fail(&format!("unshare has children {kids:?}"));
        }
        assert_eq!(pid_in_namespace(kids[0]), Some(1), "minigun is not PID 1");
        kids[0]
    } else {
        server.master_pid()
    };
    assert!(
        command_of(master).contains("minigun"),
        "{}",
        command_of(master)
    );
    let mut workers = Vec::new();
    if !poll(WAIT, || {
        workers = common::children_of(master);
        workers.len() == 1
    }) {
        server.fail(&format!("expected one worker, have {workers:?}"));
    }

    // The app starts `sleep 60 &` from a shell that exits at once: the sleep is orphaned and
    // reparented to PID 1, minigun, which is not its parent's parent and never forked it.
    let answer = common::http_get(server.port(), "/spawn");
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut orphan = None;
    let reparented = poll(WAIT, || {
        orphan = children_with_state(master)
            .into_iter()
            .map(|(pid, _)| pid)
            .find(|pid| !workers.contains(pid) && command_of(*pid).starts_with("sleep"));
        orphan.is_some()
    });
    let Some(orphan) = orphan.filter(|_| reparented) else {
        server.fail("the orphaned sleep was not reparented to minigun");
    };
    // It ends; minigun must collect it, or it stays a zombie for as long as minigun runs.
    common::send_signal(orphan, libc::SIGTERM);
    let reaped = poll(WAIT, || !Path::new(&format!("/proc/{orphan}")).exists());
    let zombies: Vec<(u32, String)> = children_with_state(master)
        .into_iter()
        .filter(|(_, state)| state == "Z")
        .collect();
    assert!(
        reaped && zombies.is_empty(),
        "not reaped: orphan {orphan}, zombies {zombies:?}"
    );

    // TERM, as `docker stop` sends it to PID 1: a graceful stop, exit 0, nothing left behind.
    let started = Instant::now();
    common::send_signal(master, libc::SIGTERM);
    let status = server.wait_exit(WAIT);
    assert!(status.success(), "{status} after TERM");
    server.wait_for_line("Shutting down: Master", WAIT);
    assert!(started.elapsed() < WAIT);
    for pid in workers.iter().chain([&master]) {
        assert!(!common::is_alive(*pid), "{pid} outlived the stop");
    }
}
