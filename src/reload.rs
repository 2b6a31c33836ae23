//! `--reload`: new workers when the app's source changes, for development.
//!
//! What is watched is what gunicorn's reloader (`gunicorn/reloader.py`) watches: the file of
//! every module in `sys.modules` once the app is imported (a cached `.pyc` stands for its
//! `.py`), the standard library and site-packages included, so `pip install -U` of a
//! dependency reloads too; plus each `--reload-extra-file`. As gunicorn's inotify reloader
//! does, we watch the *directories* those files live in, because editors save by writing a
//! new file and renaming it over the old one, which would end a watch on the file itself. An
//! event counts when it names a file we were told about, or any `.py` file that is not an
//! editor's hidden or lock file (`.name.py`, `#name.py#`): a module added next to the others
//! and imported by the new code is then watched before it was ever loaded, so fixing a syntax
//! error in it reloads.
//!
//! Where the watcher runs, and why: in the arbiter. The arbiter decides generations (the HUP
//! path: a new generation boots, the old one retires only once the new one serves, and stays
//! if the new one cannot load the app), so a change becomes exactly a HUP, and a syntax error
//! leaves the old code serving with its traceback logged once. gunicorn's watcher is a thread
//! in each worker that makes its own worker exit, so a broken edit leaves no worker with the
//! old code (gunicorn then answers every request with the traceback), and N workers watch the
//! same files N times. But the arbiter has no Python (unless `--preload`, which `--reload`
//! refuses, since a preloaded app cannot be re-imported by new workers), so it cannot read
//! `sys.modules`: each worker, once it has imported the app (or failed to), writes its module
//! files to a pipe the arbiter made before forking ([`report_modules`]), one path per line,
//! and the arbiter adds the watches.
//!
//! Changes are gathered for [`QUIET_MS`] after the last one (at most [`MAX_WAIT_MS`] after the
//! first), so saving several files, or `git checkout`, reloads once.
//!
//! Python validates a cached `.pyc` by its source's modification time in whole seconds and its
//! size, so an edit that keeps the size within the same second would be served from the stale
//! cache. With `--reload` the workers therefore write no bytecode
//! (`PYTHONDONTWRITEBYTECODE=1`, set in the arbiter's environment before the first fork): app
//! modules are compiled from source at each boot, which a development server can afford.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::prelude::*;

use crate::sys::{self, Inotify, InotifyEvent};

/// How long after the last change a reload waits for more.
pub const QUIET_MS: u64 = 100;
/// The longest a reload waits after the first change, however busy the files are.
pub const MAX_WAIT_MS: u64 = 1000;

/// What a directory watch reports: a file closed after writing, renamed in or out, deleted, or
/// its times changed (`touch app.py` reloads, as with gunicorn's polling reloader).
const WATCH_MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR;

/// Writes of at most this many bytes to a pipe are atomic (pipe(7)): whole lines from workers
/// booting at the same moment never interleave.
const PIPE_BUF: usize = libc::PIPE_BUF;

/// How long a worker may wait for room in the report pipe before it gives up reporting.
const REPORT_WAIT_MS: u64 = 5000;

/// The write end of the report pipe, set by the arbiter before it forks and inherited by every
/// worker (-1: no `--reload`). A static rather than a field of `worker::Setup`, so the worker
/// needs one call and no new parameter to take part.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// The arbiter's side: the watches, the workers' reports, and the change waiting to act on.
pub struct Reloader {
    inotify: Inotify,
    /// Read end of the report pipe.
    reports: OwnedFd,
    /// Kept open for the workers forked later; they inherit it.
    _report_write: OwnedFd,
    /// A report line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Watched directories by watch descriptor.
    dirs: HashMap<i32, PathBuf>,
    /// The same directories, to add each watch once.
    watched: HashSet<PathBuf>,
    /// Files named exactly: extension modules, `.pyc`-only modules, `--reload-extra-file`.
    files: HashSet<PathBuf>,
    /// The first change not acted on yet, and when the first and the last change came (ms).
    change: Option<(PathBuf, u64, u64)>,
    /// The watch limit was reached once: said once.
    warned_limit: bool,
}

impl Reloader {
    /// Creates the inotify instance and the report pipe, watches the extra files, and
    /// arranges for workers to report their modules. Called once, before the first fork.
    pub fn start(extra_files: &[PathBuf]) -> io::Result<Reloader> {
        let inotify = Inotify::new()?;
        let (reports, report_write) = sys::pipe()?;
        REPORT_FD.store(report_write.as_raw_fd(), Ordering::Relaxed);
        // The arbiter is single-threaded and has started no interpreter yet.
        std::env::set_var("PYTHONDONTWRITEBYTECODE", "1");
        let mut reloader = Reloader {
            inotify,
            reports,
            _report_write: report_write,
            partial: Vec::new(),
            dirs: HashMap::new(),
            watched: HashSet::new(),
            files: HashSet::new(),
            change: None,
            warned_limit: false,
        };
        for file in extra_files {
            reloader.files.insert(file.clone());
            reloader.watch_file(file);
        }
        Ok(reloader)
    }

