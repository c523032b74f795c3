"""The WebSocket protocol (RFC 6455), server side, with no I/O: the opening handshake and frames.

Theory of operation
-------------------
`check_handshake(request)` decides whether an HTTP request is a valid opening handshake (§4.2.1)
and returns its Sec-WebSocket-Key; a request that is not raises the HTTPError that answers it:
426 with `Upgrade: websocket` for a plain request (RFC 9110 §15.5.22), 426 with
`Sec-WebSocket-Version: 13` for another protocol version (§4.4), 405 for a method other than GET,
400 for everything else malformed. `accept_key(key)` is the Sec-WebSocket-Accept value (§4.2.2).
Origin checks are policy, not protocol: the route does them.

`FrameParser` turns the bytes a client sends into events, fed in pieces of any size:
`(TEXT | BINARY, payload)` for a complete message, `(PING | PONG, payload)` and
`(CLOSE, payload)` for control frames. It enforces what §5 asks of a server:

- every client frame is masked (§5.1); the payload is unmasked as it arrives;
- reserved bits are zero (no extension is ever negotiated) and opcodes are known (§5.2);
- control frames carry at most 125 bytes and are never fragmented (§5.5); they may arrive
  between the fragments of a message (§5.4);
- a continuation frame continues a message in progress, and a new message waits for the end of
  the previous one (§5.4);
- text is valid UTF-8 (§8.1), checked incrementally, across fragments, as bytes arrive: an
  invalid sequence fails at once, not when the message completes;
- a message (all its fragments together) is at most `max_message` bytes, checked from the frame
  headers before the payload is read (§10.4), so a client cannot make the server buffer more;
- a close frame's payload is empty or a valid code (§7.4) with a UTF-8 reason.

A violation is a ProtocolError carrying the close code to answer with (1002, 1007 or 1009). The
events before it are still returned (a message that preceded a bad frame in the same read is
delivered), the error is left in `error`, and the parser takes no more input. Frames the server sends are never masked and never
fragmented: `encode(opcode, payload)` and `close_payload(code, reason)` build them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import struct

from forkd.http.errors import BadRequest, HTTPError, MethodNotAllowed
from forkd.http.request import Request

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # §1.3
VERSION = "13"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KNOWN_OPCODES = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})
MAX_CONTROL = 125

# Close codes (§7.4.1).
NORMAL, GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED = 1000, 1001, 1002, 1003
INVALID_DATA, POLICY, TOO_BIG, INTERNAL = 1007, 1008, 1009, 1011
# Codes a peer may send (§7.4.1, §7.4.2 and the IANA registry): 1004-1006 and 1015 are reserved
# or "never on the wire"; 3000-4999 belong to libraries and applications.
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

_SHORT = struct.Struct("!H")
_LONG = struct.Struct("!Q")


class UpgradeRequired(HTTPError):
    status, reason = 426, "Upgrade Required"


class ProtocolError(Exception):
    """The client broke RFC 6455: close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- the opening handshake ----------------------------------------------------------------------

def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in value.split(",")} if value else set()


