//! Listening sockets: parsing `--bind` values and creating the sockets the workers inherit.
//!
//! The arbiter binds every address before it forks, so all workers accept from the same kernel
//! queue and a restarted worker finds the socket already there. Sockets are close-on-exec and
//! blocking at creation; each worker makes its copy non-blocking for its event loop.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sys;

/// A bound, listening socket and how to describe it.
pub struct Listener {
    /// The socket.
    pub fd: OwnedFd,
    /// Where it listens.
    pub addr: ListenAddr,
    /// Handed to us (`fd://N`) rather than bound by us: whoever handed it over may use it after
    /// we are gone (systemd keeps a socket unit's socket), so a stop must not shut it down.
    pub inherited: bool,
}

/// The address of a listener, for logs and for `SERVER_NAME`/`SERVER_PORT`.
#[derive(Debug, Clone)]
pub enum ListenAddr {
    /// TCP, with the port actually bound (port 0 asks the kernel for a free one).
    Tcp(SocketAddr),
    /// A unix socket path (removed again at shutdown).
    Unix(String),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "http://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Parses `HOST:PORT`, `[V6]:PORT`, `HOST` (port 8000) or `:PORT` (all interfaces) into
/// socket addresses, resolving host names.
pub fn parse_tcp(v: &str) -> Result<Vec<SocketAddr>, String> {
    let bad =
        || format!("invalid value '{v}' (expected HOST:PORT, [::1]:PORT, unix:PATH or fd://N)");
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => "8000",
            None => return Err(bad()),
        };
        (h, port)
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (if h.is_empty() { "0.0.0.0" } else { h }, p),
            Some(_) => return Err(bad()),
            None => (v, "8000"),
        }
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("cannot resolve '{host}'"));
    }
    Ok(addrs)
}

/// Creates the listener for one `--bind` value.
pub fn bind(spec: &str, backlog: i32) -> io::Result<Listener> {
    if let Some(path) = spec.strip_prefix("unix:") {
        // A socket file left by an earlier run would make bind fail with EADDRINUSE; remove it,
        // but only if it is a socket, never a regular file someone named by mistake.
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        let fd = sys::unix_listener(path, backlog)?;
        return Ok(Listener {
            fd,
            addr: ListenAddr::Unix(path.to_owned()),
            inherited: false,
        });
    }
    if let Some(n) = spec.strip_prefix("fd://") {
        let raw: RawFd = n
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad fd"))?;
        let fd = sys::inherited_socket(raw)?;
        let addr = match sys::local_addr(fd.as_raw_fd())? {
            sys::Peer::Tcp(a) => ListenAddr::Tcp(a),
            sys::Peer::Unix => ListenAddr::Unix(format!("fd://{raw}")),
        };
        return Ok(Listener {
            fd,
            addr,
            inherited: true,
        });
    }
    let addrs = parse_tcp(spec).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address");
    for addr in addrs {
        match sys::tcp_listener(addr, backlog) {
            Ok(fd) => {
                let bound = match sys::local_addr(fd.as_raw_fd())? {
                    sys::Peer::Tcp(a) => a,
                    sys::Peer::Unix => addr,
                };
                return Ok(Listener {
                    fd,
                    addr: ListenAddr::Tcp(bound),
                    inherited: false,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bind_forms() {
        assert_eq!(parse_tcp("127.0.0.1:80").expect("ok")[0].port(), 80);
        assert!(parse_tcp("[::1]:8080").expect("ok")[0].is_ipv6());
        assert_eq!(parse_tcp("127.0.0.1").expect("ok")[0].port(), 8000);
        assert!(parse_tcp("127.0.0.1:http").is_err());
        assert!(parse_tcp("1:2:3").is_err());
    }
}
