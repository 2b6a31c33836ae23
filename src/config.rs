//! Settings: one table, four sources.
//!
//! Every setting is one entry of [`SETTINGS`]: its gunicorn config-file name, its command-line
//! flags (spelled as gunicorn spells them, `--limit-request-field_size` included), whether it
//! takes a value, the function that validates and stores it, and the text `--help` prints. The
//! sources apply in order, each overriding the one before: defaults, the `-c` config file (a
//! Python file whose module-level names are settings, like gunicorn.conf.py), the
//! `MINIGUN_CMD_ARGS` environment variable (flags in a string, like `GUNICORN_CMD_ARGS`), and the
//! command line. A bad value is reported in one line naming the setting; `main` exits with 2.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use crate::http::proxy;
use crate::log::{Level, DEFAULT_ACCESS_FORMAT};

/// Everything the arbiter and workers are told to do.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `module:callable` of the WSGI app.
    pub app: Option<String>,
    /// Addresses to listen on: `HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd://N`.
    pub bind: Vec<String>,
    /// True once `--bind` (or `bind =`) was given, so `--host`/`--port` know what to change.
    bind_given: bool,
    /// Number of worker processes.
    pub workers: usize,
    /// Threads serving connections in each worker.
    pub threads: usize,
    /// Seconds a worker may stay silent (or one request may run) before it is killed; 0 = never.
    pub timeout: u64,
    /// Seconds workers get to finish in-flight requests after a graceful stop.
    pub graceful_timeout: u64,
    /// Seconds an idle keep-alive connection is kept; 0 disables keep-alive.
    pub keepalive: u64,
    /// listen(2) backlog.
    pub backlog: i32,
    /// Open connections per worker before new ones get 503.
    pub worker_connections: usize,
    /// Requests a worker serves before it is replaced; 0 = never.
    pub max_requests: u64,
    /// Random extra requests added to `max_requests` per worker, so workers don't all restart
    /// at once.
    pub max_requests_jitter: u64,
    /// Longest request line in bytes (414 beyond).
    pub limit_request_line: usize,
    /// Most header fields in one request (431 beyond).
    pub limit_request_fields: usize,
    /// Longest header field line in bytes (431 beyond).
    pub limit_request_field_size: usize,
    /// Largest request body in bytes (413 beyond); 0 = unlimited.
    pub limit_request_body: u64,
    /// Access log path (`-` = stdout); none = no access log.
    pub accesslog: Option<String>,
    /// Access log format, gunicorn's atoms.
    pub access_log_format: String,
    /// Error log path (`-` = stderr).
    pub errorlog: String,
    /// Error log threshold.
    pub loglevel: Level,
    /// statsD server for metrics; none = no metrics.
    pub statsd_host: Option<crate::statsd::Address>,
    /// Prefix of every metric name (normalised by `statsd::normalize_prefix`).
    pub statsd_prefix: String,
    /// Send the listen backlog as `gunicorn.backlog`.
    pub enable_backlog_metric: bool,
    /// Write the access log as JSON lines instead of `access_log_format`.
    pub access_log_json: bool,
    /// The request header the JSON access log takes its `request_id` from.
    pub request_id_header: String,
    /// Directory to change to before loading the app.
    pub chdir: Option<PathBuf>,
    /// Extra directories put in front of `sys.path`.
    pub pythonpath: Vec<String>,
    /// `KEY=VALUE` pairs set in the environment before the app loads.
    pub raw_env: Vec<(String, String)>,
    /// Load the app in the arbiter before forking.
    pub preload_app: bool,
    /// File to write the arbiter's pid to.
    pub pidfile: Option<PathBuf>,
    /// Peers whose `X-Forwarded-Proto`/`-Ssl` headers are trusted; `*` trusts everyone (unix-socket
    /// peers are trusted whatever this says, as in gunicorn).
    pub forwarded_allow_ips: Vec<String>,
    /// Whether connections start with a PROXY protocol header, and which versions.
    pub proxy_protocol: proxy::Mode,
    /// Peers allowed to send a PROXY header (unix-socket peers always are, as in gunicorn).
    pub proxy_allow_ips: proxy::AllowList,
    /// Switch workers to this user (name or uid) after binding.
    pub user: Option<u32>,
    /// Switch workers to this group (name or gid) after binding.
    pub group: Option<u32>,
    /// File-mode mask for unix sockets and files the server creates.
    pub umask: u32,
    /// Config file given with `-c` (or found as `./minigun.conf.py`, `./gunicorn.conf.py`).
    pub config: Option<PathBuf>,
    /// The server hooks the config file defines (see [`HOOKS`]).
    pub hooks: Vec<String>,
    /// `--print-config`: print the resolved settings and exit.
    pub print_config: bool,
    /// `--check-config`: check the settings and that the app imports, then exit.
    pub check_config: bool,
    /// Resident size in MiB past which a worker is gracefully replaced; 0 = no limit.
    pub max_worker_rss: u64,
    /// Start new workers when the app's source files change (development).
    pub reload: bool,
    /// More files whose change reloads, with `reload`.
    pub reload_extra_files: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            app: None,
            bind: vec!["127.0.0.1:8000".to_owned()],
            bind_given: false,
            workers: 1,
            threads: 1,
            timeout: 30,
            graceful_timeout: 30,
            keepalive: 5,
            backlog: 2048,
            worker_connections: 1000,
            max_requests: 0,
            max_requests_jitter: 0,
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            limit_request_body: 0,
            accesslog: None,
            access_log_format: DEFAULT_ACCESS_FORMAT.to_owned(),
            errorlog: "-".to_owned(),
            loglevel: Level::Info,
            statsd_host: None,
            statsd_prefix: String::new(),
            enable_backlog_metric: false,
            access_log_json: false,
            request_id_header: "X-Request-ID".to_owned(),
            chdir: None,
            pythonpath: Vec::new(),
            raw_env: Vec::new(),
            preload_app: false,
            pidfile: None,
            forwarded_allow_ips: vec!["127.0.0.1".to_owned(), "::1".to_owned()],
            proxy_protocol: proxy::Mode::Off,
            proxy_allow_ips: proxy::AllowList::default(),
            user: None,
            group: None,
            umask: 0,
            config: None,
            hooks: Vec::new(),
            print_config: false,
            check_config: false,
            max_worker_rss: 0,
            reload: false,
            reload_extra_files: Vec::new(),
        }
    }
}

