//! `wsgi.input`: the request body as a Python stream, read from the socket on demand.
//!
//! [`BodyReader`] owns the connection's read buffer while the app runs (the head's bytes stay at
//! its front for the access log; body bytes that arrived with the head are read from there
//! first). It never reads past a `Content-Length` body, de-chunks chunked bodies, and waits for
//! the socket with the GIL released. `Expect: 100-continue` is answered the first time the app
//! actually needs bytes from the client (RFC 9110 §10.1.1): an app that rejects the request
//! without reading spares the client the upload.
//!
//! [`Input`] is the Python face: `read`, `readline`, `readlines`, iteration (PEP 3333 §"Input
//! and Error Streams"). When the request is over, the worker takes the reader back, so a stream
//! an app kept around reads as empty instead of touching the next request's bytes.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::body::ChunkedDecoder;
use crate::http::Error;
use crate::sys;

/// Most bytes one socket read asks for while streaming a body.
const READ_CHUNK: usize = 64 * 1024;

/// How the body ends.
enum Kind {
    /// After this many more bytes.
    Length(u64),
    /// When the decoder sees the last chunk; decoded bytes wait in `staged[staged_pos..]`.
    Chunked(ChunkedDecoder),
}

/// Why the body could not be read.
#[derive(Debug, Clone)]
pub enum BodyError {
    /// The client broke HTTP framing or a limit.
    Http(Error),
    /// The client went away or the socket failed.
    Io(String),
}

impl From<BodyError> for PyErr {
    fn from(e: BodyError) -> PyErr {
        match e {
            BodyError::Http(e) => PyOSError::new_err(format!("invalid request body: {e}")),
            BodyError::Io(msg) => PyOSError::new_err(msg),
        }
    }
}

/// Reads one request body from the connection.
pub struct BodyReader {
    fd: RawFd,
    /// The connection's buffer: head bytes, then body (and maybe pipelined) bytes.
    pub buf: Vec<u8>,
    /// Bytes of `buf` before this point are consumed (the head counts as consumed).
    pub pos: usize,
    /// The head's length: compaction keeps `buf[..keep]` for the access log.
    keep: usize,
    kind: Kind,
    staged: Vec<u8>,
    staged_pos: usize,
    /// `Some` when the client sent `Expect: 100-continue`: true while the `100 Continue` is still
    /// owed. Shared with the response writer, which cancels it when the final response goes out
    /// first (a 100 after the final status would corrupt the stream).
    continue_owed: Option<Arc<AtomicBool>>,
    /// When the whole body must have arrived (ms, monotonic): a client trickling a body gets a
    /// 408 at the request's deadline, however steadily it trickles.
    deadline_ms: u64,
    /// The first error, repeated on later reads: a broken body stays broken.
    pub error: Option<BodyError>,
}

impl BodyReader {
    /// A reader for a body starting at `buf[head_len..]`.
    pub fn new(
        fd: RawFd,
        buf: Vec<u8>,
        head_len: usize,
        chunked: Option<u64>,
        length: u64,
        continue_owed: Option<Arc<AtomicBool>>,
        deadline_ms: u64,
    ) -> BodyReader {
        BodyReader {
            fd,
            buf,
            pos: head_len,
            keep: head_len,
            kind: match chunked {
                Some(limit) => Kind::Chunked(ChunkedDecoder::new(limit)),
                None => Kind::Length(length),
            },
            staged: Vec::new(),
            staged_pos: 0,
            continue_owed,
            deadline_ms,
            error: None,
        }
    }

    /// Body bytes ready to be taken without touching the socket.
    fn window(&self) -> &[u8] {
        match &self.kind {
            Kind::Length(remaining) => {
                let avail = (self.buf.len() - self.pos).min(*remaining as usize);
                &self.buf[self.pos..self.pos + avail]
            }
            Kind::Chunked(_) => &self.staged[self.staged_pos..],
        }
    }