def check_handshake(request: Request) -> str:
    """The Sec-WebSocket-Key of a valid opening handshake; raise the HTTPError answering others."""
    headers = request.headers
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise UpgradeRequired("this resource speaks WebSocket only",
                              [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    if request.method != "GET":
        raise MethodNotAllowed("GET", "a WebSocket handshake is a GET request")
    if request.version != "HTTP/1.1":
        raise BadRequest("a WebSocket handshake needs HTTP/1.1")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise BadRequest("Connection must list Upgrade")
    if request.has_body:
        raise BadRequest("a WebSocket handshake has no body")
    if headers.get("sec-websocket-version", "").strip() != VERSION:
        raise UpgradeRequired("unsupported WebSocket version",
                              [("Sec-WebSocket-Version", VERSION)])
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64")
    return key


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (§4.2.2, item 5.4)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


# -- frames the server sends --------------------------------------------------------------------

def encode(opcode: int, payload: bytes = b"") -> bytes:
    """One unmasked, unfragmented frame (FIN set)."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return bytes((first, 126)) + _SHORT.pack(length) + payload
    return bytes((first, 127)) + _LONG.pack(length) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code and a reason cut to fit a control frame."""
    data = reason.encode("utf-8")[: MAX_CONTROL - 2]
    return _SHORT.pack(code) + data.decode("utf-8", "ignore").encode("utf-8")


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame already checked by the parser; 1005 when it has no code."""
    if not payload:
        return 1005, ""
    return _SHORT.unpack_from(payload)[0], payload[2:].decode("utf-8")


def _check_close(payload: bytes) -> None:
    if not payload:
        return
    if len(payload) == 1:
        raise ProtocolError(PROTOCOL_ERROR, "close frame with a one-byte payload")
    code = _SHORT.unpack_from(payload)[0]
    if code not in SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "close reason is not UTF-8") from None


def unmask(data: bytes | bytearray, mask: bytes, offset: int) -> bytes:
    """XOR `data` with the 4-byte `mask`, starting `offset` bytes into the frame's payload."""
    if offset % 4:
        shift = offset % 4
        mask = mask[shift:] + mask[:shift]
    length = len(data)
    if not length:
        return b""
    key = (mask * (length // 4 + 1))[:length]
    # One arbitrary-precision XOR: linear, in C, much faster than a loop over the bytes.
    value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(length, "little")


# -- frames a client sends ----------------------------------------------------------------------

Event = tuple[int, bytes]


class FrameParser:
    """Client frames in, complete messages and control frames out (see the module docstring)."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.buffer = bytearray()
        # The frame being read: its opcode, FIN bit, mask, payload bytes left and read so far.
        self.in_frame = False
        self.opcode = 0
        self.fin = False
        self.mask = b""
        self.remaining = 0
        self.offset = 0
        self.pos = 0  # bytes of `buffer` consumed during this feed
        # The message being assembled from data frames (opcode 0: none in progress).
        self.message_opcode = 0
        self.message = bytearray()
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Event]:
        """Events completed by `data`, in order; at the first violation, `error` is set."""
        events: list[Event] = []
        if self.error is not None:
            return events
        self.buffer += data
        try:
            while True:
                if not self.in_frame and not self._header():
                    break
                if not self._payload(events):
                    break
        except ProtocolError as error:
            self.error = error
            self.buffer = bytearray()
            return events
        # Consumed bytes are dropped once per feed, not once per frame: a read full of small
        # frames would otherwise move the rest of the buffer for each of them.
        del self.buffer[:self.pos]
        self.pos = 0
        return events

    def _header(self) -> bool:
        buffer = self.buffer
        pos = self.pos
        if len(buffer) - pos < 2:
            return False
        first, second = buffer[pos], buffer[pos + 1]
        if first & 0x70:
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        length = second & 0x7F
        if opcode not in KNOWN_OPCODES:
            raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if not second & 0x80:
            raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
        if opcode >= CLOSE:
            if not fin:
                raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL:
                raise ProtocolError(PROTOCOL_ERROR, "control frame longer than 125 bytes")
        elif opcode == CONTINUATION:
            if not self.message_opcode:
                raise ProtocolError(PROTOCOL_ERROR, "continuation frame without a message")
        elif self.message_opcode:
            raise ProtocolError(PROTOCOL_ERROR, "new message before the previous one ended")
        start = 2 if length < 126 else 4 if length == 126 else 10
        if len(buffer) - pos < start + 4:
            return False
        if length == 126:
            length = _SHORT.unpack_from(buffer, pos + 2)[0]
        elif length == 127:
            length = _LONG.unpack_from(buffer, pos + 2)[0]
            if length >> 63:
                raise ProtocolError(PROTOCOL_ERROR, "frame length with the high bit set")
        if opcode < CLOSE and len(self.message) + length > self.max_message:
            raise ProtocolError(TOO_BIG, f"message larger than {self.max_message} bytes")
        self.mask = bytes(buffer[pos + start:pos + start + 4])
        self.pos = pos + start + 4
        self.in_frame = True
        self.opcode, self.fin, self.remaining, self.offset = opcode, fin, length, 0
        if opcode == TEXT or opcode == BINARY:
            self.message_opcode = opcode
        return True

    def _payload(self, events: list[Event]) -> bool:
        """Consume what the buffer holds of the current frame; True when the frame is complete."""
        buffer = self.buffer
        pos = self.pos
        opcode = self.opcode
        remaining = self.remaining
        take = min(remaining, len(buffer) - pos)
        if take == remaining and self.fin and not self.offset and (opcode == TEXT or opcode == BINARY):
            # The common case: a whole unfragmented message is here. No assembly, one check.
            payload = unmask(buffer[pos:pos + take], self.mask, 0)
            self.pos = pos + take
            if opcode == TEXT:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError(INVALID_DATA, "text message is not valid UTF-8") from None
            self.in_frame = False
            self.message_opcode = 0
            events.append((opcode, payload))
            return True
        if opcode >= CLOSE:
            if take < remaining:
                return False  # control frames are small: wait for the whole payload
            payload = unmask(buffer[pos:pos + take], self.mask, 0)
            self.pos = pos + take
            self.in_frame = False
            if opcode == CLOSE:
                _check_close(payload)
            events.append((opcode, payload))
            return True
        if take:
            chunk = unmask(buffer[pos:pos + take], self.mask, self.offset)
            self.pos = pos + take
            self.offset += take
            self.remaining = remaining = remaining - take
            if self.message_opcode == TEXT:
                self._check_text(chunk, final=False)
            self.message += chunk
        if remaining:
            return False
        self.in_frame = False
        if self.fin:
            if self.message_opcode == TEXT:
                self._check_text(b"", final=True)
            events.append((self.message_opcode, bytes(self.message)))
            self.message = bytearray()
            self.message_opcode = 0
        return True

    def _check_text(self, chunk: bytes, final: bool) -> None:
        try:
            self.utf8.decode(chunk, final)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "text message is not valid UTF-8") from None
        if final:
            self.utf8.reset()
