"""The TLS profiles as an outside scanner sees them: sslscan against the real daemon.

The daemon serves an RSA and an ECDSA certificate for the same name, so every cipher suite a
profile allows can be negotiated (ECDHE-RSA and DHE-RSA suites need the RSA certificate, ECDHE-ECDSA
suites the ECDSA one). sslscan (`--no-colour`) lists the protocols it could negotiate and every
suite the server accepted, one handshake per suite; the tests parse that text.

- intermediate (the default): exactly TLS 1.2 and 1.3; TLS 1.2 offers exactly Mozilla's nine AEAD
  suites with forward secrecy, TLS 1.3 OpenSSL's three; nothing under 128 bits, no CBC, RC4, 3DES,
  NULL, export or anonymous suite; client-initiated renegotiation refused.
- modern: TLS 1.3 only.
- old: TLS 1.0 to 1.3. OpenSSL 3 refuses TLS 1.0/1.1 (and their SHA-1 handshake signatures) at its
  default security level, so the profile lowers it to 0 in its cipher string; the scan shows that
  it works: TLS 1.0 handshakes with the SHA-1 CBC suites. Mozilla's list for "old" ends with
  DES-CBC3-SHA; OpenSSL 3 as Debian builds it has no 3DES at all, so the scan never sees it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from tests.support.daemon import Daemon
from tests.support.https import write_pair
from tests.support.tools import need_tool

MakeDaemon = Callable[..., Daemon]

MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
WEAK = re.compile(r"RC4|DES|NULL|EXP|ADH|AECDH|anon|MD5|PSK|SRP|CAMELLIA|SEED|IDEA")

PROTOCOL_LINE = re.compile(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)$", re.MULTILINE)
CIPHER_LINE = re.compile(r"^(?:Preferred|Accepted)\s+(\S+)\s+(\d+) bits\s+(\S+)", re.MULTILINE)


@dataclass
class Scan:
    protocols: set[str] = field(default_factory=set)  # the enabled ones
    ciphers: dict[str, set[str]] = field(default_factory=dict)  # protocol -> suite names
    bits: dict[str, int] = field(default_factory=dict)  # suite -> key bits
    text: str = ""


def parse(text: str) -> Scan:
    scan = Scan(text=text)
    scan.protocols = {name for name, state in PROTOCOL_LINE.findall(text) if state == "enabled"}
    for protocol, bits, name in CIPHER_LINE.findall(text):
        scan.ciphers.setdefault(protocol, set()).add(name)
        scan.bits[name] = int(bits)
    return scan


def sslscan(daemon: Daemon) -> Scan:
    done = subprocess.run(
        [need_tool("sslscan"), "--no-colour", "--no-groups", "--no-heartbleed",
         "--sni-name=localhost", f"{daemon.host}:{daemon.port}"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    scan = parse(done.stdout)
    assert PROTOCOL_LINE.search(done.stdout) and scan.ciphers, done.stdout  # the format we know
    return scan


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    return [
        write_pair(ca.issue_cert("localhost", key_type=trustme.KeyType.RSA), directory, "rsa"),
        write_pair(ca.issue_cert("localhost", key_type=trustme.KeyType.ECDSA), directory, "ecdsa"),
    ]


def scan_profile(make_daemon: MakeDaemon, tmp_path: Path, pairs: list[dict[str, str]],
                 profile: str | None) -> Scan:
    (tmp_path / "www").mkdir()
    tls: dict[str, object] = {"certificates": pairs}
    if profile is not None:
        tls["profile"] = profile
    daemon = make_daemon({
        "workers": 1,
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": tls,
        "routes": [{"prefix": "/", "static": {"root": str(tmp_path / "www")}}],
    })
    return sslscan(daemon)


def test_intermediate_is_the_default_tls_12_and_13_with_mozillas_suites(
    make_daemon: MakeDaemon, tmp_path: Path, pairs: list[dict[str, str]]
) -> None:
    scan = scan_profile(make_daemon, tmp_path, pairs, None)
    assert scan.protocols == {"TLSv1.2", "TLSv1.3"}, scan.text
    assert set(scan.ciphers) == {"TLSv1.2", "TLSv1.3"}
    assert scan.ciphers["TLSv1.2"] == MOZILLA_INTERMEDIATE_TLS12, scan.text
    assert scan.ciphers["TLSv1.3"] == TLS13_SUITES
    for name, bits in scan.bits.items():
        assert bits >= 128 and not WEAK.search(name), name
        assert "GCM" in name or "CHACHA20" in name, f"{name}: not an AEAD suite"
    assert "Session renegotiation not supported" in scan.text  # no client-initiated renegotiation


def test_modern_is_tls_13_only(
    make_daemon: MakeDaemon, tmp_path: Path, pairs: list[dict[str, str]]
) -> None:
    scan = scan_profile(make_daemon, tmp_path, pairs, "modern")
    assert scan.protocols == {"TLSv1.3"}, scan.text
    assert scan.ciphers == {"TLSv1.3": TLS13_SUITES}, scan.text


def test_old_reaches_down_to_tls_10(
    make_daemon: MakeDaemon, tmp_path: Path, pairs: list[dict[str, str]]
) -> None:
    scan = scan_profile(make_daemon, tmp_path, pairs, "old")
    assert scan.protocols == {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}, scan.text
    assert {"ECDHE-RSA-AES128-SHA", "AES128-SHA"} <= scan.ciphers["TLSv1.0"], scan.text
    assert MOZILLA_INTERMEDIATE_TLS12 <= scan.ciphers["TLSv1.2"]
    for name, bits in scan.bits.items():  # long, not broken: still no RC4, NULL, export, MD5
        assert bits >= 128 and not WEAK.search(name), name