/// The interpreter whose environment the app runs in: the active virtualenv's `python`, or
/// the interpreter minigun was built against (`build.rs` bakes its path in). It evaluates
/// config files, and `wsgi::interpreter` hands it to CPython as `executable`, so that
/// CPython's own path calculation finds the venv exactly as for a `python` started there.
pub fn python_executable() -> PathBuf {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        let candidate = PathBuf::from(venv).join("bin").join("python");
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from(env!("MINIGUN_PYTHON"))
}

/// A setting that could not be applied: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

type Apply = fn(&mut Settings, &str) -> Result<(), String>;

/// One setting: how it is named in each source and how its value is checked and stored.
pub struct Setting {
    /// The config-file name (gunicorn's).
    pub name: &'static str,
    /// Command-line spellings, short first.
    pub flags: &'static [&'static str],
    /// Placeholder shown in `--help`; `None` for switches that take no value.
    pub metavar: Option<&'static str>,
    /// Validates the text and stores it.
    pub apply: Apply,
    /// One line for `--help`.
    pub doc: &'static str,
}

fn parse_num<T>(v: &str, min: T, what: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    match v.trim().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("invalid value '{v}' (expected {what})")),
    }
}

/// The most workers a master runs. A reload keeps the old generation finishing beside the new
/// one, so the arbiter has room for twice as many (its heartbeat slots).
pub const MAX_WORKERS: usize = 512;

/// The longest time a duration setting may name: a year. Durations are kept in milliseconds,
/// so an unbounded number of seconds would overflow; nobody means more than this.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// A whole number of seconds from 0 to [`MAX_SECONDS`].
fn parse_seconds(v: &str) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if n <= MAX_SECONDS => Ok(n),
        _ => Err(format!(
            "invalid value '{v}' (expected a whole number of seconds from 0 to {MAX_SECONDS})"
        )),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("invalid value '{v}' (expected true or false)")),
    }
}

fn parse_umask(v: &str) -> Result<u32, String> {
    let t = v.trim();
    let parsed = if let Some(oct) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(oct, 8).ok()
    } else if let Some(hex) = t.strip_prefix("0x") {
        u32::from_str_radix(hex, 16).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    };
    parsed
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("invalid value '{v}' (expected a mode such as 0o22)"))
}

