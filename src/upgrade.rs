//! Zero-downtime binary upgrade: USR2 starts a new master from the executable on disk and hands
//! it the listening sockets; WINCH, TERM and HUP sent to the old master then finish the upgrade
//! or roll it back.
//!
//! The procedure is gunicorn's (`arbiter.py`: `reexec`, `handle_usr2`, `handle_winch`,
//! `maybe_promote_master`), which is nginx's:
//!
//! 1. USR2: the old master forks a child that execs the minigun binary found at the path the
//!    running one was started from, with the old master's command line, working directory and
//!    environment, plus `MINIGUN_PID` (the old master's pid) and `MINIGUN_FD` (the listening
//!    descriptors, which only this child makes survive its exec). The new master takes those
//!    sockets instead of binding (`--bind` is not read again, as in gunicorn) and starts its own
//!    workers; both generations now accept from the same kernel queues.
//! 2. WINCH to the old master: its workers finish and exit, and it starts no more.
//! 3. TERM to the old master: it exits. The new master notices that its parent changed and
//!    says "Master has been promoted.": from then on it owns the sockets. Rolling back instead
//!    is HUP to the old master (its workers come back) and TERM to the new one.
//!
//! Who owns the sockets decides what a stop does to them. The arbiter's `stop` shuts its
//! listeners down (`shutdown(SHUT_RD)`) and unlinks their unix socket files, so clients are
//! refused at once rather than queued; while the other master of an upgrade lives, that would
//! cut it off too, so neither the old master (while its new master runs) nor the new one (while
//! its old master runs) touches them ([`Upgrade::shares_listeners`]), as gunicorn's `stop`
//! skips the unlink while `reexec_pid` or `master_pid` is set. Sockets someone else passed us
//! (systemd's `LISTEN_FDS`, `fd://N`) are listed again in `MINIGUN_FD_INHERITED`, so the new
//! master knows, once promoted, that they are still not its to close.
//!
//! Pid files follow nginx and gunicorn before 19.6: the old master renames `PIDFILE` to
//! `PIDFILE.oldbin` before it starts the new master, and the new master writes `PIDFILE`, so
//! `PIDFILE` always names the master that will remain. gunicorn since 19.6 keeps `PIDFILE` and
//! has the new master write `PIDFILE.2` until promoted; we keep nginx's names because
//! `kill -TERM $(cat PIDFILE.oldbin)` is the step that finishes the upgrade either way, and a
//! monitor reading `PIDFILE` sees the new master from its first moment. If the new master exits
//! while the old one lives (it failed to start, or a rollback stopped it), the old master
//! renames its file back.
//!
//! Why `MINIGUN_FD` and not gunicorn's `GUNICORN_FD`: gunicorn's USR2 execs Python
//! (`sys.executable` and gunicorn's own script), never minigun, so a `GUNICORN_FD` can only reach
//! minigun by accident, left in an environment by a gunicorn that started a process which
//! started minigun; taking descriptors on that say-so would adopt whatever they now are.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::net::{self, Listener};
use crate::sys::{self, Exit, Pid};

/// Set for the new master: the pid of the old master that started it.
pub const PID_VAR: &str = "MINIGUN_PID";
/// Set for the new master: every listening descriptor it inherits, comma-separated.
pub const FD_VAR: &str = "MINIGUN_FD";
/// Set for the new master: those of [`FD_VAR`] that belong to whoever passed them to the old
/// master (systemd, `fd://N`), which no master may shut down or unlink.
pub const INHERITED_VAR: &str = "MINIGUN_FD_INHERITED";

/// The suffix the old master's pid file gets while its new master runs (nginx's name).
pub const OLDBIN: &str = ".oldbin";

/// This master's part in an upgrade.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// The new master we started with USR2, until we reap it (gunicorn's `reexec_pid`).
    child: Option<Pid>,
    /// The old master that started us, until it exits (gunicorn's `master_pid`).
    pub parent: Option<Pid>,
    /// The pid file this master wrote (`--pid`), and whether it is now `PIDFILE.oldbin`.
    pidfile: Option<PathBuf>,
    oldbin: bool,
}

/// Parses a comma-separated list of descriptors (`3,4,7`); empty means none.
pub fn parse_fds(value: &str, var: &str) -> Result<Vec<RawFd>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut fds: Vec<RawFd> = Vec::new();
    for fd in value.split(',') {
        match fd.trim().parse::<RawFd>() {
            // A descriptor named twice would be owned twice, and closed twice.
            Ok(n) if n >= 0 && fds.contains(&n) => {
                return Err(format!(
                    "{var}: invalid value '{value}' (descriptor {n} twice)"
                ))
            }
            Ok(n) if n >= 0 => fds.push(n),
            _ => {
                return Err(format!(
                    "{var}: invalid value '{value}' (expected descriptor numbers separated by \
                     commas)"
                ))
            }
        }
    }
    Ok(fds)
}

