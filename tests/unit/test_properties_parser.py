"""Property-based tests (hypothesis) of the request parser and body readers (forkd.http.parser, .body).

What must hold whatever a client sends:
  - the only exception is an HTTPError, whose status is one a parser may give (400, 413, 414, 417,
    431, 501, 505) and which closes the connection (after a parse error the framing is unknown);
  - the outcome does not depend on how the bytes were segmented: the same requests with the same
    bodies, then a rejection (or none) — a parser whose result changes with TCP segmentation is a
    smuggling vector. Only the status of the rejection may differ: a head with several faults is
    judged on the first one seen, and a partial head is checked early (find_head) in an order
    that differs from parse_head's (e.g. a bare LF seen early is 400, the same head whole is 431
    when it is too large; a DEL in a field is 400 whole, but an HTTP/0.1 request line seen first
    is 505). Both close the connection, so nothing can be smuggled through the difference;
  - a Transfer-Encoding header either makes the request chunked or is rejected: it is never
    silently ignored (the TE.TE obfuscation family);
  - Content-Length is exactly 1*DIGIT (a list of identical ones) or rejected;
  - well-formed requests round-trip: what a generator serialises is what the parser returns, and a
    chunked body decodes to its payload whatever the chunk sizes, hex case and split points.

The driver (tests/support/parse_driver.py) performs the worker's own steps without sockets, with
the functions forkd.connection calls: skip_empty_lines, find_head with the incremental `scanned`
offset, the worker's HeadParser (whose cache of whole heads is exercised by driving the same bytes
twice with one parser), a LengthReader or ChunkedDecoder, pipelined leftovers. tests/fuzz/ holds
the coverage-guided counterpart (atheris) of the first property.
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from forkd.config import Limits
from forkd.http.body import ChunkedDecoder
from forkd.http.errors import HTTPError
from forkd.http.parser import HeadParser, parse_head
from tests.support.parse_driver import Outcome, check_error
from tests.support.parse_driver import drive as drive_with

LIMITS = Limits(request_line=256, header_bytes=1024, headers=12, body=4096)
# FORKD_SOAK=1 (see README.md, "Hardening") runs fifty times as many examples.
EXAMPLES = 20000 if os.environ.get("FORKD_SOAK", "") not in ("", "0") else 400
COMMON = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])



def drive(chunks: list[bytes], parser: HeadParser | None = None) -> Outcome:
    return drive_with(chunks, LIMITS, parser)


def same(outcome: Outcome) -> tuple[object, bool]:
    """What must not depend on segmentation: the requests, and whether the rest was rejected."""
    return outcome[0], outcome[1] != 0


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return [piece for piece in pieces if piece]


# -- strategies ------------------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKENS = st.text(st.sampled_from(TCHARS), min_size=1, max_size=10)
PATH_CHARS = st.sampled_from("abcxyz019-._~%/!$&'()*+,;=:@")
PATHS = st.text(PATH_CHARS, max_size=20).map(lambda p: "/" + p)
QUERIES = st.one_of(st.just(""), st.text(st.sampled_from("abc=&%/?1"), max_size=10).map(lambda q: "?" + q))
# field-value: VCHAR / obs-text with inner SP / HTAB, no leading or trailing whitespace.
VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0xFF, blacklist_characters="\x7f")
VALUES = st.text(st.one_of(VALUE_CHARS, st.sampled_from(" \t")), max_size=16).map(
    lambda v: v.strip(" \t"))
EXTRA_FIELDS = st.lists(
    st.tuples(TOKENS.filter(lambda n: n.lower() not in
                            ("host", "content-length", "transfer-encoding", "expect", "connection")),
              VALUES), max_size=5)
BODIES = st.binary(max_size=300)

# Bytes that matter to an HTTP parser, for mutations.
SPECIAL = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b",", b";", b"\x00", b"\x0b", b"0", b"f",
           b"-", b"+", b'"', b"\xff", b"chunked", b"Transfer-Encoding: chunked\r\n",
           b"Content-Length: 5\r\n", b"\r\n\r\n", b"HTTP/1.1", b"HTTP/2.0", b"\r\n "]


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A well-formed request and what the parser must make of it."""
    # CONNECT takes an authority-form target only (RFC 9110 §9.3.6): with a path it is a 400.
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]) | TOKENS.filter(
        lambda m: m != "CONNECT"))
    target = draw(PATHS) + draw(QUERIES)
    fields = [("Host", draw(st.sampled_from(["a", "example.com:8080", "[::1]"])))]
    fields += draw(EXTRA_FIELDS)
    body = draw(BODIES)
    framing = draw(st.sampled_from(["length", "chunked", "none"])) if body else "none"
    if framing == "length":
        fields.append(("Content-Length", str(len(body))))
        payload = body
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"]))))
        payload = encode_chunked(body, draw(st.lists(st.integers(0, 400), max_size=6)),
                                 draw(st.booleans()), draw(st.integers(0, 3)))
    else:
        payload, body = b"", b""
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    expected_headers: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        expected_headers[key] = f"{expected_headers[key]}, {value}" if key in expected_headers else value
    return head.encode("latin-1") + payload, {
        "method": method, "target": target, "headers": expected_headers, "body": body,
    }


