//! The request-head parser (RFC 9112 §2–§6), incremental and zero-copy.
//!
//! Bytes arrive in whatever pieces the network delivers. Parsing runs in two phases:
//!
//! 1. [`HeadScanner::scan`] looks for the blank line that ends the head, resuming where it
//!    stopped last time, so a head that trickles in one byte per read costs linear time overall.
//!    While scanning it enforces the limits line by line — a 1 MiB request line is refused with
//!    414 after `--limit-request-line` bytes, not after a megabyte is buffered — and rejects a bare
//!    LF at once.
//! 2. [`parse_head`] then parses the complete head once, recording every part as a [`Span`] (an
//!    offset pair) into the connection's buffer: nothing is copied.
//!
//! Results are three-way, as in httparse: `Ok(Status::Complete(_))`, `Ok(Status::Partial)`
//! meaning "read more", or `Err(Error)` carrying the status to answer with.

use super::error::Error;

/// The outcome of feeding bytes to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// Done: the value (for the scanner, the head's length including its blank line).
    Complete(T),
    /// More bytes are needed.
    Partial,
}

/// The configured size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line, without CRLF (`--limit-request-line`).
    pub request_line: usize,
    /// Most header fields (`--limit-request-fields`).
    pub fields: usize,
    /// Longest header line, without CRLF (`--limit-request-field_size`).
    pub field_size: usize,
    /// Largest body; 0 = unlimited (`--limit-request-body`).
    pub body: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
            body: 0,
        }
    }
}

/// A byte range of the connection buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span of the head being parsed. [`parse_head`] refuses heads longer than `u32::MAX`
    /// bytes before making any span, so both offsets fit; a larger value would be a bug, and
    /// saturates (an empty or short span) rather than wrapping to point elsewhere.
    fn new(start: usize, end: usize) -> Span {
        let fit = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span {
            start: fit(start),
            end: fit(end),
        }
    }

    /// The bytes this span covers.
    #[inline]
    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// True when the span covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One header field: name and value (without surrounding whitespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// The field name, as sent (case preserved).
    pub name: Span,
    /// The field value, leading and trailing whitespace removed.
    pub value: Span,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head. Reused across requests on a connection so its header vector keeps
/// its allocation.
#[derive(Debug, Clone)]
pub struct Head {
    /// The request method.
    pub method: Span,
    /// The request target exactly as sent (`RAW_URI`).
    pub target: Span,
    /// The path part of the target (absolute-form: without scheme and authority).
    pub path: Span,
    /// The query, without `?`; empty when absent.
    pub query: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The header fields in order.
    pub headers: Vec<Header>,
    /// The host the request is for: the authority of an absolute-form target, else `Host`.
    pub host: Option<Span>,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
    /// Bytes of the head, including leading blank lines and the final CRLF.
    pub len: usize,
    /// Where the request line starts (after ignored leading CRLFs).
    pub line_start: usize,
    /// Where the request line ends (before its CRLF).
    pub line_end: usize,
}

impl Default for Head {
    fn default() -> Head {
        Head {
            method: Span::default(),
            target: Span::default(),
            path: Span::default(),
            query: Span::default(),
            minor: 1,
            headers: Vec::with_capacity(16),
            host: None,
            framing: Framing::None,
            keep_alive: true,
            expect_continue: false,
            len: 0,
            line_start: 0,
            line_end: 0,
        }
    }
}

impl Head {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.of(buf))
    }

    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn protocol(&self) -> &'static str {
        if self.minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    /// True for `HEAD` requests (no body in the response).
    pub fn is_head(&self, buf: &[u8]) -> bool {
        self.method.of(buf) == b"HEAD"
    }
}

/// Finds the end of a request head across calls, enforcing the limits on the way.
///
/// INVARIANT: `pos` only grows while the buffer it scans only grows; call [`reset`] when the
/// buffer's first request is consumed.
///
/// [`reset`]: HeadScanner::reset
#[derive(Debug, Clone, Default)]
pub struct HeadScanner {
    /// Where to resume.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// Lines ended so far after the request line started (0 = still in the request line).
    lines: usize,
    /// True once a non-empty line was seen (leading empty lines are skipped, RFC 9112 §2.2).
    started: bool,
}

