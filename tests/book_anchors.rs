//! Keeps the book honest about the code it shows.
//!
//! The book pulls every listing out of compiled sources with `{{#include path:anchor}}`, so
//! it cannot drift from what builds. This test fails when such an include names a file or an
//! anchor that does not exist, when an included file has unbalanced `ANCHOR:`/`ANCHOR_END:`
//! markers, when an include uses line numbers instead of an anchor, or when a relative `.md`
//! link points at a page that is not there. mdBook itself only logs some of these and builds
//! anyway, which is why the check lives here, in `cargo test`.
//!
//! Chapter 8 names minigun's modules and functions in prose and in its map, outside any
//! include, so it gets one more check: every backticked file there exists, every backticked
//! Rust name is defined in `src/` or a step, and every name in the map's minigun column is
//! defined in `src/` itself.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The book's source folder, from the root of the `minigun` package.
fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join("src")
}

/// Every `.md` file under `dir`, sorted so failures come out in a stable order.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            markdown_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
    found.sort();
}

/// One `{{#include ...}}` (or `rustdoc_include`) found in a page.
struct Include {
    /// The page it appears in and its line number there, for messages.
    at: String,
    /// The file it names, resolved against the page's folder.
    file: PathBuf,
    /// What follows the path after a colon: an anchor name, a line range, or nothing.
    selector: Option<String>,
}

/// Finds the includes in one page. An include escaped as `\{{#include ...}}` is skipped,
/// as mdBook skips it.
fn includes_in(page: &Path, text: &str) -> Vec<Include> {
    let dir = page.parent().unwrap_or(Path::new("."));
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{#") {
            let escaped = rest[..start].ends_with('\\');
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else { break };
            let inner = after[..end].trim();
            rest = &after[end + 2..];
            let Some((kind, argument)) = inner.split_once(char::is_whitespace) else {
                continue;
            };
            if escaped || !matches!(kind, "include" | "rustdoc_include") {
                continue;
            }
            let argument = argument.trim();
            let (path, selector) = match argument.split_once(':') {
                Some((path, selector)) => (path, Some(selector.to_string())),
                None => (argument, None),
            };
            found.push(Include {
                at: format!("{}:{}", page.display(), number + 1),
                file: dir.join(path),
                selector,
            });
        }
    }
    found
}

/// Checks the anchor markers of one source file: every `ANCHOR: x` is closed by exactly one
/// later `ANCHOR_END: x`, no anchor is opened twice at once, and no end comes without a
/// start. Returns the names of the anchors, or the problems found.
fn anchors_of(file: &Path, text: &str) -> Result<Vec<String>, Vec<String>> {
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = format!("{}:{}", file.display(), number + 1);
        if let Some(name) = marker(line, "ANCHOR_END:") {
            if open.remove(&name).is_none() {
                problems.push(format!("{at}: ANCHOR_END: {name} without an ANCHOR"));
            }
        } else if let Some(name) = marker(line, "ANCHOR:") {
            if open.insert(name.clone(), number + 1).is_some() {
                problems.push(format!("{at}: ANCHOR: {name} opened twice"));
            }
            names.push(name);
        }
    }
    for (name, line) in open {
        problems.push(format!(
            "{}:{line}: ANCHOR: {name} never ends",
            file.display()
        ));
    }
    if problems.is_empty() {
        Ok(names)
    } else {
        Err(problems)
    }
}

/// The anchor name after `tag` on a marker line, the way mdBook reads it.
fn marker(line: &str, tag: &str) -> Option<String> {
    let start = line.find(tag)? + tag.len();
    let name = line[start..].split_whitespace().next()?;
    Some(name.to_string())
}

/// Relative links to `.md` pages in one page, with the line they are on.
fn md_links_in(text: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split('#').next().unwrap_or("").trim();
            rest = &after[end..];
            if target.ends_with(".md") && !target.contains("://") {
                links.push((number + 1, target.to_string()));
            }
        }
    }
    links
}

