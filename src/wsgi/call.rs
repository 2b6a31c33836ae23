//! One WSGI call: environ in, response out (PEP 3333 §"Specification Details").
//!
//! [`serve`] runs with the GIL held and releases it for every wait on the socket. It builds the
//! environ, calls the app, iterates what the app returned, sends it through the
//! [`Writer`](super::response::Writer), and always calls the result's `close()`. Failures go to
//! the right party: an app exception before anything was sent becomes a 500 (413/408 when it
//! came from reading a too-large or stalled body) and a traceback in the error log; one after
//! the head was sent ends the connection, so the client never mistakes a truncated body for a
//! whole one. Nothing the app does takes the worker down.

use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::environ::{self, Client, Templates, ThreadCache};
use super::input::{write_all_blocking, BodyError, BodyReader, Input};
use super::interpreter::format_traceback;
use super::response::{FileWrapper, StartResponse, Writer};
use crate::http::response::simple_response;
use crate::http::{Error, Framing, Head};

/// Most unread body bytes drained after a response so the connection can be reused; beyond
/// this the connection is closed instead (gunicorn bounds its drain the same way).
const MAX_DRAIN: u64 = 1 << 20;

/// What a worker shares with every request: the app and the environ templates.
pub struct App {
    /// The WSGI callable.
    pub app: Py<PyAny>,
    /// Environ templates and key caches.
    pub templates: Templates,
    /// The `wsgi.input` for requests without a body: always empty, shared.
    pub empty_input: Py<Input>,
    /// Timeout for socket waits inside a request, in milliseconds.
    pub io_timeout_ms: i32,
    /// `--limit-request-body` (0 = none), for chunked bodies.
    pub body_limit: u64,
    /// Whether the access log needs response headers kept.
    pub keep_response_headers: bool,
}

/// One request as the worker hands it over.
pub struct Exchange<'a> {
    /// The client socket (non-blocking).
    pub fd: RawFd,
    /// Client address facts for the environ.
    pub client: Client<'a>,
    /// The connection buffer: the head at `[..head.len]`, then any body bytes already read.
    pub buf: &'a mut Vec<u8>,
    /// The parsed head.
    pub head: &'a Head,
    /// False when the server wants the connection closed after this response (stopping).
    pub may_keep_alive: bool,
    /// When the client must have sent the whole request, body included (ms, monotonic):
    /// `--timeout` after its first byte.
    pub deadline_ms: u64,
}

/// How the exchange ended.
pub struct Outcome {
    /// Bytes at the front of the buffer that belonged to this request (head and body).
    pub consumed: usize,
    /// Whether the connection can carry another request.
    pub keep_alive: bool,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The response headers (lower-case names), when the access log wants them.
    pub response_headers: Vec<(String, String)>,
}

