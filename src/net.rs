//! Listening sockets: parsing `--bind` values and creating the sockets the workers inherit.
//!
//! The arbiter binds every address before it forks, so all workers accept from the same kernel
//! queue and a restarted worker finds the socket already there. Sockets are close-on-exec and
//! blocking at creation; each worker makes its copy non-blocking for its event loop.
//!
//! A service manager may bind for us instead: with systemd socket activation
//! ([`activated_listeners`]) the sockets arrive as descriptors 3, 4, … and replace `--bind`, as
//! in gunicorn's `sock.create_sockets`. Such sockets belong to the manager, which keeps them
//! open across our restarts so no connection is refused meanwhile: minigun never shuts them
//! down or unlinks their files ([`Listener::inherited`]).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;

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
        return adopt(raw);
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

/// Takes over a listening socket someone else bound and passed to us as descriptor `raw`
/// (`fd://N`, systemd's `LISTEN_FDS`, or the old master of an upgrade's `MINIGUN_FD`, see
/// `upgrade`), marked [`Listener::inherited`]; the caller may say otherwise.
pub fn adopt(raw: RawFd) -> io::Result<Listener> {
    let fd = sys::inherited_socket(raw)?;
    // A socket unit with `Accept=yes` passes one connected socket per connection, inetd style;
    // accept(2) on it would fail in every worker. Say so now, once.
    if sys::getsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening socket (a socket unit needs Accept=no)",
        ));
    }
    let (fd, addr) = match sys::local_addr(fd.as_raw_fd())? {
        sys::Peer::Tcp(a) => (fd, ListenAddr::Tcp(a)),
        sys::Peer::Unix => {
            // std reads a unix socket's own address, path or abstract name, without unsafe.
            let unix = UnixListener::from(fd);
            let name = match unix.local_addr() {
                Ok(a) => match (a.as_pathname(), a.as_abstract_name()) {
                    (Some(path), _) => path.display().to_string(),
                    (None, Some(name)) => format!("@{}", String::from_utf8_lossy(name)),
                    (None, None) => format!("fd://{raw}"),
                },
                Err(_) => format!("fd://{raw}"),
            };
            (OwnedFd::from(unix), ListenAddr::Unix(name))
        }
    };
    Ok(Listener {
        fd,
        addr,
        inherited: true,
    })
}

