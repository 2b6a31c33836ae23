"""Fixture for tests/metrics.rs and tests/logs.rs: a few pages whose status, headers and timing
the access log and the statsD metrics report.

    GET /            -> 200 "ok\n", with an X-Resp response header
    GET /missing     -> 404
    GET /empty       -> 204, no body
    GET /boom        -> raises before start_response: a 500 and an exception in the error log
    GET /sleep?s=N   -> sleeps N seconds (at most 10), then 200

Before sleeping, /sleep writes one line to stderr (which the server passes through), so a test
can wait until a request is really inside the app.
"""

import os
import time


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    path = environ.get("PATH_INFO", "/")
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not here\r\n"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/boom":
        raise RuntimeError("metrics-app: /boom fails on purpose")
    if path == "/sleep":
        query = environ.get("QUERY_STRING", "")
        seconds = min(float(query[2:]) if query.startswith("s=") else 1.0, 10.0)
        os.write(2, f"metrics-app: sleeping {seconds}s pid={os.getpid()}\n".encode())
        time.sleep(seconds)
    body = b"ok\n"
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(body))),
            ("X-Resp", "resp-value"),
        ],
    )
    return [body]