    /// The descriptors the arbiter's sleep must wake for.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.inotify.fd(), self.reports.as_raw_fd()]
    }

    /// True while a change waits out its quiet period: the arbiter then polls often.
    pub fn pending(&self) -> bool {
        self.change.is_some()
    }

    /// Takes in the workers' reports and the kernel's events; returns the changed file once a
    /// reload is due.
    pub fn poll(&mut self) -> Option<PathBuf> {
        self.read_reports();
        let now = sys::monotonic_ms();
        for event in self.inotify.read_events() {
            if let Some(path) = self.changed_file(&event) {
                crate::debug!("Reloader: {} changed", path.display());
                self.change = match self.change.take() {
                    None => Some((path, now, now)),
                    Some((first, since, _)) => Some((first, since, now)),
                };
            }
        }
        let (_, first, last) = self.change.as_ref()?;
        if now >= (last + QUIET_MS).min(first + MAX_WAIT_MS) {
            return self.change.take().map(|(path, _, _)| path);
        }
        None
    }

    /// Reads whole lines from the report pipe and watches the directory of each file named.
    fn read_reports(&mut self) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = sys::read(self.reports.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            self.partial.extend_from_slice(&buf[..n]);
        }
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let lines: Vec<u8> = self.partial.drain(..=end).collect();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let path = PathBuf::from(OsStr::from_bytes(line));
            if !is_source(&path) {
                self.files.insert(path.clone());
            }
            self.watch_file(&path);
        }
    }

    /// Watches the directory `file` lives in, once.
    fn watch_file(&mut self, file: &Path) {
        let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return;
        };
        if self.watched.contains(dir) {
            return;
        }
        self.watched.insert(dir.to_owned());
        match self.inotify.add_watch(dir, WATCH_MASK) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_owned());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if !self.warned_limit {
                    self.warned_limit = true;
                    crate::warning!(
                        "Cannot watch {} for --reload: the inotify watch limit is reached \
                         (raise fs.inotify.max_user_watches); changes there are missed",
                        dir.display()
                    );
                }
            }
            Err(e) => crate::warning!("Cannot watch {} for --reload: {e}", dir.display()),
        }
    }

    /// The file an event is about, when it is one whose change reloads.
    fn changed_file(&mut self, event: &InotifyEvent) -> Option<PathBuf> {
        if event.mask & libc::IN_Q_OVERFLOW != 0 {
            // The kernel dropped events: something changed, we cannot tell what.
            return Some(PathBuf::from("(events lost: inotify queue overflow)"));
        }
        if event.mask & libc::IN_IGNORED != 0 {
            // The directory is gone (or was unmounted); its watch with it.
            if let Some(dir) = self.dirs.remove(&event.wd) {
                self.watched.remove(&dir);
            }
            return None;
        }
        let path = self.dirs.get(&event.wd)?.join(&event.name);
        let name = event.name.as_bytes();
        let editor_file = name.starts_with(b".") || name.starts_with(b"#");
        let counts = self.files.contains(&path) || (is_source(&path) && !editor_file);
        counts.then_some(path)
    }
}

/// A Python source file, by its name.
fn is_source(path: &Path) -> bool {
    path.extension() == Some(OsStr::new("py"))
}

/// Called by a worker once it has imported the app, or failed to: tells the arbiter which
/// files the app was imported from. Does nothing without `--reload`. A report that cannot be
/// written is given up after [`REPORT_WAIT_MS`]: the worker must boot whatever happens, and
/// the arbiter then watches less.
pub fn report_modules() {
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let files = match Python::attach(module_files) {
        Ok(files) => files,
        Err(e) => {
            crate::warning!("--reload: cannot list the app's modules: {e}");
            return;
        }
    };
    let deadline = sys::monotonic_ms() + REPORT_WAIT_MS;
    let mut chunk = Vec::with_capacity(PIPE_BUF);
    for file in files {
        let bytes = file.as_os_str().as_bytes();
        // A path holds no newline we could frame, and never exceeds PATH_MAX (PIPE_BUF here).
        if bytes.contains(&b'\n') || bytes.len() >= PIPE_BUF {
            continue;
        }
        if chunk.len() + bytes.len() + 1 > PIPE_BUF && !send(fd, &mut chunk, deadline) {
            return;
        }
        chunk.extend_from_slice(bytes);
        chunk.push(b'\n');
    }
    send(fd, &mut chunk, deadline);
}

