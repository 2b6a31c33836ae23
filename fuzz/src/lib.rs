//! The checks behind minigun's fuzz targets, kept out of the `fuzz_target!` files so the
//! libFuzzer targets, the plain `replay` and `smoke` harnesses and the seed generator share
//! one definition of what "correct" means (issue 4, "Parser and framing").
//!
//! Each check takes the raw fuzzer input, derives the parser limits and the ways to split the
//! bytes from a few leading bytes, runs the parser every way, and panics on:
//! - a panic inside the parser (libFuzzer reports it as a crash);
//! - a result that depends on how the bytes were split (whole, byte by byte, random pieces);
//! - a span or data range outside the bytes it describes;
//! - more bytes buffered than the limits allow while the parser still says "read more", or a
//!   call that neither makes progress nor ends (bounded work);
//! - a parsed head that breaks the grammar it claims to have checked (a header value holding
//!   CR or LF, chunked framing without a `Transfer-Encoding: chunked` header, ...);
//! - for chunked bodies, a disagreement with a small independent reference decoder.
//!
//! Infinite loops and runaway allocation are left to libFuzzer's `-timeout` and `-rss_limit_mb`.

use minigun::http::body::ChunkedDecoder;
use minigun::http::parse::{parse_head, Header};
use minigun::http::{proxy, Error, Framing, Head, HeadScanner, Limits, Span, Status};

/// Leading bytes of a `parse_head` input: flags, three limit bytes, a split seed.
pub const HEAD_PREFIX: usize = 5;
/// Leading bytes of a `chunked` input: flags (with the body limit), a split seed.
pub const CHUNKED_PREFIX: usize = 2;

/// A small xorshift generator: the split positions must follow from the input alone, so a
/// crash replays exactly.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (0 is remapped, xorshift would stay at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Piece sizes that add up to `len`, drawn from `seed`; the seed also picks how coarse they are
/// so both one-byte dribbles and segment-sized reads get exercised.
pub fn random_pieces(seed: u64, len: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ (len as u64) << 8);
    let max = [1, 3, 7, 16, 64, 512][(seed % 6) as usize];
    let mut pieces = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = rng.range(1, max).min(left);
        pieces.push(n);
        left -= n;
    }
    pieces
}

/// Every way a check feeds the same bytes: whole, byte by byte, random pieces, and cut in two
/// at a seed-chosen point.
fn splits(seed: u64, len: usize) -> Vec<Vec<usize>> {
    let mut ways = vec![vec![len]];
    if len > 1 {
        ways.push(vec![1; len]);
        ways.push(random_pieces(seed, len));
        let cut = 1 + (Rng::new(seed.wrapping_add(7)).next_u64() as usize) % (len - 1);
        ways.push(vec![cut, len - cut]);
    }
    ways
}

// ------------------------------------------------------------------------------------------
// Request heads
// ------------------------------------------------------------------------------------------

/// The limits a `parse_head` input asks for: the server's defaults, or (flag bit 0) tiny ones
/// taken from the next three bytes so the fuzzer reaches every limit's edge quickly.
pub fn head_limits(prefix: &[u8; HEAD_PREFIX]) -> Limits {
    if prefix[0] & 1 == 0 {
        return Limits::default();
    }
    Limits {
        request_line: usize::from(prefix[1] & 63),
        fields: usize::from(prefix[2] & 7),
        field_size: usize::from(prefix[3] & 63),
        body: 0,
    }
}

/// Most bytes a head may span: up to four empty lines (RFC 9112 §2.2), the request line, the
/// field lines, the blank line.
pub fn max_head_len(limits: &Limits) -> usize {
    8 + limits.request_line + 2 + limits.fields * (limits.field_size + 2) + 2
}

/// Most bytes the scanner may hold while still answering "read more": the above, with an
/// unfinished field line (its CR may already be there) in place of the blank line.
pub fn max_partial_len(limits: &Limits) -> usize {
    8 + limits.request_line + 2 + limits.fields * (limits.field_size + 2) + limits.field_size + 1
}

