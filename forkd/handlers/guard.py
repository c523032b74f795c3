"""The route options every route type shares, applied in one place: access rules, basic auth.

The router wraps the handler of a route that carries `access` or `auth_basic` in a Guard. The
guard checks the request in `prepare`, before its body is read (so a refused upload is answered
at once, and `100 Continue` is never sent to a client that will be refused): first the client
address (403), then the credentials (401 with a WWW-Authenticate challenge). A malformed
Authorization header is a 401 like a wrong password, never an error of the server.

Once a user is authenticated, the request carries AUTH_TYPE and REMOTE_USER in `request.extra`
for CGI (RFC 3875 §4.1.1, §4.1.11), and the Authorization header is no longer passed to scripts
(forkd.handlers.cgi_env leaves HTTP_AUTHORIZATION out when REMOTE_USER is set): the password
stays with the server that checked it.
"""

from __future__ import annotations

from typing import Any

from forkd.access import AccessRules
from forkd.auth_basic import BasicAuth
from forkd.config import Route
from forkd.handlers.base import Exchange, Handler
from forkd.http.errors import Forbidden, HTTPError
from forkd.http.request import Request
from forkd.http.response import Response


class Unauthorized(HTTPError):
    status, reason = 401, "Unauthorized"


class Guard:
    """A route's handler behind its access rules and basic auth."""

    def __init__(self, inner: Handler, route: Route) -> None:
        self.inner = inner
        self.reads_body = getattr(inner, "reads_body", False)
        self.access = AccessRules(route.access) if route.access is not None else None
        self.auth = BasicAuth(route.auth_basic) if route.auth_basic is not None else None

    def prepare(self, request: Request) -> None:
        if self.access is not None:
            address = request.conn.remote_addr if request.conn is not None else ""
            if not self.access.admits(address):
                raise Forbidden("Your address may not use this resource.")
        if self.auth is not None:
            user = self.auth.user(request.headers.get("authorization"))
            if user is None:
                raise Unauthorized("", [("WWW-Authenticate", self.auth.challenge)])
            request.extra["AUTH_TYPE"] = "Basic"
            request.extra["REMOTE_USER"] = user
        self.inner.prepare(request)

    def handle(self, request: Request) -> Response | Exchange:
        return self.inner.handle(request)

    def __getattr__(self, name: str) -> Any:  # shutdown() and the like reach the handler
        return getattr(self.inner, name)
