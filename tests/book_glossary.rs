//! Keeps the glossary complete by construction.
//!
//! The convention: where a page first explains a term, the term is written
//! `<dfn>term</dfn>` (browsers show it in italics). Appendix B lists every such term as
//! `**term** ([ch. N](chNN-....md)): ...`, in alphabetical order, with the page where the term
//! is first marked, in the reading order of `SUMMARY.md`. This test fails when
//!
//! - a page marks a term the glossary lacks;
//! - a glossary entry names another page than the one that first marks its term, or names a
//!   page that never marks it (so no entry can be added without its explanation);
//! - the glossary is out of alphabetical order, or lists a term twice.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The book's source folder, from the root of the `minigun` package.
fn book_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join("src")
}

/// The glossary page, which lists the terms and marks none.
const GLOSSARY: &str = "appendix-b-glossary.md";

/// A term as it is compared: lowercase, with runs of whitespace made one space.
fn normalise(term: &str) -> String {
    term.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The pages of the book in reading order, as `SUMMARY.md` links them.
fn pages_in_order(summary: &str) -> Vec<String> {
    let mut pages = Vec::new();
    for line in summary.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].trim();
            if target.ends_with(".md") && !pages.iter().any(|p| p == target) {
                pages.push(target.to_string());
            }
            rest = &after[end..];
        }
    }
    pages
}

/// The terms a page marks with `<dfn>...</dfn>`, with their line numbers, in page order.
/// Text inside code fences is skipped, so a listing that shows the tag does not count.
fn marked_terms(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_fence = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("<dfn>") {
            let after = &rest[start + "<dfn>".len()..];
            let Some(end) = after.find("</dfn>") else {
                break;
            };
            found.push((number + 1, normalise(&after[..end])));
            rest = &after[end..];
        }
    }
    found
}

/// One glossary entry: the term and the page its tag links to.
#[derive(Debug, PartialEq)]
struct Entry {
    line: usize,
    term: String,
    page: String,
}

/// Reads the entries of the glossary: paragraphs that start `**term** ([tag](page.md))`.
fn glossary_entries(text: &str) -> Result<Vec<Entry>, Vec<String>> {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("**") else {
            continue;
        };
        let Some((term, tail)) = rest.split_once("**") else {
            problems.push(format!(
                "{GLOSSARY}:{}: unclosed ** in {line:?}",
                number + 1
            ));
            continue;
        };
        let page = tail
            .trim_start()
            .strip_prefix("([")
            .and_then(|t| t.split_once("]("))
            .and_then(|(_, t)| t.split_once(')'))
            .map(|(page, _)| page.split('#').next().unwrap_or(page).to_string());
        match page {
            Some(page) => entries.push(Entry {
                line: number + 1,
                term: normalise(term),
                page,
            }),
            None => problems.push(format!(
                "{GLOSSARY}:{}: {term:?} has no ([ch. N](page.md)) tag",
                number + 1
            )),
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

/// Everything wrong with the glossary, given each page's text in reading order.
fn glossary_problems(pages: &[(String, String)], glossary: &str) -> Vec<String> {
    let entries = match glossary_entries(glossary) {
        Ok(entries) => entries,
        Err(problems) => return problems,
    };
    let mut problems = Vec::new();
    // Where each term is first marked, in reading order.
    let mut first: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for (page, text) in pages {
        for (line, term) in marked_terms(text) {
            first.entry(term).or_insert((page.clone(), line));
        }
    }
    let mut listed: BTreeMap<&str, &Entry> = BTreeMap::new();
    for entry in &entries {
        if let Some(earlier) = listed.insert(&entry.term, entry) {
            problems.push(format!(
                "{GLOSSARY}:{}: {:?} is listed twice (also line {})",
                entry.line, entry.term, earlier.line
            ));
        }
        match first.get(&entry.term) {
            None => problems.push(format!(
                "{GLOSSARY}:{}: {:?} is marked <dfn> on no page; mark it where it is explained",
                entry.line, entry.term
            )),
            Some((page, line)) if *page != entry.page => problems.push(format!(
                "{GLOSSARY}:{}: {:?} is tagged {} but first explained in {page}:{line}",
                entry.line, entry.term, entry.page
            )),
            Some(_) => {}
        }
    }
    for (term, (page, line)) in &first {
        if !listed.contains_key(term.as_str()) {
            problems.push(format!(
                "{page}:{line}: marks <dfn>{term}</dfn>, which the glossary lacks"
            ));
        }
    }
    for pair in entries.windows(2) {
        if pair[0].term > pair[1].term {
            problems.push(format!(
                "{GLOSSARY}:{}: {:?} should come before {:?}",
                pair[1].line, pair[1].term, pair[0].term
            ));
        }
    }
    problems
}

#[test]
fn every_marked_term_is_in_the_glossary_with_the_chapter_that_explains_it() {
    let src = book_src();
    let summary = fs::read_to_string(src.join("SUMMARY.md")).expect("book/src/SUMMARY.md");
    let mut pages = Vec::new();
    for page in pages_in_order(&summary) {
        if page == GLOSSARY {
            continue;
        }
        let text = fs::read_to_string(src.join(&page)).expect("SUMMARY.md links real pages");
        pages.push((page, text));
    }
    assert!(pages.len() > 8, "SUMMARY.md lists too few pages: {pages:?}");
    let glossary = fs::read_to_string(src.join(GLOSSARY)).expect("the glossary page");
    let problems = glossary_problems(&pages, &glossary);
    assert!(
        problems.is_empty(),
        "the glossary and the pages disagree:\n{}",
        problems.join("\n")
    );
    let marked: usize = pages.iter().map(|(_, t)| marked_terms(t).len()).sum();
    assert!(
        marked > 40,
        "only {marked} terms are marked in the whole book"
    );
}

#[test]
fn the_checker_catches_what_it_claims_to() {
    let pages = vec![
        (
            "ch01.md".to_string(),
            "A <dfn>Backlog</dfn> and an\n```\n<dfn>fenced</dfn>\n```\n<dfn>orphan</dfn>\n"
                .to_string(),
        ),
        (
            "ch02.md".to_string(),
            "The <dfn>backlog</dfn> again, and a <dfn>head</dfn>.\n".to_string(),
        ),
    ];
    let good = "**backlog** ([ch. 1](ch01.md)): x\n\n**head** ([ch. 2](ch02.md)): y\n\
                \n**orphan** ([ch. 1](ch01.md)): z\n";
    assert_eq!(glossary_problems(&pages, good), Vec::<String>::new());
    // A wrong tag, a term no page marks, a marked term left out, and the order.
    let bad = "**head** ([ch. 1](ch01.md)): y\n\n**backlog** ([ch. 1](ch01.md)): x\n\
               \n**never** ([ch. 2](ch02.md)): w\n";
    let problems = glossary_problems(&pages, bad);
    let expect = [
        "\"head\" is tagged ch01.md but first explained in ch02.md:1",
        "\"never\" is marked <dfn> on no page",
        "marks <dfn>orphan</dfn>, which the glossary lacks",
        "\"backlog\" should come before \"head\"",
    ];
    for text in expect {
        assert!(
            problems.iter().any(|p| p.contains(text)),
            "{text:?} not in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    // An entry without a tag is reported as such.
    let untagged = glossary_problems(&pages, "**backlog**: x\n");
    assert!(
        untagged[0].contains("has no ([ch. N](page.md)) tag"),
        "{untagged:?}"
    );
}
