//! Differential property test of the request parser (issue 4, "Parser and framing"): random
//! *valid* requests, built from the grammar of RFC 9112 together with the answer the parser
//! must give, are parsed in one piece, byte by byte, and split in two at every position. Every
//! way must give the same head (every span, header, framing decision) and the same decoded
//! body, and that answer must be the one the generator intended.
//!
//! The generator is a small deterministic PRNG (no dev-dependencies), so a failure names a
//! case number that replays exactly: `CASE=123 cargo test --test parser_props -- --nocapture`.

use minigun::http::body::ChunkedDecoder;
use minigun::http::parse::{parse_head, percent_decode};
use minigun::http::{Error, Framing, Head, HeadScanner, Limits, Status};

/// How many random requests a run checks.
const CASES: u64 = 3000;

/// splitmix64: tiny, fast, and good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `1/n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes_from(&mut self, alphabet: &[u8], min: usize, max: usize) -> Vec<u8> {
        let n = min + self.below(max - min + 1);
        (0..n).map(|_| *self.pick(alphabet)).collect()
    }
}

/// `tchar` (RFC 9110 §5.6.2).
const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// `pchar` minus `%` (RFC 3986 §3.3): unreserved, sub-delims, ":" and "@".
const PCHAR: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@";
/// Host name characters.
const HOSTCHAR: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-.";

/// What a generated request must parse to.
#[derive(Debug)]
struct Expected {
    method: Vec<u8>,
    target: Vec<u8>,
    path: Vec<u8>,
    /// `path` with its escapes decoded.
    decoded_path: Vec<u8>,
    query: Vec<u8>,
    minor: u8,
    /// (name, value without the OWS around it), in order.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    host: Vec<u8>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    body: Vec<u8>,
    /// Bytes of the head (through its blank line) and of the framed body.
    head_len: usize,
    body_len: usize,
}

/// A path segment of pchars with some bytes written as `%XX`, and the bytes it stands for.
fn segment(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let mut raw = Vec::new();
    let mut decoded = Vec::new();
    for _ in 0..rng.below(8) {
        if rng.one_in(5) {
            let b = rng.next() as u8;
            let hex = if rng.one_in(2) {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            };
            raw.extend_from_slice(hex.as_bytes());
            decoded.push(b);
        } else {
            let c = *rng.pick(PCHAR);
            raw.push(c);
            decoded.push(c);
        }
    }
    (raw, decoded)
}

/// Optional whitespace (RFC 9110 §5.6.3).
fn ows(rng: &mut Rng) -> Vec<u8> {
    rng.bytes_from(b" \t", 0, 2)
}

/// A field value: field-vchars (including obs-text) with single spaces and tabs inside.
fn field_value(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..rng.below(20) {
        let b = match rng.below(10) {
            0 if i > 0 => b' ',
            1 if i > 0 => b'\t',
            2 => 0x80 + rng.below(128) as u8,
            _ => b'!' + rng.below(94) as u8,
        };
        v.push(b);
    }
    while matches!(v.last(), Some(b' ' | b'\t')) {
        v.pop();
    }
    v
}

/// A header name that is none of the ones with framing or routing meaning.
fn plain_name(rng: &mut Rng) -> Vec<u8> {
    loop {
        let mut name = rng.bytes_from(TCHAR, 1, 12);
        if rng.one_in(3) {
            name = rng
                .pick(&[
                    &b"Accept"[..],
                    b"User-Agent",
                    b"X-Forwarded-For",
                    b"Cookie",
                    b"X_Y",
                ])
                .to_vec();
        }
        let special = [
            &b"host"[..],
            b"content-length",
            b"transfer-encoding",
            b"connection",
            b"expect",
        ];
        if !special.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            return name;
        }
    }
}

