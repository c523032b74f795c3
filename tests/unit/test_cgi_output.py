"""The CGI header block parser (RFC 3875 §6): framing, validation and classification, no processes."""

from __future__ import annotations

import random

import pytest

from forkd.handlers import cgi_output
from forkd.handlers.cgi_output import (
    MAX_HEADER_BYTES,
    Document,
    LocalRedirect,
    MalformedOutput,
    classify,
    find_end,
    is_local,
    line_start,
    parse,
    take_head,
    whole_body,
)


def split(output: bytes) -> tuple[bytes, bytes]:
    end = find_end(output)
    assert end is not None
    return output[: end[0]], output[end[1]:]


@pytest.mark.parametrize("output", [
    b"Content-Type: text/plain\n\nbody",
    b"Content-Type: text/plain\r\n\r\nbody",
    b"Content-Type: text/plain\r\n\nbody",
    b"Content-Type: text/plain\n\r\nbody",
])
def test_lf_and_crlf_line_ends(output: bytes) -> None:
    head, body = split(output)
    assert body == b"body"
    assert parse(head).content_type == "text/plain"


def test_no_end_yet() -> None:
    assert find_end(b"Content-Type: text/plain\n") is None
    assert find_end(b"Content-Type: text/plain\r\n\r") is None
    assert find_end(b"") is None


def test_incremental_search_matches_whole_search() -> None:
    """Fed in random pieces and resumed from line_start, the end is found where a whole search finds it."""
    output = b"Status: 200 OK\r\nX-A: 1\nContent-Type: text/html\r\n\r\n<p>body\n\n"
    rng = random.Random(7)
    for _ in range(200):
        buffer = bytearray()
        found = None
        position = 0
        while found is None:
            step = rng.randint(1, 5)
            resume = line_start(buffer, len(buffer))
            buffer += output[position:position + step]
            position += step
            found = find_end(buffer, resume)
        assert found == find_end(output)


