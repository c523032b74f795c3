"""A small WSGI application for gunicorn that serves the bench document tree, and the WSGI apps
of the WSGI workloads.

Files: GET/HEAD of a regular file under BENCH_DOCROOT, through `wsgi.file_wrapper` so that
gunicorn can use sendfile like the other servers; anything else is a 404. No directory listings
and no CGI (those rows are n/a for gunicorn). Run as `gunicorn tests.bench.wsgi_app:app` with the
environment variable BENCH_DOCROOT naming the tree.

WSGI workloads: `hello` (a plain WSGI hello world), `flask_hello` and `django_hello` (the same in
Flask and in Django). forkd mounts them as wsgi routes at /wsgi/, /flask/ and /django/; under
gunicorn `app` hands those prefixes to them, moving the prefix to SCRIPT_NAME as a mounting server would (a dict lookup and two string
operations: noise next to a request).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]

ROOT = os.path.realpath(os.environ.get("BENCH_DOCROOT", "."))
NOT_FOUND = b"404 Not Found\n"
CHUNK = 64 * 1024


HELLO = b"Hello, World!"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(HELLO_HEADERS))
    return [HELLO]


def _flask() -> Any:
    try:
        from flask import Flask
    except ImportError:
        return None
    flask_app = Flask(__name__)
    flask_app.add_url_rule("/hello", "hello", lambda: "Hello, World!")
    return flask_app


urlpatterns: list[Any] = []  # Django's URLconf is this module (ROOT_URLCONF below)


def _django() -> Any:
    """A one-view Django project, with the middleware a new project has that needs no database."""
    try:
        import django
        from django.conf import settings
        from django.http import HttpResponse
        from django.urls import path
    except ImportError:
        return None
    if not settings.configured:
        settings.configure(
            DEBUG=False, SECRET_KEY="forkd-bench-only", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
            MIDDLEWARE=["django.middleware.security.SecurityMiddleware",
                        "django.middleware.common.CommonMiddleware",
                        "django.middleware.csrf.CsrfViewMiddleware",
                        "django.middleware.clickjacking.XFrameOptionsMiddleware"],
            USE_TZ=True, LOGGING_CONFIG=None)
    django.setup()
    urlpatterns.append(path("hello", lambda request: HttpResponse("Hello, World!",
                                                                  content_type="text/plain")))
    from django.core.wsgi import get_wsgi_application
    return get_wsgi_application()


flask_hello = _flask()
django_hello = _django()
MOUNTS = {"/wsgi": hello, "/flask": flask_hello, "/django": django_hello}


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path_info = environ.get("PATH_INFO") or "/"
    mounted = MOUNTS.get(path_info[: path_info.find("/", 1)]) if path_info.count("/") > 1 else None
    if mounted is not None:
        prefix = path_info[: path_info.find("/", 1)]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = path_info[len(prefix):]
        return mounted(environ, start_response)  # type: ignore[no-any-return]
    path = _resolve(path_info)
    if path is None:
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(NOT_FOUND)))])
        return [NOT_FOUND]
    size = os.path.getsize(path)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(size))])
    if environ.get("REQUEST_METHOD") == "HEAD":
        return []
    stream = open(path, "rb")  # noqa: SIM115 - closed by gunicorn through the file wrapper
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(stream, CHUNK)  # type: ignore[no-any-return]
    return _chunks(stream)


def _resolve(url_path: str) -> str | None:
    """The regular file url_path names inside ROOT, or None (PATH_INFO arrives percent-decoded)."""
    candidate = os.path.realpath(os.path.join(ROOT, url_path.lstrip("/")))
    if not candidate.startswith(ROOT + os.sep) or not os.path.isfile(candidate):
        return None
    return candidate


def _chunks(stream: Any) -> Iterable[bytes]:
    with stream:
        while chunk := stream.read(CHUNK):
            yield chunk
