"""forkd.config: TLS listeners and the `tls` / `hsts` keys, with certificates made by trustme."""

from __future__ import annotations

import datetime
import os
import textwrap
from pathlib import Path

import pytest
import trustme

from forkd.config import ConfigError, ListenAddress, loads

MINIMAL = "routes: [{prefix: /, static: {root: www}}]\n"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    ca = trustme.CA()
    leaf = ca.issue_cert("example.com")
    other = ca.issue_cert("other.example")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "site.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "site.key"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    old = ca.issue_cert(
        "old.example", not_before=yesterday - datetime.timedelta(days=30), not_after=yesterday
    )
    old.cert_chain_pems[0].write_to_path(str(tmp_path / "old.pem"))
    old.private_key_pem.write_to_path(str(tmp_path / "old.key"))
    return tmp_path


def problems(text: str, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(text), base)
    # Key path and reason; the file positions are tested in test_config.py.
    return [f"{p.key}: {p.reason}" for p in caught.value.found]


def test_a_tls_listener_and_its_certificates(base: Path) -> None:
    config = loads(
        MINIMAL
        + """
        listen: ["127.0.0.1:8080", {address: "127.0.0.1:8443", tls: true},
                 {address: "[::1]:8081", proxy_protocol: false}]
        tls: {certificates: [{cert: site.pem, key: site.key}]}
        hsts: "max-age=63072000"
        """.replace("\n        ", "\n"),
        base,
    )
    assert config.listen == (
        ListenAddress("inet", "127.0.0.1", 8080),
        ListenAddress("inet", "127.0.0.1", 8443, tls=True),
        ListenAddress("inet6", "::1", 8081),
    )
    assert str(config.listen[1]) == "127.0.0.1:8443"
    assert config.tls is not None
    assert config.tls.certificates[0].cert == base / "site.pem"
    assert config.tls.profile == "intermediate" and config.tls.client_certificates == "none"
    assert config.tls.handshake_timeout == 10.0
    assert config.hsts == "max-age=63072000"


def test_tls_defaults_to_absent(base: Path) -> None:
    config = loads(MINIMAL, base)
    assert config.tls is None and config.hsts is None and not config.listen[0].tls


def test_a_tls_listener_needs_certificates(base: Path) -> None:
    assert problems(MINIMAL + 'listen: [{address: "127.0.0.1:8443", tls: true}]', base) == [
        "tls.certificates: required by listen[0] (a tls listener)"
    ]
    assert problems(
        MINIMAL + 'listen: [{address: "127.0.0.1:8443", tls: true}]\ntls: {certificates: []}',
        base,
    ) == ["tls.certificates: required by listen[0] (a tls listener)"]


def test_bad_listen_mappings(base: Path) -> None:
    found = problems(
        MINIMAL + 'listen: [{tls: true}, {address: "1.2.3.4:1", tls: "yes", port: 3},'
        ' {address: "unix:/tmp/x.sock", tls: true}, {address: ":1", proxy_protocol: 1},'
        ' {address: "nonsense", tls: false}]\n'
        "tls: {certificates: [{cert: site.pem, key: site.key}]}\n",
        base,
    )
    assert found == [
        "listen[0].address: required key is missing",
        "listen[1].tls: expected true or false, got the string 'yes'",
        "listen[1].port: unknown key",
        "listen[2].address: tls is for TCP listeners",
        "listen[3].proxy_protocol: expected true or false, got int 1",
        'listen[4].address: expected "host:port", "[v6]:port" or "unix:/path", got \'nonsense\'',
    ]


def test_certificate_problems_name_the_key_path(base: Path) -> None:
    (base / "garbage.pem").write_text("not a certificate\n")
    found = problems(
        MINIMAL
        + """
        tls:
          certificates:
            - {cert: site.pem, key: other.key}
            - {cert: missing.pem, key: site.key}
            - {cert: old.pem, key: old.key}
            - {cert: garbage.pem, key: site.key}
            - {cert: site.pem}
          profile: strong
          client_certificates: required
          handshake_timeout: 0
        """.replace("\n        ", "\n"),
        base,
    )
    expired = next(line for line in found if "expired" in line)
    found.remove(expired)
    assert expired.startswith("tls.certificates[2].cert: expired on ")
    assert expired.endswith(f"UTC: {base / 'old.pem'}")
    mismatch = (
        f"tls.certificates[0].key: does not match tls.certificates[0].cert "
        f"({base / 'other.key'} vs {base / 'site.pem'})"
    )
    assert sorted(found) == sorted([
        f"tls.certificates[1].cert: no such file: {base / 'missing.pem'}",
        "tls.certificates[4].key: required key is missing",
        "tls.profile: must be one of modern, intermediate, old, got 'strong'",
        "tls.handshake_timeout: must be positive, got 0",
        mismatch,
        f"tls.certificates[3].cert: not a PEM certificate: {base / 'garbage.pem'}",
        "tls.client_ca: required when client_certificates is required",
    ])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_is_reported(base: Path) -> None:
    (base / "site.key").chmod(0)
    assert problems(MINIMAL + "tls: {certificates: [{cert: site.pem, key: site.key}]}", base) == [
        f"tls.certificates[0].key: cannot read {base / 'site.key'}: Permission denied"
    ]


def test_client_certificates(base: Path) -> None:
    config = loads(
        MINIMAL + "tls: {certificates: [{cert: site.pem, key: site.key}],"
        " client_certificates: optional, client_ca: ca.pem}",
        base,
    )
    assert config.tls is not None and config.tls.client_ca == base / "ca.pem"
    assert problems(
        MINIMAL + "tls: {certificates: [{cert: site.pem, key: site.key}],"
        " client_certificates: optional, client_ca: site.key}",
        base,
    ) == [f"tls.client_ca: no PEM certificate in {base / 'site.key'}"]


def test_hsts_must_be_a_string(base: Path) -> None:
    assert problems(MINIMAL + "hsts: 3", base) == ["hsts: expected a string, got int 3"]
