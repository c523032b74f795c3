"""Property-based tests of the path normaliser: whatever a client sends, the result stays under "/".

Either normalize() raises an HTTPError (a clean 4xx answer) or it returns a path that starts with "/",
has no ".", ".." or empty segment, no NUL or backslash, and stays inside any root it is joined to.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from forkd.handlers.paths import normalize
from forkd.http.errors import HTTPError

ROOT = "/srv/www"

# Pieces attackers combine: dot segments in every encoding, separators, escapes, overlong UTF-8.
PIECES = st.sampled_from([
    "/", "..", ".", "%2e", "%2E", "%2e%2e", "%252e", "%2f", "%2F", "%5c", "\\", "%00", "%c0%ae",
    "%c0%af", "%e0%80%ae", "%", "%g1", "a", "b", "etc", "passwd", ".well-known", "%ff", "~", ";",
])
# Request strings are the received bytes decoded as latin-1, so every character is below U+0100.
BYTE_TEXT = st.text(st.characters(max_codepoint=255), min_size=1, max_size=4)
PATHS = st.lists(st.one_of(PIECES, BYTE_TEXT), max_size=14).map(
    lambda parts: "/" + "".join(parts)
)


def _check(raw: str) -> None:
    try:
        clean = normalize(raw)
    except HTTPError as exc:
        assert 400 <= exc.status < 500
        return
    assert clean.startswith("/")
    assert "\x00" not in clean and "\\" not in clean
    segments = clean.strip("/").split("/") if clean != "/" else []
    assert all(seg not in ("", ".", "..") for seg in segments), clean
    joined = os.path.normpath(ROOT + clean)
    assert joined == ROOT or joined.startswith(ROOT + "/"), (raw, clean, joined)


@settings(max_examples=1500, deadline=None)
@given(PATHS)
def test_normalised_paths_never_escape_the_root(raw: str) -> None:
    _check(raw)


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(max_codepoint=255), max_size=40))
def test_arbitrary_text_gives_a_path_or_a_client_error(text: str) -> None:
    _check("/" + text)
