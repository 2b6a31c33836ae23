"""A one-file Django site served by minigun.

    minigun --chdir examples django_app:application

Settings are configured in this file, so there is no project directory and no database: the
views below use only the request and response objects. Each view exercises one part of the
server a real site leans on: a form POST, JSON in and out, a multipart upload, a streamed
response, and a page that answers HEAD. tests/frameworks.rs requests each of them.
"""

import hashlib
import json
import time

from django.conf import settings

settings.configure(
    DEBUG=False,
    # A fixed key is fine for an example that signs nothing; a real site reads it from its
    # environment.
    SECRET_KEY="minigun-example-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    # No CSRF middleware: this example has no sessions or cookies to protect, and the form can
    # then be posted by curl. A real site keeps django.middleware.csrf.CsrfViewMiddleware.
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  (needs settings first)
from django.http import (  # noqa: E402
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path  # noqa: E402
from django.views.decorators.http import require_POST, require_safe  # noqa: E402

PAGE = """<!doctype html>
<html><head><title>minigun + Django</title></head>
<body>
<h1>minigun + Django</h1>
<form method="post" action="/greet">
  <input name="name" placeholder="your name"> <button>Greet</button>
</form>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input type="file" name="file"> <button>Upload</button>
</form>
<p><a href="/stream?lines=5">a streamed page</a></p>
</body></html>
"""


@require_safe
def index(request):
    """The home page; require_safe admits GET and HEAD, and the server drops the body for it."""
    return HttpResponse(PAGE)


@require_POST
def greet(request):
    """A urlencoded form POST, as a browser sends it."""
    name = request.POST.get("name", "").strip()
    if not name:
        return HttpResponseBadRequest("name is required\n", content_type="text/plain")
    return HttpResponse(f"Hello, {name}!\n", content_type="text/plain; charset=utf-8")


@require_POST
def echo_json(request):
    """JSON in, JSON out: returns what it was sent and the sorted keys."""
    try:
        data = json.loads(request.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return JsonResponse({"error": "expected a JSON object"}, status=400)
    return JsonResponse({"framework": "django", "you_sent": data, "keys": sorted(data)})


@require_POST
def upload(request):
    """A multipart/form-data upload: reports the file's name, size and SHA-256."""
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return JsonResponse({"error": "no file field"}, status=400)
    digest = hashlib.sha256()
    size = 0
    for chunk in uploaded.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse(
        {
            "filename": uploaded.name,
            "size": size,
            "sha256": digest.hexdigest(),
            "note": request.POST.get("note", ""),
        }
    )


@require_safe
def stream(request):
    """A body produced by a generator, so the server must stream it (chunked on HTTP/1.1)."""
    lines = min(int(request.GET.get("lines", "5")), 10_000)
    delay = min(float(request.GET.get("delay", "0")), 5.0)

    def generate():
        for i in range(lines):
            yield f"line {i}\n"
            if delay:
                time.sleep(delay)

    return StreamingHttpResponse(generate(), content_type="text/plain")


@require_safe
def client(request):
    """Where the request came from; a client reusing one connection sees one REMOTE_PORT."""
    return JsonResponse(
        {
            "framework": "django",
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "remote_port": request.META.get("REMOTE_PORT"),
        }
    )


@require_safe
def teapot(request):
    """A non-200 status with a body, to check the status line is passed through."""
    return HttpResponse("I'm a teapot\n", status=418, content_type="text/plain")


urlpatterns = [
    path("", index),
    path("greet", greet),
    path("api/echo", echo_json),
    path("upload", upload),
    path("stream", stream),
    path("api/client", client),
    path("teapot", teapot),
]

application = get_wsgi_application()
