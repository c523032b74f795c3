"""Clients behind proxies against the real daemon: trusted_proxies, Forwarded / X-Forwarded-For,
PROXY protocol v1 and v2 listeners (plain and TLS), and what untrusted peers cannot do."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from forkd.proxy_protocol import v2_header
from tests.support.daemon import ROOT, Daemon, poll

SCRIPTS = str(ROOT / "tests" / "cgi")
ENV_REQUEST = b"GET /cgi/env.py HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


def site(make_daemon, tmp_path: Path, trusted: list[str], **extra: object) -> Daemon:
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("hello")
    return make_daemon({
        "workers": 1,
        "trusted_proxies": trusted,
        "routes": [
            {"prefix": "/server-status", "status": {}},
            {"prefix": "/cgi/", "cgi": {"root": SCRIPTS}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
        **extra,
    })


def port(daemon: Daemon, index: int) -> int:
    return int(daemon.addresses[index].rsplit(":", 1)[1])


def exchange(port_: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send data, read until the server closes; a reset counts as a close."""
    with socket.create_connection(("127.0.0.1", port_), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def cgi_env(reply: bytes) -> dict[str, str]:
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])["env"]


def last_client(daemon: Daemon) -> str:
    poll(lambda: daemon.access_log.exists() and daemon.access_log.read_text(), 5, "access log")
    return daemon.access_log.read_text().splitlines()[-1].split(" ", 1)[0]


def test_forwarded_headers_from_an_untrusted_peer_change_nothing(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, ["10.0.0.0/8"])
    reply = exchange(daemon.port, ENV_REQUEST + b"X-Forwarded-For: 6.6.6.6\r\n"
                     b"Forwarded: for=7.7.7.7\r\n\r\n")
    env = cgi_env(reply)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"  # passed on as a plain header
    poll(lambda: last_client(daemon) == "127.0.0.1", 5, "the access log names the peer")


def test_a_trusted_peer_names_the_client_per_request(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, ["127.0.0.1/32"])
    env = cgi_env(exchange(daemon.port, ENV_REQUEST
                           + b"X-Forwarded-For: 6.6.6.6, 203.0.113.5, 127.0.0.1\r\n\r\n"))
    assert env["REMOTE_ADDR"] == "203.0.113.5"  # the rightmost untrusted hop, not the forgery
    env = cgi_env(exchange(daemon.port, ENV_REQUEST
                           + b'Forwarded: for="[2001:db8::5]:4711"\r\n\r\n'))
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::5", "4711")
    # One kept-alive connection (a proxy reusing it for several clients): per request.
    conn = daemon.connection()
    conn.request("GET", "/", headers={"X-Forwarded-For": "198.51.100.7"})
    assert conn.getresponse().read() == b"hello"
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello"
    conn.close()
    poll(lambda: len(daemon.access_log.read_text().splitlines()) == 4, 5, "four lines")
    clients = [line.split(" ", 1)[0] for line in daemon.access_log.read_text().splitlines()]
    assert clients == ["203.0.113.5", "2001:db8::5", "198.51.100.7", "127.0.0.1"]


def proxy_site(make_daemon, tmp_path: Path, trusted: list[str], **extra: object) -> Daemon:
    return site(make_daemon, tmp_path, trusted, listen=[
        "127.0.0.1:0", {"address": "127.0.0.1:0", "proxy_protocol": True}], **extra)


def test_proxy_protocol_v1_and_v2_name_the_client(make_daemon, tmp_path) -> None:
    daemon = proxy_site(make_daemon, tmp_path, ["127.0.0.1/32"])
    proxied = port(daemon, 1)
    v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 56324 80\r\n"
    assert cgi_env(exchange(proxied, v1 + ENV_REQUEST + b"\r\n"))["REMOTE_ADDR"] == "203.0.113.9"
    env = cgi_env(exchange(proxied, v2_header(("2001:db8::7", 4444)) + ENV_REQUEST + b"\r\n"))
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::7", "4444")
    # The PROXY header wins over headers: they are the client's own.
    env = cgi_env(exchange(proxied, v1 + ENV_REQUEST + b"X-Forwarded-For: 6.6.6.6\r\n\r\n"))
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    # LOCAL (the proxy's own health check): the peer stands.
    env = cgi_env(exchange(proxied, v2_header(None) + ENV_REQUEST + b"\r\n"))
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    # A header trickled byte by byte, then the request.
    with socket.create_connection(("127.0.0.1", proxied), timeout=5) as sock:
        for byte in v1:
            sock.send(bytes([byte]))
            time.sleep(0.005)  # the client's own pace
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.makefile("rb").read().endswith(b"hello")
    poll(lambda: last_client(daemon) == "203.0.113.9", 5, "the access log names the client")


@pytest.mark.parametrize("opening", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header: never auto-detected
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",  # malformed
    b"\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x00",  # v2, unknown command
])
def test_a_bad_or_missing_header_closes_the_connection(make_daemon, tmp_path, opening) -> None:
    daemon = proxy_site(make_daemon, tmp_path, ["127.0.0.1/32"])
    assert exchange(port(daemon, 1), opening) == b""


def test_an_untrusted_peer_is_refused_on_a_proxy_listener(make_daemon, tmp_path) -> None:
    daemon = proxy_site(make_daemon, tmp_path, ["10.0.0.0/8"])
    v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 56324 80\r\n"
    started = time.monotonic()
    assert exchange(port(daemon, 1), v1 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert time.monotonic() - started < 2  # at once, not after a timeout
    # On a plain listener a PROXY line is just a bad request.
    assert exchange(daemon.port, v1 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 400")


def test_a_silent_connection_on_a_proxy_listener_times_out(make_daemon, tmp_path) -> None:
    daemon = proxy_site(make_daemon, tmp_path, ["127.0.0.1/32"], timeouts={"header": 1})
    started = time.monotonic()
    assert exchange(port(daemon, 1), b"PROXY TCP4 ", timeout=10) == b""
    assert 0.5 < time.monotonic() - started < 5


def test_proxy_protocol_before_a_tls_handshake(make_daemon, tmp_path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    daemon = site(make_daemon, tmp_path, ["127.0.0.1/32"], listen=[
        "127.0.0.1:0", {"address": "127.0.0.1:0", "tls": True, "proxy_protocol": True}],
        tls={"certificates": [{"cert": str(cert), "key": str(key)}]})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port(daemon, 1)), timeout=5) as raw:
        raw.sendall(v2_header(("192.0.2.44", 5000)))  # the header first, in the clear
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(ENV_REQUEST + b"\r\n")
            reply = tls.makefile("rb").read()
    env = cgi_env(reply)
    assert (env["REMOTE_ADDR"], env["HTTPS"]) == ("192.0.2.44", "on")
    code, _, body = daemon.get("/server-status?format=json")
    assert code == 200
    assert json.loads(body)["counters"]["tls_handshakes"]["ok"] == 1
    # Without the header, the TLS client is closed before any handshake.
    with (socket.create_connection(("127.0.0.1", port(daemon, 1)), timeout=5) as raw,
          pytest.raises((ssl.SSLError, OSError))):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
