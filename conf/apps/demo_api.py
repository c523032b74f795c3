"""The demo site's WSGI app: a small JSON API in plain Python (no framework), served at /api/.

    GET  /api/          what this is, and the links below (built from SCRIPT_NAME)
    GET  /api/time      the server's time, and which worker process and thread answered
    POST /api/echo      a JSON document sent back, with its size; 400 for anything else
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

MAX_BODY = 65536


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    base = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "") or "/"
    method = environ["REQUEST_METHOD"]
    if path == "/" and method in ("GET", "HEAD"):
        return reply(start_response, 200, {
            "service": "forkd demo API",
            "links": {"time": f"{base}/time", "echo": f"{base}/echo (POST JSON)"},
        })
    if path == "/time" and method in ("GET", "HEAD"):
        return reply(start_response, 200, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "worker": os.getpid(), "thread": threading.current_thread().name,
        })
    if path == "/echo":
        if method != "POST":
            return reply(start_response, 405, {"error": "POST a JSON document"}, [("Allow", "POST")])
        size = int(environ.get("CONTENT_LENGTH") or 0)
        if size > MAX_BODY:
            return reply(start_response, 413, {"error": f"at most {MAX_BODY} bytes"})
        try:
            document = json.loads(environ["wsgi.input"].read(size) or b"null")
        except ValueError as exc:
            return reply(start_response, 400, {"error": f"not JSON: {exc}"})
        return reply(start_response, 200, {"received": document, "bytes": size})
    return reply(start_response, 404, {"error": f"no such endpoint: {base}{path}"})


STATUS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found",
          405: "405 Method Not Allowed", 413: "413 Content Too Large"}


def reply(start_response: Callable[..., Any], status: int, document: object,
          extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = json.dumps(document, indent=2).encode() + b"\n"
    start_response(STATUS[status], [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body))), *(extra or [])])
    return [body]
