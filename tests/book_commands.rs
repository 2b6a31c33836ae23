//! Runs every command the book prints, exactly as printed, and compares what it prints with
//! what the book shows.
//!
//! A reader types the book's ```` ```console ```` blocks into a terminal, so this test does
//! the same with real shells: every line that starts with `$ ` is a command (a line ending in
//! `\` continues on the next line, which starts with `> `), and the lines after it, up to the
//! next command, are its output. Blocks tagged ```` ```console,terminal1 ```` start a server:
//! the reader runs them in a first terminal and leaves them running, so here the last command
//! of such a block is typed without waiting for its end, and the test goes on once the server
//! has printed the lines the block shows (its `Listening on` line first of all). The next
//! `console,terminal1` block with commands first presses Ctrl+C (SIGINT to every process the
//! server command started, as a terminal sends it to its foreground job) and then types into
//! the same shell, so a `cd` or `export` of an earlier block is still in force, as it is for
//! the reader. A `console,terminal1` block with no command is what that first terminal shows
//! by then. Every other console block runs, in order, in one second shell that lives for the
//! whole page, so `cd`, variables and background jobs carry over there too.
//!
//! A reader goes on to the next chapter with the same two terminals, so each page's shells
//! start where the pages before it left them: before the first block, each shell silently
//! replays the `cd`, `source`, `export` and `mkdir` commands that the earlier pages typed into
//! that terminal.
//!
//! `book/README.md` is the authors' side of this: the block format, the free port that
//! replaces the book's 8000, and the masks for what must vary from run to run (ports, pids,
//! timings, rates, versions). Every wait is bounded; both shells run in process groups of
//! their own, which the test kills when the page is done or has failed.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The port the book prints. The test replaces it with a free port in commands, and that
/// port with this one in what the commands print.
const BOOK_PORT: &str = "8000";

/// How long one command may take. `cargo` may have to build a step first.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
const CARGO_LIMIT: Duration = Duration::from_secs(600);

/// How long a server may take to stop after Ctrl+C (then, as long again after SIGKILL).
const INTERRUPT_LIMIT: Duration = Duration::from_secs(35);

/// How long `ps` and `ss`, which show a state that settles a moment later, are re-run until
/// their output matches the book.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The tools the book's commands use, with the Debian package that has each one.
const TOOLS: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("nc", "netcat-openbsd"),
    ("wrk", "wrk"),
    ("ps", "procps"),
    ("pgrep", "procps"),
    ("ss", "iproute2"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// -- reading the book -------------------------------------------------------------------------

/// One command as the book prints it, and the output lines printed after it.
#[derive(Debug)]
struct Cmd {
    /// The command with continuation lines joined, as the shell will see it.
    text: String,
    expected: Vec<String>,
}

/// One ```` ```console ```` block.
#[derive(Debug)]
struct Block {
    /// `page.md:line` of the opening fence, for messages.
    at: String,
    /// Tagged `terminal1`: a server start, or what the first terminal shows.
    terminal1: bool,
    /// The paragraph just before the block, which must tell the reader which terminal.
    intro: String,
    /// Output lines before the first command: only a `terminal1` block without commands
    /// has them.
    output: Vec<String>,
    commands: Vec<Cmd>,
}

/// Replaces each `{{#include path}}` and `{{#include path:anchor}}` by what mdBook puts
/// there, so that included transcripts run like typed ones. Returns the lines, each with
/// the number of the page's line it came from.
fn expand_includes(page: &Path, text: &str) -> Vec<(usize, String)> {
    let dir = page.parent().expect("a page lives in a folder");
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let Some(start) = line.find("{{#include ") else {
            out.push((number, line.to_string()));
            continue;
        };
        if line[..start].ends_with('\\') {
            out.push((number, line.to_string()));
            continue;
        }
        let end = line[start..]
            .find("}}")
            .map(|e| start + e)
            .unwrap_or_else(|| {
                panic!("{}:{number}: unclosed include", page.display());
            });
        let argument = line[start + "{{#include ".len()..end].trim();
        let (file, anchor) = match argument.split_once(':') {
            Some((file, anchor)) => (file, Some(anchor)),
            None => (argument, None),
        };
        let path = dir.join(file);
        let body = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: include {}: {e}", page.display(), path.display()));
        let body = match anchor {
            None => body,
            Some(anchor) => anchored(&body, anchor)
                .unwrap_or_else(|| panic!("{}: no anchor {anchor} in {file}", page.display())),
        };
        let expanded = format!(
            "{}{}{}",
            &line[..start],
            body.trim_end_matches('\n'),
            &line[end + 2..]
        );
        out.extend(expanded.lines().map(|l| (number, l.to_string())));
    }
    out
}

