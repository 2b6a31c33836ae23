"""Fixture for the process tests: a fast page, a slow page and a page that never answers.

    GET /            -> "pid=<worker pid>\n" at once
    GET /sleep?s=N   -> sleeps N seconds (at most 30), then "slept pid=<pid>\n"
    GET /hang        -> sleeps for an hour: the worker stops answering its heartbeat

Before sleeping, /sleep and /hang write one line to stderr, which the server passes through to
its own stderr, so a test can wait until a request is really in the app instead of guessing.
"""

import os
import time


def _say(line):
    """Writes one whole line to stderr in a single write(2), so lines from concurrent
    requests cannot interleave the way print()'s separate writes of text and newline can."""
    os.write(2, f"{line}\n".encode())


def _reply(start_response, text):
    body = text.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    path = environ.get("PATH_INFO", "/")
    pid = os.getpid()
    if path == "/sleep":
        query = environ.get("QUERY_STRING", "")
        seconds = float(query[2:]) if query.startswith("s=") else 1.0
        seconds = min(seconds, 30.0)
        _say(f"slow-app: sleeping {seconds}s pid={pid}")
        time.sleep(seconds)
        return _reply(start_response, f"slept pid={pid}\n")
    if path == "/hang":
        _say(f"slow-app: hanging pid={pid}")
        time.sleep(3600)
        return _reply(start_response, "woke up\n")
    return _reply(start_response, f"pid={pid}\n")


application = app
