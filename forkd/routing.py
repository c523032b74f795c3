"""Which handler serves a request: host → server → prefix → route, caches, internal redirects.

Servers (virtual hosts, `servers:` in the config) are chosen by the request's host: the Host
header or the authority of an absolute-form target (the parser puts either in `request.host`),
lower-cased, without its port and one trailing dot. Exact names are tried first, then the longest
matching wildcard (`*.example.org` matches `a.example.org` and `a.b.example.org`, never
`example.org`), then the default server. Without `servers`, the top-level routes form the one
site that answers every host, and the host plays no part in routing at all.

On HTTPS, the TLS handshake already chose a server through SNI (forkd.tls records the name); a
request whose host leads to another server than the SNI name does is answered 421 Misdirected
Request (RFC 9110 §15.5.20), so a client cannot reach a site through a certificate (or a client
certificate policy) that is not its own.

Within a site, routes match the *normalised* path (as handlers see it), on whole segments:
"/static" matches "/static" and "/static/x", never "/staticx". Matching the raw path would let
"/%63gi-bin/x" slip past a "/cgi-bin/" route into the static route, which decodes it and would
serve the script's source. Answers are cached: host → site and, per site, raw path → handler,
each bounded in entries and bytes (clients choose both keys). With one site the connection looks
its handler up with one dict access (`router.cache`, keyed by raw path).

A route may be scoped to a scheme (`scheme: http` or `https`; the connection's scheme, so a TLS
listener's requests are https): it is skipped for requests over the other one, which is how
"plain HTTP redirects to HTTPS" is a `scheme: http` redirect before an unscoped route. Only a
site that has such a route pays for it: its path cache is kept per scheme, and a lone scoped site
leaves `router.cache` empty so the connection always asks `route()`. Sites without one keep
the path-only cache and the one-lookup fast path.

Route options (access rules, basic auth) are applied here, in one place: the router wraps the
handler of a route that carries them (forkd.handlers.guard).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from forkd.config import Config, Route, ServerConfig
from forkd.handlers.base import Handler, HandlerContext, InternalRedirect
from forkd.handlers.paths import normalize
from forkd.handlers.registry import build_handler
from forkd.http.errors import HTTPError, InternalError, NotFound
from forkd.http.request import Request

ROUTE_CACHE = 4096  # raw request paths whose route is remembered...
ROUTE_CACHE_BYTES = 1 << 20  # ...holding at most this many bytes of paths (they may be 8 KB each)
HOST_CACHE = 1024  # raw Host values whose server is remembered
HOST_CACHE_BYTES = 1 << 18


class MisdirectedRequest(HTTPError):
    """The host names another server than the TLS handshake's SNI did (RFC 9110 §15.5.20)."""

    status, reason = 421, "Misdirected Request"


def matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix or path == prefix.rstrip("/"):
        return True
    base = prefix if prefix.endswith("/") else prefix + "/"
    return path.startswith(base)


def host_name(host: str) -> str:
    """The name a Host value routes by: lower-cased, no port, no trailing dot."""
    host = host.lower()
    if host.startswith("["):  # an IPv6 literal keeps its brackets, loses its port
        return host[: host.find("]") + 1] if "]" in host else host
    name = host.partition(":")[0]
    return name.removesuffix(".")


@dataclass(eq=False)
class Site:
    """One virtual host (or the only site): its routes, handlers and path cache."""

    names: tuple[str, ...]
    hsts: str | None
    routes: list[tuple[str, Handler]] = field(default_factory=list)
    schemes: list[str | None] = field(default_factory=list)  # each route's scheme (None: both)
    cache: dict[str, Handler] = field(default_factory=dict)  # raw path -> handler
    cache_bytes: int = 0
    # With scheme-scoped routes: a path cache per scheme ("http", "https"); `cache` stays unused.
    scoped: dict[str, dict[str, Handler]] | None = None

    def __post_init__(self) -> None:
        if any(self.schemes):
            self.scoped = {"http": {}, "https": {}}

    def server_name(self, host: str) -> str:
        """SERVER_NAME for a request to `host`: its name when it is one of ours, else our first."""
        name = host_name(host)
        if not self.names or name in self.names or any(
            pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.names
        ):
            return name
        return next((n for n in self.names if not n.startswith("*")), name)

    def match(self, path: str, scheme: str = "http") -> tuple[str, Handler]:
        for (prefix, handler), only in zip(self.routes, self.schemes, strict=True):
            if (only is None or only == scheme) and matches(prefix, path):
                return prefix, handler
        raise NotFound()

    def route(self, path: str, scheme: str = "http") -> Handler:
        cache = self.cache if self.scoped is None else self.scoped[scheme]
        handler = cache.get(path)
        if handler is None:
            handler = self.match(normalize(path), scheme)[1]
            if len(cache) >= ROUTE_CACHE or self.cache_bytes >= ROUTE_CACHE_BYTES:
                for each in (self.cache,) if self.scoped is None else self.scoped.values():
                    each.clear()
                self.cache_bytes = 0
            cache[path] = handler
            self.cache_bytes += len(path)
        return handler