/// Writes `chunk` (at most PIPE_BUF bytes, so in one piece) and clears it; false when the
/// pipe stayed full until `deadline`.
fn send(fd: RawFd, chunk: &mut Vec<u8>, deadline: u64) -> bool {
    while !chunk.is_empty() {
        match sys::write(fd, chunk) {
            Ok(_) => chunk.clear(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_sub(sys::monotonic_ms());
                if left == 0 {
                    crate::warning!("--reload: the arbiter did not take this worker's file list");
                    return false;
                }
                let _ = sys::poll_one(fd, sys::Ready::Write, left.min(1000) as i32);
            }
            Err(e) => {
                crate::warning!("--reload: cannot send this worker's file list: {e}");
                return false;
            }
        }
    }
    true
}

/// The file of every module in `sys.modules`, absolute, with `.pyc` turned into `.py` as
/// gunicorn's reloader does (`re.sub('py[co]$', 'py', fname)`). Modules without a file
/// (built-in, frozen, namespace packages) are skipped.
fn module_files(py: Python<'_>) -> PyResult<Vec<PathBuf>> {
    let modules = py.import("sys")?.getattr("modules")?;
    // A copy: reading an attribute may import (lazy modules), which would change the dict
    // while we walk it.
    let values = py
        .import("builtins")?
        .getattr("list")?
        .call1((modules.call_method0("values")?,))?;
    let mut files = Vec::new();
    for module in values.try_iter()? {
        let Ok(file) = module?.getattr("__file__") else {
            continue;
        };
        let Ok(file) = file.extract::<PathBuf>() else {
            continue;
        };
        let bytes = file.as_os_str().as_bytes();
        let file = match bytes
            .strip_suffix(b"c")
            .or_else(|| bytes.strip_suffix(b"o"))
        {
            Some(source) if source.ends_with(b".py") => PathBuf::from(OsStr::from_bytes(source)),
            _ => file,
        };
        if let Ok(file) = std::path::absolute(&file) {
            files.push(file);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloader() -> Reloader {
        let (reports, report_write) = sys::pipe().expect("pipe");
        Reloader {
            inotify: Inotify::new().expect("inotify"),
            reports,
            _report_write: report_write,
            partial: Vec::new(),
            dirs: HashMap::from([(1, PathBuf::from("/srv/app"))]),
            watched: HashSet::new(),
            files: HashSet::from([PathBuf::from("/srv/app/settings.toml")]),
            change: None,
            warned_limit: false,
        }
    }

    fn event(name: &str, mask: u32) -> InotifyEvent {
        InotifyEvent {
            wd: 1,
            mask,
            name: name.into(),
        }
    }

    #[test]
    fn counts_sources_and_named_files_not_editor_droppings() {
        let mut r = reloader();
        let changed = |r: &mut Reloader, name| r.changed_file(&event(name, libc::IN_CLOSE_WRITE));
        assert_eq!(
            changed(&mut r, "views.py"),
            Some(PathBuf::from("/srv/app/views.py"))
        );
        assert_eq!(
            changed(&mut r, "settings.toml"),
            Some(PathBuf::from("/srv/app/settings.toml"))
        );
        for ignored in [
            ".views.py.swp",
            "views.py~",
            "4913",
            ".#views.py",
            "#views.py#",
            "notes.txt",
        ] {
            assert_eq!(changed(&mut r, ignored), None, "{ignored}");
        }
        assert_eq!(
            r.changed_file(&InotifyEvent {
                wd: 7,
                mask: libc::IN_CLOSE_WRITE,
                name: "x.py".into()
            }),
            None,
            "an unknown watch"
        );
        assert!(r.changed_file(&event("", libc::IN_Q_OVERFLOW)).is_some());
        assert_eq!(r.changed_file(&event("", libc::IN_IGNORED)), None);
        assert!(
            r.dirs.is_empty(),
            "the removed directory's watch is forgotten"
        );
    }

    #[test]
    fn decodes_inotify_records() {
        let mut raw = Vec::new();
        for (wd, mask, name) in [(1i32, libc::IN_MOVED_TO, &b"app.py\0\0"[..]), (2, 8, b"")] {
            raw.extend_from_slice(&wd.to_ne_bytes());
            raw.extend_from_slice(&mask.to_ne_bytes());
            raw.extend_from_slice(&0u32.to_ne_bytes());
            raw.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            raw.extend_from_slice(name);
        }
        raw.extend_from_slice(&[1, 0, 0]); // a truncated record is dropped
        let mut events = Vec::new();
        sys::parse_inotify_events(&raw, &mut events);
        assert_eq!(
            events,
            vec![
                InotifyEvent {
                    wd: 1,
                    mask: libc::IN_MOVED_TO,
                    name: "app.py".into()
                },
                InotifyEvent {
                    wd: 2,
                    mask: 8,
                    name: "".into()
                },
            ]
        );
    }
}
