//! WSGI (PEP 3333) on top of pyo3: the interpreter, the environ, the input stream, the response.
//!
//! | module | PEP 3333 part |
//! |---|---|
//! | [`interpreter`] | starting CPython (the right one, venv-aware) and importing `module:app` |
//! | [`environ`] | "environ Variables" |
//! | [`input`] | "Input and Error Streams": `wsgi.input` |
//! | [`response`] | "The start_response() Callable", "The write() Callable", `wsgi.file_wrapper`, `wsgi.errors` |
//! | [`call`] | calling the app, iterating its result, `close()`, errors |

pub mod call;
pub mod environ;
pub mod input;
pub mod interpreter;
pub mod response;

use pyo3::prelude::*;

use crate::config::Settings;
use crate::net::ListenAddr;

/// Imports the app and prepares everything a worker shares between requests. On failure the
/// message (with the traceback when there is one) is returned for the caller to log.
pub fn load(
    py: Python<'_>,
    settings: &Settings,
    listeners: &[ListenAddr],
) -> Result<call::App, String> {
    interpreter::prepare(py, settings).map_err(|e| interpreter::format_traceback(py, &e))?;
    let spec = settings.app.as_deref().unwrap_or_default();
    let app = interpreter::load_app(py, spec)?;
    prepare_app(py, app, settings, listeners).map_err(|e| interpreter::format_traceback(py, &e))
}

/// Builds the per-worker shared state around an already imported app (used directly after a
/// `--preload` fork).
pub fn prepare_app(
    py: Python<'_>,
    app: Py<PyAny>,
    settings: &Settings,
    listeners: &[ListenAddr],
) -> PyResult<call::App> {
    let file_wrapper = py.get_type::<response::FileWrapper>();
    let templates = environ::Templates::new(py, listeners, settings, file_wrapper.as_any())?;
    let empty_input = Py::new(py, input::Input::new(None))?;
    let timeout_s = if settings.timeout == 0 {
        30
    } else {
        settings.timeout
    };
    Ok(call::App {
        app,
        templates,
        empty_input,
        io_timeout_ms: (timeout_s.min(86_400) * 1000) as i32,
        body_limit: settings.limit_request_body,
        keep_response_headers: settings.access_log_format.contains("}o)s"),
    })
}
