"""Request body readers with limits: fed bytes as they arrive, no I/O of their own.

Theory of operation
-------------------
The worker receives body bytes without blocking and feeds them to a reader; the reader returns the
payload bytes it could decode so far and says when the body is complete. Bytes that arrived after
the end of the body (a pipelined next request) are left in `rest` for the worker to parse next.

- LengthReader: Content-Length framing (RFC 9112 §6.2).
- ChunkedDecoder: chunked transfer coding (RFC 9112 §7.1), strict: CRLF only, chunk-size at most
  16 hex digits (an overflow attempt is a 400, not a wrap-around), bounded chunk extensions and
  trailer section, and the decoded total bounded by limits.body (413).

    chunked-body   = *chunk last-chunk trailer-section CRLF
    chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    chunk-size     = 1*HEXDIG
    last-chunk     = 1*("0") [ chunk-ext ] CRLF
    chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    trailer-section = *( field-line CRLF )

Trailer fields are checked for syntax and then discarded: RFC 9110 §6.5.1 lets a recipient ignore
them, and nothing in forkd (CGI included) could use them.
"""

from __future__ import annotations

import re

from forkd.http.errors import BadRequest, ContentTooLarge, HeadersTooLarge

MAX_SIZE_DIGITS = 16  # 2**64: larger is an overflow attempt
MAX_CHUNK_LINE = 4096  # chunk-size plus extensions on one line
MAX_EXTENSIONS = 65536  # all chunk extensions of one body together
MAX_TRAILER = 16384  # the whole trailer section

HEXDIG = re.compile(rb"[0-9A-Fa-f]+")
# chunk-ext with BWS, as one pattern over the text after chunk-size; chunk-ext-val is a token or a
# quoted-string (qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text; quoted-pair = "\" ...).
CHUNK_EXT = re.compile(
    rb'(?:[ \t]*;[ \t]*[!#$%&\'*+\-.^_`|~0-9A-Za-z]+'
    rb'(?:[ \t]*=[ \t]*(?:[!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]'
    rb'|\\[\t \x21-\x7e\x80-\xff])*"))?)*'
)
FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t \x21-\x7e\x80-\xff]*")

SIZE, DATA, DATA_END, TRAILER, DONE = range(5)


class LengthReader:
    """A body of exactly `length` bytes."""

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0
        self.rest = b""

    def feed(self, data: bytes | bytearray) -> bytes:
        if len(data) <= self.remaining:
            self.remaining -= len(data)
            self.done = self.remaining == 0
            return bytes(data)
        payload = bytes(data[: self.remaining])
        self.rest = bytes(data[self.remaining :])
        self.remaining = 0
        self.done = True
        return payload


class ChunkedDecoder:
    """Incremental decoder of the chunked transfer coding: feed bytes, get payload, check `done`."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.total = 0  # payload bytes decoded so far
        self.done = False
        self.rest = b""  # bytes received after the end of the chunked body
        self._state = SIZE
        self._buffer = bytearray()
        self._chunk_left = 0
        self._extensions = 0
        self._trailer = 0

    def feed(self, data: bytes | bytearray) -> bytes:
        """Decode as much as possible; raise BadRequest / ContentTooLarge / HeadersTooLarge."""
        if self.done:
            self.rest += data  # past the end: the next request's bytes
            return b""
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        while True:
            state = self._state
            if state == DATA:
                if not buffer:
                    break
                take = min(self._chunk_left, len(buffer))
                out.append(bytes(buffer[:take]))
                del buffer[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    break
                self._state = DATA_END
            elif state == SIZE:
                line = self._line(MAX_CHUNK_LINE)
                if line is None:
                    break
                self._chunk_left = self._chunk_size(line)
                self._state = DATA if self._chunk_left else TRAILER
            elif state == DATA_END:
                if len(buffer) < 2:
                    if buffer and buffer[0] != 13:
                        raise BadRequest("chunk data not followed by CRLF")
                    break
                if buffer[:2] != b"\r\n":
                    raise BadRequest("chunk data not followed by CRLF")
                del buffer[:2]
                self._state = SIZE
            elif state == TRAILER:
                line = self._line(MAX_TRAILER - self._trailer)
                if line is None:
                    break
                if not line:
                    self._finish()
                    break
                self._trailer_field(line)
            else:
                break
        return b"".join(out)

    def _line(self, limit: int) -> bytes | None:
        """The next CRLF-terminated line (without it), or None when incomplete."""
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            if buffer.find(b"\n") >= 0:
                raise BadRequest("bare LF in chunked framing")
            if len(buffer) > limit:
                self._too_long()
            return None
        if end > limit:
            self._too_long()
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        if b"\r" in line or b"\n" in line:
            raise BadRequest("bare CR or LF in chunked framing")
        return line

    def _too_long(self) -> None:
        if self._state == TRAILER:
            raise HeadersTooLarge("trailer section too large")
        raise BadRequest("chunk-size line too long")

    def _chunk_size(self, line: bytes) -> int:
        size_end = len(line)
        for stop in (b";", b" ", b"\t"):
            index = line.find(stop)
            if 0 <= index < size_end:
                size_end = index
        digits, extensions = line[:size_end], line[size_end:]
        if HEXDIG.fullmatch(digits) is None:
            raise BadRequest("malformed chunk-size")
        if len(digits) > MAX_SIZE_DIGITS:
            raise BadRequest("chunk-size overflow")
        if extensions:
            if CHUNK_EXT.fullmatch(extensions) is None:
                raise BadRequest("malformed chunk extension")
            self._extensions += len(extensions)
            if self._extensions > MAX_EXTENSIONS:
                raise BadRequest("too many chunk extensions")
        size = int(digits, 16)
        self.total += size
        if self.total > self.max_body:
            raise ContentTooLarge("request body too large")
        return size

    def _trailer_field(self, line: bytes) -> None:
        self._trailer += len(line) + 2
        if self._trailer > MAX_TRAILER:
            raise HeadersTooLarge("trailer section too large")
        if FIELD_LINE.fullmatch(line) is None:
            raise BadRequest("malformed trailer field")

    def _finish(self) -> None:
        self.done = True
        self._state = DONE
        self.rest = bytes(self._buffer)
        self._buffer.clear()
