"""Accept-Encoding negotiation among precompressed siblings, JSON preference, media types, listings."""

from __future__ import annotations

import json

import pytest

from forkd.handlers import autoindex, mime
from forkd.handlers.negotiate import choose_coding, prefers_json, qvalues

BOTH = ("br", "gzip")


@pytest.mark.parametrize("accept, available, chosen", [
    (None, BOTH, None),
    ("", BOTH, None),
    ("gzip", BOTH, "gzip"),
    ("gzip, deflate, br", BOTH, "br"),
    ("gzip, br", ("gzip",), "gzip"),
    ("br;q=0.5, gzip", BOTH, "gzip"),
    ("br;q=0, gzip;q=0", BOTH, None),
    ("*", BOTH, "br"),
    ("*;q=0.5, br;q=0", BOTH, "gzip"),
    ("x-gzip", BOTH, "gzip"),
    ("GZIP", BOTH, "gzip"),
    ("gzip;q=0.5, identity", BOTH, None),  # identity (q=1) preferred
    ("gzip;q=0.5, identity;q=0.5", BOTH, "gzip"),  # a tie goes to the smaller representation
    ("identity;q=0", BOTH, None),  # nothing acceptable: identity anyway (RFC 9110 §12.5.3)
    ("deflate", BOTH, None),
    ("gzip;q=2", BOTH, None),  # an invalid q-value reads as 0
    ("gzip;q=abc", BOTH, None),
    ("gzip", (), None),
])
def test_choose_coding(accept: str | None, available: tuple[str, ...], chosen: str | None) -> None:
    assert choose_coding(accept, available) == chosen


def test_qvalues() -> None:
    assert qvalues("a;q=0.5 , B, c;x=1;q=0") == {"a": 0.5, "b": 1.0, "c": 0.0}


@pytest.mark.parametrize("accept, expected", [
    (None, False),
    ("*/*", False),
    ("text/html", False),
    ("application/json", True),
    ("application/json, text/html", False),
    ("application/json, text/html;q=0.9", True),
    ("application/*", True),
    ("text/html, */*;q=0.1, application/json;q=0", False),
])
def test_prefers_json(accept: str | None, expected: bool) -> None:
    assert prefers_json(accept) is expected


@pytest.mark.parametrize("name, content_type", [
    ("index.html", "text/html; charset=utf-8"),
    ("a.CSS", "text/css; charset=utf-8"),
    ("app.js", "application/javascript; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("logo.svg", "image/svg+xml; charset=utf-8"),
    ("photo.jpeg", "image/jpeg"),
    ("font.woff2", "font/woff2"),
    ("archive.tar.gz", "application/gzip"),
    ("Makefile", "application/octet-stream"),
    (".bashrc", "application/octet-stream"),
    ("x.unknownext", "application/octet-stream"),
])
def test_media_types(name: str, content_type: str) -> None:
    assert mime.content_type(name) == content_type


def test_listing_escapes_hostile_names() -> None:
    entries = [
        autoindex.Entry("<script>&\"'.txt", False, 5, 0),
        autoindex.Entry("a b", True, 0, 0),
        autoindex.Entry("x:y", False, 1, 0),
        autoindex.Entry("é.txt", False, 2, 0),
    ]
    page = autoindex.render_html("/d/<i>/", entries, parent=True).decode()
    assert "<script>" not in page and "<i>" not in page
    assert "&lt;script&gt;&amp;&quot;&#x27;.txt" in page
    assert 'href="%3Cscript%3E&amp;%22&#x27;.txt"' in page
    assert 'href="a%20b/"' in page
    assert 'href="x%3Ay"' in page  # never readable as a scheme
    assert 'href="%C3%A9.txt"' in page and ">é.txt<" in page
    assert page.index("a b/") < page.index("&lt;script") < page.index("x:y") < page.index("é.txt")


def test_listing_json() -> None:
    entries = [autoindex.Entry("f", False, 3, 0), autoindex.Entry("d", True, 4096, 0)]
    items = json.loads(autoindex.render_json(entries))
    assert items == [
        {"name": "d", "type": "directory", "mtime": "Thu, 01 Jan 1970 00:00:00 GMT", "size": None},
        {"name": "f", "type": "file", "mtime": "Thu, 01 Jan 1970 00:00:00 GMT", "size": 3},
    ]