/// The settings table. `--help` lists it in this order.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "config",
        flags: &["-c", "--config"],
        metavar: Some("FILE"),
        apply: |s, v| {
            s.config = Some(PathBuf::from(v));
            Ok(())
        },
        doc: "Python config file; its module-level names are settings (like gunicorn.conf.py).",
    },
    Setting {
        name: "bind",
        flags: &["-b", "--bind"],
        metavar: Some("ADDRESS"),
        apply: |s, v| {
            check_bind(v)?;
            if !s.bind_given {
                s.bind.clear();
                s.bind_given = true;
            }
            s.bind.push(v.trim().to_owned());
            Ok(())
        },
        doc: "Address to listen on: HOST:PORT, [::1]:PORT, unix:PATH or fd://N. Repeatable. [127.0.0.1:8000]",
    },
    Setting {
        name: "host",
        flags: &["--host"],
        metavar: Some("HOST"),
        apply: |s, v| {
            let port = s
                .bind
                .first()
                .and_then(|b| b.rsplit_once(':'))
                .map(|(_, p)| p.to_owned())
                .unwrap_or_else(|| "8000".to_owned());
            let host = if v.contains(':') && !v.starts_with('[') {
                format!("[{v}]")
            } else {
                v.to_owned()
            };
            let addr = format!("{host}:{port}");
            check_bind(&addr)?;
            s.bind = vec![addr];
            s.bind_given = true;
            Ok(())
        },
        doc: "Host to listen on (with --port, the same as --bind HOST:PORT).",
    },
    Setting {
        name: "port",
        flags: &["--port"],
        metavar: Some("PORT"),
        apply: |s, v| {
            let port: u16 = parse_num(v, 0, "a port number from 0 to 65535")?;
            let host = s
                .bind
                .first()
                .and_then(|b| b.rsplit_once(':'))
                .map(|(h, _)| h.to_owned())
                .unwrap_or_else(|| "127.0.0.1".to_owned());
            s.bind = vec![format!("{host}:{port}")];
            s.bind_given = true;
            Ok(())
        },
        doc: "Port to listen on (same as --bind HOST:PORT).",
    },
    Setting {
        name: "workers",
        flags: &["-w", "--workers"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.workers = parse_num(v, 1, "a whole number of at least 1")?;
            if s.workers > MAX_WORKERS {
                return Err(format!(
                    "invalid value '{v}' (expected a whole number from 1 to {MAX_WORKERS})"
                ));
            }
            Ok(())
        },
        doc: "Number of worker processes, at most 512. [1]",
    },
    Setting {
        name: "threads",
        flags: &["--threads"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.threads = parse_num(v, 1, "a whole number of at least 1")?;
            Ok(())
        },
        doc: "Threads per worker serving requests. [1]",
    },
    Setting {
        name: "timeout",
        flags: &["-t", "--timeout"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.timeout = parse_seconds(v)?;
            Ok(())
        },
        doc: "Seconds a worker may be silent, or one request may run in the app, before it is killed and replaced; also how long a client gets to send a whole request (408) and may stall while taking a response. 0 = never kill (clients still get 30 s). [30]",
    },
    Setting {
        name: "graceful_timeout",
        flags: &["--graceful-timeout"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.graceful_timeout = parse_seconds(v)?;
            Ok(())
        },
        doc: "Seconds workers get to finish requests after a graceful stop. [30]",
    },
    Setting {
        name: "keepalive",
        flags: &["--keep-alive"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.keepalive = parse_seconds(v)?;
            Ok(())
        },
        doc: "Seconds an idle keep-alive connection is kept open; 0 disables keep-alive. [5]",
    },
    Setting {
        name: "backlog",
        flags: &["--backlog"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.backlog = parse_num(v, 1, "a whole number of at least 1")?;
            Ok(())
        },
        doc: "Pending connections the kernel queues for accept. [2048]",
    },
    Setting {
        name: "worker_connections",
        flags: &["--worker-connections"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.worker_connections = parse_num(v, 1, "a whole number of at least 1")?;
            Ok(())
        },
        doc: "Open connections per worker; beyond it new connections get 503. [1000]",
    },
    Setting {
        name: "max_requests",
        flags: &["--max-requests"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.max_requests = parse_num(v, 0, "a whole number")?;
            Ok(())
        },
        doc: "Requests a worker serves before it is gracefully replaced; 0 = never. [0]",
    },
    Setting {
        name: "max_requests_jitter",
        flags: &["--max-requests-jitter"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.max_requests_jitter = parse_num(v, 0, "a whole number")?;
            Ok(())
        },
        doc: "Up to this many extra requests, drawn per worker, added to --max-requests. [0]",
    },
    Setting {
        name: "max_worker_rss",
        flags: &["--max-worker-rss"],
        metavar: Some("MIB"),
        apply: |s, v| {
            let limit = crate::recycle::MAX_MIB;
            let what = format!("a whole number of MiB from 0 to {limit}");
            let n: u64 = parse_num(v, 0, &what)?;
            if n > limit {
                return Err(format!("invalid value '{v}' (expected {what})"));
            }
            s.max_worker_rss = n;
            Ok(())
        },
        doc: "Resident size in MiB past which a worker is gracefully replaced, one worker at a time (not in gunicorn); 0 = no limit. [0]",
    },
    Setting {
        name: "reload",
        flags: &["--reload"],
        metavar: None,
        apply: |s, v| {
            s.reload = parse_bool(v)?;
            Ok(())
        },
        doc: "Start new workers when a source file of the app changes; the old ones serve on if the new code fails to load. For development.",
    },
    Setting {
        name: "reload_extra_files",
        flags: &["--reload-extra-file"],
        metavar: Some("FILE"),
        apply: |s, v| {
            if v.trim().is_empty() {
                return Err("invalid value '' (expected a file name)".to_owned());
            }
            // Relative to where minigun was started, like every path on the command line,
            // whatever --chdir says.
            let path = std::path::absolute(v).map_err(|e| format!("'{v}': {e}"))?;
            s.reload_extra_files.push(path);
            Ok(())
        },
        doc: "With --reload, also reload when this file changes (templates, settings). Repeatable.",
    },
    Setting {
        name: "limit_request_line",
        flags: &["--limit-request-line"],
        metavar: Some("INT"),
        apply: |s, v| {
            let n: usize = parse_num(v, 0, "a whole number from 0 to 8190")?;
            if n > 8190 {
                return Err(format!("invalid value '{v}' (expected a whole number from 0 to 8190)"));
            }
            s.limit_request_line = if n == 0 { 8190 } else { n };
            Ok(())
        },
        doc: "Longest request line in bytes; longer gets 414. 0 = the maximum, 8190. [4094]",
    },
    Setting {
        name: "limit_request_fields",
        flags: &["--limit-request-fields"],
        metavar: Some("INT"),
        apply: |s, v| {
            let n: usize = parse_num(v, 0, "a whole number from 0 to 32768")?;
            if n > 32768 {
                return Err(format!("invalid value '{v}' (expected a whole number from 0 to 32768)"));
            }
            s.limit_request_fields = if n == 0 { 32768 } else { n };
            Ok(())
        },
        doc: "Most header fields in a request; more gets 431. [100]",
    },
    Setting {
        name: "limit_request_field_size",
        flags: &["--limit-request-field_size", "--limit-request-field-size"],
        metavar: Some("INT"),
        apply: |s, v| {
            let n: usize = parse_num(v, 0, "a whole number from 0 to 65536")?;
            if n > 65536 {
                return Err(format!("invalid value '{v}' (expected a whole number from 0 to 65536)"));
            }
            s.limit_request_field_size = if n == 0 { 65536 } else { n };
            Ok(())
        },
        doc: "Longest header field in bytes; longer gets 431. 0 = the maximum, 65536. [8190]",
    },
    Setting {
        name: "limit_request_body",
        flags: &["--limit-request-body"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.limit_request_body = parse_num(v, 0, "a whole number of bytes")?;
            Ok(())
        },
        doc: "Largest request body in bytes; larger gets 413. 0 = unlimited. [0]",
    },
    Setting {
        name: "accesslog",
        flags: &["--access-logfile"],
        metavar: Some("FILE"),
        apply: |s, v| {
            s.accesslog = (!v.is_empty()).then(|| v.to_owned());
            Ok(())
        },
        doc: "Access log file; '-' is stdout. No access log unless given.",
    },
    Setting {
        name: "access_log_format",
        flags: &["--access-logformat"],
        metavar: Some("STRING"),
        apply: |s, v| {
            s.access_log_format = v.to_owned();
            Ok(())
        },
        doc: "Access log format, gunicorn's %(x)s atoms.",
    },
    Setting {
        name: "errorlog",
        flags: &["--error-logfile", "--log-file"],
        metavar: Some("FILE"),
        apply: |s, v| {
            s.errorlog = v.to_owned();
            Ok(())
        },
        doc: "Error log file; '-' is stderr. [-]",
    },
    Setting {
        name: "loglevel",
        flags: &["--log-level"],
        metavar: Some("LEVEL"),
        apply: |s, v| {
            s.loglevel = Level::parse(v).ok_or_else(|| {
                format!("invalid value '{v}' (expected debug, info, warning, error or critical)")
            })?;
            Ok(())
        },
        doc: "Error log level: debug, info, warning, error, critical. [info]",
    },
    Setting {
        name: "statsd_host",
        flags: &["--statsd-host"],
        metavar: Some("STATSD_ADDR"),
        apply: |s, v| {
            s.statsd_host = if v.trim().is_empty() {
                None
            } else {
                Some(crate::statsd::parse_address(v)?)
            };
            Ok(())
        },
        doc: "Send gunicorn's metrics to this statsD server over UDP: HOST:PORT (port 8125 if left out), or unix:PATH for a unix datagram socket. Off unless given.",
    },
    Setting {
        name: "statsd_prefix",
        flags: &["--statsd-prefix"],
        metavar: Some("STATSD_PREFIX"),
        apply: |s, v| {
            crate::statsd::check_prefix(v)?;
            s.statsd_prefix = v.to_owned();
            Ok(())
        },
        doc: "Prefix for every metric name; a '.' is put after it as gunicorn does. ['']",
    },
    Setting {
        name: "enable_backlog_metric",
        flags: &["--enable-backlog-metric"],
        metavar: None,
        apply: |s, v| {
            s.enable_backlog_metric = parse_bool(v)?;
            Ok(())
        },
        doc: "Also send the connections waiting in the listen backlog, once a second, as the gunicorn.backlog histogram.",
    },
    Setting {
        name: "access_log_json",
        flags: &["--access-log-json"],
        metavar: None,
        apply: |s, v| {
            s.access_log_json = parse_bool(v)?;
            Ok(())
        },
        doc: "Write the access log as one JSON object per line (time, pid, remote, method, path, query, protocol, status, bytes, duration_us, user_agent, referer, request_id) instead of --access-logformat; needs --access-logfile.",
    },
    Setting {
        name: "request_id_header",
        flags: &["--request-id-header"],
        metavar: Some("HEADER"),
        apply: |s, v| {
            let name = v.trim();
            if name.is_empty() || !name.bytes().all(crate::http::parse::is_token) {
                return Err(format!("invalid value '{v}' (expected a header name)"));
            }
            s.request_id_header = name.to_owned();
            Ok(())
        },
        doc: "Request header whose value the JSON access log records as request_id. [X-Request-ID]",
    },
    Setting {
        name: "chdir",
        flags: &["--chdir"],
        metavar: Some("DIR"),
        apply: |s, v| {
            if !std::path::Path::new(v).is_dir() {
                return Err(format!("'{v}' is not a directory"));
            }
            s.chdir = Some(PathBuf::from(v));
            Ok(())
        },
        doc: "Change to this directory before loading the app.",
    },
    Setting {
        name: "pythonpath",
        flags: &["--pythonpath"],
        metavar: Some("DIRS"),
        apply: |s, v| {
            s.pythonpath
                .extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned));
            Ok(())
        },
        doc: "Comma-separated directories added to the front of sys.path.",
    },
    Setting {
        name: "raw_env",
        flags: &["-e", "--env"],
        metavar: Some("KEY=VALUE"),
        apply: |s, v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => {
                s.raw_env.push((k.to_owned(), val.to_owned()));
                Ok(())
            }
            _ => Err(format!("invalid value '{v}' (expected KEY=VALUE)")),
        },
        doc: "Set an environment variable for the app. Repeatable.",
    },
    Setting {
        name: "preload_app",
        flags: &["--preload"],
        metavar: None,
        apply: |s, v| {
            s.preload_app = parse_bool(v)?;
            Ok(())
        },
        doc: "Load the app in the master before forking workers.",
    },
    Setting {
        name: "pidfile",
        flags: &["-p", "--pid"],
        metavar: Some("FILE"),
        apply: |s, v| {
            s.pidfile = Some(PathBuf::from(v));
            Ok(())
        },
        doc: "Write the master's pid to this file.",
    },
    Setting {
        name: "forwarded_allow_ips",
        flags: &["--forwarded-allow-ips"],
        metavar: Some("IPS"),
        apply: |s, v| {
            s.forwarded_allow_ips =
                v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
            Ok(())
        },
        doc: "Comma-separated proxy addresses whose X-Forwarded-Proto is trusted; '*' for any; unix-socket peers always. [127.0.0.1,::1]",
    },
    Setting {
        name: "proxy_protocol",
        flags: &["--proxy-protocol"],
        // In brackets: the value is optional, as gunicorn's `nargs='?'` (see `cli`).
        metavar: Some("[MODE]"),
        apply: |s, v| {
            s.proxy_protocol = proxy::Mode::parse(v)
                .ok_or_else(|| format!("invalid value '{v}' (expected off, v1, v2 or auto)"))?;
            Ok(())
        },
        doc: "Read a PROXY protocol header (HAProxy send-proxy/send-proxy-v2, AWS NLB) first on each connection from --proxy-allow-from: v1, v2, or auto (either; the flag alone). [off]",
    },
    Setting {
        name: "proxy_allow_ips",
        flags: &["--proxy-allow-from"],
        metavar: Some("IPS"),
        apply: |s, v| {
            s.proxy_allow_ips = proxy::AllowList::parse(v)?;
            Ok(())
        },
        doc: "Comma-separated addresses or CIDR networks that must send the PROXY header; '*' for any; unix-socket peers always. [127.0.0.1,::1]",
    },
    Setting {
        name: "user",
        flags: &["-u", "--user"],
        metavar: Some("USER"),
        apply: |s, v| {
            let uid = match v.trim().parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => crate::sys::user_by_name(v.trim())
                    .map(|(uid, _)| uid)
                    .ok_or_else(|| format!("no such user '{v}'"))?,
            };
            s.user = Some(uid);
            Ok(())
        },
        doc: "Switch worker processes to this user (name or uid).",
    },
    Setting {
        name: "group",
        flags: &["-g", "--group"],
        metavar: Some("GROUP"),
        apply: |s, v| {
            let gid = match v.trim().parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => crate::sys::group_by_name(v.trim())
                    .ok_or_else(|| format!("no such group '{v}'"))?,
            };
            s.group = Some(gid);
            Ok(())
        },
        doc: "Switch worker processes to this group (name or gid).",
    },
    Setting {
        name: "umask",
        flags: &["-m", "--umask"],
        metavar: Some("INT"),
        apply: |s, v| {
            s.umask = parse_umask(v)?;
            Ok(())
        },
        doc: "File-mode mask for files and unix sockets the server creates. [0]",
    },
    Setting {
        name: "print_config",
        flags: &["--print-config"],
        metavar: None,
        apply: |s, v| {
            s.print_config = parse_bool(v)?;
            Ok(())
        },
        doc: "Print the settings as resolved from every source, then exit.",
    },
    Setting {
        name: "check_config",
        flags: &["--check-config"],
        metavar: None,
        apply: |s, v| {
            s.check_config = parse_bool(v)?;
            Ok(())
        },
        doc: "Check the settings and that the app imports, then exit (status 0, or 1 with the error).",
    },
    Setting {
        name: "wsgi_app",
        flags: &[],
        metavar: Some("MODULE:APP"),
        apply: |s, v| {
            s.app = Some(v.to_owned());
            Ok(())
        },
        doc: "The WSGI app (also the positional argument).",
    },
];

