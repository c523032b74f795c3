"""The RFC 6455 codec without sockets: handshake checks, and Autobahn|Testsuite cases 1-7 and 9.

The frame cases follow the Autobahn sections (1 framing, 2 pings, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close, 9 limits), written as parser tests: the bytes a client would
send, fed whole, byte by byte and in seeded random pieces, and the events or close code expected.
The same cases run against the real daemon in tests/integration/test_websocket.py.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from forkd.http.errors import BadRequest, HTTPError, MethodNotAllowed
from forkd.http.request import Request
from forkd.http.websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameParser,
    ProtocolError,
    UpgradeRequired,
    accept_key,
    check_handshake,
    close_payload,
    encode,
    parse_close,
    unmask,
)
from tests.support.websocket import frame

MAX = 1 << 20


def splits(data: bytes) -> list[list[bytes]]:
    """The same bytes whole, byte by byte, and in seeded random pieces."""
    rng = random.Random(len(data))
    pieces, i = [], 0
    while i < len(data):
        n = rng.randint(1, 40)
        pieces.append(data[i:i + n])
        i += n
    return [[data], [data[i:i + 1] for i in range(len(data))], pieces]


def events(data: bytes, max_message: int = MAX) -> list[tuple[int, bytes]]:
    """Events of `data` fed every way; all ways must agree."""
    results = []
    for pieces in splits(data) if len(data) < 5000 else [[data]]:
        parser = FrameParser(max_message)
        out = []
        for piece in pieces:
            out += parser.feed(piece)
        results.append(out)
    assert all(result == results[0] for result in results)
    return results[0]


def failure(data: bytes, max_message: int = MAX) -> int:
    """The close code the parser fails `data` with (fed whole and byte by byte)."""
    codes = set()
    for pieces in ([data], [data[i:i + 1] for i in range(len(data))]):
        parser = FrameParser(max_message)
        for piece in pieces:
            parser.feed(piece)
        assert isinstance(parser.error, ProtocolError)
        codes.add(parser.error.code)
        assert parser.feed(frame(TEXT, b"more")) == []  # nothing after the error
    assert len(codes) == 1
    return codes.pop()


# -- handshake ------------------------------------------------------------------------------------

def request(method: str = "GET", version: str = "HTTP/1.1", **headers: str) -> Request:
    fields = {"host": "example.com", "upgrade": "websocket", "connection": "Upgrade",
              "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"}
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    fields = {name: value for name, value in fields.items() if value != "-"}
    return Request(method, "/ws", "/ws", "", version, fields, "example.com", True)


def test_accept_key_of_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # §1.3


def test_a_valid_handshake_gives_its_key_and_token_lists_are_read_whole() -> None:
    assert check_handshake(request()) == "dGhlIHNhbXBsZSBub25jZQ=="
    assert check_handshake(request(connection="keep-alive, Upgrade", upgrade="WebSocket"))


@pytest.mark.parametrize("changes, error, header", [
    ({"upgrade": "-"}, UpgradeRequired, ("Upgrade", "websocket")),
    ({"upgrade": "h2c"}, UpgradeRequired, ("Upgrade", "websocket")),
    ({"sec_websocket_version": "8"}, UpgradeRequired, ("Sec-WebSocket-Version", "13")),
    ({"sec_websocket_version": "-"}, UpgradeRequired, ("Sec-WebSocket-Version", "13")),
    ({"connection": "keep-alive"}, BadRequest, None),
    ({"sec_websocket_key": "-"}, BadRequest, None),
    ({"sec_websocket_key": "c2hvcnQ="}, BadRequest, None),  # 5 bytes, not 16
    ({"sec_websocket_key": "not base64 at all!!!!!=="}, BadRequest, None),
])
def test_bad_handshakes_get_their_answer(changes: dict[str, str], error: type[HTTPError],
                                          header: tuple[str, str] | None) -> None:
    with pytest.raises(error) as caught:
        check_handshake(request(**changes))
    if header:
        assert header in caught.value.headers
    if error is UpgradeRequired:
        assert caught.value.status == 426


def test_only_get_on_http_1_1_with_no_body() -> None:
    with pytest.raises(MethodNotAllowed):
        check_handshake(request("POST"))
    with pytest.raises(BadRequest):
        check_handshake(request(version="HTTP/1.0"))
    with_body = request()
    with_body.content_length = 5
    with pytest.raises(BadRequest):
        check_handshake(with_body)


# -- server frames ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size, header", [(0, b"\x81\x00"), (125, b"\x81\x7d"),
                                          (126, b"\x81\x7e\x00\x7e"),
                                          (65536, b"\x81\x7f" + struct.pack("!Q", 65536))])
def test_server_frames_are_unmasked_with_the_shortest_length(size: int, header: bytes) -> None:
    data = encode(TEXT, b"a" * size)
    assert data == header + b"a" * size


def test_close_payload_round_trips_and_fits_a_control_frame() -> None:
    assert parse_close(close_payload(1000, "bye")) == (1000, "bye")
    assert len(close_payload(1001, "é" * 100)) <= 125
    parse_close(close_payload(1001, "é" * 100))  # cut on a character boundary: still UTF-8
    assert parse_close(b"") == (1005, "")


def test_unmask_at_any_offset_matches_the_byte_loop() -> None:
    data, mask = os.urandom(1001), os.urandom(4)
    whole = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert unmask(data, mask, 0) == whole
    assert unmask(data[3:500], mask, 3) + unmask(data[500:], mask, 500) == whole[3:]


# -- Autobahn 1: framing ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 125, 126, 127, 128, 65535, 65536])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_1_messages_of_every_length_encoding(opcode: int, size: int) -> None:
    payload = b"*" * size
    assert events(frame(opcode, payload)) == [(opcode, payload)]


def test_1_several_frames_in_one_piece() -> None:
    data = frame(TEXT, b"one") + frame(BINARY, b"\x00\xff") + frame(TEXT, b"")
    assert events(data) == [(TEXT, b"one"), (BINARY, b"\x00\xff"), (TEXT, b"")]


# -- Autobahn 2: pings and pongs -------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes(range(125)), b"\xfe\xff"])
def test_2_pings_and_pongs_up_to_125_bytes(payload: bytes) -> None:
    assert events(frame(PING, payload) + frame(PONG, payload)) == [(PING, payload), (PONG, payload)]


def test_2_ping_of_126_bytes_fails() -> None:
    assert failure(frame(PING, b"x" * 126)) == 1002


def test_2_ten_pings_in_a_row() -> None:
    data = b"".join(frame(PING, b"ping %d" % i) for i in range(10))
    assert events(data) == [(PING, b"ping %d" % i) for i in range(10)]


# -- Autobahn 3: reserved bits ---------------------------------------------------------------------

@pytest.mark.parametrize("rsv", range(1, 8))
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING])
def test_3_reserved_bits_fail(opcode: int, rsv: int) -> None:
    assert failure(frame(opcode, b"x", rsv=rsv)) == 1002


def test_3_a_good_frame_before_the_bad_one_is_delivered() -> None:
    parser = FrameParser(MAX)
    data = frame(TEXT, b"ok") + frame(TEXT, b"bad", rsv=1) + frame(PING)
    assert parser.feed(data) == [(TEXT, b"ok")]
    assert parser.error is not None and parser.error.code == 1002


# -- Autobahn 4: opcodes ---------------------------------------------------------------------------

@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_4_reserved_opcodes_fail(opcode: int) -> None:
    assert failure(frame(opcode, b"payload")) == 1002


# -- Autobahn 5: fragmentation ---------------------------------------------------------------------

def test_5_fragmented_text_and_binary() -> None:
    data = frame(TEXT, b"frag", fin=False) + frame(CONTINUATION, b"men", fin=False) + frame(
        CONTINUATION, b"ted")
    assert events(data) == [(TEXT, b"fragmented")]
    data = frame(BINARY, b"\x01", fin=False) + frame(CONTINUATION, b"\x02")
    assert events(data) == [(BINARY, b"\x01\x02")]


def test_5_control_frames_between_fragments() -> None:
    data = (frame(TEXT, b"a", fin=False) + frame(PING, b"p") + frame(CONTINUATION, b"b", fin=False)
            + frame(PONG, b"q") + frame(CONTINUATION, b"c"))
    assert events(data) == [(PING, b"p"), (PONG, b"q"), (TEXT, b"abc")]


def test_5_empty_fragments() -> None:
    data = frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"", fin=False) + frame(
        CONTINUATION, b"")
    assert events(data) == [(TEXT, b"")]


@pytest.mark.parametrize("data", [
    frame(PING, b"a", fin=False) + frame(CONTINUATION, b"b"),  # fragmented ping
    frame(PONG, b"a", fin=False) + frame(CONTINUATION, b"b"),
    frame(CONTINUATION, b"orphan"),  # continuation with no message
    frame(CONTINUATION, b"orphan", fin=False) + frame(CONTINUATION, b"x"),
    frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),  # a new message inside another
    frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"),
], ids=["ping", "pong", "orphan", "orphan-fragments", "text-in-text", "binary-in-text"])
def test_5_broken_fragmentation_fails(data: bytes) -> None:
    assert failure(data) == 1002


# -- Autobahn 6: UTF-8 -------------------------------------------------------------------------------

VALID_TEXT = ["", "Hello-µ@ßöäüàá-UTF-8!!", "κόσμε", "\U0010ffff", "\ud7ff\ue000\ufffd",
              "\x00\x7f\u0080\u07ff\u0800\uffff\U00010000"]
INVALID_TEXT = [
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",  # a surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",  # overlong "/"
    b"\x80", b"\xbf", b"\xfe", b"\xff", b"\xfe\xfe\xff\xff",
    b"\xce\xba\xe1\xbd",  # truncated at the end of the message
    b"\xed\xbf\xbf", b"\xed\xa0\x80\xed\xb0\x80",  # lone and paired surrogates
]


@pytest.mark.parametrize("text", VALID_TEXT)
def test_6_valid_utf8_whole_and_split_anywhere_across_fragments(text: str) -> None:
    payload = text.encode("utf-8")
    assert events(frame(TEXT, payload)) == [(TEXT, payload)]
    for cut in range(len(payload) + 1):  # every split point, inside characters too
        data = frame(TEXT, payload[:cut], fin=False) + frame(CONTINUATION, payload[cut:])
        assert events(data) == [(TEXT, payload)]


@pytest.mark.parametrize("payload", INVALID_TEXT)
def test_6_invalid_utf8_fails_with_1007(payload: bytes) -> None:
    assert failure(frame(TEXT, payload)) == 1007
    data = frame(TEXT, payload[:1], fin=False) + frame(CONTINUATION, payload[1:])
    assert failure(data) == 1007


def test_6_binary_messages_are_not_checked() -> None:
    assert events(frame(BINARY, b"\xff\xfe")) == [(BINARY, b"\xff\xfe")]


def test_6_invalid_utf8_fails_fast_before_the_frame_ends() -> None:
    parser = FrameParser(MAX)
    data = frame(TEXT, b"\xce\xba\xf4\x90\x80\x80" + b"x" * 1000)
    parser.feed(data[:14])  # the header, the mask and the first bytes of the payload only
    assert parser.error is not None and parser.error.code == 1007


# -- Autobahn 7: close ----------------------------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000,
                                  3999, 4000, 4999])
def test_7_valid_close_codes(code: int) -> None:
    payload = struct.pack("!H", code) + "bye µ".encode()
    assert events(frame(CLOSE, payload)) == [(CLOSE, payload)]
    assert parse_close(payload) == (code, "bye µ")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
def test_7_invalid_close_codes_fail(code: int) -> None:
    assert failure(frame(CLOSE, struct.pack("!H", code))) == 1002


def test_7_close_payloads() -> None:
    assert events(frame(CLOSE)) == [(CLOSE, b"")]
    assert failure(frame(CLOSE, b"\x03")) == 1002  # one byte: half a code
    assert failure(frame(CLOSE, b"\x03\xe8" + b"\xff")) == 1007  # reason not UTF-8
    assert failure(frame(CLOSE, b"\x03\xe8" + b"x" * 124)) == 1002  # 126 bytes


# -- Autobahn 9: limits ---------------------------------------------------------------------------

@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_9_messages_up_to_the_limit_pass_and_one_byte_more_fails(opcode: int) -> None:
    limit = 256 * 1024
    assert events(frame(opcode, b"*" * limit), limit) == [(opcode, b"*" * limit)]
    assert failure(frame(opcode, b"*" * (limit + 1)), limit) == 1009


def test_9_the_limit_is_on_whole_messages_and_checked_from_the_header() -> None:
    limit = 1000
    data = frame(BINARY, b"*" * 600, fin=False) + frame(CONTINUATION, b"*" * 600)
    assert failure(data, limit) == 1009
    parser = FrameParser(limit)
    parser.feed(frame(BINARY, b"", length=1 << 40)[:14])  # no payload: the header says enough
    assert parser.error is not None and parser.error.code == 1009


def test_9_many_fragments_of_one_byte() -> None:
    payload = bytes(range(256)) * 4
    data = b"".join(frame(BINARY if i == 0 else CONTINUATION, payload[i:i + 1],
                          fin=i == len(payload) - 1) for i in range(len(payload)))
    assert events(data) == [(BINARY, payload)]


# -- masking and lengths ----------------------------------------------------------------------------

def test_unmasked_client_frames_fail() -> None:
    assert failure(frame(TEXT, b"hello", masked=False)) == 1002
    assert failure(frame(PING, b"", masked=False)) == 1002


def test_a_64_bit_length_with_the_high_bit_fails() -> None:
    data = b"\x82\xff" + struct.pack("!Q", 1 << 63) + os.urandom(4)
    assert failure(data, 1 << 62) == 1002
