//! Server hooks: the functions a config file may define (`post_fork`, `when_ready`,
//! `pre_request`, …), called with gunicorn's arguments at gunicorn's moments.
//!
//! The config file is run as gunicorn runs it, in the process that serves: in the master when
//! the master has an interpreter (`--preload`, or a hook that runs there, see
//! `config::MASTER_HOOKS`), whose workers inherit its effects through fork; otherwise in each
//! worker, right after the interpreter starts and before the app is imported. Either way its
//! effects on the process (`os.environ`, `sys.path`, modules it imports) hold where the app
//! runs, and its functions are the hooks.
//!
//! The objects handed to hooks carry the attributes real hooks use: `server.log`, `server.pid`,
//! `server.cfg`, `worker.pid`, `worker.age`, `worker.log`, `req.method`, `req.path`,
//! `req.headers`, `resp.status`, `resp.status_code`. `log` writes into minigun's error log at
//! the named level (`info`, `warning`, `error`, `exception` with the traceback, …). A hook that
//! raises is logged with its traceback and the server goes on, except where gunicorn stops
//! too: `on_starting` (the master does not start) and `post_fork`/`post_worker_init` (the
//! worker counts as failed to boot).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::BoundObject;

use super::interpreter::format_traceback;
use crate::config::Settings;
use crate::log::Level;

/// Whether a hook called `sys.exit`, and the status it asked for.
static EXIT_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static EXIT_STATUS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit status a hook asked for with `sys.exit()`, if one did: Python's rules, so
/// `sys.exit()` is 0, `sys.exit(n)` is n (the shell sees n modulo 256), anything else is 1.
pub fn exit_requested() -> Option<i32> {
    use std::sync::atomic::Ordering;
    EXIT_REQUESTED
        .load(Ordering::Acquire)
        .then(|| EXIT_STATUS.load(Ordering::Relaxed))
}

/// Puts back what [`exit_requested`] said before a hook whose failure the caller handles
/// itself (`pre_exec`): its own `sys.exit` is forgotten.
pub fn restore_exit_request(before: Option<i32>) {
    use std::sync::atomic::Ordering;
    EXIT_STATUS.store(before.unwrap_or(0), Ordering::Relaxed);
    EXIT_REQUESTED.store(before.is_some(), Ordering::Release);
}

/// Writes one line from a hook's `log` into the error log.
#[pyfunction]
fn log_line(level: u8, text: &str) {
    let level = match level {
        0 => Level::Debug,
        1 => Level::Info,
        2 => Level::Warning,
        3 => Level::Error,
        _ => Level::Critical,
    };
    crate::log::log(level, format_args!("{}", text.trim_end()));
}

/// The Python side: the objects hooks receive.
const SUPPORT: &std::ffi::CStr = cr#"
import inspect, traceback

def takes(fn, n):
    """Whether fn can be called with n positional arguments."""
    try:
        inspect.signature(fn).bind(*range(n))
        return True
    except TypeError:
        return False
    except ValueError:
        return True

def adapt_post_request(fn):
    """post_request may take (worker, req), (worker, req, environ) or all four, as in gunicorn."""
    if takes(fn, 4):
        return fn
    if takes(fn, 3):
        return lambda worker, req, environ, resp: fn(worker, req, environ)
    return lambda worker, req, environ, resp: fn(worker, req)

class Log:
    """What `server.log` and `worker.log` are: gunicorn's logger methods, into minigun's log."""
    def __init__(self, write):
        self._write = write
    def _emit(self, level, msg, args):
        # As the logging module: one mapping argument fills %(name)s fields.
        if len(args) == 1 and isinstance(args[0], dict) and args[0]:
            args = args[0]
        try:
            text = msg % args if args else str(msg)
        except Exception:
            text = "%s %r" % (msg, args)
        # Never let a stray surrogate or odd byte make logging raise.
        text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
        self._write(level, text)
    def debug(self, msg, *args, **kw): self._emit(0, msg, args)
    def info(self, msg, *args, **kw): self._emit(1, msg, args)
    def warning(self, msg, *args, **kw): self._emit(2, msg, args)
    warn = warning
    def error(self, msg, *args, **kw): self._emit(3, msg, args)
    def critical(self, msg, *args, **kw): self._emit(4, msg, args)
    def exception(self, msg, *args, **kw):
        self._emit(3, msg, args)
        self._write(3, traceback.format_exc().rstrip())
    def log(self, lvl, msg, *args, **kw):
        self._emit({10: 0, 20: 1, 30: 2, 40: 3, 50: 4}.get(lvl, 1), msg, args)

