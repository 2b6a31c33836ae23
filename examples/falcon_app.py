"""A small Falcon site served by minigun.

    minigun --chdir examples falcon_app:app

The pages are the same as in flask_app.py, written the Falcon way: one resource class per URL
with an ``on_<method>`` responder for each method it answers. Every page exercises one part of
the server a real site leans on: a form POST, JSON in and out, a multipart upload, a response
streamed from a generator, and a page that answers HEAD. tests/frameworks.rs requests each of
them through minigun.
"""

import hashlib
import time

import falcon

PAGE = """<!doctype html>
<html><head><title>minigun + Falcon</title></head>
<body>
<h1>minigun + Falcon</h1>
<form method="post" action="/greet">
  <input name="name" placeholder="your name"> <button>Greet</button>
</form>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file"> <button>Upload</button>
</form>
<p><a href="/stream?lines=5">a streamed page</a></p>
</body></html>
"""


class Home:
    """The home page."""

    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = PAGE

    def on_head(self, req, resp):
        # Falcon answers HEAD only where a resource says so; running the GET responder lets
        # Falcon drop the body and keep the Content-Length GET would have sent.
        self.on_get(req, resp)


class Greeting:
    """A urlencoded form POST, as a browser sends it."""

    def on_post(self, req, resp):
        # Falcon parses application/x-www-form-urlencoded bodies with its default media
        # handlers; a field sent twice comes back as a list, and a name is one string.
        form = req.get_media(default_when_empty={})
        name = form.get("name", "")
        if not isinstance(name, str) or not name.strip():
            raise falcon.HTTPBadRequest(title="name is required")
        resp.content_type = "text/plain; charset=utf-8"
        resp.text = f"Hello, {name.strip()}!\n"


class EchoJson:
    """JSON in, JSON out: returns what it was sent and the sorted keys."""

    def on_post(self, req, resp):
        # A body that is not JSON makes get_media raise MediaMalformedError, which Falcon
        # turns into 400 Bad Request.
        data = req.get_media()
        if not isinstance(data, dict):
            raise falcon.HTTPBadRequest(title="expected a JSON object")
        resp.media = {"framework": "falcon", "you_sent": data, "keys": sorted(data)}


class Upload:
    """A multipart/form-data upload: reports the file's name, size and SHA-256."""

    def on_post(self, req, resp):
        summary = {"note": ""}
        # The parts arrive in order and each must be consumed before the next: the file is
        # hashed from its stream 64 KiB at a time instead of being held in memory.
        for part in req.get_media():
            if part.name == "file" and part.filename is not None:
                digest = hashlib.sha256()
                size = 0
                while chunk := part.stream.read(64 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                summary.update(filename=part.filename, size=size, sha256=digest.hexdigest())
            elif part.name == "note":
                summary["note"] = part.text
        if "filename" not in summary:
            raise falcon.HTTPBadRequest(title="no file field")
        resp.media = summary


class Stream:
    """A body produced by a generator, so the server must stream it (chunked on HTTP/1.1)."""

    def on_get(self, req, resp):
        lines = min(req.get_param_as_int("lines", default=5), 10_000)
        delay = min(req.get_param_as_float("delay", default=0.0), 5.0)

        def generate():
            for i in range(lines):
                yield f"line {i}\n".encode()
                if delay:
                    time.sleep(delay)

        resp.content_type = falcon.MEDIA_TEXT
        # An iterable without read() is handed to the server as the WSGI body, unbuffered.
        resp.stream = generate()

    def on_head(self, req, resp):
        # The generator is made and never run; Falcon sends the GET headers with no body.
        self.on_get(req, resp)


class Client:
    """Where the request came from; a client reusing one connection sees one REMOTE_PORT."""

    def on_get(self, req, resp):
        resp.media = {
            "framework": "falcon",
            "remote_addr": req.remote_addr,
            "remote_port": req.env.get("REMOTE_PORT"),
        }


class Teapot:
    """A non-200 status with a body, to check the status line is passed through."""

    def on_get(self, req, resp):
        resp.status = falcon.HTTP_IM_A_TEAPOT
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "I'm a teapot\n"


app = falcon.App()
app.add_route("/", Home())
app.add_route("/greet", Greeting())
app.add_route("/api/echo", EchoJson())
app.add_route("/upload", Upload())
app.add_route("/stream", Stream())
app.add_route("/api/client", Client())
app.add_route("/teapot", Teapot())

application = app