#[test]
fn every_include_names_an_existing_file_and_anchor() {
    let mut pages = Vec::new();
    markdown_files(&book_src(), &mut pages);
    assert!(!pages.is_empty(), "no pages under {}", book_src().display());
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = fs::read_to_string(page).expect("book pages are UTF-8");
        for include in includes_in(page, &text) {
            checked += 1;
            let Ok(source) = fs::read_to_string(&include.file) else {
                let file = include.file.display();
                problems.push(format!(
                    "{}: includes {file}, which does not exist",
                    include.at
                ));
                continue;
            };
            let anchors = match anchors_of(&include.file, &source) {
                Ok(anchors) => anchors,
                Err(found) => {
                    problems.extend(found);
                    continue;
                }
            };
            let Some(selector) = include.selector else {
                continue;
            };
            if selector.starts_with(|c: char| c.is_ascii_digit() || c == ':') {
                problems.push(format!(
                    "{}: line numbers ({selector}); use an anchor",
                    include.at
                ));
            } else if !anchors.contains(&selector) {
                let file = include.file.display();
                problems.push(format!("{}: no anchor {selector:?} in {file}", include.at));
            }
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "broken includes:\n{}",
        problems.join("\n")
    );
    assert!(checked > 0, "the book includes no code at all");
}

#[test]
fn every_relative_page_link_points_at_a_page() {
    let mut pages = Vec::new();
    markdown_files(&book_src(), &mut pages);
    let mut problems = Vec::new();
    for page in &pages {
        let text = fs::read_to_string(page).expect("book pages are UTF-8");
        let dir = page.parent().unwrap_or(Path::new("."));
        for (line, target) in md_links_in(&text) {
            if !dir.join(&target).is_file() {
                problems.push(format!(
                    "{}:{line}: link to missing {target}",
                    page.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_catches_what_it_claims_to() {
    // Unbalanced markers, a duplicate opening and a stray end are all reported.
    let text = "// ANCHOR: a\n// ANCHOR: a\n// ANCHOR_END: b\n";
    let problems = anchors_of(Path::new("x.rs"), text).expect_err("three problems");
    assert_eq!(problems.len(), 3, "{problems:?}");
    let good = "// ANCHOR: a\nfn f() {}\n// ANCHOR_END: a\n";
    assert_eq!(
        anchors_of(Path::new("x.rs"), good),
        Ok(vec!["a".to_string()])
    );
    // Escaped includes are skipped; others are parsed into path and selector.
    let page = Path::new("book/src/ch.md");
    let found = includes_in(page, "\\{{#include a.rs}} {{#include ../b.rs:here}}");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].file, Path::new("book/src/../b.rs"));
    assert_eq!(found[0].selector.as_deref(), Some("here"));
    // Only relative .md links count.
    let links = md_links_in("[a](ch01.md#x) [b](https://e.org/x.md) [c](pic.svg)");
    assert_eq!(links, vec![(1, "ch01.md".to_string())]);
}

/// The names a Rust source tree defines: functions, types, traits, constants, modules (by
/// file name too), and the fields and enum variants declared one per line. Coarse on purpose:
/// it answers "does this tree have something called that", which is what a reader who
/// searches for a name the book gives needs.
fn defined_names(dir: &Path, names: &mut std::collections::BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                names.insert(name.to_string());
            }
            defined_names(&path, names);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|n| n.to_str()) {
            names.insert(stem.to_string());
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for line in text.lines() {
            let line = line.trim_start();
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub(super) "))
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or_default();
            let keyword = [
                "fn", "struct", "enum", "trait", "type", "const", "static", "mod",
            ];
            if keyword.contains(&first) {
                let name = ident(words.next().unwrap_or_default());
                if !name.is_empty() {
                    names.insert(name);
                }
                continue;
            }
            // A field (`name: Type,`) or a variant (`Name,`, `Name(..)`, `Name {`).
            let name = ident(line);
            let after = line[name.len()..].trim_start();
            if !name.is_empty()
                && (after.starts_with(':') && !after.starts_with("::")
                    || after == ","
                    || after.starts_with('(')
                    || after == "{")
            {
                names.insert(name);
            }
        }
    }
}

/// Names chapter 8 writes in backticks that are not items (or files) of ours.
const NOT_OURS: &[&str] = &[
    // The standard library's, C's and CPython's.
    "Copy",
    "String",
    "TcpStream",
    "TcpListener",
    "epoll_wait",
    "waitpid",
    "PyDict_Copy",
    // Python's and gunicorn's: hook names as gunicorn spells them, and its files.
    "BytesIO",
    "faulthandler",
    "on_starting",
    "pre_fork",
    "post_fork",
    "pre_request",
    "worker_abort",
    "arbiter.py",
    // HTTP's words and the reader's tools.
    "Date",
    "Server",
    "Cookie",
    "Host",
    "https",
    "chunked",
    "wrk",
];

/// The backticked spans of a page's prose and tables (code blocks and includes left out),
/// each with its line number and whether it stands in the middle column of a table row.
fn backticked(text: &str) -> Vec<(usize, String, bool)> {
    let mut found = Vec::new();
    let mut in_fence = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || line.contains("{{#") {
            continue;
        }
        // In `| step | minigun | adds |`, the second cell names minigun's side.
        let cells: Vec<&str> = line.split('|').collect();
        let minigun_cell = (line.starts_with('|') && cells.len() >= 4).then(|| cells[2]);
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            let span = &after[..end];
            let in_cell = minigun_cell.is_some_and(|cell| cell.contains(&format!("`{span}`")));
            found.push((number + 1, span.to_string(), in_cell));
            rest = &after[end + 1..];
        }
    }
    found
}

