//! Checks what the book says about its figures against the figures themselves.
//!
//! `book/figures.json` and `book/figures.md` are written by one measurement run,
//! `python3 bench/bench.py --book` (release builds, interleaved rounds); the chapters include
//! the tables from `figures.md`. `book/claims.json` lists every comparison the prose states
//! ("Keep-alive is worth at least a factor of two"), each with the phrase that states it.
//! This test measures nothing: it checks that each phrase is still in its chapter, that each
//! comparison holds for the committed figures, that every figure says its commands and its
//! build, and that no chapter shows a figure of a step it has not reached yet.

use std::fs;
use std::path::PathBuf;

fn book() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("book")
}

/// A JSON value; the two files are small and written by our own script, so a small reader
/// does (the crate depends on nothing but libc and pyo3).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Json::Text(s) => Some(s),
            _ => None,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Json::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Reads one JSON document.
fn parse(text: &str) -> Result<Json, String> {
    let mut reader = Reader {
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = reader.value()?;
    reader.blanks();
    if reader.at != reader.bytes.len() {
        return Err(format!("trailing bytes at {}", reader.at));
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn blanks(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.blanks();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", byte as char, self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.blanks();
        let rest = &self.bytes[self.at..];
        for (word, value) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if rest.starts_with(word.as_bytes()) {
                self.at += word.len();
                return Ok(value);
            }
        }
        match rest.first() {
            Some(b'"') => self.string().map(Json::Text),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.blanks();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::List(items));
                }
                loop {
                    items.push(self.value()?);
                    self.blanks();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::List(items));
                        }
                        _ => return Err(format!("expected , or ] at {}", self.at)),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                self.blanks();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.blanks();
                    let key = self.string()?;
                    self.expect(b':')?;
                    fields.push((key, self.value()?));
                    self.blanks();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(format!("expected , or }} at {}", self.at)),
                    }
                }
            }
            _ => {
                let end = rest
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || b"+-.eE".contains(b)))
                    .unwrap_or(rest.len());
                let number = std::str::from_utf8(&rest[..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not a JSON value at {}", self.at))?;
                self.at += end;
                Ok(Json::Number(number))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err("unterminated string".into());
            };
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let escaped = self.bytes.get(self.at).copied();
                    self.at += 1;
                    match escaped {
                        Some(b'n') => out.push(b'\n'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'u') => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .and_then(char::from_u32)
                                .ok_or("bad \\u escape")?;
                            self.at += 4;
                            let mut buf = [0; 4];
                            out.extend(hex.encode_utf8(&mut buf).as_bytes());
                        }
                        Some(other) => out.push(other),
                        None => return Err("unterminated escape".into()),
                    }
                }
                other => out.push(other),
            }
        }
    }
}

fn read_json(name: &str) -> Json {
    let path = book().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A number a claim names: a plain number, or `figure-id.field` in figures.json.
fn value_of(figures: &Json, reference: &Json) -> Result<f64, String> {
    if let Some(n) = reference.number() {
        return Ok(n);
    }
    let name = reference
        .text()
        .ok_or("a claim side is neither a number nor a name")?;
    let (id, field) = name
        .rsplit_once('.')
        .ok_or(format!("{name}: expected figure-id.field"))?;
    figures
        .get("figures")
        .and_then(|f| f.get(id))
        .ok_or(format!("{name}: no figure {id} in figures.json"))?
        .get(field)
        .and_then(Json::number)
        .ok_or(format!("{name}: figure {id} has no number {field}"))
}

fn claims() -> Vec<Json> {
    match read_json("claims.json") {
        Json::List(items) => items,
        other => panic!("claims.json: expected a list, got {other:?}"),
    }
}

fn field<'a>(claim: &'a Json, key: &str) -> &'a Json {
    claim
        .get(key)
        .unwrap_or_else(|| panic!("claims.json: a claim without {key}: {claim:?}"))
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_claim_is_stated_in_its_chapter() {
    for claim in claims() {
        let chapter = field(&claim, "chapter").text().expect("chapter is text");
        let says = field(&claim, "says").text().expect("says is text");
        let page = fs::read_to_string(book().join("src").join(chapter))
            .unwrap_or_else(|e| panic!("claims.json names {chapter}: {e}"));
        assert!(
            collapse(&page).contains(&collapse(says)),
            "{chapter} no longer says {says:?}: change the claim in book/claims.json with the \
             prose, or drop it"
        );
    }
}

