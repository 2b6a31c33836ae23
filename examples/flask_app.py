"""A small Flask site served by minigun.

    minigun --chdir examples flask_app:app

Every page exercises one part of the server a real site leans on: a form POST, JSON in and out,
a multipart upload, a response streamed from a generator, and a page that answers HEAD. The
integration tests in tests/frameworks.rs request each of them through minigun.
"""

import hashlib
import time

from flask import Flask, Response, abort, jsonify, request

app = Flask(__name__)

PAGE = """<!doctype html>
<html><head><title>minigun + Flask</title></head>
<body>
<h1>minigun + Flask</h1>
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
    """The home page; Flask answers HEAD for every GET route on its own."""
    return PAGE


@app.post("/greet")
def greet():
    """A urlencoded form POST, as a browser sends it."""
    name = request.form.get("name", "").strip()
    if not name:
        return "name is required\n", 400, {"Content-Type": "text/plain; charset=utf-8"}
    return f"Hello, {name}!\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.post("/api/echo")
def echo_json():
    """JSON in, JSON out: returns what it was sent and the sorted keys."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify(error="expected a JSON object"), 400
    return jsonify(framework="flask", you_sent=data, keys=sorted(data))


@app.post("/upload")
def upload():
    """A multipart/form-data upload: reports the file's name, size and SHA-256."""
    uploaded = request.files.get("file")
    if uploaded is None:
        return jsonify(error="no file field"), 400
    content = uploaded.read()
    return jsonify(
        filename=uploaded.filename,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        note=request.form.get("note", ""),
    )


@app.get("/stream")
def stream():
    """A body produced by a generator, so the server must stream it (chunked on HTTP/1.1)."""
    lines = min(int(request.args.get("lines", "5")), 10_000)
    delay = min(float(request.args.get("delay", "0")), 5.0)

    def generate():
        for i in range(lines):
            yield f"line {i}\n"
            if delay:
                time.sleep(delay)

    return Response(generate(), mimetype="text/plain")


@app.get("/api/client")
def client():
    """Where the request came from; a client reusing one connection sees one REMOTE_PORT."""
    return jsonify(
        framework="flask",
        remote_addr=request.environ.get("REMOTE_ADDR"),
        remote_port=request.environ.get("REMOTE_PORT"),
    )


@app.get("/teapot")
def teapot():
    """A non-200 status with a body, to check the status line is passed through."""
    abort(418)


application = app

