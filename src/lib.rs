//! minigun: a prefork WSGI server for Python web applications.
//!
//! A tour of the crate, in the order a request meets it:
//!
//! * [`cli`] and [`config`] turn gunicorn-style flags, a `-c config.py` file and
//!   `MINIGUN_CMD_ARGS` into one [`config::Settings`].
//! * [`arbiter`] is the master process: it binds the listeners ([`net`]), or takes the ones
//!   systemd passed, forks the workers, reaps, replaces and kills them (and any other child, as
//!   PID 1 must), reacts to signals ([`signals`]) and tells systemd how it is doing ([`notify`]).
//!   Three concerns of the master live in modules of their own: [`upgrade`] (USR2 starts a new
//!   master from the binary on disk and hands it the sockets; WINCH), [`reload`] (`--reload`:
//!   inotify on the app's source files) and [`recycle`] (`--max-worker-rss`).
//! * [`worker`] is one worker process: an epoll loop shared by `--threads` threads
//!   (leader/followers) that accepts connections, parks the ones that wait, and hands complete
//!   requests to the app.
//! * [`conn`] is one connection's state machine: idle, reading a head, reading a body (spooled
//!   in memory or a temporary file), ready for the app, lingering, and with `--proxy-protocol`
//!   a first phase that reads the PROXY header; and the memory bounds on what clients may make
//!   it buffer.
//! * [`http`] parses request heads and bodies and frames responses (RFC 9110/9112), and the
//!   PROXY protocol header of a TCP balancer; it knows nothing of Python or sockets and is
//!   tested on bytes.
//! * [`wsgi`] is PEP 3333 over pyo3: starting the right interpreter, the environ, `wsgi.input`,
//!   `start_response`, result iteration.
//! * [`client`] is the one layer that touches client sockets: the EINTR-correct read, write,
//!   wait and sendfile loops, the heartbeat, and the revocable lease through which the app
//!   reaches a request's socket.
//! * [`board`] is what each worker thread has in the app, in memory the master shares, so a
//!   worker killed for `--timeout` is explained.
//! * [`log`] writes gunicorn-shaped error and access logs (or JSON access lines); [`date`]
//!   formats their times. [`statsd`] sends gunicorn's metrics over UDP, and [`saturation`] is
//!   the master's watch for requests queueing because every thread is busy.
//! * [`sys`] holds the safe wrappers over libc; with `wsgi::interpreter` (CPython start-up),
//!   it is where the crate's `unsafe` code lives.
//!
//! Dependencies point one way: `arbiter` → `worker` → `conn` → {`wsgi`, `http`} → `client` →
//! `sys`; `wsgi` never calls back into `worker` or `conn`, and `http` knows nothing of `log`.
//!
//! Errors: cold paths (start-up, configuration) return strings or boxed errors with context;
//! the request path uses small `Copy` enums ([`http::Error`]) so refusing a request allocates
//! nothing until the answer is written.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::missing_safety_doc)]

pub mod arbiter;
pub mod board;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod date;
pub mod http;
pub mod log;
pub mod net;
pub mod notify;
pub mod recycle;
pub mod reload;
pub mod saturation;
pub mod signals;
pub mod statsd;
pub mod sys;
pub mod upgrade;
pub mod worker;
pub mod wsgi;
