"""Fixture: reports what the server handed the application.

    app   GET any path  -> the WSGI environ as JSON (plus pid and the app's view of sys)
    body  any method    -> the request body, read through wsgi.input, sent back as it came
    lines any method    -> the body read with readline(), iteration and read(n), as JSON
    sized POST          -> reads CONTENT_LENGTH bytes with read(65536) as WebOb does, and says
                           whether any read came back short before the end

Module-level state records the pid that imported the module, so a test can tell whether the
app was imported in the master (--preload) or in each worker.
"""

import json
import os
import sys

IMPORT_PID = os.getpid()


def app(environ, start_response):
    """Answers with the environ's plain values as a JSON object."""
    report = {
        key: value
        for key, value in environ.items()
        if isinstance(value, (str, int, float, bool, tuple)) or value is None
    }
    report["pid"] = os.getpid()
    report["import_pid"] = IMPORT_PID
    report["sys.prefix"] = sys.prefix
    report["sys.path"] = sys.path
    name = environ.get("QUERY_STRING", "")
    if name.startswith("osenv="):
        report["osenv"] = os.environ.get(name[len("osenv="):])
    body = json.dumps(report, sort_keys=True).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def body(environ, start_response):
    """Echoes the request body; no Content-Length in the answer, so it goes out chunked."""
    data = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [data]


def lines(environ, start_response):
    """Reads the body in the three ways apps do and reports each piece it got."""
    stream = environ["wsgi.input"]
    first = stream.readline()
    capped = stream.readline(4)
    rest_of_line = stream.readline()
    iterated = [line for _, line in zip(range(2), stream)]
    sized = stream.read(3)
    remainder = stream.read()
    after_end = stream.read()
    pieces = [first, capped, rest_of_line, *iterated, sized, remainder, after_end]
    body = json.dumps([p.decode("latin-1") for p in pieces]).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def sized(environ, start_response):
    """Reads the body in 64 KiB read(n) calls and reports the first short one before the end.

    A file's read(n) returns n bytes unless the data ends first; WebOb (so Pyramid) relies on
    it and takes a short read for a client that disconnected.
    """
    stream = environ["wsgi.input"]
    expected = int(environ.get("CONTENT_LENGTH") or 0)
    got = 0
    short = None
    while got < expected:
        want = min(65536, expected - got)
        data = stream.read(want)
        if len(data) < want and short is None:
            short = f"read({want}) gave {len(data)} bytes after {got} of {expected}"
        if not data:
            break
        got += len(data)
    text = f"read {got} bytes; short read: {short}\n"
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

application = app
