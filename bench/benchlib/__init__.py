"""The pieces of the minigun benchmark harness; ``bench/bench.py`` is the entry point.

- ``paths``: where things live (venv, apps, output).
- ``install``: sets up what the benchmark needs (Debian packages, the venv, minigun's build).
- ``servers``: the command line of each server under test, one entry per variant.
- ``workloads``: what wrk sends for each workload and which app answers it.
- ``procs``: process-tree bookkeeping from /proc (CPU time, RSS) and killing what we started.
- ``runner``: one measured run: spawn, wait for the first 200, wrk, sample, stop.
- ``report``: medians, ratios, the markdown tables and minigun's targets.
- ``book``: the ``--book`` mode measuring every figure the book quotes.
- ``steps``: the ``--steps`` mode comparing the book's step binaries with minigun.

Standard library only, so the driver runs with any Python 3.9+ before the venv exists.
"""
