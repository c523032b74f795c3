"""StaticHandler called directly with Request objects: no sockets, a real directory tree.

The integration tests (tests/integration/test_static*.py) check the same behaviours over the wire;
these pin down what the handler itself returns, including the cases a network test cannot stage
reliably (a file replaced between validation and open, the content cache's revalidation).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkd.config import Config, StaticConfig
from forkd.handlers.base import HandlerContext
from forkd.handlers.conditional import parse_http_date
from forkd.handlers.static import (
    FILE_BYTES,
    MISSING_BYTES,
    SMALL_FILE,
    TARGET_BYTES,
    StaticHandler,
    _os_error,
)
from forkd.http.errors import HTTPError
from forkd.http.request import Request
from forkd.http.response import FileRange, Response, error_body
from forkd.logs import ErrorLog
from forkd.reactor import Reactor


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "dir").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("hello\n")
    (root / "dir" / "index.html").write_text("<p>index</p>\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB: not cached in memory
    (root / ".env").write_text("SECRET\n")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_text("Contact: x\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    (root / "out").symlink_to(tmp_path / "secret.txt")
    (root / "in").symlink_to("a.txt")
    (root / "to-env").symlink_to(".env")
    os.mkfifo(root / "fifo")
    return root


def make(root: Path, prefix: str = "/", **options: object) -> StaticHandler:
    context = HandlerContext(Config(), ErrorLog(None), Reactor())
    return StaticHandler(prefix, StaticConfig(root=root, **options), context)  # type: ignore[arg-type]


def request(path: str, method: str = "GET", **fields: str) -> Request:
    raw_path, _, query = path.partition("?")
    headers = {name.replace("_", "-"): value for name, value in fields.items()}
    return Request(method, path, raw_path, query, "HTTP/1.1", headers, "localhost", True)


@pytest.fixture
def responses() -> Iterator[list[Response]]:
    """Responses to clean up (close their descriptors) at the end of a test."""
    made: list[Response] = []
    yield made
    for response in made:
        if response.cleanup:
            response.cleanup()


def body_of(response: Response) -> bytes:
    if isinstance(response.body, bytes):
        return response.body
    out = b""
    for part in response.body:  # type: ignore[union-attr]
        out += os.pread(part.fd, part.count, part.offset) if isinstance(part, FileRange) else part
    return out


def status_of(handler: StaticHandler, req: Request) -> int:
    try:
        response = handler.handle(req)
    except HTTPError as error:
        return error.status
    if response.cleanup:
        response.cleanup()
    return response.status


def test_small_file(site: Path) -> None:
    response = make(site).handle(request("/a.txt"))
    assert response.status == 200
    assert response.body == b"hello\n"
    headers = dict(response.headers)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"].startswith('"') and "Vary" not in headers


def test_big_file_is_a_file_range_closed_by_cleanup(site: Path) -> None:
    response = make(site).handle(request("/big.bin"))
    assert isinstance(response.body, list) and isinstance(response.body[0], FileRange)
    part = response.body[0]
    assert (part.offset, part.count, response.length) == (0, 256 * 1024, 256 * 1024)
    assert body_of(response) == (site / "big.bin").read_bytes()
    assert response.cleanup is not None
    response.cleanup()
    with pytest.raises(OSError):
        os.fstat(part.fd)


def test_head_is_the_same_response(site: Path, responses: list[Response]) -> None:
    handler = make(site)
    for path in ("/a.txt", "/big.bin", "/dir/"):
        get = handler.handle(request(path))
        head = handler.handle(request(path, "HEAD"))
        responses += [get, head]
        assert (get.status, get.headers, get.length) == (head.status, head.headers, head.length)


@pytest.mark.parametrize("path", [
    "/out", "/.env", "/to-env", "/fifo", "/nope", "/a.txt/", "/dir/../../secret.txt",
])
def test_refused(site: Path, path: str) -> None:
    assert status_of(make(site), request(path)) in (400, 404)


def test_fifo_never_blocks(site: Path) -> None:
    # Even with FIFOs reachable (symlinks allowed, dotfiles allowed) the handler answers 404 at once.
    handler = make(site, symlinks_outside_root=True, dotfiles=True)
    assert status_of(handler, request("/fifo")) == 404


def test_symlinks_and_dotfiles_when_allowed(site: Path) -> None:
    handler = make(site, symlinks_outside_root=True, dotfiles=True)
    assert body_of(handler.handle(request("/out"))) == b"outside\n"
    assert body_of(handler.handle(request("/.env"))) == b"SECRET\n"


def test_well_known_and_inside_symlinks(site: Path) -> None:
    handler = make(site)
    assert body_of(handler.handle(request("/.well-known/security.txt"))) == b"Contact: x\n"
    assert body_of(handler.handle(request("/in"))) == b"hello\n"


def test_methods(site: Path) -> None:
    handler = make(site)
    with pytest.raises(HTTPError) as caught:
        handler.prepare(request("/a.txt", "POST"))
    assert caught.value.status == 405 and ("Allow", "GET, HEAD, OPTIONS") in caught.value.headers
    response = handler.handle(request("/a.txt", "OPTIONS"))
    assert response.status == 204 and ("Allow", "GET, HEAD, OPTIONS") in response.headers


def test_directory_redirect_is_relative(site: Path) -> None:
    handler = make(site)
    response = handler.handle(request("/dir?x=1&y"))
    assert response.status == 301
    assert dict(response.headers)["Location"] == "dir/?x=1&y"
    assert b'<a href="dir/?x=1&amp;y">dir/?x=1&amp;y</a>' in body_of(response)
    (site / "a:b").mkdir()
    assert dict(handler.handle(request("/a%3Ab")).headers)["Location"] == "a%3Ab/"
    (site / "dir" / "sp ace").mkdir()
    assert dict(handler.handle(request("/dir/sp%20ace")).headers)["Location"] == "sp%20ace/"


def test_index_and_listing(site: Path) -> None:
    assert body_of(make(site).handle(request("/dir/"))) == b"<p>index</p>\n"
    assert status_of(make(site), request("/empty/")) == 403
    listing = make(site, autoindex=True).handle(request("/"))
    page = body_of(listing).decode()
    assert listing.status == 200 and "a.txt" in page and "dir/" in page
    assert ".env" not in page and "fifo" not in page and '"out"' not in page
    assert 'href="in"' in page  # a symlink inside the root is listed


def test_cached_listing_follows_the_directory(site: Path) -> None:
    """A listing is rendered once, then reused only while it would still read the same."""
    handler = make(site, autoindex=True)
    old = time.time() - 60
    os.utime(site / "empty", (old, old))  # long unmodified: its first read is trusted
    first = body_of(handler.handle(request("/empty/")))
    assert body_of(handler.handle(request("/empty/"))) is first  # unchanged: not rendered again
    (site / "empty" / "new.txt").write_text("x")  # the directory's mtime moves: read again
    assert "new.txt" in body_of(handler.handle(request("/empty/"))).decode()
    # A change the directory's mtime does not show (a file growing) appears after RECHECK at most.
    (site / "empty" / "new.txt").write_text("longer")
    deadline = time.monotonic() + 3
    while ">6<" not in body_of(handler.handle(request("/empty/"))).decode():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    json_body = body_of(handler.handle(request("/empty/", accept="application/json")))
    assert json_body.startswith(b"[") and b"new.txt" in json_body  # cached apart from the HTML


def test_prefix_route(site: Path) -> None:
    handler = make(site, "/static/")
    assert body_of(handler.handle(request("/static/a.txt"))) == b"hello\n"
    assert dict(handler.handle(request("/static")).headers)["Location"] == "static/"
    assert status_of(handler, request("/static/../a.txt")) == 404


def test_cache_sees_changes(site: Path) -> None:
    handler = make(site)
    assert body_of(handler.handle(request("/a.txt"))) == b"hello\n"
    (site / "a.txt").write_text("changed, longer\n")
    assert body_of(handler.handle(request("/a.txt"))) == b"changed, longer\n"
    (site / "a.txt").unlink()
    assert status_of(handler, request("/a.txt")) == 404


def test_big_file_replaced_after_validation(site: Path, responses: list[Response]) -> None:
    # The cached description is stale when the file is opened: the response must describe what
    # was opened, never mix the old headers with the new bytes.
    handler = make(site)
    first = handler.handle(request("/big.bin"))
    responses.append(first)
    replacement = site / "big.new"
    replacement.write_bytes(b"x" * 100_000)
    os.replace(replacement, site / "big.bin")
    entry = handler._files.get(str(site / "big.bin"))
    assert entry is not None
    second = handler._body_response(entry, None)
    responses.append(second)
    assert second.length == 100_000 and body_of(second) == b"x" * 100_000
    assert dict(second.headers)["ETag"] != dict(first.headers)["ETag"]


def test_symlink_swapped_to_outside_is_refused(site: Path) -> None:
    handler = make(site)
    assert body_of(handler.handle(request("/in"))) == b"hello\n"
    (site / "in").unlink()
    (site / "in").symlink_to(site.parent / "secret.txt")
    assert status_of(handler, request("/in")) == 404


def test_precompressed(site: Path) -> None:
    (site / "a.txt.gz").write_bytes(b"GZ")
    (site / "a.txt.br").write_bytes(b"BR")
    handler = make(site)
    plain = handler.handle(request("/a.txt"))
    gz = handler.handle(request("/a.txt", accept_encoding="gzip"))
    br = handler.handle(request("/a.txt", accept_encoding="gzip, br"))
    assert (plain.body, gz.body, br.body) == (b"hello\n", b"GZ", b"BR")
    etags = {dict(r.headers)["ETag"] for r in (plain, gz, br)}
    assert len(etags) == 3
    for response in (plain, gz, br):
        headers = dict(response.headers)
        assert headers["Vary"] == "Accept-Encoding"
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert dict(gz.headers)["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in dict(plain.headers)
    off = make(site, precompressed=False).handle(request("/a.txt", accept_encoding="gzip"))
    assert off.body == b"hello\n" and "Vary" not in dict(off.headers)


def test_conditional_and_ranges(site: Path, responses: list[Response]) -> None:
    handler = make(site, cache_control="max-age=60", headers={"X-Frame-Options": "DENY"})
    first = handler.handle(request("/a.txt"))
    etag = dict(first.headers)["ETag"]
    assert ("Cache-Control", "max-age=60") in first.headers
    not_modified = handler.handle(request("/a.txt", if_none_match=etag))
    assert not_modified.status == 304 and not_modified.body == b""
    assert dict(not_modified.headers) == {
        "ETag": etag, "Last-Modified": dict(first.headers)["Last-Modified"],
        "Cache-Control": "max-age=60", "X-Frame-Options": "DENY"}
    assert status_of(handler, request("/a.txt", if_match='"nope"')) == 412
    partial = handler.handle(request("/a.txt", range="bytes=1-3"))
    assert partial.status == 206 and body_of(partial) == b"ell"
    assert dict(partial.headers)["Content-Range"] == "bytes 1-3/6"
    ignored = handler.handle(request("/a.txt", range="bytes=1-3", if_range='"old"'))
    assert ignored.status == 200 and ignored.body == b"hello\n"
    assert handler.handle(request("/a.txt", "HEAD", range="bytes=1-3")).status == 200
    with pytest.raises(HTTPError) as caught:
        handler.handle(request("/a.txt", range="bytes=6-"))
    assert caught.value.status == 416 and ("Content-Range", "bytes */6") in caught.value.headers
    multi = handler.handle(request("/big.bin", range="bytes=0-1,-2"))
    responses.append(multi)
    content_type = dict(multi.headers)["Content-Type"]
    boundary = content_type.split("boundary=")[1]
    body = body_of(multi)
    assert multi.status == 206 and len(body) == multi.length
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"--{boundary}--\r\n".encode())
    assert b"Content-Range: bytes 0-1/262144\r\n\r\n\x00\x01\r\n" in body
    assert b"Content-Range: bytes 262142-262143/262144\r\n\r\n\xfe\xff\r\n" in body


def test_error_pages(site: Path) -> None:
    (site / "404.html").write_text("<h1>lost</h1>\n")
    handler = make(site, error_pages={404: "404.html", 403: "/missing.html"})
    response = handler.handle(request("/nope"))
    assert response.status == 404 and response.body == b"<h1>lost</h1>\n"
    assert dict(response.headers)["Content-Type"] == "text/html; charset=utf-8"
    assert status_of(handler, request("/empty/")) == 403  # its page is missing: the plain error


def test_repeated_404_is_the_worker_s_404(site: Path) -> None:
    """A name seen before takes the quick 404 path: the same page the worker makes of NotFound."""
    handler = make(site)
    with pytest.raises(HTTPError) as first:
        handler.handle(request("/nope.txt"))  # the general path raises NotFound
    assert first.value.status == 404
    quick = handler.handle(request("/nope.txt"))
    assert (quick.status, quick.headers, quick.body, quick.close) == (
        404, [("Content-Type", "text/html; charset=utf-8")], error_body(404), False)
    (site / "nope.txt").write_text("here now\n")
    assert body_of(handler.handle(request("/nope.txt"))) == b"here now\n"
    (site / "404.html").write_text("<h1>lost</h1>\n")
    paged = make(site, error_pages={404: "404.html"})
    for _ in range(2):  # a route's own 404 page, every time
        assert paged.handle(request("/gone.txt")).body == b"<h1>lost</h1>\n"


def test_last_modified_is_never_in_the_future(site: Path) -> None:
    future = time.time() + 86400
    os.utime(site / "a.txt", (future, future))
    headers = dict(make(site).handle(request("/a.txt")).headers)
    last_modified = parse_http_date(headers["Last-Modified"])
    assert last_modified is not None and last_modified <= time.time()


def test_os_errors_map_to_statuses() -> None:
    # Root reads every file, so the 403 for an unreadable file is checked at the mapping.
    assert _os_error(PermissionError(errno.EACCES, "denied")).status == 403
    assert _os_error(FileNotFoundError(errno.ENOENT, "gone")).status == 404
    assert _os_error(NotADirectoryError(errno.ENOTDIR, "file")).status == 404
    assert _os_error(OSError(errno.ELOOP, "loop")).status == 404
    assert _os_error(OSError(errno.EIO, "disk")).status == 500


def test_caches_are_bounded_in_bytes_and_keep_no_misses(site: Path) -> None:
    """Distinct 8 KB paths that 404 stay out of the path and file caches; the quick-404 cache of
    missing paths stays within its byte budget, as do paths that all name one file."""
    handler = make(site)
    for i in range(500):
        path = "".join(f"/m{i:04d}-{n:02d}-" + "x" * 190 for n in range(40))
        assert status_of(handler, request(path)) == 404
    assert len(handler._targets) == 0 and len(handler._files) == 0
    assert 0 < handler._missing.used <= MISSING_BYTES
    assert len(handler._missing) < 500  # the oldest left
    for i in range(2000):  # distinct spellings of one existing file
        assert status_of(handler, request("/dir/.." * 400 + "/." * i + "/a.txt")) == 200
    assert 0 < handler._targets.used <= TARGET_BYTES
    assert len(handler._targets) < 2000  # the oldest left
    assert len(handler._files) == 1


def test_file_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    content = b"c" * SMALL_FILE
    count = FILE_BYTES // SMALL_FILE + 50
    for i in range(count):
        (root / f"{i}.bin").write_bytes(content)
    handler = make(root)
    for i in range(count):
        assert handler.handle(request(f"/{i}.bin")).body == content
    assert handler._files.used <= FILE_BYTES
    assert len(handler._files) < count
