"""HTTPS end to end: the real daemon with a TLS listener beside a plain one, real TLS clients."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from tests.support import https as support
from tests.support.daemon import ROOT, Daemon, poll
from tests.support.https import client_context

SCRIPTS = str(ROOT / "tests" / "cgi")
BIG = bytes(range(256)) * 20_000  # 5 MB: more than one sendfile chunk over TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, directory: Path, *names: str) -> dict[str, str]:
    return support.write_pair(ca.issue_cert(*names), directory, names[0])


def https_site(make_daemon, tmp_path: Path, ca: trustme.CA, workers: int = 1,
               **extra: object) -> Daemon:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("secure hello")
    (www / "big.bin").write_bytes(BIG)
    tls: dict[str, object] = {"certificates": [write_pair(ca, tmp_path, "localhost", "127.0.0.1")],
                              "handshake_timeout": 1}
    tls.update(extra.pop("tls", {}))  # type: ignore[arg-type]
    return make_daemon({
        "workers": workers,
        "listen": [{"address": "127.0.0.1:0", "tls": True}, "127.0.0.1:0"],
        "tls": tls,
        "hsts": "max-age=63072000",
        "routes": [
            {"prefix": "/cgi/", "cgi": {"root": SCRIPTS}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
        **extra,
    })


def plain_port(daemon: Daemon) -> int:
    return int(daemon.addresses[1].rsplit(":", 1)[1])


def https(daemon: Daemon, ca: trustme.CA, **kwargs: object) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", daemon.port, context=client_context(ca),
                                       timeout=10, **kwargs)  # type: ignore[arg-type]


def fetch(conn: http.client.HTTPConnection, path: str,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_static_files_ranges_and_keep_alive_over_https(make_daemon, tmp_path, ca) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    conn = https(daemon, ca)
    status, headers, body = fetch(conn, "/")
    assert (status, body) == (200, b"secure hello")
    assert headers["strict-transport-security"] == "max-age=63072000"
    assert fetch(conn, "/big.bin")[2] == BIG  # file ranges are read and encrypted, no sendfile
    status, headers, body = fetch(conn, "/big.bin", {"Range": "bytes=1000-1999"})
    assert (status, body) == (206, BIG[1000:2000])
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    assert conn.sock.selected_alpn_protocol() in (None, "http/1.1")  # type: ignore[union-attr]
    conn.close()
    plain = http.client.HTTPConnection("127.0.0.1", plain_port(daemon), timeout=10)
    status, headers, _ = fetch(plain, "/")
    assert status == 200 and "strict-transport-security" not in headers  # HTTPS answers only
    plain.close()


def test_cgi_sees_the_tls_variables(make_daemon, tmp_path, ca) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    conn = https(daemon, ca)
    status, _, body = fetch(conn, "/cgi/printenv.sh")
    env = dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)
    assert status == 200
    assert env["HTTPS"] == "on" and env["REQUEST_SCHEME"] == "https"
    assert env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3") and env["SSL_CIPHER"]
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    plain = http.client.HTTPConnection("127.0.0.1", plain_port(daemon), timeout=10)
    env = fetch(plain, "/cgi/printenv.sh")[2].decode()
    assert "HTTPS=" not in env and "REQUEST_SCHEME=http\n" in env


def test_client_certificates_required(make_daemon, tmp_path, ca) -> None:
    clients = trustme.CA()
    (tmp_path / "clients.pem").write_bytes(clients.cert_pem.bytes())
    daemon = https_site(make_daemon, tmp_path, ca, tls={
        "client_certificates": "required", "client_ca": str(tmp_path / "clients.pem")})
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        fetch(https(daemon, ca), "/")  # TLS 1.3 reports the refusal at the first read
    context = client_context(ca)
    clients.issue_cert("alice@example.com", common_name="alice").configure_cert(context)
    conn = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=context, timeout=10)
    env = fetch(conn, "/cgi/printenv.sh")[2].decode()
    assert "SSL_CLIENT_VERIFY=SUCCESS" in env and "SSL_CLIENT_S_DN=CN=alice" in env


def test_plain_http_on_the_tls_port_gets_a_short_400(make_daemon, tmp_path, ca) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    answer = daemon.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"HTTPS" in answer
    started = time.monotonic()
    try:
        assert daemon.raw(b"\x00\x01\x02 not tls at all\r\n\r\n") == b""
    except ConnectionResetError:
        pass  # closed with the garbage unread: a reset, at once
    assert time.monotonic() - started < 2  # closed, not hung
    assert fetch(https(daemon, ca), "/")[0] == 200


def test_stalled_handshakes_hold_nothing_but_a_buffer(make_daemon, tmp_path, ca) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    stalled = []
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", daemon.port))
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        stalled.append(sock)
    times = []
    conn = None
    for _ in range(50):
        started = time.monotonic()
        conn = https(daemon, ca)
        assert fetch(conn, "/")[0] == 200
        conn.close()
        times.append(time.monotonic() - started)
    assert sorted(times)[-2] < 0.2, times
    # tls.handshake_timeout (1 s here) closes them, logged once for the class, not per connection
    poll(lambda: all(_closed(sock) for sock in stalled), 5, "stalled handshakes closed")
    assert daemon.log().count("TLS handshake failed (timeout)") == 1
    for sock in stalled:
        sock.close()


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_sessions_resume_across_workers(make_daemon, tmp_path, ca) -> None:
    """The context is built before fork: a ticket made by one worker is accepted by the other."""
    daemon = https_site(make_daemon, tmp_path, ca, workers=2)
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # sessions exist right after the handshake
    first = context.wrap_socket(socket.create_connection(("127.0.0.1", daemon.port)),
                                server_hostname="localhost")
    session = first.session
    first.close()
    reused = []
    for _ in range(12):
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", daemon.port)),
                                   server_hostname="localhost", session=session)
        reused.append(sock.session_reused)
        sock.close()
    assert all(reused), reused
