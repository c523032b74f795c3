"""Turning a request path into a safe path under a root.

`normalize` decodes percent-escapes exactly once and removes dot-segments (RFC 3986 §5.2.4); a path
that would climb above "/" is refused, as are NUL bytes, backslashes used as separators and bytes that
are not UTF-8 (overlong encodings included). The result always starts with "/" and contains no "." or
".." segment and no empty segment, so joining it under a root can never name anything outside it;
symlinks are the handler's concern (see `inside`).
"""

from __future__ import annotations

import os
from urllib.parse import unquote_to_bytes

from forkd.http.errors import BadRequest, NotFound


def normalize(raw_path: str) -> str:
    """Decode and clean an encoded request path ("/a/%2e%2e/b" → "/b")."""
    if not raw_path.startswith("/"):
        raise BadRequest("request path must start with /")
    try:
        data = raw_path.encode("latin-1")  # the bytes as received (Request strings are latin-1)
    except UnicodeEncodeError:
        raise BadRequest("path is not a byte string") from None
    if b"%" in data:
        if not _valid_escapes(raw_path):
            raise BadRequest("malformed percent-encoding")
        data = unquote_to_bytes(data)
    try:
        path = data.decode("utf-8")  # strict: rejects overlong forms such as %c0%ae
    except UnicodeDecodeError:
        raise BadRequest("path is not valid UTF-8") from None
    if "\x00" in path or "\\" in path:
        raise BadRequest("NUL or backslash in path")
    trailing = path.endswith(("/", "/.", "/.."))
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not out:
                raise BadRequest("path climbs above the root")
            out.pop()
        else:
            out.append(segment)
    clean = "/" + "/".join(out)
    if trailing and out:
        clean += "/"
    return clean


def _valid_escapes(path: str) -> bool:
    i = path.find("%")
    while i != -1:
        pair = path[i + 1 : i + 3]
        if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            return False
        i = path.find("%", i + 3)
    return True


def inside(root_real: str, candidate: str) -> bool:
    """True when the real (symlink-resolved) path of candidate lies within root_real."""
    return within(root_real, os.path.realpath(candidate))


def within(root_real: str, real: str) -> bool:
    """True when the real path `real` is root_real or lies below it (both already resolved)."""
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def strip_prefix(path: str, prefix: str) -> str:
    """The part of a normalised path below a route prefix, always starting with "/".

    The prefix must match on whole segments: the router matched the path as received, and decoding
    or dot-segment removal may have moved it out of the route ("/static/../x" is "/x"), which is a 404
    here rather than a file of this route's root.
    """
    base = prefix.rstrip("/")
    if not base:
        return path
    if path == base:
        return "/"
    if not path.startswith(base + "/"):
        raise NotFound()
    return path[len(base):]


def hidden(path: str) -> bool:
    """True when a segment of a normalised path names a dotfile, "/.well-known/" excepted (RFC 8615)."""
    if "/." not in path:
        return False
    segments = path.split("/")
    if len(segments) > 1 and segments[1] == ".well-known":
        segments = segments[2:]
    return any(segment.startswith(".") for segment in segments)
