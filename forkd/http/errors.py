"""Every way a request can fail, each error carrying its status.

Parsers and handlers raise these; exactly one place (the worker's dispatch) catches them and writes
the reply. `close` says the connection cannot be trusted afterwards (the framing is unknown), so the
reply carries `Connection: close` and the connection is shut. A client hanging up is not an HTTPError.
"""

from __future__ import annotations

from typing import Any


class HTTPError(Exception):
    status = 500
    reason = "Internal Server Error"
    close = False  # True: the request framing is lost; reply, then close the connection

    def __init__(self, detail: str = "", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail or self.reason)
        self.detail = detail
        self.headers = headers or []
        self.request: Any = None  # the parsed head when a field refused it (for the access log)


# 4xx: the client's fault.
class BadRequest(HTTPError):
    status, reason, close = 400, "Bad Request", True


class Forbidden(HTTPError):
    status, reason = 403, "Forbidden"


class NotFound(HTTPError):
    status, reason = 404, "Not Found"


class MethodNotAllowed(HTTPError):
    status, reason = 405, "Method Not Allowed"

    def __init__(self, allow: str, detail: str = "") -> None:
        super().__init__(detail, [("Allow", allow)])


class RequestTimeout(HTTPError):
    status, reason, close = 408, "Request Timeout", True


class LengthRequired(HTTPError):
    status, reason, close = 411, "Length Required", True


class PreconditionFailed(HTTPError):
    status, reason = 412, "Precondition Failed"


class ContentTooLarge(HTTPError):
    status, reason, close = 413, "Content Too Large", True


class URITooLong(HTTPError):
    status, reason, close = 414, "URI Too Long", True


class RangeNotSatisfiable(HTTPError):
    status, reason = 416, "Range Not Satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__("", [("Content-Range", f"bytes */{size}")])


class ExpectationFailed(HTTPError):
    status, reason, close = 417, "Expectation Failed", True


class HeadersTooLarge(HTTPError):
    status, reason, close = 431, "Request Header Fields Too Large", True


# 5xx: the server's (or its CGI's) fault.
class InternalError(HTTPError):
    status, reason = 500, "Internal Server Error"


class NotImplementedCoding(HTTPError):
    status, reason, close = 501, "Not Implemented", True


class MethodNotImplemented(HTTPError):
    """A method forkd serves for no resource at all (RFC 9110 §15.6.2), e.g. CONNECT.

    Closes: a client may start sending tunnel bytes right behind a CONNECT head, before the
    answer; they must never be read as the next request.
    """

    status, reason, close = 501, "Not Implemented", True


class BadGateway(HTTPError):
    status, reason = 502, "Bad Gateway"


class ServiceUnavailable(HTTPError):
    status, reason, close = 503, "Service Unavailable", True


class GatewayTimeout(HTTPError):
    status, reason = 504, "Gateway Timeout"


class VersionNotSupported(HTTPError):
    status, reason, close = 505, "HTTP Version Not Supported", True