def test_fields_keep_order_and_case_and_drop_framing() -> None:
    head, _ = split(
        b"Content-Type: text/html\nX-One: 1\nSet-Cookie: a=1\nSet-Cookie: b=2\n"
        b"Connection: keep-alive\nTransfer-Encoding: chunked\nContent-Length: 4\nServer: evil\n\n"
    )
    headers = parse(head)
    assert headers.fields == [
        ("Content-Type", "text/html"), ("X-One", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ]
    assert headers.content_length == 4


def test_status_is_not_passed_as_a_field() -> None:
    headers = parse(b"Status: 404 Not Found\nContent-Type: text/plain\n")
    assert headers.status == 404
    assert [name for name, _ in headers.fields] == ["Content-Type"]


def test_values_are_trimmed_and_folded_lines_unfolded() -> None:
    headers = parse(b"Content-Type:   text/plain  \nX-Long: one\n  two\n\tthree\n")
    assert headers.content_type == "text/plain"
    assert ("X-Long", "one two three") in headers.fields


def test_obs_text_survives() -> None:
    headers = parse(b"Content-Type: text/plain\nX-Name: caf\xe9\n")
    assert ("X-Name", "caf\xe9") in headers.fields


@pytest.mark.parametrize("head", [
    b"",  # an empty block: no CGI field at all
    b"X-Only: 1\n",  # no Content-Type, Location or Status
    b"hello world\n",  # output without a header block
    b"Content-Type: text/plain\nno colon here\n",
    b"Content Type: text/plain\n",  # a space in the name
    b": text/plain\n",
    b" Content-Type: text/plain\n",  # continuation with nothing to continue
    b"Content-Type: text/plain\rSet-Cookie: x=1\n",  # bare CR: response splitting
    b"Content-Type: text/plain\nX-A: a\rb\n",
    b"Content-Type: text/plain\nX-A: a\x00b\n",
    b"Content-Type: text/plain\nX-A: a\x1bb\n",
    b"Status: 20\n",
    b"Status: abc\n",
    b"Status: 100 Continue\n",
    b"Status: 600 Nope\n",
    b"Status: \xd9\xa2\xd9\xa0\xd9\xa0\n",  # non-ASCII digits
    b"Status: 200\nStatus: 404\n",
    b"Content-Type: a/b\nContent-Type: c/d\n",
    b"Location: /a\nLocation: /b\n",
    b"Content-Type: text/plain\nContent-Length: 12x\n",
    b"Content-Type: text/plain\nContent-Length: -1\n",
    b"Content-Type: text/plain\nContent-Length: 1\nContent-Length: 2\n",
])
def test_malformed_blocks_are_502(head: bytes) -> None:
    with pytest.raises(MalformedOutput) as error:
        parse(head)
    assert error.value.status == 502


def test_a_known_name_without_its_colon_is_still_refused() -> None:
    parse(b"Content-Type: text/plain\nX-Seen: 1\n")  # both names now known to the worker
    for head in (b"Content-Type: text/plain\nX-Seen\n", b"Content-Type\n"):
        with pytest.raises(MalformedOutput):
            parse(head)


def test_known_names_are_bounded() -> None:
    # Names are decoded once and remembered, but a script echoing its clients' names cannot
    # grow the worker.
    for number in range(cgi_output._MAX_NAMES + 50):
        headers = parse(b"Content-Type: text/plain\nX-Name-%d: v\n" % number)
        assert headers.fields[-1] == (f"X-Name-{number}", "v")
    assert len(cgi_output._NAMES) <= cgi_output._MAX_NAMES


def test_a_remembered_block_gives_each_caller_its_own_fields() -> None:
    output = b"Content-Type: text/plain\nX-Kept: 1\n\nbody"
    first = take_head(bytearray(), output)
    assert isinstance(first, Document)
    first.fields.append(("X-Added", "by a caller"))
    again = take_head(bytearray(), output)
    assert isinstance(again, Document)
    assert again.fields == [("Content-Type", "text/plain"), ("X-Kept", "1")]


def test_remembered_blocks_are_bounded() -> None:
    for number in range(cgi_output._MAX_OUTCOMES + 20):
        outcome = take_head(bytearray(), b"Content-Type: text/plain\nX-N: %d\n\n" % number)
        assert isinstance(outcome, Document) and outcome.fields[-1] == ("X-N", str(number))
    assert len(cgi_output._OUTCOMES) <= cgi_output._MAX_OUTCOMES
    take_head(bytearray(), b"Content-Type: text/plain\nX-Long: " + b"x" * 2000 + b"\n\n")
    assert all(len(head) <= cgi_output._LONGEST_REMEMBERED for head in cgi_output._OUTCOMES)


def test_classify_document_defaults_to_200() -> None:
    outcome = classify(parse(b"Content-Type: text/plain\nContent-Length: 5\n"))
    assert outcome == Document(200, [("Content-Type", "text/plain")], 5)


def test_classify_status_only() -> None:
    outcome = classify(parse(b"Status: 204 No Content\n"))
    assert isinstance(outcome, Document) and outcome.status == 204


@pytest.mark.parametrize("location", ["/other", "/other?x=1", "/"])
def test_local_redirect(location: str) -> None:
    assert classify(parse(f"Location: {location}\n".encode())) == LocalRedirect(location)


@pytest.mark.parametrize("location", ["http://example.com/", "//example.com/x", "relative.html"])
def test_client_redirect_is_302(location: str) -> None:
    outcome = classify(parse(f"Location: {location}\n".encode()))
    assert isinstance(outcome, Document)
    assert outcome.status == 302
    assert ("Location", location) in outcome.fields


def test_location_with_status_is_sent_to_the_client() -> None:
    outcome = classify(parse(b"Status: 301 Moved\nLocation: /new\nContent-Type: text/html\n"))
    assert isinstance(outcome, Document) and outcome.status == 301
    assert ("Location", "/new") in outcome.fields


def test_is_local() -> None:
    assert is_local("/a")
    assert not is_local("//host/a")
    assert not is_local("http://host/a")


def test_take_head_gathers_a_trickled_block_and_leaves_the_body() -> None:
    buffer = bytearray()
    assert take_head(buffer, b"Content-Type: text/plain\r") is None
    assert take_head(buffer, b"\nStatus: 201 Created\n") is None
    outcome = take_head(buffer, b"\r\nbody starts")
    assert isinstance(outcome, Document) and outcome.status == 201
    assert buffer == b"body starts"
    assert take_head(bytearray(), b"Location: /elsewhere?x=1\n\n") == LocalRedirect("/elsewhere?x=1")


def test_take_head_names_what_is_wrong() -> None:
    with pytest.raises(MalformedOutput) as caught:
        take_head(bytearray(), b"no colon here\n\n")
    assert caught.value.detail.startswith("malformed header block: ")
    with pytest.raises(MalformedOutput) as caught:
        take_head(bytearray(b"X-Long: " + b"a" * MAX_HEADER_BYTES), b"b")
    assert caught.value.detail == f"no end of the header block in {MAX_HEADER_BYTES} bytes"


def test_whole_body_is_cut_to_content_length_and_refused_when_short() -> None:
    document = Document(200, [], 5)
    assert whole_body(document, bytearray(b"hello, world")) == b"hello"
    assert whole_body(Document(200, [], None), bytearray(b"all of it")) == b"all of it"
    with pytest.raises(MalformedOutput) as caught:
        whole_body(document, bytearray(b"hel"))
    assert caught.value.detail == "output ended before its Content-Length"
