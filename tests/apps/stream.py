"""Fixture: a body produced by a generator, one chunk at a time.

    GET /?chunks=N&delay=S -> N chunks "chunk i\n", sleeping S seconds after each (S <= 2)

The first chunk is yielded before any sleep, so a server that streams delivers it at once and a
server that buffers the whole body holds it back for N * S seconds.
"""

import time
from urllib.parse import parse_qs


def app(environ, start_response):
    """Streams the chunks described in the module docstring; sets no Content-Length."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    chunks = min(int(query.get("chunks", ["3"])[0]), 10_000)
    delay = min(float(query.get("delay", ["0"])[0]), 2.0)
    start_response("200 OK", [("Content-Type", "text/plain")])

    def generate():
        for i in range(chunks):
            yield f"chunk {i}\n".encode()
            if delay:
                time.sleep(delay)

    return generate()


application = app