/// Serves one request.
pub fn serve(py: Python<'_>, app: &App, cache: &mut ThreadCache, ex: Exchange<'_>) -> Outcome {
    let head = ex.head;
    let is_head = head.is_head(ex.buf);
    let keep_alive = head.keep_alive && ex.may_keep_alive;

    // The environ is built while the head's bytes are still in the connection buffer.
    let mut client = ex.client;
    let env = match environ::build(py, &app.templates, cache, &mut client, ex.buf, head) {
        Ok(env) => env,
        Err(e) => return fail_early(py, ex.fd, app, head, &e),
    };

    // wsgi.input: a stream over the body (it takes the buffer along), or the shared empty one.
    let body = match head.framing {
        Framing::None => None,
        Framing::Length(n) => Some((None, n)),
        Framing::Chunked => Some((Some(app.body_limit), 0)),
    };
    let continue_owed = (head.expect_continue && body.is_some())
        .then(|| std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let input: Py<Input> = match body {
        None => app.empty_input.clone_ref(py),
        Some((chunked, length)) => {
            let reader = BodyReader::new(
                ex.fd,
                std::mem::take(ex.buf),
                head.len,
                chunked,
                length,
                continue_owed.clone(),
                ex.deadline_ms,
            );
            match Py::new(py, Input::new(Some(reader))) {
                Ok(i) => i,
                Err(e) => return fail_early(py, ex.fd, app, head, &e),
            }
        }
    };
    let input = input.into_bound(py);

    let mut writer = Writer::new(ex.fd, head.minor, is_head, keep_alive, app.io_timeout_ms);
    writer.keep_headers = app.keep_response_headers;
    writer.continue_owed = continue_owed;
    let finished = match env.set_item(pyo3::intern!(py, "wsgi.input"), &input) {
        Ok(()) => call_and_send(py, app, env, writer, &input),
        Err(e) => {
            fail_early(py, ex.fd, app, head, &e);
            Finished::failed()
        }
    };

    // Take the connection buffer back from the body reader; drain what the app left unread.
    let mut keep_alive = finished.keep_alive && !finished.broken;
    let consumed = match input.get().take() {
        Some(mut reader) => {
            if keep_alive && !reader.drain(py, MAX_DRAIN) {
                keep_alive = false;
            }
            let consumed = reader.pos;
            *ex.buf = std::mem::take(&mut reader.buf);
            consumed
        }
        None => head.len,
    };
    Outcome {
        consumed,
        keep_alive,
        status: finished.status,
        body_bytes: finished.body_sent,
        response_headers: finished.headers,
    }
}

/// The parts of the writer's state the worker needs afterwards.
struct Finished {
    keep_alive: bool,
    broken: bool,
    status: u16,
    body_sent: u64,
    headers: Vec<(String, String)>,
}

impl Finished {
    /// A request that could not even be set up: 500, and the connection closes.
    fn failed() -> Finished {
        Finished {
            keep_alive: false,
            broken: true,
            status: 500,
            body_sent: 0,
            headers: Vec::new(),
        }
    }
}

fn call_and_send(
    py: Python<'_>,
    app: &App,
    env: Bound<'_, pyo3::types::PyDict>,
    writer: Writer,
    input: &Bound<'_, Input>,
) -> Finished {
    let sr = match Bound::new(
        py,
        StartResponse {
            writer: std::sync::Mutex::new(writer),
        },
    ) {
        Ok(sr) => sr,
        Err(e) => {
            crate::error!("Cannot create start_response: {e}");
            return Finished::failed();
        }
    };
    let sr = &sr;
    let outcome = app.app.bind(py).call1((env, sr));
    let mut failure: Option<PyErr> = None;
    match outcome {
        Err(e) => failure = Some(e),
        Ok(result) => {
            if let Err(e) = send_result(py, sr, &result) {
                failure = Some(e);
            }
            // PEP 3333: close() is called whatever happened, even on client disconnect. Lists
            // and tuples have none; asking them anyway would raise and swallow an
            // AttributeError on every request.
            let plain =
                result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
            let close = if plain {
                None
            } else {
                result
                    .getattr_opt(pyo3::intern!(py, "close"))
                    .ok()
                    .flatten()
            };
            if let Some(close) = close {
                if let Err(e) = close.call0() {
                    crate::error!(
                        "Error closing the response iterable:\n{}",
                        format_traceback(py, &e).trim_end()
                    );
                }
            }
        }
    }
    let mut w = match sr.get().lock() {
        Ok(w) => w,
        Err(_) => return Finished::failed(),
    };
    if let Some(err) = failure {
        if w.broken {
            // The client went away; the app's error is a consequence, not news.
            crate::debug!("Client went away during the response: {err}");
        } else if w.headers_sent {
            crate::error!(
                "Error handling request after the response started; closing the connection:\n{}",
                format_traceback(py, &err).trim_end()
            );
            w.broken = true;
            w.keep_alive = false;
        } else {
            let body_error = input
                .get()
                .reader
                .lock()
                .ok()
                .and_then(|r| r.as_ref().and_then(|r| r.error.clone()));
            let (code, reason, body): (u16, &str, String) = match body_error {
                Some(BodyError::Http(Error::BodyTooLarge)) => (
                    413,
                    "Content Too Large",
                    "Content Too Large: request body too large\n".into(),
                ),
                Some(BodyError::Http(Error::Timeout)) => (
                    408,
                    "Request Timeout",
                    "Request Timeout: timed out reading the request body\n".into(),
                ),
                Some(BodyError::Http(e)) => (400, "Bad Request", format!("Bad Request: {e}\n")),
                _ => {
                    crate::error!(
                        "Error handling request:\n{}",
                        format_traceback(py, &err).trim_end()
                    );
                    (
                        500,
                        "Internal Server Error",
                        "Internal Server Error\n".into(),
                    )
                }
            };
            let response = simple_response(code, reason, body.as_bytes(), true);
            let fd = w.fd();
            let timeout = app.io_timeout_ms;
            let _ = py.detach(|| {
                crate::worker::waiting_on_client(|| write_all_blocking(fd, &response, timeout))
            });
            w.status = code;
            w.body_sent = body.len() as u64;
            w.keep_alive = false;
            w.broken = true;
        }
    } else if !w.finish(py) {
        w.keep_alive = false;
    }
    Finished {
        keep_alive: w.keep_alive,
        broken: w.broken,
        status: w.status,
        body_sent: w.body_sent,
        headers: std::mem::take(&mut w.headers),
    }
}

/// Iterates the app's result and sends it.
fn send_result(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // A file wrapper around a real file: sendfile, no copies through Python.
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if try_sendfile(py, sr, wrapper.get())? {
            return Ok(());
        }
    }
    // A list or tuple of bytes: the total length is known before the head goes out.
    let known: Option<u64> = if let Ok(list) = result.cast::<PyList>() {
        total_len(list.iter())
    } else if let Ok(tuple) = result.cast::<PyTuple>() {
        total_len(tuple.iter())
    } else {
        None
    };
    // Several items whose length is known: one writev for all of them (no app code runs in
    // between, so nothing is delayed in the sense of PEP 3333).
    if known.is_some() && result.len().is_ok_and(|n| n > 1) {
        let items: Vec<Bound<'_, PyBytes>> = result
            .try_iter()?
            .filter_map(|i| i.ok().and_then(|i| i.cast_into::<PyBytes>().ok()))
            .collect();
        let parts: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
        let mut w = sr.get().lock()?;
        if !w.started {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the app returned a body before calling start_response()",
            ));
        }
        let _ = w.send_parts(py, &parts, known);
        return Ok(());
    }
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "response body items must be bytes, not {}",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let data = bytes.as_bytes();
        if data.is_empty() {
            continue;
        }
        let mut w = sr.get().lock()?;
        if !w.started {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the app returned a body before calling start_response()",
            ));
        }
        if w.send(py, data, known).is_err() {
            // The client is gone: stop iterating; close() is still called by the caller.
            return Ok(());
        }
    }
    let w = sr.get().lock()?;
    if !w.started {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "the app returned without calling start_response()",
        ));
    }
    Ok(())
}

