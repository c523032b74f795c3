"""The `redirect` route type against the real daemon: placeholders, statuses, hostile targets."""

from __future__ import annotations

import subprocess

from tests.support.daemon import Daemon
from tests.support.tools import need_tool


def redirects(make_daemon, tmp_path) -> Daemon:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("home")
    return make_daemon({"routes": [
        {"prefix": "/old/", "redirect": {"to": "https://{host}{uri}"}},
        {"prefix": "/temp/", "redirect": {"to": "/new{path}?was={query}", "status": 307}},
        {"prefix": "/local/", "redirect": {"to": "/{path}", "status": 302}},
        {"prefix": "/fixed", "redirect": {"to": "https://example.com/", "status": 308}},
        {"prefix": "/", "static": {"root": str(www)}},
    ]})


def head_of(daemon: Daemon, target: bytes, host: bytes = b"Example.COM:8080") -> dict[str, bytes]:
    reply = daemon.raw(b"GET " + target + b" HTTP/1.1\r\nHost: " + host
                       + b"\r\nConnection: close\r\n\r\n")
    head = reply.partition(b"\r\n\r\n")[0].split(b"\r\n")
    fields = {b"status": head[0].split(b" ")[1]}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        assert name.lower() not in fields, f"repeated or injected header {name!r}"
        fields[name.lower()] = value.strip()
    return {name.decode(): value for name, value in fields.items()}


def test_placeholders_and_statuses(make_daemon, tmp_path) -> None:
    daemon = redirects(make_daemon, tmp_path)
    fields = head_of(daemon, b"/old/a%20b?x=1&y=2")
    assert fields["status"] == b"301"
    assert fields["location"] == b"https://example.com/old/a%20b?x=1&y=2"  # {uri}: never stripped
    fields = head_of(daemon, b"/temp/p?q=1")
    assert (fields["status"], fields["location"]) == (b"307", b"/new/temp/p?was=q=1")
    fields = head_of(daemon, b"/fixed")
    assert (fields["status"], fields["location"]) == (b"308", b"https://example.com/")
    assert head_of(daemon, b"/")["status"] == b"200"  # other routes are untouched


def test_http10_without_host_gets_the_local_address(make_daemon, tmp_path) -> None:
    daemon = redirects(make_daemon, tmp_path)
    reply = daemon.raw(b"GET /old/x HTTP/1.0\r\n\r\n")
    assert b"\r\nLocation: https://127.0.0.1/old/x\r\n" in reply


def test_absolute_form_target_redirects_with_its_authority(make_daemon, tmp_path) -> None:
    daemon = redirects(make_daemon, tmp_path)
    fields = head_of(daemon, b"http://other.test/old/x?y", host=b"example.com")
    assert fields["location"] == b"https://other.test/old/x?y"


def test_request_bytes_never_reach_location_unescaped(make_daemon, tmp_path) -> None:
    daemon = redirects(make_daemon, tmp_path)
    # Encoded CR LF stays encoded: no header can be injected.
    fields = head_of(daemon, b"/old/%0D%0ASet-Cookie:%20evil=1")
    assert fields["location"] == b"https://example.com/old/%0D%0ASet-Cookie:%20evil=1"
    assert "set-cookie" not in fields
    # Bytes outside the URI character set are percent-encoded.
    fields = head_of(daemon, b'/old/"<x>`{|}^')
    assert fields["location"] == b"https://example.com/old/%22%3Cx%3E%60%7B%7C%7D%5E"
    assert head_of(daemon, b"/old/\xc3\xa9")["status"] == b"400"  # refused by the parser
    assert head_of(daemon, b"/local/\\evil.example")["status"] == b"400"  # and by routing


def test_a_local_template_cannot_become_an_open_redirect(make_daemon, tmp_path) -> None:
    daemon = redirects(make_daemon, tmp_path)
    # "/{path}" with a path of "//evil.example" would be "///evil.example": a browser goes there.
    fields = head_of(daemon, b"/local//evil.example/x")
    assert fields["status"] == b"302"
    assert fields["location"] == b"/local//evil.example/x"
    fields = head_of(daemon, b"/local/x")
    assert not fields["location"].startswith(b"//")


def test_curl_follows_the_redirect(make_daemon, tmp_path) -> None:
    curl = need_tool("curl")
    daemon = redirects(make_daemon, tmp_path)
    out = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
         f"http://127.0.0.1:{daemon.port}/temp/a"],
        capture_output=True, text=True, timeout=20, check=False)
    assert out.stdout == f"307 http://127.0.0.1:{daemon.port}/new/temp/a?was=", out.stderr
