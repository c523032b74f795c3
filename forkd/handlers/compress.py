"""gzip on the fly for static routes (`gzip: true`): compress a text file once, serve it many times.

Which files: text types (HTML, CSS, JavaScript, JSON, SVG, XML, plain text and the `+json`/`+xml`
types) from MIN_SIZE bytes (below it gzip's framing eats the gain) up to MAX_SIZE (a larger file is
sent as it is: compressing it would hold the worker's loop too long). A file with a precompressed
sibling (FILE.gz, FILE.br) is never compressed here: the sibling is better and already there.

When: the client accepts gzip (Accept-Encoding, with q-values, forkd.handlers.negotiate) and asks
for no range. Range requests get the identity representation, so byte ranges always count bytes
of the file itself; the gzip response does not offer ranges.

What it says: the gzip representation is a representation of its own (RFC 9110 §8.4), with
`Content-Encoding: gzip`, an ETag of its own (the file's with a `-gz` suffix, strong because the
compressed bytes are a pure function of the file version: the level is fixed and the gzip header
carries no time) and `Vary: Accept-Encoding`, which the identity answers of the same file carry too
(the static handler adds it to every compressible file). Conditional requests are evaluated
against the representation being sent.

Cost: the compressed bytes are cached per file version (device, inode, size, mtime), per route and
worker, bounded in bytes (CACHE_BYTES, oldest out first), so a file is compressed once per worker
and version; a changed file is compressed again on its next request.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forkd.handlers import conditional, negotiate
from forkd.handlers.bounded import ByteCache, cost_of
from forkd.http.errors import PreconditionFailed
from forkd.http.request import Request
from forkd.http.response import Response

MIN_SIZE = 1024  # bytes; smaller files are sent as they are
MAX_SIZE = 1024 * 1024  # bytes; larger files too (compressing them would hold the loop)
CACHE_BYTES = 16 * 1024 * 1024  # compressed bytes kept per route and worker
LEVEL = 6  # zlib's default: most of the gain of 9 for a third of its time
COMPRESSIBLE = frozenset({
    "text/html", "text/css", "text/plain", "text/javascript", "text/xml", "text/csv",
    "text/markdown", "application/javascript", "application/json", "application/xml",
    "image/svg+xml",
})
VARY = ("Vary", "Accept-Encoding")


def compressible(content_type: str, size: int) -> bool:
    """Whether a file of this type and size is worth compressing on the fly."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media in COMPRESSIBLE or media.endswith(("+json", "+xml"))


def gzip_bytes(data: bytes) -> bytes:
    """gzip (RFC 1952) of data; the same bytes every time (no name, no time in the header)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # 16 + 15: the gzip wrapper
    return compressor.compress(data) + compressor.flush()


@dataclass(slots=True)
class _Compressed:
    identity: tuple[int, int, int, int]  # the file version it was made from
    body: bytes
    etag: str


class Gzip:
    """The on-the-fly gzip of one static route (one per handler, so per route and worker)."""

    def __init__(self, success_headers: list[tuple[str, str]]) -> None:
        self.success_headers = success_headers  # Cache-Control and the route's extra headers
        self.cache: ByteCache[str, _Compressed] = ByteCache(CACHE_BYTES)

    def respond(self, request: Request, entry: Any,
                read: Callable[[Any], tuple[bytes | None, Any]]) -> Response | None:
        """The gzip answer for a compressible file (a static `_File`), or None to send it as it is.

        `read(entry)` returns the file's content and the description of the version read.
        """
        headers = request.headers
        if "range" in headers:
            return None
        if negotiate.choose_coding(headers.get("accept-encoding"), ("gzip",)) != "gzip":
            return None
        made = self.cache.get(entry.fs_path)
        if made is None or made.identity != entry.identity:
            data, entry = read(entry)
            if data is None:  # the file changed while being read: send it as it is
                return None
            made = _Compressed(entry.identity, gzip_bytes(data), entry.etag[:-1] + '-gz"')
            self.cache.put(entry.fs_path, made, cost_of(entry.fs_path, made.body, made.etag))
        validators = [("Last-Modified", conditional.http_date(entry.mtime)), ("ETag", made.etag),
                      VARY]
        if ("if-none-match" in headers or "if-modified-since" in headers
                or "if-match" in headers or "if-unmodified-since" in headers):
            status = conditional.evaluate_preconditions(request.method, headers, made.etag,
                                                        entry.mtime)
            if status == 304:
                return Response(304, [*validators, *self.success_headers])
            if status == 412:
                raise PreconditionFailed("", [VARY])
        fields = [("Content-Type", entry.content_type), ("Content-Encoding", "gzip"), *validators,
                  *self.success_headers]
        return Response(200, fields, made.body)
