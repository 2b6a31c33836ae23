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
/// We parse from the start on every call, which costs at most `MAX_HEAD` bytes of scanning
/// per read. httparse warns about the same thing; minigun remembers where it stopped.
pub fn parse_head(buf: &[u8]) -> Result<Status<(Request, usize)>, HttpError> {
    // Fail fast on bytes that can never start a request (a TLS handshake, say) instead of
    // waiting for an empty line that will never come: all before the first space is a method.
    let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    if !buf[..method_end].iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequest("the method is not a token"));
    }
    let Some(head_len) = find_head_end(&buf[..buf.len().min(MAX_HEAD)])? else {
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
    Ok(Status::Complete((request, head_len)))
}
// ANCHOR_END: parse-head

// ANCHOR: find-head-end
/// Finds the empty line that ends the head; returns the head's length including that line.
///
/// RFC 9112 §2.2 ends every line with CRLF. A bare LF is refused rather than guessed at:
/// servers that guess differently from a proxy in front of them open the door to smuggling.
fn find_head_end(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    for (i, &byte) in buf.iter().enumerate() {
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
/// How many body bytes follow the head, after RFC 9112 §6.3.
pub fn content_length(request: &Request) -> Result<usize, HttpError> {
    let mut lengths = request.headers.iter().filter(|h| h.0 == "content-length");
    let chunked = request.header("transfer-encoding").is_some();
    match (lengths.next(), lengths.next(), chunked) {
        // Both framings at once is how request smuggling starts (§6.1): refuse it.
        (Some(_), _, true) => Err(HttpError::BadRequest("Content-Length and chunked")),
        (None, _, true) => Err(HttpError::NotImplemented("chunked request bodies")),
        (Some(_), Some(_), false) => Err(HttpError::BadRequest("more than one Content-Length")),
        (None, _, false) => Ok(0), // no framing header: no body
        (Some((_, value)), None, false) => {
            // Only digits: Rust's parse() would also take "+5", which HTTP does not allow.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadRequest("Content-Length is not a number"));
            }
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_BODY => Ok(n),
                _ => Err(HttpError::BodyTooLarge), // too big for us, or even for a usize
            }
        }
    }
}
// ANCHOR_END: content-length

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
