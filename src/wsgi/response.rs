//! `start_response`, `write`, and writing the response to the socket.
//!
//! PEP 3333 splits a response in two: `start_response(status, headers)` records the head, and
//! the first non-empty body chunk (or the end of the body) sends it. [`Writer`] holds that state
//! for one request. It checks the status and headers the moment the app hands them over —
//! CR, LF or characters outside latin-1 raise `ValueError` in the app, so a bad header can never
//! reach the wire — and chooses the framing when the head is sent (RFC 9112 §6.3):
//!
//! * the app's `Content-Length`, kept (and enforced: a body that runs short closes the
//!   connection, so the client sees an error rather than a response that claims to be whole);
//! * a length we know because the app returned a list, so no chunking is needed;
//! * chunked on HTTP/1.1 when the length is unknown;
//! * close-delimited on HTTP/1.0.
//!
//! HEAD responses and 1xx/204/304 carry no body (RFC 9110 §6.4.1). The head and the first chunk
//! go out in one `writev`; the GIL is released only to wait for room in the send buffer.
//!
//! The app reaches the writer only through [`StartResponse`], which holds it in a [`Lease`]:
//! when the request ends, `call` revokes the lease and takes the writer back, so a `write`
//! callable kept by the app raises instead of writing into a socket that may by then belong to
//! another client. Whatever runs Python code (checking the status and headers) runs before the
//! lease is locked, and a thread that finds the lease busy releases the GIL while it waits, so
//! two app threads writing at once cannot deadlock the worker.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::client::{ClientIo, Lease};
use crate::http::parse::is_token;
use crate::http::response::{push_chunk_size, push_date_and_server, push_decimal, LAST_CHUNK};

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Not decided yet: the head has not been sent.
    Undecided,
    /// No body may be sent (HEAD, 1xx, 204, 304).
    NoBody,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Ends when the connection closes (HTTP/1.0, unknown length).
    Close,
}

/// The state of one response.
pub struct Writer {
    /// The request's way to the client socket.
    io: ClientIo,
    /// HTTP/1.0 (0) or 1.1 (1).
    minor: u8,
    /// The request was HEAD.
    is_head: bool,
    /// Whether the connection may stay open after this response (request and server agree).
    pub keep_alive: bool,
    /// `start_response` was called (and not superseded by an error).
    pub started: bool,
    /// The head is on the wire; the status can no longer change.
    pub headers_sent: bool,
    /// The head is complete (framing chosen) but maybe not sent yet.
    head_ready: bool,
    /// The status code given by the app.
    pub status: u16,
    /// `HTTP/1.1 200 OK\r\n` followed by the app's checked headers.
    head: Vec<u8>,
    /// The app's Content-Length, if any.
    content_length: Option<u64>,
    /// Body bytes sent (after framing decided).
    pub body_sent: u64,
    /// The chosen framing.
    pub framing: BodyFraming,
    /// The client went away or a write failed: stop producing output.
    pub broken: bool,
    /// Response header names and values, kept only when the access log asks for them.
    pub keep_headers: bool,
    /// The app's headers as (lower-case name, value), for `%({x}o)s`.
    pub headers: Vec<(String, String)>,
    /// The app's status line (`200 OK`), kept with the headers, for `post_request`.
    status_text: String,
}

/// A status and header list from `start_response`, checked and encoded, before it is installed
/// in the [`Writer`]: building it runs Python code, so it is done before the lease is locked.
pub struct ResponseHead {
    /// `HTTP/1.1 200 OK\r\n` followed by the app's checked headers.
    head: Vec<u8>,
    /// The status code.
    code: u16,
    /// The app's Content-Length, if any.
    content_length: Option<u64>,
    /// The app said `Connection: close`.
    close: bool,
    /// (lower-case name, value) pairs, when the access log asks for response headers.
    kept: Vec<(String, String)>,
    /// The status as the app gave it, kept with the headers.
    status_text: String,
}

