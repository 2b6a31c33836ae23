//! `wsgi.input` (PEP 3333 §"Input and Error Streams") over a body that has already arrived.
//!
//! The worker's event loop reads every request body before it calls the app (see `conn`): a
//! client that uploads slowly then holds a parked connection, not a thread, so thirty-two
//! slow uploaders cannot keep a worker's threads from the requests that are ready. The body
//! waits in a [`Spool`]: memory up to [`SPOOL_MEMORY`], an anonymous temporary file beyond it
//! (the way waitress spools), so a 100 MiB upload costs the worker 64 KiB of memory.
//!
//! The app reads the spool through [`Input`], which never touches the socket, never waits and
//! never releases the GIL. It holds the body in a [`Lease`] that the request's end revokes:
//! an `Input` kept past its request raises instead of reading, and the temporary file goes
//! away with the request.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::client::Lease;
use crate::sys;

/// Body bytes kept in memory; a longer body goes to a temporary file.
pub const SPOOL_MEMORY: usize = 64 * 1024;

/// A request body: collected by the event loop, read by the app.
#[derive(Default)]
pub struct Spool {
    /// The body while it is short, and nothing once it moved to `file`.
    mem: Vec<u8>,
    /// The anonymous file holding the body once it outgrew [`SPOOL_MEMORY`].
    file: Option<OwnedFd>,
    /// Bytes stored.
    len: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Spool({} bytes{})",
            self.len,
            if self.file.is_some() { ", on disk" } else { "" }
        )
    }
}

/// Where temporary body files go: `$TMPDIR`, else `/tmp`.
fn spool_dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(std::env::temp_dir)
}

impl Spool {
    /// A body that is all here already.
    pub fn from_vec(mem: Vec<u8>) -> Spool {
        let len = mem.len() as u64;
        Spool {
            mem,
            file: None,
            len,
        }
    }

    /// Bytes stored.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends body bytes, moving the body to a temporary file once it outgrows memory.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.mem.len() + data.len() > SPOOL_MEMORY {
            let file = sys::anonymous_file(spool_dir())?;
            sys::pwrite_all(file.as_raw_fd(), &self.mem, 0)?;
            self.mem = Vec::new();
            self.file = Some(file);
        }
        match &self.file {
            Some(file) => sys::pwrite_all(file.as_raw_fd(), data, self.len)?,
            None => self.mem.extend_from_slice(data),
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Copies up to `out.len()` bytes from `offset`; returns how many.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<usize> {
        let want = out.len().min(self.len.saturating_sub(offset) as usize);
        match &self.file {
            Some(file) => sys::pread_full(file.as_raw_fd(), &mut out[..want], offset),
            None => {
                let start = offset as usize;
                out[..want].copy_from_slice(&self.mem[start..start + want]);
                Ok(want)
            }
        }
    }
}

/// A body and how far the app has read it.
#[derive(Debug, Default)]
pub struct Cursor {
    spool: Spool,
    pos: u64,
}

impl Cursor {
    /// A cursor at the start of `spool`.
    pub fn new(spool: Spool) -> Cursor {
        Cursor { spool, pos: 0 }
    }

    /// Bytes not read yet.
    fn left(&self) -> u64 {
        self.spool.len - self.pos
    }

    /// Reads `size` bytes, fewer only at the end of the body (all that is left when `None`):
    /// like a file, and unlike a socket, a sized read returns short only at the end, which
    /// frameworks such as WebOb rely on.
    pub fn read(&mut self, size: Option<usize>) -> io::Result<Vec<u8>> {
        let n = size.map_or(self.left(), |s| (s as u64).min(self.left())) as usize;
        let mut out = vec![0u8; n];
        let got = self.spool.read_at(self.pos, &mut out)?;
        out.truncate(got);
        self.pos += got as u64;
        Ok(out)
    }

