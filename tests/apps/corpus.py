"""Fixture for the raw-request corpus (tests/corpus.rs, tests/requests/).

    app   any request -> the part of the environ the corpus pins down, plus the body read
                         through wsgi.input (latin-1), as one JSON object with sorted keys

Every call is recorded by appending a line to the file named by $CORPUS_CALLS before anything
else happens, so a test can prove that a request the server refused never reached the app.
"""

import json
import os

KEYS = (
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
)


def app(environ, start_response):
    """Records the call, then answers with the environ subset and the body."""
    calls = os.environ.get("CORPUS_CALLS")
    if calls:
        with open(calls, "a", encoding="latin-1") as f:
            f.write(environ.get("RAW_URI", "?") + "\n")
    report = {key: environ.get(key) for key in KEYS}
    report.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
    report["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(report, sort_keys=True).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