/// Everything `parse_head` decided, in a comparable form (`Head` has no `PartialEq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    len: usize,
    line_start: usize,
    line_end: usize,
    method: Span,
    target: Span,
    path: Span,
    query: Span,
    minor: u8,
    headers: Vec<Header>,
    host: Option<Span>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

impl Snapshot {
    fn of(head: &Head) -> Snapshot {
        Snapshot {
            len: head.len,
            line_start: head.line_start,
            line_end: head.line_end,
            method: head.method,
            target: head.target,
            path: head.path,
            query: head.query,
            minor: head.minor,
            headers: head.headers.clone(),
            host: head.host,
            framing: head.framing,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
        }
    }
}

/// How feeding one request head ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadOutcome {
    /// All bytes were fed and the head is not complete.
    Partial,
    /// The scanner refused the bytes.
    Scanned(Error),
    /// The scanner found a head of `len` bytes and `parse_head` refused it.
    Refused(usize, Error),
    /// The head parsed.
    Parsed(Snapshot),
}

/// Feeds `data` to a scanner in pieces of the given sizes, as a connection's reads would,
/// checking the scanner's own promises on the way.
pub fn feed_head(data: &[u8], pieces: &[usize], limits: &Limits) -> HeadOutcome {
    let mut scanner = HeadScanner::default();
    let mut buf = Vec::with_capacity(data.len());
    let mut fed = 0;
    for &n in pieces {
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        match scanner.scan(&buf, limits) {
            Err(e) => return HeadOutcome::Scanned(e),
            Ok(Status::Partial) => {
                assert!(
                    buf.len() <= max_partial_len(limits),
                    "scanner holds {} bytes and still wants more (limits {limits:?})",
                    buf.len()
                );
                // Scanning the same bytes again must cost nothing and say the same.
                assert_eq!(scanner.scan(&buf, limits), Ok(Status::Partial));
            }
            Ok(Status::Complete(len)) => {
                assert!(len <= buf.len(), "head of {len} bytes in {}", buf.len());
                assert!(
                    len >= 4 && &buf[len - 4..len] == b"\r\n\r\n",
                    "head ends {len}"
                );
                assert!(
                    len <= max_head_len(limits),
                    "head of {len} bytes, {limits:?}"
                );
                let mut head = Head::default();
                return match parse_head(&buf, len, &mut head) {
                    Err(e) => HeadOutcome::Refused(len, e),
                    Ok(()) => {
                        check_head(&buf, len, &head, limits);
                        let snapshot = Snapshot::of(&head);
                        // The worker reuses one `Head` per connection: a head left over from
                        // another request must not leak into this one.
                        let mut reused = Head::default();
                        let other = b"POST http://o:1/x?y HTTP/1.0\r\nConnection: keep-alive\r\n\
                                      Content-Length: 3\r\nExpect: 100-continue\r\n\r\n";
                        parse_head(other, other.len(), &mut reused).expect("canned request");
                        parse_head(&buf, len, &mut reused).expect("parsed once already");
                        assert_eq!(Snapshot::of(&reused), snapshot, "reused Head differs");
                        HeadOutcome::Parsed(snapshot)
                    }
                };
            }
        }
    }
    HeadOutcome::Partial
}

