//! WSGI (PEP 3333) on top of pyo3: the interpreter, the environ, the input stream, the response.
//!
//! | module | PEP 3333 part |
//! |---|---|
//! | [`interpreter`] | starting CPython (the right one, venv-aware) and importing `module:app` |
//! | [`environ`] | "environ Variables" |
//! | [`input`] | "Input and Error Streams": `wsgi.input`, over a body the worker has read |
//! | [`response`] | "The start_response() Callable", "The write() Callable", `wsgi.file_wrapper`, `wsgi.errors` |
//! | [`call`] | calling the app, iterating its result, `close()`, errors |
//! | [`hooks`] | (gunicorn, not PEP 3333) the config file's server hooks and the objects they get |

pub mod call;
pub mod environ;
pub mod hooks;
pub mod input;
pub mod interpreter;
pub mod response;

use std::sync::MutexGuard;

use pyo3::prelude::*;

use crate::client::Lease;
use crate::config::Settings;
use crate::net::ListenAddr;

/// Locks `lease` for a call from Python. When another thread holds it, that thread may be
/// waiting for the GIL we hold (it released it to wait on a socket and must take it back to
/// finish), so the wait happens with the GIL released; then the lock is tried again with it.
pub fn lock_lease<'a, T: Send>(py: Python<'_>, lease: &'a Lease<T>) -> MutexGuard<'a, Option<T>> {
    loop {
        if let Some(guard) = lease.try_lock() {
            return guard;
        }
        py.detach(|| drop(lease.lock()));
    }
}

/// Imports the app (the interpreter is started and `interpreter::prepare` has run). On
/// failure the message, with the traceback when there is one, is returned for the caller to
/// log.
pub fn import_app(py: Python<'_>, settings: &Settings) -> Result<Py<PyAny>, String> {
    interpreter::load_app(py, settings.app.as_deref().unwrap_or_default())
}

/// Builds the per-worker shared state around an imported app. `hooks` are kept when they
/// include `pre_request` or `post_request`, which run around every request.
pub fn prepare_app(
    py: Python<'_>,
    app: Py<PyAny>,
    settings: &Settings,
    listeners: &[ListenAddr],
    hooks: &hooks::Hooks,
) -> PyResult<call::App> {
    let file_wrapper = py.get_type::<response::FileWrapper>();
    let templates = environ::Templates::new(py, listeners, settings, file_wrapper.as_any())?;
    let empty_input = Py::new(py, input::Input::new(input::Spool::default()))?;
    let request_hooks = (hooks.has(py, "pre_request") || hooks.has(py, "post_request"))
        .then(|| hooks.clone_ref(py));
    Ok(call::App {
        app,
        templates,
        empty_input,
        keep_response_headers: settings.access_log_format.contains("}o)s")
            || request_hooks.is_some(),
        hooks: request_hooks,
    })
}
