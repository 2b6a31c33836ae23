"""Starts bjoern for the benchmark: bjoern has no command line of its own.

    python run_bjoern.py --host 127.0.0.1 --port 8000 --workers 2 bench_apps:hello

bjoern is one process with one thread and no prefork. For ``--workers N > 1``
this script binds first and then forks N-1 more processes that all serve the
same listening socket, the way a prefork server shares its listener; the
parent serves too. The harness stops all of them at once by signalling the
process group (SIGTERM keeps its default action, so a process dies even
while bjoern's C loop holds it).
"""

import argparse
import importlib
import os
import signal
import sys

import bjoern


def load(spec):
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "application")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("app")
    args = parser.parse_args()

    sys.path.insert(0, os.getcwd())
    app = load(args.app)
    # bjoern.listen binds and listens now; bjoern.run() then serves that socket.
    bjoern.listen(app, args.host, args.port)

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            bjoern.run()
            os._exit(0)

    bjoern.run()


if __name__ == "__main__":
    main()
