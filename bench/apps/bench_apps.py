"""The WSGI apps every server in the benchmark runs.

Each workload of ``bench/bench.py`` loads one callable from this module as
``bench_apps:NAME``; the apps stay as small as PEP 3333 allows so that the
figures measure the server, not the app. Standard library only: every server
under test imports this file with its own interpreter.

The 1 MiB file for ``file_1m`` is created by the harness at setup (see
``bench/bench.py`` ``make_data_file``) at the path in ``DATA_FILE``.
"""

import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: The file served by ``file_1m`` (1 MiB of bytes, made by the harness).
DATA_FILE = os.environ.get(
    "BENCH_DATA_FILE", os.path.join(HERE, "..", "out", "data", "1mib.bin")
)

HELLO = b"Hello, world!"  # 13 bytes, as in the "hello (13 B)"
TEN_KIB = b"x" * 10240


def hello(environ, start_response):
    """13-byte body with a Content-Length: the fast path of every server."""
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))],
    )
    return [HELLO]


def get_10k(environ, start_response):
    """10 KiB body in one bytes object: one write (or writev) of head and body."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(TEN_KIB))),
        ],
    )
    return [TEN_KIB]


def echo(environ, start_response):
    """Reads the whole request body and sends it back through an iterable.

    The body goes back in 1 KiB pieces from a generator, so the server has to
    iterate the result rather than write one bytes object; the
    Content-Length is known up front, as a real echo/proxy app would set it.
    """
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(body))),
        ],
    )

    def pieces():
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    return pieces()


def sleep_10ms(environ, start_response):
    """Blocks 10 ms like an app waiting on a database: only threads help here."""
    time.sleep(0.010)
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))],
    )
    return [HELLO]


CHUNK_1K = b"y" * 1024


def stream(environ, start_response):
    """100 x 1 KiB from a generator with no Content-Length.

    The server must frame it itself: chunked transfer coding on HTTP/1.1
    (or close-delimited), and it must not wait on delayed ACKs between the
    small writes.
    """
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def chunks():
        for _ in range(100):
            yield CHUNK_1K

    return chunks()


def file_1m(environ, start_response):
    """A 1 MiB file through ``wsgi.file_wrapper`` (sendfile where the server can)."""
    f = open(DATA_FILE, "rb")
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(size)),
        ],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 65536)
    return _read_in_blocks(f)


def _read_in_blocks(f):
    """PEP 3333's fallback for servers without a file_wrapper; closes the file."""
    with f:
        while True:
            block = f.read(65536)
            if not block:
                return
            yield block
