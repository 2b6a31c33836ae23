//! The WSGI side of steps 05 to 07 (chapter 5): load `module:app`, build the environ, call
//! the app.
//!
//! Everything that touches Python lives here, and each function takes the GIL only for the
//! Python work; reading and writing sockets (in `main.rs`) happen without it.
//!
//! Left out on purpose: `wsgi.file_wrapper` (minigun's `wsgi/` module sends files with
//! sendfile), a streaming `wsgi.input` (here a `BytesIO` over the whole body), and streaming
//! the result (here collected into one buffer).

use crate::http::Request;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

/// The loaded WSGI callable.
pub struct App {
    /// `module.attribute`; `Py<..>` may cross threads, and each call binds it to the GIL.
    callable: Py<PyAny>,
}

// ANCHOR: response
/// What the app answered: the status and headers from `start_response`, the collected body.
pub struct Response {
    /// e.g. `200 OK`.
    pub status: String,
    /// Names and values as the app gave them (already checked for CR, LF and non-latin-1).
    pub headers: Vec<(String, String)>,
    /// Everything `write()` was given, then every item of the result iterable.
    pub body: Vec<u8>,
}
// ANCHOR_END: response

impl Response {
    // ANCHOR: encode-response
    /// The bytes to send: the app's status and headers, then its body, framed by us.
    /// Content-Length is the length of the buffered body, and `Connection` is the server's
    /// decision, not the app's. For HEAD the app's own headers go out unchanged (its
    /// Content-Length included) with no body.
    pub fn encode(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {}\r\n", self.status).into_bytes();
        for (name, value) in &self.headers {
            let framing = name.eq_ignore_ascii_case("content-length") && !head_only;
            if framing || name.eq_ignore_ascii_case("connection") {
                continue;
            }
            // PEP 3333: header names and values are latin-1 strings, one byte per character.
            out.extend(name.chars().chain(": ".chars()).map(|c| c as u8));
            out.extend(value.chars().chain("\r\n".chars()).map(|c| c as u8));
        }
        if !head_only {
            out.extend(format!("Content-Length: {}\r\n", self.body.len()).bytes());
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        out.extend(format!("Connection: {connection}\r\n\r\n").bytes());
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
    // ANCHOR_END: encode-response

    /// The answer when the app fails: its traceback went to stderr, the client gets no detail.
    fn internal_error() -> Response {
        let headers = vec![("Content-Type".to_string(), "text/plain".to_string())];
        let body = b"500 Internal Server Error\n".to_vec();
        Response {
            status: "500 Internal Server Error".to_string(),
            headers,
            body,
        }
    }
}

impl App {
    // ANCHOR: load-app
    /// Starts the interpreter and imports `module:attribute` from the current directory (or
    /// from the venv in `$VIRTUAL_ENV`). An import error comes back with its traceback printed.
    pub fn load(spec: &str) -> Result<App, String> {
        let python = match std::env::var("VIRTUAL_ENV") {
            Ok(venv) => format!("{venv}/bin/python"),
            Err(_) => env!("STEP_PYTHON").to_string(),
        };
        crate::sys::init_python(&python)?;
        let (module, attribute) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?} is not MODULE:APP"))?;
        Python::attach(|py| {
            let import = || -> PyResult<Py<PyAny>> {
                let cwd = std::env::current_dir()?.to_string_lossy().into_owned();
                let path = py.import("sys")?.getattr("path")?;
                path.call_method1("insert", (0, cwd))?;
                let app = py.import(module)?.getattr(attribute)?;
                if !app.is_callable() {
                    return Err(PyTypeError::new_err(format!("{spec} is not callable")));
                }
                Ok(app.unbind())
            };
            import().map(|callable| App { callable }).map_err(|e| {
                e.print(py);
                format!("cannot load {spec}")
            })
        })
    }
    // ANCHOR_END: load-app

    // ANCHOR: call-app
    /// Runs one request through the app. Any Python exception becomes a 500, with its
    /// traceback on stderr.
    pub fn call(&self, request: &Request, peer: SocketAddr, local: SocketAddr) -> Response {
        Python::attach(|py| {
            let run = || -> PyResult<Response> {
                let environ = environ(py, request, peer, local)?;
                let start_response = Bound::new(py, StartResponse::default())?;
                let result = self.callable.bind(py).call1((environ, &start_response))?;
                let mut body = Vec::new();
                let iterated = collect(&result, &mut body);
                // PEP 3333: close() must be called if present, even when iteration failed.
                if result.hasattr("close")? {
                    result.call_method0("close")?;
                }
                iterated?;
                let started = start_response.get().take();
                let (status, headers, mut written) = started.ok_or_else(|| {
                    PyRuntimeError::new_err("the app returned without calling start_response")
                })?;
                written.append(&mut body);
                Ok(Response {
                    status,
                    headers,
                    body: written,
                })
            };
            run().unwrap_or_else(|e| {
                e.print(py);
                Response::internal_error()
            })
        })
    }
    // ANCHOR_END: call-app

    /// Flushes Python's `sys.stdout` and `sys.stderr`. A forked child calls this before it
    /// exits, or whatever the app printed could be lost in their buffers.
    pub fn flush_output(&self) {
        Python::attach(|py| {
            for name in ["stdout", "stderr"] {
                if let Ok(stream) = py.import("sys").and_then(|sys| sys.getattr(name)) {
                    let _ = stream.call_method0("flush");
                }
            }
        });
    }
}

// ANCHOR: collect
/// Appends every item of the app's result to `body`; items must be `bytes`.
fn collect(result: &Bound<'_, PyAny>, body: &mut Vec<u8>) -> PyResult<()> {
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err("WSGI body items must be bytes, not str or other objects")
        })?;
        body.extend_from_slice(bytes.as_bytes());
    }
    Ok(())
}
// ANCHOR_END: collect

