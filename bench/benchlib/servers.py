"""The servers under test: one ``Server`` per variant, each knowing its command line.

A variant is a server with fixed settings ("gunicorn-gthread" = gunicorn with
``-k gthread``). Thread counts follow one rule so the tables compare like with
like: a threaded variant runs its own count (1 or 8), and every server that
has threads runs 32 on the workloads that want threads (the 10 ms sleep).
"""

import os
import shutil
from dataclasses import dataclass

from . import paths
from .workloads import Workload

HOST = "127.0.0.1"


@dataclass
class Server:
    #: short name used in --only and in the tables
    name: str
    #: threads per worker on ordinary workloads (0 = the server has no threads)
    threads: int
    #: what the table says about this variant
    note: str = ""
    #: only these workloads (None = all)
    workloads: tuple = None
    #: True for servers that cannot run more than one process
    single_process: bool = False
    #: function (server, port, workers, threads, app, tmpdir) -> argv
    build: object = None
    #: executable that must exist for the server to be available
    executable: str = ""
    #: pip/Debian package whose absence makes it unavailable
    package: str = ""

    def threads_for(self, workload: Workload) -> int:
        if self.threads and workload.wants_threads:
            return 32
        return self.threads

    def runs(self, workload: Workload) -> bool:
        return self.workloads is None or workload.name in self.workloads

    def command(self, port, workers, workload, tmpdir):
        workers = 1 if self.single_process else workers
        return self.build(port, workers, self.threads_for(workload), workload.app, tmpdir)

    def unavailable_reason(self):
        if self.executable and not os.path.exists(self.executable) and not shutil.which(self.executable):
            return f"{os.path.relpath(self.executable, paths.REPO) if os.path.isabs(self.executable) else self.executable} not found"
        return None


def _minigun(port, workers, threads, app, tmpdir):
    return [paths.MINIGUN_BIN, "-b", f"{HOST}:{port}", "-w", str(workers),
            "--threads", str(threads), "--chdir", paths.APPS, f"bench_apps:{app}"]


def _bjoern(port, workers, threads, app, tmpdir):
    return [paths.venv_bin("python"), os.path.join(paths.APPS, "run_bjoern.py"),
            "--host", HOST, "--port", str(port), "--workers", str(workers), f"bench_apps:{app}"]


def _granian(port, workers, threads, app, tmpdir):
    return [paths.venv_bin("granian"), "--interface", "wsgi", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--blocking-threads", str(threads),
            "--runtime-threads", "1", "--http", "1", "--no-ws", "--log-level", "warning",
            f"bench_apps:{app}"]


def _gunicorn(worker_class):
    def build(port, workers, threads, app, tmpdir):
        argv = [paths.venv_bin("gunicorn"), "-b", f"{HOST}:{port}", "-w", str(workers),
                "-k", worker_class, "--chdir", paths.APPS, "--log-level", "warning"]
        if worker_class == "gthread":
            argv += ["--threads", str(threads)]
        return argv + [f"bench_apps:{app}"]
    return build


def _waitress(port, workers, threads, app, tmpdir):
    return [paths.venv_bin("waitress-serve"), f"--listen={HOST}:{port}", f"--threads={threads}",
            f"bench_apps:{app}"]


def _uwsgi(port, workers, threads, app, tmpdir):
    # --http11-socket is --http-socket with HTTP/1.1 keep-alive: plain
    # --http-socket closes the connection after every response without a
    # "Connection: close" header, which wrk counts as read errors.
    # --tcp-nodelay: without it, the 1 KiB pieces of the echo app wait on
    # delayed ACKs (about 20 req/s); we give every peer its best settings.
    # The streamed app is the exception: http11-socket sends a response of
    # unknown length with no framing at all and keeps the connection open, so
    # the client never sees its end; there uwsgi runs --http-socket and ends
    # the body by closing (its "errors" are those unannounced closes).
    socket_flag = "--http-socket" if app == "stream" else "--http11-socket"
    argv = [paths.venv_bin("uwsgi"), socket_flag, f"{HOST}:{port}", "--tcp-nodelay",
            "--master", "--processes", str(workers), "--module", f"bench_apps:{app}",
            "--chdir", paths.APPS, "--disable-logging", "--die-on-term", "--need-app",
            "--listen", "128"]
    if threads > 1:
        argv += ["--threads", str(threads)]
    return argv


def _nginx(port, workers, threads, app, tmpdir):
    """nginx answering hello from its config: the ceiling a Python server cannot reach."""
    conf = os.path.join(tmpdir, f"nginx-{port}.conf")
    prefix = os.path.join(tmpdir, f"nginx-{port}")
    os.makedirs(prefix, exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {HOST}:{port};
        location / {{
            default_type text/plain;
            return 200 "Hello, world!";
        }}
    }}
}}
""")
    return ["nginx", "-e", "stderr", "-p", prefix, "-c", conf]


HELLO_ONLY = ("hello", "hello-close")

SERVERS = [
    Server("minigun", 1, "--threads 1 (32 on sleep)", build=_minigun,
           executable=paths.MINIGUN_BIN),
    Server("minigun-t8", 8, "--threads 8", workloads=HELLO_ONLY, build=_minigun,
           executable=paths.MINIGUN_BIN),
    Server("bjoern", 0, "one thread; 2 workers = fork after bind", build=_bjoern,
           executable=paths.venv_bin("python"), package="bjoern"),
    Server("granian", 1, "--blocking-threads 1 (32 on sleep)", build=_granian,
           executable=paths.venv_bin("granian"), package="granian"),
    Server("gunicorn-sync", 0, "-k sync", build=_gunicorn("sync"),
           executable=paths.venv_bin("gunicorn"), package="gunicorn"),
    Server("gunicorn-gthread", 8, "-k gthread --threads 8 (32 on sleep)", build=_gunicorn("gthread"),
           executable=paths.venv_bin("gunicorn"), package="gunicorn"),
    Server("waitress", 8, "--threads 8 (32 on sleep); one process, no workers", single_process=True,
           build=_waitress, executable=paths.venv_bin("waitress-serve"), package="waitress"),
    Server("uwsgi", 1, "--http11-socket --tcp-nodelay, --processes (--threads 32 on sleep)", build=_uwsgi,
           executable=paths.venv_bin("uwsgi"), package="uwsgi"),
    Server("nginx", 0, "static hello from nginx.conf (reference ceiling, not WSGI)",
           workloads=HELLO_ONLY, build=_nginx, executable="nginx", package="nginx"),
]

BY_NAME = {s.name: s for s in SERVERS}

#: the servers --quick runs
QUICK = ("minigun", "bjoern", "granian", "gunicorn-sync")
