//! Shared harness for the integration tests: start the real `minigun` binary, read its log,
//! talk to it with raw sockets, Python or curl, and always clean it up.
//!
//! Every test binary under `tests/` compiles this module on its own and uses a different part
//! of it, hence the `dead_code` allowance below.
//!
//! Rules the helpers enforce so the tests stay honest:
//! - every wait has a deadline, and a missed deadline panics with the server's log attached;
//! - the server runs in its own process group, and [`Server`]'s `Drop` ends that group (SIGTERM,
//!   then SIGKILL after a deadline), so a failing test leaks no processes;
//! - servers bind `127.0.0.1:0` unless a test asks for another address, and the port is read
//!   from the `Listening at:` line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its `Listening at:` line. Generous because a debug
/// build importing Django on a loaded two-core CI machine is slow.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The default deadline for anything else a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// The repository root: the server's working directory, so app paths read as in the README.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `minigun` binary cargo built for these tests.
pub fn minigun_bin() -> &'static str {
    env!("CARGO_BIN_EXE_minigun")
}

/// One way to start the server: arguments, environment changes, and whether to add a bind.
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    default_bind: bool,
    dir: PathBuf,
    /// What runs instead of the bare binary (a wrapper that execs it, or a script).
    program: Option<Vec<String>>,
    /// A descriptor of the test's to hand over as the child's descriptor 3.
    fd3: Option<std::os::fd::RawFd>,
}