/// A table of the `tchar` bytes of RFC 9110 §5.6.2: the characters of methods, header names
/// and transfer codings.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        c += 1;
    }
    t
};

/// True when `b` is a `tchar`.
#[inline]
pub fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// Field-value bytes (RFC 9110 §5.5): visible ASCII, space, tab, and obs-text (0x80–0xFF).
#[inline]
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Request-target bytes: anything visible (RFC 3986 characters, plus obs-text that some clients
/// send raw), never whitespace or control bytes.
#[inline]
fn is_target_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'#' || b >= 0x80
}

/// Finds the next `\n` in `buf` from `from`.
#[inline]
fn find_lf(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| from + i)
}

impl HeadScanner {
    /// Starts over for the next request.
    pub fn reset(&mut self) {
        *self = HeadScanner::default();
    }

    /// Scans `buf` for the end of the head. Returns the head's length (up to and including the
    /// final CRLF) when complete.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Status<usize>, Error> {
        while let Some(lf) = find_lf(buf, self.pos) {
            let has_cr = lf > self.line_start && buf[lf - 1] == b'\r';
            let line_len = lf - self.line_start - usize::from(has_cr);
            // Limits first: the same over-long line then gets the same answer however its
            // bytes arrive (one at a time, the limit is passed before the LF is seen).
            let limit = if self.started {
                limits.field_size
            } else {
                limits.request_line
            };
            if line_len > limit {
                return Err(if self.started {
                    Error::HeaderTooLarge
                } else {
                    Error::UriTooLong
                });
            }
            if !has_cr {
                return Err(Error::BadRequest("bare LF in request head"));
            }
            // A line ending in CR CR LF holds a bare CR (RFC 9112 §2.2), which would otherwise
            // pass for a one-byte header line.
            if line_len > 0 && buf[lf - 2] == b'\r' {
                return Err(Error::BadRequest("bare CR in request head"));
            }
            self.pos = lf + 1;
            if !self.started {
                if line_len == 0 {
                    // RFC 9112 §2.2: ignore empty lines before the request line; a few only.
                    if lf > 8 {
                        return Err(Error::BadRequest("too many empty lines"));
                    }
                    self.line_start = self.pos;
                    continue;
                }
                self.started = true;
            } else if line_len == 0 {
                return Ok(Status::Complete(self.pos));
            } else {
                self.lines += 1;
                if self.lines > limits.fields {
                    return Err(Error::TooManyHeaders);
                }
            }
            self.line_start = self.pos;
        }
        // No complete line yet: the unfinished one must still fit its limit.
        let pending = buf.len() - self.line_start;
        if !self.started {
            // +1 leaves room for the CR that may be the last byte received.
            if pending > limits.request_line + 1 {
                return Err(Error::UriTooLong);
            }
        } else if pending > limits.field_size + 1 {
            return Err(Error::HeaderTooLarge);
        }
        self.pos = buf.len();
        Ok(Status::Partial)
    }
}

