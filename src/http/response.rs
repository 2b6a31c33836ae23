//! Building responses: status line, the headers the server adds, framing, error answers.
//!
//! The app's status and headers are checked in `wsgi::response` as `start_response` receives
//! them; this module writes bytes. The `Date` header (RFC 9110 §6.6.1) is formatted once per
//! second per thread and cached.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::Error;

/// The `Server` header value.
pub const SERVER: &[u8] = b"minigun";

thread_local! {
    /// The second the cached date is for, and the formatted `Date: …\r\n` line.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends `Date: <IMF-fixdate>\r\nServer: minigun\r\n` to `out`.
pub fn push_date_and_server(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            cached.1.clear();
            cached.1.extend_from_slice(b"Date: ");
            crate::date::http_date(now, &mut cached.1);
            cached.1.extend_from_slice(b"\r\nServer: ");
            cached.1.extend_from_slice(SERVER);
            cached.1.extend_from_slice(b"\r\n");
            cached.0 = now;
        }
        out.extend_from_slice(&cached.1);
    });
}

/// Appends a decimal number.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the size line of one chunk (RFC 9112 §7.1): hex length and CRLF.
pub fn push_chunk_size(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A complete response for a request the server refuses: a short plain-text body naming what
/// was wrong, and `Connection: close`.
pub fn error_response(err: Error) -> Vec<u8> {
    let (code, reason) = err.status();
    let body = format!("{reason}: {err}\n");
    simple_response(code, reason, body.as_bytes(), true)
}

/// A complete response with a plain-text body.
pub fn simple_response(code: u16, reason: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_date_and_server(&mut out);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    push_decimal(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut v = Vec::new();
        push_decimal(&mut v, 0);
        push_decimal(&mut v, 1234567);
        push_chunk_size(&mut v, 0x1a2b);
        assert_eq!(v, b"012345671a2b\r\n");
    }

    #[test]
    fn error_responses_close_and_explain() {
        let r = String::from_utf8(error_response(Error::UriTooLong)).expect("ascii");
        assert!(r.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("URI Too Long: request line too long\n"));
    }
}
