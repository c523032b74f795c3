"""Script selection without a regex (forkd.handlers.fastcgi_script), on a real tree in tmp_path."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from forkd.config import FastCgiConfig
from forkd.handlers import fastcgi_records as fcgi
from forkd.handlers.cgi_env import Script
from forkd.handlers.fastcgi_script import PATH_CACHE, STATIC, Params, Selector
from forkd.http.errors import BadRequest, NotFound
from forkd.http.request import ConnectionInfo, Request


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    for name in ("index.php", "app.php", "uploads/avatar.gif", "blog/index.php", "blog/style.css",
                 "docs/index.html", "Upper.PHP", ".env.php", ".well-known/check.php"):
        path = www / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return www


def selector(root: Path, prefix: str = "/", **options: object) -> Selector:
    return Selector(prefix, FastCgiConfig(connect="unix:/x", root=root, **options))  # type: ignore


def script(found: object) -> Script:
    assert isinstance(found, Script), found
    return found


def test_the_first_script_in_the_path_runs_with_the_rest_as_path_info(root: Path) -> None:
    found = script(selector(root).select("/app.php/a/b%20c/"))
    assert found.filename == f"{root}/app.php"
    assert found.name == "/app.php" and found.path_info == "/a/b c/"
    found = script(selector(root, "/php/").select("/php/blog/index.php"))
    assert found.name == "/php/blog/index.php" and found.path_info == ""
    assert script(selector(root).select("/Upper.PHP")).filename.endswith("Upper.PHP")


def test_a_file_with_another_extension_never_runs_what_follows(root: Path) -> None:
    with pytest.raises(NotFound):
        selector(root).select("/uploads/avatar.gif/x.php")
    with pytest.raises(NotFound):
        selector(root, front_controller="/index.php").select("/uploads/avatar.gif/x.php")
    assert selector(root).select("/uploads/avatar.gif") is STATIC
    assert selector(root).select("/blog/style.css") is STATIC


def test_cr_lf_and_nul_are_bad_requests(root: Path) -> None:
    for path in ("/app.php/PHP%0Ais_the_shittiest_lang.php", "/app.php%0d", "/a%00.php"):
        with pytest.raises(BadRequest):
            selector(root).select(path)


def test_directories(root: Path) -> None:
    found = script(selector(root).select("/blog/"))
    assert found.filename == f"{root}/blog/index.php" and found.name == "/blog/index.php"
    assert script(selector(root).select("/")).name == "/index.php"
    assert selector(root).select("/blog") is STATIC  # the static handler redirects to "/blog/"
    assert selector(root).select("/docs/") is STATIC  # index.html is a static index
    assert selector(root, index=("index.html",)).select("/blog/") is STATIC


def test_front_controller_takes_what_matches_no_file(root: Path) -> None:
    with pytest.raises(NotFound):
        selector(root).select("/2024/hello-world/")
    found = script(selector(root, "/blog/", front_controller="/index.php")
                   .select("/blog/2024/hello-world/"))
    assert found.filename == f"{root}/index.php" and found.name == "/blog/index.php"
    assert found.path_info == ""
    found = script(selector(root, front_controller="/index.php").select("/app.php.bak"))
    assert found.name == "/index.php"


def test_a_remembered_path_still_asks_the_file_system(root: Path) -> None:
    # The walk of a path is remembered; what the tree holds is not: each request stats again.
    chooser = selector(root, front_controller="/index.php")
    assert script(chooser.select("/new.php/x")).name == "/index.php"  # nothing there yet
    (root / "new.php").write_text("x")
    found = script(chooser.select("/new.php/x"))
    assert found.name == "/new.php" and found.path_info == "/x"
    (root / "new.php").unlink()
    (root / "new.php").mkdir()
    assert script(chooser.select("/new.php/x")).name == "/index.php"  # a directory, no x in it
    (root / "new.php" / "x").write_text("x")
    assert chooser.select("/new.php/x") is STATIC  # a plain file under a directory named .php


def test_remembered_walks_are_bounded(root: Path) -> None:
    chooser = selector(root, front_controller="/index.php")
    for number in range(PATH_CACHE + 10):
        chooser.select(f"/post-{number}/")
    assert len(chooser._walks) <= PATH_CACHE


def test_dotfiles_and_links(root: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        selector(root).select("/.env.php")
    assert script(selector(root).select("/.well-known/check.php")).path_info == ""
    outside = tmp_path / "outside.php"
    outside.write_text("x")
    os.symlink(outside, root / "out.php")
    with pytest.raises(NotFound):
        selector(root).select("/out.php")
    os.symlink(root / "app.php", root / "source.txt")
    with pytest.raises(NotFound):  # served as text, a link to a script would show its source
        selector(root).select("/source.txt")
    os.symlink(root / "blog", root / "journal")
    assert script(selector(root).select("/journal/")).filename == f"{root}/journal/index.php"


# -- params: four groups encoded apart, one pair per name --------------------------------------


def params_of(record_stream: bytes) -> list[tuple[bytes, bytes]]:
    """The name-value pairs of a whole PARAMS stream (its records, then the pairs)."""
    records = fcgi.RecordReader().feed(record_stream)
    assert records[-1] == (fcgi.PARAMS, 1, b"")
    return fcgi.decode_pairs(b"".join(content for _kind, _id, content in records))


def test_params_name_every_variable_once(root: Path) -> None:
    settings = FastCgiConfig(connect="unix:/x", root=root, params={"APP_ENV": "prod"})
    params = Params(settings, "forkd/test", str(root))
    script_found = script(selector(root).select("/app.php/a/b"))
    conn = ConnectionInfo("10.0.0.7", 40123, "10.0.0.1", 8443, scheme="https",
                          tls_variables={"HTTPS": "on", "SSL_PROTOCOL": "TLSv1.3"})
    plain = Request(method="GET", target="/app.php/a/b?x=1", path="/app.php/a/b", query="x=1",
                    version="HTTP/1.1", headers={"host": "example.org", "authorization": "Basic x"},
                    host="example.org", keep_alive=True, conn=conn)
    redirected = dataclasses.replace(plain, extra={"REDIRECT_STATUS": "404",
                                                   "REDIRECT_URL": "/gone"})
    for request in (plain, redirected, plain):  # the third: the connection's pairs remembered
        pairs = params_of(params.record(1, request, script_found))
        names = [name for name, _value in pairs]
        assert len(names) == len(set(names)), names
        found = dict(pairs)
        assert found[b"SCRIPT_FILENAME"] == f"{root}/app.php".encode()
        assert found[b"PATH_INFO"] == b"/a/b" and found[b"DOCUMENT_URI"] == b"/app.php/a/b"
        assert found[b"PATH_TRANSLATED"] == f"{root}/a/b".encode()
        assert found[b"REMOTE_ADDR"] == b"10.0.0.7" and found[b"REMOTE_PORT"] == b"40123"
        assert found[b"HTTPS"] == b"on" and found[b"REQUEST_SCHEME"] == b"https"
        assert found[b"QUERY_STRING"] == b"x=1" and found[b"SERVER_PORT"] == b"8443"
        assert found[b"APP_ENV"] == b"prod" and found[b"GATEWAY_INTERFACE"] == b"CGI/1.1"
        assert b"HTTP_AUTHORIZATION" not in found  # pass_authorization is off
        assert found[b"REDIRECT_STATUS"] == (b"404" if request.extra else b"200")
        assert (b"REDIRECT_URL" in found) == bool(request.extra)
