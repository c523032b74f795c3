"""Failed TLS handshakes: counted per class, each class logged once at info, never at error.

A public HTTPS port meets scanners, old clients and misconfigured ones all day; a log line per
attempt would drown the log (and let anyone write to it at will). One worker (so "once" means
once) meets 100 attempts of each class: garbage bytes, a plain-HTTP request, a TLS 1.0 client
under the intermediate profile, and a client certificate from a CA the server does not trust.
Each class gets one info line; when the worker exits, one info line gives the counts.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import trustme

from tests.support.daemon import Daemon
from tests.support.https import client_context, write_pair

MakeDaemon = Callable[..., Daemon]
ATTEMPTS = 100


def attempt(daemon: Daemon, first: bytes = b"", context: ssl.SSLContext | None = None) -> bool:
    """One connection that sends `first` raw, or handshakes with `context`; True if it failed."""
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as raw:
        if context is None:
            raw.sendall(first)
            try:
                while raw.recv(65536):  # until the server closes (after its 400, for HTTP)
                    pass
            except ConnectionResetError:
                pass
            return True
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                return not sock.recv(65536)  # TLS 1.3: the refusal comes after our Finished
        except (ssl.SSLError, OSError):
            return True


def test_a_hundred_failures_of_each_class_give_one_info_line_each(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    ca, clients, strangers = trustme.CA(), trustme.CA(), trustme.CA()
    clients.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    (tmp_path / "www").mkdir()
    daemon = make_daemon({
        "workers": 1,
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificates": [write_pair(ca.issue_cert("localhost"), tmp_path, "site")],
                "client_certificates": "required", "client_ca": str(tmp_path / "clients.pem")},
        "routes": [{"prefix": "/", "static": {"root": str(tmp_path / "www")}}],
    })

    old_client = client_context(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0: an old client on purpose
        old_client.minimum_version = old_client.maximum_version = ssl.TLSVersion.TLSv1
    old_client.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client may: the server must refuse
    stranger = client_context(ca)
    strangers.issue_cert("mallory@example.com").configure_cert(stranger)

    cases = {
        "not tls": lambda: attempt(daemon, b"\x00\x01\x02 garbage, not a record\r\n\r\n"),
        "http request": lambda: attempt(daemon, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        "unsupported protocol": lambda: attempt(daemon, context=old_client),
        "client certificate rejected": lambda: attempt(daemon, context=stranger),
    }
    for kind, make_attempt in cases.items():
        assert all(make_attempt() for _ in range(ATTEMPTS)), kind

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    log = daemon.log()
    lines = [line for line in log.splitlines() if "TLS handshake failed" in line]
    for kind in cases:
        logged = [line for line in lines if f"TLS handshake failed ({kind}" in line]
        assert len(logged) == 1, f"{kind}: {logged}\n{log}"
        assert "[info]" in logged[0]
    assert len(lines) == len(cases), lines  # no other class: every attempt was classified
    assert "[error]" not in log and "[warning]" not in log, log
    [summary] = re.findall(r"\[info\] \d+: TLS handshake failures in this worker: (.*)", log)
    assert sorted(summary.split(", ")) == sorted(f"{kind} {ATTEMPTS}" for kind in cases)
