//! Telling a service manager how the server is doing: systemd's `sd_notify` protocol.
//!
//! A `Type=notify` service is "started" when it says `READY=1`, not when its process exists, so
//! `systemctl start` (and every unit ordered `After=` it) waits until requests can really be
//! served. The protocol is one datagram per message on the unix socket named by
//! `NOTIFY_SOCKET`, holding newline-separated `KEY=VALUE` assignments (sd_notify(3)). minigun
//! sends
//!
//! * `READY=1` the first time every wanted worker has booted (gunicorn says it right after
//!   binding, before any worker has imported the app; we wait, so "started" means "serving");
//! * `RELOADING=1` with `MONOTONIC_USEC=` when a HUP starts a new generation of workers, and
//!   `READY=1` again once that generation serves (or failed and the old one stays); the
//!   timestamp is what `Type=notify-reload` (systemd 253) needs to match the message to the
//!   reload it asked for;
//! * `STOPPING=1` when a stop begins.
//!
//! Without `NOTIFY_SOCKET` every call here does nothing. The variable is read once, when the
//! arbiter starts, and left in the environment as gunicorn leaves it: with systemd's default
//! `NotifyAccess=main`, a message from a worker or the app would be ignored anyway.
//!
//! A notification that cannot be sent is logged and otherwise ignored, as sd_notify's callers
//! do: the server can serve whether or not systemd hears about it, and a unit that never hears
//! `READY=1` fails visibly at its start timeout.
//!
//! In gunicorn: `gunicorn/systemd.py` (`sd_notify`), called from `arbiter.py`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::sys;

/// The service manager's notification socket, if there is one.
pub struct Notifier {
    /// The socket we send from (unbound: systemd identifies us by our credentials) and the
    /// address of systemd's socket; `None` when `NOTIFY_SOCKET` is unset or unusable.
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`. An absolute path names a socket file, a leading `@` an abstract
    /// socket (sd_notify(3)). Any other value is reported once and notifications are off: the
    /// variable is systemd's business, and a bad one must not stop a server that can serve.
    pub fn from_env() -> Notifier {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let value = value.to_string_lossy().into_owned();
        match open(&value) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(why) => {
                crate::warning!("NOTIFY_SOCKET: {why}; not notifying the service manager");
                Notifier { target: None }
            }
        }
    }

    /// Every wanted worker serves: start-up (or a reload) is complete.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins. `MONOTONIC_USEC` is the `CLOCK_MONOTONIC` time of this message in
    /// microseconds: systemd 253's `Type=notify-reload` only accepts a `RELOADING=1` that is no
    /// older than the reload signal it sent.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nSTATUS=Reloading\nMONOTONIC_USEC={}",
            sys::monotonic_us()
        ));
    }

    /// A stop begins: systemd then knows the exit that follows is wanted, not a crash.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=Stopping");
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        crate::debug!("sd_notify: {}", message.replace('\n', " "));
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            crate::warning!("Cannot notify the service manager (NOTIFY_SOCKET): {e}");
        }
    }
}

/// Parses a `NOTIFY_SOCKET` value and makes the socket to send from.
fn open(value: &str) -> Result<(UnixDatagram, SocketAddr), String> {
    let addr = parse_address(value)?;
    let socket = UnixDatagram::unbound().map_err(|e| format!("cannot create a socket: {e}"))?;
    Ok((socket, addr))
}

/// `/path` or `@abstract-name`, as sd_notify(3) accepts them.
fn parse_address(value: &str) -> Result<SocketAddr, String> {
    let bad = |why: &str| format!("invalid value '{value}' ({why})");
    if let Some(name) = value.strip_prefix('@') {
        if name.is_empty() {
            return Err(bad("an abstract socket needs a name after '@'"));
        }
        return SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| bad(&e.to_string()));
    }
    if !value.starts_with('/') {
        return Err(bad("expected an absolute path or @name"));
    }
    SocketAddr::from_pathname(value).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_paths_and_abstract_names() {
        let path = parse_address("/run/systemd/notify").expect("a path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = parse_address("@minigun/notify").expect("an abstract name");
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"minigun/notify"[..])
        );
    }

    #[test]
    fn refuses_what_sd_notify_refuses() {
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            assert!(parse_address(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(parse_address(&long).is_err(), "a path longer than sun_path");
    }

    #[test]
    fn sends_one_datagram_per_message_to_an_abstract_socket() {
        let name = format!("minigun-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let receiver = UnixDatagram::bind_addr(&addr).expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let notifier = Notifier {
            target: Some(open(&format!("@{name}")).expect("open")),
        };
        notifier.reloading();
        notifier.ready("2 workers");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).expect("RELOADING");
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(first.starts_with("RELOADING=1\n"), "{first:?}");
        let usec = first
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(usec.is_some_and(|u| u > 0), "{first:?}");
        let n = receiver.recv(&mut buf).expect("READY");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2 workers");
    }
}
