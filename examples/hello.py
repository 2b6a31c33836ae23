"""The smallest WSGI application: the README's first run uses it.

Standard library only, so it works before any virtualenv exists:

    cargo run --release -- --chdir examples hello:app
    curl http://127.0.0.1:8000/
"""

BODY = b"Hello, World!\n"


def app(environ, start_response):
    """Answers every request with a fixed plain-text greeting."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(BODY))),
        ],
    )
    return [BODY]


# gunicorn and most deployment guides look for `application` by default.
application = app