    fn consume(&mut self, n: usize) {
        // The client sent body bytes without waiting for 100 Continue: none is owed any more.
        if let Some(owed) = &self.continue_owed {
            owed.store(false, Ordering::Release);
        }
        match &mut self.kind {
            Kind::Length(remaining) => {
                self.pos += n;
                *remaining -= n as u64;
            }
            Kind::Chunked(_) => {
                self.staged_pos += n;
                if self.staged_pos == self.staged.len() {
                    self.staged.clear();
                    self.staged_pos = 0;
                }
            }
        }
    }

    /// True when every byte of the body has been consumed.
    pub fn is_complete(&self) -> bool {
        match &self.kind {
            Kind::Length(remaining) => *remaining == 0,
            Kind::Chunked(d) => d.is_done() && self.staged_pos == self.staged.len(),
        }
    }

    /// Makes more body bytes available in the window. `Ok(false)`: the body has ended.
    fn fill(&mut self, py: Python<'_>) -> Result<bool, BodyError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.fill_inner(py);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    fn fill_inner(&mut self, py: Python<'_>) -> Result<bool, BodyError> {
        loop {
            if !self.window().is_empty() {
                return Ok(true);
            }
            match &mut self.kind {
                Kind::Length(0) => return Ok(false),
                Kind::Length(_) => {}
                Kind::Chunked(decoder) => {
                    if decoder.is_done() {
                        return Ok(false);
                    }
                    if self.pos < self.buf.len() {
                        let d = decoder
                            .decode(&self.buf[self.pos..])
                            .map_err(BodyError::Http)?;
                        let base = self.pos;
                        self.staged
                            .extend_from_slice(&self.buf[base + d.data.0..base + d.data.1]);
                        self.pos += d.consumed;
                        if d.consumed > 0 {
                            continue;
                        }
                    }
                }
            }
            self.read_socket(py)?;
        }
    }

