"""Fixture: records every call to the response iterable's close(), as PEP 3333 requires.

    GET /            -> "hello\n" from an iterable whose close() is counted
    GET /big?n=N     -> N chunks of 64 KiB from a counted iterable (for client disconnects)
    GET /closed      -> "closed=<count>\n", the number of close() calls this worker saw

Run it with one worker so /closed reports on the same process that served the others.
"""

import threading

_lock = threading.Lock()
_closed = 0


class Counted:
    """An iterable over fixed chunks whose close() bumps the module's counter."""

    def __init__(self, chunks):
        self._chunks = chunks

    def __iter__(self):
        return iter(self._chunks)

    def close(self):
        global _closed
        with _lock:
            _closed += 1


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    path = environ.get("PATH_INFO", "/")
    if path == "/closed":
        with _lock:
            body = f"closed={_closed}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/big":
        query = environ.get("QUERY_STRING", "")
        n = int(query[2:]) if query.startswith("n=") else 64
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Counted([b"x" * 65536 for _ in range(min(n, 4096))])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return Counted([b"hello\n"])


application = app
