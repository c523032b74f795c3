"""The `health` route type: 200 "ok", or 503 "draining" while the server drains.

A load balancer's health check reads it. `forkd -s drain` (or a TERM with timeouts.drain) sets the
draining flag in the scoreboard header, which every worker maps: the next check sees it, with no
message between processes. Everything else is served as usual meanwhile, so the balancer takes the
server out of rotation before anything is refused. Never cached; the connection stays open.
"""

from __future__ import annotations

from forkd.config import HealthConfig
from forkd.handlers.base import HandlerContext
from forkd.http.errors import MethodNotAllowed
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.scoreboard import Scoreboard

HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]


class HealthHandler:
    def __init__(self, prefix: str, settings: HealthConfig, context: HandlerContext) -> None:
        self.board: Scoreboard | None = context.board

    def prepare(self, request: Request) -> None:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("GET, HEAD")

    def handle(self, request: Request) -> Response:
        if self.board is not None and self.board.draining:
            return Response(503, [*HEADERS, ("Retry-After", "5")], b"draining\n")
        return Response(200, list(HEADERS), b"ok\n")
