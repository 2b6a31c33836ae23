//! The only `unsafe` code of step 05: starting CPython by hand (chapter 5).
//!
//! pyo3 could start the interpreter for us, but then we could not tell CPython which `python`
//! it stands in for. That choice decides `sys.prefix`, and so which site-packages (and which
//! Flask) the app can import. Everything here goes through `pyo3::ffi`, the raw C API.
//!
//! Left out: nothing about fork yet; step 06 adds `fork` and `waitpid` to this file.

use pyo3::ffi;
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

// ANCHOR: init-python
/// Starts CPython as if `executable` had been run, then releases the GIL.
///
/// With `$VIRTUAL_ENV/bin/python` as the executable, CPython's start-up finds the venv's
/// `pyvenv.cfg` beside it and puts the venv's site-packages on `sys.path`, exactly as for a
/// gunicorn installed in that venv. Call once, from the main thread, before any
/// `Python::attach`.
pub fn init_python(executable: &str) -> Result<(), String> {
    let exe = CString::new(executable).map_err(|_| format!("bad python path {executable:?}"))?;
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    let config = config.as_mut_ptr();
    // SAFETY: `config` points to writable memory the size of a PyConfig; InitPythonConfig
    // fills every field before anything reads one.
    unsafe { ffi::PyConfig_InitPythonConfig(config) };
    // SAFETY: the struct was initialised just above; we write a plain int field. Our own
    // signal handlers (steps 06 and 07) must not be replaced by Python's.
    unsafe { (*config).install_signal_handlers = 0 };
    let mut status = ffi::PyStatus {
        _type: ffi::_PyStatus_TYPE::_PyStatus_TYPE_OK,
        func: std::ptr::null(),
        err_msg: std::ptr::null(),
        exitcode: 0,
    };
    if !executable.is_empty() {
        // SAFETY: both pointers point into the initialised `config`; `exe` is NUL-terminated
        // and CPython copies it, so it only has to live for the call.
        status = unsafe {
            ffi::PyConfig_SetBytesString(config, &raw mut (*config).executable, exe.as_ptr())
        };
    }
    // SAFETY: PyStatus_Exception only inspects the struct passed by value.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        // SAFETY: `config` is initialised; Py_InitializeFromConfig only reads it.
        status = unsafe { ffi::Py_InitializeFromConfig(config) };
    }
    // SAFETY: `config` is initialised and not used again; Clear frees the strings it owns.
    unsafe { ffi::PyConfig_Clear(config) };
    // SAFETY: PyStatus_Exception only inspects the struct passed by value.
    if unsafe { ffi::PyStatus_Exception(status) } != 0 {
        return Err(status_message(&status));
    }
    // SAFETY: the interpreter is initialised and this thread holds the GIL (start-up leaves
    // it held); we give it up so that any thread, this one included, can `Python::attach`.
    unsafe { ffi::PyEval_SaveThread() };
    Ok(())
}
// ANCHOR_END: init-python

/// Turns a failed `PyStatus` into text for the error message.
fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "Python failed to start".to_string();
    }
    // SAFETY: a non-null `err_msg` is a static NUL-terminated C string set by CPython.
    let msg = unsafe { CStr::from_ptr(status.err_msg) };
    format!("Python failed to start: {}", msg.to_string_lossy())
}
