"""A client connection over TLS: the handshake in the worker's loop, then HTTP as on plain sockets.

A TlsConnection is a Connection whose socket calls go through a forkd.transport.TlsTransport. It adds
one state before HEAD, SHAKE: the handshake is advanced on each event the transport asks for
(EPOLLIN or EPOLLOUT), bounded by tls.handshake_timeout, so a client that stalls its handshake holds
a buffer and nothing else. A failed handshake is counted per class (forkd.transport.FailureLog) and
logged once per class at info (the worker logs the counts when it exits); a plain-HTTP request
on the TLS port gets a short 400.

After the handshake the connection knows its TLS facts (the CGI variables, the scheme) and adds
the `hsts` header to every answer. TLS may need to read in order to write or the reverse; reads
and writes that block wait for the direction the transport names. The plain Connection keeps its
direct socket calls: none of this touches its hot path.
"""

from __future__ import annotations

import socket
import ssl
from select import EPOLLIN

from forkd.connection import CLOSED, HEAD, Connection
from forkd.http.request import ConnectionInfo
from forkd.http.response import Response
from forkd.services import Services
from forkd.tls import connection_variables, sni_name
from forkd.transport import HandshakeFailed, TlsTransport

SHAKE = -1  # a state before HEAD: the TLS handshake is in progress


class TlsConnection(Connection):
    __slots__ = ("transport",)

    def __init__(self, services: Services, sock: socket.socket, info: ConnectionInfo, now: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(services, sock, info, now)
        transport = self.transport = TlsTransport(sock, context)
        self.recv = transport.recv
        self.send = transport.send
        self.sendfile = transport.sendfile
        self.state = SHAKE
        self.deadline = now + services.tls_handshake_timeout

    # -- the handshake ---------------------------------------------------------------------------
    def on_readable(self, now: float) -> None:
        if self.state == SHAKE:
            self._handshake(now)
            return
        Connection.on_readable(self, now)
        self._follow_transport()

    def on_writable(self, now: float) -> None:
        if self.state == SHAKE:
            self._handshake(now)
            return
        super().on_writable(now)
        self._follow_transport()

    def _handshake(self, now: float) -> None:
        transport = self.transport
        try:
            wants = transport.handshake()
        except HandshakeFailed as failure:
            self.services.slot.tls_handshake(False)
            if failure.kind == "http request":
                transport.answer_plain_http()
            if self.services.tls_failures.record(failure.kind):
                self.services.error_log.info(
                    f"TLS handshake failed ({failure}); "
                    f"further failures of this kind are counted, not logged")
            self.close()
            return
        if wants:
            self._want(wants)
            return
        assert transport.tls is not None
        self.services.slot.tls_handshake(True)
        self.sock = transport.tls  # the SSLSocket owns the descriptor now (shutdown, linger)
        self.info.scheme = "https"
        self.info.tls_variables = connection_variables(transport.tls)
        self.info.sni = sni_name(transport.tls)
        self.state = HEAD
        self.fresh = True
        self.deadline = now + self.services.timeouts.header
        self._want(EPOLLIN)
        if transport.pending():
            self.on_readable(now)

    def on_timeout(self, now: float) -> None:
        if self.state == SHAKE:
            self.services.slot.tls_handshake(False)
            if self.services.tls_failures.record("timeout"):
                self.services.error_log.info("TLS handshake failed (timeout); further timeouts "
                                             "are counted, not logged")
            self.close()
            return
        super().on_timeout(now)

    def _follow_transport(self) -> None:
        """After a read or write that blocked, wait for what TLS needs, not what we tried."""
        if self.state != CLOSED and self.state != SHAKE and self.transport.pending():
            # Decrypted bytes epoll cannot see: read them now rather than wait for the socket.
            self.services.ready.append(self)

    def want(self, events: int) -> None:
        """A tunnel that resumes reading: plaintext already decrypted would never wake epoll."""
        super().want(events)
        if events & EPOLLIN and self.transport.pending():
            self.services.ready.append(self)

    # -- answers ---------------------------------------------------------------------------------
    def respond(self, response: Response, now: float) -> None:
        site = self.request.site if self.request is not None else None
        hsts = site.hsts if site is not None else self.services.hsts  # a server's own, if any
        if hsts and not any(name.lower() == "strict-transport-security"
                            for name, _ in response.headers):
            response.headers = [*response.headers, ("Strict-Transport-Security", hsts)]
        super().respond(response, now)

    def _end(self, now: float, linger: bool) -> None:
        if linger:  # the write side is shut next, and SSLSocket.shutdown would say nothing
            self.transport.close_notify()
        super()._end(now, linger)

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.transport.close()  # close_notify when the socket takes it, then the descriptor
        super().close()

