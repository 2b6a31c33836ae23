"""Fixture for tests/hooks.rs: an app that shows what the config file did to its process.

    GET /env?name=X   -> os.environ[X] (or "unset")
    GET /module       -> whether the module the config file imported is loaded, and its mark
    GET /stuck        -> never returns (stuck_forever), for the timeout tests
    GET /bytecode     -> sys.dont_write_bytecode
    GET /listen-env   -> the LISTEN_*/MINIGUN_* variables the app can see

With SLOW_IMPORT=S in the environment, importing the app takes S seconds.
    GET /             -> "ok"
"""

import os
import sys
import time
from urllib.parse import parse_qs

time.sleep(float(os.environ.get("SLOW_IMPORT", "0")))


def stuck_forever():
    while True:
        time.sleep(0.05)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/env":
        body = os.environ.get(query.get("name", [""])[0], "unset")
    elif path == "/module":
        mod = sys.modules.get("config_marker")
        body = getattr(mod, "MARK", "not imported")
    elif path == "/bytecode":
        body = str(sys.dont_write_bytecode)
    elif path == "/listen-env":
        body = ",".join(sorted(k for k in os.environ if k.startswith("LISTEN_") or k in ("MINIGUN_FD", "MINIGUN_PID", "MINIGUN_FD_INHERITED"))) or "none"
    elif path == "/stuck":
        stuck_forever()
        body = "unreachable"
    else:
        body = "ok"
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
