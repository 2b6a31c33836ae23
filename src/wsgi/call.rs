//! One WSGI call: environ in, response out (PEP 3333 §"Specification Details").
//!
//! [`serve`] runs with the GIL held and releases it only to wait for the client's socket. It
//! builds the environ, calls the app, iterates what the app returned, sends it through the
//! [`Writer`], and always calls the result's `close()`. Then it revokes what the app was
//! handed (`start_response`'s `write`, `wsgi.input`), so nothing the app kept can reach this
//! request's socket or body afterwards.
//!
//! Failures go to the right party: an app exception before anything was sent becomes a 500 and
//! a traceback in the error log; one after the head was sent ends the connection, so the
//! client never mistakes a truncated body for a whole one. A panic in our own glue code (a bug)
//! is caught here too and treated like an app exception: the worker and its other clients go
//! on.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::environ::{self, Client, Templates, ThreadCache};
use super::hooks::Hooks;
use super::input::{Input, Spool};
use super::interpreter::format_traceback;
use super::response::{FileWrapper, StartResponse, Writer};
use crate::client::ClientIo;
use crate::http::response::simple_response;
use crate::http::Head;

/// What a worker shares with every request: the app and the environ templates.
pub struct App {
    /// The WSGI callable.
    pub app: Py<PyAny>,
    /// Environ templates and key caches.
    pub templates: Templates,
    /// The `wsgi.input` for requests without a body: always empty, shared, never revoked.
    pub empty_input: Py<Input>,
    /// Whether the access log (or a `post_request` hook) needs response headers kept.
    pub keep_response_headers: bool,
    /// The config file's hooks, when `pre_request` or `post_request` is among them.
    pub hooks: Option<Hooks>,
}

/// One request as the worker hands it over: head and body complete.
pub struct Request<'a> {
    /// The request's way to the client, for the response.
    pub io: ClientIo,
    /// Client address facts for the environ.
    pub client: Client<'a>,
    /// The connection buffer, holding the head at `[..head.len]`.
    pub buf: &'a [u8],
    /// The parsed head.
    pub head: &'a Head,
    /// The body, read in full by the worker before the call; `None` when there is none.
    pub body: Option<Spool>,
    /// False when the server wants the connection closed after this response (stopping).
    pub may_keep_alive: bool,
}

/// How the exchange ended.
pub struct Outcome {
    /// Whether the connection can carry another request.
    pub keep_alive: bool,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The response headers (lower-case names), when the access log wants them.
    pub response_headers: Vec<(String, String)>,
}

impl Outcome {
    /// A request that could not even be set up: 500 (when it could be sent), then close.
    fn failed() -> Outcome {
        Outcome {
            keep_alive: false,
            status: 500,
            body_bytes: 0,
            response_headers: Vec::new(),
        }
    }
}

/// Serves one request.
pub fn serve(py: Python<'_>, app: &App, cache: &mut ThreadCache, req: Request<'_>) -> Outcome {
    let head = req.head;
    let keep_alive = head.keep_alive && req.may_keep_alive;
    let writer = Writer::new(req.io, head.minor, head.is_head(req.buf), keep_alive);

    let mut client = req.client;
    let env = match environ::build(py, &app.templates, cache, &mut client, req.buf, head) {
        Ok(env) => env,
        Err(e) => return fail_early(py, writer, &e),
    };
    let input = match req.body {
        None => Ok(app.empty_input.clone_ref(py).into_bound(py)),
        Some(spool) => Bound::new(py, Input::new(spool)),
    };
    let input = match input {
        Ok(input) => input,
        Err(e) => return fail_early(py, writer, &e),
    };
    if let Err(e) = env.set_item(pyo3::intern!(py, "wsgi.input"), &input) {
        return fail_early(py, writer, &e);
    }
    let sr = match Bound::new(py, StartResponse::new(writer, app.keep_response_headers)) {
        Ok(sr) => sr,
        Err(e) => {
            crate::error!("Cannot create start_response: {e}");
            return Outcome::failed();
        }
    };
    let hook_request = app
        .hooks
        .as_ref()
        .and_then(|h| before_request(py, h, head, req.buf, client.addr, &env));
    let failure = call_app(py, app, env.clone(), &sr);

    // The request is over for everything the app holds: take the writer back (waiting for a
    // write() in progress on another thread) and end wsgi.input.
    let writer = sr.get().revoke(py);
    if !input.is(app.empty_input.bind(py)) {
        input.get().revoke(py);
    }
    let Some(mut w) = writer else {
        return Outcome::failed();
    };
    match failure {
        Some(err) => answer_failure(py, &mut w, &err),
        None => {
            if !w.finish(py) {
                w.keep_alive = false;
            }
        }
    }
    if let (Some(hooks), Some(request)) = (&app.hooks, hook_request) {
        after_request(py, hooks, &request, &env, &w);
    }
    Outcome {
        keep_alive: w.keep_alive && !w.broken,
        status: w.status,
        body_bytes: w.body_sent,
        response_headers: std::mem::take(&mut w.headers),
    }
}

