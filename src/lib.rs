//! minigun: a prefork WSGI server for Python web applications.
//!
//! A tour of the crate, in the order a request meets it:
//!
//! * [`cli`] and [`config`] turn gunicorn-style flags, a `-c config.py` file and
//!   `MINIGUN_CMD_ARGS` into one [`config::Settings`].
//! * [`arbiter`] is the master process: it binds the listeners ([`net`]), forks the workers,
//!   reaps, replaces and kills them, and reacts to signals ([`signals`]).
//! * [`worker`] is one worker process: an epoll loop shared by `--threads` threads that accepts
//!   connections, reads requests and keeps idle connections.
//! * [`http`] parses request heads and bodies and frames responses (RFC 9110/9112); it knows
//!   nothing of Python and is tested on bytes.
//! * [`wsgi`] is PEP 3333 over pyo3: starting the right interpreter, the environ, `wsgi.input`,
//!   `start_response`, result iteration.
//! * [`log`] writes gunicorn-shaped error and access logs.
//! * [`sys`] holds the safe wrappers over libc; with `wsgi::interpreter` (CPython start-up),
//!   it is where the crate's `unsafe` code lives.
//!
//! Errors: cold paths (start-up, configuration) return strings or boxed errors with context;
//! the request path uses small `Copy` enums ([`http::Error`]) so refusing a request allocates
//! nothing until the answer is written.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::missing_safety_doc)]

pub mod arbiter;
pub mod cli;
pub mod config;
pub mod http;
pub mod log;
pub mod net;
pub mod signals;
pub mod sys;
pub mod worker;
pub mod wsgi;