fn span_in(span: Span, lo: usize, hi: usize, what: &str) {
    assert!(
        lo <= span.start as usize && span.start <= span.end && span.end as usize <= hi,
        "{what} {span:?} outside {lo}..{hi}"
    );
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a parsed head must satisfy whatever bytes produced it.
fn check_head(buf: &[u8], len: usize, head: &Head, limits: &Limits) {
    assert_eq!(head.len, len);
    assert!(head.line_start <= head.line_end && head.line_end + 4 <= len);
    let line = (head.line_start, head.line_end);
    span_in(head.method, line.0, line.1, "method");
    span_in(head.target, line.0, line.1, "target");
    span_in(
        head.path,
        head.target.start as usize,
        head.target.end as usize,
        "path",
    );
    span_in(
        head.query,
        head.target.start as usize,
        head.target.end as usize,
        "query",
    );
    assert!(!head.method.is_empty() && head.method.of(buf).iter().all(|&b| is_tchar(b)));
    assert!(!head.target.is_empty());
    assert!(head.minor <= 1);
    assert!(head.headers.len() <= limits.fields);
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut te = false;
    let mut cl = Vec::new();
    let mut hosts = 0;
    for h in &head.headers {
        span_in(h.name, head.line_end + 2, len - 2, "header name");
        span_in(h.value, h.name.end as usize, len - 2, "header value");
        let name = h.name.of(buf);
        let value = h.value.of(buf);
        assert!(
            !name.is_empty() && name.iter().all(|&b| is_tchar(b)),
            "name {name:?}"
        );
        assert!(
            value.iter().all(|&b| b == b'\t' || b >= b' ' && b != 0x7f),
            "control byte in value {value:?}"
        );
        assert!(
            !value.starts_with(b" ")
                && !value.starts_with(b"\t")
                && !value.ends_with(b" ")
                && !value.ends_with(b"\t"),
            "untrimmed value {value:?}"
        );
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // One list across all its field lines; empty elements do not count (RFC 9110
            // §5.6.1.2).
            te = true;
            codings.extend(
                value
                    .split(|&b| b == b',')
                    .map(trim)
                    .filter(|c| !c.is_empty()),
            );
        } else if name.eq_ignore_ascii_case(b"content-length") {
            cl.push(value);
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    if let Some(host) = head.host {
        span_in(host, head.line_start, len, "host");
    }
    assert!(hosts <= 1, "{hosts} Host headers accepted");
    if head.minor == 1 {
        assert!(head.host.is_some(), "HTTP/1.1 without a host");
    }
    // RFC 9112 §6.3: the framing must follow from the headers, and never from both.
    match head.framing {
        Framing::Chunked => {
            assert!(cl.is_empty(), "chunked with Content-Length");
            assert_eq!(head.minor, 1, "chunked on HTTP/1.0");
            // Anything but chunked alone is refused (400, or 501 for codings we lack).
            assert!(
                codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked"),
                "chunked framing from Transfer-Encoding {codings:?}"
            );
        }
        Framing::Length(n) => {
            assert!(!te && n > 0 && !cl.is_empty());
            for v in cl {
                for part in v.split(|&b| b == b',') {
                    let part = trim(part);
                    let digits = part.iter().skip_while(|&&b| b == b'0').count();
                    let value = std::str::from_utf8(&part[part.len() - digits..])
                        .ok()
                        .and_then(|s| {
                            if s.is_empty() {
                                Some(0)
                            } else {
                                s.parse().ok()
                            }
                        });
                    assert_eq!(value, Some(n), "CL {v:?} vs {n}");
                }
            }
        }
        Framing::None => {
            assert!(!te, "Transfer-Encoding without chunked framing");
            for v in cl {
                for part in v.split(|&b| b == b',') {
                    let part = trim(part);
                    assert!(
                        !part.is_empty() && part.iter().all(|&b| b == b'0'),
                        "CL {v:?}"
                    );
                }
            }
        }
    }
    // The accessors the worker and the environ use must not panic.
    let _ = head.header(buf, "host");
    let _ = head.is_head(buf);
    let _ = head.protocol();
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The `parse_head` fuzz check: `input` is [`HEAD_PREFIX`] control bytes, then raw bytes
/// that a client might send.
pub fn check_head_input(input: &[u8]) {
    let Some((prefix, data)) = input.split_first_chunk::<HEAD_PREFIX>() else {
        return;
    };
    let limits = head_limits(prefix);
    let seed = u64::from(prefix[4]);
    let ways = splits(seed, data.len());
    let whole = feed_head(data, &ways[0], &limits);
    for pieces in &ways[1..] {
        let split = feed_head(data, pieces, &limits);
        assert_eq!(
            whole,
            split,
            "whole input and pieces {:?} disagree",
            &pieces[..pieces.len().min(32)]
        );
    }
}

// ------------------------------------------------------------------------------------------
// Chunked bodies
// ------------------------------------------------------------------------------------------

/// How decoding one chunked body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkedOutcome {
    /// The body ended after `consumed` bytes of input.
    Done { body: Vec<u8>, consumed: usize },
    /// All input was fed; the body is not over yet.
    NeedMore { body: Vec<u8> },
    /// The decoder refused the input.
    Failed { body: Vec<u8>, error: Error },
}

/// Feeds `data` to a decoder in pieces, as `wsgi.input` does: decode what is buffered, hand
/// the data on, drop what was consumed, read more when asked.
pub fn feed_chunked(data: &[u8], pieces: &[usize], limit: u64) -> ChunkedOutcome {
    let mut decoder = ChunkedDecoder::new(limit);
    let mut body = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut consumed_total = 0;
    let mut calls = 0;
    let mut fed = 0;
    let mut pieces = pieces.iter();
    loop {
        if !buf.is_empty() {
            calls += 1;
            assert!(calls <= 2 * data.len() + 2, "decoder makes no progress");
            let step = match decoder.decode(&buf) {
                Ok(step) => step,
                Err(error) => return ChunkedOutcome::Failed { body, error },
            };
            let (from, to) = step.data;
            assert!(
                step.consumed <= buf.len() && from <= to && to <= step.consumed,
                "decode gave {step:?} for {} bytes",
                buf.len()
            );
            assert!(
                step.consumed > 0 || decoder.is_done(),
                "no progress on {} bytes while not done",
                buf.len()
            );
            body.extend_from_slice(&buf[from..to]);
            buf.drain(..step.consumed);
            consumed_total += step.consumed;
            if limit > 0 {
                assert!(body.len() as u64 <= limit, "body over the limit");
            }
            if decoder.is_done() {
                // A finished decoder takes nothing more.
                let again = decoder.decode(b"0\r\n\r\n").expect("done decoder");
                assert_eq!((again.consumed, again.data.0, again.data.1), (0, 0, 0));
                return ChunkedOutcome::Done {
                    body,
                    consumed: consumed_total,
                };
            }
            if !buf.is_empty() {
                continue;
            }
        }
        match pieces.next() {
            Some(&n) => {
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
            }
            None => return ChunkedOutcome::NeedMore { body },
        }
    }
}

/// What the reference decoder made of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Reference {
    /// A complete body: its data, the bytes it spans, the longest size line (CR included)
    /// and the bytes of the trailer section (CRs included, LFs not), for the limit checks.
    Done {
        body: Vec<u8>,
        consumed: usize,
        longest_line: usize,
        trailers: usize,
    },
    /// Not a complete, valid body.
    No,
}

/// A line-at-a-time chunked decoder written straight from RFC 9112 §7.1, independent of the
/// state machine under test. It accepts what minigun documents as accepted and nothing more:
/// `size [ (";" | SP | HT) ext ] CRLF`, where `ext` is tokens, `;`, `=`, SP, HT and quoted
/// strings; trailer lines are `token ":" field-value`.
pub fn reference_chunked(input: &[u8]) -> Reference {
    let mut pos = 0;
    let mut body = Vec::new();
    let mut longest_line = 0;
    let line_at = |pos: usize| -> Option<&[u8]> {
        let lf = pos + input[pos..].iter().position(|&b| b == b'\n')?;
        let line = &input[pos..lf];
        let (last, text) = line.split_last()?;
        (*last == b'\r' && !text.contains(&b'\r')).then_some(text)
    };
    loop {
        let Some(line) = line_at(pos) else {
            return Reference::No;
        };
        longest_line = longest_line.max(line.len() + 1);
        pos += line.len() + 2;
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 15 || !valid_extension(&line[digits..]) {
            return Reference::No;
        }
        let text = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
        let size = u64::from_str_radix(text, 16).expect("at most 15 hex digits") as usize;
        if size == 0 {
            break;
        }
        if input.len() < pos + size + 2 || &input[pos + size..pos + size + 2] != b"\r\n" {
            return Reference::No;
        }
        body.extend_from_slice(&input[pos..pos + size]);
        pos += size + 2;
    }
    let mut trailers = 0;
    loop {
        let Some(line) = line_at(pos) else {
            return Reference::No;
        };
        pos += line.len() + 2;
        trailers += line.len() + 1;
        if line.is_empty() {
            return Reference::Done {
                body,
                consumed: pos,
                longest_line,
                trailers,
            };
        }
        // field-line = field-name ":" OWS field-value OWS (RFC 9112 §5, §7.1.2).
        let field = |b: &u8| *b == b'\t' || (b' '..=b'~').contains(b) || *b >= 0x80;
        let name = line.iter().take_while(|&&b| is_tchar(b)).count();
        if name == 0 || line.get(name) != Some(&b':') || !line.iter().all(field) {
            return Reference::No;
        }
    }
}

fn valid_extension(ext: &[u8]) -> bool {
    let Some((&first, _)) = ext.split_first() else {
        return true;
    };
    if !matches!(first, b';' | b' ' | b'\t') {
        return false;
    }
    let mut quoted = false;
    let mut escaped = false;
    for &b in ext {
        let text = b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
        if escaped {
            if !text {
                return false;
            }
            escaped = false;
        } else if quoted {
            match b {
                b'"' => quoted = false,
                b'\\' => escaped = true,
                _ if text => {}
                _ => return false,
            }
        } else {
            match b {
                b'"' => quoted = true,
                b';' | b'=' | b' ' | b'\t' => {}
                _ if is_tchar(b) => {}
                _ => return false,
            }
        }
    }
    !quoted && !escaped
}

/// The body limit and split seed a `chunked` input asks for: flag bit 0 set means a limit of
/// the other seven bits (0 = none).
pub fn chunked_limit(prefix: &[u8; CHUNKED_PREFIX]) -> u64 {
    if prefix[0] & 1 == 1 {
        u64::from(prefix[0] >> 1)
    } else {
        0
    }
}

/// The `chunked` fuzz check: [`CHUNKED_PREFIX`] control bytes, then a would-be chunked body.
pub fn check_chunked_input(input: &[u8]) {
    let Some((prefix, data)) = input.split_first_chunk::<CHUNKED_PREFIX>() else {
        return;
    };
    let limit = chunked_limit(prefix);
    let ways = splits(u64::from(prefix[1]), data.len());
    let whole = feed_chunked(data, &ways[0], limit);
    for pieces in &ways[1..] {
        let split = feed_chunked(data, pieces, limit);
        assert_eq!(
            whole,
            split,
            "whole body and pieces {:?} disagree",
            &pieces[..pieces.len().min(32)]
        );
    }
    // The worker's pre-read runs a fresh decoder over a growing buffer instead; it must agree.
    let mut decoder = ChunkedDecoder::new(limit);
    let mut rest = data;
    let mut prebuffer = Ok(false);
    while !rest.is_empty() && !decoder.is_done() {
        match decoder.decode(rest) {
            Ok(step) if step.consumed == 0 => break,
            Ok(step) => rest = &rest[step.consumed..],
            Err(e) => {
                prebuffer = Err(e);
                break;
            }
        }
    }
    let prebuffer = prebuffer.map(|_| decoder.is_done());
    match &whole {
        ChunkedOutcome::Done { .. } => assert_eq!(prebuffer, Ok(true)),
        ChunkedOutcome::NeedMore { .. } => assert_eq!(prebuffer, Ok(false)),
        ChunkedOutcome::Failed { error, .. } => assert_eq!(prebuffer, Err(*error)),
    }

    let reference = reference_chunked(data);
    match (&whole, &reference) {
        (
            ChunkedOutcome::Done { body, consumed },
            Reference::Done {
                body: ref_body,
                consumed: ref_consumed,
                ..
            },
        ) => {
            assert_eq!(body, ref_body, "body differs from the reference decoder");
            assert_eq!(
                consumed, ref_consumed,
                "body ends elsewhere than the reference's"
            );
        }
        (ChunkedOutcome::Done { .. }, Reference::No) => {
            panic!("decoder accepted a body the reference decoder refuses: {whole:?}")
        }
        (
            _,
            Reference::Done {
                body,
                longest_line,
                trailers,
                ..
            },
        ) => {
            // Within the decoder's limits, anything the reference takes must be taken.
            let within = *longest_line <= 4096
                && *trailers <= 16 * 1024
                && (limit == 0 || body.len() as u64 <= limit);
            assert!(!within, "decoder refused a valid body: {whole:?}");
        }
        (_, Reference::No) => {}
    }
}

// ------------------------------------------------------------------------------------------
// PROXY protocol headers
// ------------------------------------------------------------------------------------------

/// Leading bytes of a `proxy` input: the mode (low 2 bits: off, v1, v2, auto), a split seed.
pub const PROXY_PREFIX: usize = 2;

/// How feeding one connection's first bytes to the PROXY parser ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// A header of `len` bytes, saying `header`.
    Done { len: usize, header: proxy::Header },
    /// All input was fed; the header is not complete yet.
    NeedMore,
    /// The parser refused the input.
    Failed(proxy::Error),
}

