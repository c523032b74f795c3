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
from collections.abc import Callable
from pathlib import Path

import trustme

from tests.support.daemon import ROOT, Daemon
from tests.support.https import client_context, serial_of, served_serial, write_pair
from tests.support.keepalive_load import KeepAliveLoad

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


def https_load(daemon: Daemon, ca: trustme.CA, threads: int) -> KeepAliveLoad:
    """Keep-alive HTTPS GETs of "/" from `threads` clients; `connections` counts the handshakes."""
    context = client_context(ca)
    return KeepAliveLoad(
        lambda: http.client.HTTPSConnection(daemon.host, daemon.port, context=context, timeout=10),
        threads, "/", b"secure hello", join_timeout=15,
    )


def test_twenty_renewals_under_keep_alive_https_load_fail_nothing(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    ca = trustme.CA()
    daemon, serial = start(make_daemon, tmp_path, ca)
    config = str(daemon.config_path)
    assert served_serial(daemon.host, daemon.port, ca) == serial
    with https_load(daemon, ca, threads=4) as load:
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

