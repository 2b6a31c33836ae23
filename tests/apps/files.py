"""Fixture: serves files through wsgi.file_wrapper, as static-file helpers do.

    GET /NAME -> the file NAME from the directory in $MINIGUN_TEST_FILES, with its Content-Length,
                 wrapped by wsgi.file_wrapper so the server can send it with sendfile(2)
"""

import os


def app(environ, start_response):
    """Serves one file from $MINIGUN_TEST_FILES; names with a slash are refused."""
    root = os.environ["MINIGUN_TEST_FILES"]
    name = environ.get("PATH_INFO", "/").lstrip("/")
    path = os.path.join(root, name)
    if not name or "/" in name or not os.path.isfile(path):
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]
    size = os.path.getsize(path)
    handle = open(path, "rb")
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return environ["wsgi.file_wrapper"](handle, 32768)


application = app
