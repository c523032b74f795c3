"""forkd.logs.escape: what reaches a log from outside is one printable, unambiguous line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkd.http.request import Request
from forkd.logs import HEADER_CAP, REQUEST_CAP, AccessLog, escape


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"curl/8.0", "curl/8.0"),
        ("ünïcödé".encode(), "ünïcödé"),
        (b"a\xffb", "a\\xffb"),
        (b"\x1b[31mred\r\nforged", "\\x1b[31mred\\x0d\\x0aforged"),
        (b"tab\tdel\x7f nul\x00", "tab\\x09del\\x7f nul\\x00"),
        (b"back\\slash \\xff", "back\\\\slash \\\\xff"),  # never mistaken for an escape
        ("\u202eevil".encode(), "\\xe2\\x80\\xaeevil"),  # a bidi override is not printable
        ("\u009b".encode(), "\\xc2\\x9b"),  # C1 CSI, a terminal escape of its own
        (b"cut \xe2\x82", "cut \\xe2\\x82"),
        (b'say "hi"', 'say "hi"'),  # quotes are the format's business
    ],
)
def test_escape(data: bytes, text: str) -> None:
    assert escape(data) == text


def unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif text.startswith("\\x", i):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out += text[i].encode()
            i += 1
    return bytes(out)


@given(st.binary(max_size=200))
def test_escape_is_printable_and_reversible(data: bytes) -> None:
    text = escape(data)
    assert text.isprintable()
    assert unescape(text) == data


@pytest.mark.parametrize("fmt", ["combined", "json"])
def test_long_fields_are_cut_with_a_mark(fmt: str, tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "access.log"), fmt)
    line = "GET /" + "\xff" * 9000 + " HTTP/1.1"  # latin-1 text, one char per received byte
    log.record(None, "127.0.0.1", 414, 0, 0.0, line)
    request = Request("GET", "/", "/", "", "HTTP/1.1", {"user-agent": '"' * 5000}, "x", True,
                      request_line="GET / HTTP/1.1")
    log.record(request, "127.0.0.1", 200, 5, 0.0)
    log.flush()
    log.file.close()
    lines = (tmp_path / "access.log").read_bytes().decode().splitlines()
    if fmt == "json":  # the caps bound the values; JSON then escapes their backslashes and quotes
        first, second = json.loads(lines[0])["request"], json.loads(lines[1])["user_agent"]
        assert len(first) == REQUEST_CAP and len(second) == HEADER_CAP
    else:
        first, second = lines
        assert len(first) < REQUEST_CAP + 100 and len(second) < HEADER_CAP + 100
    assert "...[9014 bytes]" in first and "...[5000 bytes]" in second
    assert "\\xff...[" in first  # the cut falls between escape sequences, never inside one
