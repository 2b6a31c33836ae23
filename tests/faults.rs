//! Faults against the real binary (issue 4, "Faults"): a worker killed under load, a hung app,
//! app errors of every kind (down to `os._exit` and a segfault), reloads and stops during load
//! and with idle keep-alive connections, `--max-requests` recycling, clients that vanish
//! mid-response, keep-alive requests back to back on several threads, and the memory of the
//! process tree over 100k requests.
//!
//! Load comes from [`Load`]: client threads that request `/` back to back, half on keep-alive
//! connections and half on a fresh connection per request, counting every request that fails
//! (a refused connect, a reset, an early close, a status other than 200). The counts are
//! printed; run with `cargo test --test faults -- --nocapture` to see them.
//!
//! The tests here take turns (see [`exclusive`]): each one either puts the machine under load
//! or measures time, and on a two-core CI runner two of them side by side would disturb each
//! other's figures.

mod common;

use common::{exchange, is_alive, parse_response, poll, rss_kib, Client, Server, WAIT};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Serialises the tests of this file; a failed test's poisoned lock is taken over as it is.
fn exclusive() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a load run saw.
#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    failures: Vec<String>,
    /// The worker pids that answered (the apps used here put theirs in the body).
    pids: BTreeSet<u32>,
}

/// Client threads requesting `path` back to back until stopped or a total is reached.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Tally>>,
}

