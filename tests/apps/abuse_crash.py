"""Fixture for tests/faults.rs: apps that end badly in every way Python allows.

    GET /sysexit        -> sys.exit(4): SystemExit, a BaseException, inside a request
    GET /keyboard       -> KeyboardInterrupt
    GET /recursion      -> RecursionError from unbounded recursion
    GET /memoryerror    -> MemoryError
    GET /os-exit        -> os._exit(3): the worker process ends at once, with the exit status
                           that means "worker failed to boot" had it happened at start-up
    GET /segfault       -> reads address 0 through ctypes: SIGSEGV
    GET other           -> the worker's pid, at once
"""

import ctypes
import os
import sys


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    path = environ.get("PATH_INFO")
    if path == "/sysexit":
        sys.exit(4)
    if path == "/keyboard":
        raise KeyboardInterrupt()
    if path == "/recursion":
        def deeper(n):
            return deeper(n + 1)

        deeper(0)
    if path == "/memoryerror":
        raise MemoryError()
    if path == "/os-exit":
        os._exit(3)
    if path == "/segfault":
        ctypes.string_at(0)
    body = f"pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