impl Launch {
    /// Sets `key=value` in the server's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), Some(value.to_owned())));
        self
    }

    /// Removes `key` from the server's environment (e.g. `VIRTUAL_ENV`).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// Does not add `-b 127.0.0.1:0`; for tests whose bind comes from a config file or
    /// `MINIGUN_CMD_ARGS`, or which never get as far as binding.
    pub fn no_default_bind(mut self) -> Self {
        self.default_bind = false;
        self
    }

    /// Runs the server in `dir` instead of the repository root.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.dir = dir.to_owned();
        self
    }

    /// Runs `program ARGS` instead of `minigun ARGS`: a wrapper that ends by exec'ing minigun
    /// (name the binary with [`minigun_bin`]), or a script that does. The wrapper's pid is
    /// what [`Server::master_pid`] reports, and its process group what `Drop` ends.
    pub fn program(mut self, program: &[&str]) -> Self {
        self.program = Some(program.iter().map(|a| a.to_string()).collect());
        self
    }

    /// Hands the test's descriptor `fd` to the child as its descriptor 3, the way systemd
    /// passes the first socket of `LISTEN_FDS`. The caller keeps `fd` open until the spawn.
    pub fn pass_fd3(mut self, fd: std::os::fd::RawFd) -> Self {
        self.fd3 = Some(fd);
        self
    }

    /// Starts the process and returns at once, whatever it goes on to do.
    pub fn spawn(self) -> Server {
        let mut args = self.args;
        let has_bind = args
            .iter()
            .any(|a| a == "-b" || a == "--bind" || a.starts_with("--bind=") || a.starts_with("-b"));
        if self.default_bind && !has_bind {
            args.splice(0..0, ["-b".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let mut command = match &self.program {
            Some(program) => {
                let mut command = Command::new(&program[0]);
                command.args(&program[1..]);
                command
            }
            None => Command::new(minigun_bin()),
        };
        if let Some(fd) = self.fd3 {
            // SAFETY: the closure runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed: dup2(2) is one, and it allocates nothing.
            // dup2 leaves the copy without FD_CLOEXEC, so descriptor 3 survives the exec.
            unsafe {
                command.pre_exec(move || {
                    if fd == 3 {
                        let flags = libc::fcntl(3, libc::F_GETFD);
                        if flags == -1
                            || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: Drop can then signal the master and every worker at once
            // without touching the test runner.
            .process_group(0);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start minigun {args:?}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let pid = child.id();
        let readers = vec![
            collect_lines(child.stderr.take(), Arc::clone(&stderr), pid, "stderr"),
            collect_lines(child.stdout.take(), Arc::clone(&stdout), pid, "stdout"),
        ];
        Server {
            child: Mutex::new(child),
            exit: Mutex::new(None),
            stderr,
            stdout,
            readers: Mutex::new(readers),
            args,
            port: None,
        }
    }

    /// Starts the process and waits for its `Listening at:` line.
    ///
    /// # Panics
    /// If the server exits or prints no such line within [`START_TIMEOUT`].
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        let line = server.wait_for_line("Listening at: ", START_TIMEOUT);
        server.port = parse_port(&line);
        server
    }
}

/// Reads `stream` line by line into `sink` on a thread of its own, echoing each line (visible
/// with `cargo test -- --nocapture`) so a failing test shows what the server said.
fn collect_lines(
    stream: Option<impl Read + Send + 'static>,
    sink: Arc<Mutex<Vec<String>>>,
    pid: u32,
    name: &'static str,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Some(stream) = stream else { return };
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                    eprintln!("[minigun {pid} {name}] {line}");
                    sink.lock().unwrap().push(line);
                }
            }
        }
    })
}

/// Finds the port in `... Listening at: http://127.0.0.1:PORT (PID)`; `None` for unix sockets.
fn parse_port(line: &str) -> Option<u16> {
    let url = line
        .split("Listening at: ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let rest = url.strip_prefix("http://")?;
    rest.rsplit(':').next()?.parse().ok()
}

/// A running `minigun` master, its captured log, and the guarantee that it is ended.
pub struct Server {
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Mutex<Vec<thread::JoinHandle<()>>>,
    args: Vec<String>,
    port: Option<u16>,
}

impl Server {
    /// Prepares a launch with `args`; finish it with [`Launch::start`] or [`Launch::spawn`].
    pub fn build(args: &[&str]) -> Launch {
        Launch {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            default_bind: true,
            dir: repo_root().to_owned(),
            program: None,
            fd3: None,
        }
    }

    /// Starts `minigun ARGS` on a free port and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        Server::build(args).start()
    }

    /// The TCP port from the `Listening at:` line.
    ///
    /// # Panics
    /// If the server was not started with [`Launch::start`] on a TCP address.
    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or_else(|| panic!("no TCP port known for minigun {:?}", self.args))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The master's pid (the process we spawned).
    pub fn master_pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// The current children of the master, sorted, read from `/proc/*/stat`.
    pub fn worker_pids(&self) -> Vec<u32> {
        if self.try_exit().is_some() {
            return Vec::new();
        }
        children_of(self.master_pid())
    }

    /// Polls until the master has exactly `n` children; returns them.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> Vec<u32> {
        let mut last = Vec::new();
        let found = poll(timeout, || {
            last = self.worker_pids();
            last.len() == n
        });
        if !found {
            self.fail(&format!(
                "expected {n} workers within {timeout:?}, have {last:?}"
            ));
        }
        last
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: i32) {
        send_signal(self.master_pid(), sig);
    }

    /// Every stderr line so far (the error log).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Every stdout line so far (where `--access-logfile -` writes).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// How many stderr lines contain `pattern`.
    pub fn count_lines(&self, pattern: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(pattern))
            .count()
    }

    /// Waits for a stderr line containing `pattern` and returns the first such line.
    ///
    /// # Panics
    /// If none appears within `timeout` (the panic message carries the whole log).
    pub fn wait_for_line(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_lines(pattern, 1, timeout).remove(0)
    }

    /// Waits until at least `n` stderr lines contain `pattern`; returns all of them.
    pub fn wait_for_lines(&self, pattern: &str, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.try_exit();
            if exited.is_some() {
                // Let the reader threads drain what the process wrote before it exited.
                self.join_readers();
            }
            let found: Vec<String> = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(pattern))
                .cloned()
                .collect();
            if found.len() >= n {
                return found;
            }
            if let Some(status) = exited {
                self.fail(&format!(
                    "minigun exited ({status}) before printing {n} line(s) containing {pattern:?}"
                ));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no {n} line(s) containing {pattern:?} within {timeout:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a stdout line containing `pattern`.
    pub fn wait_for_stdout_line(&self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(pattern))
            {
                return line.clone();
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no stdout line containing {pattern:?} within {timeout:?}; stdout: {:#?}",
                    self.stdout_lines()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the master has exited (reaping it), else `None`.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_none() {
            *exit = self.child.lock().unwrap().try_wait().ok().flatten();
        }
        *exit
    }

    /// Waits for the master to exit; returns its status once the log is fully read.
    ///
    /// # Panics
    /// If it is still running after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        poll(timeout, || {
            status = self.try_exit();
            status.is_some()
        });
        match status {
            Some(status) => {
                self.join_readers();
                status
            }
            None => self.fail(&format!("minigun still running after {timeout:?}")),
        }
    }

    /// Waits until stdout and stderr are closed (all processes holding them are gone, or the
    /// pipes' last writer exited), bounded by the usual deadline.
    fn join_readers(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut readers = self.readers.lock().unwrap();
        while readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        for reader in readers.drain(..).filter(|r| r.is_finished()) {
            let _ = reader.join();
        }
    }

    /// Panics with `message`, the command line and the whole log.
    pub fn fail(&self, message: &str) -> ! {
        panic!(
            "{message}\ncommand: minigun {:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.args,
            self.stderr_lines().join("\n"),
            self.stdout_lines().join("\n"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = self.master_pid();
        if self.try_exit().is_none() {
            kill_group(pgid, libc::SIGTERM);
            let exited = poll(Duration::from_secs(10), || self.try_exit().is_some());
            if !exited {
                kill_group(pgid, libc::SIGKILL);
                let _ = self.child.lock().unwrap().wait();
            }
        }
        // Workers left behind by a master that died keep the group alive; end them too.
        kill_group(pgid, libc::SIGKILL);
    }
}

/// Sends `sig` to the process group `pgid`; a group that is already gone is fine.
fn kill_group(pgid: u32, sig: i32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: kill(2) reads no memory of ours; a negative pid names the group this harness
        // created with process_group(0), whose leader we have not reaped yet or whose members
        // keep the group id in use.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Sends `sig` to one process this test started (the master or one of its workers).
pub fn send_signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pids fit in i32 on Linux");
    // SAFETY: kill(2) reads no memory of ours; callers pass pids of processes they started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Whether a process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_some_and(|(state, _)| state != "Z"),
        Err(_) => false,
    }
}

