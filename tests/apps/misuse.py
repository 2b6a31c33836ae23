"""Fixture for tests/connection.rs: apps that misuse the server, and big transfers to cut.

    GET  /pid                 -> this worker's pid
    GET  /big?mb=N            -> N MiB (a repeating 0..255 pattern) yielded in 64 KiB blocks,
                                 with Content-Length
    GET  /file?mb=N           -> the same bytes from a real file through wsgi.file_wrapper
                                 (sendfile)
    POST /upload              -> reads wsgi.input in 64 KiB blocks; JSON {"total", "sha256"}
    POST /two-readers         -> two threads read wsgi.input at once; JSON {"total", "sha256"}
    POST /no-read             -> answers without reading the body
    GET  /keep-write          -> answers, and keeps its write() callable
    GET  /use-kept-write      -> calls the write() kept by /keep-write, then answers with its
                                 own body naming what the call raised
    GET  /status?s=TEXT       -> start_response(TEXT, []) with TEXT percent-decoded
    GET  /headers?kind=K      -> start_response with malformed headers of kind K
    GET  /write-then-file?cl=1 -> write()s ten bytes, then returns a 100-byte file through
                                 wsgi.file_wrapper (with Content-Length 110 when cl=1)
    GET  /fork                -> forks a child that sleeps 3 s holding every inherited socket
    GET  /slow?s=S            -> says "slow started" in the error log, sleeps S seconds, answers
"""

import hashlib
import json
import os
import tempfile
import threading
import time
from urllib.parse import parse_qs, unquote

BLOCK = bytes(range(256)) * 256  # 64 KiB
KEPT = []
FILES = {}


def _json(start_response, obj):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _text(start_response, text):
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _file(mb):
    path = FILES.get(mb)
    if path is None:
        fd, path = tempfile.mkstemp(prefix="minigun-misuse-")
        with os.fdopen(fd, "wb") as f:
            for _ in range(mb * 16):
                f.write(BLOCK)
        FILES[mb] = path
    return path


def _small_file():
    path = FILES.get("small")
    if path is None:
        fd, path = tempfile.mkstemp(prefix="minigun-misuse-")
        with os.fdopen(fd, "wb") as f:
            f.write(b"F" * 100)
        FILES["small"] = path
    return path


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if path == "/pid":
        return _text(start_response, str(os.getpid()))
    if path == "/big":
        mb = int(query.get("mb", ["1"])[0])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(mb * 1024 * 1024))])
        return (BLOCK for _ in range(mb * 16))
    if path == "/file":
        mb = int(query.get("mb", ["1"])[0])
        f = open(_file(mb), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(mb * 1024 * 1024))])
        return environ["wsgi.file_wrapper"](f)
    if path == "/upload":
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        total = 0
        while True:
            block = stream.read(65536)
            if not block:
                break
            total += len(block)
            digest.update(block)
        return _json(start_response, {"total": total, "sha256": digest.hexdigest()})
    if path == "/two-readers":
        stream = environ["wsgi.input"]
        parts = {}

        def reader(name):
            got = []
            while True:
                block = stream.read(4096)
                if not block:
                    break
                got.append(block)
            parts[name] = got

        threads = [threading.Thread(target=reader, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        total = sum(len(b) for blocks in parts.values() for b in blocks)
        return _json(start_response, {"total": total, "readers": sorted(parts)})
    if path == "/no-read":
        return _text(start_response, "did not read the body\n")
    if path == "/keep-write":
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        KEPT[:] = [write]
        return [b"kept\n"]
    if path == "/use-kept-write":
        outcome = "nothing kept"
        if KEPT:
            try:
                KEPT[0](b"INJECTED BY A KEPT WRITE\r\n")
                outcome = "no error"
            except Exception as e:  # the server must refuse the call
                outcome = type(e).__name__
        return _text(start_response, "own response; kept write: %s\n" % outcome)
    if path == "/status":
        start_response(unquote(query.get("s", [""])[0]), [])
        return [b"unreachable\n"]
    if path == "/headers":
        kind = query.get("kind", [""])[0]
        headers = {
            "not-a-list": 5,
            "triple": [("A", "b", "c")],
            "int-value": [("A", 5)],
            "bytes-name": [(b"A", "b")],
            "newline": [("A", "b\r\nInjected: yes")],
            "non-latin1": [("A", "\u20ac")],
            "bad-name": [("A B", "c")],
        }[kind]
        start_response("200 OK", headers)
        return [b"unreachable\n"]
    if path == "/write-then-file":
        headers = [("Content-Type", "text/plain")]
        if query.get("cl") == ["1"]:
            headers.append(("Content-Length", "110"))
        write = start_response("200 OK", headers)
        write(b"W" * 10)
        f = open(_small_file(), "rb")
        return environ["wsgi.file_wrapper"](f)
    if path == "/fork":
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        return _text(start_response, "forked\n")
    if path == "/slow":
        environ["wsgi.errors"].write("slow started\n")
        environ["wsgi.errors"].flush()
        time.sleep(float(query.get("s", ["1"])[0]))
        return _text(start_response, "slow done\n")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


application = app
