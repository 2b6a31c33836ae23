"""Fixture for the protocol tests (tests/http.rs, tests/wsgi.rs): one route per behaviour.

Routes are chosen by PATH_INFO; each one exercises one rule of PEP 3333 or of the server's
framing, so a failing test points at one thing.
"""

import json
import os
import tempfile
import time

CLOSED = []
FILE = os.path.join(tempfile.gettempdir(), "minigun-proto-%d.bin" % os.getpid())
with open(FILE, "wb") as f:
    f.write(bytes(range(256)) * 4096)  # 1 MiB


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Closing:
    """An iterable that records close() calls; /closed reports them."""

    def __init__(self, chunks, name, fail=False):
        self.chunks = chunks
        self.name = name
        self.fail = fail

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        CLOSED.append(self.name)
        if self.fail:
            raise RuntimeError("close() failed on purpose")


def _raising_generator():
    yield b"first part;"
    raise RuntimeError("failure in the middle of the body")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!\n"]
    if path == "/environ":
        report = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        report["wsgi.input.type"] = type(environ["wsgi.input"]).__name__
        return _json(start_response, report)
    if path == "/echo":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))])
        return [data]
    if path == "/echo-chunks":
        stream = environ["wsgi.input"]
        size = int(query or "65536")
        total = 0
        while True:
            block = stream.read(size)
            if not block:
                break
            total += len(block)
        return _json(start_response, {"total": total})
    if path == "/no-read":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"did not read the body\n"]
    if path == "/parts":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"", b"bc", b"def"] if query != "tuple" else (b"a", b"bc", b"def")
    if path == "/chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d;" % i for i in range(3))
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/not-modified":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return [b"must not be sent"]
    if path == "/raise-before":
        raise RuntimeError("failure before start_response")
    if path == "/raise-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("failure after start_response")
    if path == "/raise-mid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _raising_generator()
    if path == "/raise-mid-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return _raising_generator()
    if path == "/twice":
        start_response("200 OK", [])
        start_response("500 Oops", [])
        return [b"unreachable"]
    if path == "/exc-info":
        try:
            raise ValueError("handled by the app")
        except ValueError:
            import sys
            start_response("200 OK", [("X-First", "1")])
            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"replaced status\n"]
    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str is not bytes"]
    if path == "/crlf-header":
        start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")])
        return [b"should never be sent\n"]
    if path == "/bad-status":
        start_response("200 OK\r\nX: y", [])
        return [b"should never be sent\n"]
    if path == "/close-raises":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"body is complete\n"], "close-raises", fail=True)
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"a", b"b"], query or "closing")
    if path == "/closed":
        return _json(start_response, {"closed": CLOSED, "pid": os.getpid()})
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        return [b"then returned\n"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(FILE, "rb"), 65536)
    if path == "/file-offset":
        f = open(FILE, "rb")
        f.seek(1000)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/sleep":
        time.sleep(float(query or "1"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept\n"]
    if path == "/connection-close":
        start_response("200 OK", [("Connection", "close"), ("Content-Length", "3")])
        return [b"bye"]
    if path == "/long-body":
        start_response("200 OK", [("Content-Length", "2")])
        return [b"too long"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
