"""What works over plain HTTP works over HTTPS: the same daemon features, through TLS.

test_https.py has static files, ranges, 5 MB, CGI variables and client certificates. Here:

- git's smart HTTP over https (git http-backend as CGI, the trustme CA in GIT_SSL_CAINFO): push,
  clone, fetch, and a 3 MiB push that git sends chunked.
- HEAD and conditional requests (If-None-Match, If-Modified-Since, If-Range).
- A CGI script's output streamed through TLS as it comes (the first part before the script ends).
- Ends of connections: a close-delimited HTTP/1.0 answer, a 400 before any request, and a response
  with Connection: close all end with the server's close_notify, so a TLS client can tell a
  complete answer from a truncated one (Python's ssl raises SSLEOFError without it).
- Slow readers of a big file over TLS are dropped by timeouts.send and pin nothing meanwhile.
- Graceful TERM: HTTPS requests in flight are answered in full, and the daemon exits 0.
- The README's certbot set-up: ACME challenges over plain HTTP beside HTTPS.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

import pytest
import trustme

from tests.support.daemon import ROOT, Daemon, poll
from tests.support.https import client_context, https_connection, write_pair
from tests.support.tools import need_tool

MakeDaemon = Callable[..., Daemon]
SCRIPTS = ROOT / "tests" / "cgi"
BIG = 16 * 1024 * 1024
FAST = 1.0  # seconds a fast client may wait for one small response while slow readers wait


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def https_site(make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA,
               **settings: object) -> Daemon:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("secure hello")
    with open(www / "big.bin", "wb") as big:
        big.truncate(BIG)
    pair = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "site")
    return make_daemon({
        "workers": 1,
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificates": [pair]},
        "routes": [
            {"prefix": "/cgi/", "cgi": {"root": str(SCRIPTS)}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
        **settings,
    })


def tls_socket(daemon: Daemon, ca: trustme.CA, rcvbuf: int = 0) -> ssl.SSLSocket:
    raw = socket.create_connection((daemon.host, daemon.port), timeout=10)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    # suppress_ragged_eofs=False: a stream that ends without close_notify raises SSLEOFError.
    return client_context(ca).wrap_socket(raw, server_hostname="localhost",
                                          suppress_ragged_eofs=False)


def read_to_close_notify(sock: ssl.SSLSocket) -> bytes:
    """Everything until the server's close_notify; SSLEOFError if the TCP stream ends first."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- git --------------------------------------------------------------------------------------