impl ResponseHead {
    /// Checks and encodes `start_response(status, headers)`. CR, LF or characters outside
    /// latin-1 raise `ValueError`, wrong types `TypeError`: a bad header never reaches the wire.
    pub fn parse(
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        keep_headers: bool,
    ) -> PyResult<ResponseHead> {
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str"))?;
        let status = status.to_cow()?;
        let code = check_status(&status)?;
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_bytes());
        if status.len() == 3 {
            head.push(b' ');
        }
        head.extend_from_slice(b"\r\n");
        let mut content_length = None;
        let mut close = false;
        let mut kept = Vec::new();
        for item in headers
            .try_iter()
            .map_err(|_| PyTypeError::new_err("headers must be a list of (name, value) tuples"))?
        {
            let item = item?;
            let pair = item
                .cast::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(
                    "each header must be a (name, value) tuple",
                ));
            }
            let name = pair.get_item(0)?;
            let value = pair.get_item(1)?;
            let name = name
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("header names must be str"))?
                .to_cow()?;
            let value = value
                .cast::<PyString>()
                .map_err(|_| {
                    PyTypeError::new_err(format!("value of header {name:?} must be a str"))
                })?
                .to_cow()?;
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(PyValueError::new_err(format!(
                    "invalid header name {name:?}"
                )));
            }
            let value_bytes = latin1(&value).ok_or_else(|| {
                PyValueError::new_err(format!("header {name:?} has a value that is not latin-1 or contains control characters"))
            })?;
            let value_bytes: &[u8] = &value_bytes;
            // Hop-by-hop headers belong to the server (PEP 3333 §"Other HTTP Features"); the
            // one wish we honour is `Connection: close`.
            if name.eq_ignore_ascii_case("connection") {
                close |= value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close"));
                continue;
            }
            if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.trim().parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("invalid Content-Length {value:?}"))
                })?;
                content_length = Some(n);
                continue;
            }
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value_bytes);
            head.extend_from_slice(b"\r\n");
            if keep_headers {
                kept.push((name.to_ascii_lowercase(), value.into_owned()));
            }
        }
        Ok(ResponseHead {
            head,
            code,
            content_length,
            close,
            kept,
            status_text: if keep_headers {
                status.into_owned()
            } else {
                String::new()
            },
        })
    }
}

impl Writer {
    /// A writer for a response through `io`.
    pub fn new(io: ClientIo, minor: u8, is_head: bool, keep_alive: bool) -> Writer {
        Writer {
            io,
            minor,
            is_head,
            keep_alive,
            started: false,
            headers_sent: false,
            head_ready: false,
            status: 0,
            head: Vec::with_capacity(256),
            content_length: None,
            body_sent: 0,
            framing: BodyFraming::Undecided,
            broken: false,
            keep_headers: false,
            headers: Vec::new(),
            status_text: String::new(),
        }
    }

    /// The status line sent (`200 OK`): the app's own, or the code and its reason when the
    /// server answered instead.
    pub fn status_line(&self) -> String {
        let code = self.status.to_string();
        if self.status_text.starts_with(&code) {
            return self.status_text.clone();
        }
        let reason = match self.status {
            500 => "Internal Server Error",
            200 => "OK",
            _ => "",
        };
        format!("{code} {reason}").trim_end().to_owned()
    }

    /// The request's way to the client, for an error answer written after the app failed.
    pub fn io(&self) -> &ClientIo {
        &self.io
    }

    /// The Content-Length the app announced.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Records a checked `start_response(status, headers)`.
    pub fn start(&mut self, head: ResponseHead) {
        self.head = head.head;
        self.status = head.code;
        self.content_length = head.content_length;
        if head.close {
            self.keep_alive = false;
        }
        self.headers = head.kept;
        self.status_text = head.status_text;
        self.started = true;
    }

    /// True when this status or method forbids a body.
    fn body_forbidden(&self) -> bool {
        self.is_head || self.status < 200 || self.status == 204 || self.status == 304
    }