    /// Reads one line, up to and including `\n`, or at most `size` bytes.
    pub fn readline(&mut self, size: Option<usize>) -> io::Result<Vec<u8>> {
        let limit = size.map_or(self.left(), |s| (s as u64).min(self.left())) as usize;
        if self.spool.file.is_none() {
            let start = self.pos as usize;
            let window = &self.spool.mem[start..start + limit];
            let n = window
                .iter()
                .position(|&b| b == b'\n')
                .map_or(limit, |i| i + 1);
            self.pos += n as u64;
            return Ok(window[..n].to_vec());
        }
        let mut out = Vec::new();
        let mut block = [0u8; 8192];
        while out.len() < limit {
            let want = block.len().min(limit - out.len());
            let got = self.spool.read_at(self.pos, &mut block[..want])?;
            if got == 0 {
                break;
            }
            let n = block[..got]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(got, |i| i + 1);
            out.extend_from_slice(&block[..n]);
            self.pos += n as u64;
            if n < got || block[n - 1] == b'\n' {
                break;
            }
        }
        Ok(out)
    }
}

/// The `wsgi.input` object.
#[pyclass(module = "minigun", frozen)]
pub struct Input {
    /// The body while the request runs; revoked when it ends.
    body: Lease<Cursor>,
}

impl Input {
    /// A stream over `spool`.
    pub fn new(spool: Spool) -> Input {
        Input {
            body: Lease::new(Cursor::new(spool)),
        }
    }

    /// Ends the stream at the end of its request: later reads raise, and the body's memory or
    /// temporary file is freed.
    pub fn revoke(&self, py: Python<'_>) {
        drop(super::lock_lease(py, &self.body).take());
    }

    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mut Cursor) -> io::Result<T>) -> PyResult<T> {
        let mut guard = super::lock_lease(py, &self.body);
        let cursor = guard.as_mut().ok_or_else(|| {
            PyValueError::new_err("wsgi.input was used after its request had ended")
        })?;
        f(cursor).map_err(|e| PyOSError::new_err(format!("cannot read the request body: {e}")))
    }
}

/// PEP 3333 allows `None` or a negative size to mean "all".
fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes, or the rest of the body.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with(py, |c| c.read(size_arg(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readline(size=-1)`: one line, at most `size` bytes.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with(py, |c| c.readline(size_arg(size)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readlines(hint=-1)`: lines until the body ends or `hint` bytes were read.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|h| *h > 0);
        let list = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with(py, |c| c.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            list.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with(py, |c| c.readline(None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    /// Accepted and ignored: the server owns the body.
    fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(body: &[u8]) -> Cursor {
        let mut spool = Spool::default();
        for piece in body.chunks(7000) {
            spool.append(piece).expect("append");
        }
        Cursor::new(spool)
    }

    #[test]
    fn reads_lines_and_blocks_from_memory_and_from_disk() {
        let mut text = Vec::new();
        for i in 0..20_000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        assert!(text.len() > SPOOL_MEMORY);
        for body in [&text[..1000], &text[..]] {
            let mut c = cursor(body);
            assert_eq!(c.readline(None).expect("line"), b"line 0\n");
            assert_eq!(c.readline(Some(3)).expect("part"), b"lin");
            assert_eq!(c.read(Some(4)).expect("read"), b"e 1\n");
            let rest = c.read(None).expect("rest");
            assert_eq!(rest, &body[14..]);
            assert!(c.read(Some(10)).expect("end").is_empty());
            assert!(c.readline(None).expect("end").is_empty());
        }
    }

    #[test]
    fn a_long_line_on_disk_is_read_whole() {
        let mut body = vec![b'x'; 3 * SPOOL_MEMORY];
        body.push(b'\n');
        body.extend_from_slice(b"tail");
        let mut c = cursor(&body);
        assert_eq!(c.readline(None).expect("line").len(), 3 * SPOOL_MEMORY + 1);
        assert_eq!(c.readline(None).expect("tail"), b"tail");
    }
}