/// Parses a complete head of `len` bytes (as found by [`HeadScanner::scan`]) into `head`.
pub fn parse_head(buf: &[u8], len: usize, head: &mut Head) -> Result<(), Error> {
    // Spans are u32 offsets. The limits keep real heads far below this; the check keeps a
    // configuration that allows more from producing spans that point at the wrong bytes.
    if len > u32::MAX as usize {
        return Err(Error::HeaderTooLarge);
    }
    head.headers.clear();
    head.len = len;
    head.host = None;
    let buf_head = &buf[..len];
    // Skip the empty lines the scanner allowed.
    let mut pos = 0;
    while buf_head[pos..].starts_with(b"\r\n") {
        pos += 2;
    }
    head.line_start = pos;
    let line_end = find_lf(buf_head, pos).map(|i| i - 1).unwrap_or(len);
    head.line_end = line_end;
    parse_request_line(buf, pos, line_end, head)?;
    pos = line_end + 2;

    // Header fields: name ":" OWS value OWS CRLF (RFC 9112 §5).
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut chunked_count = 0;
    let mut other_coding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect: Option<Span> = None;
    let mut host_count = 0;
    while pos < len - 2 {
        let end = find_lf(buf_head, pos).map(|i| i - 1).unwrap_or(len - 2);
        let line = &buf[pos..end];
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Error::BadRequest("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| !is_token(b))
            .ok_or(Error::BadRequest("header line without colon"))?;
        if colon == 0 {
            return Err(Error::BadRequest("empty header name"));
        }
        if line[colon] != b':' {
            return Err(if line[colon] == b' ' || line[colon] == b'\t' {
                Error::BadRequest("whitespace before colon in header")
            } else {
                Error::BadRequest("invalid character in header name")
            });
        }
        let mut vstart = colon + 1;
        let mut vend = line.len();
        while vstart < vend && matches!(line[vstart], b' ' | b'\t') {
            vstart += 1;
        }
        while vend > vstart && matches!(line[vend - 1], b' ' | b'\t') {
            vend -= 1;
        }
        if !line[vstart..vend].iter().all(|&b| is_field_byte(b)) {
            return Err(Error::BadRequest("invalid character in header value"));
        }
        let name = &line[..colon];
        let value = &line[vstart..vend];
        let header = Header {
            name: Span::new(pos, pos + colon),
            value: Span::new(pos + vstart, pos + vend),
        };
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                host_count += 1;
                if !is_valid_host(value) {
                    return Err(Error::BadRequest("invalid Host header"));
                }
                if head.host.is_none() {
                    head.host = Some(header.value);
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => expect = Some(header.value),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        connection_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        connection_keep_alive = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // RFC 9112 §6.3 item 5: a list of identical values may be taken as one; any
                // disagreement, or anything but digits, is unrecoverable framing.
                for part in value.split(|&b| b == b',') {
                    let n = parse_content_length(trim(part))?;
                    if content_length.is_some_and(|old| old != n) {
                        return Err(Error::BadRequest("conflicting Content-Length values"));
                    }
                    content_length = Some(n);
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                transfer_encoding = true;
                for coding in value.split(|&b| b == b',') {
                    let coding = trim(coding);
                    // RFC 9110 §5.6.1.2: empty list elements are ignored.
                    if coding.is_empty() {
                        continue;
                    }
                    if !coding.iter().all(|&b| is_token(b)) {
                        return Err(Error::BadRequest("invalid Transfer-Encoding"));
                    }
                    if chunked_last {
                        // RFC 9112 §6.3 item 4: chunked must be the final coding.
                        return Err(Error::BadRequest("chunked is not the final coding"));
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        chunked_count += 1;
                        chunked_last = true;
                    } else {
                        other_coding = true;
                    }
                }
            }
            _ => {}
        }
        head.headers.push(header);
        pos = end + 2;
    }

    // Framing, RFC 9112 §6.1 and §6.3.
    head.framing = if transfer_encoding {
        if content_length.is_some() {
            return Err(Error::BadRequest(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if head.minor == 0 {
            return Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !chunked_last {
            return Err(Error::BadRequest("chunked is not the final coding"));
        }
        if chunked_count > 1 {
            return Err(Error::BadRequest("chunked applied twice"));
        }
        if other_coding {
            return Err(Error::NotImplemented("transfer coding other than chunked"));
        }
        Framing::Chunked
    } else {
        match content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };

    // Host, RFC 9112 §3.2: exactly one in HTTP/1.1; the absolute-form authority wins.
    if host_count > 1 {
        return Err(Error::BadRequest("more than one Host header"));
    }
    if host_count == 0 && head.minor == 1 {
        return Err(Error::BadRequest("missing Host header"));
    }
    if let Some(authority) = absolute_authority(buf, head) {
        head.host = Some(authority);
    }

    // Persistence, RFC 9112 §9.3.
    head.keep_alive = if head.minor == 1 {
        !connection_close
    } else {
        connection_keep_alive && !connection_close
    };

    // Expect, RFC 9110 §10.1.1 (ignored on HTTP/1.0).
    head.expect_continue = false;
    if let Some(expect) = expect {
        if head.minor == 1 {
            if expect.of(buf).eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            } else {
                return Err(Error::ExpectationFailed);
            }
        }
    }
    Ok(())
}

/// `request-line = method SP request-target SP HTTP-version` (RFC 9112 §3).
fn parse_request_line(buf: &[u8], start: usize, end: usize, head: &mut Head) -> Result<(), Error> {
    let line = &buf[start..end];
    let method_len = line
        .iter()
        .position(|&b| !is_token(b))
        .unwrap_or(line.len());
    if method_len == 0 || line.get(method_len) != Some(&b' ') {
        return Err(Error::BadRequest("invalid request line"));
    }
    head.method = Span::new(start, start + method_len);
    let t0 = method_len + 1;
    let t_len = line[t0..]
        .iter()
        .position(|&b| !is_target_byte(b))
        .unwrap_or(line.len() - t0);
    let t1 = t0 + t_len;
    if t_len == 0 || line.get(t1) != Some(&b' ') {
        return Err(Error::BadRequest("invalid request target"));
    }
    head.target = Span::new(start + t0, start + t1);
    let version = &line[t1 + 1..];
    head.minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major == b'1' {
                // RFC 9110 §2.5: a higher minor version is answered as the highest we speak.
                1
            } else {
                return Err(Error::VersionNotSupported);
            }
        }
        _ => return Err(Error::BadRequest("invalid HTTP version")),
    };
    split_target(buf, head)
}

/// Splits the target into path and query, handling the four forms of RFC 9112 §3.2.
fn split_target(buf: &[u8], head: &mut Head) -> Result<(), Error> {
    let t = head.target;
    let target = t.of(buf);
    let path_start = if target[0] == b'/' {
        t.start as usize
    } else if target == b"*" {
        if head.method.of(buf) != b"OPTIONS" {
            return Err(Error::BadRequest("asterisk-form target without OPTIONS"));
        }
        head.path = t;
        head.query = Span::new(t.end as usize, t.end as usize);
        return Ok(());
    } else if let Some(after_scheme) = scheme_len(target) {
        // absolute-form: scheme "://" authority path-abempty [ "?" query ]
        let auth_end = target[after_scheme..]
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .map_or(target.len(), |i| after_scheme + i);
        if auth_end == after_scheme {
            return Err(Error::BadRequest("absolute-form target without host"));
        }
        // The authority replaces Host (RFC 9112 §3.2.2), so it must be a valid Host value; and
        // userinfo in an http(s) URI is an error (RFC 9110 §4.2.4).
        let authority = &target[after_scheme..auth_end];
        if authority.contains(&b'@') {
            return Err(Error::BadRequest("userinfo in the request target"));
        }
        // An http(s) URI must have a non-empty host (RFC 9110 §4.2.1).
        let empty_host = authority.is_empty() || authority[0] == b':';
        if empty_host || !is_valid_host(authority) {
            return Err(Error::BadRequest("invalid host in the request target"));
        }
        t.start as usize + auth_end
    } else {
        return Err(Error::BadRequest("invalid request target"));
    };
    let end = t.end as usize;
    match buf[path_start..end].iter().position(|&b| b == b'?') {
        Some(q) => {
            head.path = Span::new(path_start, path_start + q);
            head.query = Span::new(path_start + q + 1, end);
        }
        None => {
            head.path = Span::new(path_start, end);
            head.query = Span::new(end, end);
        }
    }
    Ok(())
}

/// For `http://` or `https://` targets, the length up to the authority.
fn scheme_len(target: &[u8]) -> Option<usize> {
    for scheme in [&b"http://"[..], b"https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(scheme.len());
        }
    }
    None
}

/// The authority of an absolute-form target.
fn absolute_authority(buf: &[u8], head: &Head) -> Option<Span> {
    let target = head.target.of(buf);
    let skip = scheme_len(target)?;
    let start = head.target.start as usize + skip;
    let end = head.path.start as usize;
    (end > start).then(|| Span::new(start, end))
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2): a reg-name or IPv4 address, or an IPv6
/// literal in brackets, then an optional port of digits only (RFC 3986 §3.2.2–3). Empty is
/// allowed (RFC 9112 §3.2, for targets without an authority).
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&b""[..], None),
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    host.iter()
        .all(|&b| is_host_byte(b) && !matches!(b, b':' | b'[' | b']'))
        && port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// `Host` value bytes: reg-name, IP literals and a port (RFC 3986 §3.2.2), no whitespace,