fn total_len<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>) -> Option<u64> {
    let mut total = 0u64;
    for item in items {
        total += item.cast::<PyBytes>().ok()?.as_bytes().len() as u64;
    }
    Some(total)
}

/// Sends a `wsgi.file_wrapper` result with sendfile(2) when it wraps a regular file. Returns
/// false to fall back to iteration.
fn try_sendfile(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    wrapper: &FileWrapper,
) -> PyResult<bool> {
    let file = wrapper.filelike.bind(py);
    let Ok(fileno) = file.call_method0("fileno").and_then(|n| n.extract::<i32>()) else {
        return Ok(false);
    };
    let Some(size) = crate::sys::regular_file_size(fileno) else {
        return Ok(false);
    };
    let offset: u64 = file
        .call_method0("tell")
        .and_then(|t| t.extract())
        .unwrap_or(0);
    let mut w = sr.get().lock()?;
    if !w.started {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "the app returned a body before calling start_response()",
        ));
    }
    let count = size.saturating_sub(offset);
    let count = w.content_length().map_or(count, |cl| cl.min(count));
    match w.send_file(py, fileno, offset as i64, count) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported && !w.broken && w.body_sent == 0 => {
            // HEAD or a bodiless status: the head is out and no body is due.
            Ok(true)
        }
        Err(_) => Ok(true),
    }
}

/// Answers 500 when the request could not even be set up.
fn fail_early(py: Python<'_>, fd: RawFd, app: &App, head: &Head, err: &PyErr) -> Outcome {
    crate::error!("{}", format_traceback(py, err).trim_end());
    let response = simple_response(
        500,
        "Internal Server Error",
        b"Internal Server Error\n",
        true,
    );
    let timeout = app.io_timeout_ms;
    let _ = py
        .detach(|| crate::worker::waiting_on_client(|| write_all_blocking(fd, &response, timeout)));
    Outcome {
        consumed: head.len,
        keep_alive: false,
        status: 500,
        body_bytes: 0,
        response_headers: Vec::new(),
    }
}
