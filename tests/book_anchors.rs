//! Keeps the book honest about the code it shows.
//!
//! The book pulls every listing out of compiled sources with `{{#include path:anchor}}`, so
//! it cannot drift from what builds. This test fails when such an include names a file or an
//! anchor that does not exist, when an included file has unbalanced `ANCHOR:`/`ANCHOR_END:`
//! markers, when an include uses line numbers instead of an anchor, or when a relative `.md`
//! link points at a page that is not there. mdBook itself only logs some of these and builds
//! anyway, which is why the check lives here, in `cargo test`.

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
