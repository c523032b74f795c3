"""What a handler returns: a status, headers and a body the worker can send without blocking.

Handlers never touch the socket. They return a Response whose body is one of:
  - bytes: sent as is (Content-Length is computed by the worker);
  - a list of parts, each bytes or a FileRange: sent in order; file parts with os.sendfile
    (multipart/byteranges is such a list); `length` must be the total;
  - an iterator of bytes (CGI output): pulled only when the socket can take more, so a slow
    reader applies back-pressure to the producer; `length` None means unknown (chunked on
    HTTP/1.1, close-delimited on HTTP/1.0).
The worker adds the framing headers (Date, Server, Content-Length or Transfer-Encoding, Connection),
strips the body of HEAD responses, and calls `cleanup` once the response is sent or abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass(slots=True)
class FileRange:
    """`count` bytes of an open file descriptor from `offset`; sent with os.sendfile."""

    fd: int
    offset: int
    count: int


Body = bytes | list[bytes | FileRange] | Iterator[bytes]


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)  # without framing headers
    body: Body = b""
    length: int | None = None  # total body bytes; computed for bytes bodies; None: unknown
    close: bool = False  # close the connection after this response
    raw: bool = False  # nph CGI: the iterator yields the whole response, status line included
    cleanup: Callable[[], None] | None = None  # release files / processes; called exactly once