/// The lines between `ANCHOR: name` and `ANCHOR_END: name`, without any anchor lines.
fn anchored(text: &str, name: &str) -> Option<String> {
    let mut inside = false;
    let mut found = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.contains(&format!("ANCHOR: {name}")) && !inside {
            inside = true;
            found = true;
        } else if line.contains(&format!("ANCHOR_END: {name}")) {
            inside = false;
        } else if inside && !line.contains("ANCHOR: ") && !line.contains("ANCHOR_END: ") {
            lines.push(line);
        }
    }
    found.then(|| lines.join("\n"))
}

/// The console blocks of one page, in order. Panics on a prompt outside a console block.
fn console_blocks(name: &str, numbered: &[(usize, String)]) -> Vec<Block> {
    let lines: Vec<&str> = numbered.iter().map(|(_, l)| l.as_str()).collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let tags: Vec<&str> = info.split(',').map(str::trim).collect();
        let open = i;
        // A block inside a list item is indented; its lines are, as far as the fence is.
        let indent = lines[i].len() - lines[i].trim_start().len();
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            let line = lines[i];
            let cut = line.len() - line.trim_start().len();
            body.push(&line[cut.min(indent)..]);
            i += 1;
        }
        i += 1; // the closing fence
        let at = format!("{name}:{}", numbered[open].0);
        if tags[0] != "console" {
            if let Some(line) = body.iter().find(|l| l.starts_with("$ ")) {
                panic!("{at}: a `$ ` prompt outside a console block: {line:?}");
            }
            continue;
        }
        let mut block = Block {
            at,
            terminal1: tags.contains(&"terminal1"),
            intro: paragraph_before(&lines, open),
            output: Vec::new(),
            commands: Vec::new(),
        };
        let mut rest = body.into_iter();
        while let Some(line) = rest.next() {
            if let Some(command) = line.strip_prefix("$ ") {
                let mut text = command.to_string();
                while text.ends_with('\\') {
                    text.pop();
                    let next = rest.next().unwrap_or_default();
                    let more = next.strip_prefix("> ").unwrap_or_else(|| {
                        panic!("{}: a continuation line must start with `> `", block.at)
                    });
                    text.push_str(more);
                }
                block.commands.push(Cmd {
                    text,
                    expected: Vec::new(),
                });
            } else if let Some(cmd) = block.commands.last_mut() {
                cmd.expected.push(line.to_string());
            } else {
                block.output.push(line.to_string());
            }
        }
        if block.commands.is_empty() && !block.terminal1 {
            panic!(
                "{}: a console block without a `$ ` command; use ```text for output alone, \
                 or tag it terminal1 for what the first terminal shows",
                block.at
            );
        }
        blocks.push(block);
    }
    blocks
}

/// The paragraph above line `open`, skipping blank lines.
fn paragraph_before(lines: &[&str], open: usize) -> String {
    let mut end = open;
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && !lines[start - 1].trim().is_empty() && !lines[start - 1].starts_with("```") {
        start -= 1;
    }
    lines[start..end].join(" ")
}

// -- comparing output -------------------------------------------------------------------------

/// Lines cargo prints about its own work; the book does not show them.
fn is_cargo_progress(line: &str) -> bool {
    let words = [
        "Compiling ",
        "Finished ",
        "Running ",
        "Blocking ",
        "Locking ",
        "Updating ",
        "Downloading ",
        "Downloaded ",
        "Checking ",
        "Fresh ",
    ];
    let trimmed = line.trim_start();
    line.starts_with(' ') && words.iter().any(|w| trimmed.starts_with(w))
}