/// no `/`, `?`, `#` or `@`.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// `Content-Length = 1*DIGIT`, bounded so it cannot overflow.
fn parse_content_length(v: &[u8]) -> Result<u64, Error> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadRequest("invalid Content-Length"));
    }
    Ok(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
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

/// Decodes `%XX` escapes (RFC 3986 §2.1) into `out`; a `%` not followed by two hex digits is
/// kept as it is, as gunicorn and the stdlib's `unquote` do.
pub fn percent_decode(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` whole, byte by byte, and in pieces of every size from 2 to 7: every split
    /// must give the same answer, which is what catches `Partial` bugs.
    fn parse_all_ways(input: &[u8]) -> Result<Head, Error> {
        let limits = Limits::default();
        let whole = parse_split(input, input.len().max(1), &limits);
        for piece in 1..8 {
            let split = parse_split(input, piece, &limits);
            match (&whole, &split) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.len, b.len, "split {piece}");
                    assert_eq!(a.headers, b.headers, "split {piece}");
                    assert_eq!(a.framing, b.framing, "split {piece}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "split {piece}"),
                _ => panic!("split {piece} differs: {whole:?} vs {split:?}"),
            }
        }
        whole
    }

    fn parse_split(input: &[u8], piece: usize, limits: &Limits) -> Result<Head, Error> {
        let mut scanner = HeadScanner::default();
        let mut buf = Vec::new();
        for chunk in input.chunks(piece) {
            buf.extend_from_slice(chunk);
            if let Status::Complete(len) = scanner.scan(&buf, limits)? {
                let mut head = Head::default();
                parse_head(&buf, len, &mut head)?;
                return Ok(head);
            }
        }
        Err(Error::Timeout)
    }

    macro_rules! ok {
        ($name:ident, $input:expr, |$h:ident, $b:ident| $check:block) => {
            #[test]
            fn $name() {
                let input: &[u8] = $input;
                let $h = parse_all_ways(input).expect("valid request");
                let $b = input;
                $check
            }
        };
    }

    macro_rules! bad {
        ($name:ident, $input:expr, $err:pat) => {
            #[test]
            fn $name() {
                let got = parse_all_ways($input);
                assert!(matches!(got, Err($err)), "got {got:?}");
            }
        };
    }

    ok!(
        parses_a_simple_get,
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
        |h, b| {
            assert_eq!(h.method.of(b), b"GET");
            assert_eq!(h.path.of(b), b"/a/b");
            assert_eq!(h.query.of(b), b"x=1");
            assert_eq!(h.minor, 1);
            assert!(h.keep_alive);
            assert_eq!(h.framing, Framing::None);
        }
    );
    ok!(
        skips_leading_empty_lines,
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        |h, b| {
            assert_eq!(h.method.of(b), b"GET");
        }
    );
    ok!(
        trims_header_whitespace,
        b"GET / HTTP/1.1\r\nHost:  h \t\r\nX-A:\r\n\r\n",
        |h, b| {
            assert_eq!(h.header(b, "host"), Some(&b"h"[..]));
            assert_eq!(h.header(b, "x-a"), Some(&b""[..]));
        }
    );
    ok!(
        http10_closes_by_default,
        b"GET / HTTP/1.0\r\n\r\n",
        |h, _b| {
            assert!(!h.keep_alive);
        }
    );
    ok!(
        http10_keep_alive_on_request,
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        |h, _b| {
            assert!(h.keep_alive);
        }
    );
    ok!(
        connection_close_ends_http11,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n",
        |h, _b| {
            assert!(!h.keep_alive);
        }
    );
    ok!(
        reads_content_length,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        |h, _b| {
            assert_eq!(h.framing, Framing::Length(5));
        }
    );
    ok!(
        identical_content_lengths_agree,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        |h, _b| {
            assert_eq!(h.framing, Framing::Length(5));
        }
    );
    ok!(
        reads_chunked,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
        |h, _b| {
            assert_eq!(h.framing, Framing::Chunked);
        }
    );
    ok!(
        absolute_form_sets_host,
        b"GET http://example.com:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
        |h, b| {
            assert_eq!(h.path.of(b), b"/p");
            assert_eq!(h.query.of(b), b"q");
            assert_eq!(h.host.map(|s| s.of(b)), Some(&b"example.com:81"[..]));
        }
    );
    ok!(
        absolute_form_without_path,
        b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
        |h, b| {
            assert_eq!(h.path.of(b), b"");
        }
    );
    ok!(
        asterisk_form_for_options,
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        |h, b| {
            assert_eq!(h.path.of(b), b"*");
        }
    );
    ok!(
        higher_minor_version_is_11,
        b"GET / HTTP/1.7\r\nHost: h\r\n\r\n",
        |h, _b| {
            assert_eq!(h.minor, 1);
        }
    );
    ok!(
        expect_continue_is_seen,
        b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        |h, _b| {
            assert!(h.expect_continue);
        }
    );
    ok!(
        obs_text_in_value_is_kept,
        b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9\r\n\r\n",
        |h, b| {
            assert_eq!(h.header(b, "x"), Some(&b"caf\xe9"[..]));
        }
    );

    bad!(
        rejects_bare_lf,
        b"GET / HTTP/1.1\nHost: h\n\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_bare_lf_in_header,
        b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_obs_fold,
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_space_before_colon,
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_nul_in_value,
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_lone_cr_in_value,
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_nbsp_in_name,
        b"GET / HTTP/1.1\r\nHost: h\r\nX\xa0Y: a\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_content_length_with_transfer_encoding,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_conflicting_content_length,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_signed_content_length,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_huge_content_length,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_chunked_not_last,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(rejects_chunked_twice, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Error::BadRequest(_));
    bad!(
        rejects_unknown_coding_with_501,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Error::NotImplemented(_)
    );
    bad!(
        rejects_transfer_encoding_on_http10,
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_http2_version,
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        Error::VersionNotSupported
    );
    bad!(
        rejects_garbage_version,
        b"GET / HTTX/1.1\r\nHost: h\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_missing_host_on_11,
        b"GET / HTTP/1.1\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_two_hosts,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_bad_host,
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_two_spaces,
        b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_fragment,
        b"GET /#x HTTP/1.1\r\nHost: h\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_unknown_expectation,
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n",
        Error::ExpectationFailed
    );
    bad!(
        rejects_cr_cr_lf_blank_line,
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_non_numeric_host_port,
        b"GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_userinfo_in_target,
        b"GET http://u@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        Error::BadRequest(_)
    );
    bad!(
        rejects_bad_authority,
        b"GET http://ex<a>mple.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        Error::BadRequest(_)
    );
    ok!(
        ignores_empty_coding_list_elements,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked\r\n\r\n",
        |h, _b| {
            assert_eq!(h.framing, Framing::Chunked);
        }
    );
    ok!(
        accepts_ipv6_host_with_port,
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        |h, b| {
            assert_eq!(h.host.map(|s| s.of(b)), Some(&b"[::1]:8080"[..]));
        }
    );
    bad!(
        rejects_relative_target,
        b"GET foo HTTP/1.1\r\nHost: h\r\n\r\n",
        Error::BadRequest(_)
    );

    #[test]
    fn limits_apply_at_the_edge() {
        let limits = Limits {
            request_line: 20,
            fields: 2,
            field_size: 10,
            body: 0,
        };
        let run = |input: &[u8]| parse_split(input, 1, &limits).map(|_| ());
        // "GET /xxxxxxxxxxxxxxx HTTP/1.1" sized to exactly 20 and 21 bytes.
        assert!(run(b"GET /234567 HTTP/1.1\r\nHost: h\r\n\r\n").is_ok());
        assert_eq!(
            run(b"GET /2345678 HTTP/1.1\r\nHost: h\r\n\r\n"),
            Err(Error::UriTooLong)
        );
        assert!(run(b"GET / HTTP/1.1\r\nHost: 4567\r\n\r\n").is_ok());
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: 45678\r\n\r\n"),
            Err(Error::HeaderTooLarge)
        );
        assert!(run(b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n").is_ok());
        assert_eq!(
            run(b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\nC: d\r\n\r\n"),
            Err(Error::TooManyHeaders)
        );
        // A request line that never ends is refused once it passes the limit.
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(&[b'a'; 100], &limits), Err(Error::UriTooLong));
    }

    #[test]
    fn decodes_percent_escapes() {
        let mut out = Vec::new();
        percent_decode(b"/a%20b%2Fc%zz%4", &mut out);
        assert_eq!(out, b"/a b/c%zz%4");
    }

    // Findings of the fuzzer (fuzz/) and the request corpus (tests/corpus.rs), kept here as
    // regression cases; fuzz/README.md lists them as F1-F8.

    #[test]
    fn over_long_line_with_bare_lf_gets_one_answer_however_it_arrives() {
        // Found by fuzz/ parse_head: whole, the LF is seen first (400); one byte at a time,
        // the unfinished line passes the limit first (414). Both refuse, but the status
        // must not depend on how TCP cut the bytes.
        let limits = Limits {
            request_line: 30,
            fields: 3,
            field_size: 20,
            body: 0,
        };
        let input = b"GET / HTTTransfer-EncodingP/1.1\r?\nHost: h\r\n\r\n";
        let whole = parse_split(input, input.len(), &limits).map(|_| ());
        let bytewise = parse_split(input, 1, &limits).map(|_| ());
        assert_eq!(whole, bytewise);
        let header = b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaa\nHost: h\r\n\r\n";
        let whole = parse_split(header, header.len(), &limits).map(|_| ());
        let bytewise = parse_split(header, 1, &limits).map(|_| ());
        assert_eq!(whole, bytewise);
    }

    #[test]
    fn cr_cr_lf_blank_line_is_refused_when_it_arrives() {
        // tests/requests/invalid/068: the line "\r" is no header field and no blank line, so
        // the head is already broken; waiting for more gets the client a 408 after --timeout.
        let mut scanner = HeadScanner::default();
        let got = scanner.scan(b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", &Limits::default());
        assert!(matches!(got, Err(Error::BadRequest(_))), "got {got:?}");
    }

    #[test]
    fn empty_transfer_coding_list_elements_are_ignored() {
        // RFC 9110 §5.6.1.2: a recipient MUST parse and ignore a reasonable number of empty
        // list elements (tests/requests/valid/078).
        let h =
            parse_all_ways(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked\r\n\r\n")
                .expect("valid request");
        assert_eq!(h.framing, Framing::Chunked);
    }

    #[test]
    fn rejects_userinfo_in_absolute_form() {
        // RFC 9110 §4.2.4 (tests/requests/invalid/117).
        let got = parse_all_ways(b"GET http://user:pw@other.test/ HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(got, Err(Error::BadRequest(_))), "got {got:?}");
    }

    #[test]
    fn rejects_absolute_form_authority_with_invalid_characters() {
        // RFC 9112 §3.2.2 and §3.2 (tests/requests/invalid/118).
        let got = parse_all_ways(b"GET http://exa<mple\"/ HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(got, Err(Error::BadRequest(_))), "got {got:?}");
    }

    #[test]
    fn rejects_host_with_a_non_numeric_port() {
        // RFC 9112 §3.2, RFC 3986 port = *DIGIT (tests/requests/invalid/128).
        let got = parse_all_ways(b"GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n");
        assert!(matches!(got, Err(Error::BadRequest(_))), "got {got:?}");
    }

    #[test]
    fn rejects_absolute_form_with_an_empty_host() {
        // RFC 9110 §4.2.1: a recipient MUST reject an http URI with an empty host
        // (tests/requests/invalid/144).
        let got = parse_all_ways(b"GET http://:80/ HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(got, Err(Error::BadRequest(_))), "got {got:?}");
    }
}
