"""Fixture for tests/abuse.rs: a large response for clients that read it slowly.

    GET /big?N  -> N MiB of b"b" with a Content-Length, yielded 64 KiB at a time
    GET other   -> "ok\n" at once

The body is a generator, so the worker writes it piece by piece as the client makes room,
the way an app streaming a large file or export does.
"""

BLOCK = b"b" * 65536


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    if environ.get("PATH_INFO") == "/big":
        mib = int(environ.get("QUERY_STRING") or "1")
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(mib << 20))],
        )
        return (BLOCK for _ in range(mib * 16))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
