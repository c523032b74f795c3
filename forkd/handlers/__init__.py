"""Routes and the handler interface.

A handler is built once per worker from its route's config and then called for every request the
route matches. It must not touch the socket: `prepare` may reject a request before its body is read
(so `Expect: 100-continue` is answered only when the body will be used), and `handle` returns a
Response or raises an HTTPError. Route prefixes match whole path segments: "/static" matches
"/static" and "/static/x", never "/staticx" or "/static../x".
"""

from __future__ import annotations

from typing import Protocol

from forkd.config import Config, Route
from forkd.http.errors import NotFound
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.logs import ErrorLog


class Handler(Protocol):
    def prepare(self, request: Request) -> None:
        """Raise an HTTPError to refuse the request before its body is received."""

    def handle(self, request: Request) -> Response:
        """Answer a request whose body (if any) is complete in request.body."""


class Router:
    """The first route whose prefix matches the request path (on segment boundaries) wins."""

    def __init__(self, config: Config, log: ErrorLog) -> None:
        self.routes: list[tuple[str, Handler]] = [
            (route.prefix, build_handler(route, config, log)) for route in config.routes
        ]

    def match(self, path: str) -> tuple[str, Handler]:
        for prefix, handler in self.routes:
            if matches(prefix, path):
                return prefix, handler
        raise NotFound()


def matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix or path == prefix.rstrip("/"):
        return True
    base = prefix if prefix.endswith("/") else prefix + "/"
    return path.startswith(base)


def build_handler(route: Route, config: Config, log: ErrorLog) -> Handler:
    """The handler of one route; `log` is the worker's error log (reopened by it on USR1)."""
    if route.static is not None:
        from forkd.handlers.static import StaticHandler

        return StaticHandler(route.prefix, route.static, config)
    from forkd.handlers.cgi import CgiHandler

    assert route.cgi is not None
    return CgiHandler(route.prefix, route.cgi, config, log)


class InternalRedirect(Exception):
    """Raised by a handler to have the worker serve another local target instead (RFC 3875 §6.2.2).

    The worker re-dispatches a GET for `target` (a path with optional query, no body) through the
    router, with `extra` (REDIRECT_STATUS, REDIRECT_URL, ...) copied into request.extra; it gives up
    with 500 after a few hops so two scripts cannot redirect to each other forever.
    """

    def __init__(self, target: str, extra: dict[str, str]) -> None:
        super().__init__(target)
        self.target = target
        self.extra = extra
