"""Certificates and reloads: a renewed certificate goes live under load; a broken pair never does.

- Keep-alive HTTPS clients (http.client over TLS) send requests without pause while the
  certificate is renewed 20 times (a new leaf and key from the same CA, as certbot renews) and
  `forkd -s reload` runs after each renewal: not one request fails, and after each reload a new
  connection is served the new certificate. Retiring workers answer with `Connection: close`; the
  clients reconnect and meet the new generation.
- A missing, unreadable, mismatched or expired pair rejects the reload (exit 1, the file named) and
  the certificate in service stays in service. test_tls_master.py covers the mismatched, expired
  and missing pair by their messages; here a half-written key (what a renewal caught mid-write
  leaves) and a key path that is a directory, and what the clients are served afterwards.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

import trustme

from tests.support.daemon import ROOT, Daemon
from tests.support.https import client_context, serial_of, served_serial, write_pair

MakeDaemon = Callable[..., Daemon]
RENEWALS = 20


def forkd(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "forkd", *args], check=False,
                          capture_output=True, text=True, env=env, timeout=60)


def renew(ca: trustme.CA, directory: Path) -> int:
    """A new leaf and key for localhost from the same CA, in place; its serial number."""
    leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    write_pair(leaf, directory, "site")
    return serial_of(leaf)


def start(make_daemon: MakeDaemon, tmp_path: Path, ca: trustme.CA) -> tuple[Daemon, int]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("secure hello")
    serial = renew(ca, tmp_path)
    daemon = make_daemon({
        "workers": 2,
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificates": [{"cert": str(tmp_path / "site.pem"),
                                  "key": str(tmp_path / "site.key")}]},
        "routes": [{"prefix": "/", "static": {"root": str(tmp_path / "www")}}],
    })
    return daemon, serial


class HttpsLoad:
    """Client threads, each looping GETs over one keep-alive HTTPS connection; every failure kept."""

    def __init__(self, daemon: Daemon, ca: trustme.CA, threads: int) -> None:
        self.address = (daemon.host, daemon.port)
        self.context = client_context(ca)
        self.stop = threading.Event()
        self.ok = 0
        self.connections = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def connect(self) -> http.client.HTTPSConnection:
        with self.lock:
            self.connections += 1
        host, port = self.address
        return http.client.HTTPSConnection(host, port, context=self.context, timeout=10)

    def client(self) -> None:
        conn = self.connect()
        while not self.stop.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                status, closing = response.status, response.will_close
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
                conn = self.connect()
                continue
            with self.lock:
                if (status, body) == (200, b"secure hello"):
                    self.ok += 1
                else:
                    self.failures.append(f"status {status}: {body[:80]!r}")
            if closing:  # a retiring worker said Connection: close: reconnect
                conn.close()
                conn = self.connect()
        conn.close()


def test_twenty_renewals_under_keep_alive_https_load_fail_nothing(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    ca = trustme.CA()
    daemon, serial = start(make_daemon, tmp_path, ca)
    config = str(daemon.config_path)
    assert served_serial(daemon.host, daemon.port, ca) == serial
    with HttpsLoad(daemon, ca, threads=4) as load:
        for generation in range(2, RENEWALS + 2):
            serial = renew(ca, tmp_path)
            result = forkd("-c", config, "-s", "reload")
            assert result.returncode == 0, result.stderr
            assert f"generation {generation} is serving" in result.stdout
            # The new generation serves the new certificate from the moment -s reload returns.
            assert served_serial(daemon.host, daemon.port, ca) == serial
        served, connections = load.ok, load.connections
    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:10]}"
    assert served > RENEWALS * 10 and connections > RENEWALS  # the clients did reconnect
    print(f"{RENEWALS} renewals and reloads: {served} HTTPS requests on {connections} "
          "connections, 0 failed")


def test_a_broken_pair_is_rejected_and_the_old_certificate_keeps_serving(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    ca = trustme.CA()
    daemon, serial = start(make_daemon, tmp_path, ca)
    config, key = str(daemon.config_path), tmp_path / "site.key"
    good_key = key.read_bytes()

    def rejected(*words: str) -> None:
        result = forkd("-c", config, "-s", "reload")
        assert result.returncode == 1, result.stdout
        for word in words:
            assert word in result.stderr, result.stderr
        assert served_serial(daemon.host, daemon.port, ca) == serial  # still the old certificate

    # A key file half written (a renewal caught in the middle): unreadable as a key.
    key.write_bytes(good_key[: len(good_key) // 2])
    rejected("tls.certificates[0].key: not a PEM private key", str(key))
    # A directory where the key should be.
    key.unlink()
    key.mkdir()
    rejected(f"tls.certificates[0].key: is a directory: {key}")
    key.rmdir()
    # A key without permission to read it (root reads everything: not testable as root).
    if os.geteuid() != 0:
        key.write_bytes(good_key)
        key.chmod(0)
        rejected(f"tls.certificates[0].key: cannot read {key}: Permission denied")
    # The certificate of another name's key: a mismatch, both files named.
    other = ca.issue_cert("other.example", key_type=trustme.KeyType.ECDSA)
    write_pair(other, tmp_path, "other")
    os.replace(tmp_path / "other.key", key)
    rejected("tls.certificates[0].key: does not match", str(key), str(tmp_path / "site.pem"))

    key.write_bytes(good_key)
    assert forkd("-c", config, "-s", "reload").returncode == 0
    assert served_serial(daemon.host, daemon.port, ca) == serial
    assert "ready: generation 2" in daemon.log()