class Config:
    """`cfg`: the settings by their config-file names."""
    def __init__(self, settings):
        self.__dict__.update(settings)
    def __repr__(self):
        return "Config(%r)" % self.__dict__

class Server:
    """The master, as hooks see it (gunicorn's Arbiter)."""
    def __init__(self, pid, log, cfg, num_workers):
        self.pid = pid
        self.log = log
        self.cfg = cfg
        self.num_workers = num_workers
        self.LISTENERS = []
        self.WORKERS = {}

class Worker:
    """A worker, as hooks see it."""
    def __init__(self, pid, ppid, age, log, cfg):
        self.pid = pid
        self.ppid = ppid
        self.age = age
        self.log = log
        self.cfg = cfg
        self.alive = True
        self.booted = False
        self.nr = 0
    def __repr__(self):
        return "<Worker %s>" % self.pid

class Request:
    """A request, as pre_request and post_request see it (gunicorn's http.Request)."""
    def __init__(self, method, uri, path, query, version, headers, scheme, peer):
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.fragment = ""
        self.version = version
        self.headers = headers
        self.scheme = scheme
        self.peer_addr = peer
        self.remote_addr = peer

class Response:
    """A response, as post_request sees it (gunicorn's http.wsgi.Response)."""
    def __init__(self, status, headers, sent):
        self.status = status
        try:
            self.status_code = int(status.split(None, 1)[0])
        except (ValueError, IndexError):
            self.status_code = 500
        self.headers = headers
        self.sent = sent
        self.response_length = sent
"#;

/// A config file's hooks, loaded into this process's interpreter.
pub struct Hooks {
    /// The names of the hooks the config file defines.
    defined: Vec<&'static str>,
    /// The hook functions by name.
    fns: Py<PyDict>,
    /// The support module's classes.
    support: Py<PyDict>,
    /// The `server` object.
    pub server: Py<PyAny>,
    /// This process's `worker` object, once it is a worker.
    pub worker: Option<Py<PyAny>>,
}