    /// Finishes the head: framing headers, Date, Server, Connection.
    ///
    /// A HEAD response gets the framing headers a GET would get (RFC 9110 §9.3.2), but no body.
    fn finish_head(&mut self, known_length: Option<u64>) {
        self.head_ready = true;
        // A length we computed describes the body we are about to send. A 304 sends none, so
        // only the app's own Content-Length (that of the selected representation) is kept.
        // For HEAD the app's body is the GET's when the app ignores the method, but frameworks
        // drop it and return an empty list however long the page is: an empty body says
        // nothing about the GET's, and then a HEAD response names no framing at all, as
        // gunicorn's does (RFC 9110 §8.6 forbids a Content-Length that GET would not send).
        let computed = if self.is_head {
            known_length.filter(|&n| n > 0)
        } else if !self.body_forbidden() {
            known_length
        } else {
            None
        };
        let length = self.content_length.or(computed);
        self.framing = if self.body_forbidden() {
            BodyFraming::NoBody
        } else if let Some(n) = length {
            BodyFraming::Length(n)
        } else if self.minor >= 1 {
            BodyFraming::Chunked
        } else {
            self.keep_alive = false;
            BodyFraming::Close
        };
        let head = &mut self.head;
        // RFC 9110 §8.6: no Content-Length in 1xx and 204 responses.
        if self.status >= 200 && self.status != 204 {
            if let Some(n) = length {
                head.extend_from_slice(b"Content-Length: ");
                push_decimal(head, n);
                head.extend_from_slice(b"\r\n");
            } else if self.minor >= 1 && self.status != 304 && !self.is_head {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        }
        push_date_and_server(head);
        if !self.keep_alive {
            if self.minor >= 1 {
                head.extend_from_slice(b"Connection: close\r\n");
            }
        } else if self.minor == 0 {
            head.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");
    }

    /// Sends the head (if not sent yet) and `data`, framed. `known_length` is the whole body's
    /// length when the caller knows it before the head goes out.
    pub fn send(
        &mut self,
        py: Python<'_>,
        data: &[u8],
        known_length: Option<u64>,
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut prefix: Vec<u8> = Vec::new();
        let first = !self.headers_sent;
        if first {
            if !self.head_ready {
                self.finish_head(known_length);
            }
            prefix = std::mem::take(&mut self.head);
            self.headers_sent = true;
        }
        let body: &[u8] = match self.framing {
            BodyFraming::NoBody | BodyFraming::Undecided => &[],
            BodyFraming::Length(n) => {
                let room = n.saturating_sub(self.body_sent);
                // An app that sends more than it announced would corrupt the next response on
                // this connection: cut the excess and close afterwards.
                if (data.len() as u64) > room {
                    self.keep_alive = false;
                    &data[..room as usize]
                } else {
                    data
                }
            }
            BodyFraming::Chunked | BodyFraming::Close => data,
        };
        let mut chunk_head = Vec::new();
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(4);
        if !prefix.is_empty() {
            iov.push(IoSlice::new(&prefix));
        }
        if self.framing == BodyFraming::Chunked && !body.is_empty() {
            push_chunk_size(&mut chunk_head, body.len());
            iov.push(IoSlice::new(&chunk_head));
            iov.push(IoSlice::new(body));
            iov.push(IoSlice::new(b"\r\n"));
        } else if !body.is_empty() {
            iov.push(IoSlice::new(body));
        }
        if iov.is_empty() {
            return Ok(());
        }
        self.write_iov(py, &mut iov)?;
        self.body_sent += body.len() as u64;
        Ok(())
    }

    /// Writes every slice to the client. Tries once holding the GIL: a socket with room takes
    /// the whole response at once, and releasing the GIL around a write that does not block
    /// would only invite another thread to take it (a context switch per request). Lets go of
    /// it only to wait. A failure marks the response broken.
    fn write_iov(&mut self, py: Python<'_>, iov: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut slices: &mut [IoSlice<'_>] = iov;
        let io = &self.io;
        let result = match io.try_send(&mut slices) {
            Ok(true) => Ok(()),
            Ok(false) => py.detach(|| io.send(slices)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.broken = true;
            self.keep_alive = false;
        }
        result
    }

    /// Sends several pieces of a body whose total length is `known`, in one writev when the
    /// framing allows (a Content-Length body that fits), else piece by piece.
    pub fn send_parts(
        &mut self,
        py: Python<'_>,
        parts: &[&[u8]],
        known: Option<u64>,
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !self.headers_sent && !self.head_ready {
            self.finish_head(known);
        }
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let fits = match self.framing {
            BodyFraming::Length(n) => total <= n.saturating_sub(self.body_sent),
            BodyFraming::NoBody => true,
            _ => false,
        };
        if !fits || parts.len() + 1 > 1024 {
            for part in parts {
                self.send(py, part, known)?;
            }
            return Ok(());
        }
        let prefix = if self.headers_sent {
            Vec::new()
        } else {
            self.headers_sent = true;
            std::mem::take(&mut self.head)
        };
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
        if !prefix.is_empty() {
            iov.push(IoSlice::new(&prefix));
        }
        if self.framing != BodyFraming::NoBody {
            iov.extend(
                parts
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| IoSlice::new(p)),
            );
        }
        self.write_iov(py, &mut iov)?;
        if self.framing != BodyFraming::NoBody {
            self.body_sent += total;
        }
        Ok(())
    }

    /// Ends the body: the last chunk for chunked framing; checks a Content-Length was met.
    /// Returns false when the response could not be completed (the connection must close).
    pub fn finish(&mut self, py: Python<'_>) -> bool {
        if self.broken {
            return false;
        }
        if !self.headers_sent && self.send(py, &[], Some(0)).is_err() {
            return false;
        }
        match self.framing {
            BodyFraming::Chunked => {
                let mut last = [IoSlice::new(LAST_CHUNK)];
                self.write_iov(py, &mut last).is_ok()
            }
            BodyFraming::Length(n) if self.body_sent < n => {
                crate::error!(
                    "Response body shorter than its Content-Length ({} of {n} bytes); closing the connection",
                    self.body_sent
                );
                self.broken = true;
                self.keep_alive = false;
                false
            }
            BodyFraming::Close => {
                self.keep_alive = false;
                true
            }
            _ => true,
        }
    }

    /// Sends the body of a regular file with sendfile(2): `count` bytes from `offset`. `None`
    /// when sendfile cannot say it all and the caller must iterate the file instead: something
    /// was sent before (by `write()`), or the app's Content-Length is not the file's length.
    pub fn send_file(
        &mut self,
        py: Python<'_>,
        file_fd: RawFd,
        offset: i64,
        count: u64,
    ) -> Option<io::Result<()>> {
        if self.headers_sent || self.body_sent > 0 {
            return None;
        }
        if !self.head_ready {
            self.finish_head(Some(count));
        }
        match self.framing {
            // HEAD, 204, 304: the head alone is the whole response.
            BodyFraming::NoBody => return Some(self.send(py, &[], Some(count))),
            BodyFraming::Length(n) if n == count => {}
            _ => return None,
        }
        if let Err(e) = self.send(py, &[], Some(count)) {
            return Some(Err(e));
        }
        let io = &self.io;
        let (sent, result) = py.detach(|| io.send_file(file_fd, offset, count));
        self.body_sent += sent;
        if result.is_err() {
            self.broken = true;
            self.keep_alive = false;
        }
        Some(result)
    }
}

/// Checks a status line given by the app (`"200 OK"`): three digits making a final status
/// (200 to 999), then a space and a reason phrase without control characters (RFC 9112 §4).
/// Returns the code.
fn check_status(status: &str) -> PyResult<u16> {
    let bytes = status.as_bytes();
    let invalid = || PyValueError::new_err(format!("invalid status {status:?}"));
    let (Some(digits), rest) = (bytes.get(..3), bytes.get(3..).unwrap_or_default()) else {
        return Err(invalid());
    };
    let digits_ok = digits.iter().all(u8::is_ascii_digit) && digits[0] != b'0';
    // After the code: nothing, or a space and a reason phrase without control characters.
    let rest_ok = match rest.split_first() {
        None => true,
        Some((b' ', reason)) => std::str::from_utf8(reason).is_ok_and(|r| {
            r.chars().all(|c| {
                c == '\t' || (' '..='~').contains(&c) || ('\u{80}'..='\u{ff}').contains(&c)
            })
        }),
        Some(_) => false,
    };
    if !digits_ok || !rest_ok {
        return Err(invalid());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    // An interim (1xx) status is not an answer: the client would wait for the final one
    // forever. The server sends the one interim response WSGI needs (100 Continue) itself.
    if code < 200 {
        return Err(invalid());
    }
    Ok(code)
}

/// Encodes a header value as latin-1, refusing characters above U+00FF and control characters
/// (CR and LF above all: they would let the app, or a client echoed by it, inject headers).
/// Printable ASCII, the common case, is borrowed as it is.
fn latin1(value: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
    let bytes = value.as_bytes();
    if bytes
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) || b == b'\t')
    {
        return Some(std::borrow::Cow::Borrowed(bytes));
    }
    value
        .chars()
        .map(|c| {
            let n = c as u32;
            if n > 0xff || (n < 0x20 && c != '\t') || n == 0x7f {
                None
            } else {
                Some(n as u8)
            }
        })
        .collect::<Option<Vec<u8>>>()
        .map(std::borrow::Cow::Owned)
}

