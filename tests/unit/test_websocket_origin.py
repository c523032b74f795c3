"""Origin checks of WebSocket routes (cross-site WebSocket hijacking), as pure functions."""

from __future__ import annotations

import pytest

from forkd.handlers.websocket import _origin, _same_origin


@pytest.mark.parametrize("origin, host, same", [
    ("http://example.com", "example.com", True),
    ("https://Example.COM", "example.com", True),
    ("http://example.com:8080", "example.com:8080", True),
    ("http://example.com", "example.com:80", True),  # the default port, spelled out by the Host
    ("https://example.com", "example.com:443", True),
    ("http://[::1]:8080", "[::1]:8080", True),
    ("http://example.com:8080", "example.com", True),  # no port in Host: the name decides
    ("http://example.com:8081", "example.com:8080", False),
    ("http://example.com", "example.com:8080", False),
    ("http://evil.example", "example.com", False),
    ("http://example.com.evil.example", "example.com", False),
    ("null", "example.com", False),
    ("", "example.com", False),
    ("http://example.com", "", False),
])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert _same_origin(origin, host) is same


def test_listed_origins_are_compared_in_one_spelling() -> None:
    assert _origin("HTTPS://App.Example.com:443/") == "https://app.example.com"
    assert _origin("http://app.example.com:80") == "http://app.example.com"
    assert _origin("http://app.example.com:8080") == "http://app.example.com:8080"
    assert _origin("null") == "null"
