"""A small WSGI application for gunicorn that serves the bench document tree.

Files only: GET/HEAD of a regular file under BENCH_DOCROOT, through `wsgi.file_wrapper` so that
gunicorn can use sendfile like the other servers; anything else is a 404. No directory listings
and no CGI (those rows are n/a for gunicorn). Run as `gunicorn tests.bench.wsgi_app:app` with the
environment variable BENCH_DOCROOT naming the tree.
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


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = _resolve(environ.get("PATH_INFO") or "/")
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
