"""What a connection may use of its worker: the connection services (DESIGN.md, second version).

The worker builds one Services object and hands it to every Connection; a connection reaches
nothing else of the worker. The worker updates the few fields that change (`retiring`) and
provides the two callbacks that touch its own state (`forget`, `request_done`). This module imports
neither the worker nor the connection, so there is no import circle between them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forkd.config import Config
from forkd.http.parser import HeadParser
from forkd.logs import AccessLog, ErrorLog
from forkd.proxies import TrustedProxies
from forkd.reactor import Reactor
from forkd.routing import Router
from forkd.scoreboard import Slot
from forkd.transport import FailureLog


class Services:
    def __init__(self, config: Config, reactor: Reactor, router: Router, error_log: ErrorLog,
                 access_log: AccessLog, slot: Slot, server: str,
                 forget: Callable[[Any], None], request_done: Callable[[], None]) -> None:
        self.timeouts = config.timeouts
        self.limits = config.limits
        self.reactor = reactor
        self.epoll = reactor.epoll
        self.router = router
        self.head_parser = HeadParser(config.limits)
        self.error_log = error_log
        self.access_log = access_log
        self.access_log_enabled = access_log.enabled
        self.slot = slot
        self.server = server  # the Server header's value
        self.forget = forget  # drop a connection from the worker's table (its socket closes next)
        self.request_done = request_done
        self.retiring = False  # answer with Connection: close from now on
        self.ready: list[Any] = []  # connections holding pipelined requests, served next turn
        self.posted: list[Any] = []  # connections with an answer to send at the end of the turn
        self.body_bytes = 0  # request body bytes held right now (memory and spool files)
        self.hsts = config.hsts  # Strict-Transport-Security on HTTPS answers
        self.tls_handshake_timeout = config.tls.handshake_timeout if config.tls else 10.0
        self.tls_failures = FailureLog()  # handshake failures by class, each logged once
        self.trusted = TrustedProxies(config.trusted_proxies)  # may name clients (forkd.proxies)
