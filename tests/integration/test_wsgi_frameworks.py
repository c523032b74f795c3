"""Real frameworks on the wsgi route (issue 13): a Flask 3 app, a Django 5 project and a Pyramid 2
app, each mounted under a prefix, with the things apps do: links built from SCRIPT_NAME, forms (with CSRF
for Django), redirects, sessions in cookies, file uploads and streamed responses."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import time
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from test_hardening_support import Probe, raise_own_nofile

from tests.support.daemon import ROOT, Daemon
from tests.support.tools import need_module, need_tool

APPS = str(ROOT / "tests" / "wsgi")
UPLOAD = os.urandom(3 << 20)  # 3 MiB: spooled to disk by forkd, read by the framework


class Browser:
    """Keeps cookies across requests, like a browser (one connection, kept alive)."""

    def __init__(self, daemon: Daemon) -> None:
        self.conn = daemon.connection()
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        body = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
        return self.request("POST", path, body,
                            {"Content-Type": "application/x-www-form-urlencoded"})


def multipart(name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "forkd-boundary-7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def site(make_daemon, tmp_path: Path) -> Daemon:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("static")
    return make_daemon({
        "workers": 2,
        "routes": [
            {"prefix": "/app/", "wsgi": {"app": "flask_app:app", "python_path": [APPS]}},
            {"prefix": "/django/", "wsgi": {
                "app": "django_site.wsgi:application", "python_path": [APPS],
                "env": {"DJANGO_SETTINGS_MODULE": "django_site.settings"}}},
            {"prefix": "/pyramid/", "wsgi": {"app": "pyramid_app", "python_path": [APPS]}},
            {"prefix": "/", "static": {"root": str(tmp_path / "www")}},
        ],
    })


def check_upload(browser: Browser, path: str) -> None:
    body, content_type = multipart("file", "data.bin", UPLOAD)
    status, _, answer = browser.request("POST", path, body, {"Content-Type": content_type})
    assert status == 200, answer[:500]
    assert json.loads(answer) == {"name": "data.bin", "size": len(UPLOAD),
                                  "sha256": hashlib.sha256(UPLOAD).hexdigest()}


def check_stream(daemon: Daemon, path: str) -> None:
    conn = daemon.connection()
    started = time.monotonic()
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    first = response.read1()
    assert first.startswith(b"part 0") and time.monotonic() - started < 0.35  # not buffered
    assert first + response.read() == b"part 0\npart 1\npart 2\n"
    conn.close()


def test_flask_app_mounted_under_a_prefix(make_daemon, tmp_path) -> None:
    need_module("flask")
    daemon = site(make_daemon, tmp_path)
    browser = Browser(daemon)
    status, _, body = browser.request("GET", "/app/")
    assert (status, body) == (200, b'<a href="/app/hello/world">hello</a>')  # url_for saw /app
    assert browser.request("GET", "/app/hello/world")[::2] == (200, b"hello world")
    assert b'action="/app/form"' in browser.request("GET", "/app/form")[2]
    status, headers, _ = browser.post_form("/app/form", {"name": "ada"})
    assert (status, headers["location"]) == (302, "/app/done")
    assert browser.request("GET", "/app/done")[::2] == (200, b"thanks ada")  # session cookie
    check_upload(browser, "/app/upload")
    assert browser.request("GET", "/app/missing")[0] == 404
    assert browser.request("GET", "/index.html")[::2] == (200, b"static")
    check_stream(daemon, "/app/stream")


def test_django_project_mounted_under_a_prefix(make_daemon, tmp_path) -> None:
    need_module("django")
    daemon = site(make_daemon, tmp_path)
    browser = Browser(daemon)
    assert browser.request("GET", "/django/")[::2] == (200, b'<a href="/django/form/">form</a>')
    status, _, page = browser.request("GET", "/django/form/")
    assert status == 200 and b'action="/django/form/"' in page
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None and "csrftoken" in browser.cookies
    # Without the token, CSRF protection refuses the form; with it, a redirect and a session.
    assert browser.post_form("/django/form/", {"name": "grace"})[0] == 403
    status, headers, _ = browser.post_form(
        "/django/form/", {"name": "grace", "csrfmiddlewaretoken": token.group(1).decode()})
    assert (status, headers["location"]) == (302, "/django/done/")
    assert browser.request("GET", "/django/done/")[::2] == (200, b"thanks grace")
    # APPEND_SLASH redirects to the prefixed URL.
    status, headers, _ = browser.request("GET", "/django/done")
    assert (status, headers["location"]) == (301, "/django/done/")
    check_upload(browser, "/django/upload/")
    check_stream(daemon, "/django/stream/")


def test_pyramid_app_mounted_under_a_prefix(make_daemon, tmp_path) -> None:
    need_module("pyramid")
    daemon = site(make_daemon, tmp_path)
    browser = Browser(daemon)
    assert browser.request("GET", "/pyramid/")[::2] == (200,
                                                        b'<a href="/pyramid/items/x">item</a>')
    status, _, body = browser.request("GET", "/pyramid/items/x", headers={"Host": "example.org"})
    assert (status, json.loads(body)) == (200, {"name": "x",
                                                "url": "http://example.org/pyramid/items/y"})
    status, headers, _ = browser.post_form("/pyramid/submit", {"name": "z"})
    assert (status, headers["location"]) == (  # WebOb makes it absolute, from HTTP_HOST
        302, f"http://127.0.0.1:{daemon.port}/pyramid/items/z")
    assert browser.request("GET", "/pyramid/nothing")[0] == 404


@pytest.mark.parametrize("path", ["/app/hi", "/django/hi/"])
def test_keep_alive_and_head_requests(make_daemon, tmp_path, path: str) -> None:
    need_module("flask")
    need_module("django")
    daemon = site(make_daemon, tmp_path)
    conn = daemon.connection()
    for _ in range(20):
        conn.request("GET", path)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"Hello, World!")
        assert response.getheader("Content-Length") == "13"
    conn.request("HEAD", path)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"")
    conn.request("GET", path)
    assert conn.getresponse().read() == b"Hello, World!"  # the connection is still in step
    conn.close()


def test_slowloris_does_not_deny_the_flask_app_to_a_normal_client(make_daemon, tmp_path) -> None:
    """1,000 slowloris connections hold buffers in the loop, never an app thread (gunicorn's
    sync workers would each be pinned by one of them)."""
    need_module("flask")
    need_tool("slowhttptest")
    raise_own_nofile(8192)
    daemon = site(make_daemon, tmp_path)
    prefix = daemon.dir / "slowloris"
    command = ["slowhttptest", "-H", "-c", "1000", "-r", "200", "-i", "2", "-l", "10", "-p", "3",
               "-g", "-o", str(prefix), "-u", f"http://{daemon.host}:{daemon.port}/app/hi"]
    with Probe(daemon.host, daemon.port, "/app/hi") as probe:
        result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(f"{prefix}.csv") as report:
        rows = [{k.strip(): int(v) for k, v in row.items()} for row in csv.DictReader(report)]
    assert max(row["Connected"] for row in rows) >= 950  # all held at once
    assert probe.failures == [] and len(probe.latencies) > 100
    assert probe.p99() < 0.2, f"p99 {probe.p99() * 1000:.0f} ms"