def encode_chunked(body: bytes, cuts: list[int], upper: bool, zeros: int) -> bytes:
    out = []
    for piece in split(body, cuts):
        size = "0" * zeros + (f"{len(piece):X}" if upper else f"{len(piece):x}")
        out.append(size.encode() + b"\r\n" + piece + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A well-formed request (or two, pipelined) with a few hostile edits."""
    data = draw(requests())[0]
    if draw(st.booleans()):
        data += draw(requests())[0]
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate_line", "lf"]))
        if action == "insert":
            data = data[:position] + draw(st.sampled_from(SPECIAL)) + data[position:]
        elif action == "delete":
            data = data[:position] + data[position + draw(st.integers(1, 4)):]
        elif action == "replace" and position < len(data):
            data = data[:position] + draw(st.sampled_from(SPECIAL)) + data[position + 1:]
        elif action == "duplicate_line":
            lines = data.split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(index, lines[index])
            data = b"\r\n".join(lines)
        elif action == "lf":
            data = data.replace(b"\r\n", b"\n", draw(st.integers(1, 3)))
    return data


# -- properties ------------------------------------------------------------------------------------


@COMMON
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
@example(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", [])
@example(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1" + b"0" * 16 + b"\r\n", [70])
@example(b"GET / HTTP/0.1\r\nHost: a\r\nX-A\r\na\x7fb\r\n\r\n", [30])  # atheris: 400 / 505
def test_arbitrary_bytes_give_requests_or_an_http_error(data: bytes, cuts: list[int]) -> None:
    parser = HeadParser(LIMITS)  # one worker's parser: the second drive answers from its cache
    whole = same(drive([data], parser))
    assert same(drive(split(data, cuts))) == whole
    assert same(drive(split(data, cuts), parser)) == whole


@COMMON
@given(mutated(), st.lists(st.integers(0, 2000), max_size=10))
@example(  # found by a soak run: 431 whole, 400 (bare LF seen early) byte by byte
    b"DELETE /00000000000000000 HTTP/1.1\r\n\nHost: example.com:8080\r\n0: \r\n0: 000000\r\n"
    b"0: 000000\r\n0000000: 000000000\r\n0: 00000000000\r\nTransfer-Encoding: chunked\r\n\n\r\n"
    b"1\r\n \r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", [37])
def test_mutated_requests_parse_the_same_however_they_arrive(data: bytes, cuts: list[int]) -> None:
    parser = HeadParser(LIMITS)
    whole = same(drive([data], parser))
    assert same(drive(split(data, cuts))) == whole
    assert same(drive([data[i:i + 1] for i in range(len(data))], parser)) == whole  # cached heads


@COMMON
@given(requests(), st.lists(st.integers(0, 2000), max_size=10))
def test_well_formed_requests_round_trip(case: tuple[bytes, dict[str, object]],
                                         cuts: list[int]) -> None:
    data, want = case
    parser = HeadParser(LIMITS)
    for pieces in (split(data, cuts), [data]):  # the second time from the parser's cache
        done, status = drive(pieces, parser)
        assert status == 0 and len(done) == 1
        method, target, version, headers, body = done[0]
        assert (method, target, version, body) == (want["method"], want["target"], "HTTP/1.1",
                                                   want["body"])
        assert dict(headers) == want["headers"]


@COMMON
@given(st.text(st.characters(max_codepoint=0xFF, blacklist_characters="\r\n"), max_size=30))
@example("chunked\x0b")
@example(" chunked , chunked")
@example("\tChunked\t")
def test_transfer_encoding_is_chunked_or_rejected(value: str) -> None:
    head = f"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {value}\r\n\r\n".encode("latin-1")
    try:
        request = parse_head(head, LIMITS)
    except HTTPError as error:
        check_error(error)
        return
    assert request.chunked, f"Transfer-Encoding {value!r} accepted but not chunked"
    assert value.strip(" \t").lower() == "chunked"


@COMMON
@given(st.text(st.characters(max_codepoint=0xFF, blacklist_characters="\r\n"), max_size=24))
@example("+5")
@example("5, 5")
@example("0x5")
def test_content_length_is_digits_or_rejected(value: str) -> None:
    head = f"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n".encode("latin-1")
    try:
        request = parse_head(head, LIMITS)
    except HTTPError as error:
        check_error(error)
        assert error.status in (400, 413)
        return
    items = {item.strip(" \t") for item in value.strip(" \t").split(",")}
    assert len(items) == 1
    digits = items.pop()
    assert re.fullmatch(r"[0-9]+", digits), value
    assert request.content_length == int(digits) <= LIMITS.body


@COMMON
@given(BODIES, st.lists(st.integers(0, 400), max_size=8), st.booleans(), st.integers(0, 8),
       st.binary(max_size=40), st.lists(st.integers(0, 1000), max_size=8))
def test_chunked_bodies_decode_whatever_the_chunking(body: bytes, chunk_cuts: list[int], upper: bool,
                                                     zeros: int, after: bytes,
                                                     feed_cuts: list[int]) -> None:
    encoded = encode_chunked(body, chunk_cuts, upper, zeros)
    decoder = ChunkedDecoder(LIMITS.body)
    payload = b"".join(decoder.feed(piece) for piece in split(encoded + after, feed_cuts))
    assert decoder.done and payload == body
    assert decoder.rest == after


@COMMON
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_chunked_decoder_only_raises_http_errors(data: bytes, cuts: list[int]) -> None:
    def outcome(pieces: list[bytes]) -> tuple[bytes, bool, int]:
        decoder = ChunkedDecoder(LIMITS.body)
        out = []
        try:
            for piece in pieces:
                out.append(decoder.feed(piece))
        except HTTPError as error:
            assert error.status in (400, 413, 431) and error.close
            return b"", False, error.status
        return b"".join(out), decoder.done, 0

    def accepted(result: tuple[bytes, bool, int]) -> tuple[bytes, bool, bool]:
        return result[0], result[1], result[2] == 0

    assume(data)
    assert accepted(outcome(split(data, cuts))) == accepted(outcome([data]))
