"""The worker's parsing steps without sockets, for the parser's property tests and fuzz harness.

`drive` performs what forkd.connection does with received bytes (skip empty lines, find_head,
parse_head, a LengthReader or ChunkedDecoder, pipelined leftovers) over a list of segments, and
reports the completed requests with their bodies and the status of the error that stopped it.
"""

from __future__ import annotations

from forkd.config import Limits
from forkd.http.body import ChunkedDecoder, LengthReader
from forkd.http.errors import HTTPError
from forkd.http.parser import find_head, parse_head, skip_empty_lines

PARSER_STATUSES = {400, 413, 414, 417, 431, 501, 505}

Outcome = tuple[list[tuple[str, str, str, tuple[tuple[str, str], ...], bytes]], int]


def drive(chunks: list[bytes], limits: Limits) -> Outcome:
    """(requests completed, with their bodies; the status of the error that stopped it, or 0)."""
    buffer = bytearray()
    done: list[tuple[str, str, str, tuple[tuple[str, str], ...], bytes]] = []
    request = None
    reader: LengthReader | ChunkedDecoder | None = None
    body: list[bytes] = []
    try:
        for chunk in chunks:
            buffer += chunk
            while True:
                if request is None:
                    if buffer[:1] == b"\r":
                        skip_empty_lines(buffer)
                    end = find_head(buffer, limits) if buffer else -1
                    if end < 0:
                        break
                    head = bytes(buffer[:end])
                    del buffer[:end]
                    request = parse_head(head, limits)
                    reader = (ChunkedDecoder(limits.body) if request.chunked
                              else LengthReader(request.content_length or 0))
                assert reader is not None
                data, buffer = bytes(buffer), bytearray()
                body.append(reader.feed(data))
                if not reader.done:
                    break
                buffer = bytearray(reader.rest)
                done.append((request.method, request.target, request.version,
                             tuple(sorted(request.headers.items())), b"".join(body)))
                request, reader, body = None, None, []
                if not buffer:
                    break
    except HTTPError as error:
        check_error(error)
        return done, error.status
    return done, 0


def check_error(error: HTTPError) -> None:
    assert error.status in PARSER_STATUSES, error
    assert error.close, f"a parse error must close the connection: {error!r}"
    assert type(error).status == error.status