def git(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def test_git_push_clone_and_fetch_over_https(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    need_tool("git")
    repos = tmp_path / "repos"
    repos.mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_SSL_CAINFO": str(tmp_path / "ca.pem"),
    }
    git(env, "init", "--bare", "--initial-branch=main", str(repos / "project.git"))
    git(env, "-C", str(repos / "project.git"), "config", "http.receivepack", "true")
    pair = write_pair(ca.issue_cert("localhost"), tmp_path, "site")
    daemon = make_daemon({
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificates": [pair]},
        "routes": [{"prefix": "/git/", "cgi": {
            "root": str(SCRIPTS), "timeout": 60,
            "env": {"GIT_PROJECT_ROOT": str(repos), "GIT_HTTP_EXPORT_ALL": "1"},
        }}],
    })
    url = f"https://localhost:{daemon.port}/git/git.sh/project.git"

    work = tmp_path / "work"
    git(env, "init", "--initial-branch=main", str(work))
    (work / "README").write_text("hello over HTTPS\n")
    git(env, "add", "README", cwd=work)
    git(env, "commit", "-m", "first", cwd=work)
    git(env, "push", url, "main", cwd=work)

    clone = tmp_path / "clone"
    git(env, "clone", url, str(clone))
    assert (clone / "README").read_text() == "hello over HTTPS\n"

    # More than http.postBuffer (1 MiB) of incompressible data: a chunked request body over TLS.
    git(env, "config", "core.compression", "0", cwd=work)
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    git(env, "add", "big.bin", cwd=work)
    git(env, "commit", "-m", "big", cwd=work)
    trace = tmp_path / "curl-trace"
    git({**env, "GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"},
        "push", url, "main", cwd=work)
    assert "Transfer-Encoding: chunked" in trace.read_text(errors="replace")
    git(env, "fetch", "origin", cwd=clone)
    assert git(env, "rev-parse", "origin/main", cwd=clone) == git(env, "rev-parse", "HEAD", cwd=work)


# -- HEAD, conditional requests, streaming ----------------------------------------------------


def test_head_and_conditional_requests_over_https(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    conn = https_connection(daemon.host, daemon.port, ca)
    conn.request("HEAD", "/big.bin")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    assert head.getheader("Content-Length") == str(BIG)
    etag, modified = head.getheader("ETag"), head.getheader("Last-Modified")
    assert etag and modified

    def get(headers: dict[str, str]) -> tuple[int, bytes]:
        conn.request("GET", "/big.bin", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    assert get({"If-None-Match": etag}) == (304, b"")
    assert get({"If-Modified-Since": modified}) == (304, b"")
    assert get({"If-Modified-Since": formatdate(0, usegmt=True)})[0] == 200  # changed since 1970
    assert get({"Range": "bytes=0-9", "If-Range": etag}) == (206, b"\0" * 10)
    status, body = get({"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert status == 200 and len(body) == BIG  # a stale validator: the whole file
    conn.close()


def test_cgi_output_streams_through_tls(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    flag = tmp_path / "go"
    sock = tls_socket(daemon, ca)
    sock.sendall(f"GET /cgi/stream.sh?{flag} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while b"first\n" not in received:  # the script waits for the flag: this part came alone
        received += sock.recv(65536)
    assert b"second" not in received and b"Transfer-Encoding: chunked" in received
    flag.touch()
    while not received.endswith(b"0\r\n\r\n"):
        received += sock.recv(65536)
    assert b"second\n" in received
    sock.close()


# -- how connections end ----------------------------------------------------------------------


def test_a_close_delimited_http_10_answer_ends_with_close_notify(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    flag = tmp_path / "go"
    sock = tls_socket(daemon, ca)
    sock.sendall(f"GET /cgi/stream.sh?{flag} HTTP/1.0\r\n\r\n".encode())
    answer = b""
    while b"first\n" not in answer:  # the head went out before the script's end: no length
        answer += sock.recv(65536)
    flag.touch()
    answer += read_to_close_notify(sock)  # SSLEOFError here: a truncation nobody could tell
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length" not in head.lower() and b"chunked" not in head.lower()
    assert body == b"first\nsecond\n"  # delimited by the close alone
    sock.close()


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",  # the client asks
    # The server shuts its side and lingers (the client may still be sending):
    b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",  # 400, no request parsed
    b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999\r\n\r\nabc",  # 413
    b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
], ids=["connection-close", "bad-request", "too-large", "pipelined-after-close"])
def test_answers_that_close_end_with_close_notify(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA, request_bytes: bytes
) -> None:
    daemon = https_site(make_daemon, tmp_path, ca)
    sock = tls_socket(daemon, ca)
    sock.sendall(request_bytes)
    answer = read_to_close_notify(sock)
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400", b"HTTP/1.1 413")), answer[:100]
    sock.close()


# -- slow readers, graceful stop --------------------------------------------------------------


def test_slow_readers_of_a_big_file_over_tls_are_dropped_and_pin_nothing(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    daemon = https_site(make_daemon, tmp_path, ca, timeouts={"send": 1})
    slow = [tls_socket(daemon, ca, rcvbuf=4096) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
    conn = https_connection(daemon.host, daemon.port, ca)
    worst = 0.0
    for _ in range(10):
        started = time.monotonic()
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"secure hello")
        worst = max(worst, time.monotonic() - started)
    conn.close()
    assert worst < FAST, f"a small request took {worst:.2f}s beside 20 slow TLS readers"
    time.sleep(1.5)  # the clients under test: they read nothing for longer than timeouts.send
    started = time.monotonic()
    for sock in slow:
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, ssl.SSLError):
            pass  # the expected end: the unread rest is dropped at once
        assert received < BIG
        sock.close()
    assert time.monotonic() - started < 5


def test_term_answers_https_requests_in_flight(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    daemon = https_site(make_daemon, tmp_path, ca, timeouts={"graceful": 10})
    flag = tmp_path / "go"
    answers: list[tuple[int, bytes]] = []
    started = threading.Barrier(4)

    def client() -> None:
        conn = https_connection(daemon.host, daemon.port, ca)
        conn.request("GET", f"/cgi/stream.sh?{flag}")
        response = conn.getresponse()  # the head and the first part: the script now waits
        started.wait(10)
        answers.append((response.status, response.read()))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    started.wait(10)
    [worker] = daemon.worker_pids()
    daemon.signal(signal.SIGTERM)
    poll(lambda: not daemon.listening(worker), 5, "the worker stopped accepting")
    flag.touch()
    for thread in threads:
        thread.join(10)
    assert answers == [(200, b"first\nsecond\n")] * 3
    assert daemon.wait(15) == 0
    with pytest.raises(OSError):
        http.client.HTTPSConnection(daemon.host, daemon.port, timeout=2,
                                    context=client_context(ca)).request("GET", "/")


# -- the README's certbot set-up ----------------------------------------------------------------


def test_acme_challenges_are_served_over_plain_http_beside_https(
    make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA
) -> None:
    """README, HTTPS: certbot --webroot writes /srv/www/.well-known/acme-challenge/TOKEN."""
    www = tmp_path / "www"
    challenges = www / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "TOKEN").write_text("TOKEN.thumbprint")
    (www / ".secret").write_text("dotfile")
    pair = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "site")
    daemon = make_daemon({
        "listen": ["127.0.0.1:0", {"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificates": [pair]},
        "hsts": "max-age=63072000",
        "routes": [
            {"prefix": "/.well-known/acme-challenge/", "static": {"root": str(challenges)}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
    })
    status, headers, body = daemon.get("/.well-known/acme-challenge/TOKEN")  # the plain listener
    assert (status, body) == (200, b"TOKEN.thumbprint")
    assert "strict-transport-security" not in headers
    assert daemon.get("/.secret")[0] == 404  # other dotfiles stay hidden
    tls_port = int(daemon.addresses[1].rsplit(":", 1)[1])
    conn = https_connection(daemon.host, tls_port, ca)
    conn.request("GET", "/.well-known/acme-challenge/TOKEN")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"TOKEN.thumbprint")
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
    conn.close()