/// The `--proxy-protocol` mode a `proxy` input's first byte selects.
pub fn proxy_mode(flags: u8) -> proxy::Mode {
    [
        proxy::Mode::Off,
        proxy::Mode::V1,
        proxy::Mode::V2,
        proxy::Mode::Auto,
    ][usize::from(flags & 3)]
}

/// Feeds `data` in pieces, as `conn::Conn` does: parse the whole buffer after every read,
/// stop at the first answer that is not "read more". Checks bounded work on the way: while the
/// parser waits, the buffer never holds a whole header's worth of bytes.
pub fn feed_proxy(data: &[u8], pieces: &[usize], mode: proxy::Mode) -> ProxyOutcome {
    let mut buf = Vec::new();
    let mut at = 0;
    for &n in pieces {
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        let detected = proxy::detect(&buf, mode);
        match proxy::parse(&buf, mode) {
            Err(e) => {
                // Missing exactly when detect says no header can start here.
                assert_eq!(
                    e == proxy::Error::Missing,
                    detected == Status::Complete(None),
                    "parse {e:?} but detect {detected:?}"
                );
                return ProxyOutcome::Failed(e);
            }
            Ok(Status::Complete((len, header))) => {
                assert!(len <= buf.len() && len <= proxy::V2_MAX, "len {len}");
                check_proxy_header(&buf[..len], header, detected);
                return ProxyOutcome::Done { len, header };
            }
            Ok(Status::Partial) => {
                assert!(
                    buf.len() < proxy::V2_MAX,
                    "{} bytes held and still partial",
                    buf.len()
                );
                match detected {
                    Status::Complete(Some(proxy::Version::V1)) => {
                        assert!(buf.len() < proxy::V1_MAX, "v1 partial at {}", buf.len())
                    }
                    Status::Complete(Some(proxy::Version::V2)) => {}
                    Status::Partial => assert!(buf.len() < proxy::V2_SIGNATURE.len()),
                    Status::Complete(None) => panic!("partial, but detect says no header"),
                }
                // Asking again about the same bytes says the same.
                assert_eq!(proxy::parse(&buf, mode), Ok(Status::Partial));
            }
        }
    }
    ProxyOutcome::NeedMore
}

