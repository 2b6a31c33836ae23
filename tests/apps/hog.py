"""Fixture for --max-worker-rss: a worker whose memory grows on request, and stays grown.

    GET /            -> "pid=<worker pid>\n"
    GET /grow?mb=N   -> allocates N MiB (at most 1024), keeps it for the life of the worker,
                        then answers "pid=<worker pid>\n"

With HOG_MB_AT_IMPORT=N in the environment every worker allocates N MiB while it imports the
app, so each one boots over a limit below that.

The memory is a bytes object of N MiB of b"x": filling it touches every page, so the pages count
in the resident size at once (zeroed memory from a fresh mapping would not until written).
"""

import os

_kept = []
_at_import = int(os.environ.get("HOG_MB_AT_IMPORT", "0"))
if _at_import:
    _kept.append(b"x" * (_at_import << 20))


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    if environ.get("PATH_INFO") == "/grow":
        query = environ.get("QUERY_STRING", "")
        mb = int(query[3:]) if query.startswith("mb=") else 1
        _kept.append(b"x" * (min(mb, 1024) << 20))
    body = f"pid={os.getpid()}\n".encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
