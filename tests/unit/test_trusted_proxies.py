"""Which client a trusted proxy names (forkd.proxies): Forwarded, X-Forwarded-For, spoofing."""

from __future__ import annotations

from forkd.http.request import ConnectionInfo
from forkd.proxies import TrustedProxies, client_connection, forwarded_hops

TRUSTED = TrustedProxies(("127.0.0.1/32", "10.0.0.0/8", "2001:db8:ffff::/48"))
PEER = ConnectionInfo("10.0.0.5", 40000, "10.0.0.1", 80, trusted_peer=True)


def client(headers: dict[str, str], info: ConnectionInfo = PEER) -> tuple[str, int, str]:
    found = client_connection(info, headers, TRUSTED)
    return found.remote_addr, found.remote_port, found.peer_addr


def test_trust_by_network_and_v4_mapped() -> None:
    assert TRUSTED.trusts("10.1.2.3") and TRUSTED.trusts("::ffff:127.0.0.1")
    assert TRUSTED.trusts("2001:db8:ffff::9")
    assert not TRUSTED.trusts("192.0.2.1") and not TRUSTED.trusts("not an address")
    assert not TRUSTED.trusts("")  # a unix-socket peer, unless "unix" is listed
    assert TrustedProxies(("unix",)).trusts("")
    assert not TrustedProxies(())


def test_x_forwarded_for_is_read_right_to_left_skipping_trusted_hops() -> None:
    # The client wrote "1.1.1.1" itself; 192.0.2.7 is who reached our first proxy.
    headers = {"x-forwarded-for": "1.1.1.1, 192.0.2.7, 10.0.0.9"}
    assert client(headers) == ("192.0.2.7", 0, "10.0.0.5")
    assert client({"x-forwarded-for": "10.0.0.2, 10.0.0.9"}) == ("10.0.0.2", 0, "10.0.0.5")
    assert client({"x-forwarded-for": "2001:db8::1"}) == ("2001:db8::1", 0, "10.0.0.5")


def test_forwarded_wins_over_x_forwarded_for() -> None:
    headers = {"forwarded": 'for=1.1.1.1, for="[2001:db8::9]:4711";proto=https, for=10.0.0.3',
               "x-forwarded-for": "198.51.100.1"}
    assert client(headers) == ("2001:db8::9", 4711, "10.0.0.5")
    assert forwarded_hops('For="192.0.2.1:80";by=x, proto=http') == ["192.0.2.1:80", ""]


def test_an_unusable_hop_names_no_client() -> None:
    for value in ("for=unknown", "for=_hidden", 'for="[2001:db8::1"', "for=1.2.3.4:99999"):
        assert client({"forwarded": value}) == ("10.0.0.5", 40000, ""), value
    # An unusable Forwarded falls back to X-Forwarded-For.
    assert client({"forwarded": "for=unknown", "x-forwarded-for": "192.0.2.3"})[0] == "192.0.2.3"
    assert client({"x-forwarded-for": "192.0.2.3, garbage, 10.0.0.1"})[0] == "10.0.0.5"


def test_no_header_keeps_the_connection() -> None:
    assert client_connection(PEER, {}, TRUSTED) is PEER
