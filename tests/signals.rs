//! Signals that arrive while a transfer is blocked. Operators send USR1 (logrotate), HUP
//! (deploys) and TERM (stops) at any moment; whatever the worker is waiting on at that moment,
//! every byte of the request in flight must still be delivered, or the request completed,
//! before the worker lets go of it. A signal interrupts a blocking system call with EINTR,
//! which means "again", never "the client is gone".
//!
//! The sweep puts one request in each place a worker can wait — for the rest of a request head,
//! for the rest of a body, streaming a generator's output to a slow reader, sendfile to a slow
//! reader, and draining a client after an error answer (lingering close) — then signals the
//! master and lets the client finish, with one thread and with four. Heads, bodies and lingering
//! wait in the event loop (epoll_wait); the two downloads block a thread in poll(2), which the
//! tests check (`/proc/PID/task/*/wchan`) before they send the signal.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;

use common::{complete_response, poll, Response, Server, WAIT};

const MIB: usize = 1 << 20;

/// The bytes `/big` and `/file` of tests/apps/misuse.py send: 0..=255 repeated.
fn pattern_ok(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, &b)| b == i as u8)
}

/// A client socket whose receive buffer is 4 KiB, set before connecting so the TCP window
/// stays small: the server's sends then block as soon as the client stops reading.
fn small_window_stream(port: u16) -> TcpStream {
    // SAFETY: socket(2), setsockopt(2) and connect(2) get valid arguments: `size` and `addr`
    // live on the stack for the duration of each call, with their true lengths; the new
    // descriptor is owned by the TcpStream built from it and by nothing else.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        stream
    }
}

/// Lets the client take the rest at full speed once the point is made: a bigger receive
/// buffer, so the window opens up (window scaling is always offered on Linux).
fn widen_window(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt(2) reads one c_int through the pointer, valid for the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Waits (bounded) until one of `worker`'s threads sleeps in poll(2): blocked sending to the
/// client that stopped reading, which is where the signal must land. (The worker's other
/// serving threads wait in epoll_wait or on a futex; its abort thread, which waits in poll on
/// a pipe, is told apart by its name.)
fn wait_until_blocked_sending(server: &Server, worker: u32) {
    let in_poll = || {
        std::fs::read_dir(format!("/proc/{worker}/task"))
            .map(|tasks| {
                // The abort thread also sleeps in poll, on its own pipe: not the one.
                tasks.flatten().any(|t| {
                    let serving = std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() != "minigun-abort");
                    serving
                        && std::fs::read_to_string(t.path().join("wchan"))
                            .is_ok_and(|w| w.starts_with("poll_schedule_timeout"))
                })
            })
            .unwrap_or(false)
    };
    if !poll(WAIT, in_poll) {
        server.fail("the worker never blocked on the slow reader");
    }
}