/// Checks the syntax of one `--bind` value.
fn check_bind(v: &str) -> Result<(), String> {
    let v = v.trim();
    if let Some(path) = v.strip_prefix("unix:") {
        return if path.is_empty() {
            Err(format!("invalid value '{v}' (unix: needs a path)"))
        } else {
            Ok(())
        };
    }
    if let Some(n) = v.strip_prefix("fd://") {
        return match n.parse::<i32>() {
            Ok(fd) if fd >= 0 => Ok(()),
            _ => Err(format!(
                "invalid value '{v}' (fd:// needs a descriptor number)"
            )),
        };
    }
    crate::net::parse_tcp(v).map(drop)
}

/// Settings a config file may give as a list, each element one value, replacing the default.
fn list_setting(name: &str) -> bool {
    matches!(
        name,
        "bind" | "raw_env" | "pythonpath" | "reload_extra_files"
    )
}

/// Finds the table entry for a flag such as `--workers` or `-w`.
pub fn by_flag(flag: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.flags.contains(&flag))
}

/// Finds the table entry for a config-file name such as `workers`.
pub fn by_name(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// A setting's value as `--print-config` prints it and `server.cfg` holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Not set (Python's `None`).
    None,
    /// A flag.
    Bool(bool),
    /// A count, size or number of seconds.
    Int(u64),
    /// A file mode (`umask`), printed in octal.
    Mode(u32),
    /// Text: a path, an address, a format.
    Text(String),
    /// A repeatable setting.
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Mode(m) => write!(f, "{m:#o}"),
            Value::Text(t) => f.write_str(t),
            Value::List(l) => write!(f, "{l:?}"),
        }
    }
}

