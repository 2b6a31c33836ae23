"""Fixture: reports what the server handed the application.

    app   GET any path  -> the WSGI environ as JSON (plus pid and the app's view of sys)
    body  any method    -> the request body, read through wsgi.input, sent back as it came
    lines any method    -> the body read with readline(), iteration and read(n), as JSON

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


application = app
