"""The request object handed to handlers, and the facts about the connection it came on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, BinaryIO


@dataclass(slots=True)
class ConnectionInfo:
    """Addresses of one accepted connection, for logs and CGI meta-variables."""

    remote_addr: str  # "" on a unix socket
    remote_port: int  # 0 on a unix socket
    server_addr: str  # the local address the connection arrived on ("" on a unix socket)
    server_port: int
    scheme: str = "http"
    tls_variables: dict[str, str] = field(default_factory=dict)  # HTTPS, SSL_* for CGI (TLS only)
    sni: str = ""  # the server name the TLS client asked for (SNI), "" without one
    # Issue 14 (forkd.proxies): the TCP peer when a trusted proxy named another client as
    # remote_addr ("" when remote_addr is the peer), and whether the peer may name one per request.
    peer_addr: str = ""
    trusted_peer: bool = False
    # The CGI meta-variables of the connection (forkd.handlers.cgi_env), worked out at its first
    # script request, and the same encoded as FastCGI params (forkd.handlers.fastcgi_script).
    # Not copied by dataclasses.replace: a copy names another client.
    cgi_variables: dict[bytes, bytes] | None = field(default=None, init=False, repr=False,
                                                     compare=False)
    fastcgi_params: bytes | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(slots=True)
class Request:
    """A parsed request head, plus its body once the worker has received all of it.

    Strings are decoded from bytes as latin-1, so every byte survives unchanged.
    `path` and `query` are still percent-encoded, exactly as sent: decoding and normalising the path is
    the handler's job (forkd.http.paths), because CGI must see the raw query and REQUEST_URI.
    """

    method: str  # "GET"
    target: str  # the raw request-target: "/a%20b?x=1", "http://host/a", "*"
    path: str  # the path part of the target, still encoded: "/a%20b" ("*" for asterisk-form)
    query: str  # the query without "?", still encoded ("" when absent)
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str]  # lower-cased names; repeated fields joined with ", " (RFC 9110 §5.3)
    host: str  # the Host header (or the authority of an absolute-form target); "" on HTTP/1.0 without one
    keep_alive: bool  # what the client asked for (version default + Connection header)
    content_length: int | None = None  # declared length; None when absent or chunked
    chunked: bool = False  # Transfer-Encoding: chunked
    expect_continue: bool = False  # Expect: 100-continue
    body: BinaryIO | None = None  # the whole received body, positioned at 0; None when there is none
    body_length: int = 0  # bytes in body (the de-chunked length for chunked requests)
    conn: ConnectionInfo | None = None
    request_line: str = ""  # the first line as received, for logs
    extra: dict[str, str] = field(default_factory=dict)  # REDIRECT_* and similar, set by handlers
    prepared: Any = None  # what the route's handler found in prepare(), for its handle()
    site: Any = None  # the virtual host that matched (forkd.routing.Site); None without servers

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)