/// The `start_response` callable handed to the app; its `write` attribute is the legacy
/// `write()` callable.
#[pyclass(module = "minigun", frozen)]
pub struct StartResponse {
    /// The response state, revoked when the request ends.
    writer: Lease<Writer>,
    /// Whether the access log needs the response headers.
    keep_headers: bool,
}

impl StartResponse {
    /// A `start_response` for the response `writer` will send.
    pub fn new(writer: Writer, keep_headers: bool) -> StartResponse {
        StartResponse {
            writer: Lease::new(writer),
            keep_headers,
        }
    }

    /// Runs `f` on the writer, waiting (without the GIL) while another thread uses it. Raises
    /// once the request has ended.
    pub fn with<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Writer) -> PyResult<T>,
    ) -> PyResult<T> {
        let mut guard = super::lock_lease(py, &self.writer);
        match guard.as_mut() {
            Some(w) => f(w),
            None => Err(PyOSError::new_err(
                "the response was used after its request had ended",
            )),
        }
    }

    /// Ends the response's lease at the end of its request and returns the writer. Waits for a
    /// `write()` in progress on another thread; afterwards every call raises.
    pub fn revoke(&self, py: Python<'_>) -> Option<Writer> {
        super::lock_lease(py, &self.writer).take()
    }
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)` → `write`.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let exc_info = exc_info.filter(|e| !e.is_none());
        // Checking runs Python code (a header list may be any iterable): outside the lease,
        // which is then taken once to look at the state and install the head.
        let head = ResponseHead::parse(status, headers, this.keep_headers);
        head.and_then(|head| {
            this.with(py, |w| {
                if exc_info.is_none() && w.started {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                if w.headers_sent {
                    // With exc_info: PEP 3333 says re-raise the app's error (below, outside the
                    // lease); without: too late to change the status.
                    return Err(PyRuntimeError::new_err(
                        "start_response() called after the response head was sent",
                    ));
                }
                w.start(head);
                Ok(())
            })
        })
        .or_else(|e| match exc_info {
            Some(info) if this.with(py, |w| Ok(w.headers_sent)).unwrap_or(false) => {
                let value = info.get_item(1)?;
                let tb = info.get_item(2)?;
                let err = PyErr::from_value(value.clone());
                if !tb.is_none() {
                    let _ = value.call_method1("with_traceback", (tb,));
                }
                Err(err)
            }
            _ => Err(e),
        })?;
        slf.getattr(pyo3::intern!(py, "write"))
    }

    /// The legacy `write(data)` callable (PEP 3333 §"The write() Callable").
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        self.with(py, |w| {
            if !w.started {
                return Err(PyRuntimeError::new_err(
                    "write() called before start_response()",
                ));
            }
            w.send(py, bytes.as_bytes(), None)
                .map_err(|e| PyOSError::new_err(format!("client disconnected: {e}")))
        })
    }
}

/// `wsgi.file_wrapper` (PEP 3333 §"Optional Platform-Specific File Handling"): iterable over
/// blocks of a file-like object; when the object is a real file, the worker sends it with
/// sendfile(2) instead of iterating.
#[pyclass(module = "minigun", frozen)]
pub struct FileWrapper {
    /// The file-like object.
    pub filelike: Py<PyAny>,
    /// Block size for iteration.
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let block = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = block.len().map(|n| n == 0).unwrap_or(true);
        Ok((!empty).then_some(block))
    }

    /// Closes the file-like object, if it can be closed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// `wsgi.errors`: text written here goes to the error log.
#[pyclass(module = "minigun", frozen)]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text = if let Ok(b) = s.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else {
            s.str()?.to_cow()?.as_bytes().to_vec()
        };
        crate::log::write_raw(&text);
        Ok(text.len())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_status_lines() {
        assert_eq!(check_status("200 OK").ok(), Some(200));
        assert_eq!(check_status("404").ok(), Some(404));
        assert!(check_status("200 OK\r\nX: y").is_err());
        assert!(check_status("20 OK").is_err());
        assert!(check_status("OK 200").is_err());
        for bad in [
            "",
            "2",
            "20",
            "2000 OK",
            "200OK",
            "099 Low",
            "200 \u{20ac}",
            "20\u{e9}",
        ] {
            assert!(check_status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_header_injection() {
        assert_eq!(latin1("caf\u{e9}").as_deref(), Some(&b"caf\xe9"[..]));
        assert_eq!(latin1("a\r\nSet-Cookie: x"), None);
        assert_eq!(latin1("\u{20ac}"), None);
    }
}