/// `(state, ppid)` from the text of `/proc/PID/stat`. The command name sits in parentheses and
/// may itself contain spaces and parentheses, so the fields are counted after the last `)`.
fn stat_fields(stat: &str) -> Option<(&str, u32)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Living children of `parent`, sorted.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
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
        if let Some((state, ppid)) = stat_fields(&stat) {
            if ppid == parent && state != "Z" {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// Calls `check` every 20 ms until it returns true or `timeout` passes; returns whether it did.
pub fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP response as a raw-socket client received it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code from the status line.
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on a fresh connection with `Connection: close`; panics on any failure.
pub fn http_get(port: u16, path: &str) -> Response {
    try_http_get(port, path).unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// `GET path` on a fresh connection; an error says what went wrong instead of panicking, for
/// client loops that count failures.
pub fn try_http_get(port: u16, path: &str) -> Result<Response, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: minigun-tests\r\n\
         Connection: close\r\n\r\n"
    );
    let raw = exchange(port, request.as_bytes(), Duration::from_secs(20))?;
    parse_response(&raw)
}

/// Sends `request` on a fresh connection and reads until the server closes it.
pub fn exchange(port: u16, request: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("set_write_timeout: {e}"))?;
    stream
        .write_all(request)
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read after {} bytes: {e}", raw.len()))?;
    Ok(raw)
}

/// Parses one complete response that ends where `raw` ends (the server closed the connection).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = find(raw, b"\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {:?}", String::from_utf8_lossy(raw)))?;
    let mut response = parse_head(&raw[..head_end])?;
    let rest = &raw[head_end + 4..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    response.body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if rest.len() < length {
            return Err(format!("body cut short: {} of {length} bytes", rest.len()));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

/// Parses a status line and headers (without the blank line) into a body-less [`Response`].
pub fn parse_head(head: &[u8]) -> Result<Response, String> {
    let head = std::str::from_utf8(head).map_err(|e| format!("head: {e}"))?;
    let head = head.trim_end_matches("\r\n");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Response {
        status,
        headers,
        body: Vec::new(),
    })
}

/// Removes chunked framing (RFC 9112 §7.1); the input must hold the whole body.
pub fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("chunk size line not terminated")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|e| e.to_string())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        body.extend_from_slice(&data[..size]);
        if &data[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        data = &data[size + 2..];
    }
}

