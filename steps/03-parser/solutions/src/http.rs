//! The request parser of step 03 with the answers to chapter 3's exercises: it resumes the
//! search for the empty line where it stopped (exercise 1), decodes chunked bodies (exercise
//! 2), skips empty lines before a request line (exercise 3) and answers 414 to a request
//! line longer than [`MAX_REQUEST_LINE`] (exercise 4).
//!
//! The step's own text follows.
//!
//! The request parser of step 03: bytes in, a [`Request`] (or "read more", or an error) out.
//!
//! It lives in its own file because it never touches a socket. `main.rs` reads, this file
//! judges what has been read, in the shape httparse gives its results. Chapter 3 explains it.
//! It copies strings out of the buffer where httparse borrows them, and it refuses chunked
//! bodies (501), which minigun's `http/body.rs` decodes.

use std::io;

// ANCHOR: limits
/// The most bytes of request head (request line plus headers) we buffer; more gets 431.
/// Without a limit one client could make us buffer until memory runs out.
pub const MAX_HEAD: usize = 8192;
/// The most header lines in one request; more gets 431 (gunicorn's `limit_request_fields`).
pub const MAX_HEADERS: usize = 100;
/// The largest body we read; a bigger `Content-Length` gets 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// Exercise 4: the longest request line, gunicorn's `--limit-request-line` default; more
/// gets 414.
pub const MAX_REQUEST_LINE: usize = 4094;
/// Exercise 2: the most hex digits in a chunk size. Eight digits already mean 4 GiB, far
/// above [`MAX_BODY`]; without a cap, a long run of digits would overflow the size.
pub const MAX_CHUNK_SIZE_DIGITS: usize = 8;
// ANCHOR_END: limits

// ANCHOR: status
/// What a parser can say about the bytes read so far, the way httparse says it.
/// "Not enough bytes yet" is an ordinary answer, not an error: read more and ask again.
pub enum Status<T> {
    /// A whole head was found; here it is.
    Complete(T),
    /// Fine so far, but the head has not ended yet.
    Partial,
}
// ANCHOR_END: status

// ANCHOR: http-error
/// Why a request could not be served. Each error the client can still hear has its own
/// status code, so the client learns what went wrong.
pub enum HttpError {
    /// The client hung up before finishing a request: there is nobody left to answer.
    Closed,
    /// The socket failed; there is nobody to answer either.
    Io(io::Error),
    /// The request did not arrive whole before `--timeout` ran out.
    Timeout,
    /// The bytes break the HTTP grammar; the text says which rule.
    BadRequest(&'static str),
    /// The head passed [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines.
    HeadTooLarge,
    /// `Content-Length` is above [`MAX_BODY`].
    BodyTooLarge,
    /// Valid HTTP that this step does not implement.
    NotImplemented(&'static str),
    /// A version other than HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
    /// Exercise 4: the request line is longer than [`MAX_REQUEST_LINE`].
    UriTooLong,
}

impl HttpError {
    /// The status line and a one-line reason for the reply.
    pub fn reply(&self) -> (&'static str, &'static str) {
        match self {
            // Listed for completeness: nobody hears a reply to these two.
            HttpError::Closed | HttpError::Io(_) => ("500 Internal Server Error", "no reply"),
            HttpError::Timeout => ("408 Request Timeout", "the request did not arrive in time"),
            HttpError::BadRequest(why) => ("400 Bad Request", why),
            HttpError::HeadTooLarge => ("431 Request Header Fields Too Large", "head too large"),
            HttpError::BodyTooLarge => ("413 Content Too Large", "body too large"),
            HttpError::NotImplemented(what) => ("501 Not Implemented", what),
            HttpError::VersionNotSupported => ("505 HTTP Version Not Supported", "not HTTP/1.x"),
            HttpError::UriTooLong => ("414 URI Too Long", "request line too long"),
        }
    }
}

/// Lets `?` turn socket errors into [`HttpError::Io`].
impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}
// ANCHOR_END: http-error

// ANCHOR: request
/// One parsed request. Its strings are copied out of the read buffer, so the buffer can take
/// the next bytes; httparse borrows them instead, which saves the copies.
pub struct Request {
    /// `GET`, `POST`, ...: a case-sensitive token.
    pub method: String,
    /// What was asked for, as sent: `/search?q=rust`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names in lowercase (they are case-insensitive), values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Exactly `Content-Length` bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header called `name` (give it in lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, value)| value.as_str())
    }
}
// ANCHOR_END: request

