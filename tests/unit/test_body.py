"""The body readers: Content-Length and the chunked decoder (RFC 9112 §6.2, §7.1)."""

from __future__ import annotations

import random

import pytest

from forkd.http import body as body_module
from forkd.http.body import ChunkedDecoder, LengthReader
from forkd.http.errors import BadRequest, ContentTooLarge, HeadersTooLarge

LIMIT = 1 << 20


def decode(data: bytes, chunk: int = 0, limit: int = LIMIT) -> tuple[bytes, ChunkedDecoder]:
    decoder = ChunkedDecoder(limit)
    if chunk:
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    else:
        pieces = [data]
    out = b"".join(decoder.feed(piece) for piece in pieces)
    return out, decoder


def encode(payload: bytes, sizes: list[int]) -> bytes:
    out, i = [], 0
    for size in sizes:
        piece = payload[i : i + size]
        i += size
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    return b"".join(out) + b"0\r\n\r\n"


def test_length_reader_exact_and_rest() -> None:
    reader = LengthReader(5)
    assert reader.feed(b"he") == b"he" and not reader.done
    assert reader.feed(b"lloGET") == b"llo"
    assert reader.done and reader.rest == b"GET"


def test_length_reader_zero_is_done_at_once() -> None:
    assert LengthReader(0).done


@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 7, 64])
def test_round_trip_any_split(chunk: int) -> None:
    rng = random.Random(chunk)
    sizes = [rng.randint(1, 500) for _ in range(20)]
    payload = bytes(rng.randrange(256) for _ in range(sum(sizes)))
    data = encode(payload, sizes)
    out, decoder = decode(data + b"NEXT", chunk)
    assert decoder.done
    assert out == payload
    assert decoder.rest == b"NEXT"
    assert decoder.total == len(out)


def test_rest_keeps_pipelined_request_and_later_bytes() -> None:
    decoder = ChunkedDecoder(LIMIT)
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n") == b"abc"
    assert decoder.done and decoder.rest == b"GET / HTTP/1.1\r\n"
    assert decoder.feed(b"Host: a") == b""
    assert decoder.rest == b"GET / HTTP/1.1\r\nHost: a"


def test_trailer_fields_are_accepted_and_dropped() -> None:
    out, decoder = decode(b"1\r\nx\r\n0\r\nX-Sum: 1\r\nY: two words\r\n\r\n", 1)
    assert out == b"x" and decoder.done and decoder.rest == b""


def test_not_done_until_final_crlf() -> None:
    out, decoder = decode(b"1\r\nx\r\n0\r\n")
    assert out == b"x" and not decoder.done


def test_total_limit_checked_from_the_size_line() -> None:
    decoder = ChunkedDecoder(10)
    decoder.feed(b"5\r\nhello\r\n")
    with pytest.raises(ContentTooLarge):
        decoder.feed(b"6\r\n")  # refused before any of the data arrives


def test_size_digits_bounded() -> None:
    decode(b"0" * 15 + b"1\r\nx\r\n0\r\n\r\n")  # sixteen digits: fine
    with pytest.raises(BadRequest):
        decode(b"0" * 16 + b"1\r\nx\r\n0\r\n\r\n")


def test_overflowing_size_is_not_wrapped() -> None:
    with pytest.raises(BadRequest):
        decode(b"1" + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n")


def test_size_line_without_crlf_bounded() -> None:
    with pytest.raises(BadRequest):
        decode(b"5;" + b"a" * (body_module.MAX_CHUNK_LINE + 10))


def test_extensions_bounded_over_the_whole_body() -> None:
    ext = b";" + b"e" * 1000
    chunks = b"".join(b"1" + ext + b"\r\nx\r\n" for _ in range(body_module.MAX_EXTENSIONS // 1000 + 2))
    with pytest.raises(BadRequest):
        decode(chunks + b"0\r\n\r\n")


def test_trailer_section_bounded() -> None:
    trailer = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    with pytest.raises(HeadersTooLarge):
        decode(b"0\r\n" + trailer + b"\r\n", 50)


def test_unterminated_trailer_bounded() -> None:
    with pytest.raises(HeadersTooLarge):
        decode(b"0\r\nX: " + b"v" * (body_module.MAX_TRAILER + 10))


@pytest.mark.parametrize("data", [
    b"5\r\nhello\n0\r\n\r\n",  # bare LF after data
    b"5\r\nhelloxx0\r\n\r\n",  # no CRLF after data
    b"5\nhello\r\n0\r\n\r\n",  # bare LF after size
    b"5\r\r\nhello\r\n0\r\n\r\n",  # CR inside the size line
    b"+5\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5;\r\nhello\r\n0\r\n\r\n",  # ";" without a name
    b"5;a=\r\nhello\r\n0\r\n\r\n",  # "=" without a value
    b"0\r\nno-colon\r\n\r\n",
])
def test_malformed_framing(data: bytes) -> None:
    for chunk in (0, 1):
        with pytest.raises(BadRequest):
            decode(data, chunk)


def test_extension_forms_accepted() -> None:
    out, decoder = decode(b'2 ;a;b=c ; d = "q \\" x"\r\nhi\r\n0\r\n\r\n')
    assert out == b"hi" and decoder.done
