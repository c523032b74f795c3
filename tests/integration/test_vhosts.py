"""Virtual hosts (`servers`) against the real daemon: Host matching, CGI names, HTTPS and SNI."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.support.daemon import ROOT, Daemon
from tests.support.tools import need_tool

SCRIPTS = str(ROOT / "tests" / "cgi")


def site(tmp_path: Path, name: str) -> str:
    www = tmp_path / name
    www.mkdir()
    (www / "index.html").write_text(f"this is {name}\n")
    return str(www)


def three_sites(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "servers": [
            {"names": ["example.com", "www.example.com"],
             "routes": [{"prefix": "/cgi/", "cgi": {"root": SCRIPTS}},
                        {"prefix": "/", "static": {"root": site(tmp_path, "example")}}]},
            {"names": ["*.example.org"],
             "routes": [{"prefix": "/", "static": {"root": site(tmp_path, "wild")}}]},
            {"names": ["*.deep.example.org", "other.test"], "default": True,
             "routes": [{"prefix": "/cgi/", "cgi": {"root": SCRIPTS}},
                        {"prefix": "/", "static": {"root": site(tmp_path, "other")}}]},
        ],
        **extra,
    }


def body_for(daemon: Daemon, host: str, path: str = "/") -> bytes:
    reply = daemon.raw(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_host_header_picks_the_server(make_daemon, tmp_path) -> None:
    daemon = make_daemon(three_sites(tmp_path))
    assert body_for(daemon, "example.com") == b"this is example\n"
    assert body_for(daemon, "www.example.com") == b"this is example\n"
    assert body_for(daemon, "EXAMPLE.COM.") == b"this is example\n"  # case, one trailing dot
    assert body_for(daemon, "example.com:8080") == b"this is example\n"  # the port is not a name
    assert body_for(daemon, "a.example.org") == b"this is wild\n"
    assert body_for(daemon, "a.b.example.org") == b"this is wild\n"
    assert body_for(daemon, "x.deep.example.org") == b"this is other\n"  # longest wildcard wins
    assert body_for(daemon, "example.org") == b"this is other\n"  # a wildcard needs a label
    assert body_for(daemon, "unknown.test") == b"this is other\n"  # the default server
    assert body_for(daemon, "127.0.0.1") == b"this is other\n"


def test_first_server_is_the_default_without_a_default_key(make_daemon, tmp_path) -> None:
    config = three_sites(tmp_path)
    del config["servers"][2]["default"]  # type: ignore[index]
    daemon = make_daemon(config)
    assert body_for(daemon, "unknown.test") == b"this is example\n"


def test_absolute_form_authority_wins_over_host(make_daemon, tmp_path) -> None:
    daemon = make_daemon(three_sites(tmp_path))
    reply = daemon.raw(b"GET http://a.example.org/ HTTP/1.1\r\nHost: example.com\r\n"
                       b"Connection: close\r\n\r\n")
    assert reply.endswith(b"this is wild\n")


def test_curl_resolve_reaches_each_site(make_daemon, tmp_path) -> None:
    curl = need_tool("curl")
    daemon = make_daemon(three_sites(tmp_path))
    for name, expected in (("example.com", "example"), ("a.example.org", "wild")):
        out = subprocess.run(
            [curl, "-sS", "--resolve", f"{name}:{daemon.port}:127.0.0.1",
             f"http://{name}:{daemon.port}/"],
            capture_output=True, text=True, timeout=20, check=False)
        assert out.stdout == f"this is {expected}\n", out.stderr


def test_cgi_server_name_and_document_root_come_from_the_server(make_daemon, tmp_path) -> None:
    daemon = make_daemon(three_sites(tmp_path))
    env = json.loads(body_for(daemon, "WWW.example.com:80", "/cgi/env.py"))["env"]
    assert env["SERVER_NAME"] == "www.example.com"
    assert env["DOCUMENT_ROOT"] == str(tmp_path / "example")
    # A Host the default server merely caught is not a name to hand to scripts.
    env = json.loads(body_for(daemon, "evil.test", "/cgi/env.py"))["env"]
    assert env["SERVER_NAME"] == "other.test"
    assert env["DOCUMENT_ROOT"] == str(tmp_path / "other")
    env = json.loads(body_for(daemon, "x.deep.example.org", "/cgi/env.py"))["env"]
    assert env["SERVER_NAME"] == "x.deep.example.org"


def test_routes_of_one_server_are_not_reachable_through_another(make_daemon, tmp_path) -> None:
    daemon = make_daemon(three_sites(tmp_path))
    reply = daemon.raw(b"GET /cgi/env.py HTTP/1.1\r\nHost: a.example.org\r\n"
                       b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404")


def test_check_names_the_problems_of_servers(tmp_path) -> None:
    www = site(tmp_path, "www")
    routes = f"[{{prefix: /, static: {{root: {www}}}}}]"
    (tmp_path / "bad.yaml").write_text(
        "servers:\n"
        f"  - {{names: [a.test, 'x.*.test'], default: true, routes: {routes}}}\n"
        f"  - {{names: [A.test.], default: true, routes: {routes}}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "forkd", "-c", str(tmp_path / "bad.yaml"), "--check"],
        capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines() or out.stdout.strip().splitlines()
    text = "\n".join(lines)
    assert "servers[0].names[1]: a wildcard is allowed only as the whole first label" in text
    assert "servers[1].names[0]: a.test is already listed as servers[0].names[0]" in text
    assert "servers[1].default: servers[0] is already the default server" in text
    assert len(lines) == 3, text


# -- HTTPS: certificates per server, SNI, 421, hsts per server ------------------------------------

@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pair(ca: trustme.CA, directory: Path, *names: str) -> dict[str, str]:
    leaf = ca.issue_cert(*names)
    cert, key = directory / f"{names[0]}.pem", directory / f"{names[0]}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return {"cert": str(cert), "key": str(key)}


def https_sites(make_daemon, tmp_path: Path, ca: trustme.CA) -> Daemon:
    return make_daemon({
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "hsts": "max-age=1",
        "servers": [
            {"names": ["one.test"], "tls": {"certificates": [pair(ca, tmp_path, "one.test")]},
             "hsts": "max-age=63072000; includeSubDomains",
             "routes": [{"prefix": "/", "static": {"root": site(tmp_path, "one")}}]},
            {"names": ["two.test"], "tls": {"certificates": [pair(ca, tmp_path, "two.test")]},
             "routes": [{"prefix": "/", "static": {"root": site(tmp_path, "two")}}]},
        ],
    })


def tls_get(daemon: Daemon, ca: trustme.CA, sni: str, host: str) -> tuple[int, dict[str, str],
                                                                           bytes, str]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    with (socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw,
          context.wrap_socket(raw, server_hostname=sni) as sock):
        peer = sock.getpeercert()
        names = [value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"]
        conn = http.client.HTTPConnection("unused")
        conn.sock = sock
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read(), names[0]


def test_https_certificate_by_sni_and_421_for_another_servers_host(make_daemon, tmp_path,
                                                                      ca) -> None:
    daemon = https_sites(make_daemon, tmp_path, ca)
    status, headers, body, cert = tls_get(daemon, ca, "one.test", "one.test")
    assert (status, body, cert) == (200, b"this is one\n", "one.test")
    assert headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    status, headers, body, cert = tls_get(daemon, ca, "two.test", "TWO.test:443")
    assert (status, body, cert) == (200, b"this is two\n", "two.test")
    assert headers["strict-transport-security"] == "max-age=1"  # the top level's
    # The connection was set up for two.test (its certificate): one.test's site is not there.
    status, headers, body, cert = tls_get(daemon, ca, "two.test", "one.test")
    assert (status, cert) == (421, "two.test")


def test_https_without_sni_serves_by_host(make_daemon, tmp_path, ca) -> None:
    daemon = https_sites(make_daemon, tmp_path, ca)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=context, timeout=10)
    conn.request("GET", "/", headers={"Host": "two.test"})  # an IP address: no SNI is sent
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"this is two\n")


def test_the_demo_serves_two_sites(tmp_path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("forkd.pid*", "*.sqlite3"))
    text = (conf / "site.yaml").read_text().replace('"127.0.0.1:8080"', '"127.0.0.1:0"')
    daemon = Daemon(conf, text.replace("pidfile: forkd.pid", "pidfile: null"))  # conf/forkd.yaml
    try:
        daemon.start()
        assert b"forkd" in body_for(daemon, "localhost")
        assert b"app.localhost" in body_for(daemon, "app.localhost")
        assert b"app.localhost" in body_for(daemon, "app.localhost", "/users/42")  # the SPA
        staff = daemon.raw(b"GET /staff/ HTTP/1.1\r\nHost: app.localhost\r\nConnection: close"
                           b"\r\nAuthorization: Basic ZGVtbzpkZW1v\r\n\r\n")  # demo:demo
        assert staff.startswith(b"HTTP/1.1 200") and b"Hello, staff" in staff
    finally:
        daemon.stop()


def test_a_reload_reads_the_servers_certificates_again(make_daemon, tmp_path, ca) -> None:
    daemon = https_sites(make_daemon, tmp_path, ca)

    def serial() -> int:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        with (socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as raw,
              context.wrap_socket(raw, server_hostname="two.test") as sock):
            return int(sock.getpeercert()["serialNumber"], 16)

    before = serial()
    pair(ca, tmp_path, "two.test")  # a renewed certificate, same files
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("ready: generation 2")
    daemon.wait_for_log("(generation 1) exited")
    assert serial() != before
