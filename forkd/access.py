"""Client address rules (`access: {allow: [...], deny: [...]}` on a route).

The rules are tried in the order the operator wrote them (`allow` first unless `deny` was written
first), each entry an address, a CIDR network or "all"; the first entry that contains the client
address decides. An address no entry contains is refused when the rules allow anything (an allow
list admits only what it lists) and admitted when they only deny (a deny list refuses only what
it lists). A client on a unix socket has no address: only "all" matches it.

The address is the one the connection reports (`ConnectionInfo.remote_addr`), which is the
forwarded client's when a trusted proxy sent it. An IPv4 client on a dual-stack listener
(`::ffff:10.0.0.1`) is matched as the IPv4 address it is. Decisions are cached per address,
bounded (clients choose addresses, not unboundedly many, but a worker lives long).
"""

from __future__ import annotations

import ipaddress

from forkd.config import AccessConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DECISIONS = 4096  # addresses whose answer is remembered


class AccessRules:
    def __init__(self, settings: AccessConfig) -> None:
        self.rules: list[tuple[Network | None, bool]] = []  # (network, allow); None is "all"
        for key in settings.rule_order:
            for entry in getattr(settings, key):
                network = None if entry == "all" else ipaddress.ip_network(entry)
                self.rules.append((network, key == "allow"))
        self.otherwise = not settings.allow  # nothing matched: admit only if no allow list
        self.decided: dict[str, bool] = {}

    def admits(self, address: str) -> bool:
        decision = self.decided.get(address)
        if decision is None:
            decision = self._decide(address)
            if len(self.decided) >= DECISIONS:
                self.decided.clear()
            self.decided[address] = decision
        return decision

    def _decide(self, address: str) -> bool:
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                address.partition("%")[0])  # a scope id ("fe80::1%eth0") is not part of the rule
        except ValueError:
            ip = None  # a unix socket ("")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for network, allow in self.rules:
            if network is None or (ip is not None and ip.version == network.version
                                   and ip in network):
                return allow
        return self.otherwise
