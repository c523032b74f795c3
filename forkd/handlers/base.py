"""What a handler is, what it may return, and what it is given.

A handler is built once per worker from its route's config (and a HandlerContext) and then called
for every request its route matches. It never touches the client socket:

- `prepare(request)` may refuse a request (raise an HTTPError) before its body is read, so that
  `Expect: 100-continue` is answered only when the body will be used;
- `handle(request)` answers a request whose body is complete, with either a Response (static files:
  the answer is known at once) or an Exchange (CGI: the answer comes later, from descriptors the
  exchange registers with the worker's reactor). It may also raise an HTTPError or InternalRedirect.

A handler that uses request bodies says so with a class attribute `reads_body = True`; for every
other handler the connection reads a body off the wire and drops it (it counts against nothing).

An Exchange holds all per-request state (never the handler, which is shared by every request of the
route). The connection starts it with a Reply, the connection's side of the deal; the exchange calls
exactly one of reply.respond / reply.fail / reply.redirect when it knows the answer, and
reply.resume whenever a response body it is streaming has more to give. The connection calls
exchange.close() once the request is over, however it ended (answered, client gone, timed out), and
exchange.on_timeout() when the deadline the exchange set through reply.set_deadline passes.

An exchange may instead switch protocols (a WebSocket): reply.upgrade(headers, tunnel) sends
`101 Switching Protocols` and makes `tunnel` the owner of the connection's bytes from then on
(TUNNEL in forkd.connection). The tunnel is given what the connection reads, and sees the
connection as a Link: the transport's send, the events to wait for, a deadline, and end_tunnel
when it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from forkd.http.errors import HTTPError
from forkd.http.request import Request
from forkd.http.response import Response

if TYPE_CHECKING:
    from forkd.config import Config
    from forkd.logs import ErrorLog
    from forkd.reactor import Reactor
    from forkd.scoreboard import Scoreboard


class Reply(Protocol):
    """The connection, as an exchange sees it."""

    def respond(self, response: Response, now: float) -> None: ...
    def fail(self, error: HTTPError, now: float) -> None: ...
    def redirect(self, redirect: InternalRedirect, now: float) -> None: ...
    def resume(self, now: float) -> None: ...
    def set_deadline(self, when: float) -> None: ...
    def upgrade(self, headers: list[tuple[str, str]], tunnel: Tunnel, now: float) -> None: ...


class Link(Protocol):
    """The connection, as a tunnel sees it after the 101."""

    written: int  # bytes sent on the connection (the tunnel adds what it sends), for the log

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int: ...
    def want(self, events: int) -> None: ...
    def set_deadline(self, when: float) -> None: ...
    def end_tunnel(self, now: float) -> None: ...


class Tunnel(Protocol):
    """Who owns a connection's bytes after a 101 (see forkd.connection, TUNNEL)."""

    def attach(self, link: Link, head: bytes, buffered: bytes, now: float) -> None:
        """Start: send `head` (the 101) first; `buffered` arrived right behind the handshake."""

    def received(self, data: bytes, now: float) -> None: ...
    def writable(self, now: float) -> None: ...
    def peer_closed(self, now: float) -> None: ...
    def going_away(self, now: float) -> None:
        """The worker stops soon (timeouts.graceful is running out): close properly now."""


class Exchange(Protocol):
    def start(self, reply: Reply, now: float) -> None: ...
    def on_timeout(self, now: float) -> None: ...
    def close(self) -> None: ...


class Handler(Protocol):
    def prepare(self, request: Request) -> None:
        """Raise an HTTPError to refuse the request before its body is received."""

    def handle(self, request: Request) -> Response | Exchange:
        """Answer a request whose body (if any) is complete in request.body."""


@dataclass(frozen=True)
class HandlerContext:
    """What a handler is given when it is built: the worker's services it may use."""

    config: Config
    log: ErrorLog
    reactor: Reactor
    # Ask for this worker to be replaced gracefully (a WSGI app thread stuck for good), with why.
    retire: Callable[[str], None] | None = None
    board: Scoreboard | None = None  # the whole scoreboard, for the status and health routes


class InternalRedirect(Exception):
    """Raised (or passed to reply.redirect) to have the worker serve another local target instead.

    RFC 3875 §6.2.2: the worker re-dispatches a GET for `target` (a path with optional query, no
    body) through the router, with `extra` (REDIRECT_STATUS, REDIRECT_URL, ...) copied into
    request.extra; it gives up with 500 after a few hops so two scripts cannot loop forever.
    """

    def __init__(self, target: str, extra: dict[str, str]) -> None:
        super().__init__(target)
        self.target = target
        self.extra = extra
