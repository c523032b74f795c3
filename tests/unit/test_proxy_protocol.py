"""The PROXY protocol parser (forkd.proxy_protocol): whole, byte by byte, and refusals."""

from __future__ import annotations

import struct

import pytest

from forkd.proxy_protocol import (
    MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    parse,
    v2_header,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def fed_byte_by_byte(data: bytes) -> ProxyHeader:
    """Every prefix before the end is incomplete (None), never an error; the whole is a header."""
    for end in range(len(data)):
        assert parse(data[:end]) is None, data[:end]
    header = parse(data)
    assert header is not None
    return header


def test_v1_tcp4() -> None:
    line = b"PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\n"
    header = fed_byte_by_byte(line)
    assert header == ProxyHeader(len(line), 1, ("203.0.113.9", 56324), ("192.0.2.1", 443))
    assert parse(line + REQUEST) == header  # what follows is not part of it


def test_v1_tcp6_and_unknown() -> None:
    line = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"
    assert parse(line + REQUEST) == ProxyHeader(len(line), 1, ("2001:db8::1", 1),
                                                ("2001:db8::2", 65535))
    for unknown in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        assert parse(unknown + REQUEST) == ProxyHeader(len(unknown), 1, None)


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\n",  # no header at all
    b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",  # family mismatch
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",  # two spaces
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
    b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",  # bare CR
    b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n",  # longer than 107 bytes
])
def test_v1_refusals(bad: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(bad)


def test_v1_never_waits_past_107_bytes() -> None:
    with pytest.raises(ProxyProtocolError):
        parse(b"PROXY TCP4 " + b"1" * 100)


def test_v2_tcp4_tcp6_and_local() -> None:
    four = v2_header(("203.0.113.9", 40000), ("192.0.2.1", 8443))
    assert fed_byte_by_byte(four) == ProxyHeader(len(four), 2, ("203.0.113.9", 40000),
                                                 ("192.0.2.1", 8443))
    six = v2_header(("2001:db8::7", 1), ("2001:db8::8", 2))
    assert parse(six + REQUEST) == ProxyHeader(len(six), 2, ("2001:db8::7", 1), ("2001:db8::8", 2))
    local = v2_header(None)  # a health check by the proxy itself: no client address
    assert parse(local + REQUEST) == ProxyHeader(16, 2, None)


def test_v2_skips_tlvs_and_takes_unspec_and_unix_as_no_address() -> None:
    payload = bytes([203, 0, 113, 9, 192, 0, 2, 1]) + struct.pack("!HH", 1, 2)
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP with 3 bytes
    data = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(payload + tlv)) + payload + tlv
    assert parse(data + REQUEST) == ProxyHeader(len(data), 2, ("203.0.113.9", 1), ("192.0.2.1", 2))
    unspec = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x00, 0)
    assert parse(unspec) == ProxyHeader(16, 2, None)
    unix = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x31, 216) + bytes(216)
    assert parse(unix) == ProxyHeader(16 + 216, 2, None)


@pytest.mark.parametrize("bad", [
    V2_SIGNATURE[:11] + b"X",  # not the signature
    V2_SIGNATURE + struct.pack("!BBH", 0x11, 0x11, 12) + bytes(12),  # version 1 in a v2 header
    V2_SIGNATURE + struct.pack("!BBH", 0x22, 0x11, 12) + bytes(12),  # unknown command
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 4) + bytes(4),  # addresses truncated
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x41, 0),  # unknown family
    V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 65535),  # longer than we accept
])
def test_v2_refusals(bad: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(bad)


def test_v2_incomplete_never_exceeds_the_cap() -> None:
    data = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, MAX_LENGTH - 16) + bytes(100)
    assert parse(data) is None  # waits, but a caller never holds more than MAX_LENGTH bytes
