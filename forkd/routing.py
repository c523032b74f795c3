"""Which handler serves a request: prefix → route, a cache of answers, internal redirects.

Routes match the *normalised* path (as handlers see it), on whole segments: "/static" matches
"/static" and "/static/x", never "/staticx". Matching the raw path would let "/%63gi-bin/x" slip
past a "/cgi-bin/" route into the static route, which decodes it and would serve the script's
source. The answer is cached per raw path, so the common request costs one dict lookup.
"""

from __future__ import annotations

from forkd.config import Config
from forkd.handlers.base import Handler, HandlerContext, InternalRedirect
from forkd.handlers.paths import normalize
from forkd.handlers.registry import build_handler
from forkd.http.errors import InternalError, NotFound
from forkd.http.request import Request

ROUTE_CACHE = 4096  # raw request paths whose route is remembered...
ROUTE_CACHE_BYTES = 1 << 20  # ...holding at most this many bytes of paths (they may be 8 KB each)


def matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix or path == prefix.rstrip("/"):
        return True
    base = prefix if prefix.endswith("/") else prefix + "/"
    return path.startswith(base)


class Router:
    """The first route whose prefix matches the request path (on segment boundaries) wins."""

    def __init__(self, config: Config, context: HandlerContext) -> None:
        self.routes: list[tuple[str, Handler]] = [
            (route.prefix, build_handler(route, context)) for route in config.routes
        ]
        self.cache: dict[str, Handler] = {}  # raw path -> handler, bounded as said above
        self.cache_bytes = 0

    def handlers(self) -> list[Handler]:
        return [handler for _, handler in self.routes]

    def match(self, path: str) -> tuple[str, Handler]:
        for prefix, handler in self.routes:
            if matches(prefix, path):
                return prefix, handler
        raise NotFound()

    def route(self, request: Request) -> Handler:
        """The handler for a request (NotFound when no route matches, BadRequest for a bad path)."""
        path = request.path
        handler = self.cache.get(path)
        if handler is None:
            handler = self.match(normalize(path))[1]
            if len(self.cache) >= ROUTE_CACHE or self.cache_bytes >= ROUTE_CACHE_BYTES:
                self.cache.clear()
                self.cache_bytes = 0
            self.cache[path] = handler
            self.cache_bytes += len(path)
        return handler


def redirected(request: Request, redirect: InternalRedirect) -> Request:
    """The GET request an InternalRedirect asks for (RFC 3875 §6.2.2): no body, same client."""
    target = redirect.target
    headers = {k: v for k, v in request.headers.items()
               if k not in ("content-length", "transfer-encoding", "content-type")}
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise InternalError("internal redirect to a non-local target")
    new = Request("GET", target, path, query, request.version, headers, request.host,
                  request.keep_alive)
    new.conn = request.conn
    new.request_line = request.request_line
    new.extra = dict(redirect.extra)
    return new
