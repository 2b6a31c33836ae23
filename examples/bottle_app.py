"""A small Bottle site served by minigun.

    minigun --chdir examples bottle_app:app

The pages are the same as in flask_app.py, written the Bottle way: routes on a ``Bottle()``
application object (not the module-level default app), the thread-local ``request`` and
``response``, and dicts returned as JSON. Every page exercises one part of the server a real
site leans on: a form POST, JSON in and out, a multipart upload, a response streamed from a
generator, and a page that answers HEAD. tests/frameworks.rs requests each of them through
minigun.
"""

import hashlib
import time

from bottle import Bottle, HTTPError, abort, request, response

app = Bottle()

PAGE = """<!doctype html>
<html><head><title>minigun + Bottle</title></head>
<body>
<h1>minigun + Bottle</h1>
<form method="post" action="/greet">
  <input name="name" placeholder="your name"> <button>Greet</button>
</form>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file"> <button>Upload</button>
</form>
<p><a href="/stream?lines=5">a streamed page</a></p>
</body></html>
"""


@app.get("/")
def index():
    """The home page; Bottle answers HEAD with a GET route and drops the body itself."""
    return PAGE


@app.post("/greet")
def greet():
    """A urlencoded form POST, as a browser sends it."""
    # getunicode decodes the field as UTF-8; plain get() would hand back latin-1 text.
    name = (request.forms.getunicode("name") or "").strip()
    response.content_type = "text/plain; charset=utf-8"
    if not name:
        response.status = 400
        return "name is required\n"
    return f"Hello, {name}!\n"


@app.post("/api/echo")
def echo_json():
    """JSON in, JSON out: returns what it was sent and the sorted keys."""
    # request.json parses application/json bodies and raises a 400 for malformed JSON.
    data = request.json
    if not isinstance(data, dict):
        response.status = 400
        return {"error": "expected a JSON object"}
    return {"framework": "bottle", "you_sent": data, "keys": sorted(data)}


@app.post("/upload")
def upload():
    """A multipart/form-data upload: reports the file's name, size and SHA-256."""
    uploaded = request.files.get("file")
    if uploaded is None:
        response.status = 400
        return {"error": "no file field"}
    digest = hashlib.sha256()
    size = 0
    while chunk := uploaded.file.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return {
        # raw_filename is the name the client sent; .filename is a sanitised one for saving.
        "filename": uploaded.raw_filename,
        "size": size,
        "sha256": digest.hexdigest(),
        "note": request.forms.getunicode("note") or "",
    }


@app.get("/stream")
def stream():
    """A body produced by a generator, so the server must stream it (chunked on HTTP/1.1)."""
    try:
        lines = min(int(request.query.get("lines", "5")), 10_000)
        delay = min(float(request.query.get("delay", "0")), 5.0)
    except ValueError:
        raise HTTPError(400, "lines and delay must be numbers")

    def generate():
        for i in range(lines):
            yield f"line {i}\n"
            if delay:
                time.sleep(delay)

    response.content_type = "text/plain; charset=utf-8"
    return generate()


@app.get("/api/client")
def client():
    """Where the request came from; a client reusing one connection sees one REMOTE_PORT."""
    return {
        "framework": "bottle",
        "remote_addr": request.remote_addr,
        "remote_port": request.environ.get("REMOTE_PORT"),
    }


@app.get("/teapot")
def teapot():
    """A non-200 status with a body, to check the status line is passed through."""
    abort(418, "I'm a teapot")


application = app