/// The offset of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The Python that clients and the frameworks run on: the virtualenv's when `VIRTUAL_ENV` is
/// set (as tests/run.sh does), else `python3` from PATH.
pub fn python_exe() -> PathBuf {
    match std::env::var_os("VIRTUAL_ENV") {
        Some(venv) if !venv.is_empty() => Path::new(&venv).join("bin").join("python"),
        _ => PathBuf::from("python3"),
    }
}

/// Runs a command to completion within `timeout`, killing it if it overruns.
pub fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let out = thread::spawn(move || read_all(out_pipe));
    let err = thread::spawn(move || read_all(err_pipe));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on our own child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut buf);
    }
    buf
}

/// Runs `code` with [`python_exe`] and returns its output, bounded by a minute.
pub fn python(code: &str) -> Output {
    run_bounded(
        Command::new(python_exe()).arg("-c").arg(code),
        Duration::from_secs(60),
    )
}

/// Runs a Python client script against `port` and returns its stdout; the script sees
/// `BASE` (`http://127.0.0.1:PORT`) and `PORT`, and signals failure with an exception.
///
/// # Panics
/// If the script exits non-zero (its traceback is in the message).
pub fn python_client(port: u16, code: &str) -> String {
    let script = format!("PORT = {port}\nBASE = 'http://127.0.0.1:{port}'\n{code}");
    let out = python(&script);
    assert!(
        out.status.success(),
        "python client failed ({}):\n{}\n--- script ---\n{script}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `curl -sS --max-time 20 ARGS` and returns its output.
pub fn curl(args: &[&str]) -> Output {
    run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args),
        Duration::from_secs(30),
    )
}

/// True (after saying why) when `module` cannot be imported by [`python_exe`], so the caller
/// returns early: plain `cargo test` passes on a machine without the frameworks.
///
/// # Panics
/// When `MINIGUN_REQUIRE_FRAMEWORKS=1` (tests/run.sh sets it), because a run that was meant to
/// cover the frameworks must not pass by skipping them.
pub fn skip_without(module: &str) -> bool {
    let out = python(&format!("import {module}"));
    if out.status.success() {
        return false;
    }
    let why = format!(
        "{module} is not importable by {}: {}",
        python_exe().display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if std::env::var("MINIGUN_REQUIRE_FRAMEWORKS").is_ok_and(|v| v == "1") {
        panic!("MINIGUN_REQUIRE_FRAMEWORKS=1 but {why}");
    }
    eprintln!("skipping: {why} (run tests/run.sh to set up .venv)");
    true
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/minigun-test-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("minigun-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir is writable");
        TempDir(path)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One client connection that stays open, for keep-alive, pipelining and framing tests.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `127.0.0.1:port` with 20 s read and write timeouts.
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set_read_timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Changes how long a read may wait.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response head (status line and headers) and returns it as text.
    ///
    /// # Panics
    /// On a timeout or when the server closes before a whole head arrived.
    pub fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            match self.fill() {
                Ok(0) => panic!(
                    "server closed the connection before a whole response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "no response head: {e}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Reads exactly `n` body bytes.
    fn read_exact_body(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed {} bytes into a {n}-byte body",
                    self.buf.len()
                ),
                Ok(_) => {}
                Err(e) => panic!("body read failed: {e}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one line ending in CRLF (without it).
    fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..end + 2).collect();
                line.truncate(end);
                return line;
            }
            match self.fill() {
                Ok(0) => panic!("connection closed inside a chunked body"),
                Ok(_) => {}
                Err(e) => panic!("chunked body read failed: {e}"),
            }
        }
    }

    /// Reads one whole response to a request made with `method`, framed as RFC 9112 §6.3 says:
    /// no body for HEAD, 1xx, 204 and 304; else chunked, Content-Length, or until close.
    pub fn read_response(&mut self, method: &str) -> Response {
        let head = self.read_head();
        let mut response = parse_head(head.as_bytes()).expect("a well-formed head");
        let bodiless = method == "HEAD" || matches!(response.status, 100..=199 | 204 | 304);
        response.body = if bodiless {
            Vec::new()
        } else if response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            let mut body = Vec::new();
            loop {
                let line = self.read_line();
                let text = String::from_utf8_lossy(&line);
                let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {text:?}"));
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    while !self.read_line().is_empty() {}
                    break body;
                }
                body.extend(self.read_exact_body(size));
                assert_eq!(
                    self.read_exact_body(2),
                    b"\r\n",
                    "chunk not followed by CRLF"
                );
            }
        } else if let Some(length) = response.header("content-length") {
            let length = length.parse().expect("numeric Content-Length");
            self.read_exact_body(length)
        } else {
            self.read_to_close()
        };
        response
    }

    /// Reads until the server closes the connection and returns what arrived.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return std::mem::take(&mut self.buf)
                }
                Err(e) => panic!(
                    "the server did not close the connection: {e}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// True when the server has closed the connection (EOF or reset) with nothing more to read,
    /// waiting at most the read timeout for it.
    pub fn is_closed_by_server(&mut self) -> bool {
        match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The raw value of `"key": VALUE` in the JSON the fixtures print (`json.dumps` spacing):
/// a number as digits, a string with its quotes, a flat list with its brackets. Enough for
/// the fixtures' values, which hold no escaped quotes or nested lists.
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &json[start..];
    let end = if let Some(string) = rest.strip_prefix('"') {
        string.find('"')? + 2
    } else if rest.starts_with('[') {
        rest.find(']')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].to_owned())
}