#[test]
fn chapter_8_names_only_what_the_tree_has() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = book_src().join("ch08-to-minigun.md");
    let text = fs::read_to_string(&page).expect("chapter 8 is there");
    let mut in_src = std::collections::BTreeSet::new();
    defined_names(&root.join("src"), &mut in_src);
    let mut in_steps = std::collections::BTreeSet::new();
    if let Ok(steps) = fs::read_dir(root.join("steps")) {
        for step in steps.flatten() {
            defined_names(&step.path().join("src"), &mut in_steps);
        }
    }
    let is_ident = |s: &str| {
        !s.is_empty()
            && s.split("::").all(|part| {
                part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for (line, span, minigun_side) in backticked(&text) {
        let at = format!("ch08-to-minigun.md:{line}");
        // A file: `src/arbiter.rs`, `worker/serve.rs` (under src/), `tests/apps/slow.py`.
        let is_file = [".rs", ".py"].iter().any(|ext| span.ends_with(ext)) && !span.contains(' ');
        if is_file && !span.contains('*') && !NOT_OURS.contains(&span.as_str()) {
            checked += 1;
            let from_root = ["src/", "tests/", "steps/", "examples/", "book/"]
                .iter()
                .any(|top| span.starts_with(top));
            let path = if from_root {
                root.join(&span)
            } else {
                root.join("src").join(&span)
            };
            if !path.is_file() {
                problems.push(format!("{at}: `{span}` names a file that is not there"));
            }
            continue;
        }
        // A Rust name or path: `reap_workers`, `Phase::Proxy`, `sys::stop_listening`.
        // ALL_CAPS names are constants, flags' environment variables and C's, left alone.
        let shouty = span
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !is_ident(&span) || shouty {
            continue;
        }
        checked += 1;
        for part in span.split("::") {
            let ours = in_src.contains(part);
            let known = ours || in_steps.contains(part) || NOT_OURS.contains(&part);
            if minigun_side && !ours {
                problems.push(format!(
                    "{at}: `{span}` is on minigun's side of the map, but src/ has no `{part}`"
                ));
            } else if !known {
                problems.push(format!(
                    "{at}: `{span}`: neither src/ nor a step defines `{part}`"
                ));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} names checked: is chapter 8 there?"
    );
    assert!(
        problems.is_empty(),
        "chapter 8 names what the tree does not have:\n{}",
        problems.join("\n")
    );
}