/// Generates one valid request, followed by a second one as a pipelining client would send.
fn generate(rng: &mut Rng) -> (Vec<u8>, Expected) {
    let minor = if rng.one_in(4) { 0 } else { 1 };
    let method = if rng.one_in(4) {
        rng.bytes_from(TCHAR, 1, 10)
    } else {
        rng.pick(&[&b"GET"[..], b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD"])
            .to_vec()
    };

    // The request target: origin-form, or absolute-form (whose authority is the host).
    let mut path = Vec::new();
    let mut decoded_path = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let (raw, decoded) = segment(rng);
        path.push(b'/');
        path.extend(raw);
        decoded_path.push(b'/');
        decoded_path.extend(decoded);
    }
    let query = if rng.one_in(2) {
        let mut q = rng.bytes_from(PCHAR, 0, 12);
        q.extend_from_slice(b"?/");
        q.extend(rng.bytes_from(PCHAR, 0, 6));
        q
    } else {
        Vec::new()
    };
    let mut authority = if rng.one_in(8) {
        // An IP literal (RFC 3986 §3.2.2).
        rng.pick(&[&b"[::1]"[..], b"[2001:db8::7]", b"[::ffff:10.0.0.1]"])
            .to_vec()
    } else {
        rng.bytes_from(HOSTCHAR, 1, 12)
    };
    if rng.one_in(2) {
        authority.extend_from_slice(format!(":{}", rng.below(65536)).as_bytes());
    }
    let absolute = rng.one_in(6);
    let mut target = Vec::new();
    if absolute {
        target.extend_from_slice(if rng.one_in(2) {
            b"http://"
        } else {
            b"HTTPS://"
        });
        target.extend_from_slice(&authority);
    }
    target.extend_from_slice(&path);
    if !query.is_empty() || rng.one_in(8) {
        target.push(b'?');
        target.extend_from_slice(&query);
    }

    let mut out = Vec::new();
    for _ in 0..rng.below(3) {
        if rng.one_in(3) {
            // RFC 9112 §2.2: empty lines before the request line are ignored.
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(&method);
    out.push(b' ');
    out.extend_from_slice(&target);
    out.extend_from_slice(format!(" HTTP/1.{minor}\r\n").as_bytes());

    // Header fields, each written with random OWS around its value.
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let host_value = if absolute && rng.one_in(2) {
        rng.bytes_from(HOSTCHAR, 1, 8)
    } else {
        authority.clone()
    };
    let with_host = minor == 1 || rng.one_in(2);
    for _ in 0..rng.below(6) {
        headers.push((plain_name(rng), field_value(rng)));
    }
    if with_host {
        let at = rng.below(headers.len() + 1);
        let name = rng.pick(&[&b"Host"[..], b"host", b"HOST"]).to_vec();
        headers.insert(at, (name, host_value.clone()));
    }
    let mut keep_alive = minor == 1;
    if rng.one_in(3) {
        let (value, close, ka): (&[u8], bool, bool) = *rng.pick(&[
            (&b"close"[..], true, false),
            (b"Keep-Alive", false, true),
            (b"upgrade, CLOSE", true, false),
            (b"keep-alive , x", false, true),
            (b"TE", false, false),
        ]);
        headers.push((b"Connection".to_vec(), value.to_vec()));
        keep_alive = if minor == 1 { !close } else { ka && !close };
    }
    let expect_continue = minor == 1 && rng.one_in(6);
    if expect_continue {
        headers.push((b"Expect".to_vec(), b"100-continue".to_vec()));
    }

    // The body and its framing (RFC 9112 §6.3).
    let mut body = Vec::new();
    let mut framed = Vec::new();
    let framing = match rng.below(3) {
        0 => {
            if rng.one_in(3) {
                headers.push((b"Content-Length".to_vec(), b"0".to_vec()));
            }
            Framing::None
        }
        1 => {
            body = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
            let n = body.len();
            let value = match rng.below(4) {
                0 => format!("{n}, {n}"),
                1 => format!("000{n}"),
                _ => n.to_string(),
            };
            headers.push((b"Content-Length".to_vec(), value.into_bytes()));
            if rng.one_in(4) {
                headers.push((b"content-length".to_vec(), n.to_string().into_bytes()));
            }
            framed = body.clone();
            Framing::Length(n as u64)
        }
        _ if minor == 1 => {
            let name = rng
                .pick(&[&b"Transfer-Encoding"[..], b"transfer-encoding"])
                .to_vec();
            // Empty list elements are ignored (RFC 9110 §5.6.1.2).
            let value = rng
                .pick(&[
                    &b"chunked"[..],
                    b"Chunked",
                    b"CHUNKED",
                    b", chunked",
                    b"chunked ,",
                ])
                .to_vec();
            headers.push((name, value));
            for _ in 0..rng.below(4) {
                let chunk: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
                chunk_size_line(rng, chunk.len(), &mut framed);
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                body.extend(chunk);
            }
            chunk_size_line(rng, 0, &mut framed);
            for _ in 0..rng.below(3) {
                framed.extend(rng.bytes_from(TCHAR, 1, 8));
                framed.push(b':');
                framed.extend(ows(rng));
                framed.extend(field_value(rng));
                framed.extend_from_slice(b"\r\n");
            }
            framed.extend_from_slice(b"\r\n");
            Framing::Chunked
        }
        _ => Framing::None,
    };

    for (name, value) in &headers {
        out.extend_from_slice(name);
        out.push(b':');
        out.extend(ows(rng));
        out.extend_from_slice(value);
        out.extend(ows(rng));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let head_len = out.len();
    out.extend_from_slice(&framed);
    // A pipelined request behind this one must not be taken for part of it.
    out.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n");

    let host = if absolute { authority } else { host_value };
    let expected = Expected {
        method,
        target,
        path,
        decoded_path,
        query,
        minor,
        headers,
        host: if with_host || absolute {
            host
        } else {
            Vec::new()
        },
        framing,
        keep_alive,
        expect_continue,
        body,
        head_len,
        body_len: framed.len(),
    };
    (out, expected)
}

/// `chunk-size [ chunk-ext ] CRLF` with random hex case, leading zeros and extensions.
fn chunk_size_line(rng: &mut Rng, size: usize, out: &mut Vec<u8>) {
    let zeros = "0".repeat(rng.below(3));
    let hex = if rng.one_in(2) {
        format!("{zeros}{size:x}")
    } else {
        format!("{zeros}{size:X}")
    };
    out.extend_from_slice(hex.as_bytes());
    for _ in 0..rng.below(3) {
        out.extend(rng.bytes_from(b" \t", 0, 1));
        out.push(b';');
        out.extend(rng.bytes_from(b" \t", 0, 1));
        out.extend(rng.bytes_from(TCHAR, 1, 6));
        match rng.below(3) {
            0 => {}
            1 => {
                out.push(b'=');
                out.extend(rng.bytes_from(TCHAR, 1, 6));
            }
            _ => out.extend_from_slice(b"=\"a \\\" ;b\""),
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Everything the parser decided, as owned bytes so results from different buffers compare.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    len: usize,
    method: Vec<u8>,
    target: Vec<u8>,
    path: Vec<u8>,
    query: Vec<u8>,
    minor: u8,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    host: Option<Vec<u8>>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    /// The decoded body and the bytes of framing it spanned.
    body: Vec<u8>,
    body_len: usize,
}

/// Feeds the head to a scanner in the given pieces, then decodes the body from the pieces
/// that follow (a fresh read may hold the end of the head and the start of the body).
fn parse_in_pieces(input: &[u8], cuts: &[usize], limits: &Limits) -> Result<Parsed, Error> {
    let mut scanner = HeadScanner::default();
    let mut buf = Vec::new();
    let mut bounds = cuts.to_vec();
    bounds.push(input.len());
    let mut fed = 0;
    let mut pieces = bounds.into_iter();
    let len = loop {
        let Some(end) = pieces.next() else {
            return Err(Error::Timeout);
        };
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        if let Status::Complete(len) = scanner.scan(&buf, limits)? {
            break len;
        }
    };
    let mut head = Head::default();
    parse_head(&buf, len, &mut head)?;
    let mut parsed = Parsed {
        len,
        method: head.method.of(&buf).to_vec(),
        target: head.target.of(&buf).to_vec(),
        path: head.path.of(&buf).to_vec(),
        query: head.query.of(&buf).to_vec(),
        minor: head.minor,
        headers: head
            .headers
            .iter()
            .map(|h| (h.name.of(&buf).to_vec(), h.value.of(&buf).to_vec()))
            .collect(),
        host: head.host.map(|h| h.of(&buf).to_vec()),
        framing: head.framing,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        body: Vec::new(),
        body_len: 0,
    };

    // The body, from what is left in `buf` and the pieces still to come.
    let mut pending: Vec<u8> = buf[len..].to_vec();
    match head.framing {
        Framing::None => {}
        Framing::Length(n) => {
            while pending.len() < n as usize {
                let end = pieces.next().ok_or(Error::Timeout)?;
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            parsed.body = pending[..n as usize].to_vec();
            parsed.body_len = n as usize;
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new(limits.body);
            loop {
                if !pending.is_empty() {
                    let step = decoder.decode(&pending)?;
                    parsed
                        .body
                        .extend_from_slice(&pending[step.data.0..step.data.1]);
                    pending.drain(..step.consumed);
                    parsed.body_len += step.consumed;
                    if decoder.is_done() {
                        break;
                    }
                    if !pending.is_empty() {
                        continue;
                    }
                }
                let end = pieces.next().ok_or(Error::Timeout)?;
                pending.extend_from_slice(&input[fed..end]);
                fed = end;
            }
        }
    }
    Ok(parsed)
}

/// Checks that `parsed` is what the generator meant.
fn check_expected(case: u64, parsed: &Parsed, want: &Expected) {
    let ctx = || format!("case {case}: {want:?}");
    assert_eq!(parsed.len, want.head_len, "head length; {}", ctx());
    assert_eq!(parsed.method, want.method, "{}", ctx());
    assert_eq!(parsed.target, want.target, "{}", ctx());
    assert_eq!(parsed.path, want.path, "{}", ctx());
    assert_eq!(parsed.query, want.query, "{}", ctx());
    assert_eq!(parsed.minor, want.minor, "{}", ctx());
    assert_eq!(parsed.headers, want.headers, "{}", ctx());
    let host = parsed.host.clone().unwrap_or_default();
    assert_eq!(host, want.host, "host; {}", ctx());
    assert_eq!(parsed.framing, want.framing, "{}", ctx());
    assert_eq!(parsed.keep_alive, want.keep_alive, "keep-alive; {}", ctx());
    assert_eq!(parsed.expect_continue, want.expect_continue, "{}", ctx());
    assert_eq!(parsed.body, want.body, "body; {}", ctx());
    assert_eq!(parsed.body_len, want.body_len, "body framing; {}", ctx());
    let mut decoded = Vec::new();
    percent_decode(&parsed.path, &mut decoded);
    assert_eq!(decoded, want.decoded_path, "decoded path; {}", ctx());
}

/// Checks one case whole, byte by byte, and cut in two: at every position when `every_cut`,
/// else at a dozen random ones (splitting everywhere is quadratic, so a quarter of the cases
/// get it and the test stays within a few seconds in a debug build).
fn run_case(case: u64, limits: &Limits, every_cut: bool) {
    let mut rng = Rng::new(case);
    let (input, want) = generate(&mut rng);
    let whole = parse_in_pieces(&input, &[], limits)
        .unwrap_or_else(|e| panic!("case {case}: valid request refused: {e:?}\n{want:?}"));
    check_expected(case, &whole, &want);
    let bytewise: Vec<usize> = (1..input.len()).collect();
    let split = parse_in_pieces(&input, &bytewise, limits);
    assert_eq!(split.as_ref(), Ok(&whole), "case {case} fed byte by byte");
    let cuts: Vec<usize> = if every_cut {
        (1..input.len()).collect()
    } else {
        (0..12).map(|_| 1 + rng.below(input.len() - 1)).collect()
    };
    for cut in cuts {
        let split = parse_in_pieces(&input, &[cut], limits);
        assert_eq!(split.as_ref(), Ok(&whole), "case {case} split at {cut}");
    }
}

#[test]
fn random_valid_requests_parse_the_same_whole_and_split_anywhere() {
    let limits = Limits::default();
    if let Some(case) = std::env::var("CASE").ok().and_then(|c| c.parse().ok()) {
        run_case(case, &limits, true);
        return;
    }
    for case in 0..CASES {
        run_case(case, &limits, case % 4 == 0);
    }
}

#[test]
fn random_valid_requests_fit_tight_limits_exactly() {
    // Limits set to exactly each request's own sizes must accept it: the edge is inclusive.
    for case in 0..CASES / 10 {
        let mut rng = Rng::new(case);
        let (input, want) = generate(&mut rng);
        let head = &input[..want.head_len];
        let text_lines: Vec<&[u8]> = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        let limits = Limits {
            request_line: text_lines[0].len(),
            fields: want.headers.len(),
            field_size: text_lines[1..].iter().map(|l| l.len()).max().unwrap_or(0),
            body: want.body.len() as u64,
        };
        let whole = parse_in_pieces(&input, &[], &limits)
            .unwrap_or_else(|e| panic!("case {case} at its own limits: {e:?}\n{want:?}"));
        check_expected(case, &whole, &want);
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            parse_in_pieces(&input, &bytewise, &limits).as_ref(),
            Ok(&whole),
            "case {case} byte by byte at its own limits"
        );
    }
}
