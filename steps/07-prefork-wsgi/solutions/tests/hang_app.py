"""A WSGI app for the chapter 7 solutions' tests: /hang never returns, / answers at once."""
import os
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        time.sleep(3600)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()}\n".encode()]
