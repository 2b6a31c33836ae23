"""Fixture: applications that fail in the ways PEP 3333 servers must survive.

    app     /before  -> raises before start_response (the server answers 500)
            /during  -> starts a chunked response, yields once, then raises (the server can only
                        close the connection)
            /bad-header -> passes a header value with CR LF in it (the server answers 500 and
                           never sends that header)
            /twice   -> calls start_response twice without exc_info (an error: 500)
            other    -> "ok\n", so a test can see the worker is still up after a failure
"""


class Boom(Exception):
    """The exception the fixture raises; its name shows up in the server's error log."""


def app(environ, start_response):
    """Routes on PATH_INFO as described in the module docstring."""
    path = environ.get("PATH_INFO", "/")
    if path == "/before":
        raise Boom("raised before start_response")
    if path == "/during":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def generate():
            yield b"first part\n"
            raise Boom("raised while iterating")

        return generate()
    if path == "/bad-header":
        start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: stolen=1")])
        return [b"should not be sent\n"]
    if path == "/twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"should not be sent\n"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


application = app
