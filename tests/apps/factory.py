"""Fixture: an application factory, as `minigun 'factory:create_app()'` loads it.

    create_app(greeting="made by a factory") -> a WSGI app answering "<greeting>\n"
"""


def create_app(greeting="made by a factory"):
    """Builds a WSGI app that answers with `greeting`."""
    body = f"{greeting}\n".encode()

    def app(environ, start_response):
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app
