"""The PEP 3333 side of a WSGI route: the environ, wsgi.input, wsgi.errors, the file wrapper, and
loading the application object.

Theory of operation
-------------------
Everything here is plain data and objects an app thread uses; nothing here knows the worker's loop
(forkd.handlers.wsgi does). The request has arrived whole before the app runs, so:

- `Input` (wsgi.input) reads the received body, never the socket: read(), read(n), readline(),
  readline(n), readlines(hint), iteration, and b"" past the end. A chunked request body was
  de-chunked by the connection; CONTENT_LENGTH is then its real length and wsgi.input_terminated
  is true, so apps that read to the end and apps that trust CONTENT_LENGTH both work.
- `build_environ` fills every key PEP 3333 requires (and the CGI-style extras apps look for):
  SCRIPT_NAME is the route prefix, from the config only (never a header), PATH_INFO the rest of
  the normalised path, both as PEP 3333 "bytes as latin-1" strings; wsgi.url_scheme is https on
  TLS, with HTTPS=on and the SSL_* variables of the contract.
- `Errors` (wsgi.errors) turns what an app writes into error-log lines, escaped (an app cannot
  forge a log line), prefixed with the app's name.
- `check_start_response` holds start_response's arguments to PEP 3333: a status line such as
  "200 OK", a list of (str, str) tuples without CR/LF, no hop-by-hop field (those are the server's
  business); anything else raises AppProtocolError inside the app.
- `FileWrapper` (wsgi.file_wrapper) is iterable like any body; when the app returns it unwrapped
  around a regular file, the worker sends the file with sendfile from its current position.
- `load_app` imports "package.module:callable" with the route's python_path in front of sys.path
  and its env set in os.environ, so a settings module (DJANGO_SETTINGS_MODULE) is found.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from forkd.config import WsgiConfig
from forkd.http.request import Request
from forkd.logs import ErrorLog, escape

ERRORS_LINE_CAP = 4000  # characters of one wsgi.errors line kept in the log
READ_CHUNK = 65536

# Request headers that have a CGI name of their own (RFC 3875 §4.1) and no HTTP_ copy.
_OWN_NAMES = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_HEADER_NAMES: dict[str, str] = {}  # lower-case field name -> HTTP_* key (a small cache)


class AppNotFound(Exception):
    """The module imported but has no such callable (or it is not callable)."""


def split_app(spec: str) -> tuple[str, str]:
    """("package.module", "callable") of an app reference; the callable defaults to application."""
    module, _, name = spec.partition(":")
    return module, name or "application"


def load_app(settings: WsgiConfig) -> Callable[..., Any]:
    """Import the route's application object (raises what the import raises)."""
    for directory in reversed(settings.python_path):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    os.environ.update(settings.env)
    module_name, attribute = split_app(settings.app)
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AppNotFound(f"module {module_name} has no attribute {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise AppNotFound(f"{settings.app} is not callable")
    return target  # type: ignore[no-any-return]


# -- wsgi.input -------------------------------------------------------------------------------


class Input:
    """The request body as PEP 3333's input stream (a whole, received body; see above)."""

    def __init__(self, body: BinaryIO | None, length: int) -> None:
        self.body = body
        self.remaining = length if body is not None else 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        if not size:
            return b""
        assert self.body is not None
        data = self.body.read(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0  # the file was shorter than announced: never loop forever
        return data

    def readline(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        if not size:
            return b""
        assert self.body is not None
        data = self.body.readline(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None
            self.remaining = 0


def own_body(body: BinaryIO | None) -> BinaryIO | None:
    """A copy of a received body that stays valid after the connection closes its own.

    The connection closes its body file when the request ends, maybe while an app thread still
    reads it (the client left). Small bodies are in memory and are copied; spooled ones get their
    own descriptor on the same open file.
    """
    if body is None:
        return None
    memory = body if isinstance(body, io.BytesIO) else getattr(body, "_file", None)
    if isinstance(memory, io.BytesIO):  # a BytesIO, or a SpooledTemporaryFile still in memory
        return io.BytesIO(memory.getvalue()[body.tell():])
    return os.fdopen(os.dup(body.fileno()), "rb")


# -- wsgi.errors ------------------------------------------------------------------------------


class Errors:
    """wsgi.errors: text an app writes, logged line by line, escaped, prefixed with its name."""

    def __init__(self, log: ErrorLog, label: str) -> None:
        self.log = log
        self.label = label
        self.partial = ""
        self.lock = threading.Lock()  # one stream is shared by every app thread of the route

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        with self.lock:
            lines = (self.partial + text).split("\n")
            self.partial = lines.pop()
        for line in lines:
            self._log(line)
        if len(self.partial) > ERRORS_LINE_CAP:
            self.flush()
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self.lock:
            rest, self.partial = self.partial, ""
        if rest:
            self._log(rest)

    def _log(self, line: str) -> None:
        data = line[:ERRORS_LINE_CAP].encode("utf-8", "surrogateescape")
        self.log.error(f"wsgi {self.label}: {escape(data)}")


# -- wsgi.file_wrapper ------------------------------------------------------------------------


class FileWrapper:
    """wsgi.file_wrapper (PEP 3333, "Optional Platform-Specific File Handling")."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize if blksize > 0 else 8192
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.blksize):
            yield data

    def file_range(self) -> tuple[int, int, int] | None:
        """(fd, offset, bytes to the end) when the file can go out with sendfile, else None."""
        try:
            fd = self.filelike.fileno()
            offset = self.filelike.tell()
            size = os.fstat(fd).st_size
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if not isinstance(fd, int) or not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fd, offset, max(size - offset, 0)


# -- start_response ---------------------------------------------------------------------------

# PEP 3333: "200 OK": three digits, a space, a reason phrase (may be empty), no control characters.
STATUS_LINE = re.compile(r"([1-9][0-9]{2}) [^\x00-\x1f\x7f]*")
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.1 token
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})


class AppProtocolError(AssertionError):
    """The app broke PEP 3333 (what wsgiref.validate would assert): a 500 and a closed connection."""


def check_start_response(status: Any, headers: Any,
                         ) -> tuple[int, list[tuple[str, str]], int | None]:
    """(status code, headers, declared Content-Length) of a start_response call, or raise."""
    if type(status) is not str or STATUS_LINE.fullmatch(status) is None:
        raise AppProtocolError(f"bad status line {status!r} (expected e.g. '200 OK')")
    if type(headers) is not list:
        raise AppProtocolError(f"response headers must be a list, not {type(headers).__name__}")
    length = None
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise AppProtocolError(f"a response header must be a (name, value) tuple: {item!r}")
        name, value = item
        if type(name) is not str or HEADER_NAME.fullmatch(name) is None:
            raise AppProtocolError(f"bad response header name {name!r}")
        if type(value) is not str or "\r" in value or "\n" in value or not _is_latin1(value):
            raise AppProtocolError(f"bad value for response header {name}: {value!r}")
        lower = name.lower()
        if lower in HOP_BY_HOP:
            raise AppProtocolError(f"hop-by-hop header {name} is the server's business")
        if lower == "content-length":
            if not value.isdigit():
                raise AppProtocolError(f"bad Content-Length {value!r}")
            length = int(value)
    return int(status[:3]), headers, length


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# -- the environ ------------------------------------------------------------------------------


def fixed_environ(settings: WsgiConfig, errors: Errors, software: str, multiprocess: bool,
                  ) -> dict[str, Any]:
    """The keys that are the same for every request of a route."""
    environ: dict[str, Any] = dict(settings.env)
    environ.update({
        "SERVER_SOFTWARE": software,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "wsgi.version": (1, 0),
        "wsgi.errors": errors,
        "wsgi.multithread": settings.threads > 1,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
    })
    return environ


def build_environ(request: Request, script_name: str, path_info: str, fixed: Mapping[str, Any],
                  body: Input) -> dict[str, Any]:
    """The environ of one request; script_name and path_info are decoded, normalised text."""
    conn = request.conn
    environ = dict(fixed)
    host = request.host
    server_name = _host_name(host) if host else (conn.server_addr if conn else "") or "localhost"
    environ.update({
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": _latin1(script_name),
        "PATH_INFO": _latin1(path_info),
        "QUERY_STRING": request.query,
        "REQUEST_URI": request.target,
        "RAW_URI": request.target,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(conn.server_port) if conn and conn.server_port else "",
        "SERVER_PROTOCOL": request.version,
        "REMOTE_ADDR": conn.remote_addr if conn else "",
        "REMOTE_PORT": str(conn.remote_port) if conn and conn.remote_port else "",
        "wsgi.input": body,
        "wsgi.url_scheme": conn.scheme if conn else "http",
    })
    if conn is not None and conn.tls_variables:
        environ.update(conn.tls_variables)
        environ["REQUEST_SCHEME"] = "https"
    else:
        environ["REQUEST_SCHEME"] = environ["wsgi.url_scheme"]
    if request.has_body:
        environ["CONTENT_LENGTH"] = str(request.body_length)  # de-chunked when it was chunked
    for name, value in request.headers.items():
        own = _OWN_NAMES.get(name)
        if own is not None:
            if own == "CONTENT_TYPE":
                environ[own] = value
            continue
        if "_" in name or name == "transfer-encoding":
            continue  # "X_Forwarded" would pose as "X-Forwarded" (the CGI handler drops them too)
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = "HTTP_" + name.upper().replace("-", "_")
            if len(_HEADER_NAMES) < 512:
                _HEADER_NAMES[name] = key
        environ[key] = value
    environ.update(request.extra)
    return environ


def _host_name(host: str) -> str:
    """The Host field without its port ("[::1]:8080" → "[::1]")."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.partition(":")[0]


def _latin1(text: str) -> str:
    """A decoded path as PEP 3333 wants it: its UTF-8 bytes, each as one latin-1 character."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def preload_apps(routes: Any) -> None:
    """Import, in the master, the apps of the wsgi routes that ask for `preload` (raises).

    Once imported here, a module stays in sys.modules: the workers forked later share it, and a
    reload does not import it again (new code needs a restart). See the README.
    """
    for route in routes:
        settings = getattr(route, "wsgi", None)
        if settings is not None and settings.preload:
            load_app(settings)
