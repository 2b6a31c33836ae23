//! Runs fuzz inputs through the checks without libFuzzer: `replay TARGET PATH...`, where a
//! path is a file or a directory of files (a corpus, `artifacts/TARGET/`). Every input is run,
//! and each one that panics is named; the exit status is non-zero if any did.
//!
//! This is how a crash found by `cargo fuzz run` is replayed in a debugger-friendly build, and
//! how the checks run on a machine where cargo-fuzz (nightly) is not available.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((target, paths)) = args.split_first() else {
        eprintln!("usage: replay parse_head|chunked|proxy PATH...");
        return ExitCode::from(2);
    };
    let check: fn(&[u8]) = match target.as_str() {
        "parse_head" => minigun_fuzz::check_head_input,
        "chunked" => minigun_fuzz::check_chunked_input,
        "proxy" => minigun_fuzz::check_proxy_input,
        other => {
            eprintln!("unknown target {other:?}: parse_head, chunked or proxy");
            return ExitCode::from(2);
        }
    };
    let mut files = Vec::new();
    for path in paths {
        collect(Path::new(path), &mut files);
    }
    let mut failed = 0;
    for file in &files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            eprintln!(
                "FAILED {} ({:?})",
                file.display(),
                String::from_utf8_lossy(&data)
            );
            failed += 1;
        }
    }
    println!("{target}: {} inputs, {failed} failed", files.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for entry in entries {
                collect(&entry, files);
            }
        }
        Err(_) => files.push(path.to_owned()),
    }
}
