//! The `environ` dict (PEP 3333 §"environ Variables").
//!
//! Most keys are the same for every request on a listener (`wsgi.version`, `SERVER_SOFTWARE`,
//! `wsgi.errors`, …). They live in a template dict made once; each request starts from a copy
//! of it (`PyDict_Copy` copies the hash table wholesale) and sets only the keys that change.
//! The constant key strings are interned, and the `HTTP_*` key of each header name is computed
//! once per thread and cached (up to [`MAX_CACHED_KEYS`] names). Names past the cache are made
//! as plain strings: Python 3.12 never frees an interned string, so interning every name a
//! client makes up would leak memory request after request.
//!
//! Strings are "native strings" in PEP 3333's sense: the raw bytes decoded as latin-1, so
//! every byte value survives and frameworks can re-encode as they see fit.

use std::collections::HashMap;
use std::net::IpAddr;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::http::parse::percent_decode;
use crate::http::{Framing, Head};
use crate::net::ListenAddr;

/// Header-name → `HTTP_*` key strings cached per thread; bounded so a client sending random
/// header names cannot grow it without end.
const MAX_CACHED_KEYS: usize = 512;

/// Decodes bytes as latin-1 into a Python `str` (every byte maps to the code point of the same
/// value, so nothing is lost or rejected).
pub use super::interpreter::latin1;

/// Per-worker parts of the environ that never change.
pub struct Templates {
    /// One template dict per listener (SERVER_NAME/SERVER_PORT differ).
    pub dicts: Vec<Py<PyDict>>,
    /// `SCRIPT_NAME` from the environment (mount point behind a proxy), as gunicorn reads it.
    pub script_name: Vec<u8>,
    /// Peers trusted to say the original scheme (`--forwarded-allow-ips`).
    pub forwarded: Forwarded,
}

/// Which peers may set `wsgi.url_scheme` through `X-Forwarded-Proto` and friends.
pub enum Forwarded {
    /// `*`: any peer.
    Anyone,
    /// These addresses only.
    Only(Vec<IpAddr>),
}

impl Forwarded {
    /// Parses `--forwarded-allow-ips`.
    pub fn new(list: &[String]) -> Forwarded {
        if list.iter().any(|s| s == "*") {
            return Forwarded::Anyone;
        }
        Forwarded::Only(list.iter().filter_map(|s| s.parse().ok()).collect())
    }

    fn trusts(&self, remote: &str) -> bool {
        // A unix-socket peer has no address (`remote` is empty, see `worker::serve`), and only
        // processes allowed to open the socket file can be one: gunicorn trusts such peers
        // whatever --forwarded-allow-ips says (`http/message.py`, a `peer_addr` that is not an
        // (ip, port) tuple), so nginx in front over a unix socket works without the setting.
        if remote.is_empty() {
            return true;
        }
        match self {
            Forwarded::Anyone => true,
            Forwarded::Only(ips) => remote
                .parse::<IpAddr>()
                .map(|ip| ips.contains(&ip) || ips.contains(&ip.to_canonical()))
                .unwrap_or(false),
        }
    }
}

impl Templates {
    /// Builds the template dicts.
    pub fn new(
        py: Python<'_>,
        listeners: &[ListenAddr],
        settings: &crate::config::Settings,
        file_wrapper: &Bound<'_, PyAny>,
    ) -> PyResult<Templates> {
        let errors = Bound::new(py, super::response::ErrorStream)?;
        let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
        let mut dicts = Vec::new();
        for addr in listeners {
            // ANCHOR: environ-template
            let d = PyDict::new(py);
            d.set_item("wsgi.version", (1, 0))?;
            d.set_item("wsgi.url_scheme", "http")?;
            d.set_item("wsgi.errors", &errors)?;
            d.set_item("wsgi.multithread", settings.threads > 1)?;
            d.set_item("wsgi.multiprocess", settings.workers > 1)?;
            d.set_item("wsgi.run_once", false)?;
            d.set_item("wsgi.input_terminated", true)?;
            d.set_item("wsgi.file_wrapper", file_wrapper)?;
            d.set_item(
                "SERVER_SOFTWARE",
                format!("minigun/{}", env!("CARGO_PKG_VERSION")),
            )?;
            d.set_item("SCRIPT_NAME", &script_name)?;
            let (name, port) = match addr {
                ListenAddr::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
                ListenAddr::Unix(_) => ("localhost".to_owned(), String::new()),
            };
            d.set_item("SERVER_NAME", name)?;
            d.set_item("SERVER_PORT", port)?;
            d.set_item("QUERY_STRING", "")?;
            // Keys every request sets, present from the start with placeholder values: setting
            // them then overwrites a slot instead of inserting, and the copy never has to grow
            // (a resize rehashes every key).
            for key in [
                "REQUEST_METHOD",
                "SERVER_PROTOCOL",
                "PATH_INFO",
                "RAW_URI",
                "REMOTE_ADDR",
            ] {
                d.set_item(key, "")?;
            }
            if matches!(addr, ListenAddr::Tcp(_)) {
                d.set_item("REMOTE_PORT", "")?;
            }
            d.set_item("wsgi.input", py.None())?;
            dicts.push(d.unbind());
            // ANCHOR_END: environ-template
        }
        Ok(Templates {
            dicts,
            script_name: script_name.into_bytes(),
            forwarded: Forwarded::new(&settings.forwarded_allow_ips),
        })
    }
}