impl Load {
    /// Starts `clients` threads. Even-numbered ones keep their connection alive (reopening it
    /// whenever the server closes it); odd-numbered ones, unless `keep_alive_only`, open a fresh
    /// connection per request. Every thread stops once `total` requests succeeded in all, or
    /// after two minutes.
    fn start(port: u16, clients: usize, path: &str, keep_alive_only: bool, total: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let ok = Arc::clone(&ok);
                let keep_alive = keep_alive_only || i % 2 == 0;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: t\r\n{}\r\n",
                    if keep_alive {
                        ""
                    } else {
                        "Connection: close\r\n"
                    }
                );
                thread::spawn(move || client_loop(port, request, keep_alive, &stop, &ok, total))
            })
            .collect();
        Load { stop, ok, threads }
    }

    /// Requests that succeeded so far.
    fn done(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` requests succeeded in all.
    fn wait_for(&self, n: u64, server: &Server) {
        if !poll(Duration::from_secs(60), || self.done() >= n) {
            server.fail(&format!("only {} of {n} requests done", self.done()));
        }
    }

    /// Stops the clients and adds up what they saw.
    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Release);
        let mut sum = Tally::default();
        for t in self.threads {
            let tally = t.join().expect("client thread");
            sum.ok += tally.ok;
            sum.failures.extend(tally.failures);
            sum.pids.extend(tally.pids);
        }
        sum
    }
}

/// One client thread of a [`Load`].
fn client_loop(
    port: u16,
    request: String,
    keep_alive: bool,
    stop: &AtomicBool,
    ok: &AtomicU64,
    total: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Client> = None;
    let give_up = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Acquire) && ok.load(Ordering::Relaxed) < total {
        if Instant::now() >= give_up {
            tally
                .failures
                .push("the load ran for two minutes".to_owned());
            break;
        }
        let client = match conn.as_mut() {
            Some(c) => c,
            None => match Client::connect(port, WAIT) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tally.failures.push(e);
                    continue;
                }
            },
        };
        match client.request(request.as_bytes()) {
            Ok(r) if r.status == 200 => {
                tally.ok += 1;
                ok.fetch_add(1, Ordering::Relaxed);
                if let Some(pid) = pid_in(&r.text()) {
                    tally.pids.insert(pid);
                }
                if !keep_alive || r.header("connection") == Some("close") {
                    conn = None;
                }
            }
            Ok(r) => {
                tally
                    .failures
                    .push(format!("status {}: {}", r.status, r.text()));
                conn = None;
            }
            Err(e) => {
                tally.failures.push(e);
                conn = None;
            }
        }
    }
    tally
}

/// The pid in a `tests/apps/slow.py` answer (`pid=N`), if there is one.
fn pid_in(text: &str) -> Option<u32> {
    text.trim().rsplit("pid=").next()?.parse().ok()
}

/// Starts `slow:app` with `-w 2` and `extra` flags; returns once both workers are forked and
/// one of them answers. (Sequential requests need not reach both: an idle worker that is woken
/// for one connection is the one woken for the next.)
fn slow_app(extra: &[&str]) -> Server {
    let mut args = vec!["--chdir", "tests/apps", "-w", "2"];
    args.extend_from_slice(extra);
    args.push("slow:app");
    let server = Server::start(&args);
    server.wait_for_workers(2, WAIT);
    server.wait_for_lines("Booting worker with pid", 2, WAIT);
    if !poll(WAIT, || common::try_http_get(server.port(), "/").is_ok()) {
        server.fail("no worker answered");
    }
    server
}

#[test]
fn a_worker_killed_under_load_is_replaced_and_only_its_connections_fail() {
    let _turn = exclusive();
    const CLIENTS: usize = 8;
    let server = slow_app(&[]);
    let port = server.port();
    let before = server.worker_pids();

    let load = Load::start(port, CLIENTS, "/", false, u64::MAX);
    load.wait_for(500, &server);
    let victim = before[0];
    common::send_signal(victim, libc::SIGKILL);
    let killed_at = load.done();
    server.wait_for_line(&format!("Worker (pid:{victim}) was sent SIGKILL!"), WAIT);
    let mut now = Vec::new();
    let replaced = poll(WAIT, || {
        now = server.worker_pids();
        now.len() == 2 && !now.contains(&victim)
    });
    if !replaced {
        server.fail(&format!(
            "worker {victim} not replaced: {before:?} -> {now:?}"
        ));
    }
    let newcomer = *now.iter().find(|p| !before.contains(p)).expect("a new pid");
    // Load goes on until the newcomer has served too.
    let mut served_by_newcomer = false;
    let more = poll(WAIT, || {
        served_by_newcomer =
            common::try_http_get(port, "/").is_ok_and(|r| pid_in(&r.text()) == Some(newcomer));
        served_by_newcomer && load.done() >= killed_at + 500
    });
    let tally = load.finish();
    println!(
        "kill: {} requests ok, {} failed around SIGKILL of worker {victim} (at request \
         {killed_at}); failures: {:?}",
        tally.ok,
        tally.failures.len(),
        tally.failures
    );
    assert!(more, "the replacement {newcomer} never served");
    // Only requests on the killed worker's connections may fail: at most one per client.
    assert!(
        tally.failures.len() <= CLIENTS,
        "{} requests failed when one worker was killed: {:?}",
        tally.failures.len(),
        tally.failures
    );
}

#[test]
fn a_hung_app_gets_its_worker_replaced_within_the_timeout_while_the_other_serves() {
    let _turn = exclusive();
    const TIMEOUT: Duration = Duration::from_secs(5);
    let server = slow_app(&["--timeout", "5"]);
    let port = server.port();
    let before = server.worker_pids();

    let hung = thread::spawn(move || common::try_http_get(port, "/hang"));
    let line = server.wait_for_line("slow-app: hanging", WAIT);
    let hung_at = Instant::now();
    let victim = pid_in(&line).unwrap_or_else(|| panic!("no pid in {line:?}"));
    assert!(
        before.contains(&victim),
        "{victim} is not one of {before:?}"
    );

    // The other worker keeps answering while the hung one waits for its end.
    let mut served = 0;
    let mut failures = Vec::new();
    let mut replaced_after = None;
    while hung_at.elapsed() < TIMEOUT + Duration::from_secs(4) {
        match common::try_http_get(port, "/") {
            Ok(r) if r.status == 200 => served += 1,
            other => failures.push(format!("{other:?}")),
        }
        let now = server.worker_pids();
        if replaced_after.is_none() && now.len() == 2 && !now.contains(&victim) {
            replaced_after = Some(hung_at.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "hung app: worker {victim} replaced after {replaced_after:?}; {served} requests served \
         meanwhile, {} failed",
        failures.len()
    );
    let replaced_after = replaced_after.unwrap_or_else(|| {
        server.fail(&format!(
            "hung worker {victim} not replaced within {:?}",
            hung_at.elapsed()
        ))
    });
    assert!(
        failures.is_empty(),
        "requests failed meanwhile: {failures:?}"
    );
    assert!(served > 0, "nothing was served while a worker hung");
    assert!(
        replaced_after >= TIMEOUT - Duration::from_millis(500),
        "the hung worker was killed after {replaced_after:?}, before the {TIMEOUT:?} timeout"
    );
    assert!(
        replaced_after <= TIMEOUT + Duration::from_secs(2),
        "the hung worker was replaced only after {replaced_after:?}"
    );
    server.wait_for_line(&format!("WORKER TIMEOUT (pid:{victim})"), WAIT);
    assert!(!is_alive(victim));
    // The hung client's connection ends with its worker: an error, or a 5xx, never a hang.
    if let Ok(r) = hung.join().expect("hung client") {
        assert!(r.status >= 500, "the hung request got {r:?}");
    }
}

/// Sends `path` with `Connection: close` and returns every byte the server sent.
fn raw_get(port: u16, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let raw =
        exchange(port, request.as_bytes(), WAIT).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    String::from_utf8_lossy(&raw).into_owned()
}

/// A whole 500 response.
fn expect_500(raw: &str) -> Result<(), String> {
    match parse_response(raw.as_bytes()) {
        Ok(r) if r.status == 500 => Ok(()),
        other => Err(format!("expected a 500, got {other:?}")),
    }
}

/// The 200 head that was already sent, then a body the client cannot take for complete.
fn expect_cut_short(raw: &str) -> Result<(), String> {
    if !raw.starts_with("HTTP/1.1 200 ") {
        return Err("expected the 200 head that was already sent".into());
    }
    match parse_response(raw.as_bytes()) {
        Err(_) => Ok(()),
        Ok(r)
            if r.header("content-length").is_none() && r.header("transfer-encoding").is_none() =>
        {
            Err("a body framed by the close looks complete to the client".into())
        }
        Ok(r) => Err(format!("the truncated response parses as complete: {r:?}")),
    }
}

#[test]
fn app_errors_get_the_right_answer_and_are_logged_once_each_and_the_worker_lives() {
    let _turn = exclusive();
    let server = Server::start(&["-w", "1", "--chdir", "tests/apps", "proto:app"]);
    let port = server.port();
    let [worker] = server.wait_for_workers(1, WAIT)[..] else {
        unreachable!("wait_for_workers returned one pid")
    };
    // One ERROR entry per failure (with the app's traceback when the app raised; a str body
    // is refused by the server, so that entry names the TypeError without frames).
    let entry = "[ERROR]";
    assert_eq!(common::http_get(port, "/hello").status, 200);

    // (path, what the client must see). Each failure is logged with one traceback.
    type Check = fn(&str) -> Result<(), String>;
    let cases: [(&str, Check); 9] = [
        ("/raise-before", expect_500),
        ("/raise-after-start", expect_500),
        ("/raise-mid", expect_cut_short),
        ("/raise-mid-length", expect_cut_short),
        ("/twice", expect_500),
        ("/str-body", expect_500),
        ("/crlf-header", |raw| {
            if raw.contains("Set-Cookie") || raw.contains("evil") {
                return Err("the injected header went out".into());
            }
            expect_500(raw)
        }),
        ("/bad-status", |raw| {
            if raw.contains("\r\nX: y") {
                return Err("the injected header went out".into());
            }
            expect_500(raw)
        }),
        ("/close-raises", |raw| {
            match parse_response(raw.as_bytes()) {
                Ok(r) if r.status == 200 && r.text() == "body is complete\n" => Ok(()),
                other => Err(format!("expected the whole 200 body, got {other:?}")),
            }
        }),
    ];
    for (i, (path, check)) in cases.iter().enumerate() {
        let raw = raw_get(port, path);
        if let Err(why) = check(&raw) {
            server.fail(&format!("{path}: {why}; raw answer {raw:?}"));
        }
        server.wait_for_lines(entry, i + 1, WAIT);
        let answer = common::http_get(port, "/hello");
        assert_eq!(answer.status, 200, "after {path}");
    }
    // A last failure as a marker: every earlier entry was written before its own.
    let raw = raw_get(port, "/raise-before");
    assert!(raw.starts_with("HTTP/1.1 500 "), "{raw:?}");
    let logged = server.wait_for_lines(entry, cases.len() + 1, WAIT).len();
    let tracebacks = server.count_lines("Traceback (most recent call last)");
    println!(
        "app errors: {} failing requests, {logged} error entries, {tracebacks} tracebacks",
        cases.len() + 1
    );
    assert_eq!(
        logged,
        cases.len() + 1,
        "{} failing requests logged {logged} error entries",
        cases.len() + 1
    );
    assert_eq!(
        tracebacks,
        cases.len(),
        "every failure but the str body has its traceback"
    );
    assert_eq!(
        server.worker_pids(),
        vec![worker],
        "the worker was replaced"
    );
    let closed = common::http_get(port, "/closed").text();
    assert!(
        closed.contains(&format!("\"pid\": {worker}")),
        "answered by another process: {closed}"
    );
}

#[test]
fn two_reloads_under_load_fail_no_request_and_replace_the_workers() {
    let _turn = exclusive();
    const CLIENTS: usize = 32;
    let server = slow_app(&["--threads", "4"]);
    let port = server.port();
    let first = server.worker_pids();

    let started = Instant::now();
    let load = Load::start(port, CLIENTS, "/", false, u64::MAX);
    let mut generations = vec![first.clone()];
    for round in 1..=2 {
        // A reload at about 3 s and 6 s into the 10 s load.
        let at = Duration::from_secs(3 * round);
        thread::sleep(at.saturating_sub(started.elapsed()));
        let old = generations.last().expect("a generation").clone();
        server.signal(libc::SIGHUP);
        let mut now = Vec::new();
        let replaced = poll(WAIT, || {
            now = server.worker_pids();
            now.len() == 2 && now.iter().all(|p| !old.contains(p))
        });
        if !replaced {
            server.fail(&format!("reload {round}: workers {old:?} -> {now:?}"));
        }
        generations.push(now);
    }
    thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let tally = load.finish();
    println!(
        "HUP x2: {} requests ok, {} failed over {:?} at {CLIENTS} connections; workers {:?}; \
         answered by {:?}",
        tally.ok,
        tally.failures.len(),
        started.elapsed(),
        generations,
        tally.pids
    );
    assert!(
        tally.failures.is_empty(),
        "{} requests failed during reloads: {:?}",
        tally.failures.len(),
        tally.failures
    );
    let last = generations.last().expect("three generations");
    assert!(
        last.iter().all(|p| !first.contains(p)),
        "{first:?} -> {last:?}"
    );
    assert!(
        tally.pids.iter().any(|p| last.contains(p)),
        "the last generation {last:?} never answered: {:?}",
        tally.pids
    );
}

#[test]
fn sigterm_finishes_ten_in_flight_requests_then_exits_zero() {
    let _turn = exclusive();
    let server = slow_app(&["--threads", "5"]);
    let port = server.port();
    let clients: Vec<_> = (0..10)
        .map(|_| thread::spawn(move || common::try_http_get(port, "/sleep?s=2")))
        .collect();
    // Only once all ten are inside the app, not queued.
    server.wait_for_lines("slow-app: sleeping", 10, WAIT);
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let mut answered = 0;
    for client in clients {
        match client.join().expect("client thread") {
            Ok(r) if r.status == 200 && r.text().starts_with("slept pid=") => answered += 1,
            other => server.fail(&format!("an in-flight request got {other:?}")),
        }
    }
    let status = server.wait_exit(Duration::from_secs(15));
    println!(
        "TERM: {answered} of 10 in-flight requests answered; exit {status} after {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    // The requests had at most 2 s to go; the rest is headroom for a loaded machine.
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "took {:?}",
        sent.elapsed()
    );
}

#[test]
fn graceful_timeout_1_ends_a_5_second_request_and_exits_within_2_seconds() {
    let _turn = exclusive();
    let server = slow_app(&["--graceful-timeout", "1"]);
    let port = server.port();
    let client = thread::spawn(move || common::try_http_get(port, "/sleep?s=5"));
    server.wait_for_line("slow-app: sleeping", WAIT);
    let workers = server.worker_pids();
    let sent = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    let took = sent.elapsed();
    println!("graceful-timeout 1: exit {status} after {took:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert!(
        poll(WAIT, || workers.iter().all(|&p| !is_alive(p))),
        "workers {workers:?} outlived the master"
    );
    // The cut-off request ends with an error, not a hang and not a fake success.
    if let Ok(r) = client.join().expect("client") {
        assert_ne!(
            r.status, 200,
            "the 5 s request cannot have completed: {r:?}"
        );
    }
}

#[test]
fn max_requests_recycles_workers_under_load_without_failing_a_request() {
    let _turn = exclusive();
    const CLIENTS: usize = 8;
    // Threads too: a retiring worker must answer each kept-alive connection's next request
    // before closing it, whichever thread holds it.
    let server = slow_app(&["--max-requests", "100", "--threads", "4"]);
    let port = server.port();
    let first = server.worker_pids();

    let load = Load::start(port, CLIENTS, "/", false, 1000);
    load.wait_for(1000, &server);
    let tally = load.finish();
    let recycled = server.count_lines("Autorestarting worker");
    println!(
        "max-requests 100: {} requests ok, {} failed; {recycled} restarts; {} worker pids \
         answered",
        tally.ok,
        tally.failures.len(),
        tally.pids.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} requests failed while workers were recycled: {:?}",
        tally.failures.len(),
        tally.failures
    );
    // 1000 requests at 100 per worker: at least 8 workers served in turn.
    assert!(
        tally.pids.len() >= 8 && recycled >= 6,
        "workers were not recycled: {:?}, {recycled} restarts",
        tally.pids
    );
    let now = server.wait_for_workers(2, WAIT);
    assert!(
        now.iter().all(|p| !first.contains(p)),
        "{first:?} -> {now:?}"
    );
}

/// The summed RSS of the master and its workers, in KiB.
fn tree_rss_kib(server: &Server) -> u64 {
    let mut pids = server.worker_pids();
    pids.push(server.master_pid());
    pids.into_iter().map(rss_kib).sum()
}

#[test]
fn memory_of_the_process_tree_is_flat_from_20k_to_100k_requests() {
    let _turn = exclusive();
    const CLIENTS: usize = 4;
    // Several threads per worker, so per-thread state (environ caches, buffers) is covered.
    let server = Server::start(&[
        "-w",
        "2",
        "--threads",
        "4",
        "--chdir",
        "examples",
        "hello:app",
    ]);
    let port = server.port();
    server.wait_for_workers(2, WAIT);
    assert!(poll(WAIT, || common::try_http_get(port, "/").is_ok()));
    let started = Instant::now();

    let mut measured = Vec::new();
    let mut done = 0;
    for target in [20_000u64, 100_000] {
        let load = Load::start(port, CLIENTS, "/", true, target - done);
        load.wait_for(target - done, &server);
        let tally = load.finish();
        assert!(tally.failures.is_empty(), "{:?}", tally.failures);
        done += tally.ok;
        measured.push((done, tree_rss_kib(&server), started.elapsed()));
    }
    println!("memory: (requests, tree RSS KiB, elapsed) {measured:?}");
    let (_, at_20k, _) = measured[0];
    let (_, at_100k, _) = measured[1];
    assert!(
        at_100k.abs_diff(at_20k) < 5 * 1024,
        "tree RSS went from {at_20k} KiB after 20k requests to {at_100k} KiB after 100k"
    );
}

#[test]
fn keep_alive_requests_sent_back_to_back_never_stall_with_threads() {
    let _turn = exclusive();
    let server = Server::start(&[
        "-w",
        "1",
        "--threads",
        "2",
        "--keep-alive",
        "5",
        "--chdir",
        "examples",
        "hello:app",
    ]);
    let port = server.port();
    assert!(poll(WAIT, || common::try_http_get(port, "/").is_ok()));
    // One client, each request sent the moment the previous answer is in: the connection is
    // parked and re-armed between every two requests.
    let mut client = Client::connect(port, Duration::from_secs(10)).expect("connect");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..2000 {
        let sent = Instant::now();
        match client.request(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") {
            Ok(r) if r.status == 200 => {}
            other => server.fail(&format!(
                "request {i} on a keep-alive connection got {other:?} after {:?}",
                sent.elapsed()
            )),
        }
        slowest = slowest.max(sent.elapsed());
    }
    println!(
        "back-to-back keep-alive: 2000 requests in {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    // A lost wake-up shows as a request that waits for the 5 s keep-alive sweep.
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?}"
    );
}

#[test]
fn clients_that_vanish_mid_response_cost_the_worker_nothing() {
    let _turn = exclusive();
    let server = Server::start(&["-w", "1", "--chdir", "tests/apps", "abuse_big:app"]);
    let port = server.port();
    let [worker] = server.wait_for_workers(1, WAIT)[..] else {
        unreachable!("wait_for_workers returned one pid")
    };
    assert!(poll(WAIT, || common::try_http_get(port, "/").is_ok()));
    let rss_before = rss_kib(worker);
    // Each asks for 64 MiB, takes a bite and hangs up with the rest unread (a reset).
    for i in 0..50 {
        let mut c = Client::connect(port, WAIT).expect("connect");
        c.stream
            .write_all(b"GET /big?64 HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("request");
        let mut bite = [0u8; 64 * 1024];
        let n = c.stream.read(&mut bite).unwrap_or(0);
        assert!(n > 0, "client {i} got nothing");
    }
    // The worker is the same, answers at once, and said nothing alarming about it.
    let answer = common::try_http_get(port, "/");
    assert!(matches!(&answer, Ok(r) if r.status == 200), "{answer:?}");
    let rss_after = rss_kib(worker);
    println!("vanishing clients: worker RSS {rss_before} -> {rss_after} KiB");
    assert_eq!(server.worker_pids(), vec![worker]);
    let errors = server.count_lines("[ERROR]") + server.count_lines("Traceback");
    if errors > 0 {
        server.fail(&format!("{errors} error lines for clients that went away"));
    }
    assert!(
        rss_after < rss_before + 4 * 1024,
        "worker RSS {rss_before} -> {rss_after} KiB after 50 abandoned responses"
    );
}

#[test]
fn a_reload_answers_every_idle_keep_alive_connection_once_more_before_closing_it() {
    let _turn = exclusive();
    const IDLE: usize = 200;
    let server = slow_app(&["--threads", "2", "--keep-alive", "60"]);
    let port = server.port();
    let old = server.worker_pids();
    let hello = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut idle: Vec<Client> = (0..IDLE)
        .map(|i| {
            let mut c = Client::connect(port, WAIT).expect("connect");
            let status = c.request(hello).map(|r| r.status);
            assert_eq!(status, Ok(200), "idle connection {i}");
            c
        })
        .collect();

    server.signal(libc::SIGHUP);
    // The old workers retire once the new generation has loaded the app, a moment the log
    // does not mark. So: rounds of one request on every connection still open, until each
    // has been answered with `Connection: close`. No request may fail on the way.
    let mut open: Vec<usize> = (0..IDLE).collect();
    let mut requests = 0;
    let give_up = Instant::now() + WAIT;
    while !open.is_empty() && Instant::now() < give_up {
        let mut still_open = Vec::new();
        for i in open {
            requests += 1;
            match idle[i].request(hello) {
                Ok(r) if r.status == 200 => {
                    if r.header("connection") != Some("close") {
                        still_open.push(i);
                    }
                }
                other => server.fail(&format!(
                    "idle connection {i} after HUP: {other:?} (old workers {old:?}, now {:?})",
                    server.worker_pids()
                )),
            }
        }
        open = still_open;
    }
    println!(
        "HUP with {IDLE} idle keep-alive connections: {requests} requests, none failed; {} \
         connections left open",
        open.len()
    );
    if !open.is_empty() {
        server.fail(&format!(
            "{} connections were never told to close after HUP",
            open.len()
        ));
    }
    let gone = poll(WAIT, || old.iter().all(|&p| !is_alive(p)));
    if !gone {
        server.fail(&format!(
            "old workers {old:?} outlived their last connections"
        ));
    }
    let fresh = common::try_http_get(port, "/").expect("a request after the reload");
    let pid = pid_in(&fresh.text()).expect("a pid");
    assert!(!old.contains(&pid), "answered by old worker {pid}");
}

#[test]
fn base_exceptions_get_500_and_a_dying_worker_is_replaced_without_stopping_the_master() {
    let _turn = exclusive();
    let server = Server::start(&["-w", "1", "--chdir", "tests/apps", "abuse_crash:app"]);
    let port = server.port();
    let [worker] = server.wait_for_workers(1, WAIT)[..] else {
        unreachable!("wait_for_workers returned one pid")
    };
    assert!(poll(WAIT, || common::try_http_get(port, "/").is_ok()));

    // Exceptions that are not `Exception`s still only fail their own request.
    for path in ["/sysexit", "/keyboard", "/recursion", "/memoryerror"] {
        let answer = common::try_http_get(port, path);
        match &answer {
            Ok(r) if r.status == 500 => {}
            other => server.fail(&format!("{path}: expected a 500, got {other:?}")),
        }
        let after = common::try_http_get(port, "/").map(|r| r.text());
        assert_eq!(after, Ok(format!("pid={worker}\n")), "after {path}");
    }

    // A worker that ends mid-request: its client gets no fake answer, a new worker takes
    // over, and exit status 3 after booting is not mistaken for a boot failure.
    let mut current = worker;
    for (path, log) in [
        ("/os-exit", "exited with code 3"),
        ("/segfault", "was sent signal 11"),
    ] {
        let answer = common::try_http_get(port, path);
        assert!(answer.is_err(), "{path} got an answer: {answer:?}");
        server.wait_for_line(&format!("Worker (pid:{current}) {log}"), WAIT);
        let mut now = Vec::new();
        let replaced = poll(WAIT, || {
            now = server.worker_pids();
            now.len() == 1 && now[0] != current
        });
        if !replaced {
            server.fail(&format!("after {path}: workers {now:?}"));
        }
        current = now[0];
        let after = common::try_http_get(port, "/").map(|r| r.text());
        assert_eq!(after, Ok(format!("pid={current}\n")), "after {path}");
    }
    assert!(server.try_exit().is_none(), "the master stopped");
}