/// A complete header keeps the grammar it claims: the v1 line ends in CRLF and, for TCP4, is
/// exactly the line the addresses print as; the v2 header is as long as its length field says
/// and holds the addresses it returned, in the order §2.2 gives.
fn check_proxy_header(
    header_bytes: &[u8],
    header: proxy::Header,
    detected: Status<Option<proxy::Version>>,
) {
    use std::net::SocketAddr;
    match detected {
        Status::Complete(Some(proxy::Version::V1)) => {
            assert!(header_bytes.len() <= proxy::V1_MAX);
            assert!(header_bytes.starts_with(b"PROXY ") && header_bytes.ends_with(b"\r\n"));
            let line = &header_bytes[..header_bytes.len() - 2];
            assert!(
                line.iter().all(|&b| (b' '..=b'~').contains(&b)),
                "non-printable byte in an accepted line {line:?}"
            );
            match header {
                proxy::Header::Local => assert!(line.starts_with(b"PROXY UNKNOWN")),
                proxy::Header::Proxied {
                    source: SocketAddr::V4(s),
                    destination: SocketAddr::V4(d),
                } => {
                    let printed =
                        format!("PROXY TCP4 {} {} {} {}", s.ip(), d.ip(), s.port(), d.port());
                    assert_eq!(printed.as_bytes(), line);
                }
                proxy::Header::Proxied {
                    source: SocketAddr::V6(s),
                    destination: SocketAddr::V6(d),
                } => {
                    let text = std::str::from_utf8(line).expect("ASCII");
                    let fields: Vec<&str> = text.split(' ').collect();
                    assert_eq!(fields.len(), 6, "{text}");
                    assert_eq!(fields[1], "TCP6");
                    assert_eq!(fields[2].parse::<std::net::Ipv6Addr>().ok(), Some(*s.ip()));
                    assert_eq!(fields[3].parse::<std::net::Ipv6Addr>().ok(), Some(*d.ip()));
                    assert_eq!(fields[4], s.port().to_string());
                    assert_eq!(fields[5], d.port().to_string());
                }
                other => panic!("mixed families {other:?}"),
            }
        }
        Status::Complete(Some(proxy::Version::V2)) => {
            assert!(header_bytes.starts_with(&proxy::V2_SIGNATURE));
            let len = usize::from(u16::from_be_bytes([header_bytes[14], header_bytes[15]]));
            assert_eq!(header_bytes.len(), 16 + len);
            assert_eq!(header_bytes[12] >> 4, 2, "version");
            let block = &header_bytes[16..];
            match header {
                proxy::Header::Local => {}
                proxy::Header::Proxied {
                    source: SocketAddr::V4(s),
                    destination: SocketAddr::V4(d),
                } => {
                    assert_eq!(header_bytes[12..14], [0x21, 0x11]);
                    let mut expect = Vec::new();
                    expect.extend_from_slice(&s.ip().octets());
                    expect.extend_from_slice(&d.ip().octets());
                    expect.extend_from_slice(&s.port().to_be_bytes());
                    expect.extend_from_slice(&d.port().to_be_bytes());
                    assert_eq!(&block[..12], &expect[..]);
                }
                proxy::Header::Proxied {
                    source: SocketAddr::V6(s),
                    destination: SocketAddr::V6(d),
                } => {
                    assert_eq!(header_bytes[12..14], [0x21, 0x21]);
                    let mut expect = Vec::new();
                    expect.extend_from_slice(&s.ip().octets());
                    expect.extend_from_slice(&d.ip().octets());
                    expect.extend_from_slice(&s.port().to_be_bytes());
                    expect.extend_from_slice(&d.port().to_be_bytes());
                    assert_eq!(&block[..36], &expect[..]);
                }
                other => panic!("mixed families {other:?}"),
            }
        }
        other => panic!("a header parsed where detect says {other:?}"),
    }
}