#[test]
fn every_claim_holds_for_the_committed_figures() {
    let figures = read_json("figures.json");
    let mut wrong = Vec::new();
    for claim in claims() {
        let left = value_of(&figures, field(&claim, "left")).unwrap_or_else(|e| panic!("{e}"));
        let right = value_of(&figures, field(&claim, "right")).unwrap_or_else(|e| panic!("{e}"));
        let factor = claim.get("factor").and_then(Json::number).unwrap_or(1.0);
        let op = field(&claim, "op").text().expect("op is text");
        let holds = match op {
            ">=" => left >= factor * right,
            "<=" => left <= factor * right,
            other => panic!("claims.json: unknown op {other:?}"),
        };
        if !holds {
            wrong.push(format!(
                "{}: {:?}: {left} {op} {factor} × {right} does not hold",
                field(&claim, "chapter").text().unwrap_or("?"),
                field(&claim, "says").text().unwrap_or("?"),
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the book states comparisons its own figures do not support:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_figure_says_its_commands_and_its_build() {
    let figures = read_json("figures.json");
    let Some(Json::Object(all)) = figures.get("figures") else {
        panic!("figures.json has no figures");
    };
    assert!(!all.is_empty());
    for (id, figure) in all {
        let text = |key: &str| figure.get(key).and_then(Json::text).unwrap_or("");
        assert_eq!(
            text("build"),
            "release",
            "{id}: figures come from release builds"
        );
        assert!(
            text("server").contains("target/release/"),
            "{id}: {}",
            text("server")
        );
        assert!(text("load").starts_with("wrk "), "{id}: {}", text("load"));
        assert!(
            figure.get("rps").and_then(Json::number).is_some(),
            "{id} was not measured: {:?}",
            figure.get("errors")
        );
    }
    let meta = figures.get("meta").expect("figures.json has meta");
    assert_eq!(
        meta.get("command").and_then(Json::text),
        Some("python3 bench/bench.py --book")
    );
}

/// The figure tables of `figures.md`, by anchor: (chapter number, row labels).
fn tables() -> Vec<(u32, Vec<String>)> {
    let text = fs::read_to_string(book().join("figures.md")).expect("book/figures.md");
    let mut tables = Vec::new();
    let mut current: Option<(u32, Vec<String>)> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- ANCHOR: ch")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            current = Some((name.parse().expect("anchors are chNN"), Vec::new()));
        } else if line.starts_with("<!-- ANCHOR_END: ") {
            tables.extend(current.take());
        } else if let (Some((_, rows)), Some(row)) = (&mut current, line.strip_prefix("| step ")) {
            rows.push(format!(
                "step {}",
                row.split('|').next().unwrap_or("").trim()
            ));
        }
    }
    tables
}

#[test]
fn no_chapter_shows_a_figure_of_a_later_step() {
    let tables = tables();
    assert!(!tables.is_empty(), "figures.md has no chNN anchors");
    for (chapter, rows) in tables {
        assert!(!rows.is_empty(), "figures.md: ch{chapter:02} has no rows");
        for row in rows {
            let step: u32 = row[5..7].parse().expect("rows start with `step NN`");
            assert!(
                step <= chapter,
                "figures.md: chapter {chapter} shows {row:?}, a step it has not reached"
            );
        }
    }
}

#[test]
fn each_chapter_includes_only_its_own_figures() {
    for entry in fs::read_dir(book().join("src"))
        .expect("book/src")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        for (at, _) in text.match_indices("figures.md:") {
            let anchor: String = text[at + "figures.md:".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                name.starts_with(&anchor),
                "{name} includes the figures of {anchor}"
            );
        }
    }
}

#[test]
fn the_json_reader_reads_what_python_writes() {
    let value = parse(r#"{"a": [1, 2.5e1, -3], "b": {"c": null, "d": "x\"\u00e9"}, "e": true}"#)
        .expect("valid JSON");
    assert_eq!(
        value.get("a"),
        Some(&Json::List(vec![
            Json::Number(1.0),
            Json::Number(25.0),
            Json::Number(-3.0)
        ]))
    );
    assert_eq!(
        value.get("b").and_then(|b| b.get("d")).and_then(Json::text),
        Some("x\"é")
    );
    assert!(parse("{\"a\": }").is_err());
}

/// The figures of one section of a page: every "N req/s" and "N MiB" between `heading` and the
/// next heading.
fn section_figures(page: &str, heading: &str) -> Vec<String> {
    let start = page
        .find(heading)
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let body = &page[start + heading.len()..];
    let body = &body[..body.find("\n#").unwrap_or(body.len())];
    let words: Vec<&str> = body.split_whitespace().collect();
    let mut out = Vec::new();
    for pair in words.windows(2) {
        let unit = pair[1].trim_end_matches([',', '.', ';', ')']);
        let number = pair[0].trim_start_matches('(');
        let numeric = !number.is_empty()
            && number
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b',' || b == b'.')
            && number.bytes().any(|b| b.is_ascii_digit());
        if numeric && (unit == "req/s" || unit == "MiB") {
            out.push(format!("{number} {unit}"));
        }
    }
    out
}

#[test]
fn the_deployment_appendix_quotes_the_committed_benchmark() {
    // Appendix D sizes workers and threads from bench/RESULTS.md; a figure there that the
    // results no longer contain is a figure from an older run.
    let page = fs::read_to_string(book().join("src/appendix-d-deployment.md")).expect("appendix D");
    let results = fs::read_to_string(book().join("../bench/RESULTS.md")).expect("bench/RESULTS.md");
    let figures = section_figures(&page, "## Sizing workers and threads");
    assert!(figures.len() >= 5, "too few figures found: {figures:?}");
    for figure in figures {
        let number = figure.split(' ').next().expect("a number");
        let cell = format!("| {number} |");
        assert!(
            results.contains(&cell) || results.contains(&figure),
            "appendix D quotes {figure}, which bench/RESULTS.md does not contain: \
             take the figures from the latest run"
        );
    }
}
