"""Clients behind proxies: which peers are trusted, and which client they name. No I/O.

`trusted_proxies` lists networks (and "unix" for peers on unix-socket listeners). Only a
connection from such a peer may name another client, in this order (CONTRACT.md):
1. a PROXY protocol header (forkd.proxy_prelude: the connection's address is replaced once);
2. otherwise, per request, `Forwarded` (RFC 7239) and failing that `X-Forwarded-For`, each read
   right to left: every proxy appends the address it received the request from, so the rightmost
   hops were added by our own proxies and the first address from the right that is *not* trusted
   is the client. Anything to its left was written by that client and may be forged.
The result is the request's ConnectionInfo (REMOTE_ADDR, access log, access rules); the TCP peer
stays in `peer_addr`. From any other peer these headers are ordinary headers and change nothing.
A hop that is not an IP address (`unknown`, an obfuscated `_name`) ends the walk: the client
cannot be named, and the connection's own address stands.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping

from forkd.http.request import ConnectionInfo

MAX_HOPS = 32  # hops examined from the right; a longer chain was mostly written by the client
CACHE = 4096  # peer addresses whose verdict is remembered


class TrustedProxies:
    def __init__(self, entries: tuple[str, ...]) -> None:
        self.unix = "unix" in entries
        self.networks = [ipaddress.ip_network(entry) for entry in entries if entry != "unix"]
        self.cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)

    def trusts(self, address: str) -> bool:
        """Whether a peer address ("" on a unix socket) is one of our proxies."""
        if not address:
            return self.unix
        verdict = self.cache.get(address)
        if verdict is None:
            ip = _ip(address)
            verdict = ip is not None and any(ip in network for network in self.networks)
            if len(self.cache) >= CACHE:
                self.cache.clear()
            self.cache[address] = verdict
        return verdict


def client_connection(info: ConnectionInfo, headers: Mapping[str, str],
                      trusted: TrustedProxies) -> ConnectionInfo:
    """The request's connection facts: the client named by a trusted peer's headers, or info."""
    found = None
    forwarded = headers.get("forwarded")
    if forwarded is not None:
        found = _walk(forwarded_hops(forwarded), trusted)
    if found is None:
        chain = headers.get("x-forwarded-for")
        if chain is not None:
            found = _walk([hop.strip() for hop in chain.split(",")], trusted)
    if found is None:
        return info
    return dataclasses.replace(info, remote_addr=found[0], remote_port=found[1],
                               peer_addr=info.peer_addr or info.remote_addr)


def forwarded_hops(value: str) -> list[str]:
    """The `for=` node of each element of a Forwarded field (RFC 7239 §4), "" where absent."""
    hops = []
    for element in value.split(","):
        node = ""
        for pair in element.split(";"):
            name, sep, item = pair.strip().partition("=")
            if sep and name.strip().lower() == "for":
                node = item.strip()
                if len(node) >= 2 and node[0] == node[-1] == '"':
                    node = node[1:-1]
        hops.append(node)
    return hops


def _walk(hops: list[str], trusted: TrustedProxies) -> tuple[str, int] | None:
    found = None
    for hop in reversed(hops[-MAX_HOPS:]):
        node = _node(hop)
        if node is None:
            return None  # unknown, obfuscated or malformed: the client cannot be named
        found = node
        if not trusted.trusts(node[0]):
            return node
    return found  # every hop is one of ours: the leftmost is the client


def _node(text: str) -> tuple[str, int] | None:
    """An address with an optional port: 192.0.2.1, 192.0.2.1:80, [2001:db8::1], [2001:db8::1]:80."""
    port = "0"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or "0"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host = text  # IPv4, or IPv6 without brackets (as X-Forwarded-For often has it)
    ip = _ip(host)
    if ip is None or not port.isdigit() or int(port) > 65535:
        return None
    return str(ip), int(port)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    return ip
