"""gzip on the fly and the SPA fallback of static routes, against the real daemon."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

from tests.integration.test_static_redbot import _problems, redbot
from tests.support.daemon import Daemon
from tests.support.tools import need_module, need_tool

PAGE = b"".join(b"<p>line %d of a page that compresses well</p>\n" % i for i in range(2500))


def gzip_site(make_daemon, tmp_path: Path) -> tuple[Daemon, Path]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.html").write_bytes(PAGE)  # ~110 KB
    (root / "tiny.css").write_bytes(b"a{b:c}\n")  # below the 1 KiB floor
    (root / "data.bin").write_bytes(os.urandom(4096))  # not a text type
    (root / "pre.js").write_bytes(b"var x = 1;\n" * 500)
    (root / "pre.js.gz").write_bytes(gzip.compress(b"var x = 1;\n" * 500, mtime=0))
    daemon = make_daemon({"routes": [{"prefix": "/", "static": {
        "root": str(root), "gzip": True, "cache_control": "max-age=600"}}]})
    return daemon, root


GZ = {"Accept-Encoding": "gzip, deflate"}


def test_text_is_compressed_for_clients_that_accept_gzip(make_daemon, tmp_path) -> None:
    daemon, _ = gzip_site(make_daemon, tmp_path)
    status, headers, body = daemon.get("/page.html", GZ)
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body) < len(PAGE) // 10
    assert gzip.decompress(body) == PAGE
    assert "accept-ranges" not in headers
    status, plain, body = daemon.get("/page.html")  # no Accept-Encoding: the file as it is
    assert (status, body) == (200, PAGE) and "content-encoding" not in plain
    assert plain["vary"] == "Accept-Encoding"  # the same URL answers differently by coding
    assert plain["etag"] != headers["etag"] and headers["etag"].endswith('-gz"')
    status, refused, body = daemon.get("/page.html", {"Accept-Encoding": "gzip;q=0, br"})
    assert body == PAGE and "content-encoding" not in refused


def test_what_is_not_compressed(make_daemon, tmp_path) -> None:
    daemon, _ = gzip_site(make_daemon, tmp_path)
    for path in ("/tiny.css", "/data.bin"):
        _, headers, _ = daemon.get(path, GZ)
        assert "content-encoding" not in headers and "vary" not in headers, path
    # A precompressed sibling wins: its bytes and its own validator, not a fresh compression.
    _, headers, body = daemon.get("/pre.js", GZ)
    assert headers["content-encoding"] == "gzip" and not headers["etag"].endswith('-gz"')
    assert body == (tmp_path / "www" / "pre.js.gz").read_bytes()


def test_ranges_are_ranges_of_the_file(make_daemon, tmp_path) -> None:
    daemon, _ = gzip_site(make_daemon, tmp_path)
    status, headers, body = daemon.get("/page.html", {**GZ, "Range": "bytes=0-99"})
    assert status == 206 and body == PAGE[:100] and "content-encoding" not in headers
    assert headers["content-range"] == f"bytes 0-99/{len(PAGE)}"


def test_revalidation_and_a_changed_file(make_daemon, tmp_path) -> None:
    daemon, root = gzip_site(make_daemon, tmp_path)
    _, headers, _ = daemon.get("/page.html", GZ)
    status, again, body = daemon.get("/page.html", {**GZ, "If-None-Match": headers["etag"]})
    assert (status, body, again["etag"], again["vary"]) == (304, b"", headers["etag"],
                                                             "Accept-Encoding")
    assert daemon.get("/page.html", {**GZ, "If-Match": '"other"'})[0] == 412
    changed = PAGE.replace(b"line", b"LINE")
    (root / "page.html").write_bytes(changed)
    os.utime(root / "page.html", (1, 1))  # another version even within the same clock tick
    status, fresh, body = daemon.get("/page.html", GZ)
    assert gzip.decompress(body) == changed and fresh["etag"] != headers["etag"]


def test_curl_compressed(make_daemon, tmp_path) -> None:
    curl = need_tool("curl")
    daemon, _ = gzip_site(make_daemon, tmp_path)
    out = subprocess.run([curl, "-sS", "--compressed", "-w", "\n%{size_download}",
                          f"http://127.0.0.1:{daemon.port}/page.html"],
                         capture_output=True, timeout=20, check=False)
    body, _, size = out.stdout.rpartition(b"\n")
    assert body == PAGE and int(size) < len(PAGE) // 10


def test_redbot_finds_no_problem_in_gzip_answers(make_daemon, tmp_path) -> None:
    need_module("redbot")
    daemon, _ = gzip_site(make_daemon, tmp_path)
    report = redbot(f"http://{daemon.host}:{daemon.port}/page.html")
    assert report["error"] == "" and report["status"] == 200
    assert _problems(report) == []


# -- the SPA fallback -----------------------------------------------------------------------------

def test_spa_fallback_serves_the_page_for_paths_without_an_extension(make_daemon,
                                                                      tmp_path) -> None:
    root = tmp_path / "www"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<div id=app></div>")
    (root / "assets" / "app.css").write_text("body{}")
    daemon = make_daemon({"routes": [{"prefix": "/", "static": {
        "root": str(root), "fallback": "/index.html"}}]})
    for path in ("/", "/users/42", "/settings/", "/deep/link/here?tab=1"):
        status, headers, body = daemon.get(path)
        assert (status, body) == (200, b"<div id=app></div>"), path
        assert headers["content-type"].startswith("text/html")
    assert daemon.get("/assets/app.css")[2] == b"body{}"
    assert daemon.get("/assets/app.js")[0] == 404  # a missing asset is still missing
    assert daemon.get("/favicon.ico")[0] == 404
    assert daemon.get("/users/42", method="HEAD")[0] == 200
    assert daemon.get("/users/42", method="POST", body=b"x")[0] == 405
