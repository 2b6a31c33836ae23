//! Starting CPython and loading the app.
//!
//! Which interpreter: the one minigun was compiled against. `build.rs` puts an rpath to its
//! libpython into the binary (so a second Python on the machine cannot be loaded by accident)
//! and bakes in its executable's path. At start we hand CPython a `PyConfig` whose
//! `executable` is `$VIRTUAL_ENV/bin/python` when a virtualenv is active, else that baked path.
//! CPython's own path calculation then does exactly what it does for a `python` started from
//! there: it finds `pyvenv.cfg`, sets `sys.prefix` to the venv and puts its site-packages on
//! `sys.path` — so the app sees the same packages a gunicorn installed in the venv would.
//!
//! When: in each worker after `fork`, so no two processes share interpreter state, unless
//! `--preload` asks for the app to be loaded once in the arbiter first.
//!
//! This module and `sys` are where the crate's `unsafe` lives: starting CPython has no safe
//! pyo3 API that lets us set `executable` and keep Python's hands off our signal handlers.

use std::ffi::CString;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::config::Settings;

/// Decodes bytes as latin-1 into a Python `str`: every byte maps to the code point of the same
/// value, so nothing is lost or rejected (PEP 3333's "native strings").
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: the pointer and length describe `bytes`, which outlives the call (a slice is never
    // longer than isize::MAX bytes, so the length fits Py_ssize_t). Latin-1 decoding cannot fail
    // for any input; the one failure left, memory exhaustion, returns NULL, which
    // `from_owned_ptr` turns into a panic rather than a dangling object.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// Exit status of a worker whose boot failed (gunicorn's `WORKER_BOOT_ERROR`).
pub const WORKER_BOOT_ERROR: i32 = 3;
/// Exit status of a worker that could not import the app (gunicorn's `APP_LOAD_ERROR`).
pub const APP_LOAD_ERROR: i32 = 4;

/// Starts CPython in this process and releases the GIL, so any thread can then take it with
/// `Python::attach`. Call once per process.
pub fn start(settings: &Settings) -> Result<(), String> {
    let executable = crate::config::python_executable();
    let exe = CString::new(executable.to_string_lossy().as_bytes())
        .map_err(|_| "interpreter path contains NUL".to_owned())?;
    let argv: Vec<CString> = std::iter::once("minigun".to_owned())
        .chain(settings.app.iter().cloned())
        .filter_map(|a| CString::new(a).ok())
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: PyConfig is a plain C struct; PyConfig_InitPythonConfig fully initialises the
    // zeroed value before any field is read. Every pointer handed over (`exe`, `argv`) stays
    // alive until PyConfig_Clear, and CPython copies the strings it keeps.
    unsafe {
        let mut config: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut config);
        // Signals belong to the worker loop (see `worker`), not to Python's default handlers.
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let status =
            ffi::PyConfig_SetBytesString(&mut config, &mut config.executable, exe.as_ptr());
        check_status(status, &mut config)?;
        let status = ffi::PyConfig_SetBytesArgv(
            &mut config,
            argv_ptrs.len() as ffi::Py_ssize_t,
            argv_ptrs.as_mut_ptr(),
        );
        check_status(status, &mut config)?;
        let status = ffi::Py_InitializeFromConfig(&config);
        check_status(status, &mut config)?;
        ffi::PyConfig_Clear(&mut config);
        // Py_InitializeFromConfig leaves the GIL held by this thread; hand it back.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// Turns a failed PyStatus into our error, freeing the config.
///
/// # Safety
/// `config` must be a PyConfig initialised by `PyConfig_InitPythonConfig`.
unsafe fn check_status(status: ffi::PyStatus, config: &mut ffi::PyConfig) -> Result<(), String> {
    // SAFETY: PyStatus_Exception only reads the status value.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let msg = if status.err_msg.is_null() {
        "unknown error".to_owned()
    } else {
        // SAFETY: a non-null err_msg is a static NUL-terminated C string set by CPython.
        unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: the caller guarantees `config` is initialised; clearing it frees its strings.
    unsafe { ffi::PyConfig_Clear(config) };
    Err(format!("cannot start Python: {msg}"))
}

/// Called by the arbiter, holding the GIL, just before it forks a worker under `--preload`:
/// takes CPython's internal locks so the child does not inherit them half-held.
pub fn before_fork() {
    // SAFETY: called with the GIL held by the only thread of the arbiter, right before fork(),
    // as the C API requires.
    unsafe { ffi::PyOS_BeforeFork() };
}

/// The parent's half of [`before_fork`], right after fork returned in the arbiter.
pub fn after_fork_parent() {
    // SAFETY: called by the thread that called `before_fork`, still holding the GIL.
    unsafe { ffi::PyOS_AfterFork_Parent() };
}

/// Must be called in a child after `fork` when the parent had started CPython (`--preload`):
/// resets the GIL and thread state for the one thread that survived.
pub fn after_fork_child() {
    // SAFETY: called right after fork in the child, by the thread that forked, as the C API
    // requires; the parent held the GIL across the fork (see `arbiter::spawn_worker`).
    unsafe { ffi::PyOS_AfterFork_Child() };
}

/// Prepares the process for the app: `-e` variables, `--chdir`, and `sys.path` (the working
/// directory first, then `--pythonpath`, as gunicorn does).
pub fn prepare(py: Python<'_>, settings: &Settings) -> PyResult<()> {
    let os = py.import("os")?;
    let environ = os.getattr("environ")?;
    for (k, v) in &settings.raw_env {
        environ.set_item(k, v)?;
    }
    // `--chdir` was applied by the arbiter before forking: the process's directory is right.
    let cwd: String = os.call_method0("getcwd")?.extract()?;
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    for dir in settings.pythonpath.iter().rev() {
        path.insert(0, dir)?;
    }
    if !path.contains(&cwd)? {
        path.insert(0, &cwd)?;
    }
    Ok(())
}

/// Imports `module:expr` and returns the WSGI callable.
///
/// `expr` may be a name (`app`), an attribute path (`api.app`), or a call of a factory with
/// literal arguments (`create_app()`, `create_app("prod", debug=False)`); it defaults to
/// `application`. Errors carry gunicorn's wording and the traceback when the import raised.
pub fn load_app(py: Python<'_>, spec: &str) -> Result<Py<PyAny>, String> {
    let globals = PyDict::new(py);
    let run = || -> PyResult<Py<PyAny>> {
        py.run(LOADER, Some(&globals), None)?;
        let load = globals
            .get_item("load")?
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("loader missing"))?;
        Ok(load.call1((spec,))?.unbind())
    };
    run().map_err(|err| {
        let is_app_error = err
            .get_type(py)
            .name()
            .map(|n| n == "AppImportError")
            .unwrap_or(false);
        if is_app_error {
            err.value(py).to_string()
        } else {
            let tb = format_traceback(py, &err);
            format!("{tb}Failed to load the app {spec:?}: {}", err.value(py))
        }
    })
}

/// Formats a Python exception with its traceback, as `traceback.format_exception` does.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| {
            let lines: Vec<String> = lines.extract()?;
            Ok(lines.concat())
        });
    formatted.unwrap_or_else(|_| format!("{err}\n"))
}