// ANCHOR: parse-head
/// Parses the request head at the start of `buf`, if it is all there.
///
/// `scanned` is how far earlier calls got (0 at first): the search for the empty line goes
/// on from there instead of starting over, so a head that arrives byte by byte costs linear
/// work, not quadratic (exercise 1). The caller keeps it between calls and resets it to 0
/// when it removes a request from the buffer.
pub fn parse_head(buf: &[u8], scanned: &mut usize) -> Result<Status<(Request, usize)>, HttpError> {
    // Exercise 3, RFC 9112 §2.2: empty lines before the request line are skipped. A lone CR
    // at the end may be the start of one, so it waits for more.
    let skip = leading_empty_lines(buf);
    if buf[skip..] == *b"\r" {
        return Ok(Status::Partial);
    }
    let (start, buf) = (skip, &buf[skip..]);
    let from = scanned.saturating_sub(start);
    // Fail fast on bytes that can never start a request (a TLS handshake, say) instead of
    // waiting for an empty line that will never come: all before the first space is a method.
    // Only the bytes not checked by an earlier call are looked at.
    let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    if !buf[from.min(method_end)..method_end]
        .iter()
        .all(|&b| is_tchar(b))
    {
        return Err(HttpError::BadRequest("the method is not a token"));
    }
    // Exercise 4: a request line past the limit gets 414, whether or not it has ended yet.
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line_end > MAX_REQUEST_LINE + 1 {
        return Err(HttpError::UriTooLong);
    }
    let limit = buf.len().min(MAX_HEAD);
    let Some(head_len) = find_head_end(&buf[..limit], from)? else {
        *scanned = start + limit;
        return match buf.len() >= MAX_HEAD {
            true => Err(HttpError::HeadTooLarge),
            false => Ok(Status::Partial),
        };
    };
    // Every line ends in CRLF (find_head_end checked), so split on LF and drop the CR.
    // `head_len - 4` leaves out the final CRLF CRLF; find_head_end never returns less than 4.
    let mut lines = buf[..head_len - 4]
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let (method, target, minor_version) = parse_request_line(lines.next().unwrap_or_default())?;
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        headers.push(parse_header_line(line)?);
    }
    let body = Vec::new();
    let request = Request {
        method,
        target,
        minor_version,
        headers,
        body,
    };
    // RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without Host.
    if minor_version == 1 && request.header("host").is_none() {
        return Err(HttpError::BadRequest("HTTP/1.1 needs a Host header"));
    }
    Ok(Status::Complete((request, start + head_len)))
}

/// Exercise 3: how many bytes of CRLF pairs start `buf`.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let pairs = buf.chunks(2).take_while(|pair| *pair == b"\r\n").count();
    pairs * 2
}
// ANCHOR_END: parse-head

// ANCHOR: find-head-end
/// Finds the empty line that ends the head; returns the head's length including that line.
///
/// RFC 9112 §2.2 ends every line with CRLF. A bare LF is refused rather than guessed at:
/// servers that guess differently from a proxy in front of them open the door to smuggling.
///
/// The search starts at `from`, where an earlier call stopped (exercise 1); the checks look
/// back at most 3 bytes, which are still in `buf`.
fn find_head_end(buf: &[u8], from: usize) -> Result<Option<usize>, HttpError> {
    for (i, &byte) in buf.iter().enumerate().skip(from) {
        if byte != b'\n' {
            continue;
        }
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(HttpError::BadRequest("a line ends in a bare LF"));
        }
        if i >= 3 && buf[i - 3..i - 1] == *b"\r\n" {
            return Ok(Some(i + 1)); // ...\r\n\r\n ends at i
        }
    }
    Ok(None)
}
// ANCHOR_END: find-head-end

// ANCHOR: parse-request-line
/// RFC 9112 §3: `request-line = method SP request-target SP HTTP-version`.
fn parse_request_line(line: &[u8]) -> Result<(String, String, u8), HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequest("not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequest("the method is not a token"));
    }
    // The target is visible ASCII (RFC 3986 characters); spaces and controls never belong.
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(HttpError::BadRequest("the target is not visible ASCII"));
    }
    let minor_version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        v if v.starts_with(b"HTTP/") => return Err(HttpError::VersionNotSupported),
        _ => return Err(HttpError::BadRequest("the version is not HTTP/x.y")),
    };
    Ok((latin1(method), latin1(target), minor_version))
}
// ANCHOR_END: parse-request-line