/// Reads until `n` body bytes after the head have arrived (or the stream ends) and returns the
/// head and what arrived.
fn read_sized(stream: &mut TcpStream, mut raw: Vec<u8>) -> (Vec<u8>, Result<(), String>) {
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        if let Ok(Some((_, used))) = complete_response(&raw) {
            raw.truncate(used);
            return (raw, Ok(()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return (raw, Err("the server closed the connection".into())),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (raw, Err(format!("read: {e}"))),
        }
    }
}

/// Which signal, and how to tell the worker has acted on it.
#[derive(Clone, Copy, Debug)]
enum Sig {
    Usr1,
    Hup,
    Term,
}

impl Sig {
    const ALL: [Sig; 3] = [Sig::Usr1, Sig::Hup, Sig::Term];

    fn number(self) -> i32 {
        match self {
            Sig::Usr1 => libc::SIGUSR1,
            Sig::Hup => libc::SIGHUP,
            Sig::Term => libc::SIGTERM,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sig::Usr1 => "usr1",
            Sig::Hup => "hup",
            Sig::Term => "term",
        }
    }
}

/// Starts misuse:app with one worker, `threads` threads and `extra` flags, at debug level so
/// the worker says when it handles a signal.
fn start(threads: usize, extra: &[&str]) -> (Server, u32) {
    let threads = threads.to_string();
    let mut args = vec![
        "-w",
        "1",
        "--threads",
        &threads,
        "--log-level",
        "debug",
        "--graceful-timeout",
        "20",
        "--chdir",
        "tests/apps",
    ];
    args.extend_from_slice(extra);
    args.push("misuse:app");
    let server = Server::start(&args);
    let worker = server.wait_for_workers(1, WAIT)[0];
    server.wait_for_line("Booting worker", WAIT);
    (server, worker)
}

/// Sends `sig` to the master, then waits (bounded) until the worker `pid` has got it (for HUP,
/// once the master has booted the new worker and retired the old one): its event loop says it
/// handles the signal, or, when its only thread is blocked sending to our client, the send
/// loop says the signal interrupted its wait.
fn signal_worker_via_master(server: &Server, worker: u32, sig: Sig) {
    let interrupted = format!("[{worker}] [DEBUG] A signal interrupted the wait");
    let before = server.count_lines(&interrupted);
    server.signal(sig.number());
    let handled = format!("Worker {worker} handling signal: {}", sig.name());
    let got_it = poll(WAIT, || {
        server.count_lines(&handled) > 0 || server.count_lines(&interrupted) > before
    });
    if !got_it {
        server.fail(&format!("worker {worker} never got {sig:?}"));
    }
}

/// After the transfer: the master is still running (USR1, HUP) or exits 0 (TERM).
fn settle(server: &Server, sig: Sig) {
    match sig {
        Sig::Term => {
            let status = server.wait_exit(WAIT);
            assert!(status.success(), "minigun exited with {status} after TERM");
        }
        _ => assert!(server.try_exit().is_none(), "minigun exited after {sig:?}"),
    }
}

/// A slow reader of `path` (`mb` MiB expected): reads the first 256 KiB, stops reading until
/// the server is blocked on it, signals, then reads the rest and checks every byte.
fn slow_download(path: &str, mb: usize, threads: usize, sig: Sig) {
    let (server, worker) = start(threads, &[]);
    let mut stream = small_window_stream(server.port());
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("request");
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while raw.len() < 256 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => server.fail("the download ended before its first 256 KiB"),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    wait_until_blocked_sending(&server, worker);
    signal_worker_via_master(&server, worker, sig);
    widen_window(&stream);
    let (raw, ended) = read_sized(&mut stream, raw);
    let response = complete_response(&raw)
        .ok()
        .flatten()
        .map(|(r, _)| r)
        .unwrap_or_else(|| Response {
            status: 0,
            headers: Vec::new(),
            body: Vec::new(),
        });
    if ended.is_err() || response.body.len() != mb * MIB || !pattern_ok(&response.body) {
        server.fail(&format!(
            "{path} with --threads {threads}, {sig:?} mid-transfer: {} of {} bytes arrived \
             ({ended:?}), pattern intact: {}",
            raw.len(),
            mb * MIB,
            pattern_ok(&response.body)
        ));
    }
    settle(&server, sig);
}

/// A connection the worker has accepted: one request answered on it first. (A connection
/// still queued in the listener's backlog when a stop begins is never accepted, here as in
/// gunicorn; the tests are about connections a worker holds.)
fn held_connection(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    stream
        .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("first request");
    let (first, ended) = read_sized(&mut stream, Vec::new());
    assert!(
        ended.is_ok() && first.starts_with(b"HTTP/1.1 200 "),
        "first request: {ended:?}"
    );
    stream
}

/// An upload sent in two halves with `sig` in between; the app must read every byte.
fn split_upload(threads: usize, sig: Sig) {
    let (server, worker) = start(threads, &[]);
    let size = 4 * MIB;
    let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let mut stream = held_connection(&server);
    stream
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        )
        .expect("head");
    stream.write_all(&body[..size / 2]).expect("first half");
    signal_worker_via_master(&server, worker, sig);
    let sent = stream.write_all(&body[size / 2..]);
    let (raw, ended) = read_sized(&mut stream, Vec::new());
    let text = String::from_utf8_lossy(&raw);
    let digest = sha256_hex(&body);
    if sent.is_err()
        || ended.is_err()
        || !text.starts_with("HTTP/1.1 200 ")
        || !text.contains(&format!("\"total\": {size}"))
        || !text.contains(&digest)
    {
        server.fail(&format!(
            "upload with --threads {threads}, {sig:?} between the halves: second half {sent:?}, \
             answer {ended:?}: {text:?}"
        ));
    }
    settle(&server, sig);
}

/// The second request of a keep-alive connection, its head sent in two parts with `sig` in
/// between. (The first request proves the worker has the connection: one still queued in the
/// listener's backlog when a stop begins is never accepted, here as in gunicorn.)
fn split_head(threads: usize, sig: Sig) {
    let (server, worker) = start(threads, &[]);
    let mut stream = held_connection(&server);
    stream
        .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\n")
        .expect("first part");
    signal_worker_via_master(&server, worker, sig);
    stream.write_all(b"X-Late: yes\r\n\r\n").expect("rest");
    let (raw, ended) = read_sized(&mut stream, Vec::new());
    let text = String::from_utf8_lossy(&raw);
    if ended.is_err() || !text.starts_with("HTTP/1.1 200 ") || !text.ends_with(&worker.to_string())
    {
        server.fail(&format!(
            "head split by {sig:?} with --threads {threads}: {ended:?} {text:?}"
        ));
    }
    settle(&server, sig);
}