impl Hooks {
    /// Runs the config file (if any) in this interpreter and collects its hooks. An exception
    /// in the file is returned with its traceback.
    /// `master_pid` is what hooks see as `server.pid`: gunicorn's `server` is the arbiter,
    /// wherever the hook runs.
    pub fn load(py: Python<'_>, settings: &Settings, master_pid: i32) -> Result<Hooks, String> {
        let run = || -> PyResult<Hooks> {
            let support = PyDict::new(py);
            py.run(SUPPORT, Some(&support), None)?;
            let fns = PyDict::new(py);
            if let Some(path) = &settings.config {
                let ns = py.import("runpy")?.call_method1(
                    "run_path",
                    (path.to_string_lossy(), PyDict::new(py), "__config__"),
                )?;
                for (name, _) in crate::config::HOOKS {
                    if let Some(f) = ns.get_item(*name).ok().filter(|f| f.is_callable()) {
                        let f = if *name == "post_request" {
                            support
                                .get_item("adapt_post_request")?
                                .ok_or_else(missing)?
                                .call1((f,))?
                        } else {
                            f
                        };
                        fns.set_item(*name, f)?;
                    }
                }
            }
            let log = Self::make_log(py, &support)?;
            let cfg = Self::make_cfg(py, &support, settings)?;
            let server = support.get_item("Server")?.ok_or_else(missing)?.call1((
                master_pid,
                log,
                cfg,
                settings.workers,
            ))?;
            let defined = crate::config::HOOKS
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| fns.contains(name).unwrap_or(false))
                .collect();
            Ok(Hooks {
                defined,
                fns: fns.unbind(),
                support: support.unbind(),
                server: server.unbind(),
                worker: None,
            })
        };
        run().map_err(|e| format_traceback(py, &e))
    }

    fn make_log<'py>(py: Python<'py>, support: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let write = wrap_pyfunction!(log_line, py)?;
        support
            .get_item("Log")?
            .ok_or_else(missing)?
            .call1((write,))
    }

    fn make_cfg<'py>(
        py: Python<'py>,
        support: &Bound<'py, PyDict>,
        settings: &Settings,
    ) -> PyResult<Bound<'py, PyAny>> {
        use crate::config::Value;
        let d = PyDict::new(py);
        for (name, value) in settings.values() {
            match value {
                Value::None => d.set_item(name, py.None())?,
                Value::Bool(b) => d.set_item(name, b)?,
                Value::Int(n) => d.set_item(name, n)?,
                Value::Mode(m) => d.set_item(name, m)?,
                Value::Text(t) => d.set_item(name, t)?,
                Value::List(l) => d.set_item(name, l)?,
            }
        }
        support.get_item("Config")?.ok_or_else(missing)?.call1((d,))
    }

    /// Another handle on the same hooks (the Python objects are shared).
    pub fn clone_ref(&self, py: Python<'_>) -> Hooks {
        Hooks {
            defined: self.defined.clone(),
            fns: self.fns.clone_ref(py),
            support: self.support.clone_ref(py),
            server: self.server.clone_ref(py),
            worker: self.worker.as_ref().map(|w| w.clone_ref(py)),
        }
    }

    /// True when the config file defines `name`.
    pub fn has(&self, _py: Python<'_>, name: &str) -> bool {
        self.defines(name)
    }

    /// True when the config file defines `name`; needs no GIL, so a worker leaving on QUIT
    /// does not wait for an app thread that holds it unless there is a hook to run.
    pub fn defines(&self, name: &str) -> bool {
        self.defined.contains(&name)
    }

    /// A `worker` object for a worker of spawn order `age` (pid 0 before it is forked).
    pub fn new_worker(&self, py: Python<'_>, pid: i32, ppid: i32, age: u64) -> PyResult<Py<PyAny>> {
        let server = self.server.bind(py);
        let support = self.support.bind(py);
        let w = support.get_item("Worker")?.ok_or_else(missing)?.call1((
            pid,
            ppid,
            age,
            server.getattr("log")?,
            server.getattr("cfg")?,
        ))?;
        Ok(w.unbind())
    }

    /// Calls hook `name` with `args`, if defined. Returns false when it raised; the traceback
    /// is in the error log.
    pub fn call<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        args: impl IntoPyObject<'py, Target = PyTuple>,
    ) -> bool {
        let Ok(Some(f)) = self.fns.bind(py).get_item(name) else {
            return true;
        };
        match args
            .into_pyobject(py)
            .map_err(Into::into)
            .and_then(|a| f.call1(a.into_bound()))
        {
            Ok(_) => true,
            Err(e) if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) => {
                // gunicorn's master leaves when a hook calls sys.exit(); so does ours (see
                // `exit_requested`). In a worker it counts as the hook failing.
                let code = e.value(py).getattr("code").ok();
                let code = match &code {
                    Some(c) if c.is_none() => 0,
                    Some(c) => c.extract::<i64>().map_or(1, |n| n as i32),
                    None => 1,
                };
                crate::info!("The {name} hook called sys.exit({code})");
                EXIT_STATUS.store(code, std::sync::atomic::Ordering::Relaxed);
                EXIT_REQUESTED.store(true, std::sync::atomic::Ordering::Release);
                false
            }
            Err(e) => {
                crate::error!(
                    "Exception in {name} hook:\n{}",
                    format_traceback(py, &e).trim_end()
                );
                false
            }
        }
    }

    /// Builds the `req` object of `pre_request`/`post_request`.
    #[allow(clippy::too_many_arguments)]
    pub fn request<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        uri: &str,
        path: &str,
        query: &str,
        minor: u8,
        headers: Vec<(String, String)>,
        scheme: &str,
        peer: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let headers = PyList::new(py, headers)?;
        self.support
            .bind(py)
            .get_item("Request")?
            .ok_or_else(missing)?
            .call1((method, uri, path, query, (1, minor), headers, scheme, peer))
    }

    /// Builds the `resp` object of `post_request`.
    pub fn response<'py>(
        &self,
        py: Python<'py>,
        status: &str,
        headers: Vec<(String, String)>,
        sent: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let headers = PyList::new(py, headers)?;
        self.support
            .bind(py)
            .get_item("Response")?
            .ok_or_else(missing)?
            .call1((status, headers, sent))
    }
}

fn missing() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("minigun's hook support classes are missing")
}