// ANCHOR: parse-header-line
/// RFC 9112 §5: `field-line = field-name ":" OWS field-value OWS`.
/// Returns the name in lowercase and the value without the optional whitespace (OWS).
fn parse_header_line(line: &[u8]) -> Result<(String, String), HttpError> {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(HttpError::BadRequest("a header line has no colon"));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // No space may come before the colon (§5.1). That also refuses obs-fold continuation
    // lines, which start with a space.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequest("a header name is not a token"));
    }
    // Values may hold tabs and bytes >= 0x80, but no other control characters (a lone CR).
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::BadRequest("a control character in a header"));
    }
    let (name, value) = (latin1(name), latin1(value.trim_ascii()));
    Ok((name.to_ascii_lowercase(), value))
}
// ANCHOR_END: parse-header-line

// ANCHOR: content-length
/// How the body of a request is framed, after RFC 9112 §6.3.
pub enum Framing {
    /// Exactly this many bytes follow the head.
    Length(usize),
    /// Exercise 2: chunked, decoded by [`decode_chunked`].
    Chunked,
}

/// How the body after the head is framed, after RFC 9112 §6.3.
pub fn body_framing(request: &Request) -> Result<Framing, HttpError> {
    let mut lengths = request.headers.iter().filter(|h| h.0 == "content-length");
    let mut codings = request
        .headers
        .iter()
        .filter(|h| h.0 == "transfer-encoding");
    match (lengths.next(), lengths.next(), codings.next()) {
        // Both framings at once is how request smuggling starts (§6.1): refuse it.
        (Some(_), _, Some(_)) => Err(HttpError::BadRequest("Content-Length and chunked")),
        (None, _, Some((_, coding))) => {
            // §6.1: chunked must be the last coding; we implement no other, and HTTP/1.0
            // has no chunked at all. A second Transfer-Encoding line would add codings.
            if request.minor_version == 0 {
                return Err(HttpError::BadRequest("chunked in an HTTP/1.0 request"));
            }
            match coding.eq_ignore_ascii_case("chunked") && codings.next().is_none() {
                true => Ok(Framing::Chunked),
                false => Err(HttpError::NotImplemented(
                    "transfer codings other than chunked",
                )),
            }
        }
        (Some(_), Some(_), None) => Err(HttpError::BadRequest("more than one Content-Length")),
        (None, _, None) => Ok(Framing::Length(0)), // no framing header: no body
        (Some((_, value)), None, None) => {
            // Only digits: Rust's parse() would also take "+5", which HTTP does not allow.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadRequest("Content-Length is not a number"));
            }
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => Ok(Framing::Length(n)),
                _ => Err(HttpError::BodyTooLarge), // too big for us, or even for a usize
            }
        }
    }
}
// ANCHOR_END: content-length

// ANCHOR: decode-chunked
/// Exercise 2: decodes a chunked body at the start of `buf` (RFC 9112 §7.1) if it is all
/// there, returning the body and how many bytes of `buf` it took.
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
///
/// Like `parse_head`, it starts over on every call; a server that reads large bodies
/// would keep its place between calls, as minigun's `ChunkedDecoder` does.
pub fn decode_chunked(buf: &[u8]) -> Result<Status<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line) = next_line(&buf[at..])? else {
            return Ok(Status::Partial);
        };
        at += line.len() + 2;
        // A chunk extension (";name=value") follows the size; we read none of them.
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = parse_chunk_size(size.trim_ascii_end())?;
        if size == 0 {
            break;
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        let Some(data) = buf.get(at..at + size + 2) else {
            return Ok(Status::Partial);
        };
        if !data.ends_with(b"\r\n") {
            return Err(HttpError::BadRequest("a chunk is longer than its size"));
        }
        body.extend_from_slice(&data[..size]);
        at += size + 2;
    }
    // The trailer section: field lines until an empty line. We keep none of them.
    loop {
        let Some(line) = next_line(&buf[at..])? else {
            return Ok(Status::Partial);
        };
        at += line.len() + 2;
        if line.is_empty() {
            return Ok(Status::Complete((body, at)));
        }
        if !line.contains(&b':') {
            return Err(HttpError::BadRequest("a trailer line has no colon"));
        }
    }
}

