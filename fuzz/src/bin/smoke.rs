//! A libFuzzer-free stand-in for `cargo fuzz run`: `smoke TARGET SECONDS [CORPUS_DIR]` mutates
//! the corpus inputs at random (bit flips, byte insertions and deletions, splices, interesting
//! HTTP tokens) and runs the checks until the time is up. No coverage feedback, so it is far
//! weaker than libFuzzer; it exists so the checks still run on a stable-only machine.
//! A failing input is written to `artifacts/TARGET/smoke-crash-N` and the run stops.

use std::path::Path;
use std::time::{Duration, Instant};

use minigun_fuzz::Rng;

/// Byte strings that matter to the grammar, spliced in at random.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\"",
    b"\\",
    b"=",
    b"%",
    b"?",
    b"#",
    b"0",
    b"f",
    b"\r\n\r\n",
    b"chunked",
    b"Transfer-Encoding",
    b"Content-Length",
    b"Host",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"http://",
    b"\x85",
    b"\xa0",
    b"999999999999999999",
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b"\r\n\r\n\0\r\nQUIT\n",
    b"127.0.0.1",
    b"::ffff:",
    b"/",
    b"*",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..rng.range(1, 4) {
        let len = input.len();
        match rng.range(0, 5) {
            0 if len > 0 => {
                let i = rng.range(0, len - 1);
                input[i] ^= 1 << rng.range(0, 7);
            }
            1 if len > 0 => {
                let i = rng.range(0, len - 1);
                input.remove(i);
            }
            2 => {
                let i = rng.range(0, len);
                input.insert(i, rng.next_u64() as u8);
            }
            3 => {
                let token = TOKENS[rng.range(0, TOKENS.len() - 1)];
                let i = rng.range(0, len);
                input.splice(i..i, token.iter().copied());
            }
            4 if !corpus.is_empty() => {
                let other = &corpus[rng.range(0, corpus.len() - 1)];
                let i = rng.range(0, len);
                let j = rng.range(0, other.len());
                input.truncate(i);
                input.extend_from_slice(&other[j..]);
            }
            _ => {
                let i = rng.range(0, len);
                let j = rng.range(i, len);
                input.drain(i..j);
            }
        }
    }
    input.truncate(8192);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (target, seconds) = match (args.first(), args.get(1).and_then(|s| s.parse().ok())) {
        (Some(t), Some(s)) => (t.clone(), s),
        _ => {
            eprintln!("usage: smoke parse_head|chunked|proxy SECONDS [CORPUS_DIR]");
            std::process::exit(2);
        }
    };
    let check: fn(&[u8]) = match target.as_str() {
        "parse_head" => minigun_fuzz::check_head_input,
        "chunked" => minigun_fuzz::check_chunked_input,
        "proxy" => minigun_fuzz::check_proxy_input,
        _ => {
            eprintln!("unknown target {target:?}");
            std::process::exit(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = args
        .get(2)
        .map(Into::into)
        .unwrap_or_else(|| root.join("corpus").join(&target));
    let corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    std::panic::set_hook(Box::new(|_| {}));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = Rng::new(u64::from(std::process::id()));
    let mut runs: u64 = 0;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let mut input = if corpus.is_empty() {
                Vec::new()
            } else {
                corpus[rng.range(0, corpus.len() - 1)].clone()
            };
            mutate(&mut rng, &mut input, &corpus);
            runs += 1;
            if std::panic::catch_unwind(|| check(&input)).is_err() {
                let out = root.join("artifacts").join(&target);
                let _ = std::fs::create_dir_all(&out);
                let file = out.join(format!("smoke-crash-{runs}"));
                let _ = std::fs::write(&file, &input);
                println!(
                    "{target}: crash after {runs} runs, input in {}",
                    file.display()
                );
                std::process::exit(1);
            }
        }
    }
    println!("{target}: {runs} runs in {seconds} s, no failure");
}
