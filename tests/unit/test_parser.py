"""Parser details the corpus does not show: early failure, limits, fuzzing; response serialisation."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkd.config import Limits
from forkd.http.errors import BadRequest, HeadersTooLarge, HTTPError, URITooLong
from forkd.http.parser import HeadParser, find_head, parse_head, skip_empty_lines
from forkd.http.response import UnsafeHeader, error_body, http_date, render_head

LIMITS = Limits()


def parse(raw: bytes, limits: Limits = LIMITS):  # type: ignore[no-untyped-def]
    end = find_head(raw, limits)
    assert end == len(raw)
    return parse_head(raw, limits)


def test_incomplete_head_needs_more() -> None:
    assert find_head(b"GET / HTTP/1.1\r\nHost: a\r\n", LIMITS) == -1
    assert find_head(b"GET / HT", LIMITS) == -1


def test_http09_line_fails_before_the_blank_line() -> None:
    with pytest.raises(BadRequest):
        find_head(b"GET /\r\n", LIMITS)  # a 0.9 client never sends the blank line


def test_bare_lf_fails_before_the_blank_line() -> None:
    with pytest.raises(BadRequest):
        find_head(b"GET / HTTP/1.1\nHost", LIMITS)


def test_long_request_line_fails_before_its_end() -> None:
    limits = Limits(request_line=100, header_bytes=1000)
    with pytest.raises(URITooLong):
        find_head(b"GET /" + b"a" * 200, limits)


def test_large_head_fails_before_its_end() -> None:
    limits = Limits(request_line=100, header_bytes=300)
    with pytest.raises(HeadersTooLarge):
        find_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 400, limits)


def test_head_at_the_byte_limit_is_accepted() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    head += b"a" * (200 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 200
    assert parse(head, Limits(request_line=100, header_bytes=200)).headers["x"]
    with pytest.raises(HeadersTooLarge):
        find_head(head, Limits(request_line=100, header_bytes=199))


def test_header_count_limit_is_inclusive() -> None:
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(4))
    parse(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n", Limits(headers=5))
    with pytest.raises(HeadersTooLarge):
        parse(b"GET / HTTP/1.1\r\nHost: a\r\nX: 0\r\n" + fields + b"\r\n", Limits(headers=5))


def test_trickled_head_is_checked_incrementally_and_in_linear_time() -> None:
    limits = Limits()
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"p" * 60000 + b"\r\n\r\n"
    buffer, scanned = bytearray(), 0
    start = time.process_time()
    for index in range(len(head) - 1):
        buffer.append(head[index])
        assert find_head(buffer, limits, scanned) == -1
        scanned = len(buffer)
    buffer.append(head[-1])
    assert find_head(buffer, limits, scanned) == len(head)
    assert time.process_time() - start < 5  # quadratic rescanning would take minutes


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\nX",  # bare LF arriving after a CRLF
    b"GET / HTTP/1.1\nX",
])
def test_bare_lf_found_when_trickled(data: bytes) -> None:
    buffer, scanned = bytearray(), 0
    with pytest.raises(BadRequest):
        for byte in data:
            buffer.append(byte)
            find_head(buffer, LIMITS, scanned)
            scanned = len(buffer)


def test_skip_empty_lines() -> None:
    buffer = bytearray(b"\r\n\r\nGET")
    skip_empty_lines(buffer)
    assert buffer == b"GET"


def test_expect_without_body_does_not_ask_for_continue() -> None:
    request = parse(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")
    assert not request.expect_continue


def test_request_line_kept_for_logs() -> None:
    request = parse(b"GET /x?y HTTP/1.1\r\nHost: a\r\n\r\n")
    assert request.request_line == "GET /x?y HTTP/1.1"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_http_errors(data: bytes) -> None:
    try:
        end = find_head(data, LIMITS)
        if end > 0:
            parse_head(data[:end], LIMITS)
    except HTTPError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"GET", b" ", b"/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b"\r", b"Host: a", b":",
    b"Transfer-Encoding: chunked", b"Content-Length: 5", b"\t", b"\x00", b"*", b"http://a/",
]), max_size=25))
def test_request_shaped_bytes_only_raise_http_errors(parts: list[bytes]) -> None:
    data = b"".join(parts) + b"\r\n\r\n"
    try:
        end = find_head(data, LIMITS)
        if end > 0:
            request = parse_head(data[:end], LIMITS)
            assert request.method and request.version in ("HTTP/1.0", "HTTP/1.1")
            assert not (request.chunked and request.content_length is not None)
    except HTTPError:
        pass


# -- response serialisation ----------------------------------------------------------------------


def test_head_layout() -> None:
    head = render_head(404, [("Content-Type", "text/plain")], "forkd/1", "Content-Length: 3\r\n",
                       True, False)
    text = head.decode()
    assert text.startswith("HTTP/1.1 404 Not Found\r\nDate: ")
    assert re.search(r"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", text)
    assert text.endswith("\r\nServer: forkd/1\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n")


def test_connection_header_rules() -> None:
    assert b"Connection: close\r\n" in render_head(200, [], "s", "", False, False)
    assert b"Connection" not in render_head(200, [], "s", "", True, False)
    assert b"Connection: keep-alive\r\n" in render_head(200, [], "s", "", True, True)


def test_handler_framing_headers_are_dropped() -> None:
    head = render_head(200, [("content-length", "99"), ("Transfer-Encoding", "chunked"),
                             ("Connection", "upgrade"), ("X-Ok", "1")], "s", "", True, False)
    assert b"99" not in head and b"chunked" not in head and b"upgrade" not in head
    assert b"X-Ok: 1\r\n" in head


@pytest.mark.parametrize("headers", [
    [("X", "a\r\nSet-Cookie: evil")], [("X", "a\nb")], [("X", "a\rb")], [("X y", "1")],
    [("", "1")], [("X:", "1")], [("X\r\nY", "1")],
])
def test_response_splitting_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(UnsafeHeader):
        render_head(200, headers, "s", "", True, False)


def test_reason_phrases_follow_rfc_9110() -> None:
    assert render_head(413, [], "s", "", False, False).startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert render_head(599, [], "s", "", False, False).startswith(b"HTTP/1.1 599 Unknown\r\n")


def test_date_is_cached_and_formatted() -> None:
    assert http_date() is http_date() or http_date() == http_date()
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", http_date())


def test_error_body_escapes_detail() -> None:
    body = error_body(400, "<script>alert(1)</script>")
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    assert b"400 Bad Request" in body


def test_head_parser_memory_gives_fresh_equal_requests() -> None:
    parser = HeadParser(LIMITS, entries=2)
    head = b"GET /a?b HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n"
    first = parser.parse(head)
    first.headers["x"] = "changed by a handler"
    first.extra["k"] = "v"
    second = parser.parse(head)
    assert second is not first and second.headers == {"host": "h", "x": "1"}
    assert second.extra == {} and second.body is None
    for name in ("method", "target", "path", "query", "version", "host", "keep_alive",
                 "content_length", "chunked", "expect_continue", "request_line"):
        assert getattr(second, name) == getattr(parse_head(head, LIMITS), name)


def test_head_parser_memory_is_bounded_and_never_holds_failures() -> None:
    parser = HeadParser(LIMITS, entries=2, largest=100)
    with pytest.raises(BadRequest):
        parser.parse(b"GET / HTTP/1.1\r\n\r\n")
    assert not parser.cache
    for path in (b"/1", b"/2", b"/3"):
        parser.parse(b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(parser.cache) <= 2
    parser.parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 200 + b"\r\n\r\n")
    assert len(parser.cache) <= 2 and all(len(key) <= 100 for key in parser.cache)
