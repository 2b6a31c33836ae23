"""A small Pyramid site served by minigun.

    minigun --chdir examples pyramid_app:app

Every view exercises one part of the server a real site leans on: a form POST, JSON in and out,
a multipart upload, a response streamed from a generator, and a page that answers HEAD.
tests/frameworks.rs requests each of them through minigun.
"""

import hashlib
import time

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPBadRequest
from pyramid.response import Response

PAGE = """<!doctype html>
<html><head><title>minigun + Pyramid</title></head>
<body>
<h1>minigun + Pyramid</h1>
<form method="post" action="/greet">
  <input name="name" placeholder="your name"> <button>Greet</button>
</form>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file"> <button>Upload</button>
</form>
<p><a href="/stream?lines=5">a streamed page</a></p>
</body></html>
"""


def index(request):
    """The home page, registered for GET and HEAD."""
    return Response(PAGE, content_type="text/html")


def greet(request):
    """A urlencoded form POST, as a browser sends it."""
    name = request.POST.get("name", "").strip()
    if not name:
        raise HTTPBadRequest("name is required")
    return Response(f"Hello, {name}!\n", content_type="text/plain")


def echo_json(request):
    """JSON in, JSON out: returns what it was sent and the sorted keys."""
    try:
        data = request.json_body
    except ValueError:
        data = None
    if not isinstance(data, dict):
        request.response.status = 400
        return {"error": "expected a JSON object"}
    return {"framework": "pyramid", "you_sent": data, "keys": sorted(data)}


def upload(request):
    """A multipart/form-data upload: reports the file's name, size and SHA-256."""
    field = request.POST.get("file")
    if field is None or not hasattr(field, "file"):
        request.response.status = 400
        return {"error": "no file field"}
    content = field.file.read()
    return {
        "filename": field.filename,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "note": request.POST.get("note", ""),
    }


def stream(request):
    """A body produced by a generator, so the server must stream it (chunked on HTTP/1.1)."""
    lines = min(int(request.GET.get("lines", "5")), 10_000)
    delay = min(float(request.GET.get("delay", "0")), 5.0)

    def generate():
        for i in range(lines):
            yield f"line {i}\n".encode()
            if delay:
                time.sleep(delay)

    return Response(app_iter=generate(), content_type="text/plain")


def client(request):
    """Where the request came from; a client reusing one connection sees one REMOTE_PORT."""
    return {
        "framework": "pyramid",
        "remote_addr": request.environ.get("REMOTE_ADDR"),
        "remote_port": request.environ.get("REMOTE_PORT"),
    }


def teapot(request):
    """A non-200 status with a body, to check the status line is passed through."""
    return Response("I'm a teapot\n", status=418, content_type="text/plain")


def make_app():
    """Builds the WSGI application from the routes above."""
    with Configurator() as config:
        config.add_route("index", "/")
        config.add_view(index, route_name="index", request_method=("GET", "HEAD"))
        config.add_route("greet", "/greet")
        config.add_view(greet, route_name="greet", request_method="POST")
        config.add_route("echo", "/api/echo")
        config.add_view(echo_json, route_name="echo", request_method="POST", renderer="json")
        config.add_route("upload", "/upload")
        config.add_view(upload, route_name="upload", request_method="POST", renderer="json")
        config.add_route("stream", "/stream")
        config.add_view(stream, route_name="stream", request_method="GET")
        config.add_route("client", "/api/client")
        config.add_view(client, route_name="client", request_method="GET", renderer="json")
        config.add_route("teapot", "/teapot")
        config.add_view(teapot, route_name="teapot", request_method="GET")
        return config.make_wsgi_app()


app = make_app()
application = app
