//! `--reload`: editing the app's source starts new workers with the new code; a broken edit
//! leaves the old code serving, with its traceback logged once; the fix then reloads.
//!
//! Each test writes its app into a temp dir and edits it there, as a developer would; every
//! wait polls the server with a deadline.

mod common;

use std::path::Path;

use common::{http_get, poll, Server, TempDir, WAIT};

/// The app: its answer is `helper.VERSION` and the first line of `greeting.txt`, both read at
/// import, so only new workers can answer with new values.
const APP: &str = "\
import helper

with open('greeting.txt') as f:
    GREETING = f.read().strip()


def app(environ, start_response):
    body = f'{helper.VERSION} {GREETING}'.encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
";

fn helper(version: &str) -> String {
    format!("VERSION = {version:?}\n")
}

/// Polls until the server answers `want`.
fn wait_for_answer(server: &Server, want: &str) {
    let mut seen = String::new();
    if !poll(WAIT, || {
        seen = http_get(server.port(), "/").text();
        seen == want
    }) {
        server.fail(&format!("still answering {seen:?}, not {want:?}"));
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn an_edited_module_reloads_a_broken_one_keeps_the_old_code_and_its_fix_reloads() {
    let dir = TempDir::new("reload");
    write(&dir.path().join("app.py"), APP);
    write(&dir.path().join("helper.py"), &helper("v1"));
    let greeting = dir.path().join("greeting.txt");
    write(&greeting, "hello\n");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path");
    let extra = greeting.to_str().expect("utf-8 temp path");
    // Without the caller's PYTHONDONTWRITEBYTECODE, so the check below is minigun's doing.
    let server = Server::build(&[
        "--chdir",
        dir_arg,
        "--reload",
        "--reload-extra-file",
        extra,
        "-w",
        "2",
        "app:app",
    ])
    .env_remove("PYTHONDONTWRITEBYTECODE")
    .start();
    server.wait_for_workers(2, WAIT);
    assert_eq!(http_get(server.port(), "/").text(), "v1 hello");

    // An imported module changes: new workers, new code.
    let helper_py = dir.path().join("helper.py");
    write(&helper_py, &helper("v2"));
    wait_for_answer(&server, "v2 hello");
    server.wait_for_line(
        &format!("Reloading workers: {} modified", helper_py.display()),
        WAIT,
    );
    // A file named with --reload-extra-file changes.
    write(&greeting, "bonjour\n");
    wait_for_answer(&server, "v2 bonjour");
    // Until both old workers are gone, the second new one may still be importing: it would
    // read the broken file written next, and fail the whole generation.
    server.wait_for_lines("Worker exiting", 4, WAIT);

    // A syntax error: the new worker cannot import it, the old ones serve on.
    write(&helper_py, "VERSION = 'v3\n");
    server.wait_for_line(
        "New workers failed to boot; the old workers keep serving",
        WAIT,
    );
    assert_eq!(http_get(server.port(), "/").text(), "v2 bonjour");
    assert_eq!(
        server.count_lines("SyntaxError"),
        1,
        "the error is logged once"
    );
    assert_eq!(server.count_lines("Traceback (most recent call last)"), 1);
    server.wait_for_workers(2, WAIT);

    // The fix reloads.
    write(&helper_py, &helper("v3"));
    wait_for_answer(&server, "v3 bonjour");
    server.wait_for_workers(2, WAIT);
    assert_eq!(server.count_lines("Traceback (most recent call last)"), 1);
    assert!(
        !dir.path().join("__pycache__").exists(),
        "with --reload the workers write no bytecode (a stale .pyc could hide an edit)"
    );
}

#[test]
fn reload_refuses_a_preloaded_app() {
    let server = Server::build(&["--reload", "--preload", "app:app"])
        .no_default_bind()
        .spawn();
    assert_eq!(server.wait_exit(WAIT).code(), Some(2));
    let lines = server.stderr_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("--reload") && lines[0].contains("--preload"),
        "{lines:?}"
    );
}

#[test]
fn a_burst_of_edits_while_workers_boot_reloads_one_generation_at_a_time() {
    let dir = TempDir::new("reload-burst");
    // Importing takes a second, as a real app's might: edits arrive while workers boot.
    write(
        &dir.path().join("app.py"),
        &format!("import time\ntime.sleep(1)\n{APP}"),
    );
    write(&dir.path().join("helper.py"), &helper("v0"));
    write(&dir.path().join("greeting.txt"), "hello\n");
    let dir_arg = dir.path().to_str().expect("utf-8 temp path");
    let server = Server::build(&["--chdir", dir_arg, "--reload", "-w", "2", "app:app"])
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .start();
    server.wait_for_workers(2, WAIT);
    wait_for_answer(&server, "v0 hello");
    // Twenty saves, 100 ms apart (an editor, a formatter, a rebase), while counting workers.
    let helper_py = dir.path().join("helper.py");
    let mut most = 0;
    for i in 1..=20 {
        write(&helper_py, &helper(&format!("v{i}")));
        let until = std::time::Instant::now() + std::time::Duration::from_millis(100);
        while std::time::Instant::now() < until {
            most = most.max(server.worker_pids().len());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    wait_for_answer(&server, "v20 hello");
    // Two old workers and one new generation of two at the most, never a pile of generations.
    assert!(most <= 4, "{most} workers at once during a burst of edits");
    assert!(
        !dir.path().join("__pycache__").exists(),
        "bytecode was written under --reload"
    );
}