/// An error answer (413) followed by a lingering close while the client still sends its
/// body; `sig` arrives during the linger. The client reads the whole answer, goes on sending,
/// and must then see the end of the stream, never a reset.
fn lingering_close(threads: usize, sig: Sig) {
    let (server, worker) = start(threads, &["--limit-request-body", "1000"]);
    let mut stream = held_connection(&server);
    let size = 8 * MIB;
    stream
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        )
        .expect("head");
    let block = vec![b'x'; 64 * 1024];
    let _ = stream.write_all(&block);
    let (answer, ended) = read_sized(&mut stream, Vec::new());
    let text = String::from_utf8_lossy(&answer);
    assert!(
        ended.is_ok() && text.starts_with("HTTP/1.1 413 "),
        "no 413 before the linger: {ended:?} {text:?}"
    );
    // The server now drains what the client still sends.
    signal_worker_via_master(&server, worker, sig);
    let mut sent = Ok(());
    for _ in 0..4 {
        sent = stream.write_all(&block);
        if sent.is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    if sent.is_err() || read.is_err() || !rest.is_empty() {
        server.fail(&format!(
            "lingering close with --threads {threads}, {sig:?}: sending {sent:?}, then \
             {read:?} with {} more bytes",
            rest.len()
        ));
    }
    settle(&server, sig);
}

/// SHA-256 of `data` as lower-case hex, computed by Python (no hashing crate in the tests).
fn sha256_hex(data: &[u8]) -> String {
    let dir = common::TempDir::new("sha");
    let path = dir.path().join("data");
    std::fs::write(&path, data).expect("write data");
    let out = common::python(&format!(
        "import hashlib; print(hashlib.sha256(open({:?}, 'rb').read()).hexdigest())",
        path.to_string_lossy()
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn usr1_hup_and_term_during_a_slow_20_mb_download_deliver_every_byte() {
    for sig in Sig::ALL {
        slow_download("/big?mb=20", 20, 1, sig);
    }
}

#[test]
fn hup_between_the_halves_of_a_10_mb_upload_loses_nothing() {
    let (server, worker) = start(1, &[]);
    let size = 10 * MIB;
    let body = vec![b'u'; size];
    let mut stream = held_connection(&server);
    stream
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        )
        .expect("head");
    for piece in body[..size / 2].chunks(256 * 1024) {
        stream.write_all(piece).expect("first half");
    }
    signal_worker_via_master(&server, worker, Sig::Hup);
    let mut sent = Ok(());
    for piece in body[size / 2..].chunks(256 * 1024) {
        sent = stream.write_all(piece);
        if sent.is_err() {
            break;
        }
    }
    let (raw, ended) = read_sized(&mut stream, Vec::new());
    let text = String::from_utf8_lossy(&raw);
    if sent.is_err() || ended.is_err() || !text.contains(&format!("\"total\": {size}")) {
        server.fail(&format!(
            "10 MB upload across HUP: second half {sent:?}, answer {ended:?}: {text:?}"
        ));
    }
}

#[test]
fn signals_during_a_head_read_lose_no_request() {
    for threads in [1, 4] {
        for sig in Sig::ALL {
            split_head(threads, sig);
        }
    }
}

#[test]
fn signals_during_a_body_read_lose_no_byte() {
    for threads in [1, 4] {
        for sig in Sig::ALL {
            split_upload(threads, sig);
        }
    }
}

#[test]
fn signals_during_a_streamed_write_lose_no_byte() {
    for threads in [1, 4] {
        for sig in Sig::ALL {
            slow_download("/big?mb=8", 8, threads, sig);
        }
    }
}

#[test]
fn signals_during_sendfile_lose_no_byte() {
    for threads in [1, 4] {
        for sig in Sig::ALL {
            slow_download("/file?mb=8", 8, threads, sig);
        }
    }
}

#[test]
fn signals_during_a_lingering_close_lose_no_answer() {
    for threads in [1, 4] {
        for sig in Sig::ALL {
            lingering_close(threads, sig);
        }
    }
}

#[test]
fn ttin_and_ttou_sent_to_every_minigun_process_do_not_stop_a_worker() {
    // `pkill -TTIN minigun` reaches the workers too; the default action of TTIN and TTOU is to
    // stop the process, which would leave its clients hanging. Only the master acts on them.
    let (server, worker) = start(1, &[]);
    for sig in [libc::SIGTTIN, libc::SIGTTOU] {
        common::send_signal(worker, sig);
        // misuse:app answers "/" with its 404; any answer shows the worker still serves.
        let response = common::try_http_get(server.port(), "/")
            .unwrap_or_else(|e| server.fail(&format!("no answer after signal {sig}: {e}")));
        assert_eq!(response.status, 404);
        let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).expect("stat");
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(!state.starts_with('T'), "worker stopped: {stat}");
    }
    assert_eq!(server.worker_pids(), vec![worker]);
}
