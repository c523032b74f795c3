"""htpasswd formats, Basic credentials and access rules, as pure functions."""

from __future__ import annotations

import base64

import pytest

from forkd import htpasswd
from forkd.access import AccessRules
from forkd.config import AccessConfig

# Made by Debian's htpasswd (-m, -s, -B).
APR1 = "$apr1$/X/pFYV7$BUu2n6vHRKAJt2KZraYya0"  # "secret"
SHA = "{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM="  # "pw"
BCRYPT = "$2y$05$56akwOrIdywH9xUVzRAEt.QNr8nMIVah6O1Qtowlx47iybytX2Ny2"  # "pw"


@pytest.mark.parametrize("hashed, password", [(APR1, b"secret"), (SHA, b"pw"), (BCRYPT, b"pw")])
def test_verify_each_format(hashed: str, password: bytes) -> None:
    assert htpasswd.verify(password, hashed)
    assert not htpasswd.verify(password + b"x", hashed)
    assert not htpasswd.verify(b"", hashed)


def test_apr1_is_apache_md5() -> None:
    assert htpasswd.apr1(b"secret", b"/X/pFYV7") == APR1


def test_bcrypt_refuses_over_long_passwords_without_raising() -> None:
    assert not htpasswd.verify(b"p" * 100, BCRYPT)


def test_parse_reports_lines() -> None:
    users, problems = htpasswd.parse(f"# c\n\na:{APR1}\nb:{SHA}\na:{SHA}\nc:abcdefgh12345\n")
    assert users == {"a": APR1, "b": SHA}
    assert [line for line, _ in problems] == [5, 6]


@pytest.mark.parametrize("header, expected", [
    ("Basic " + base64.b64encode(b"u:p:q").decode(), ("u", b"p:q")),
    ("basic  " + base64.b64encode("ü:p".encode()).decode(), ("ü", b"p")),
    ("Basic " + base64.b64encode(b"u").decode(), None),
    ("Basic !!", None), ("Bearer x", None), ("Basic", None), ("", None),
    ("Basic " + base64.b64encode(b"\xff:p").decode(), None),
])
def test_basic_credentials(header: str, expected: object) -> None:
    assert htpasswd.basic_credentials(header) == expected


def rules(allow: tuple[str, ...] = (), deny: tuple[str, ...] = (),
          order: tuple[str, ...] = ("allow", "deny")) -> AccessRules:
    return AccessRules(AccessConfig(allow, deny, order))


def test_access_first_match_in_written_order() -> None:
    lan = rules(("10.0.0.0/8",), ("all",))
    assert lan.admits("10.2.3.4") and not lan.admits("192.168.1.1") and not lan.admits("")
    assert lan.admits("::ffff:10.0.0.1")  # IPv4 on a dual-stack socket
    hole = rules(("10.0.0.0/8",), ("10.0.0.5",), ("deny", "allow"))
    assert not hole.admits("10.0.0.5") and hole.admits("10.0.0.6")
    v6 = rules(("2001:db8::/32",))
    assert v6.admits("2001:db8::1") and not v6.admits("2001:db9::1") and not v6.admits("10.0.0.1")
    assert rules(deny=("10.0.0.5",)).admits("10.0.0.6")
    assert rules(allow=("all",)).admits("")
