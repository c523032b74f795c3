"""Scheme-scoped routes against the real daemon: one plain and one TLS listener, real clients.

The operator's two lines, "plain HTTP redirects to HTTPS", with certbot's webroot path served
over plain HTTP before them, both at the top level and inside `servers`.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.support import https as support
from tests.support.daemon import Daemon, run_forkd
from tests.support.tools import need_tool

TOKEN = "Xq3-token_for_the_acme_server"
REDIRECT = {"to": "https://{host}{uri}", "status": 301}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def www(tmp_path: Path, name: str = "www") -> str:
    root = tmp_path / name
    (root / ".well-known" / "acme-challenge").mkdir(parents=True)
    (root / ".well-known" / "acme-challenge" / TOKEN).write_text("proof\n")
    (root / "index.html").write_text(f"secure {name}\n")
    (root / "page.html").write_text(f"page of {name}\n")
    return str(root)


def challenges(root: str) -> str:
    """certbot's webroot directory for the ACME route (the route's prefix is not in the path)."""
    return str(Path(root) / ".well-known" / "acme-challenge")


def redirecting(make_daemon, tmp_path: Path, ca: trustme.CA) -> Daemon:
    root = www(tmp_path)
    pair = support.write_pair(ca.issue_cert("localhost", "example.com"), tmp_path, "site")
    return make_daemon({
        "listen": [{"address": "127.0.0.1:0", "tls": True}, "127.0.0.1:0"],
        "tls": {"certificates": [pair]},
        "hsts": "max-age=63072000",
        "routes": [
            {"prefix": "/.well-known/acme-challenge/", "static": {"root": challenges(root)}},
            {"prefix": "/", "redirect": REDIRECT, "scheme": "http"},
            {"prefix": "/", "static": {"root": root}},
        ],
    })


def plain_port(daemon: Daemon) -> int:
    return int(daemon.addresses[1].rsplit(":", 1)[1])


def fetch(conn: http.client.HTTPConnection, path: str,
          host: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def plain(daemon: Daemon) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", plain_port(daemon), timeout=10)


def secure(daemon: Daemon, ca: trustme.CA, sni: str = "localhost") -> http.client.HTTPConnection:
    """A kept-alive HTTPS connection whose handshake names `sni`."""
    context = support.client_context(ca)
    raw = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    conn = http.client.HTTPConnection(sni)
    conn.sock = context.wrap_socket(raw, server_hostname=sni)
    return conn


def test_plain_http_is_redirected_once_and_https_is_served(make_daemon, tmp_path, ca) -> None:
    daemon = redirecting(make_daemon, tmp_path, ca)
    http_conn, https_conn = plain(daemon), secure(daemon, ca)
    for _ in range(2):  # the second round comes from the route caches, one per scheme
        status, headers, body = fetch(http_conn, "/page.html?a=1", f"localhost:{plain_port(daemon)}")
        assert (status, headers["location"]) == (301, "https://localhost/page.html?a=1")
        assert "strict-transport-security" not in headers  # never on plain HTTP
        status, headers, body = fetch(https_conn, "/page.html?a=1", "localhost")
        assert (status, body) == (200, b"page of www\n")  # the same URL over HTTPS: no loop
        assert headers["strict-transport-security"] == "max-age=63072000"
        assert fetch(http_conn, "/", "example.com")[1]["location"] == "https://example.com/"
        assert fetch(https_conn, "/", "example.com")[2] == b"secure www\n"
    http_conn.close()
    https_conn.close()


def test_each_scheme_keeps_its_own_cached_route(make_daemon, tmp_path, ca) -> None:
    daemon = redirecting(make_daemon, tmp_path, ca)  # one worker: both requests meet one cache
    https_conn = secure(daemon, ca)
    assert fetch(https_conn, "/only-once", "localhost")[0] == 404  # cached for https first
    status, headers, _ = fetch(plain(daemon), "/only-once", "localhost")
    assert (status, headers["location"]) == (301, "https://localhost/only-once")
    assert fetch(https_conn, "/only-once", "localhost")[0] == 404
    https_conn.close()


def test_the_acme_challenge_is_served_over_plain_http(make_daemon, tmp_path, ca) -> None:
    daemon = redirecting(make_daemon, tmp_path, ca)
    status, headers, body = fetch(plain(daemon), f"/.well-known/acme-challenge/{TOKEN}",
                                  "example.com")
    assert (status, body) == (200, b"proof\n")
    assert "location" not in headers
    assert fetch(plain(daemon), "/.well-known/acme-challenge/missing", "example.com")[0] == 404


def test_curl_follows_the_one_hop(make_daemon, tmp_path, ca) -> None:
    curl = need_tool("curl")
    daemon = redirecting(make_daemon, tmp_path, ca)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    result = subprocess.run(
        [curl, "-sS", "-L", "--max-redirs", "3", "--cacert", str(tmp_path / "ca.pem"),
         "--connect-to", f"localhost:443:127.0.0.1:{daemon.port}",
         "-w", "\n%{num_redirects} %{http_code} %{scheme}",
         f"http://localhost:{plain_port(daemon)}/page.html"],
        capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout == "page of www\n\n1 200 HTTPS"


def test_scheme_scoped_routes_inside_servers(make_daemon, tmp_path, ca) -> None:
    pair = support.write_pair(ca.issue_cert("example.com", "other.test"), tmp_path, "site")
    daemon = make_daemon({
        "listen": [{"address": "127.0.0.1:0", "tls": True}, "127.0.0.1:0"],
        "tls": {"certificates": [pair]},
        "servers": [
            {"names": ["example.com"], "routes": [
                {"prefix": "/.well-known/acme-challenge/",
                 "static": {"root": challenges(www(tmp_path))}},
                {"prefix": "/", "redirect": REDIRECT, "scheme": "http"},
                {"prefix": "/", "static": {"root": www(tmp_path, "example")}},
            ]},
            {"names": ["other.test"], "default": True, "routes": [
                {"prefix": "/admin/", "redirect": REDIRECT, "scheme": "http"},
                {"prefix": "/admin/", "static": {"root": www(tmp_path, "admin")},
                 "scheme": "https"},
                {"prefix": "/", "static": {"root": www(tmp_path, "other")}},
            ]},
        ],
    })
    http_conn = plain(daemon)
    status, headers, _ = fetch(http_conn, "/x?y", "example.com")
    assert (status, headers["location"]) == (301, "https://example.com/x?y")
    assert fetch(http_conn, f"/.well-known/acme-challenge/{TOKEN}", "example.com")[2] == b"proof\n"
    assert fetch(http_conn, "/", "other.test")[2] == b"secure other\n"  # no redirect there
    status, headers, _ = fetch(http_conn, "/admin/page.html", "other.test")
    assert (status, headers["location"]) == (301, "https://other.test/admin/page.html")
    conn = secure(daemon, ca, "example.com")
    assert fetch(conn, "/x?y", "example.com")[0] == 404  # served by the static route, no loop
    assert fetch(conn, "/", "example.com")[2] == b"secure example\n"
    conn.close()
    conn = secure(daemon, ca, "other.test")
    assert fetch(conn, "/admin/page.html", "other.test")[2] == b"page of admin\n"
    assert fetch(conn, "/", "other.test")[2] == b"secure other\n"
    conn.close()


def test_check_refuses_scheme_routes_no_listener_can_reach(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "site.yaml").write_text(
        "listen: ['127.0.0.1:0']\n"
        "routes:\n"
        "  - {prefix: /, redirect: {to: 'https://{host}{uri}'}, scheme: http}\n"
        "  - {prefix: /, static: {root: www}, scheme: https}\n"
        "  - {prefix: /x/, static: {root: www}}\n"
        "  - {prefix: /, static: {root: www}, scheme: http}\n"
    )
    result = run_forkd("-c", "site.yaml", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "site.yaml:4:46: routes[1].scheme: https can never match: no listener has tls: true",
        "site.yaml:5:5: routes[2]: unreachable: routes[0] and routes[1] (prefix /) match first",
        "site.yaml:6:5: routes[3]: unreachable: routes[0] (prefix /) matches first",
    ]
