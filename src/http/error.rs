//! What can be wrong with a request, and the status each answer carries.
//!
//! Errors are small `Copy` values: the parser creates them on the hot path without allocating.
//! Each variant maps to one status code and a short body that says what was wrong; the
//! connection is always closed after an error response, because after a framing error the
//! server no longer knows where the next request would start (RFC 9112 §6.3, item 5–7).

use std::fmt;

/// A request the server refuses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Malformed syntax or framing: 400, with the rule that was broken.
    BadRequest(&'static str),
    /// The client may not send what it sent (a PROXY header from a peer outside
    /// `--proxy-allow-from`): 403.
    Forbidden(&'static str),
    /// The request line is longer than `--limit-request-line`: 414.
    UriTooLong,
    /// A header line is longer than `--limit-request-field_size`: 431.
    HeaderTooLarge,
    /// More header fields than `--limit-request-fields`: 431.
    TooManyHeaders,
    /// The body is larger than `--limit-request-body`: 413.
    BodyTooLarge,
    /// A transfer coding we do not implement (RFC 9112 §6.1): 501.
    NotImplemented(&'static str),
    /// An HTTP version other than 1.x (RFC 9110 §15.6.6): 505.
    VersionNotSupported,
    /// An `Expect` other than 100-continue (RFC 9110 §10.1.1): 417.
    ExpectationFailed,
    /// The client stopped sending in the middle of a request: 408.
    Timeout,
    /// The server could not take the request in (a body that cannot be stored): 500.
    ServerError(&'static str),
}

impl Error {
    /// The status code and reason phrase of the answer.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Error::BadRequest(_) => (400, "Bad Request"),
            Error::Forbidden(_) => (403, "Forbidden"),
            Error::UriTooLong => (414, "URI Too Long"),
            Error::HeaderTooLarge | Error::TooManyHeaders => {
                (431, "Request Header Fields Too Large")
            }
            Error::BodyTooLarge => (413, "Content Too Large"),
            Error::NotImplemented(_) => (501, "Not Implemented"),
            Error::VersionNotSupported => (505, "HTTP Version Not Supported"),
            Error::ExpectationFailed => (417, "Expectation Failed"),
            Error::Timeout => (408, "Request Timeout"),
            Error::ServerError(_) => (500, "Internal Server Error"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::Forbidden(why) => write!(f, "forbidden: {why}"),
            Error::UriTooLong => f.write_str("request line too long"),
            Error::HeaderTooLarge => f.write_str("header field too long"),
            Error::TooManyHeaders => f.write_str("too many header fields"),
            Error::BodyTooLarge => f.write_str("request body too large"),
            Error::NotImplemented(why) => write!(f, "not implemented: {why}"),
            Error::VersionNotSupported => f.write_str("HTTP version not supported"),
            Error::ExpectationFailed => f.write_str("unsupported expectation"),
            Error::Timeout => f.write_str("timed out waiting for the request"),
            Error::ServerError(why) => write!(f, "server error: {why}"),
        }
    }
}

impl std::error::Error for Error {}