    /// Reads more bytes from the client into `buf`, waiting until the request's deadline.
    fn read_socket(&mut self, py: Python<'_>) -> Result<(), BodyError> {
        let fd = self.fd;
        if self
            .continue_owed
            .as_ref()
            .is_some_and(|owed| owed.swap(false, Ordering::AcqRel))
        {
            // The client waited for our go-ahead: its clock restarts now.
            let now = sys::monotonic_ms();
            self.deadline_ms = now + self.deadline_ms.saturating_sub(now).max(1000);
            py.detach(|| {
                crate::worker::waiting_on_client(|| {
                    write_all_blocking(fd, b"HTTP/1.1 100 Continue\r\n\r\n", 1000)
                })
            })
            .map_err(|e| BodyError::Io(format!("cannot send 100 Continue: {e}")))?;
        }
        // Compact: drop consumed body bytes, keep the head for the access log.
        if self.pos > self.keep {
            self.buf.drain(self.keep..self.pos);
            self.pos = self.keep;
        }
        let want = match &self.kind {
            // Never read past a Content-Length body: what follows belongs to the next request.
            Kind::Length(remaining) => (*remaining as usize).min(READ_CHUNK),
            Kind::Chunked(_) => READ_CHUNK,
        };
        let deadline = self.deadline_ms;
        // Bytes already waiting are taken with the GIL held; it is released only to wait.
        let result = match sys::read_into_spare(fd, &mut self.buf, want) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let buf = &mut self.buf;
                py.detach(|| {
                    crate::worker::waiting_on_client(|| loop {
                        let left = deadline.saturating_sub(sys::monotonic_ms());
                        if left == 0
                            || !crate::worker::wait_for_client(
                                fd,
                                sys::Ready::Read,
                                left.min(60_000) as i32,
                            )?
                        {
                            if sys::monotonic_ms() >= deadline {
                                return Err(io::ErrorKind::TimedOut.into());
                            }
                            continue;
                        }
                        match sys::read_into_spare(fd, buf, want) {
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                                ) => {}
                            other => return other,
                        }
                    })
                })
            }
            other => other,
        };
        match result {
            Ok(0) => Err(BodyError::Io(
                "client disconnected before the request body was complete".to_owned(),
            )),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(BodyError::Http(Error::Timeout)),
            Err(e) => Err(BodyError::Io(format!("error reading request body: {e}"))),
        }
    }

    /// Reads `size` bytes, fewer only when the body ends first (all that is left when `None`).
    pub fn read(&mut self, py: Python<'_>, size: Option<usize>) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        let limit = size.unwrap_or(usize::MAX);
        while out.len() < limit {
            let window = self.window();
            if !window.is_empty() {
                let take = window.len().min(limit - out.len());
                out.extend_from_slice(&window[..take]);
                self.consume(take);
                continue;
            }
            // Like a file (and unlike a socket), a sized read returns short only at the end of
            // the body: frameworks such as WebOb take a short read for a disconnection.
            if !self.fill(py)? {
                break;
            }
        }
        Ok(out)
    }

    /// Reads one line, up to and including `\n`, or at most `size` bytes.
    pub fn readline(&mut self, py: Python<'_>, size: Option<usize>) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        let limit = size.unwrap_or(usize::MAX);
        while out.len() < limit {
            let window = self.window();
            if window.is_empty() {
                if !self.fill(py)? {
                    break;
                }
                continue;
            }
            let room = window.len().min(limit - out.len());
            match window[..room].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(&window[..=i]);
                    self.consume(i + 1);
                    break;
                }
                None => {
                    out.extend_from_slice(&window[..room]);
                    self.consume(room);
                }
            }
        }
        Ok(out)
    }

    /// Reads and discards what the app left unread, up to `max` bytes, so the connection can
    /// carry the next request. Returns false when the connection must close instead: the body
    /// is larger than `max`, broken, or the client was never told to send it (100-continue).
    pub fn drain(&mut self, py: Python<'_>, max: u64) -> bool {
        if self.is_complete() {
            return true;
        }
        // A client still waiting for 100 Continue will not send the body: close instead.
        let still_owed = self
            .continue_owed
            .as_ref()
            .is_some_and(|owed| owed.load(Ordering::Acquire));
        if still_owed || self.error.is_some() {
            return false;
        }
        let mut drained = 0u64;
        loop {
            let n = self.window().len();
            if n > 0 {
                drained += n as u64;
                if drained > max {
                    return false;
                }
                self.consume(n);
                continue;
            }
            match self.fill(py) {
                Ok(true) => {}
                Ok(false) => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Writes all of `data` to a non-blocking socket, waiting up to `timeout_ms` whenever the
/// send buffer is full.
pub fn write_all_blocking(fd: RawFd, mut data: &[u8], timeout_ms: i32) -> io::Result<()> {
    crate::worker::send_until_done(fd, timeout_ms, || {
        if !data.is_empty() {
            data = &data[sys::write(fd, data)?..];
        }
        Ok(data.is_empty())
    })
}

/// The `wsgi.input` object.
#[pyclass(module = "minigun", frozen)]
pub struct Input {
    /// The reader while the request runs; `None` for requests without a body and after the
    /// request has ended.
    pub reader: Mutex<Option<BodyReader>>,
}

impl Input {
    /// A stream over a body.
    pub fn new(reader: Option<BodyReader>) -> Input {
        Input {
            reader: Mutex::new(reader),
        }
    }

    /// Takes the reader back at the end of the request.
    pub fn take(&self) -> Option<BodyReader> {
        self.reader.lock().ok().and_then(|mut r| r.take())
    }

    fn with<T>(
        &self,
        empty: T,
        f: impl FnOnce(&mut BodyReader) -> Result<T, BodyError>,
    ) -> PyResult<T> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| PyOSError::new_err("wsgi.input is unusable after an error"))?;
        match guard.as_mut() {
            Some(reader) => Ok(f(reader)?),
            None => Ok(empty),
        }
    }
}

/// PEP 3333 allows `None` or a negative size to mean "all".
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes, or the rest of the body.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with(Vec::new(), |r| r.read(py, size_arg(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readline(size=-1)`: one line, at most `size` bytes.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with(Vec::new(), |r| r.readline(py, size_arg(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readlines(hint=-1)`: lines until the body ends or `hint` bytes were read.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|h| *h > 0);
        let list = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with(Vec::new(), |r| r.readline(py, None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            list.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with(Vec::new(), |r| r.readline(py, None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    /// Accepted and ignored: the server owns the socket.
    fn close(&self) {}
}
