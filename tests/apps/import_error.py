"""Fixture: a module that cannot be imported, so the app never loads.

The server must print this traceback once, say the app failed to load and exit with status 4,
instead of forking worker after worker.
"""

raise RuntimeError("minigun-fixture: this module fails at import on purpose")