/// Per-thread scratch space and caches.
#[derive(Default)]
pub struct ThreadCache {
    keys: HashMap<Vec<u8>, Py<PyString>>,
    path: Vec<u8>,
    /// The last `Host` value seen and its SERVER_NAME/SERVER_PORT strings: clients send the
    /// same one request after request.
    host: Option<Vec<u8>>,
    host_strings: Option<(Py<PyString>, Py<PyString>)>,
}

/// The connection facts the environ needs.
pub struct Client<'a> {
    /// `REMOTE_ADDR` (empty for unix sockets, as gunicorn does).
    pub addr: &'a str,
    /// `REMOTE_PORT`, if any.
    pub port: &'a str,
    /// The socket's own peer (empty for unix sockets). The same as `addr` unless a PROXY
    /// header named the client; forwarded headers are trusted on this, never on `addr`.
    pub peer: &'a str,
    /// Which listener accepted the connection.
    pub listener: usize,
    /// `addr` and `port` as Python strings, made on the connection's first request.
    pub strings: &'a mut Option<(Py<PyString>, Py<PyString>)>,
}

// ANCHOR: environ-build
/// Builds the environ for one request, all but `wsgi.input`.
pub fn build<'py>(
    py: Python<'py>,
    templates: &Templates,
    cache: &mut ThreadCache,
    client: &mut Client<'_>,
    buf: &[u8],
    head: &Head,
) -> PyResult<Bound<'py, PyDict>> {
    let env = templates.dicts[client.listener].bind(py).copy()?;
    // ANCHOR_END: environ-build
    env.set_item(
        intern!(py, "REQUEST_METHOD"),
        method(py, head.method.of(buf)),
    )?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        if head.minor == 0 {
            intern!(py, "HTTP/1.0")
        } else {
            intern!(py, "HTTP/1.1")
        },
    )?;
    // PATH_INFO is the decoded path, minus SCRIPT_NAME when the path lies under it.
    let raw_path = head.path.of(buf);
    let target = head.target.of(buf);
    let script = &templates.script_name;
    let path_info = if script.is_empty() && !raw_path.contains(&b'%') {
        latin1(py, raw_path)
    } else {
        percent_decode(raw_path, &mut cache.path);
        let mut path: &[u8] = &cache.path;
        if !script.is_empty()
            && path.starts_with(script)
            && matches!(path.get(script.len()), None | Some(b'/'))
        {
            path = &path[script.len()..];
        }
        latin1(py, path)
    };
    // The common case `GET /path`: RAW_URI is the very same string.
    let raw_uri = if target == raw_path && script.is_empty() && !raw_path.contains(&b'%') {
        path_info.clone()
    } else {
        latin1(py, target)
    };
    env.set_item(intern!(py, "PATH_INFO"), path_info)?;
    if !head.query.is_empty() {
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, head.query.of(buf)))?;
    }
    env.set_item(intern!(py, "RAW_URI"), raw_uri)?;
    let (addr, port) = client.strings.get_or_insert_with(|| {
        (
            PyString::new(py, client.addr).unbind(),
            PyString::new(py, client.port).unbind(),
        )
    });
    env.set_item(intern!(py, "REMOTE_ADDR"), addr.bind(py))?;
    if !client.port.is_empty() {
        env.set_item(intern!(py, "REMOTE_PORT"), port.bind(py))?;
    }
    if let Some(host) = head.host {
        let host = host.of(buf);
        if cache.host.as_deref() != Some(host) {
            // `Host: name:port`; an IPv6 literal keeps its brackets in SERVER_NAME.
            // An empty port means the scheme's default (RFC 3986 §3.2.3); SERVER_PORT is never
            // empty (PEP 3333).
            let (name, port) = match host.iter().rposition(|&b| b == b':') {
                Some(i) if !host[i..].contains(&b']') && i + 1 < host.len() => {
                    (&host[..i], &host[i + 1..])
                }
                Some(i) if !host[i..].contains(&b']') => (&host[..i], &b"80"[..]),
                _ => (host, &b"80"[..]),
            };
            cache.host_strings =
                (!name.is_empty()).then(|| (latin1(py, name).unbind(), latin1(py, port).unbind()));
            cache.host = Some(host.to_vec());
        }
        if let Some((name, port)) = &cache.host_strings {
            env.set_item(intern!(py, "SERVER_NAME"), name.bind(py))?;
            env.set_item(intern!(py, "SERVER_PORT"), port.bind(py))?;
        }
    }

    // ANCHOR: environ-headers
    let mut secure = false;
    for (index, h) in head.headers.iter().enumerate() {
        let name = h.name.of(buf);
        let value = h.value.of(buf);
        // A `_` in a name would make `X_Forwarded_For` indistinguishable from
        // `X-Forwarded-For` once both become HTTP_X_FORWARDED_FOR: drop such headers.
        if name.contains(&b'_') {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, value))?;
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if let Framing::Length(n) = head.framing {
                env.set_item(intern!(py, "CONTENT_LENGTH"), n.to_string())?;
            } else if head.framing == Framing::None {
                env.set_item(intern!(py, "CONTENT_LENGTH"), "0")?;
            }
            continue;
        }
        if is_secure_scheme_header(name, value) && templates.forwarded.trusts(client.peer) {
            secure = true;
        }
        let key = header_key(py, cache, name);
        let value = latin1(py, value);
        // Only a name seen earlier in this head can need joining; most heads have none.
        let repeated = head.headers[..index]
            .iter()
            .any(|h| h.name.of(buf).eq_ignore_ascii_case(name));
        let existing = if repeated { env.get_item(&key)? } else { None };
        match existing {
            Some(old) => {
                let sep = if name.eq_ignore_ascii_case(b"cookie") {
                    "; "
                } else {
                    ", "
                };
                let joined = format!(
                    "{}{sep}{}",
                    old.cast::<PyString>()?.to_cow()?,
                    value.to_cow()?
                );
                env.set_item(key, joined)?;
            }
            None => env.set_item(key, value)?,
        }
    }
    if secure {
        env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
    }
    Ok(env)
}
// ANCHOR_END: environ-headers

