//! Reads the built book in a real browser, the way a student opens it.
//!
//! Builds the book with mdBook into a temporary folder, serves it with Python's
//! `http.server` on a free port, and loads every page of SUMMARY.md in headless Chromium
//! (Debian's `chromium-headless-shell`). From the DOM that Chromium dumps after running the
//! pages' scripts, it checks every link, image and script: the file must exist and every
//! `#anchor` must name an element of its page. Every request the browser made must have been
//! answered without an error. The HTML must hold no `{{#include` that mdBook left unresolved
//! (it only logs a missing file). Then it types one word of each chapter into the book's own
//! search (`?search=WORD`) and expects that chapter among the results. Last, it leaves a
//! screenshot of one chapter in `target/book-screenshot.png`, for a person to look at.
//!
//! Every wait is bounded; the server and each browser run are killed by pid when done.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How long one browser run, the build, or the server's start may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `command` to its end within `limit`; returns its stdout, or an error that says why.
fn run_bounded(mut command: Command, limit: Duration) -> Result<String, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{command:?} did not finish within {limit:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{command:?} failed ({status}): {err}"))
    }
}

/// Python's static server on a port the kernel picked, with the status of every request it
/// answered.
struct StaticServer {
    child: Child,
    port: u16,
    /// "GET /path" and status, in order.
    log: Arc<Mutex<Vec<(String, u16)>>>,
}

