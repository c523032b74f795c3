"""Kept FastCGI connections of one route in one worker, and the requests waiting for one.

Theory of operation
-------------------
With `connections: N` the requests of a fastcgi route in a worker share at most N connections to
php-fpm. Each is opened with FCGI_KEEP_CONN and carries one request at a time. A child keeping
its connection takes the next request without an accept() and without the shutdown-and-read that
ends a closed connection; the worker saves a socket, a connect and a close per request. Since a
connection per request is half-closed (forkd.handlers.fastcgi), that wait costs php-fpm little,
and kept connections pay off mostly where a connect is dear (php-fpm over TCP, far away).

The price: a kept connection holds its php-fpm child, busy or idle. Hence the bound, and a request
beyond N waits here, in order (the exchange's phase QUEUED, its deadline running), never in
php-fpm's listen queue, where it could wait behind children that other workers' connections
hold. With `workers x N` at most the pool's `pm.max_children`, every connection has its child.

- take: the most recently used idle connection (its child is warm), else a new one while fewer
  than N exist, else the request waits.
- give back: a connection whose request ended cleanly goes to the first waiting request, or idles.
  Any other end closes it, and the first waiting request gets a new one.
- idle connections stay registered with the reactor, with the pool as their watcher: php-fpm
  closing one (pm.max_requests, a reload) removes it at once. A connection changes hands with its
  registration as it is (`armed`): an exchange reading its answer wants what the pool wants of an
  idle connection, so most hand-overs cost no epoll_ctl. One idle for IDLE_SECONDS is closed
  so that its child can serve others, and a retiring worker keeps none.

A kept connection that php-fpm closes just as it is taken is the exchange's to notice: EPIPE on
the first send (attach says False and the pool tries the next), or the end of the stream before
any answer (the exchange sends the request again on a new connection).
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Protocol

from forkd.reactor import EPOLLIN, Reactor, Timer

IDLE_SECONDS = 5.0  # an idle kept connection is closed after this long
IDLE_EVENTS = EPOLLIN  # anything from php-fpm on an idle connection (its end included)


class Taker(Protocol):
    """A request that needs a connection (forkd.handlers.fastcgi.FastCgiExchange)."""

    def attach(self, sock: socket.socket, armed: int, now: float) -> bool:
        """Send the request on this kept connection, registered for `armed` events; False (socket
        closed) if php-fpm closed it."""

    def connect(self, now: float) -> None:
        """Open a new connection for the request (a failure is answered by the request itself)."""


class ConnectionPool:
    def __init__(self, size: int, reactor: Reactor) -> None:
        self.size = size
        self.reactor = reactor
        self.count = 0  # connections counted against size: opening, in use or idle
        self.idle: list[tuple[socket.socket, float]] = []  # (connection, idle since), newest last
        self.waiting: deque[Taker] = deque()
        self.keeping = True  # False once the worker retires
        self.sweep: Timer | None = None
        self.refilling = False  # lost() is giving places to waiting requests (not re-entered)

    # -- for requests ----------------------------------------------------------------------------
    def take(self, taker: Taker, now: float) -> bool:
        """Start `taker` on a connection (True), or queue it until one is free (False)."""
        idle = self.idle
        while idle:
            sock = idle.pop()[0]
            if taker.attach(sock, IDLE_EVENTS, now):
                return True
            self.count -= 1  # php-fpm had closed it; attach closed our end
        if self.count < self.size:
            self.count += 1
            taker.connect(now)
            return True
        self.waiting.append(taker)
        return False

    def cancel(self, taker: Taker) -> None:
        """A queued request ended (client gone, timed out) before it got a connection."""
        try:
            self.waiting.remove(taker)
        except ValueError:
            pass

    def give_back(self, sock: socket.socket, armed: int, now: float) -> None:
        """A connection whose request ended cleanly, registered for `armed` events: to the next
        request, or to the idle list."""
        if self.waiting:
            if self.waiting[0].attach(sock, armed, now):
                self.waiting.popleft()
            else:
                self.lost(now)  # the first in line gets a new connection instead
            return
        if not self.keeping:
            self._close(sock)
            return
        self.idle.append((sock, now))
        self.reactor.rebind(sock.fileno(), self)
        if armed != IDLE_EVENTS:
            self.reactor.modify(sock.fileno(), IDLE_EVENTS)
        if self.sweep is None:
            self.sweep = self.reactor.call_at(now + IDLE_SECONDS, self._sweep)

    def lost(self, now: float) -> None:
        """A connection of the pool is closed: its place goes to the requests waiting."""
        self.count -= 1
        if self.refilling:
            return  # a failed connect of the loop below: the loop takes the next in line
        self.refilling = True
        try:
            while self.waiting and self.count < self.size:
                self.count += 1
                self.waiting.popleft().connect(now)  # a failure ends here, in lost()
        finally:
            self.refilling = False

    # -- idle connections ------------------------------------------------------------------------
    def on_event(self, fd: int, mask: int, now: float) -> None:
        """php-fpm closed an idle connection (or, against the protocol, sent on it)."""
        for position, (sock, _since) in enumerate(self.idle):
            if sock.fileno() == fd:
                del self.idle[position]
                self._close(sock)
                return

    def _sweep(self, now: float) -> None:
        self.sweep = None
        while self.idle and now - self.idle[0][1] >= IDLE_SECONDS:
            self._close(self.idle.pop(0)[0])
        if self.idle:
            self.sweep = self.reactor.call_at(self.idle[0][1] + IDLE_SECONDS, self._sweep)

    def _close(self, sock: socket.socket) -> None:
        self.reactor.unwatch(sock.fileno())
        sock.close()
        self.count -= 1

    def retire(self) -> None:
        """The worker retires: close the idle connections, keep none from now on."""
        self.keeping = False
        while self.idle:
            self._close(self.idle.pop()[0])