// ANCHOR: environ
/// Builds the PEP 3333 environ. Strings taken from the request are decoded as latin-1, so
/// every byte survives as one character.
fn environ<'py>(
    py: Python<'py>,
    request: &Request,
    peer: SocketAddr,
    local: SocketAddr,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    env.set_item("REQUEST_METHOD", &request.method)?;
    env.set_item("SCRIPT_NAME", "")?;
    env.set_item("PATH_INFO", latin1(&percent_decode(path.as_bytes())))?;
    env.set_item("QUERY_STRING", query)?;
    env.set_item(
        "SERVER_PROTOCOL",
        format!("HTTP/1.{}", request.minor_version),
    )?;
    env.set_item("SERVER_NAME", local.ip().to_string())?;
    env.set_item("SERVER_PORT", local.port().to_string())?;
    env.set_item("REMOTE_ADDR", peer.ip().to_string())?;
    env.set_item("REMOTE_PORT", peer.port().to_string())?;
    // The parser gives names in lowercase and values already decoded as latin-1.
    for (name, value) in &request.headers {
        let key = match name.to_ascii_uppercase().replace('-', "_") {
            // Without this, `X_Forwarded_For` could pose as `X-Forwarded-For`.
            _ if name.contains('_') => continue,
            key if key == "CONTENT_TYPE" || key == "CONTENT_LENGTH" => key,
            key => format!("HTTP_{key}"),
        };
        // A repeated header becomes one value, joined with commas (RFC 9110 §5.3).
        let joined = match env.get_item(&key)? {
            Some(old) => format!("{},{value}", old.extract::<String>()?),
            None => value.clone(),
        };
        env.set_item(key, joined)?;
    }
    let io = py.import("io")?;
    env.set_item(
        "wsgi.input",
        io.call_method1("BytesIO", (PyBytes::new(py, &request.body),))?,
    )?;
    env.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
    env.set_item("wsgi.version", (1, 0))?;
    env.set_item("wsgi.url_scheme", "http")?;
    env.set_item("wsgi.multithread", false)?;
    env.set_item("wsgi.multiprocess", true)?;
    env.set_item("wsgi.run_once", false)?;
    Ok(env)
}
// ANCHOR_END: environ

/// Each byte as the character with that code (latin-1), as PEP 3333 asks of native strings.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

// ANCHOR: percent-decode
/// Turns `%2F`-style escapes into bytes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = input
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) if input[i] == b'%' => {
                out.push(byte);
                i += 3;
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}
// ANCHOR_END: percent-decode

// ANCHOR: started
/// Status, headers and bytes passed to `write()`, once the app has called start_response.
type Started = (String, Vec<(String, String)>, Vec<u8>);
// ANCHOR_END: started

// ANCHOR: start-response
/// The `start_response` callable handed to the app. pyo3 needs a `#[pyclass]` to be `Sync`,
/// and the app may call it from any thread, so the state sits behind a `Mutex`.
#[pyclass(frozen)]
#[derive(Default)]
struct StartResponse {
    /// `None` until the app calls us.
    started: Mutex<Option<Started>>,
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, headers, exc_info=None)`; returns the legacy `write` callable.
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: String,
        headers: Vec<(String, String)>,
        exc_info: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let code = status.split(' ').next().unwrap_or("");
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || !clean(&status) {
            return Err(PyValueError::new_err(format!("bad status {status:?}")));
        }
        if let Some((name, value)) = headers.iter().find(|(n, v)| !clean(n) || !clean(v)) {
            return Err(PyValueError::new_err(format!(
                "bad header {name:?}: {value:?}"
            )));
        }
        let mut started = slf
            .get()
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // PEP 3333: a second call is allowed only with exc_info, to swap in an error page.
        // Nothing has been sent yet (we buffer), so the new status simply wins.
        if started.is_some() && exc_info.is_none_or(|e| e.is_none()) {
            return Err(PyRuntimeError::new_err("start_response called twice"));
        }
        let written = started.take().map(|(_, _, w)| w).unwrap_or_default();
        *started = Some((status, headers, written));
        slf.getattr("write")
    }

    /// PEP 3333's `write(data)`: bytes that go out before the result iterable's items.
    fn write(&self, data: &[u8]) -> PyResult<()> {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, _, written) = started
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("write() before start_response"))?;
        written.extend_from_slice(data);
        Ok(())
    }
}
// ANCHOR_END: start-response

impl StartResponse {
    /// Takes what the app gave us, leaving `None`.
    fn take(&self) -> Option<Started> {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

// ANCHOR: clean
/// A status or header text we can send: latin-1 only, no control characters (so no CR or LF
/// smuggling a second header into the response).
fn clean(text: &str) -> bool {
    text.chars()
        .all(|c| (' '..='\u{ff}').contains(&c) && c != '\u{7f}')
}
// ANCHOR_END: clean