/// The `proxy` fuzz check: `input` is [`PROXY_PREFIX`] control bytes, then the first bytes a
/// peer sends on a connection. Every split must give the same outcome; the rest of the input,
/// read as text, is also an `--proxy-allow-from` list, which must parse or be refused without
/// a panic and then match addresses consistently.
pub fn check_proxy_input(input: &[u8]) {
    let Some((prefix, data)) = input.split_first_chunk::<PROXY_PREFIX>() else {
        return;
    };
    let mode = proxy_mode(prefix[0]);
    let ways = splits(u64::from(prefix[1]), data.len());
    let whole = feed_proxy(data, &ways[0], mode);
    for pieces in &ways[1..] {
        let split = feed_proxy(data, pieces, mode);
        assert_eq!(
            whole,
            split,
            "whole input and pieces {:?} disagree",
            &pieces[..pieces.len().min(32)]
        );
    }
    if mode == proxy::Mode::Off {
        assert_eq!(whole, ProxyOutcome::Failed(proxy::Error::Missing));
    }

    let text = String::from_utf8_lossy(data);
    if let Ok(list) = proxy::AllowList::parse(&text) {
        // What it prints parses back to the same list.
        let again = proxy::AllowList::parse(&list.to_string());
        assert_eq!(again.as_ref(), Ok(&list), "{list}");
        if let proxy::AllowList::Only(nets) = &list {
            for &(net, _) in nets {
                // Every network holds its own address, and an IPv4 one its IPv6-mapped form.
                assert!(list.allows(net), "{list} refuses {net}");
                if let std::net::IpAddr::V4(v4) = net {
                    assert!(list.allows(v4.to_ipv6_mapped().into()));
                }
            }
        }
    }
}
