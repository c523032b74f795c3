"""A connection on a `proxy_protocol` listener before its PROXY header is read.

The worker accepts such a connection only from a trusted peer (anything else is closed at once)
and puts a ProxyPrelude in its connection table instead of a Connection. The prelude reads the
header without reading one byte past it (it peeks, parses with forkd.proxy_protocol, then receives
exactly the header's bytes), because what follows may be a TLS ClientHello that the TLS transport
must read from the socket itself. Once the header is complete it replaces the connection's address
with the client's and calls `then(sock, info, now)`, which builds the real Connection (plain or
TLS) in its place; the socket stays registered for input, so bytes already waiting are served on
the next turn. A missing, malformed or slow header (timeouts.header) closes the connection.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable

from forkd.connection import CLOSED
from forkd.http.request import ConnectionInfo
from forkd.proxy_protocol import MAX_LENGTH, ProxyProtocolError, parse
from forkd.services import Services

PRELUDE = -2  # the state before HEAD (and before a TLS handshake)


class ProxyPrelude:
    def __init__(self, services: Services, sock: socket.socket, info: ConnectionInfo, now: float,
                 then: Callable[[socket.socket, ConnectionInfo, float], object]) -> None:
        self.services = services
        self.sock = sock
        self.fd = sock.fileno()
        self.info = info
        self.then = then
        self.buffer = b""
        self.state = PRELUDE
        self.deadline = now + services.timeouts.header

    @property
    def idle(self) -> bool:
        return not self.buffer

    def on_readable(self, now: float) -> None:
        try:
            peeked = self.sock.recv(MAX_LENGTH - len(self.buffer), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not peeked:
            self.close()
            return
        try:
            header = parse(self.buffer + peeked)
        except ProxyProtocolError as exc:
            self.services.error_log.debug(f"{self.info.remote_addr or 'unix'}: {exc}: closed")
            self.close()
            return
        # Incomplete: every byte seen belongs to the header. Complete: take exactly the header.
        wanted = len(peeked) if header is None else header.length - len(self.buffer)
        try:
            self.buffer += self.sock.recv(wanted)
        except OSError:
            self.close()
            return
        if header is None or len(self.buffer) < header.length:
            return
        info = self.info
        if header.source is not None:
            info = dataclasses.replace(info, remote_addr=header.source[0],
                                       remote_port=header.source[1], peer_addr=info.remote_addr,
                                       trusted_peer=False)
        self.state = CLOSED  # handed over: the real connection takes the table entry and socket
        self.then(self.sock, info, now)

    on_writable = on_readable

    def on_timeout(self, now: float) -> None:
        self.close()

    def abort(self, reason: str) -> None:
        self.close()

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.services.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
