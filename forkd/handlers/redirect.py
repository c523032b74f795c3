"""The `redirect` route type: answer every request of the route with a redirect (RFC 9110 §15.4).

`to` is a template with four placeholders, and nothing else is substituted:

- `{host}`: the request's host (Host header or absolute-form authority), lower-cased, no port
  (an HTTP/1.0 request without one: the site's first name, else the address it came to);
- `{uri}`: the request target as received, in origin form: the whole path and the query (never
  stripped of the route's prefix);
- `{path}`: the whole path, still percent-encoded as received;
- `{query}`: the query without "?".

The values come from the client, so they are made safe before they reach `Location`: every byte
outside the URI character set (RFC 3986 §2: unreserved, reserved and "%") is percent-encoded,
so CR, LF, spaces, quotes and non-ASCII bytes can never break the header or the URI. A result that
starts with "//" (a path template such as "/{path}" fed "//evil.example") would be a network-path
reference, which browsers follow to another host: its leading slashes are collapsed into one, so a
local redirect stays local. The config check refuses templates that are neither an absolute
http(s) URL nor a path starting with one "/".
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from forkd.config import RedirectConfig
from forkd.handlers.base import HandlerContext
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.routing import host_name

PLACEHOLDER = re.compile(r"\{(host|uri|path|query)\}")
# RFC 3986 §2.2 and §2.3, and "%" so that percent-encoded octets stay as they are.
URI_SAFE = "-._~:/?#[]@!$&'()*+,;=%"
LEADING_SLASHES = re.compile(r"^/[/\\]+")


class RedirectHandler:
    def __init__(self, prefix: str, settings: RedirectConfig, context: HandlerContext) -> None:
        self.prefix = prefix
        self.template = settings.to
        self.status = settings.status
        self.static = PLACEHOLDER.search(settings.to) is None  # nothing to substitute

    def prepare(self, request: Request) -> None:
        pass  # every request is answered; a body is read and dropped by the connection

    def handle(self, request: Request) -> Response:
        location = self.template if self.static else self.location(request)
        link = html.escape(location)
        body = f'<!DOCTYPE html>\n<p>Moved to <a href="{link}">{link}</a></p>\n'.encode()
        headers = [("Location", location), ("Content-Type", "text/html; charset=utf-8")]
        return Response(self.status, headers, body)

    def location(self, request: Request) -> str:
        values = {
            "host": host_name(request.host) or _own_name(request),
            "uri": request.path + ("?" + request.query if request.query else ""),
            "path": request.path,
            "query": request.query,
        }
        location = PLACEHOLDER.sub(lambda match: _uri_safe(values[match.group(1)]), self.template)
        return LEADING_SLASHES.sub("/", location)


def _own_name(request: Request) -> str:
    """{host} for a request without a host (HTTP/1.0): the site's name, else the local address."""
    name = request.site.server_name("") if request.site is not None else ""
    if not name and request.conn is not None and request.conn.server_addr:
        address = request.conn.server_addr
        name = f"[{address}]" if ":" in address else address
    return name or "localhost"


def _uri_safe(value: str) -> str:
    """value (latin-1 text holding the octets received) with every non-URI octet encoded."""
    return quote(value.encode("latin-1", "replace"), safe=URI_SAFE)
