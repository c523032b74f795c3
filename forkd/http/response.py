"""What a handler returns: a status, headers and a body the worker can send without blocking.

Handlers never touch the socket. They return a Response whose body is one of:
  - bytes: sent as is (Content-Length is computed by the worker);
  - a list of parts, each bytes or a FileRange: sent in order; file parts with os.sendfile
    (multipart/byteranges is such a list); `length` must be the total;
  - a BodySource (CGI output): read only when the socket can take more, so a slow reader applies
    back-pressure to the producer; `length` None means unknown (chunked on HTTP/1.1,
    close-delimited on HTTP/1.0). See forkd.http.framing.
The worker adds the framing headers (Date, Server, Content-Length or Transfer-Encoding, Connection),
strips the body of HEAD responses, and calls `cleanup` once the response is sent or abandoned.
"""

from __future__ import annotations

import functools as _functools
import html as _html
import re
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus as _HTTPStatus
from typing import Protocol


@dataclass(slots=True)
class FileRange:
    """`count` bytes of an open file descriptor from `offset`; sent with os.sendfile."""

    fd: int
    offset: int
    count: int


class BodySource(Protocol):
    def read(self) -> bytes | None:
        """The next bytes; b"" when none are ready yet (the producer resumes the connection once
        there are), None at the end. Raises when the body cannot be completed."""


Body = bytes | list[bytes | FileRange] | BodySource


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)  # without framing headers
    body: Body = b""
    length: int | None = None  # total body bytes; computed for bytes bodies; None: unknown
    close: bool = False  # close the connection after this response
    raw: bool = False  # nph CGI: the source yields the whole response, status line included
    cleanup: Callable[[], None] | None = None  # release files / processes; called exactly once
    min_rate: int = 0  # bytes/s a client must average to keep a streamed body going (0: any)


# -- Serialisation (the worker's side of the contract above) --------------------------------------
#
# A response head is built as one str and encoded once: the status line (the reason phrase from
# RFC 9110 §15), Date (cached per second, RFC 9110 §6.6.1), Server, the handler's headers, then the
# framing headers the worker chose (RFC 9112 §6.3), then Connection. Handler headers are checked for
# CR/LF (response splitting) in one pass over the joined text, not per character.

REASONS: dict[int, str] = {status.value: status.phrase for status in _HTTPStatus}
REASONS.update({  # the RFC 9110 names where the stdlib still uses older ones
    413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
    422: "Unprocessable Content",
})

# Framing fields only the worker may set; a handler's copy is dropped (its length could lie).
FRAMING_FIELDS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})

# Statuses whose responses never carry content (RFC 9110 §6.4.1, §15.3.5, §15.4.5).
NO_CONTENT = frozenset({100, 101, 102, 103, 204, 304})

# A line start not followed by `token ": "` (RFC 9110 §5.1 field-name), except the very end.
_BAD_LINE = re.compile(r"(?m)^(?![!#$%&'*+\-.^_`|~0-9A-Za-z]+: |\Z)").search

STATUS_LINES = {status: f"HTTP/1.1 {status} {phrase}\r\n" for status, phrase in REASONS.items()}
FIELDS_CACHE_SIZE = 1024  # rendered header sets kept, each at most FIELDS_CACHE_LARGEST chars:
FIELDS_CACHE_LARGEST = 1024  # 1 MiB in all (a CGI script's header block may be 64 KiB)
_FIELDS_CACHE: dict[tuple[tuple[str, str], ...], str] = {}

_date_second = -1
_date_text = ""


def http_date() -> str:
    """IMF-fixdate of the current second (RFC 9110 §5.6.7), formatted once per second."""
    global _date_second, _date_text
    now = int(_time.time())
    if now != _date_second:
        _date_second = now
        _date_text = _time.strftime("%a, %d %b %Y %H:%M:%S GMT", _time.gmtime(now))
    return _date_text


class UnsafeHeader(ValueError):
    """A handler produced a header that would split the response (CR/LF, bad name)."""


def render_head(status: int, headers: list[tuple[str, str]], server: str, framing: str,
                keep_alive: bool, http10: bool) -> bytes:
    """The complete response head, blank line included.

    framing is the already-formatted framing line(s) ("Content-Length: 12\\r\\n",
    "Transfer-Encoding: chunked\\r\\n" or ""); keep_alive False adds Connection: close, and an
    HTTP/1.0 client that asked for keep-alive is told it got it (RFC 9112 §9.3).
    """
    if keep_alive:
        connection = "Connection: keep-alive\r\n" if http10 else ""
    else:
        connection = "Connection: close\r\n"
    status_line = STATUS_LINES.get(status) or f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
    fields = _fields_text(headers) if headers else ""
    return f"{status_line}Date: {http_date()}\r\nServer: {server}\r\n{fields}{framing}{connection}\r\n".encode(
        "latin-1"
    )


def _fields_text(headers: list[tuple[str, str]]) -> str:
    """The handler's header lines, checked; cached, since a file's headers repeat per request."""
    try:
        key = tuple(headers)
        text = _FIELDS_CACHE.get(key)
    except TypeError:  # unhashable pairs (lists): render without the cache
        return _render_fields(headers)
    if text is None:
        text = _render_fields(headers)
        if len(text) <= FIELDS_CACHE_LARGEST:
            if len(_FIELDS_CACHE) >= FIELDS_CACHE_SIZE:
                _FIELDS_CACHE.clear()
            _FIELDS_CACHE[key] = text
    return text


def _render_fields(headers: list[tuple[str, str]]) -> str:
    lines = [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in FRAMING_FIELDS]
    text = "".join(lines)
    # Every line must contain exactly one CRLF (its own) and no other CR or LF: one count over the
    # whole text checks them all. A name with a colon, a space or nothing at all is refused too.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise UnsafeHeader("CR or LF inside a response header")
    if _BAD_LINE(text) is not None:
        raise UnsafeHeader("invalid response header name")
    return text


@_functools.lru_cache(maxsize=256)
def error_body(status: int, detail: str = "") -> bytes:
    """A small HTML page for an error status; the detail is escaped and never a traceback."""
    title = f"{status} {REASONS.get(status, 'Error')}"
    text = f"<p>{_html.escape(detail)}</p>\n" if detail else ""
    return (
        "<!DOCTYPE html>\n<html><head><title>" + title + "</title></head>\n"
        "<body><h1>" + title + "</h1>\n" + text + "<hr><address>forkd</address></body></html>\n"
    ).encode("utf-8")