/// The line at the start of `buf` without its CRLF, or `None` if it has not ended yet. A line
/// is capped at the head limit, and a bare LF is refused, as in the head.
fn next_line(buf: &[u8]) -> Result<Option<&[u8]>, HttpError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => Ok(Some(&buf[..end - 1])),
        Some(_) => Err(HttpError::BadRequest("a line ends in a bare LF")),
        None if buf.len() > MAX_HEAD => Err(HttpError::HeadTooLarge),
        None => Ok(None),
    }
}

/// `chunk-size = 1*HEXDIG`, at most [`MAX_CHUNK_SIZE_DIGITS`] of them.
fn parse_chunk_size(digits: &[u8]) -> Result<usize, HttpError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(HttpError::BadRequest("a chunk size is not hex"));
    }
    if digits.len() > MAX_CHUNK_SIZE_DIGITS {
        return Err(HttpError::BodyTooLarge);
    }
    let text = std::str::from_utf8(digits).map_err(|_| HttpError::BadRequest("not hex"))?;
    usize::from_str_radix(text, 16).map_err(|_| HttpError::BadRequest("a chunk size is not hex"))
}
// ANCHOR_END: decode-chunked

// ANCHOR: is-tchar
/// RFC 9110 §5.6.2: the characters allowed in a token (methods, header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
// ANCHOR_END: is-tchar

// ANCHOR: latin1
/// Decodes bytes as ISO-8859-1, one char per byte. Header values may hold bytes above 0x7F
/// that are not valid UTF-8; PEP 3333 makes the same choice for WSGI.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}
// ANCHOR_END: latin1

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` whole, and again fed one byte at a time with `scanned` kept between
    /// calls; both must agree.
    fn parse_both_ways(input: &[u8]) -> Result<(String, usize), String> {
        let whole = match parse_head(input, &mut 0) {
            Ok(Status::Complete((r, n))) => Ok((r.target, n)),
            Ok(Status::Partial) => Err("partial".to_string()),
            Err(e) => Err(e.reply().0.to_string()),
        };
        let mut scanned = 0;
        let mut split = Err("partial".to_string());
        for end in 1..=input.len() {
            split = match parse_head(&input[..end], &mut scanned) {
                Ok(Status::Complete((r, n))) => Ok((r.target, n)),
                Ok(Status::Partial) => continue,
                Err(e) => Err(e.reply().0.to_string()),
            };
            break;
        }
        assert_eq!(whole, split, "whole and byte by byte disagree on {input:?}");
        whole
    }

    #[test]
    fn exercise_1_resuming_gives_the_same_answers() {
        assert_eq!(
            parse_both_ways(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("/a".into(), 28))
        );
        assert_eq!(
            parse_both_ways(b"GET /a HTTP/1.1\r\nHost: x\n\n").unwrap_err(),
            "400 Bad Request"
        );
        assert_eq!(
            parse_both_ways(b"G(T / HTTP/1.1\r\n\r\n").unwrap_err(),
            "400 Bad Request"
        );
    }

    #[test]
    fn exercise_3_empty_lines_before_the_request_line_are_skipped() {
        let input = b"\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse_both_ways(input), Ok(("/b".into(), input.len())));
        assert!(matches!(parse_head(b"\r", &mut 0), Ok(Status::Partial)));
        assert!(parse_head(b"\n", &mut 0).is_err());
    }

    #[test]
    fn exercise_4_a_long_request_line_gets_414_even_before_it_ends() {
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        assert_eq!(
            parse_both_ways(long.as_bytes()).unwrap_err(),
            "414 URI Too Long"
        );
        let fits = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE - 15)
        );
        assert!(parse_both_ways(fits.as_bytes()).is_ok());
    }

    #[test]
    fn exercise_2_chunked_bodies_decode_and_wait_for_more() {
        let body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let Ok(Status::Complete((decoded, used))) = decode_chunked(body) else {
            panic!("a whole chunked body");
        };
        assert_eq!(
            (decoded.as_slice(), used),
            (&b"Wikipedia "[..], body.len() - 4)
        );
        for end in 0..body.len() - 4 {
            assert!(
                matches!(decode_chunked(&body[..end]), Ok(Status::Partial)),
                "{end}"
            );
        }
        let refused = |input: &[u8]| decode_chunked(input).err().map(|e| e.reply().0);
        assert_eq!(refused(b"123456789\r\n"), Some("413 Content Too Large"));
        assert_eq!(refused(b"zz\r\n"), Some("400 Bad Request"));
        assert_eq!(refused(b"2\r\nabc\r\n"), Some("400 Bad Request"));
        assert_eq!(refused(b"2\nab\r\n"), Some("400 Bad Request"));
    }
}
