"""Fixture for the virtualenv test: imports a module that exists only in a test-made venv.

tests/process.rs creates a fresh venv, drops `minigun_venv_marker.py` into its site-packages and
starts the server with VIRTUAL_ENV pointing at it. This app answers with the marker's value and
the interpreter's prefix, so the test sees which environment the app really runs in.
"""

import json
import sys

import minigun_venv_marker


def app(environ, start_response):
    """Answers with the marker value, sys.prefix and sys.base_prefix as JSON."""
    body = json.dumps(
        {
            "marker": minigun_venv_marker.MARK,
            "marker_file": minigun_venv_marker.__file__,
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
        }
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


application = app
