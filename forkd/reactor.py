"""The worker's one wait: an epoll instance, the table of who owns each descriptor, and timers.

Theory of operation
-------------------
A worker waits in exactly one place, `Reactor.poll`. Client connections are dispatched by the
worker's own table (the hot path: one dict lookup); every other descriptor a request needs (a CGI
script's stdin, stdout and stderr, a pidfd announcing its exit) is registered here with a Watcher,
whose `on_event` the worker calls when epoll reports the descriptor. Nothing in a handler ever waits
on a descriptor itself: it registers it and returns, and resumes from `on_event`.

Timers are for short, precise delays that the worker's periodic tick (a quarter second) is too coarse
for: waiting a few milliseconds for the rest of a CGI script's output, giving a script a moment to
exit before it is sent SIGTERM. They live in a heap; `timeout()` tells the loop how long it may
sleep, and `run_timers()` fires the due ones. A cancelled timer stays in the heap, marked, until its
time comes (cheaper than removing it).

This module knows nothing of HTTP, connections or handlers.
"""

from __future__ import annotations

import heapq
import itertools
import select
from collections.abc import Callable
from typing import Protocol

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLONESHOT = select.EPOLLONESHOT
EPOLLRDHUP = select.EPOLLRDHUP


class Watcher(Protocol):
    def on_event(self, fd: int, mask: int, now: float) -> None:
        """`fd` is ready (mask: the epoll events); never raises for a problem of one request."""


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[float], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.watchers: dict[int, Watcher] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties in the heap are broken by creation order

    # -- descriptors ---------------------------------------------------------------------------
    def watch(self, fd: int, events: int, watcher: Watcher) -> None:
        self.epoll.register(fd, events)
        self.watchers[fd] = watcher

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def rebind(self, fd: int, watcher: Watcher) -> None:
        """Give a watched `fd` to another watcher (a kept connection changing hands); its events
        stay as they are until modified."""
        self.watchers[fd] = watcher

    def unwatch(self, fd: int) -> None:
        """Forget `fd`; call before closing it (a closed descriptor may be reused at once)."""
        if self.watchers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass

    # -- timers --------------------------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def timeout(self, now: float, longest: float) -> float:
        """How long the loop may wait: `longest`, or less when a timer is due sooner."""
        if not self._timers:
            return longest
        return max(0.0, min(longest, self._timers[0][0] - now))

    def run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.callback(now)

    @property
    def has_timers(self) -> bool:
        return bool(self._timers)

    def close(self) -> None:
        self.epoll.close()
