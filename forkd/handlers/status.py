"""The `status` route type: the live scoreboard of the whole server, read from shared memory.

Any worker answers for all of them: every worker maps the whole scoreboard (forkd.scoreboard), so
a request costs one snapshot (a few hundred memory reads) and no message to the master. The format
is chosen by the query: `?format=json`, `?format=prometheus` (text exposition 0.0.4), `?auto`
(Apache mod_status's machine-readable keys), HTML otherwise. The answer is never cached. The page
names the requests in progress (query strings included): protect the route with `access`.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from forkd.config import StatusConfig
from forkd.handlers.base import HandlerContext
from forkd.http.errors import InternalError, MethodNotAllowed
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.metrics import (
    PROMETHEUS_TYPE,
    render_auto,
    render_html,
    render_json,
    render_prometheus,
)
from forkd.scoreboard import Scoreboard

ALLOW = "GET, HEAD"
FORMATS = {
    "json": (render_json, "application/json"),
    "prometheus": (render_prometheus, PROMETHEUS_TYPE),
    "auto": (render_auto, "text/plain; charset=utf-8"),
    "html": (render_html, "text/html; charset=utf-8"),
}


class StatusHandler:
    def __init__(self, prefix: str, settings: StatusConfig, context: HandlerContext) -> None:
        self.board: Scoreboard | None = context.board

    def prepare(self, request: Request) -> None:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(ALLOW)

    def handle(self, request: Request) -> Response:
        if self.board is None:
            raise InternalError("no scoreboard")
        render, content_type = FORMATS[choose_format(request.query)]
        body = render(self.board.snapshot()).encode("utf-8")
        headers = [("Content-Type", content_type), ("Cache-Control", "no-store")]
        return Response(200, headers, body)


def choose_format(query: str) -> str:
    """`format=json|prometheus|auto|html`, or a bare `auto` (mod_status); HTML otherwise."""
    params = parse_qs(query, keep_blank_values=True)
    wanted = params.get("format", [""])[-1].lower()
    if wanted in FORMATS:
        return wanted
    if "auto" in params:
        return "auto"
    return "html"