impl StaticServer {
    fn start(dir: &Path) -> StaticServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let filler = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || {
            // `127.0.0.1 - - [date] "GET /x.html HTTP/1.1" 200 -`
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Some((request, rest)) = line
                    .split_once("\" ")
                    .and_then(|(head, rest)| Some((head.rsplit_once('"')?.1.to_string(), rest)))
                else {
                    continue;
                };
                let Some(status) = rest.split(' ').next().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let request = request
                    .rsplit_once(' ')
                    .map_or(request.clone(), |(r, _)| r.into());
                filler
                    .lock()
                    .expect("no panics while locked")
                    .push((request, status));
            }
        });
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let line = rx
            .recv_timeout(LIMIT)
            .expect("http.server says where it serves");
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from http.server: {line}"));
        StaticServer { child, port, log }
    }

    fn url(&self, page: &str) -> String {
        format!("http://127.0.0.1:{}/{page}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, or None when it is not installed.
fn chromium() -> Option<String> {
    ["chromium-headless-shell", "chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            Command::new("bash")
                .args(["-c", &format!("command -v {name}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

/// One headless Chromium run with a fresh profile, with `args` before the URL.
fn browse(browser: &str, profile: &Path, args: &[&str], url: &str) -> Result<String, String> {
    let _ = fs::remove_dir_all(profile);
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url);
    run_bounded(command, LIMIT)
}

/// Dumps the DOM of `url` after its scripts ran (at most 5 s of page time).
fn dump_dom(browser: &str, profile: &Path, url: &str) -> String {
    browse(
        browser,
        profile,
        &["--virtual-time-budget=5000", "--dump-dom"],
        url,
    )
    .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Every value of `attribute="..."` in `html`.
fn attributes(html: &str, attribute: &str) -> Vec<String> {
    let needle = format!(" {attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].replace("&amp;", "&"))
        })
        .collect()
}

/// The pages of SUMMARY.md, as the HTML files mdBook writes for them.
fn pages() -> Vec<String> {
    let summary = fs::read_to_string(repo().join("book/src/SUMMARY.md")).expect("SUMMARY.md");
    summary
        .lines()
        .filter_map(|l| {
            let start = l.find("](")? + 2;
            let end = l[start..].find(')')? + start;
            Some(l[start..end].replace(".md", ".html"))
        })
        .collect()
}

/// The words of a page's `<main>`, tags removed, in lowercase.
fn words(html: &str) -> BTreeSet<String> {
    let main = html
        .find("<main")
        .and_then(|start| Some(&html[start..start + html[start..].find("</main>")?]))
        .unwrap_or(html);
    let mut text = String::new();
    let mut in_tag = false;
    for c in main.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    // The search index splits words at blanks and hyphens only, so `thread::Builder` is one
    // word there; take only the words that are letters alone once punctuation is trimmed.
    text.split(|c: char| c.is_whitespace() || c == '-')
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphabetic()))
        .filter(|w| w.len() >= 7 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .map(str::to_lowercase)
        .collect()
}

/// Resolves `link` found in `page` to a file of the built book and a fragment, or None for
/// a link that leaves the book.
fn resolve(page: &str, link: &str) -> Option<(String, Option<String>)> {
    if link.contains("://") || link.starts_with("mailto:") || link.starts_with("javascript:") {
        return None;
    }
    let (path, fragment) = match link.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment.to_string())),
        None => (link, None),
    };
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() {
        return Some((page.to_string(), fragment));
    }
    let mut parts: Vec<&str> = page.split('/').collect();
    parts.pop();
    for part in path.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Some((parts.join("/"), fragment))
}

#[test]
fn every_page_loads_in_a_browser_with_working_links_and_search() {
    let Some(browser) = chromium() else {
        if std::env::var_os("MINIGUN_REQUIRE_BOOK_TOOLS").is_some() {
            panic!("no headless Chromium: apt-get install chromium-headless-shell");
        }
        eprintln!("skipped: no headless Chromium (tests/run.sh installs chromium-headless-shell)");
        return;
    };
    let work = std::env::temp_dir().join(format!("minigun-book-browser-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let site = work.join("site");
    let profile = work.join("profile");
    let mut build = Command::new("mdbook");
    build
        .arg("build")
        .arg(repo().join("book"))
        .arg("--dest-dir")
        .arg(&site);
    if let Err(e) = run_bounded(build, LIMIT) {
        panic!("mdbook build: {e}");
    }

    // mdBook logs a missing include and builds anyway; the page then shows the directive.
    for entry in fs::read_dir(&site).expect("the book was built").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "html") {
            let html = fs::read_to_string(&path).unwrap_or_default();
            for directive in ["{{#include", "{{#rustdoc_include", "{{#playground"] {
                assert!(
                    !html.contains(directive),
                    "{}: an unresolved {directive}",
                    path.display()
                );
            }
        }
    }

    let server = StaticServer::start(&site);
    let pages = pages();
    let mut doms = BTreeMap::new();
    for page in &pages {
        let dom = dump_dom(&browser, &profile, &server.url(page));
        assert!(
            dom.contains("<main"),
            "{page}: no <main> in the DOM:\n{dom}"
        );
        doms.insert(page.clone(), dom);
    }

    // Links, images and scripts: the file exists and the anchor names an element.
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let ids_of = |file: &str, ids: &mut BTreeMap<String, BTreeSet<String>>| {
        ids.entry(file.to_string())
            .or_insert_with(|| {
                let html = doms
                    .get(file)
                    .cloned()
                    .or_else(|| fs::read_to_string(site.join(file)).ok())
                    .unwrap_or_default();
                attributes(&html, "id").into_iter().collect()
            })
            .clone()
    };
    let mut broken = Vec::new();
    for (page, dom) in &doms {
        let links = attributes(dom, "href")
            .into_iter()
            .chain(attributes(dom, "src"));
        for link in links {
            let Some((file, fragment)) = resolve(page, &link) else {
                continue;
            };
            if !site.join(&file).is_file() {
                broken.push(format!("{page}: {link}: no file {file}"));
                continue;
            }
            if let Some(fragment) = fragment.filter(|f| !f.is_empty()) {
                if file.ends_with(".html") && !ids_of(&file, &mut ids).contains(&fragment) {
                    broken.push(format!("{page}: {link}: no element with id {fragment:?}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));

    // Search: for each page, a word that appears in its text and in no other page's.
    let page_words: BTreeMap<&String, BTreeSet<String>> =
        doms.iter().map(|(page, dom)| (page, words(dom))).collect();
    let mut unfound = Vec::new();
    for (page, own) in &page_words {
        let Some(word) = own.iter().find(|w| {
            page_words
                .iter()
                .all(|(other, theirs)| other == page || !theirs.contains(*w))
        }) else {
            unfound.push(format!("{page}: no word of its own to search for"));
            continue;
        };
        let url = server.url(&format!("index.html?search={word}"));
        let dom = dump_dom(&browser, &profile, &url);
        let results = dom
            .find("id=\"mdbook-searchresults\"")
            .map(|at| &dom[at..])
            .and_then(|rest| rest.find("</ul>").map(|end| &rest[..end]))
            .unwrap_or("");
        let hit = attributes(results, "href")
            .iter()
            .any(|href| href.split(['?', '#']).next() == Some(page.as_str()));
        if !hit {
            unfound.push(format!("searching {word:?} does not find {page}"));
        }
    }
    assert!(unfound.is_empty(), "search:\n{}", unfound.join("\n"));

    // Every request the browser made was answered (a favicon it guessed at aside).
    let failed: Vec<String> = server
        .log
        .lock()
        .expect("no panics while locked")
        .iter()
        .filter(|(request, status)| *status >= 400 && !request.ends_with("/favicon.ico"))
        .map(|(request, status)| format!("{request}: {status}"))
        .collect();
    assert!(
        failed.is_empty(),
        "requests that failed:\n{}",
        failed.join("\n")
    );

    // A picture of one chapter as a person sees it.
    let shot = repo().join("target").join("book-screenshot.png");
    let _ = fs::remove_file(&shot);
    let screenshot = format!("--screenshot={}", shot.display());
    browse(
        &browser,
        &profile,
        &[
            "--window-size=1280,1600",
            "--virtual-time-budget=5000",
            &screenshot,
        ],
        &server.url("ch04-thread-pool.html"),
    )
    .unwrap_or_else(|e| panic!("screenshot: {e}"));
    let png = fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        shot.display()
    );
    assert!(png.len() > 20_000, "the screenshot is nearly empty");

    drop(server);
    let _ = fs::remove_dir_all(&work);
}

#[test]
fn links_resolve_against_their_page() {
    assert_eq!(
        resolve("ch01-echo.html", "ch02-hello-http.html#try-it"),
        Some(("ch02-hello-http.html".into(), Some("try-it".into())))
    );
    assert_eq!(
        resolve("a/b.html", "../c.html?x=1"),
        Some(("c.html".into(), None))
    );
    assert_eq!(
        resolve("ch01-echo.html", "#goal"),
        Some(("ch01-echo.html".into(), Some("goal".into())))
    );
    assert_eq!(resolve("x.html", "https://example.org/"), None);
}