/// Runs `pre_request(worker, req)`; returns the `req` object for `post_request`.
fn before_request<'py>(
    py: Python<'py>,
    hooks: &Hooks,
    head: &Head,
    buf: &[u8],
    peer: &str,
    env: &Bound<'py, PyDict>,
) -> Option<Bound<'py, PyAny>> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let headers = head
        .headers
        .iter()
        .map(|h| {
            (
                text(h.name.of(buf)).to_ascii_uppercase(),
                text(h.value.of(buf)),
            )
        })
        .collect();
    let scheme = env
        .get_item(pyo3::intern!(py, "wsgi.url_scheme"))
        .ok()
        .flatten()
        .and_then(|s| s.extract::<String>().ok())
        .unwrap_or_else(|| "http".to_owned());
    let request = hooks
        .request(
            py,
            &text(head.method.of(buf)),
            &text(head.target.of(buf)),
            &text(head.path.of(buf)),
            &text(head.query.of(buf)),
            head.minor,
            headers,
            &scheme,
            peer,
        )
        .map_err(|e| crate::error!("Cannot build the request for a hook: {e}"))
        .ok()?;
    if let Some(worker) = &hooks.worker {
        hooks.call(py, "pre_request", (worker.bind(py), &request));
    }
    Some(request)
}

/// Runs `post_request(worker, req, environ, resp)`.
fn after_request(
    py: Python<'_>,
    hooks: &Hooks,
    request: &Bound<'_, PyAny>,
    env: &Bound<'_, PyDict>,
    w: &Writer,
) {
    let Some(worker) = &hooks.worker else {
        return;
    };
    if !hooks.has(py, "post_request") {
        return;
    }
    let status = w.status_line();
    match hooks.response(py, &status, w.headers.clone(), w.body_sent) {
        Ok(resp) => {
            hooks.call(py, "post_request", (worker.bind(py), request, env, resp));
        }
        Err(e) => crate::error!("Cannot build the response for a hook: {e}"),
    }
}

/// Calls the app, sends what it returns and calls the result's `close()`; returns the
/// exception that ended the request early, if any.
fn call_app(
    py: Python<'_>,
    app: &App,
    env: Bound<'_, PyDict>,
    sr: &Bound<'_, StartResponse>,
) -> Option<PyErr> {
    let result = guarded(|| app.app.bind(py).call1((env, sr)));
    let result = match result {
        Ok(result) => result,
        Err(e) => return Some(e),
    };
    let failure = guarded(|| send_result(py, sr, &result)).err();
    // PEP 3333: close() is called whatever happened, even on client disconnect. Lists and
    // tuples have none; asking them anyway would raise and swallow an AttributeError on every
    // request. An error in close() comes after the body was produced: it is logged, and the
    // response is still completed.
    let plain = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
    if !plain {
        let closed = guarded(|| match result.getattr_opt(pyo3::intern!(py, "close"))? {
            Some(close) => close.call0().map(drop),
            None => Ok(()),
        });
        if let Err(e) = closed {
            crate::error!(
                "Error closing the response iterable:\n{}",
                format_traceback(py, &e).trim_end()
            );
        }
    }
    failure
}

/// Runs `f`, turning a panic (a bug in minigun's glue code, or a Rust panic that crossed the
/// app as pyo3's `PanicException`) into a Python exception, so it is answered like one.
fn guarded<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(PyRuntimeError::new_err(format!(
            "internal error in minigun while serving the request: {what}"
        )))
    })
}

/// Answers an exception that ended the request: a 500 if nothing was sent yet, else closes the
/// connection so the client sees the body was cut short.
fn answer_failure(py: Python<'_>, w: &mut Writer, err: &PyErr) {
    if w.broken {
        // The client went away; the app's error is a consequence, not news.
        crate::debug!("Client went away during the response: {err}");
        return;
    }
    if w.headers_sent {
        crate::log::exception(format_args!(
            "Error handling request after the response started; closing the connection:\n{}",
            format_traceback(py, err).trim_end()
        ));
        w.broken = true;
        w.keep_alive = false;
        return;
    }
    crate::log::exception(format_args!(
        "Error handling request:\n{}",
        format_traceback(py, err).trim_end()
    ));
    let body = b"Internal Server Error\n";
    let response = simple_response(500, "Internal Server Error", body, true);
    let io = w.io();
    let _ = py.detach(|| io.send_all(&response));
    w.status = 500;
    w.body_sent = body.len() as u64;
    w.keep_alive = false;
    w.broken = true;
}

/// Answers 500 when the request could not even be set up.
fn fail_early(py: Python<'_>, mut writer: Writer, err: &PyErr) -> Outcome {
    answer_failure(py, &mut writer, err);
    Outcome::failed()
}

/// Iterates the app's result and sends it.
fn send_result(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    result: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let sr = sr.get();
    let not_started =
        || PyRuntimeError::new_err("the app returned a body before calling start_response()");
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
        return sr.with(py, |w| {
            if !w.started {
                return Err(not_started());
            }
            let _ = w.send_parts(py, &parts, known);
            Ok(())
        });
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
        let gone = sr.with(py, |w| {
            if !w.started {
                return Err(not_started());
            }
            Ok(w.send(py, data, known).is_err())
        })?;
        if gone {
            // The client is gone: stop iterating; close() is still called by the caller.
            return Ok(());
        }
    }
    sr.with(py, |w| {
        if w.started {
            Ok(())
        } else {
            Err(PyRuntimeError::new_err(
                "the app returned without calling start_response()",
            ))
        }
    })
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
fn try_sendfile(py: Python<'_>, sr: &StartResponse, wrapper: &FileWrapper) -> PyResult<bool> {
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
    sr.with(py, |w| {
        if !w.started {
            return Err(PyRuntimeError::new_err(
                "the app returned a body before calling start_response()",
            ));
        }
        // The app's Content-Length may ask for less than the rest of the file (a range it
        // seeked to). An error has marked the response broken: the file is done with.
        let count = size.saturating_sub(offset);
        let count = w.content_length().map_or(count, |cl| cl.min(count));
        Ok(w.send_file(py, fileno, offset as i64, count).is_some())
    })
}
