"""The worker's parsing steps without sockets, for the parser corpus, property tests and fuzzer.

`Driver` performs, step for step, what forkd.connection.Connection does with received bytes, and
calls the very functions it calls, with the same arguments:

- `_read_head`: nothing to do on an empty buffer; a buffer starting with CR goes through
  `skip_empty_lines` (and `scanned` restarts at 0); `find_head(buffer, limits, scanned)`; when the
  head is incomplete, `scanned = len(buffer)`, so the next call examines only the new bytes (the
  incremental path a trickled head takes); when complete, `scanned = 0` and the head is cut off.
- `_start`: the head goes through the worker's `HeadParser.parse` (its cache of whole heads
  included: pass one HeadParser to several drives, as one worker serves many connections, and
  repeated heads are answered from the cache); a body reader is made only when the request has a
  body (chunked, or a Content-Length above 0): `ChunkedDecoder(limits.body)` or
  `LengthReader(length)`.
- `_read_body`: the reader is fed the whole buffer when there is one; once done, its `rest` is
  the next request's buffer (pipelining).

An HTTPError from any step ends the drive, as it ends the connection (every parser error closes).
If Connection changes these steps, change this driver with it: it exists so that the tests drive
the worker's code path, not a model of it.
"""

from __future__ import annotations

from forkd.config import Limits
from forkd.http.body import ChunkedDecoder, LengthReader
from forkd.http.errors import HTTPError
from forkd.http.parser import HeadParser, find_head, skip_empty_lines
from forkd.http.request import Request

PARSER_STATUSES = {400, 413, 414, 417, 431, 501, 505}

Outcome = tuple[list[tuple[str, str, str, tuple[tuple[str, str], ...], bytes]], int]


class Driver:
    """Bytes in (feed), completed (Request, body) pairs out (done); HTTPError when refused."""

    def __init__(self, limits: Limits, head_parser: HeadParser | None = None) -> None:
        self.limits = limits
        self.head_parser = head_parser or HeadParser(limits)
        self.buffer = bytearray()
        self.scanned = 0  # as Connection.scanned
        self.request: Request | None = None
        self.reader: LengthReader | ChunkedDecoder | None = None
        self.body: list[bytes] = []
        self.done: list[tuple[Request, bytes]] = []

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.step():
            pass

    def step(self) -> bool:
        """One step of Connection.process; True when it made progress and may go on."""
        if self.request is None:
            return self._read_head()
        return self._read_body()

    def _read_head(self) -> bool:
        buffer = self.buffer
        if not buffer:
            return False
        if buffer[0] == 13:
            skip_empty_lines(buffer)
            self.scanned = 0
            if not buffer:
                return False
        end = find_head(buffer, self.limits, self.scanned)
        if end < 0:
            self.scanned = len(buffer)
            return False
        self.scanned = 0
        head = bytes(buffer[:end])
        del buffer[:end]
        self._start(head)
        return True

    def _start(self, head: bytes) -> None:
        request = self.head_parser.parse(head)
        self.request = request
        if not (request.chunked or request.content_length):
            self._finish(b"")
            return
        length = request.content_length or 0
        self.reader = ChunkedDecoder(self.limits.body) if request.chunked else LengthReader(length)

    def _read_body(self) -> bool:
        reader = self.reader
        assert reader is not None
        if self.buffer:
            data = self.buffer
            self.buffer = bytearray()
            self.body.append(reader.feed(data))
            if reader.done and reader.rest:
                self.buffer = bytearray(reader.rest)
        if not reader.done:
            return False
        self._finish(b"".join(self.body))
        return True

    def _finish(self, body: bytes) -> None:
        assert self.request is not None
        self.done.append((self.request, body))
        self.request, self.reader, self.body = None, None, []


def drive(chunks: list[bytes], limits: Limits, head_parser: HeadParser | None = None) -> Outcome:
    """(requests completed, with their bodies; the status of the error that stopped it, or 0)."""
    driver = Driver(limits, head_parser)
    status = 0
    try:
        for chunk in chunks:
            driver.feed(chunk)
    except HTTPError as error:
        check_error(error)
        status = error.status
    done = [(request.method, request.target, request.version,
             tuple(sorted(request.headers.items())), body) for request, body in driver.done]
    return done, status


def check_error(error: HTTPError) -> None:
    assert error.status in PARSER_STATUSES, error
    assert error.close, f"a parse error must close the connection: {error!r}"
    assert type(error).status == error.status