impl Settings {
    /// The access-log format these settings ask for, or `None` when there is no access log
    /// (no `--access-logfile`, as in gunicorn).
    pub fn access_format(&self) -> Option<crate::log::AccessFormat> {
        self.accesslog.as_ref()?;
        Some(if self.access_log_json {
            crate::log::AccessFormat::json(&self.request_id_header)
        } else {
            crate::log::AccessFormat::compile(&self.access_log_format)
        })
    }

    /// Applies one setting by its table entry, naming it in the error.
    pub fn apply(
        &mut self,
        setting: &Setting,
        value: &str,
        source: &str,
    ) -> Result<(), ConfigError> {
        (setting.apply)(self, value).map_err(|why| {
            let name = if setting.flags.is_empty() {
                setting.name.to_owned()
            } else {
                setting.flags.join("/")
            };
            ConfigError(format!("{source}{name}: {why}"))
        })
    }

    /// Applies the module-level names of a Python config file, evaluated by the interpreter
    /// minigun was built for in a separate process, so the arbiter does not start CPython just
    /// to read its settings (a forked worker must not inherit an initialised interpreter unless
    /// something needs one there: `--preload`, or a server hook that runs in the master).
    ///
    /// The file's own output (a `print`, a warning) goes to the error log; the settings come
    /// back on a separate channel (a duplicate of the child's original stdout, with its fd 1
    /// pointed at stderr), so nothing the file prints can be mistaken for a setting. Its effects
    /// on a process (`os.environ`, `sys.path`, imports) are for the process that serves: the
    /// file runs again where the app is loaded (see `hooks`).
    pub fn apply_config_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let source = format!("config file {}: ", path.display());
        if !path.is_file() {
            return Err(ConfigError(format!(
                "config file {}: no such file",
                path.display()
            )));
        }
        let output = run_reader(path).map_err(|e| ConfigError(format!("{source}{e}")))?;
        let mut fields = output.stdout.split(|&b| b == 0);
        self.hooks.clear();
        let mut failure = None;
        while let (Some(name), Some(count)) = (fields.next(), fields.next()) {
            let name = String::from_utf8_lossy(name).into_owned();
            // "L3": three values from a Python list, tuple or dict; "3": from anything else.
            let count = String::from_utf8_lossy(count);
            let is_list = count.starts_with('L');
            let count: usize = count.trim_start_matches('L').parse().unwrap_or(0);
            let values: Vec<String> = fields
                .by_ref()
                .take(count)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            match name.as_str() {
                "__error__" => failure = values.into_iter().next(),
                "__hook__" => self.hooks.extend(values),
                "__callable__" => {
                    for name in values {
                        crate::warning!(
                            "Config setting '{name}' (a function) is not a server hook; ignored"
                        );
                    }
                }
                _ => {
                    let Some(setting) = by_name(&name) else {
                        crate::warning!("Unknown setting '{name}' in {}; ignored", path.display());
                        continue;
                    };
                    if setting.name == "config" {
                        continue;
                    }
                    if list_setting(setting.name) {
                        // List settings: the config file's value replaces the default.
                        match setting.name {
                            "bind" => {
                                self.bind.clear();
                                self.bind_given = true;
                            }
                            "raw_env" => self.raw_env.clear(),
                            "reload_extra_files" => self.reload_extra_files.clear(),
                            _ => self.pythonpath.clear(),
                        }
                    }
                    // A Python list arrives as several values. gunicorn takes one for its
                    // list settings (above) and for the comma-separated address lists, and
                    // refuses it anywhere else ("Not a string"): keeping only the last element
                    // would silently drop the rest.
                    let comma_list =
                        matches!(setting.name, "forwarded_allow_ips" | "proxy_allow_ips");
                    let values = if comma_list && is_list {
                        // An empty list trusts no address (gunicorn takes only a string).
                        vec![values.join(",")]
                    } else {
                        values
                    };
                    if is_list && !comma_list && !list_setting(setting.name) {
                        return Err(ConfigError(format!(
                            "{source}{}: a list is not a valid value (one value expected)",
                            setting.name
                        )));
                    }
                    for value in &values {
                        self.apply(setting, value, &source)?;
                    }
                }
            }
        }
        if let Some(why) = failure {
            return Err(ConfigError(format!("{source}{why}")));
        }
        if !output.status.success() {
            return Err(ConfigError(format!(
                "{source}the reader failed ({})",
                output.status
            )));
        }
        Ok(())
    }

    /// True when a server hook that runs in the master is defined: the master then needs an
    /// interpreter of its own.
    pub fn has_master_hooks(&self) -> bool {
        self.hooks
            .iter()
            .any(|h| crate::config::MASTER_HOOKS.contains(&h.as_str()))
    }

    /// True when the config file defines hook `name`.
    pub fn has_hook(&self, name: &str) -> bool {
        self.hooks.iter().any(|h| h == name)
    }

    /// Marks the start of a new source: its first `--bind` replaces the binds of the sources
    /// before it instead of adding to them.
    pub fn start_source(&mut self) {
        self.bind_given = false;
    }

    /// The settings as `--print-config` shows them: one `name = value` line each, under the
    /// config-file names, aligned as gunicorn aligns them.
    pub fn describe(&self) -> String {
        let rows = self.values();
        let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(n, v)| format!("{n:width$} = {v}\n"))
            .collect()
    }

    /// Every setting by its config-file name, typed: what `--print-config` prints and what
    /// hooks read as `server.cfg`.
    pub fn values(&self) -> Vec<(&'static str, Value)> {
        use Value::{Bool, Int, List, Mode, Text};
        let opt = |v: &Option<String>| v.clone().map_or(Value::None, Text);
        let path = |v: &Option<PathBuf>| {
            v.as_ref()
                .map_or(Value::None, |p| Text(p.display().to_string()))
        };
        let list = |v: &[String]| List(v.to_vec());
        let ids = crate::sys::ids();
        vec![
            ("config", path(&self.config)),
            ("wsgi_app", opt(&self.app)),
            ("bind", list(&self.bind)),
            ("workers", Int(self.workers as u64)),
            ("threads", Int(self.threads as u64)),
            ("timeout", Int(self.timeout)),
            ("graceful_timeout", Int(self.graceful_timeout)),
            ("keepalive", Int(self.keepalive)),
            ("backlog", Int(u64::try_from(self.backlog).unwrap_or(0))),
            ("worker_connections", Int(self.worker_connections as u64)),
            ("max_requests", Int(self.max_requests)),
            ("max_requests_jitter", Int(self.max_requests_jitter)),
            ("limit_request_line", Int(self.limit_request_line as u64)),
            (
                "limit_request_fields",
                Int(self.limit_request_fields as u64),
            ),
            (
                "limit_request_field_size",
                Int(self.limit_request_field_size as u64),
            ),
            ("limit_request_body", Int(self.limit_request_body)),
            ("accesslog", opt(&self.accesslog)),
            ("access_log_format", Text(self.access_log_format.clone())),
            ("errorlog", Text(self.errorlog.clone())),
            (
                "loglevel",
                Text(format!("{:?}", self.loglevel).to_ascii_lowercase()),
            ),
            ("chdir", path(&self.chdir)),
            // A comma-separated string in gunicorn.
            (
                "pythonpath",
                if self.pythonpath.is_empty() {
                    Value::None
                } else {
                    Text(self.pythonpath.join(","))
                },
            ),
            (
                "raw_env",
                list(
                    &self
                        .raw_env
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>(),
                ),
            ),
            ("preload_app", Bool(self.preload_app)),
            ("pidfile", path(&self.pidfile)),
            ("forwarded_allow_ips", list(&self.forwarded_allow_ips)),
            ("proxy_protocol", Text(self.proxy_protocol.to_string())),
            (
                "proxy_allow_ips",
                List(
                    self.proxy_allow_ips
                        .to_string()
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
            ),
            // gunicorn's defaults: the ids minigun runs as.
            ("user", Int(u64::from(self.user.unwrap_or(ids.euid)))),
            ("group", Int(u64::from(self.group.unwrap_or(ids.egid)))),
            ("umask", Mode(self.umask)),
            ("max_worker_rss", Int(self.max_worker_rss)),
            ("reload", Bool(self.reload)),
            (
                "reload_extra_files",
                list(
                    &self
                        .reload_extra_files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>(),
                ),
            ),
            ("hooks", list(&self.hooks)),
        ]
    }

    /// `--timeout` in milliseconds; `None` when it is 0 (never).
    pub fn timeout_ms(&self) -> Option<u64> {
        (self.timeout > 0).then(|| self.timeout.saturating_mul(1000))
    }

    /// Checks settings that depend on each other, once every source has been applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.app.is_none() {
            return Err(ConfigError(
                "the following arguments are required: MODULE:APP".to_owned(),
            ));
        }
        // The same address twice would bind twice and fail, or (fd://N) serve one socket as
        // two listeners, and close it twice on the way out.
        for (i, b) in self.bind.iter().enumerate() {
            if self.bind[..i].contains(b) {
                return Err(ConfigError(format!("--bind: '{b}' is given twice")));
            }
        }
        if self.reload && self.preload_app {
            // New workers of a preloaded app fork from the master's copy of the old code.
            return Err(ConfigError(
                "--reload: cannot reload an app the master imported (--preload); use one of them"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// How long a config file may take to run before minigun gives up on it.
const CONFIG_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs [`CONFIG_READER`] on `path` and returns its output, within [`CONFIG_DEADLINE`]. The
/// reader leaves with `os._exit`, so a thread the file starts cannot keep it alive; a file
/// that never finishes (an endless loop, a blocking call) is killed and reported.
fn run_reader(path: &std::path::Path) -> Result<std::process::Output, String> {
    use std::io::Read;
    let mut child = Command::new(python_executable())
        .arg("-c")
        .arg(CONFIG_READER.replace("HOOK_TABLE", &hook_table()))
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run Python: {e}"))?;
    let mut out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(out) = out.as_mut() {
            let _ = out.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = std::time::Instant::now() + CONFIG_DEADLINE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {} s",
                    CONFIG_DEADLINE.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for Python: {e}")),
        }
    };
    let stdout = reader.join().unwrap_or_default();
    Ok(std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

/// gunicorn's server hooks and how many arguments each takes.
pub const HOOKS: &[(&str, usize)] = &[
    ("on_starting", 1),
    ("on_reload", 1),
    ("when_ready", 1),
    ("pre_fork", 2),
    ("post_fork", 2),
    ("post_worker_init", 1),
    ("worker_int", 1),
    ("worker_abort", 1),
    ("pre_exec", 1),
    ("pre_request", 2),
    ("post_request", 4),
    ("child_exit", 2),
    ("worker_exit", 2),
    ("nworkers_changed", 3),
    ("on_exit", 1),
];

/// [`HOOKS`] as a Python literal for the reader.
fn hook_table() -> String {
    let pairs: Vec<String> = HOOKS.iter().map(|(n, a)| format!("({n:?}, {a})")).collect();
    format!("[{}]", pairs.join(", "))
}

/// The hooks gunicorn calls in the master process.
pub const MASTER_HOOKS: &[&str] = &[
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "pre_exec",
    "child_exit",
    "nworkers_changed",
    "on_exit",
];

/// Python run by [`Settings::apply_config_file`]: executes the file with its output sent to
/// stderr, and writes each module-level setting to the saved stdout as
/// `name\0count\0value\0…`. Lists become several values. Server hooks are checked for
/// their number of arguments (as gunicorn's `validate_callable` does) and reported under
/// `__hook__`; other functions under `__callable__`; a failure under `__error__`, with its
/// traceback on stderr.
const CONFIG_READER: &str = r#"
import inspect, os, runpy, sys, traceback, types
out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="surrogateescape")
os.dup2(2, 1)
sys.stdout = sys.stderr
HOOKS = dict(HOOK_TABLE)
records = []

def emit(name, values, is_list=False):
    count = ("L%d" if is_list else "%d") % len(values)
    records.append("\0".join([name, count] + values))

def arity_ok(fn, n):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(required) <= n <= len(positional)

try:
    ns = runpy.run_path(sys.argv[1], run_name="__config__")
    hooks, others = [], []
    for k, v in ns.items():
        if k.startswith("_") or isinstance(v, (types.ModuleType, type)):
            continue
        if k in HOOKS:
            if not callable(v):
                raise ValueError("%s must be a function, not %s" % (k, type(v).__name__))
            # gunicorn also takes post_request(worker, req) and (worker, req, environ).
            counts = (2, 3, 4) if k == "post_request" else (HOOKS[k],)
            if not any(arity_ok(v, n) for n in counts):
                raise ValueError("%s must take %s argument(s)"
                                 % (k, " or ".join(str(n) for n in counts)))
            hooks.append(k)
            continue
        if callable(v):
            others.append(k)
            continue
        if v is None:
            continue
        if isinstance(v, bool):
            vals = ["true" if v else "false"]
        elif isinstance(v, (list, tuple)):
            emit(k, [str(x) for x in v], True)
            continue
        elif isinstance(v, dict):
            emit(k, ["%s=%s" % (a, b) for a, b in v.items()], True)
            continue
        else:
            vals = [str(v)]
        emit(k, vals)
    if hooks:
        emit("__hook__", hooks)
    if others:
        emit("__callable__", others)
except BaseException as e:
    traceback.print_exc()
    emit("__error__", ["%s: %s" % (type(e).__name__, e)])
out.write("".join(r + "\0" for r in records))
out.flush()
sys.stderr.flush()
os._exit(0)
"#;