impl Upgrade {
    /// Reads what an old master passed us, and removes the variables from the environment so
    /// neither the workers, nor the app, nor a later upgrade of ours sees them. `Ok(None)` for
    /// the listeners means "not the new master of an upgrade: bind or take systemd's sockets".
    /// An error names the variable at fault; the caller exits with status 2, as for a bad
    /// setting.
    pub fn from_env() -> Result<(Upgrade, Option<Vec<Listener>>), String> {
        let read = |key: &str| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned());
        let (pid, fds, inherited) = (read(PID_VAR), read(FD_VAR), read(INHERITED_VAR));
        for key in [PID_VAR, FD_VAR, INHERITED_VAR] {
            // The arbiter is single-threaded here (it starts no threads), so no other thread can
            // be reading the environment while it changes.
            std::env::remove_var(key);
        }
        let Some(pid) = pid else {
            if fds.is_some() {
                crate::warning!("{FD_VAR} is set without {PID_VAR}; ignored");
            }
            return Ok((Upgrade::default(), None));
        };
        let parent: Pid = match pid.trim().parse() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "{PID_VAR}: invalid value '{pid}' (expected a process id)"
                ))
            }
        };
        let all = parse_fds(fds.as_deref().unwrap_or(""), FD_VAR)?;
        let theirs = parse_fds(inherited.as_deref().unwrap_or(""), INHERITED_VAR)?;
        let mut listeners = Vec::with_capacity(all.len());
        for fd in all {
            let mut listener =
                net::adopt(fd).map_err(|e| format!("{FD_VAR}: descriptor {fd}: {e}"))?;
            // Ours to shut down once we are promoted, unless the old master had it from
            // someone else.
            listener.inherited = theirs.contains(&fd);
            listeners.push(listener);
        }
        crate::info!(
            "Taking over {} listening socket(s) from the old master (pid: {parent})",
            listeners.len()
        );
        let upgrade = Upgrade {
            parent: Some(parent),
            ..Upgrade::default()
        };
        Ok((upgrade, (!listeners.is_empty()).then_some(listeners)))
    }

    /// Records the pid file this master wrote, for [`reexec`](Upgrade::reexec) to rename and
    /// [`remove_pidfile`](Upgrade::remove_pidfile) to remove.
    pub fn set_pidfile(&mut self, path: Option<PathBuf>) {
        self.pidfile = path;
    }

    /// The old master that started us, while it is still our parent.
    fn parent_alive(&self) -> Option<Pid> {
        self.parent.filter(|&p| sys::getppid() == p)
    }

    /// The other master of an upgrade, while there is one: then the listening sockets are
    /// shared with it, and a stop must leave them open.
    pub fn shares_listeners(&self) -> Option<Pid> {
        self.child.or_else(|| self.parent_alive())
    }

    /// True while a new master we started runs: WINCH applies only then.
    pub fn has_child(&self) -> bool {
        self.child.is_some()
    }

    /// True when a USR2 now would start a new master: no new master of ours runs, and we are
    /// not the new master of an upgrade whose old master is still there.
    pub fn can_reexec(&self) -> bool {
        self.child.is_none() && self.parent_alive().is_none()
    }

    /// The new master: once the old master has exited we are reparented, and the sockets are
    /// ours alone (gunicorn's `maybe_promote_master`). Called on every pass of the main loop.
    pub fn maybe_promote_master(&mut self) {
        if let Some(parent) = self.parent {
            if sys::getppid() != parent {
                crate::info!("Master has been promoted.");
                self.parent = None;
            }
        }
    }

    /// USR2: starts a new master from the executable on disk, handing it `listeners`.
    ///
    /// The path comes from `/proc/self/exe` now, not at start-up, and what is exec'd is the
    /// path, not `/proc/self/exe` itself: an upgrade installs the new binary under the old
    /// name by writing it elsewhere and renaming it over the old one (as `install`, `cargo
    /// install` and package managers do), after which the link reads `PATH (deleted)` and
    /// still leads to the old, unlinked file. Exec'ing the link would start the old code
    /// again; exec'ing `PATH` starts the new one. A binary removed and not replaced makes the
    /// exec fail, which is logged; this master goes on serving. A symlink switched to another
    /// version's directory is not followed: the link names the file it resolved to at start.
    ///
    /// The command line, working directory (the one minigun was started in, before `--chdir`,
    /// so relative paths in the arguments mean what they meant) and environment are this
    /// master's, as gunicorn's `reexec` uses its `START_CTX`.
    pub fn reexec(&mut self, listeners: &[Listener], start_dir: Option<&Path>) {
        if let Some(child) = self.child {
            crate::warning!("USR2 signal ignored. Child exists (pid: {child}).");
            return;
        }
        if let Some(parent) = self.parent_alive() {
            crate::warning!("USR2 signal ignored. Parent exists (pid: {parent}).");
            return;
        }
        let exe = match executable() {
            Ok(exe) => exe,
            Err(e) => {
                crate::error!("Cannot upgrade: cannot read /proc/self/exe: {e}");
                return;
            }
        };
        self.rename_pidfile(true);
        let join = |fds: &mut dyn Iterator<Item = RawFd>| {
            fds.map(|fd| fd.to_string()).collect::<Vec<_>>().join(",")
        };
        let fds: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
        let mut command = std::process::Command::new(&exe);
        let mut args = std::env::args_os();
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        command
            .args(args)
            .env(PID_VAR, sys::getpid().to_string())
            .env(FD_VAR, join(&mut fds.iter().copied()))
            .env(
                INHERITED_VAR,
                join(
                    &mut listeners
                        .iter()
                        .filter(|l| l.inherited)
                        .map(|l| l.as_raw_fd()),
                ),
            );
        if let Some(dir) = start_dir {
            command.current_dir(dir);
        }
        sys::keep_across_exec(&mut command, fds);
        // std reports a failed exec here, through its own close-on-exec pipe, so "the binary
        // is gone" is an error now rather than a child that exits 127 later. The `Child` is
        // dropped unwaited: `reap_workers` collects it with every other child.
        match command.spawn() {
            Ok(child) => {
                let pid = child.id() as Pid;
                crate::info!(
                    "Upgrading: new master (pid: {pid}) started from {}",
                    exe.display()
                );
                self.child = Some(pid);
            }
            Err(e) => {
                crate::error!(
                    "Cannot start a new master from {}: {e}; this master goes on serving",
                    exe.display()
                );
                self.rename_pidfile(false);
            }
        }
    }

    /// Called for every reaped child that is not a worker. True when it was the new master we
    /// started: the upgrade is over without it, the pid file goes back to its name, and the
    /// caller brings its workers back if WINCH had stopped them.
    pub fn reaped(&mut self, pid: Pid, exit: Exit) -> bool {
        if self.child != Some(pid) {
            return false;
        }
        self.child = None;
        // The pid file first: whoever reads the log line finds it back in place.
        self.rename_pidfile(false);
        match exit {
            Exit::Code(0) => crate::info!("New master (pid:{pid}) exited; this master goes on"),
            Exit::Code(code) => crate::error!(
                "New master (pid:{pid}) exited with code {code}; this master goes on serving"
            ),
            Exit::Signal(sig) => crate::error!(
                "New master (pid:{pid}) was sent signal {sig}; this master goes on serving"
            ),
        }
        true
    }

    /// Moves our pid file to `PIDFILE.oldbin` (`aside`) or back to `PIDFILE`. A pid file we
    /// cannot move is reported and otherwise ignored: the upgrade itself does not need it.
    fn rename_pidfile(&mut self, aside: bool) {
        let Some(path) = &self.pidfile else {
            return;
        };
        if self.oldbin == aside {
            return;
        }
        let old = oldbin_path(path);
        let (from, to) = if aside {
            (path.clone(), old)
        } else {
            (old, path.clone())
        };
        match std::fs::rename(&from, &to) {
            Ok(()) => self.oldbin = aside,
            Err(e) => crate::warning!(
                "Cannot rename pid file {} to {}: {e}",
                from.display(),
                to.display()
            ),
        }
    }

    /// Removes our pid file at a stop, wherever it now is, but only while it still names us:
    /// after a rollback the old master may have taken `PIDFILE` back already.
    pub fn remove_pidfile(&self) {
        let Some(path) = &self.pidfile else {
            return;
        };
        let path = if self.oldbin {
            oldbin_path(path)
        } else {
            path.clone()
        };
        let ours = std::fs::read_to_string(&path)
            .is_ok_and(|text| text.trim() == sys::getpid().to_string());
        if ours {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// `PIDFILE.oldbin`.
pub fn oldbin_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(OLDBIN);
    PathBuf::from(name)
}

/// The path of the running executable, as `/proc/self/exe` names it now; see
/// [`Upgrade::reexec`] for why a `" (deleted)"` suffix is dropped rather than followed.
fn executable() -> std::io::Result<PathBuf> {
    let link = std::fs::read_link("/proc/self/exe")?;
    Ok(strip_deleted(&link))
}

/// `/usr/bin/minigun (deleted)` → `/usr/bin/minigun`: the kernel's mark for a link whose file
/// was unlinked (proc(5)).
fn strip_deleted(link: &Path) -> PathBuf {
    match link.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
        Some(path) => PathBuf::from(OsStr::from_bytes(path)),
        None => link.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_descriptor_lists() {
        assert_eq!(parse_fds("3,4, 7", FD_VAR), Ok(vec![3, 4, 7]));
        assert_eq!(parse_fds("", FD_VAR), Ok(vec![]));
        for bad in ["x", "3,,4", "-1", "3;4"] {
            let err = parse_fds(bad, FD_VAR).expect_err("refused");
            assert!(err.starts_with("MINIGUN_FD: invalid value"), "{bad}: {err}");
        }
    }

    #[test]
    fn exec_path_drops_the_deleted_mark() {
        assert_eq!(
            strip_deleted(Path::new("/usr/bin/minigun (deleted)")),
            PathBuf::from("/usr/bin/minigun")
        );
        assert_eq!(
            strip_deleted(Path::new("/usr/bin/minigun")),
            PathBuf::from("/usr/bin/minigun")
        );
        assert_eq!(
            oldbin_path(Path::new("run/minigun.pid")),
            PathBuf::from("run/minigun.pid.oldbin")
        );
    }
}
