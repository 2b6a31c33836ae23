"""Fixture for tests/deploy.rs: the app the shipped deployment files (examples/deploy/) serve.

Routes:
  /hello    a fixed answer
  /environ  the CGI and WSGI keys a proxy shapes, plus what the process environment says about
            socket activation (which minigun must not pass on), as JSON
  /echo     the request body back
  /spawn    starts `sleep 60` as a grandchild that outlives its parent (a shell that exits at
            once), as apps that run `cmd &` do; answers the shell's exit status

Import gate: when DEPLOY_GATE names a path, the module creates `<path>.importing` and then waits
(up to 30 s) for `<path>` to exist, so a test can hold a worker in the middle of its boot.
"""

import json
import os
import subprocess
import time

_gate = os.environ.get("DEPLOY_GATE")
if _gate:
    open(_gate + ".importing", "a").close()
    _deadline = time.monotonic() + 30
    while not os.path.exists(_gate) and time.monotonic() < _deadline:
        time.sleep(0.01)

_KEYS = (
    "wsgi.url_scheme",
    "REMOTE_ADDR",
    "HTTP_HOST",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "SERVER_NAME",
    "SERVER_PORT",
)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hello":
        body = b"Hello from deploy\n"
    elif path == "/environ":
        report = {key: environ.get(key) for key in _KEYS}
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            report["os." + key] = os.environ.get(key)
        report["pid"] = os.getpid()
        body = json.dumps(report, sort_keys=True).encode()
    elif path == "/echo":
        body = environ["wsgi.input"].read()
    elif path == "/spawn":
        shell = subprocess.run(
            ["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 &"], timeout=10
        )
        body = ("spawned, shell exited %d\n" % shell.returncode).encode()
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