/// Gives a unix socket we created to `--user`/`--group`, as gunicorn's `UnixSocket.bind` does
/// (`util.chown` right after `bind`), so a proxy running as that user or group can connect when
/// `--umask` keeps others out. A socket someone passed to us is theirs to set up.
pub fn set_owner(listener: &Listener, user: Option<u32>, group: Option<u32>) -> io::Result<()> {
    match &listener.addr {
        ListenAddr::Unix(path) if !listener.inherited && (user.is_some() || group.is_some()) => {
            std::os::unix::fs::chown(path, user, group)
        }
        _ => Ok(()),
    }
}

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`, sd_listen_fds(3)).
pub const LISTEN_FDS_START: RawFd = 3;

/// What `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` say.
#[derive(Debug, PartialEq, Eq)]
pub enum Activation {
    /// No `LISTEN_PID`: not socket-activated.
    Off,
    /// `LISTEN_PID` names another process: the variables were meant for it (typically a
    /// wrapper that systemd started, which ran us without `exec`).
    OtherProcess(u32),
    /// Descriptors `3..3+n` are ours, with their `LISTEN_FDNAMES` names when those match.
    Sockets {
        /// The descriptors, in order.
        fds: Vec<RawFd>,
        /// One name per descriptor (`FileDescriptorName=`, by default the socket unit's
        /// name), or `None` when the variable is absent or lists another number of names.
        names: Option<Vec<String>>,
    },
}

/// Reads the socket-activation variables the way libsystemd's `sd_listen_fds` does, in its
/// order: no `LISTEN_PID` means no activation; a `LISTEN_PID` that is not a number is an error;
/// one naming another process means the variables are not ours; then `LISTEN_FDS` must be a
/// number. Names are informational (they only label the log), so a `LISTEN_FDNAMES` with the
/// wrong count is dropped rather than refused.
pub fn parse_activation(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Result<Activation, String> {
    let Some(pid) = pid else {
        return Ok(Activation::Off);
    };
    let pid: u32 = match pid.trim().parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "LISTEN_PID: invalid value '{pid}' (expected a process id)"
            ))
        }
    };
    if pid != me {
        return Ok(Activation::OtherProcess(pid));
    }
    let count = fds.unwrap_or("0");
    let n: i32 = match count.trim().parse() {
        // No process has more descriptors than its open-files limit allows.
        Ok(n) if n >= 0 && (n as u64) < sys::open_files_limit() => n,
        _ => {
            return Err(format!(
                "LISTEN_FDS: invalid value '{count}' (expected a number of descriptors)"
            ))
        }
    };
    let fds: Vec<RawFd> = (LISTEN_FDS_START..LISTEN_FDS_START + n).collect();
    let names = names
        .map(|v| v.split(':').map(str::to_owned).collect::<Vec<_>>())
        .filter(|v| v.len() == fds.len());
    Ok(Activation::Sockets { fds, names })
}

/// The sockets systemd passed us, if it passed any; `Ok(None)` means "bind `--bind`".
///
/// The variables are removed from the environment whatever they said (sd_listen_fds with
/// `unset_environment`, as gunicorn does): the workers, the app and anything it runs must not
/// take descriptors 3, 4, … for sockets of theirs. An error names the variable at fault; the
/// caller exits with status 2, as for a bad setting.
pub fn activated_listeners() -> Result<Option<Vec<Listener>>, String> {
    let read = |key: &str| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned());
    let (pid, fds, names) = (
        read("LISTEN_PID"),
        read("LISTEN_FDS"),
        read("LISTEN_FDNAMES"),
    );
    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // The arbiter is single-threaded here (it starts no threads), so no other thread can
        // be reading the environment while it changes.
        std::env::remove_var(key);
    }
    let me = sys::getpid() as u32;
    let activation = parse_activation(pid.as_deref(), fds.as_deref(), names.as_deref(), me)?;
    let (fds, names) = match activation {
        Activation::Off => {
            if fds.is_some() {
                crate::warning!("LISTEN_FDS is set without LISTEN_PID; ignored");
            }
            return Ok(None);
        }
        Activation::OtherProcess(pid) => {
            crate::warning!(
                "LISTEN_PID is {pid}, not this process ({me}): the sockets were passed to \
                 another process (start minigun with exec); ignored"
            );
            return Ok(None);
        }
        Activation::Sockets { fds, .. } if fds.is_empty() => {
            crate::warning!("LISTEN_FDS=0: systemd passed no sockets; binding --bind instead");
            return Ok(None);
        }
        Activation::Sockets { fds, names: found } => {
            if found.is_none() && names.is_some() {
                crate::warning!("LISTEN_FDNAMES does not name each of LISTEN_FDS; names ignored");
            }
            (fds, found)
        }
    };
    let mut listeners = Vec::with_capacity(fds.len());
    for (i, &fd) in fds.iter().enumerate() {
        let listener = adopt(fd).map_err(|e| format!("LISTEN_FDS: descriptor {fd}: {e}"))?;
        let name = names.as_ref().map(|n| n[i].as_str()).unwrap_or("unnamed");
        crate::info!(
            "Using socket from systemd: fd {fd} ({name}) at {}",
            listener.addr
        );
        listeners.push(listener);
    }
    Ok(Some(listeners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_fds_past_the_open_files_limit_is_refused_not_allocated() {
        let me = 4242;
        let huge = parse_activation(Some("4242"), Some("2147483000"), None, me);
        assert!(matches!(huge, Err(e) if e.contains("LISTEN_FDS")));
        let fine = parse_activation(Some("4242"), Some("2"), None, me);
        assert!(matches!(fine, Ok(Activation::Sockets { fds, .. }) if fds == vec![3, 4]));
    }

    #[test]
    fn reads_activation_variables_as_sd_listen_fds_does() {
        let me = 4242;
        let parse = |pid, fds, names| parse_activation(pid, fds, names, me);
        assert_eq!(parse(None, Some("2"), None), Ok(Activation::Off));
        assert_eq!(
            parse(Some("17"), Some("abc"), None),
            Ok(Activation::OtherProcess(17)),
            "another process's variables are not even parsed"
        );
        assert_eq!(
            parse(Some("4242"), Some("2"), Some("web:admin")),
            Ok(Activation::Sockets {
                fds: vec![3, 4],
                names: Some(vec!["web".to_owned(), "admin".to_owned()]),
            })
        );
        assert_eq!(
            parse(Some("4242"), Some("2"), Some("web")),
            Ok(Activation::Sockets {
                fds: vec![3, 4],
                names: None
            }),
            "a name count that does not match is dropped"
        );
        assert_eq!(
            parse(Some("4242"), None, None),
            Ok(Activation::Sockets {
                fds: vec![],
                names: None
            })
        );
        for (pid, fds, named) in [
            ("abc", "1", "LISTEN_PID"),
            ("0", "1", "LISTEN_PID"),
            ("-5", "1", "LISTEN_PID"),
            ("4242", "abc", "LISTEN_FDS"),
            ("4242", "-1", "LISTEN_FDS"),
            ("4242", "99999999999", "LISTEN_FDS"),
        ] {
            let err = parse(Some(pid), Some(fds), None).expect_err("refused");
            assert!(err.starts_with(named), "{pid}/{fds}: {err}");
        }
    }

    #[test]
    fn parses_bind_forms() {
        assert_eq!(parse_tcp("127.0.0.1:80").expect("ok")[0].port(), 80);
        assert!(parse_tcp("[::1]:8080").expect("ok")[0].is_ipv6());
        assert_eq!(parse_tcp("127.0.0.1").expect("ok")[0].port(), 8000);
        assert!(parse_tcp("127.0.0.1:http").is_err());
        assert!(parse_tcp("1:2:3").is_err());
    }
}
