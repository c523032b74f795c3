"""The PROXY protocol header (HAProxy's spec, versions 1 and 2): bytes in, addresses out. No I/O.

A load balancer that speaks it sends one header before anything else on the connection, naming
the client it accepted the connection from. `parse(data)` looks at the bytes received so far and
returns None (not complete yet), a ProxyHeader (complete: its length and the client's address), or
raises ProxyProtocolError (not a PROXY header, or a malformed one). It never needs more than
MAX_LENGTH bytes, and every byte it has seen before returning None belongs to the header, so a
caller may consume them (forkd.proxy_prelude reads the header without reading past it, which a
TLS handshake that follows needs).

Version 1 (text): "PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n" or "PROXY UNKNOWN ...\\r\\n", at most
107 bytes. Version 2 (binary): a 12-byte signature, version/command, family/protocol, a 16-bit
length, the addresses, then TLVs (skipped). The LOCAL command (a health check by the proxy itself)
and the UNKNOWN/UNSPEC families carry no client: `source` is None and the connection's own peer
stands. Which peers may send a header at all is decided by the caller (trusted_proxies).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the spec's figure)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family, length
V2_MAX_PAYLOAD = 4096  # addresses and TLVs we accept (the spec allows 65535; proxies send little)
MAX_LENGTH = V2_FIXED + V2_MAX_PAYLOAD

_V2_LOCAL, _V2_PROXY = 0x20, 0x21
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_ADDRESS_SIZES = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyProtocolError(ValueError):
    """Not a PROXY header, or a malformed one: the connection is closed."""


@dataclass(frozen=True)
class ProxyHeader:
    length: int  # bytes of the header: what follows is the client's own data
    version: int  # 1 or 2
    source: tuple[str, int] | None  # the client's address and port; None for LOCAL / UNKNOWN
    destination: tuple[str, int] | None = None


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of data; None while incomplete; ProxyProtocolError when invalid."""
    if not data:
        return None
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    raise ProxyProtocolError("no PROXY header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    prefix = data[: len(V1_PREFIX)]
    if not V1_PREFIX.startswith(prefix):
        raise ProxyProtocolError("no PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line too long")
        if b"\n" in data or b"\r" in data[:-1]:
            raise ProxyProtocolError("PROXY v1 line not ended by CRLF")
        return None
    line = data[len(V1_PREFIX) : end]
    fields = line.split(b" ")
    if fields[0] == b"UNKNOWN":
        return ProxyHeader(end + 2, 1, None)
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 line")
    version = 4 if fields[0] == b"TCP4" else 6
    source = _address(fields[1], version), _port(fields[3])
    destination = _address(fields[2], version), _port(fields[4])
    return ProxyHeader(end + 2, 1, source, destination)


def _address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError("malformed address in PROXY v1 line") from None
    if address.version != version:
        raise ProxyProtocolError("address family does not match in PROXY v1 line")
    return str(address)


def _port(text: bytes) -> int:
    # 1*5DIGIT without leading zeros (the spec), 0..65535.
    if not text.isdigit() or len(text) > 5 or (text[0:1] == b"0" and text != b"0"):
        raise ProxyProtocolError("malformed port in PROXY v1 line")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("port out of range in PROXY v1 line")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    head = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(head):
        raise ProxyProtocolError("no PROXY header")
    if len(data) < V2_FIXED:
        return None
    command, family, length = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyProtocolError(f"unsupported PROXY v2 version/command 0x{command:02x}")
    if length > V2_MAX_PAYLOAD:
        raise ProxyProtocolError(f"PROXY v2 header of {length} bytes is too long")
    total = V2_FIXED + length
    if len(data) < total:
        return None
    if command == _V2_LOCAL:
        return ProxyHeader(total, 2, None)
    address_family, transport = family >> 4, family & 0x0F
    if transport > 2 or address_family > _AF_UNIX:
        raise ProxyProtocolError(f"unknown PROXY v2 family 0x{family:02x}")
    if address_family in (_AF_UNSPEC, _AF_UNIX) or transport == 0:
        return ProxyHeader(total, 2, None)  # nothing we can use as a client address
    if length < _ADDRESS_SIZES[address_family]:
        raise ProxyProtocolError("PROXY v2 addresses truncated")
    payload = data[V2_FIXED:total]
    if address_family == _AF_INET:
        source = str(ipaddress.IPv4Address(payload[0:4]))
        destination = str(ipaddress.IPv4Address(payload[4:8]))
        ports = struct.unpack_from("!HH", payload, 8)
    else:
        source = str(ipaddress.IPv6Address(payload[0:16]))
        destination = str(ipaddress.IPv6Address(payload[16:32]))
        ports = struct.unpack_from("!HH", payload, 32)
    return ProxyHeader(total, 2, (source, ports[0]), (destination, ports[1]))


def v2_header(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """Build a v2 header (LOCAL when source is None): for tests and tools."""
    if source is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, 0, 0)
    destination = destination or (source[0], 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21
    payload = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(payload)) + payload