class Router:
    """Host → site → first route whose prefix matches the path (on segment boundaries)."""

    def __init__(self, config: Config, context: HandlerContext) -> None:
        self.sites: list[Site] = []
        self.exact: dict[str, Site] = {}
        self.wildcards: list[tuple[str, Site]] = []  # (".example.org", site), longest first
        self.hosts: dict[str, Site] = {}  # raw host value -> site, bounded as said above
        self.hosts_bytes = 0
        if not config.servers:
            self.default = self._site((), config.hsts, config.routes, context)
        else:
            for server in config.servers:
                self._add_server(server, config, context)
            default = next((s for s, c in zip(self.sites, config.servers) if c.default), None)
            self.default = default or self.sites[0]
            self.wildcards.sort(key=lambda item: -len(item[0]))
        self.single = not config.servers
        # One site without scheme-scoped routes: the connection's one-lookup fast path (raw path
        # -> handler). Otherwise it stays empty and every request asks route().
        fast = self.single and self.default.scoped is None
        self.cache: dict[str, Handler] = self.default.cache if fast else {}

    def _add_server(self, server: ServerConfig, config: Config, context: HandlerContext) -> None:
        # A server's handlers see its own routes as the config's (CGI's DOCUMENT_ROOT and
        # PATH_TRANSLATED come from them) and its own hsts.
        own = dataclasses.replace(config, routes=server.routes, hsts=server.hsts or config.hsts,
                                  servers=())
        site = self._site(server.names, own.hsts, server.routes,
                          dataclasses.replace(context, config=own))
        for name in server.names:
            if name.startswith("*."):
                self.wildcards.append((name[1:], site))
            else:
                self.exact[name] = site

    def _site(self, names: tuple[str, ...], hsts: str | None, routes: tuple[Route, ...],
              context: HandlerContext) -> Site:
        site = Site(names, hsts, [(route.prefix, _build(route, context)) for route in routes],
                    [route.scheme for route in routes])
        self.sites.append(site)
        return site

    def handlers(self) -> list[Handler]:
        return [getattr(handler, "inner", handler) for site in self.sites
                for _, handler in site.routes]

    def site_for(self, host: str) -> Site:
        """The site serving a raw Host value (exact name, longest wildcard, default)."""
        site = self.hosts.get(host)
        if site is None:
            name = host_name(host)
            site = self.exact.get(name)
            if site is None:
                site = next((s for suffix, s in self.wildcards if name.endswith(suffix)),
                            self.default)
            if len(self.hosts) >= HOST_CACHE or self.hosts_bytes >= HOST_CACHE_BYTES:
                self.hosts.clear()
                self.hosts_bytes = 0
            self.hosts[host] = site
            self.hosts_bytes += len(host)
        return site

    def match(self, path: str, scheme: str = "http") -> tuple[str, Handler]:
        """The default site's route for a normalised path."""
        return self.default.match(path, scheme)

    def route(self, request: Request) -> Handler:
        """The handler for a request (NotFound when no route matches, BadRequest for a bad path,
        MisdirectedRequest when the host and the TLS SNI name lead to different servers)."""
        conn = request.conn
        scheme = conn.scheme if conn is not None else "http"
        if self.single:
            return self.default.route(request.path, scheme)
        site = self.site_for(request.host)
        request.site = site
        if conn is not None and conn.sni and self.site_for(conn.sni) is not site:
            raise MisdirectedRequest("this connection was set up for another server")
        return site.route(request.path, scheme)


def _build(route: Route, context: HandlerContext) -> Handler:
    handler = build_handler(route, context)
    if route.access is not None or route.auth_basic is not None:
        from forkd.handlers.guard import Guard  # only configs with route options load it

        handler = Guard(handler, route)
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
