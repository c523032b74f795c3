"""The FastCGI record codec, byte for byte against the specification's layout (no sockets)."""

from __future__ import annotations

import random

import pytest

from forkd.handlers import fastcgi_records as fcgi


def test_record_layout_and_padding() -> None:
    data = fcgi.record(fcgi.STDIN, 1, b"hello")
    # version 1, type 5, request id 1, length 5, padding 3, reserved; content; 3 padding bytes
    assert data == b"\x01\x05\x00\x01\x00\x05\x03\x00hello\x00\x00\x00"
    assert len(fcgi.record(fcgi.STDIN, 1, b"x" * 8)) == 16  # aligned content: no padding
    assert fcgi.end_of_stream(fcgi.STDIN, 7) == b"\x01\x05\x00\x07\x00\x00\x00\x00"


def test_begin_request_asks_for_a_responder_and_a_closed_connection() -> None:
    assert fcgi.begin_request(1) == b"\x01\x01\x00\x01\x00\x08\x00\x00" + b"\x00\x01\x00" + bytes(5)
    assert fcgi.begin_request(1, keep_connection=True)[10] == 1


def test_pair_lengths_use_one_byte_below_128_and_four_bytes_above() -> None:
    short = fcgi.encode_pairs([(b"A", b"x" * 127)])
    assert short[:2] == b"\x01\x7f"
    long = fcgi.encode_pairs([(b"A", b"x" * 128)])
    assert long[:5] == b"\x01\x80\x00\x00\x80"
    pairs = [(b"SCRIPT_FILENAME", b"/srv/www/index.php"), (b"N" * 300, b""), (b"E", b"v" * 70000)]
    assert fcgi.decode_pairs(fcgi.encode_pairs(pairs)) == pairs


def test_a_long_stream_is_cut_into_records_and_reassembled() -> None:
    data = bytes(random.Random(1).getrandbits(8) for _ in range(200_000))
    encoded = fcgi.stream(fcgi.STDOUT, 3, data) + fcgi.end_of_stream(fcgi.STDOUT, 3)
    reader = fcgi.RecordReader()
    rng = random.Random(2)
    records: list[fcgi.Record] = []
    position = 0
    while position < len(encoded):  # fed in random pieces, as a socket delivers them
        step = rng.randint(1, 9000)
        records += reader.feed(encoded[position:position + step])
        position += step
    assert all(kind == fcgi.STDOUT and request_id == 3 for kind, request_id, _ in records)
    assert b"".join(content for _, _, content in records) == data
    assert records[-1][2] == b"" and reader.pending == 0
    assert all(len(content) <= fcgi.MAX_CONTENT for _, _, content in records)


def test_params_stream_ends_with_an_empty_record() -> None:
    encoded = fcgi.params(1, [(b"A", b"B")])
    records = fcgi.RecordReader().feed(encoded)
    assert [kind for kind, _, _ in records] == [fcgi.PARAMS, fcgi.PARAMS]
    assert fcgi.decode_pairs(records[0][2]) == [(b"A", b"B")] and records[1][2] == b""


def test_end_request_is_decoded() -> None:
    content = b"\x00\x00\x00\x02\x02\x00\x00\x00"
    (record,) = fcgi.RecordReader().feed(fcgi.record(fcgi.END_REQUEST, 1, content))
    assert fcgi.end_request_status(record[2]) == (2, fcgi.OVERLOADED)
    with pytest.raises(fcgi.ProtocolError):
        fcgi.end_request_status(b"\x00")


def test_a_peer_that_is_not_fastcgi_is_refused() -> None:
    with pytest.raises(fcgi.ProtocolError):
        fcgi.RecordReader().feed(b"HTTP/1.1 400 Bad Request\r\n")


def test_truncated_pairs_are_refused() -> None:
    with pytest.raises(fcgi.ProtocolError):
        fcgi.decode_pairs(b"\x05\x01AB")
    with pytest.raises(fcgi.ProtocolError):
        fcgi.decode_pairs(b"\x80\x00")


def test_oversized_content_is_refused() -> None:
    with pytest.raises(ValueError):
        fcgi.record(fcgi.STDIN, 1, b"x" * 65536)
