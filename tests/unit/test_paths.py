"""The path normaliser, prefix stripping, dotfile detection and route prefix matching."""

from __future__ import annotations

import pytest

from forkd.handlers.paths import hidden, normalize, strip_prefix, within
from forkd.http.errors import BadRequest, NotFound
from forkd.routing import matches


@pytest.mark.parametrize("raw, clean", [
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/a/b/", "/a/b/"),
    ("/a//b", "/a/b"),
    ("/a/./b", "/a/b"),
    ("/a/../b", "/b"),
    ("/a/%2e%2e/b", "/b"),
    ("/a/%2E%2e/b", "/b"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a%20b", "/a b"),
    ("/%252e%252e/x", "/%2e%2e/x"),  # decoded once: "%2e" stays a literal name
    ("/a%2fb", "/a/b"),  # an encoded slash separates, after decoding, like any slash
    ("/a/..%2fb", "/b"),
    ("/caf%C3%A9", "/café"),
    ("/a/%2e", "/a/"),
])
def test_normalize(raw: str, clean: str) -> None:
    assert normalize(raw) == clean


@pytest.mark.parametrize("raw", [
    "/..", "/../etc/passwd", "/%2e%2e/etc/passwd", "/a/../../b", "/..%2f..%2fetc",
    "/a%00b", "/a%5cb", "/a\\b", "/..\\..\\x", "/%c0%ae%c0%ae/x", "/%e0%80%ae", "/%ff",
    "/a%2", "/a%zz", "relative", "",
])
def test_normalize_refuses(raw: str) -> None:
    with pytest.raises(BadRequest):
        normalize(raw)


@pytest.mark.parametrize("path, prefix, rest", [
    ("/a/b", "/", "/a/b"),
    ("/static/x", "/static/", "/x"),
    ("/static/x", "/static", "/x"),
    ("/static", "/static/", "/"),
    ("/static/", "/static", "/"),
])
def test_strip_prefix(path: str, prefix: str, rest: str) -> None:
    assert strip_prefix(path, prefix) == rest


@pytest.mark.parametrize("path, prefix", [
    ("/staticx", "/static"),
    ("/x", "/static/"),  # "/static/../x" after normalising
    ("/stati", "/static"),
])
def test_strip_prefix_outside_the_route(path: str, prefix: str) -> None:
    with pytest.raises(NotFound):
        strip_prefix(path, prefix)


@pytest.mark.parametrize("prefix, path, expected", [
    ("/static", "/static", True),
    ("/static", "/static/", True),
    ("/static", "/static/x", True),
    ("/static/", "/static", True),
    ("/static/", "/static/x", True),
    ("/static", "/staticx", False),
    ("/static", "/static../x", False),
    ("/static/", "/static../x", False),
    ("/static", "/stati", False),
    ("/", "/anything", True),
])
def test_route_prefixes_match_whole_segments(prefix: str, path: str, expected: bool) -> None:
    assert matches(prefix, path) is expected


@pytest.mark.parametrize("path, expected", [
    ("/", False),
    ("/a/b.txt", False),
    ("/.env", True),
    ("/.git/config", True),
    ("/a/.hidden/x", True),
    ("/a/.b", True),
    ("/.well-known/acme-challenge/x", False),
    ("/.well-known/.secret", True),
    ("/a/.well-known/x", True),
    ("/a.b/c", False),
])
def test_hidden(path: str, expected: bool) -> None:
    assert hidden(path) is expected


def test_within_compares_whole_segments() -> None:
    assert within("/srv/www", "/srv/www") and within("/srv/www", "/srv/www/a/b")
    assert not within("/srv/www", "/srv/wwwx") and not within("/srv/www", "/srv")
    assert within("/", "/etc/passwd")
