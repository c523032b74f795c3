"""The route types: each name a route may carry maps to the module and class that serve it.

Adding a route type is one new module and one line here (and its config dataclass in
forkd.config). The worker builds handlers through `build_handler`; the master imports every module
listed here once, before it forks (`preload`), so a respawned worker boots without importing them.
"""

from __future__ import annotations

import importlib
from typing import Any

from forkd.config import Route
from forkd.handlers.base import Handler, HandlerContext

HANDLER_TYPES: dict[str, str] = {
    "static": "forkd.handlers.static:StaticHandler",
    "cgi": "forkd.handlers.cgi:CgiHandler",
    "wsgi": "forkd.handlers.wsgi:WsgiHandler",
    "redirect": "forkd.handlers.redirect:RedirectHandler",
    "fastcgi": "forkd.handlers.fastcgi:FastCgiHandler",
    "websocket": "forkd.handlers.websocket:WebSocketHandler",
    "status": "forkd.handlers.status:StatusHandler",
    "health": "forkd.handlers.health:HealthHandler",
}


def handler_class(kind: str) -> Any:
    module, _, name = HANDLER_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def build_handler(route: Route, context: HandlerContext) -> Handler:
    kind, settings = route.handler
    handler: Handler = handler_class(kind)(route.prefix, settings, context)
    return handler


def preload() -> None:
    for kind in HANDLER_TYPES:
        handler_class(kind)
