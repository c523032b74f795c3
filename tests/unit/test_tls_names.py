"""forkd.tls and forkd.transport helpers that need no socket: names, key types, DNs, classes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from forkd import tls
from forkd.transport import FailureLog, classify, looks_like_plain_http


def test_certificate_names_come_from_subject_alt_name(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("Example.COM.", "*.wild.test", "192.0.2.1", common_name="x")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    assert tls.certificate_names(tls.decode_certificate(tmp_path / "c.pem")) == (
        "example.com",
        "*.wild.test",
    )


def test_common_name_when_no_dns_names() -> None:
    decoded = {"subject": ((("organizationName", "O"),), (("commonName", "Legacy.Example"),))}
    assert tls.certificate_names(decoded) == ("legacy.example",)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (rsa.generate_private_key(65537, 2048), "rsa"),
        (ec.generate_private_key(ec.SECP256R1()), "ec"),
        (ed25519.Ed25519PrivateKey.generate(), "ed25519"),
    ],
)
@pytest.mark.parametrize("form", ["pkcs8", "traditional"])
def test_key_type_reads_pkcs8_and_traditional_pem(
    tmp_path: Path, key: object, expected: str, form: str
) -> None:
    if form == "traditional" and expected == "ed25519":
        pytest.skip("Ed25519 keys exist only as PKCS#8")
    encoding = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[form]
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, encoding, serialization.NoEncryption()
    )
    (tmp_path / "k.pem").write_bytes(pem)
    assert tls.key_type(tmp_path / "k.pem") == expected


def test_rfc2253_as_mod_ssl_writes_it() -> None:
    subject = (
        (("countryName", "DE"),),
        (("organizationName", 'Müller + Söhne, "GmbH"'),),
        (("organizationalUnitName", " a"), ("organizationalUnitName", "b#")),
        (("commonName", "#lead;trail "),),
        (("emailAddress", "x@example.com"),),
    )
    assert tls.rfc2253(subject) == (
        "emailAddress=x@example.com,"
        "CN=\\#lead\\;trail\\ ,"
        "OU=\\ a+OU=b#,"
        'O=M\\C3\\BCller \\+ S\\C3\\B6hne\\, \\"GmbH\\",'
        "C=DE"
    )


def test_sni_lookup_exact_then_one_label_wildcard() -> None:
    one, two = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    selector = tls._SniSelector(
        [
            tls._Group(("a.example", "*.example"), {"ec"}, one),
            tls._Group(("*.example", "b.example"), {"ec"}, two),
        ]
    )
    assert selector.lookup("A.Example.") is one
    assert selector.lookup("b.example") is two
    assert selector.lookup("c.example") is one  # the first certificate with the name wins
    assert selector.lookup("x.c.example") is None
    assert selector.lookup("example") is None


@pytest.mark.parametrize(
    ("first", "plain"),
    [
        (b"GET / HTTP/1.1", True),
        (b"P", True),
        (b"\x16\x03\x01", False),
        (b"", False),
        (b"get /", False),
        (b"\x80\x2e", False),
    ],
)
def test_looks_like_plain_http(first: bytes, plain: bool) -> None:
    assert looks_like_plain_http(first) is plain


def test_failure_classes() -> None:
    def error(reason: str) -> ssl.SSLError:
        exc = ssl.SSLError(1, reason)
        exc.reason = reason  # type: ignore[misc]
        return exc

    assert classify(error("NO_SHARED_CIPHER")) == "no shared cipher"
    assert classify(error("TLSV1_ALERT_UNKNOWN_CA")) == "unknown ca"
    assert classify(error("SSLV3_ALERT_ILLEGAL_PARAMETER")) == "alert illegal parameter"
    assert classify(error("SOMETHING_NEW")) == "something new"
    assert classify(ssl.SSLEOFError()) == "eof"
    assert classify(ConnectionResetError()) == "eof"


def test_failure_log_says_when_a_class_is_new() -> None:
    failures = FailureLog()
    assert [failures.record(k) for k in ("eof", "eof", "unknown ca", "eof")] == [
        True,
        False,
        True,
        False,
    ]
    assert failures.counts == {"eof": 3, "unknown ca": 1}
    assert failures.summary() == "eof 3, unknown ca 1"  # what the worker logs when it exits
    assert FailureLog().summary() == ""  # no failures: no line
