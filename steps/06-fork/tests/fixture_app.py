"""A stdlib-only WSGI app for the step tests (and for trying the step by hand).

Paths:
  /          Hello, World!
  /environ   the environ's string values as JSON, plus the types of a few wsgi.* keys
  /echo      the request body, sent back
  /write     a body sent through the legacy write() callable, then one more item
  /error     raises, so the server must answer 500
  /slow      touches $FIXTURE_DIR/slow-started, sleeps one second, then answers
  /pid       the pid of the process that ran the app
  /cpu       a few milliseconds of pure-Python arithmetic (holds the GIL throughout)
  /path/...  PATH_INFO encoded back to bytes as latin-1 (PEP 3333's round trip)

Every response body is an iterable whose close() appends one line to
$FIXTURE_DIR/closed.log, so a test can check that the server called it.
"""
import json
import os
import time


class Body:
    """A WSGI result iterable that records close() calls (PEP 3333 requires them)."""

    def __init__(self, chunks, path):
        self.chunks = chunks
        self.path = path

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        directory = os.environ.get("FIXTURE_DIR")
        if directory:
            with open(os.path.join(directory, "closed.log"), "a") as log:
                log.write(self.path + "\n")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/environ":
        values = {k: v for k, v in environ.items() if isinstance(v, str)}
        values["wsgi.version"] = list(environ["wsgi.version"])
        values["wsgi.input"] = type(environ["wsgi.input"]).__name__
        values["wsgi.multithread"] = environ["wsgi.multithread"]
        values["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return Body([json.dumps(values, sort_keys=True).encode()], path)
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        start_response("200 OK", text)
        return Body([data], path)
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written, ")
        return Body([b"then iterated\n"], path)
    if path == "/error":
        raise RuntimeError("the fixture fails on purpose")
    if path == "/slow":
        directory = os.environ.get("FIXTURE_DIR")
        if directory:
            open(os.path.join(directory, "slow-started"), "w").close()
        time.sleep(1)
        start_response("200 OK", text)
        return Body([b"slow done\n"], path)
    if path == "/cpu":
        total = sum(i * i for i in range(100_000))
        start_response("200 OK", text)
        return Body([f"{total}\n".encode()], path)
    if path == "/pid":
        start_response("200 OK", text)
        return Body([f"{os.getpid()}\n".encode()], path)
    if path.startswith("/path/"):
        start_response("200 OK", text)
        return Body([path.encode("latin-1")], path)
    start_response("200 OK", text)
    return Body([b"Hello, World!\n"], path)