/// Replaces the digits right after each `marker` with `with`.
fn mask_after(line: &str, marker: &str, keep: fn(char) -> bool, with: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let len = after.find(|c: char| !keep(c)).unwrap_or(after.len());
        out.push_str(&rest[..at + marker.len()]);
        if len > 0 && after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(with);
        } else {
            out.push_str(&after[..len]);
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// `[1234]` becomes `[<pid>]`.
fn mask_bracketed_numbers(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('[') {
        out.push_str(&rest[..=at]);
        let after = &rest[at + 1..];
        let len = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with(']') {
            out.push_str("<pid>");
            rest = &after[len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `[2026-12-05 12:18:43 +0000]`, the time at the start of a line of minigun's error log
/// (gunicorn's format), becomes `[<date>]`.
fn mask_log_times(line: &str) -> String {
    let shape = "[dddd-dd-dd dd:dd:dd +dddd]";
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('[') {
        let candidate = &rest.as_bytes()[at..];
        let fits = candidate.len() >= shape.len()
            && shape.bytes().zip(candidate).all(|(want, &got)| match want {
                b'd' => got.is_ascii_digit(),
                b'+' => got == b'+' || got == b'-',
                _ => want == got,
            });
        out.push_str(&rest[..at]);
        if fits {
            out.push_str("[<date>]");
            rest = &rest[at + shape.len()..];
        } else {
            out.push('[');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// `(31027)`, a pid alone in parentheses (minigun's `Listening at: ... (31027)`), becomes
/// `(<pid>)`.
fn mask_parenthesised_numbers(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('(') {
        out.push_str(&rest[..=at]);
        let after = &rest[at + 1..];
        let len = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with(')') {
            out.push_str("<pid>");
            rest = &after[len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A decimal number, alone or with a unit (`2.81`, `8.60MB`, `0m1.803s`): a timing or a rate.
fn is_measurement(token: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let end = token
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'm'))
        .unwrap_or(token.len());
    let mut number = &token[..end];
    let suffix = &token[end..];
    // `2.5ms`: the m belongs to the unit.
    if let Some(unit) = number.strip_suffix('m') {
        number = unit;
    }
    // `0m1.803s`: minutes, then seconds.
    let seconds = match number.split_once('m') {
        Some((minutes, seconds)) if digits(minutes) => seconds,
        Some(_) => return false,
        None => number,
    };
    let decimal = seconds
        .split_once('.')
        .is_some_and(|(whole, fraction)| digits(whole) && digits(fraction));
    decimal && !suffix.chars().any(|c| c.is_ascii_digit())
}

/// What is compared of one line: runs of blanks are one space, and what must vary from run
/// to run is replaced by a placeholder (book/README.md lists the masks). The server's own
/// address has been set aside by the caller, so every `127.0.0.1:PORT` left is a client's.
fn mask(line: &str) -> String {
    let digits = |c: char| c.is_ascii_digit();
    let version = |c: char| c.is_ascii_digit() || c == '.';
    let mut line = mask_log_times(line);
    line = mask_after(&line, "127.0.0.1:", digits, "<port>");
    for marker in [
        "pid: ",
        "pid:",
        "pid=",
        "reaped child ",
        "Worker ",
        "worker ",
    ] {
        line = mask_after(&line, marker, digits, "<pid>");
    }
    line = mask_after(&line, "curl/", version, "<version>");
    line = mask_bracketed_numbers(&line);
    line = mask_parenthesised_numbers(&line);
    let mut tokens: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let number = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    // A `ps` row: PID and PPID, then the state.
    if tokens.len() >= 3
        && number(&tokens[0])
        && number(&tokens[1])
        && tokens[2].starts_with(|c: char| c.is_ascii_uppercase())
    {
        tokens[0] = "<pid>".into();
        tokens[1] = "<pid>".into();
    }
    // A line that is one number of three or more digits is a pid (the fixture's /pid page).
    if tokens.len() == 1 && number(&tokens[0]) && tokens[0].len() >= 3 {
        tokens[0] = "<pid>".into();
    }
    for token in &mut tokens {
        if is_measurement(token) {
            *token = "<n>".into();
        }
    }
    tokens.join(" ")
}

/// The lines of `raw` as compared: the free port turned back into the book's, cargo's
/// progress dropped, masks applied, trailing blank lines removed.
fn comparable(raw: &str, port: &str) -> Vec<String> {
    let mut lines: Vec<String> = raw
        .replace("\r\n", "\n")
        .lines()
        .filter(|l| !is_cargo_progress(l))
        .map(|l| {
            let l = replace_number(l, port, BOOK_PORT);
            // The book's 8000 is the server; any other 127.0.0.1 port belongs to a client.
            let l = l.replace(&format!("127.0.0.1:{BOOK_PORT}"), "\u{2}");
            let l = mask(&l);
            l.replace('\u{2}', &format!("127.0.0.1:{BOOK_PORT}"))
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Replaces `from` by `to` where it stands as a whole number, not inside a longer one.
fn replace_number(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut before = None;
    while let Some(at) = rest.find(from) {
        let prev = rest[..at]
            .chars()
            .last()
            .or(if at == 0 { before } else { None });
        let next = rest[at + from.len()..].chars().next();
        let whole =
            !prev.is_some_and(|c| c.is_ascii_digit()) && !next.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..at]);
        out.push_str(if whole { to } else { from });
        before = from.chars().last();
        rest = &rest[at + from.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether `actual` matches `expected`, where a line `...` stands for any number of lines.
fn lines_match(expected: &[String], actual: &[String]) -> bool {
    let (n, m) = (expected.len(), actual.len());
    // ok[i][j]: expected[i..] matches actual[j..].
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            ok[i][j] = if expected[i] == "..." {
                ok[i + 1][j] || (j < m && ok[i][j + 1])
            } else {
                j < m && expected[i] == actual[j] && ok[i + 1][j + 1]
            };
        }
    }
    ok[0][0]
}

// -- shells -----------------------------------------------------------------------------------

/// Everything one shell printed (stdout and stderr together, in order), filled by a thread.
#[derive(Default)]
struct Screen {
    text: Mutex<Vec<u8>>,
    grew: Condvar,
}

/// A bash reading commands from a pipe, as a terminal would take them from the keyboard.
struct Terminal {
    child: Child,
    stdin: ChildStdin,
    screen: Arc<Screen>,
    /// Numbers the end-of-command markers.
    count: usize,
    /// A command typed without waiting for its end (a server): its number, and where its
    /// output began.
    running: Option<(usize, usize)>,
}

impl Terminal {
    /// A new shell at the repository's root, in a process group of its own.
    fn open() -> Terminal {
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc", "-s"])
            .current_dir(repo())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        // The reader's terminal knows nothing of the test run: none of the variables cargo
        // sets for a test (a user's own cargo settings stay, so nested builds stay fresh),
        // and no venv until the book activates one.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            let set_for_tests = [
                "CARGO_PKG_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
                "CARGO_MANIFEST_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix))
                || matches!(
                    key.as_str(),
                    "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "CARGO_RUSTC_CURRENT_DIR"
                );
            if set_for_tests || key == "VIRTUAL_ENV" || key.starts_with("RUST_TEST") {
                command.env_remove(&key);
            }
        }
        let mut child = command.spawn().expect("bash runs");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        // From here on stderr goes where stdout goes, as in a terminal.
        stdin
            .write_all(b"exec 2>&1\n")
            .expect("the shell reads its input");
        let screen = Arc::new(Screen::default());
        let filler = Arc::clone(&screen);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                filler
                    .text
                    .lock()
                    .expect("no panics while locked")
                    .extend(&chunk[..n]);
                filler.grew.notify_all();
            }
        });
        Terminal {
            child,
            stdin,
            screen,
            count: 0,
            running: None,
        }
    }

    /// Types `command` and leaves it running, as a reader leaves a server; returns where its
    /// output begins.
    fn start(&mut self, command: &str) -> usize {
        let from = self.mark();
        let n = self.type_command(command);
        self.running = Some((n, from));
        from
    }

    /// Ctrl+C: SIGINT to every process of the shell's group but the shell itself (what a
    /// terminal sends to its foreground job), then waits for the running command to end, so
    /// the shell, with its working directory and variables, takes the next commands. A
    /// command still running after the wait is killed.
    fn interrupt(&mut self) -> Result<(), String> {
        let Some((n, from)) = self.running.take() else {
            return Ok(());
        };
        let marker = format!("\u{1e}done {n} ");
        for (signal, limit) in [
            (libc::SIGINT, INTERRUPT_LIMIT),
            (libc::SIGKILL, INTERRUPT_LIMIT),
        ] {
            for pid in group_members(self.pid()) {
                // SAFETY: kill(2) reads no memory; `pid` is in the process group of the
                // shell we started and have not reaped, so it is one of the processes that
                // shell started, not a stranger's.
                unsafe { libc::kill(pid, signal) };
            }
            if self.wait_for(from, limit, |t| t.contains(&marker)).is_ok() {
                return Ok(());
            }
        }
        Err(format!(
            "the server in terminal 1 did not stop on Ctrl+C (SIGINT), nor on SIGKILL: {}",
            self.since(from)
        ))
    }

    /// Runs `commands` with their output thrown away, to bring a new shell to the state the
    /// earlier pages left the reader's terminal in.
    fn replay(&mut self, commands: &[String]) {
        for command in commands {
            let quiet = format!("{{ {command}\n}} >/dev/null 2>&1");
            if let Err(got) = self.run(&quiet, COMMAND_LIMIT) {
                panic!("replaying `{command}` from an earlier page did not finish: {got}");
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// How many bytes the shell has printed so far.
    fn mark(&self) -> usize {
        self.screen
            .text
            .lock()
            .expect("no panics while locked")
            .len()
    }

    /// What the shell printed from byte `from` on.
    fn since(&self, from: usize) -> String {
        let text = self.screen.text.lock().expect("no panics while locked");
        String::from_utf8_lossy(&text[from.min(text.len())..]).into_owned()
    }

    /// Types `command` and returns the number of its end marker. Its stdin is /dev/null, so
    /// it can never read the commands typed after it.
    fn type_command(&mut self, command: &str) -> usize {
        self.count += 1;
        let n = self.count;
        let line =
            format!("{{ {command}\n}} </dev/null\nprintf '\\036done {n} %s\\036\\n' \"$?\"\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("the shell reads its input");
        n
    }

    /// Waits (at most `limit`) until `done(text since from)` says yes; returns that text.
    fn wait_for(
        &self,
        from: usize,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        let mut text = self.screen.text.lock().expect("no panics while locked");
        loop {
            let shown = String::from_utf8_lossy(&text[from.min(text.len())..]).into_owned();
            if done(&shown) {
                return Ok(shown);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(shown);
            };
            text = self
                .screen
                .grew
                .wait_timeout(text, left)
                .expect("no panics while locked")
                .0;
        }
    }

    /// Runs one command to its end and returns what it printed, or Err with what it had
    /// printed when `limit` ran out.
    fn run(&mut self, command: &str, limit: Duration) -> Result<String, String> {
        let from = self.mark();
        let n = self.type_command(command);
        let marker = format!("\u{1e}done {n} ");
        let shown = self.wait_for(from, limit, |text| text.contains(&marker))?;
        let end = shown.find(&marker).expect("the marker was found");
        Ok(shown[..end].to_string())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // SAFETY: kill(2) reads no memory; the group id is the pid of the shell we started
        // with process_group(0) and have not reaped yet, so it names only that shell and
        // what it started.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The processes in process group `pgid`, except its leader (the shell).
fn group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // /proc/PID/stat: `pid (comm) state ppid pgrp ...`; comm may hold spaces and parens.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let pgrp = stat[close + 1..].split_whitespace().nth(2);
        if pid != pgid && pgrp.and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            members.push(pid);
        }
    }
    members
}

// -- running a page ---------------------------------------------------------------------------

/// Ports handed out by this process, so two pages never share one.
static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port below the kernel's ephemeral range, so no client socket of a parallel test can
/// hold it, and free right now.
fn free_port() -> String {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u32 = range
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32768);
    let (first, span) = if low > 12000 {
        (10000, low - 10000)
    } else {
        (low, 65535 - low)
    };
    let mut seed = std::process::id().wrapping_mul(2654435761)
        ^ Instant::now().elapsed().subsec_nanos()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut taken = TAKEN.lock().expect("no panics while locked");
    for _ in 0..500 {
        seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
        let port = (first + (seed >> 8) % span) as u16;
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port.to_string();
        }
    }
    panic!("no free port found below {low}");
}

/// Whether every tool is there; when one is missing the page is skipped, unless
/// `MINIGUN_REQUIRE_BOOK_TOOLS` is set (tests/run.sh sets it after installing them).
fn tools_ready(page: &str) -> bool {
    let mut missing = Vec::new();
    for (tool, package) in TOOLS {
        let found = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("{tool} (Debian package {package})"));
        }
    }
    if !repo().join(".venv/bin/activate").exists() {
        missing.push(".venv with Flask (bash tests/run.sh makes it)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("{page}: missing {}", missing.join(", "));
    if std::env::var_os("MINIGUN_REQUIRE_BOOK_TOOLS").is_some() {
        panic!("{message}");
    }
    eprintln!("skipped {message}; tests/run.sh installs them");
    false
}

/// The state of one page's run: the first terminal with its server, and the second.
struct Session {
    page: String,
    port: String,
    /// The first terminal and where its server command began in its output (0 before the
    /// first server).
    first: Option<(Terminal, usize)>,
    second: Option<Terminal>,
    /// What each terminal replays when it opens: the state the earlier pages left it in.
    replay_first: Vec<String>,
    replay_second: Vec<String>,
}

impl Session {
    /// The failure message for a command whose output differs, with both sides.
    fn differs(&self, at: &str, command: &str, expected: &[String], actual: &str) -> String {
        let mut message = format!(
            "{at}: `{command}` printed something else than the book.\n--- book (masked):\n{}\n\
             --- got (masked):\n{}\n--- got (raw):\n{actual}",
            expected.join("\n"),
            comparable(actual, &self.port).join("\n"),
        );
        if let Some((first, start)) = &self.first {
            message += &format!(
                "\n--- terminal 1 since its server started:\n{}",
                first.since(*start)
            );
        }
        message
    }

    fn expected(&self, lines: &[String]) -> Vec<String> {
        comparable(&lines.join("\n"), "\u{0}")
    }

    /// A `terminal1` block: Ctrl+C for the last server in the first terminal (the same
    /// shell, so it is where the last block left it), the block's set-up commands, then the
    /// server, up to the lines the block shows.
    fn start_server(&mut self, block: &Block) -> Result<(), String> {
        let mut terminal = match self.first.take() {
            Some((mut terminal, _)) => {
                terminal
                    .interrupt()
                    .map_err(|why| format!("{}: {why}", block.at))?;
                terminal
            }
            None => {
                let mut terminal = Terminal::open();
                terminal.replay(&self.replay_first);
                terminal
            }
        };
        let (server, setup) = block.commands.split_last().expect("the block has commands");
        for cmd in setup {
            let command = replace_number(&cmd.text, BOOK_PORT, &self.port);
            let out = terminal
                .run(&command, limit_for(&command))
                .map_err(|got| format!("{}: `{}` did not finish: {got}", block.at, cmd.text))?;
            let expected = self.expected(&cmd.expected);
            if !lines_match(&expected, &comparable(&out, &self.port)) {
                return Err(self.differs(&block.at, &cmd.text, &expected, &out));
            }
        }
        if !server.text.contains(BOOK_PORT) {
            return Err(format!(
                "{}: the server command must bind port {BOOK_PORT}, which the test replaces by \
                 a free one",
                block.at
            ));
        }
        // A step says `Listening on ...`; minigun logs gunicorn's `... [INFO] Listening at: ...`.
        if !server
            .expected
            .iter()
            .any(|l| l.starts_with("Listening on ") || l.contains("] Listening at: "))
        {
            return Err(format!(
                "{}: show the server's `Listening on` (or minigun's `Listening at:`) line",
                block.at
            ));
        }
        let command = replace_number(&server.text, BOOK_PORT, &self.port);
        let start = terminal.start(&command);
        let mut expected = self.expected(&server.expected);
        expected.push("...".into());
        let port = self.port.clone();
        let shown = terminal.wait_for(start, limit_for(&command), |text| {
            lines_match(&expected, &comparable(text, &port))
        });
        self.first = Some((terminal, start));
        match shown {
            Ok(_) => Ok(()),
            Err(got) => Err(self.differs(&block.at, &server.text, &expected, &got)),
        }
    }

    /// A `terminal1` block without commands: what the first terminal shows by now.
    fn check_first_terminal(&mut self, block: &Block) -> Result<(), String> {
        let Some((terminal, start)) = &self.first else {
            return Err(format!(
                "{}: no server was started before this block",
                block.at
            ));
        };
        let mut expected = self.expected(&block.output);
        expected.push("...".into());
        let port = self.port.clone();
        terminal
            .wait_for(*start, SETTLE_LIMIT, |text| {
                lines_match(&expected, &comparable(text, &port))
            })
            .map(drop)
            .map_err(|got| self.differs(&block.at, "(terminal 1)", &expected, &got))
    }

    /// A command in the second terminal; `ps` and `ss` are re-run until what they show has
    /// settled into what the book shows, within SETTLE_LIMIT.
    fn run_command(&mut self, at: &str, cmd: &Cmd) -> Result<(), String> {
        let command = replace_number(&cmd.text, BOOK_PORT, &self.port);
        let expected = self.expected(&cmd.expected);
        let settles = matches!(cmd.text.split_whitespace().next(), Some("ps" | "ss"));
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            if self.second.is_none() {
                let mut terminal = Terminal::open();
                terminal.replay(&self.replay_second);
                self.second = Some(terminal);
            }
            let terminal = self.second.as_mut().expect("opened above");
            let out = terminal
                .run(&command, limit_for(&command))
                .map_err(|got| format!("{at}: `{}` did not finish in time: {got}", cmd.text))?;
            if lines_match(&expected, &comparable(&out, &self.port)) {
                return Ok(());
            }
            if !settles || Instant::now() > deadline {
                return Err(self.differs(at, &cmd.text, &expected, &out));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn limit_for(command: &str) -> Duration {
    if command.contains("cargo ") {
        CARGO_LIMIT
    } else {
        COMMAND_LIMIT
    }
}

/// Checks that each block says which terminal it belongs to.
fn check_terminal_prose(blocks: &[Block]) -> Result<(), String> {
    let mut after_server = false;
    for block in blocks {
        let intro = block.intro.to_lowercase();
        if block.terminal1 {
            if !intro.contains("terminal 1") {
                return Err(format!(
                    "{}: the paragraph before a `console,terminal1` block must say \"terminal 1\"",
                    block.at
                ));
            }
            after_server = !block.commands.is_empty();
        } else if after_server {
            if !intro.contains("terminal 2") {
                return Err(format!(
                    "{}: the first block after a server start must say \"terminal 2\"",
                    block.at
                ));
            }
            after_server = false;
        }
    }
    Ok(())
}

/// Whether a command changes what the shell carries to the next one (its working directory,
/// its variables) or makes a folder a later `cd` needs; such commands are replayed.
fn changes_shell_state(command: &str) -> bool {
    matches!(
        command.split_whitespace().next(),
        Some("cd" | "source" | "." | "export" | "unset" | "deactivate" | "mkdir")
    )
}

/// The commands of the pages before `page`, in reading order, that changed the state of the
/// first terminal (its set-up commands, never a server) and of the second.
fn left_by_earlier_pages(page: &str) -> (Vec<String>, Vec<String>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for earlier in summary_pages() {
        if earlier == page {
            break;
        }
        let path = repo().join("book/src").join(&earlier);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{earlier}: {e}"));
        for block in console_blocks(&earlier, &expand_includes(&path, &text)) {
            let (commands, into) = match block.commands.split_last() {
                Some((_server, setup)) if block.terminal1 => (setup, &mut first),
                _ => (&block.commands[..], &mut second),
            };
            into.extend(
                commands
                    .iter()
                    .filter(|c| changes_shell_state(&c.text))
                    .map(|c| c.text.clone()),
            );
        }
    }
    (first, second)
}

/// Runs every console block of `book/src/<page>` in order.
fn run_page(page: &str) {
    let path = repo().join("book/src").join(page);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
    let blocks = console_blocks(page, &expand_includes(&path, &text));
    if let Err(message) = check_terminal_prose(&blocks) {
        panic!("{message}");
    }
    if blocks.is_empty() || !tools_ready(page) {
        return;
    }
    let (replay_first, replay_second) = left_by_earlier_pages(page);
    let mut session = Session {
        page: page.to_string(),
        port: free_port(),
        first: None,
        second: None,
        replay_first,
        replay_second,
    };
    let started = Instant::now();
    for block in &blocks {
        let result = if block.terminal1 && block.commands.is_empty() {
            session.check_first_terminal(block)
        } else if block.terminal1 {
            session.start_server(block)
        } else {
            block
                .commands
                .iter()
                .try_for_each(|cmd| session.run_command(&block.at, cmd))
        };
        if let Err(message) = result {
            panic!("{message}");
        }
    }
    eprintln!(
        "{}: {} blocks ran in {:.1} s",
        session.page,
        blocks.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The pages listed in SUMMARY.md.
fn summary_pages() -> Vec<String> {
    let summary = fs::read_to_string(repo().join("book/src/SUMMARY.md")).expect("SUMMARY.md");
    summary
        .lines()
        .filter_map(|l| {
            let start = l.find("](")? + 2;
            let end = l[start..].find(')')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// The pages that have a test below.
const TESTED: &[&str] = &[
    "introduction.md",
    "ch01-echo.md",
    "ch02-hello-http.md",
    "ch03-parser.md",
    "ch04-thread-pool.md",
    "ch05-wsgi.md",
    "ch06-fork.md",
    "ch07-prefork-wsgi.md",
    "ch08-to-minigun.md",
];

#[test]
fn every_page_with_commands_has_a_test_here() {
    let tested: HashSet<&str> = TESTED.iter().copied().collect();
    for page in summary_pages() {
        let path = repo().join("book/src").join(&page);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        let blocks = console_blocks(&page, &expand_includes(&path, &text));
        assert!(
            blocks.is_empty() || tested.contains(page.as_str()),
            "{page} has console blocks: add it to TESTED in {}",
            file!()
        );
    }
}

#[test]
fn masks_hide_only_what_varies() {
    let port = "23456";
    let got = comparable(
        "Listening on http://127.0.0.1:23456\n[31028] Worker exited\n\
         127.0.0.1:50312: connected\nreal\t0m1.803s\n31029 31027 S    step07 -w 2\n17252\n\
         Requests/sec:  90251.20\n2.814632 s 200\nContent-Length: 158\n\
         {\"agent\":\"curl/7.88.1\"}\nBooting worker with pid: 4242\n\
         trace: [17250] reaped child 17252 (exit status: 0)\n\
         [2026-12-05 12:18:43 +0000] [31027] [INFO] Listening at: http://127.0.0.1:23456 (31027)\n\
         [2026-12-05 12:18:47 +0000] [31027] [ERROR] Worker 31028 was serving \"GET /\" for 2.5 s\n\
         Tracebacks of the threads of worker 31028 (1 per worker)\n\n",
        port,
    );
    let want = [
        "Listening on http://127.0.0.1:8000",
        "[<pid>] Worker exited",
        "127.0.0.1:<port>: connected",
        "real <n>",
        "<pid> <pid> S step07 -w 2",
        "<pid>",
        "Requests/sec: <n>",
        "<n> s 200",
        "Content-Length: 158",
        "{\"agent\":\"curl/<version>\"}",
        "Booting worker with pid: <pid>",
        "trace: [<pid>] reaped child <pid> (exit status: 0)",
        "[<date>] [<pid>] [INFO] Listening at: http://127.0.0.1:8000 (<pid>)",
        "[<date>] [<pid>] [ERROR] Worker <pid> was serving \"GET /\" for <n> s",
        "Tracebacks of the threads of worker <pid> (1 per worker)",
    ];
    assert_eq!(got, want);
    let dots: Vec<String> = ["a", "...", "d"].map(String::from).to_vec();
    let lines: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    assert!(lines_match(&dots, &lines));
    assert!(!lines_match(&dots, &lines[..3]));
}

macro_rules! page_tests {
    ($($name:ident => $page:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_page($page);
            }
        )*
        #[test]
        fn the_page_list_matches_the_tests() {
            let pages: Vec<&str> = vec![$($page),*];
            assert_eq!(pages, TESTED);
        }
    };
}

page_tests! {
    introduction_commands_run_as_printed => "introduction.md",
    chapter_1_commands_run_as_printed => "ch01-echo.md",
    chapter_2_commands_run_as_printed => "ch02-hello-http.md",
    chapter_3_commands_run_as_printed => "ch03-parser.md",
    chapter_4_commands_run_as_printed => "ch04-thread-pool.md",
    chapter_5_commands_run_as_printed => "ch05-wsgi.md",
    chapter_6_commands_run_as_printed => "ch06-fork.md",
    chapter_7_commands_run_as_printed => "ch07-prefork-wsgi.md",
    chapter_8_commands_run_as_printed => "ch08-to-minigun.md",
}