/// The `module:expr` loader, in Python because it is mostly Python's own machinery: importlib
/// and `ast` for the factory-call syntax. Literal arguments only: nothing from the command
/// line is evaluated as code.
const LOADER: &std::ffi::CStr = cr#"
import ast, importlib, sys

class AppImportError(Exception):
    pass

def _resolve(module, node, spec):
    if isinstance(node, ast.Name):
        try:
            return getattr(module, node.id)
        except AttributeError:
            raise AppImportError("Failed to find attribute %r in %r." % (node.id, module.__name__))
    if isinstance(node, ast.Attribute):
        base = _resolve(module, node.value, spec)
        try:
            return getattr(base, node.attr)
        except AttributeError:
            raise AppImportError("Failed to find attribute %r in %r." % (node.attr, spec))
    if isinstance(node, ast.Call):
        func = _resolve(module, node.func, spec)
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise AppImportError("Failed to parse arguments as literal values: %r." % spec)
        app = func(*args, **kwargs)
        if app is None:
            raise AppImportError("The factory %r returned None." % spec)
        return app
    raise AppImportError("Failed to parse %r as an attribute name or function call." % spec)

def load(spec):
    module_name, _, expr = spec.partition(":")
    expr = expr.strip() or "application"
    if not module_name:
        raise AppImportError("No module name in %r (expected MODULE:APP)." % spec)
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppImportError("Failed to parse %r as an attribute name or function call." % expr)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name or (e.name and module_name.startswith(e.name + ".")):
            raise AppImportError("No module named %r (looked in %s)." % (module_name, sys.path[0]))
        raise
    app = _resolve(module, node, spec)
    if not callable(app):
        raise AppImportError("Application object must be callable: %r." % spec)
    return app
"#;
