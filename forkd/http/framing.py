"""Message framing of responses (RFC 9112 §6): chosen in one place, applied by sans-I/O writers.

`choose` looks at the request and the Response a handler returned and decides how the body is
delimited: no body (HEAD, 1xx/204/304), Content-Length (bytes, a list of parts, or a stream whose
length the handler declared), chunked (a stream of unknown length to an HTTP/1.1 client), or the end
of the connection (a stream of unknown length to an HTTP/1.0 client, or an nph CGI script's raw
output). It returns the framing header line and a mode; the connection writes accordingly.

A streamed body is a BodySource (see forkd.http.response): `read()` gives the next bytes, b"" when
nothing is ready yet (the source wakes the connection later), or None at the end. `BodyWriter`
wraps a source and frames each piece as the mode requires; it never performs I/O itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from forkd.http.response import NO_CONTENT, BodySource, FileRange, Response

# Body modes of a response.
NONE, BYTES, PARTS, LENGTH, CHUNKED, CLOSE, RAW = range(7)

LAST_CHUNK = b"0\r\n\r\n"  # last-chunk and an empty trailer section (RFC 9112 §7.1)


def choose(response: Response, http10: bool) -> tuple[str, int, int]:
    """(framing header line, mode, body length) for a response; see the module docstring."""
    if response.raw:
        return "", RAW, 0
    body = response.body
    kind = type(body)
    if response.status in NO_CONTENT:
        return "", NONE, 0
    if kind is bytes:
        length = len(body)  # type: ignore[arg-type]
        return f"Content-Length: {length}\r\n", BYTES, length
    if kind is list:
        given = response.length
        length = parts_length(body) if given is None else given  # type: ignore[arg-type]
        return f"Content-Length: {length}\r\n", PARTS, length
    if response.length is not None:
        return f"Content-Length: {response.length}\r\n", LENGTH, response.length
    if http10:
        return "", CLOSE, 0  # close-delimited (RFC 9112 §6.3, item 8)
    return "Transfer-Encoding: chunked\r\n", CHUNKED, 0


def parts_length(parts: list[bytes | FileRange]) -> int:
    return sum(len(part) if type(part) is bytes else part.count for part in parts)  # type: ignore


class IteratorSource:
    """A plain iterator of bytes as a BodySource (it never has to wait)."""

    __slots__ = ("iterator",)

    def __init__(self, iterable: Any) -> None:
        self.iterator: Iterator[bytes] = iter(iterable)

    def read(self) -> bytes | None:
        for chunk in self.iterator:
            if chunk:
                return chunk
        return None


class BodyWriter:
    """A streamed body, framed as it is read: chunked, length-checked, close-delimited or raw."""

    __slots__ = ("finished", "mode", "remaining", "short", "source")

    def __init__(self, source: BodySource, mode: int, length: int) -> None:
        self.source = source
        self.mode = mode
        self.remaining = length
        self.finished = False
        self.short = False  # the body ended before its declared length: the framing is broken

    def pull(self) -> bytes | None:
        """The next bytes to send, b"" when the source must be waited for, None when complete."""
        if self.finished:
            return None
        if self.mode == LENGTH and not self.remaining:
            self.finished = True  # the declared length is complete; the source is not read again
            return None
        chunk = self.source.read()
        if chunk is None:
            self.finished = True
            if self.mode == CHUNKED:
                return LAST_CHUNK
            if self.mode == LENGTH and self.remaining:
                self.short = True
            return None
        if not chunk:
            return b""
        mode = self.mode
        if mode == CHUNKED:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        if mode == LENGTH:
            if len(chunk) >= self.remaining:
                chunk = chunk[: self.remaining]
                self.finished = True  # a longer body than declared is cut at the declared length
            self.remaining -= len(chunk)
        return chunk
