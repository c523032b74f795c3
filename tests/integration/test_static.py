"""The static-file handler over real sockets: methods, directories, listings, types, validators,
ranges, precompressed siblings, route headers and error pages (issue #3, part 4).

Each test starts the real daemon (make_daemon) on a fresh copy of the test site and talks to it with
http.client, raw sockets or curl.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from tests.support.daemon import Daemon
from tests.support.static_site import HOSTILE, TEXT, build_site, raw_request, static_config
from tests.support.tools import need_tool


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return build_site(tmp_path / "site")


@pytest.fixture
def serve(make_daemon: Callable[..., Daemon], site: Path) -> Callable[..., Daemon]:
    def start(prefix: str = "/", **options: Any) -> Daemon:
        return make_daemon(static_config(site, prefix, **options))
    return start


def without_date(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "date"}


# -- methods -------------------------------------------------------------------------------------

def test_get_small_file(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    status, headers, body = daemon.get("/a.txt")
    assert (status, body) == (200, b"hello\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == "6"
    assert headers["accept-ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', headers["etag"])
    assert headers["last-modified"].endswith(" GMT")


def test_get_big_file_is_intact(serve: Callable[..., Daemon], site: Path) -> None:
    daemon = serve()
    status, headers, body = daemon.get("/big.bin")
    assert status == 200 and body == (site / "big.bin").read_bytes()
    assert headers["content-length"] == str(300_000)


@pytest.mark.parametrize("path", ["/a.txt", "/big.bin", "/dir/", "/listing/", "/text.txt"])
def test_head_has_the_headers_of_get(serve: Callable[..., Daemon], path: str) -> None:
    daemon = serve(autoindex=True)
    get = raw_request(daemon.host, daemon.port, path)
    head = raw_request(daemon.host, daemon.port, path, "HEAD")
    assert head.body == b""
    get_headers, head_headers = without_date(get.headers), without_date(head.headers)
    if path == "/listing/":  # the listing shows times to the second; compare what is stable
        get_headers.pop("content-length"), head_headers.pop("content-length")
    assert (get.status, get_headers) == (head.status, head_headers)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
def test_other_methods_get_405_with_allow(serve: Callable[..., Daemon], method: str) -> None:
    daemon = serve()
    reply = raw_request(daemon.host, daemon.port, "/a.txt", method, {"Content-Length": "0"})
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD, OPTIONS"


def test_405_is_sent_before_the_body_is_read(serve: Callable[..., Daemon]) -> None:
    # prepare() refuses the request, so Expect: 100-continue is never answered with 100.
    daemon = serve()
    reply = raw_request(daemon.host, daemon.port, "/a.txt", "POST",
                        {"Content-Length": "1000000", "Expect": "100-continue"})
    assert reply.status == 405
    assert b"100 Continue" not in reply.raw


def test_options(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    reply = raw_request(daemon.host, daemon.port, "/a.txt", "OPTIONS")
    assert reply.status == 204 and reply.headers["allow"] == "GET, HEAD, OPTIONS"
    assert reply.body == b""
    assert raw_request(daemon.host, daemon.port, "/nope", "OPTIONS").status == 404


# -- directories ---------------------------------------------------------------------------------

def test_index_file(serve: Callable[..., Daemon]) -> None:
    status, headers, body = serve().get("/dir/")
    assert (status, body) == (200, b"<p>dir index</p>\n")
    assert headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize("target, location", [
    ("/dir", "dir/"),
    ("/dir?a=1&b=%20", "dir/?a=1&b=%20"),
    ("/dir/sub", "sub/"),
    ("//dir", "dir/"),
    ("/listing/adir", "adir/"),
])
def test_directory_without_slash_redirects_relatively(serve: Callable[..., Daemon], target: str,
                                                      location: str) -> None:
    daemon = serve()
    reply = raw_request(daemon.host, daemon.port, target)
    assert reply.status == 301
    assert reply.headers["location"] == location
    assert not reply.headers["location"].startswith("//")
    # The page links to the new location too (HTML-escaped), for clients that do not follow.
    link = html.escape(location, quote=True)
    assert f'<a href="{link}">{link}</a>' in reply.body.decode()


def test_redirect_location_is_safe_for_odd_names(serve: Callable[..., Daemon], site: Path) -> None:
    (site / "http:x").mkdir()
    (site / "sp ace").mkdir()
    daemon = serve()
    assert raw_request(daemon.host, daemon.port, "/http:x").headers["location"] == "http%3Ax/"
    assert raw_request(daemon.host, daemon.port, "/sp%20ace").headers["location"] == "sp%20ace/"


def test_following_the_redirect_with_curl(serve: Callable[..., Daemon]) -> None:
    need_tool("curl")
    daemon = serve()
    base = f"http://{daemon.host}:{daemon.port}"
    for path, expected in (("/dir", "200 /dir/"), ("/dir/sub?q=1", "403 /dir/sub/?q=1")):
        out = subprocess.run(["curl", "-sSL", "-o", "/dev/null", "-w", "%{http_code} %{url_effective}",
                              base + path], check=False, capture_output=True, timeout=10, text=True)
        assert out.stdout == f"{expected.split()[0]} {base}{expected.split()[1]}"


def test_directory_without_index_or_listing_is_403(serve: Callable[..., Daemon]) -> None:
    assert serve().get("/empty/")[0] == 403


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((self._href, data))
            self._href = None


def test_listing_html(serve: Callable[..., Daemon]) -> None:
    daemon = serve(autoindex=True)
    status, headers, body = daemon.get("/listing/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert "<script>" not in page  # escaped
    parser = _Links()
    parser.feed(page)
    labels = [label for _, label in parser.links]
    # Directories first, then files, each in code-point order; no dotfile, no link out of the root.
    assert labels == ["../", "adir/", "zdir/", *sorted(HOSTILE)]
    for href, label in parser.links[1:]:
        # Every href, resolved against the listing's URL, fetches exactly the listed entry.
        url = urljoin("/listing/", href)
        status, _, content = daemon.get(url)
        if label.endswith("/"):
            assert status == 200, url  # a sub-listing
        else:
            assert (status, content) == (200, label.encode()), url
    # Each file row shows its date and its size (each test file holds its own name).
    row = re.search(r">sp ace\.txt</a></td><td>([^<]+)</td><td[^>]*>(\d+)</td>", page)
    assert row is not None
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", row.group(1))
    assert row.group(2) == str(len("sp ace.txt"))


def test_listing_json(serve: Callable[..., Daemon]) -> None:
    daemon = serve(autoindex=True)
    status, headers, body = daemon.get("/listing/", {"Accept": "application/json"})
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    assert "accept" in headers["vary"].lower()
    items = json.loads(body)
    assert [item["name"] for item in items] == ["adir", "zdir", *sorted(HOSTILE)]
    assert all(set(item) == {"name", "type", "mtime", "size"} for item in items)
    sizes = {item["name"]: item["size"] for item in items}
    assert sizes["sp ace.txt"] == len(b"sp ace.txt")
    assert sizes["adir"] is None and sizes["zdir"] is None  # a directory's size is null
    assert items[0]["type"] == "directory" and items[-1]["type"] == "file"
    # A browser's Accept (HTML first) gets HTML.
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert daemon.get("/listing/", {"Accept": browser})[1]["content-type"].startswith("text/html")


def test_listing_with_dotfiles_allowed(serve: Callable[..., Daemon]) -> None:
    daemon = serve(autoindex=True, dotfiles=True)
    names = [item["name"] for item in json.loads(daemon.get("/listing/", {"Accept": "application/json"})[2])]
    assert ".hidden" in names
    assert "link-out" not in names  # still out of the root


# -- media types ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path, content_type", [
    ("/1k.html", "text/html; charset=utf-8"),
    ("/style.css", "text/css; charset=utf-8"),
    ("/app.js", "application/javascript; charset=utf-8"),
    ("/data.json", "application/json; charset=utf-8"),
    ("/logo.svg", "image/svg+xml; charset=utf-8"),
    ("/pic.png", "image/png"),
    ("/big.bin", "application/octet-stream"),
    ("/noext", "application/octet-stream"),
])
def test_media_types(serve: Callable[..., Daemon], path: str, content_type: str) -> None:
    daemon = serve()
    assert daemon.get(path)[1]["content-type"] == content_type


# -- validators and conditional requests ----------------------------------------------------------

def _validators(daemon: Daemon, path: str = "/a.txt") -> tuple[str, str]:
    headers = daemon.get(path)[1]
    return headers["etag"], headers["last-modified"]


def test_conditional_matrix(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    etag, last_modified = _validators(daemon)
    earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
    cases: list[tuple[dict[str, str], int]] = [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),
        ({"If-None-Match": f'"x", {etag}'}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": last_modified}, 304),
        ({"If-Modified-Since": earlier}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        ({"If-None-Match": '"other"', "If-Modified-Since": last_modified}, 200),
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{etag}"}, 412),
        ({"If-Unmodified-Since": last_modified}, 200),
        ({"If-Unmodified-Since": earlier}, 412),
        ({"If-Match": etag, "If-Unmodified-Since": earlier}, 200),
        ({"If-Match": '"other"', "If-None-Match": etag}, 412),
    ]
    for headers, expected in cases:
        status, reply_headers, body = daemon.get("/a.txt", headers)
        assert status == expected, headers
        if expected == 304:
            assert body == b"" and reply_headers["etag"] == etag
            assert "content-type" not in reply_headers


def test_304_and_412_on_head_and_304_framing(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    etag, _ = _validators(daemon)
    reply = raw_request(daemon.host, daemon.port, "/a.txt", "HEAD", {"If-None-Match": etag})
    assert reply.status == 304
    reply = raw_request(daemon.host, daemon.port, "/a.txt", "GET", {"If-None-Match": etag})
    assert reply.status == 304 and reply.body == b""
    assert reply.headers.get("content-length") in (None, "6")  # never a wrong 0 (RFC 9110 §8.6)
    assert raw_request(daemon.host, daemon.port, "/a.txt", "HEAD", {"If-Match": '"x"'}).status == 412


def test_etag_changes_with_the_file(serve: Callable[..., Daemon], site: Path) -> None:
    daemon = serve()
    etag, _ = _validators(daemon)
    (site / "a.txt").write_bytes(b"hello, changed\n")
    status, headers, body = daemon.get("/a.txt", {"If-None-Match": etag})
    assert (status, body) == (200, b"hello, changed\n")
    assert headers["etag"] != etag


def test_etag_is_the_same_in_every_worker(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    etags = {daemon.get("/big.bin")[1]["etag"] for _ in range(8)}
    assert len(etags) == 1


# -- ranges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, content_range, body", [
    ("bytes=0-3", "bytes 0-3/10", b"0123"),
    ("bytes=7-", "bytes 7-9/10", b"789"),
    ("bytes=-2", "bytes 8-9/10", b"89"),
    ("bytes=5-100", "bytes 5-9/10", b"56789"),
    ("bytes=2-2", "bytes 2-2/10", b"2"),
    ("bytes=0-1,1-3", "bytes 0-3/10", b"0123"),  # overlapping: coalesced into one part
])
def test_single_range(serve: Callable[..., Daemon], value: str, content_range: str, body: bytes) -> None:
    daemon = serve()
    status, headers, content = daemon.get("/digits.txt", {"Range": value})
    assert (status, headers["content-range"], content) == (206, content_range, body)
    assert headers["content-length"] == str(len(body))


def _multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    boundary = content_type.split("boundary=")[1].encode()
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n"))
        assert fields["Content-Type"]
        assert data.endswith(b"\r\n")
        parts.append((fields["Content-Range"], data[:-2]))
    return parts


def test_multiple_ranges(serve: Callable[..., Daemon], site: Path) -> None:
    daemon = serve()
    data = (site / "big.bin").read_bytes()
    status, headers, body = daemon.get("/big.bin", {"Range": "bytes=0-99,200000-200009,-5"})
    assert status == 206
    assert headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(headers["content-length"]) == len(body)
    assert _multipart(headers["content-type"], body) == [
        ("bytes 0-99/300000", data[:100]),
        ("bytes 200000-200009/300000", data[200000:200010]),
        ("bytes 299995-299999/300000", data[-5:]),
    ]


def test_range_abuse_gets_the_whole_file(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    many = ",".join(f"{i * 1000}-{i * 1000}" for i in range(200))
    status, headers, body = daemon.get("/big.bin", {"Range": "bytes=" + many})
    assert status == 200 and len(body) == 300_000
    overlapping = ",".join(["0-"] * 50)
    status, headers, body = daemon.get("/big.bin", {"Range": "bytes=" + overlapping})
    assert status == 206 and headers["content-range"] == "bytes 0-299999/300000"


@pytest.mark.parametrize("value", ["bytes=10-", "bytes=100-200", "bytes=-0", "bytes=10-20,30-"])
def test_unsatisfiable_range(serve: Callable[..., Daemon], value: str) -> None:
    daemon = serve()
    status, headers, _ = daemon.get("/digits.txt", {"Range": value})
    assert status == 416 and headers["content-range"] == "bytes */10"


@pytest.mark.parametrize("value", ["bytes=5-1", "lines=1-2", "bytes=x-y", "bytes 0-1"])
def test_invalid_range_is_ignored(serve: Callable[..., Daemon], value: str) -> None:
    status, _, body = serve().get("/digits.txt", {"Range": value})
    assert (status, body) == (200, b"0123456789")


def test_if_range(serve: Callable[..., Daemon], site: Path) -> None:
    an_hour_ago = time.time() - 3600
    os.utime(site / "digits.txt", (an_hour_ago, an_hour_ago))
    daemon = serve()
    etag, last_modified = _validators(daemon, "/digits.txt")
    for if_range, expected in [(etag, 206), ('"stale"', 200), (f"W/{etag}", 200),
                               (last_modified, 206), ("Mon, 01 Jan 2001 00:00:00 GMT", 200)]:
        status, _, body = daemon.get("/digits.txt", {"Range": "bytes=0-1", "If-Range": if_range})
        assert status == expected, if_range
        assert body == (b"01" if expected == 206 else b"0123456789")
    # A file modified within the last second: its date is too weak to keep the range (§13.1.5).
    (site / "digits.txt").write_bytes(b"9876543210")
    _, last_modified = _validators(daemon, "/digits.txt")
    status, _, body = daemon.get("/digits.txt", {"Range": "bytes=0-1", "If-Range": last_modified})
    assert (status, body) == (200, b"9876543210")


def test_range_with_curl(serve: Callable[..., Daemon], site: Path) -> None:
    need_tool("curl")
    daemon = serve()
    out = subprocess.run(["curl", "-sS", "-r", "1000-1999", f"http://{daemon.host}:{daemon.port}/big.bin"],
                         check=False, capture_output=True, timeout=10)
    assert out.stdout == (site / "big.bin").read_bytes()[1000:2000]


def test_ranges_on_a_kept_alive_connection(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    conn = daemon.connection()
    try:
        for first in (0, 3, 9):
            conn.request("GET", "/digits.txt", headers={"Range": f"bytes={first}-"})
            response = conn.getresponse()
            assert (response.status, response.read()) == (206, b"0123456789"[first:])
        conn.request("GET", "/digits.txt", headers={"Range": "bytes=50-"})
        response = conn.getresponse()
        assert response.status == 416
        response.read()
        conn.request("GET", "/digits.txt")
        assert conn.getresponse().read() == b"0123456789"
    finally:
        conn.close()


# -- precompressed siblings ----------------------------------------------------------------------

def test_precompressed_gzip_and_brotli(serve: Callable[..., Daemon]) -> None:
    daemon = serve()
    plain = daemon.get("/text.txt")
    gz = daemon.get("/text.txt", {"Accept-Encoding": "gzip"})
    br = daemon.get("/text.txt", {"Accept-Encoding": "gzip, deflate, br"})
    assert plain[2] == TEXT and "content-encoding" not in plain[1]
    assert gz[1]["content-encoding"] == "gzip" and br[1]["content-encoding"] == "br"
    assert br[2] == b"not really brotli"
    for _, headers, _ in (plain, gz, br):
        assert headers["vary"] == "Accept-Encoding"
        assert headers["content-type"] == "text/plain; charset=utf-8"
    assert len({plain[1]["etag"], gz[1]["etag"], br[1]["etag"]}) == 3
    # q-values: gzip preferred over br, identity refused, everything refused (identity anyway).
    assert daemon.get("/text.txt", {"Accept-Encoding": "br;q=0.1, gzip"})[1]["content-encoding"] == "gzip"
    assert daemon.get("/text.txt", {"Accept-Encoding": "br;q=0, gzip;q=0"})[2] == TEXT
    assert daemon.get("/text.txt", {"Accept-Encoding": "gzip;q=0.5, identity"})[2] == TEXT
    refused = daemon.get("/a.txt", {"Accept-Encoding": "identity;q=0"})
    assert refused[0] == 200 and refused[2] == b"hello\n"
    # A 304 for the gzip representation carries its own ETag and the Vary.
    status, headers, _ = daemon.get("/text.txt", {"Accept-Encoding": "gzip", "If-None-Match": gz[1]["etag"]})
    assert status == 304 and headers["vary"] == "Accept-Encoding" and headers["etag"] == gz[1]["etag"]
    status, _, _ = daemon.get("/text.txt", {"If-None-Match": gz[1]["etag"]})
    assert status == 200  # the identity representation has another ETag
    # Vary on every answer about the file, errors included.
    assert daemon.get("/text.txt", {"Range": "bytes=1-1"})[1]["vary"] == "Accept-Encoding"
    assert daemon.get("/text.txt", {"Range": "bytes=99999-"})[1]["vary"] == "Accept-Encoding"
    assert daemon.get("/text.txt", {"If-Match": '"x"'})[1]["vary"] == "Accept-Encoding"
    assert daemon.get("/text.txt", {"Accept-Encoding": "gzip", "If-Match": '"x"'})[1]["vary"] == "Accept-Encoding"


def test_curl_compressed_decodes_the_sibling(serve: Callable[..., Daemon]) -> None:
    need_tool("curl")
    daemon = serve()
    out = subprocess.run(["curl", "-sS", "-H", "Accept-Encoding: gzip", "--compressed",
                          f"http://{daemon.host}:{daemon.port}/text.txt"], check=False, capture_output=True, timeout=10)
    assert out.stdout == TEXT


def test_precompressed_off(serve: Callable[..., Daemon]) -> None:
    daemon = serve(precompressed=False)
    _, headers, body = daemon.get("/text.txt", {"Accept-Encoding": "gzip, br"})
    assert body == TEXT and "content-encoding" not in headers and "vary" not in headers


# -- route headers and error pages -----------------------------------------------------------------

def test_cache_control_and_extra_headers(serve: Callable[..., Daemon]) -> None:
    daemon = serve(cache_control="public, max-age=3600",
                   headers={"X-Content-Type-Options": "nosniff", "X-Test": "yes"})
    status, headers, _ = daemon.get("/a.txt")
    assert headers["cache-control"] == "public, max-age=3600" and headers["x-test"] == "yes"
    status, headers, _ = daemon.get("/a.txt", {"If-None-Match": headers["etag"]})
    assert status == 304 and headers["cache-control"] == "public, max-age=3600"
    status, headers, _ = daemon.get("/digits.txt", {"Range": "bytes=0-0"})
    assert status == 206 and headers["x-content-type-options"] == "nosniff"
    status, headers, _ = daemon.get("/missing")
    assert status == 404 and "x-test" not in headers and "cache-control" not in headers


def test_error_page(serve: Callable[..., Daemon]) -> None:
    daemon = serve(error_pages={404: "404.html", 403: "/no-such-page.html"})
    status, headers, body = daemon.get("/missing.txt")
    assert (status, body) == (404, b"<h1>custom not found</h1>\n")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert daemon.get("/.env")[2] == b"<h1>custom not found</h1>\n"  # a refused dotfile is a 404 too
    head = raw_request(daemon.host, daemon.port, "/missing.txt", "HEAD")
    assert head.status == 404 and head.body == b"" and head.headers["content-length"] == "26"
    status, _, body = daemon.get("/empty/")
    assert status == 403 and b"custom" not in body  # the configured page is missing: the default


def test_prefix_route(make_daemon: Callable[..., Daemon], site: Path) -> None:
    daemon = make_daemon(static_config(site, "/static"))
    assert daemon.get("/static/a.txt")[2] == b"hello\n"
    reply = raw_request(daemon.host, daemon.port, "/static")
    assert reply.status == 301 and reply.headers["location"] == "static/"
    assert daemon.get("/static/")[0] == 403
    assert daemon.get("/staticx/a.txt")[0] == 404
    assert daemon.get("/a.txt")[0] == 404


def test_curl_downloads_with_keep_alive(serve: Callable[..., Daemon], site: Path, tmp_path: Path) -> None:
    need_tool("curl")
    daemon = serve()
    base = f"http://{daemon.host}:{daemon.port}"
    out = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "1"), f"{base}/big.bin",
                          "-o", str(tmp_path / "2"), f"{base}/1k.html", "-w", "%{num_connects}\n"],
                         check=False, capture_output=True, text=True, timeout=10)
    assert (tmp_path / "1").read_bytes() == (site / "big.bin").read_bytes()
    assert (tmp_path / "2").read_bytes() == (site / "1k.html").read_bytes()
    assert out.stdout.split() == ["1", "0"]  # the second download reused the connection