/// gunicorn's default `secure_scheme_headers`.
fn is_secure_scheme_header(name: &[u8], value: &[u8]) -> bool {
    (name.eq_ignore_ascii_case(b"x-forwarded-proto") && value.eq_ignore_ascii_case(b"https"))
        || (name.eq_ignore_ascii_case(b"x-forwarded-ssl") && value.eq_ignore_ascii_case(b"on"))
        || (name.eq_ignore_ascii_case(b"x-forwarded-protocol")
            && value.eq_ignore_ascii_case(b"ssl"))
}

/// The method as a Python string; the common ones are interned.
fn method<'py>(py: Python<'py>, m: &[u8]) -> Bound<'py, PyString> {
    match m {
        b"GET" => intern!(py, "GET").clone(),
        b"POST" => intern!(py, "POST").clone(),
        b"HEAD" => intern!(py, "HEAD").clone(),
        b"PUT" => intern!(py, "PUT").clone(),
        b"DELETE" => intern!(py, "DELETE").clone(),
        b"OPTIONS" => intern!(py, "OPTIONS").clone(),
        b"PATCH" => intern!(py, "PATCH").clone(),
        other => latin1(py, other),
    }
}

/// `HTTP_` + the name upper-cased with `-` as `_`, from the per-thread cache.
fn header_key<'py>(py: Python<'py>, cache: &mut ThreadCache, name: &[u8]) -> Bound<'py, PyString> {
    macro_rules! common {
        ($($name:literal => $key:literal),* $(,)?) => {
            $(if name.eq_ignore_ascii_case($name) {
                return intern!(py, $key).clone();
            })*
        };
    }
    common! {
        b"host" => "HTTP_HOST",
        b"user-agent" => "HTTP_USER_AGENT",
        b"accept" => "HTTP_ACCEPT",
        b"accept-encoding" => "HTTP_ACCEPT_ENCODING",
        b"accept-language" => "HTTP_ACCEPT_LANGUAGE",
        b"connection" => "HTTP_CONNECTION",
        b"cookie" => "HTTP_COOKIE",
        b"referer" => "HTTP_REFERER",
    }
    if let Some(key) = cache.keys.get(name) {
        return key.bind(py).clone();
    }
    let mut key = Vec::with_capacity(5 + name.len());
    key.extend_from_slice(b"HTTP_");
    key.extend(name.iter().map(|&b| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        }
    }));
    // Header names are tokens: ASCII, so latin-1 and UTF-8 agree.
    let key = String::from_utf8_lossy(&key);
    if cache.keys.len() < MAX_CACHED_KEYS {
        let s = PyString::intern(py, &key);
        cache.keys.insert(name.to_vec(), s.clone().unbind());
        return s;
    }
    PyString::new(py, &key)
}
