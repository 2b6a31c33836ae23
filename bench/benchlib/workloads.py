"""The workloads: which app answers, and what wrk sends.

Every workload runs at the same concurrency (64 connections, one wrk thread);
they differ in the app (a callable in ``bench/apps/bench_apps.py``) and in the
request wrk sends.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    #: short name used in --only and in the tables
    name: str
    #: the callable in bench_apps that serves it
    app: str
    #: one line for the tables
    title: str
    #: extra wrk arguments (headers, a Lua script in bench/wrk)
    wrk_args: tuple = ()
    #: True when threads are what the workload measures: threaded servers run 32 of them
    wants_threads: bool = False


WORKLOADS = [
    Workload("hello", "hello", "hello (13 B), keep-alive, 64 connections"),
    Workload("hello-close", "hello", "hello (13 B), a new connection per request",
             wrk_args=("-H", "Connection: close")),
    Workload("get-10k", "get_10k", "10 KiB GET"),
    Workload("echo-10k", "echo", "10 KiB POST echoed back through an iterable",
             wrk_args=("-s", "post-10k.lua")),
    Workload("sleep-10ms", "sleep_10ms",
             "app sleeps 10 ms; threaded servers run 32 threads (ideal: 3,200 req/s per worker)",
             wants_threads=True),
    Workload("stream", "stream", "streamed response of unknown length (100 x 1 KiB, generator)"),
    Workload("file-1m", "file_1m", "1 MiB file through wsgi.file_wrapper"),
]

BY_NAME = {w.name: w for w in WORKLOADS}


@dataclass(frozen=True)
class Config:
    """How many workers, and whether server and wrk are pinned to their own cores."""

    name: str
    workers: int
    pinned: bool
    title: str


CONFIGS = [
    Config("1w", 1, True, "1 worker, server pinned to core 0, wrk pinned to core 1"),
    Config("2w", 2, False, "2 workers, nothing pinned"),
]

CONFIG_BY_NAME = {c.name: c for c in CONFIGS}
