"""FastCGI records, encoded and decoded without I/O (the FastCGI 1.0 specification, 1996).

Theory of operation
-------------------
Everything on a FastCGI connection is a record: an 8-byte header (version 1, type, request id,
content length, padding length, reserved), up to 65535 bytes of content, then padding, which this
side adds so every record is a multiple of 8 bytes long (spec §3.3: "recommended", it keeps the
peer's reads aligned). forkd is a Responder's client (spec §6.2), one request per connection:

    -> BEGIN_REQUEST (role RESPONDER, flags 0: the application closes the connection when done)
    -> PARAMS records carrying name-value pairs, then an empty PARAMS record (end of stream)
    -> STDIN records carrying the request body, then an empty STDIN record
    <- STDOUT and STDERR records, in any order and any sizes; an empty one ends that stream but
       nothing else (spec §3.3: a stream ends with an empty record; the request does not)
    <- END_REQUEST (appStatus, protocolStatus): the request is over

A name-value pair (spec §3.4) is two lengths, then the name's and the value's bytes; a length under
128 is one byte, anything longer four bytes with the top bit set (so at most 2**31 - 1).

`RecordReader` cuts a byte stream into records as bytes arrive (a record may be split across reads
or several may come in one); it refuses a version other than 1, which is how a peer that does not
speak FastCGI (an HTTP server on the configured port, say) is noticed. The encoders return bytes
ready to write. No sockets here: the exchange that owns the connection lives in
forkd.handlers.fastcgi, and this module is unit-tested on its own.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable

VERSION = 1
# Record types (spec §8).
BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11
# Roles and protocol statuses of END_REQUEST.
RESPONDER = 1
REQUEST_COMPLETE = 0
CANT_MPX_CONN = 1
OVERLOADED = 2
UNKNOWN_ROLE = 3

HEADER = struct.Struct(">BBHHBx")  # version, type, request id, content length, padding length
END_BODY = struct.Struct(">IB3x")  # appStatus, protocolStatus
MAX_CONTENT = 65535
# Content of a record this side writes: a multiple of 8 below MAX_CONTENT, so no padding is needed
# for all but the last record of a stream.
WRITE_CONTENT = 65528
LONG_LENGTH = 0x80000000


class ProtocolError(Exception):
    """The peer broke the record framing; the connection cannot be used any more."""


# One record received: (type, request id, content). A plain tuple: several are made per request,
# and a named tuple costs six times as much to build.
Record = tuple[int, int, bytes]


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, padded to a multiple of 8 bytes. `content` must fit in one record."""
    length = len(content)
    if length > MAX_CONTENT:
        raise ValueError("record content longer than 65535 bytes")
    padding = -length % 8
    return HEADER.pack(VERSION, kind, request_id, length, padding) + content + b"\0" * padding


def stream(kind: int, request_id: int, data: bytes) -> bytes:
    """`data` as a run of records of one stream (not ended: see `end_of_stream`)."""
    if len(data) <= WRITE_CONTENT:  # the common case: one record (none for no data: an empty
        return record(kind, request_id, data) if data else b""  # record would end the stream)
    view = memoryview(data)
    return b"".join(record(kind, request_id, bytes(view[start:start + WRITE_CONTENT]))
                    for start in range(0, len(view), WRITE_CONTENT))


# The same for every request of an id: made once (a struct pack and two concatenations saved per
# request; BEGIN_REQUEST is kept by the handler).
@functools.cache
def end_of_stream(kind: int, request_id: int) -> bytes:
    return record(kind, request_id)


def begin_request(request_id: int, keep_connection: bool = False) -> bytes:
    return record(BEGIN_REQUEST, request_id, struct.pack(">HB5x", RESPONDER, int(keep_connection)))


def abort_request(request_id: int) -> bytes:
    return record(ABORT_REQUEST, request_id)


_SHORT = [bytes((length,)) for length in range(128)]


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs (spec §3.4), concatenated."""
    short = _SHORT
    parts = []
    for name, value in pairs:
        name_length, value_length = len(name), len(value)
        parts.append(short[name_length] if name_length < 128 else _length(name_length))
        parts.append(short[value_length] if value_length < 128 else _length(value_length))
        parts.append(name)
        parts.append(value)
    return b"".join(parts)


def _length(length: int) -> bytes:
    if length < 128:
        return bytes((length,))
    if length >= LONG_LENGTH:
        raise ValueError("name or value longer than 2**31 - 1 bytes")
    return struct.pack(">I", length | LONG_LENGTH)


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """The inverse of encode_pairs (for GET_VALUES_RESULT, and for tests)."""
    pairs = []
    position = 0
    while position < len(data):
        name_length, position = _read_length(data, position)
        value_length, position = _read_length(data, position)
        end = position + name_length + value_length
        if end > len(data):
            raise ProtocolError("name-value pair longer than its record")
        pairs.append((data[position:position + name_length], data[position + name_length:end]))
        position = end
    return pairs


def _read_length(data: bytes, position: int) -> tuple[int, int]:
    if position >= len(data):
        raise ProtocolError("truncated name-value pair")
    if data[position] < 128:
        return data[position], position + 1
    if position + 4 > len(data):
        raise ProtocolError("truncated name-value pair length")
    return struct.unpack_from(">I", data, position)[0] & ~LONG_LENGTH, position + 4


def params(request_id: int, pairs: Iterable[tuple[bytes, bytes]], encoded: bytes = b"") -> bytes:
    """The whole PARAMS stream of a request, ended; `encoded`: pairs encoded beforehand, first."""
    return (stream(PARAMS, request_id, encoded + encode_pairs(pairs))
            + end_of_stream(PARAMS, request_id))


def end_request_status(content: bytes) -> tuple[int, int]:
    """(appStatus, protocolStatus) of an END_REQUEST record's content."""
    if len(content) < END_BODY.size:
        raise ProtocolError("END_REQUEST record too short")
    app_status, protocol_status = END_BODY.unpack_from(content)
    return app_status, protocol_status


class RecordReader:
    """Cuts the bytes received on a connection into records."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Record]:
        """The records completed by `data` (maybe none); raises ProtocolError on a broken frame."""
        buffer = self.buffer
        if buffer:
            buffer += data
            data = bytes(buffer)
        records = []
        position = 0
        size = HEADER.size
        total = len(data)
        unpack = HEADER.unpack_from
        while total - position >= size:
            version, kind, request_id, length, padding = unpack(data, position)
            if version != VERSION:
                raise ProtocolError(f"not a FastCGI record (version byte {version})")
            start = position + size
            end = start + length + padding
            if end > total:
                break
            records.append((kind, request_id, data[start:start + length]))
            position = end
        # What is left (part of a record) waits for the next bytes.
        if position < total:
            self.buffer = bytearray(data[position:])
        elif buffer:
            self.buffer = bytearray()
        return records

    @property
    def pending(self) -> int:
        """Bytes of a record not yet complete."""
        return len(self.buffer)