/// One client connection that may carry several requests; failures come back as values so a
/// load loop can count them instead of panicking.
pub struct Client {
    /// The socket, for tests that write or read on their own.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to the server with `timeout` on every read and write.
    pub fn connect(port: u16, timeout: Duration) -> Result<Client, String> {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("socket options: {e}"))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends `request` and reads one whole response to it.
    pub fn request(&mut self, request: &[u8]) -> Result<Response, String> {
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        self.read_response()
    }

    /// Reads one response framed by Content-Length, chunked coding, or the end of the stream.
    pub fn read_response(&mut self) -> Result<Response, String> {
        loop {
            if let Some((response, used)) = complete_response(&self.buf)? {
                self.buf.drain(..used);
                return Ok(response);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // The end of the stream ends a body framed by nothing else.
                    let head_end = find(&self.buf, b"\r\n\r\n").ok_or_else(|| {
                        format!(
                            "closed after {} bytes, before a whole head: {:?}",
                            self.buf.len(),
                            String::from_utf8_lossy(&self.buf)
                        )
                    })?;
                    let mut response = parse_head(&self.buf[..head_end])?;
                    if response.header("content-length").is_some()
                        || response.header("transfer-encoding").is_some()
                    {
                        return Err(format!(
                            "closed inside the body of a {} response",
                            response.status
                        ));
                    }
                    response.body = self.buf[head_end + 4..].to_vec();
                    self.buf.clear();
                    return Ok(response);
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// The first response in `buf` and the bytes it took, once all of it has arrived.
pub fn complete_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let mut response = parse_head(&buf[..head_end])?;
    let body_start = head_end + 4;
    if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if buf.len() < body_start + length {
            return Ok(None);
        }
        response.body = buf[body_start..body_start + length].to_vec();
        return Ok(Some((response, body_start + length)));
    }
    if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        let mut pos = body_start;
        let mut body = Vec::new();
        loop {
            let Some(line_end) = find(&buf[pos..], b"\r\n") else {
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&buf[pos..pos + line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            pos += line_end + 2;
            if size == 0 {
                // No trailers from our fixtures: the blank line ends the body.
                if buf.len() < pos + 2 {
                    return Ok(None);
                }
                response.body = body;
                return Ok(Some((response, pos + 2)));
            }
            if buf.len() < pos + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    // Framed by the end of the stream: not complete until the server closes.
    Ok(None)
}

/// The resident set size of `pid` in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}
