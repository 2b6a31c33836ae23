"""A WSGI app for the chapter 7 solutions' tests.

  /hang  never returns
  /hold  touches $FIXTURE_DIR/hold-started, then answers "released" once the test has
         created $FIXTURE_DIR/release, so a request stays in flight for as long as the test
         needs, however slow the machine; after 20 seconds without it, "gave up"
  /      answers at once with the worker's pid
"""
import os
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hang":
        time.sleep(3600)
    if path == "/hold":
        directory = os.environ["FIXTURE_DIR"]
        open(os.path.join(directory, "hold-started"), "w").close()
        deadline = time.monotonic() + 20
        release = os.path.join(directory, "release")
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"gave up\n"]
            time.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"released\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()}\n".encode()]
