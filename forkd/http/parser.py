"""The HTTP/1.1 request-head parser: bytes in, a Request (or an HTTPError carrying its status) out.

Theory of operation
-------------------
The parser does no I/O. The worker appends received bytes to a per-connection buffer and asks
`find_head` whether a complete head (request line, fields, blank line) is there yet; `find_head`
also fails early on what can already be judged (a request line too long, a head too large, bare
LF line endings, HTTP/0.9 or garbage on the first line) so a hostile client is answered at once
instead of holding a buffer until its deadline. `parse_head` then turns the complete head into a
Request and decides the body framing (RFC 9112 §6.3); it raises an HTTPError subclass whose
status says what was wrong. Body bytes are never looked at here (see forkd.http.body).

The grammar below is deliberately strict: anything the RFCs let a recipient reject is rejected,
because a lenient parser behind or in front of another one is how requests get smuggled.

- Line endings are CRLF only. RFC 9112 §2.2 *allows* a recipient to accept a bare LF as a line
  terminator; forkd refuses it (400), since proxies that split on LF and servers that split on
  CRLF disagree on where fields end. A bare CR anywhere is refused (§2.2: MUST reject or replace).
- Leading empty lines before a request line are skipped (§2.2: SHOULD ignore at least one).
- obs-fold (a field line starting with SP/HTAB) is refused (§5.2), as is whitespace between a
  field name and its colon (§5.1: MUST reject with 400).
- Transfer-Encoding and Content-Length together are refused (§6.1 allows rejecting; it is the
  smuggling signature), as is Transfer-Encoding on HTTP/1.0 (§6.1: the framing is then faulty).

Everything is done with bytes methods and compiled patterns over whole lines; there is no
per-character Python loop on the hot path.
"""

from __future__ import annotations

import re
from typing import Any

from forkd.config import Limits
from forkd.http.errors import (
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    HTTPError,
    MethodNotImplemented,
    NotImplementedCoding,
    URITooLong,
    VersionNotSupported,
)
from forkd.http.request import Request

# -- Grammar (RFC 9110 §5.6.2, RFC 9112 §2-§5, RFC 3986 §3) -------------------------------------
# Heads are decoded as latin-1 (one char per octet, every octet kept) and matched as str.

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
#       / DIGIT / ALPHA
# token = 1*tchar
TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(f"[{TCHAR}]+")

# HTTP-version = HTTP-name "/" DIGIT "." DIGIT ; HTTP-name = %s"HTTP"
HTTP_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")

# request-line = method SP request-target SP HTTP-version
# method = token
# request-target: any visible US-ASCII (the four forms are told apart after the match); RFC 3986
# allows no octets outside VCHAR in a URI, so neither CTLs nor obs-text are accepted here.
REQUEST_LINE = re.compile(rf"([{TCHAR}]+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")

# field-line = field-name ":" OWS field-value OWS ; field-name = token ; each line ends in CRLF.
# The whole field section is matched at once. Inside a line no CR or LF may appear, so this also
# refuses bare CR and bare LF (RFC 9112 §2.2), obs-fold (a line starting with SP/HTAB, §5.2) and
# whitespace before the colon (§5.1).
FIELD_SECTION = re.compile(rf"(?:[{TCHAR}]+:[^\r\n]*\r\n)*")

# field-vchar = VCHAR / obs-text, plus SP and HTAB: every other CTL, and DEL, is refused anywhere in
# a head. bytes.translate deletes the allowed octets; whatever is left is forbidden.
ALLOWED_OCTETS = bytes([9, 10, 13]) + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

# Host = uri-host [ ":" port ]        (RFC 9110 §7.2)
# uri-host = IP-literal / IPv4address / reg-name ; reg-name = *( unreserved / pct-encoded / sub-delims )
# IP-literal = "[" ( IPv6address / IPvFuture ) "]" (checked loosely: hex digits, colons and dots)
HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")

# absolute-form = absolute-URI, for the "http" and "https" schemes (RFC 9110 §4.2):
# http-URI = "http" "://" authority path-abempty [ "?" query ]
ABSOLUTE_URI = re.compile(r"([Hh][Tt][Tt][Pp][Ss]?)://([^/?#]*)(.*)")

# authority-form = uri-host ":" port   (RFC 9112 §3.2.3; only CONNECT uses it). The port must be
# present and valid (RFC 9110 §9.3.6: a server MUST reject an empty or invalid port with 400).
AUTHORITY_FORM = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+):"
    r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)

DIGITS = re.compile(r"[0-9]+")
MAX_LENGTH_DIGITS = 18  # fits an int64; longer is larger than any body limit (413)

SUPPORTED_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})
SINGLETON_FIELDS = frozenset({"host", "content-length", "transfer-encoding"})


# -- Finding the head ----------------------------------------------------------------------------


def skip_empty_lines(buffer: bytearray) -> None:
    """Drop CRLFs received before a request line (RFC 9112 §2.2); call when buffer[0] is CR."""
    start = 0
    while buffer.startswith(b"\r\n", start):
        start += 2
    if start:
        del buffer[:start]


def find_head(buffer: bytes | bytearray, limits: Limits, scanned: int = 0) -> int:
    """Index just past the blank line ending the head, or -1 when more bytes are needed.

    Raises as soon as the bytes so far cannot become a valid head within the limits. `scanned`
    is the buffer length at the previous call for the same head: only the bytes after it are
    examined again, so a head trickled in many small pieces costs linear, not quadratic, time.
    """
    end = buffer.find(b"\r\n\r\n", max(scanned - 3, 0))
    if end >= 0:
        if end + 4 > limits.header_bytes:
            raise HeadersTooLarge("request head too large")
        return end + 4
    # Re-examine the last old byte when it is a CR: it may pair with a new LF.
    _check_partial(buffer, limits, scanned - 1 if scanned and buffer[scanned - 1] == 13 else scanned)
    return -1


def _check_partial(buffer: bytes | bytearray, limits: Limits, start: int) -> None:
    """Fail early on an incomplete head; bytes before `start` were checked already."""
    line_end = buffer.find(b"\r\n", 0, limits.request_line + 2)
    if line_end < 0:
        if len(buffer) > limits.request_line + 1:  # no CRLF where the longest line would end
            raise URITooLong("request line too long")
        if buffer.find(b"\n", start) >= 0:
            raise BadRequest("bare LF line ending")
        return
    if line_end > limits.request_line:
        raise URITooLong("request line too long")
    if line_end + 2 > start:  # the request line is new: HTTP/0.9 and garbage fail here, early
        parse_request_line(buffer[:line_end].decode("latin-1"))
    if len(buffer) > limits.header_bytes:
        raise HeadersTooLarge("request head too large")
    if buffer.count(b"\n", start) != buffer.count(b"\r\n", start):
        raise BadRequest("bare LF line ending")


# -- Parsing the head ----------------------------------------------------------------------------


def parse_request_line(line: str) -> tuple[str, str, str]:
    """(method, request-target, version) of a request line, or the error it deserves."""
    match = REQUEST_LINE.fullmatch(line)
    if match is None:
        raise _bad_request_line(line)
    method, target, version = match.groups()
    if version not in SUPPORTED_VERSIONS:
        # RFC 9110 §15.6.6: 505 for a major version we do not support. The HTTP/2 preface
        # "PRI * HTTP/2.0" lands here too: a prior-knowledge h2 client gets 505 and a close.
        raise VersionNotSupported(f"{version} is not supported")
    return method, target, version


def _bad_request_line(line: str) -> BadRequest | VersionNotSupported:
    """Tell an unsupported version (505) from a malformed line (400)."""
    _, space, version = line.rpartition(" ")
    if space and HTTP_VERSION.fullmatch(version) and version not in SUPPORTED_VERSIONS:
        return VersionNotSupported("HTTP version not supported")
    return BadRequest("malformed request line")


class HeadParser:
    """parse_head with a memory: a head already seen (byte for byte) is not parsed again.

    Keep-alive clients repeat themselves (the same head for every poll, asset or benchmark request),
    and parsing is the largest share of a small request's cost. The key is the complete head, so a
    hit is exactly the result parse_head would return; heads that fail are never stored. Bounded in
    entries and in the size of the heads kept.
    """

    def __init__(self, limits: Limits, entries: int = 256, largest: int = 2048) -> None:
        self.limits = limits
        self.entries = entries
        self.largest = largest
        self.cache: dict[bytes, tuple[Any, ...]] = {}

    def parse(self, head: bytes) -> Request:
        entry = self.cache.get(head)
        if entry is not None:
            method, target, path, query, version, headers, host, keep, length, chunked, expect, line = entry
            request = Request(method, target, path, query, version, dict(headers), host, keep, length,
                              chunked, expect)
            request.request_line = line
            return request
        request = parse_head(head, self.limits)
        if len(head) <= self.largest:
            if len(self.cache) >= self.entries:
                self.cache.clear()
            self.cache[head] = (
                request.method, request.target, request.path, request.query, request.version,
                dict(request.headers), request.host, request.keep_alive, request.content_length,
                request.chunked, request.expect_continue, request.request_line,
            )
        return request


def parse_head(head: bytes, limits: Limits) -> Request:
    """Parse a complete head (as delimited by find_head) into a Request without its body."""
    if len(head) > limits.header_bytes:
        raise HeadersTooLarge("request head too large")
    if head.translate(None, ALLOWED_OCTETS):
        raise BadRequest("control character in request head")
    text = head.decode("latin-1")
    line_end = text.find("\r\n")
    if line_end > limits.request_line:
        raise URITooLong("request line too long")
    method, target, version = parse_request_line(text[:line_end])
    fields = text[line_end + 2 : -2]  # every field line with its CRLF, without the blank line
    if fields:
        if fields.count("\n") > limits.headers:
            raise HeadersTooLarge("too many header fields")
        if FIELD_SECTION.fullmatch(fields) is None:
            raise BadRequest("malformed header field")
        headers = parse_fields(fields[:-2].split("\r\n"))
    else:
        headers = {}
    request = Request(method, target, "", "", version, headers, "", version == "HTTP/1.1")
    request.request_line = text[:line_end]
    try:
        return _apply_head(request, headers, version, limits)
    except HTTPError as error:
        error.request = request  # refused after its fields were read: the access log shows them
        raise


def _apply_head(request: Request, headers: dict[str, str], version: str, limits: Limits) -> Request:
    """What the fields say about target, connection, framing and expectations."""
    method = request.method
    _apply_target(request, headers, version)
    if "connection" in headers:
        _apply_connection(request, headers["connection"], version)
    if "content-length" in headers or "transfer-encoding" in headers:
        _apply_framing(request, headers, version, limits)
    if method == "CONNECT":
        _refuse_connect(request)
    if "expect" not in headers:
        return request
    expect = headers["expect"]
    if version == "HTTP/1.1":
        # RFC 9110 §10.1.1: 100-continue is the only expectation defined; others get 417.
        # An HTTP/1.0 request's Expect is ignored (the MUST for 100-continue, by extension).
        if expect.lower() != "100-continue":
            raise ExpectationFailed("unsupported expectation")
        request.expect_continue = request.has_body
    return request


def parse_fields(lines: list[str]) -> dict[str, str]:
    """Valid field lines into a dict of lower-cased names (RFC 9110 §5.1: case-insensitive)."""
    pairs = [line.partition(":") for line in lines]
    headers = {name.lower(): value.strip(" \t") for name, _, value in pairs}
    if len(headers) != len(pairs):
        return _join_repeats(pairs)
    return headers


def _join_repeats(pairs: list[tuple[str, str, str]]) -> dict[str, str]:
    """Repeated fields are joined with ", " (RFC 9110 §5.3), except those that must be single."""
    headers: dict[str, str] = {}
    for name, _, value in pairs:
        key = name.lower()
        text = value.strip(" \t")
        if key in headers:
            if key in SINGLETON_FIELDS:
                _check_duplicate(key, headers[key], text)
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    return headers


def _check_duplicate(key: str, first: str, second: str) -> None:
    if key == "content-length":
        return  # identical repeats are allowed (RFC 9110 §8.6); _content_length checks them
    raise BadRequest(f"duplicate {key} header")  # RFC 9112 §3.2 (Host); TE repeats are a smell


def _apply_target(request: Request, headers: dict[str, str], version: str) -> None:
    """Split the request-target into path and query; settle the host (RFC 9112 §3.2)."""
    target = request.target
    host = headers.get("host")
    if host is None:
        if version == "HTTP/1.1":
            raise BadRequest("missing Host header")  # RFC 9112 §3.2: MUST respond 400
        host = ""
    if request.method == "CONNECT":  # authority-form, and only that (RFC 9110 §9.3.6)
        if AUTHORITY_FORM.fullmatch(target) is None:
            raise BadRequest("CONNECT needs an authority-form target (host:port)")
        path, query = "", ""
    elif target[0] == "/":  # origin-form = absolute-path [ "?" query ]
        path, _, query = target.partition("?")
    elif target == "*":  # asterisk-form, only for OPTIONS (RFC 9112 §3.2.4)
        if request.method != "OPTIONS":
            raise BadRequest("asterisk-form is only for OPTIONS")
        path, query = "*", ""
    else:
        match = ABSOLUTE_URI.fullmatch(target)
        if match is None:
            raise BadRequest("unsupported request-target form")
        authority, rest = match.group(2), match.group(3)
        if "@" in authority or not authority:
            raise BadRequest("invalid authority in request-target")
        # RFC 9112 §3.2.2: the authority of an absolute-form target replaces the Host header.
        host = authority
        path, _, query = rest.partition("?")
        path = path or "/"
    if "#" in target:
        raise BadRequest("fragment in request-target")
    if HOST.fullmatch(host) is None:
        raise BadRequest("invalid Host header")
    request.path, request.query, request.host = path, query, host


def _refuse_connect(request: Request) -> None:
    """A well-formed CONNECT: forkd is an origin server and opens no tunnels.

    Why 501 and not 405 (RFC 9110 §15.5.6) or 400: 405 says the method is known but not allowed
    for *the target resource*, and must list that resource's methods in Allow; a CONNECT target
    is another host's authority, not a resource here, so there is no Allow list to give. The
    request is well-formed, so 400 would blame the client wrongly. 501 (§15.6.2, and §9.1: an
    origin server SHOULD answer 501 to a method it does not implement) says exactly this: this
    server supports CONNECT for no resource at all.
    """
    raise MethodNotImplemented("CONNECT is not served here")


def _apply_connection(request: Request, value: str, version: str) -> None:
    """Keep-alive is the HTTP/1.1 default; HTTP/1.0 must ask for it (RFC 9112 §9.3)."""
    options = {option.strip(" \t").lower() for option in value.split(",")}
    if "close" in options:
        request.keep_alive = False
    else:
        request.keep_alive = version == "HTTP/1.1" or "keep-alive" in options


def _apply_framing(request: Request, headers: dict[str, str], version: str, limits: Limits) -> None:
    """Decide how the body is delimited (RFC 9112 §6.3)."""
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if version == "HTTP/1.0":
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if "content-length" in headers:
            raise BadRequest("both Transfer-Encoding and Content-Length")
        request.chunked = _transfer_coding_is_chunked(coding)
        return
    length = headers.get("content-length")
    if length is not None:
        request.content_length = _content_length(length, limits)


def _transfer_coding_is_chunked(value: str) -> bool:
    """transfer-coding list; chunked must be final and only once (RFC 9112 §6.1, §7)."""
    codings = [coding.strip(" \t").lower() for coding in value.split(",")]
    for coding in codings:
        if not coding or TOKEN.fullmatch(coding) is None:
            raise BadRequest("malformed Transfer-Encoding")
    if codings[-1] != "chunked" and "chunked" in codings or codings.count("chunked") > 1:
        raise BadRequest("chunked is not the final transfer coding")
    if codings != ["chunked"]:
        # RFC 9112 §6.1: a coding we do not understand gets 501 (gzip, "xchunked", "identity", ...).
        raise NotImplementedCoding("unsupported transfer coding")
    return True


def _content_length(value: str, limits: Limits) -> int:
    """Content-Length = 1*DIGIT; a list of identical values is accepted (RFC 9110 §8.6)."""
    values = {item.strip(" \t") for item in value.split(",")}
    if len(values) != 1:
        raise BadRequest("conflicting Content-Length values")
    text = values.pop()
    if DIGITS.fullmatch(text) is None:
        raise BadRequest("malformed Content-Length")  # "+5", "-1", "0x10", "5 5", ""
    if len(text) > MAX_LENGTH_DIGITS or int(text) > limits.body:
        raise ContentTooLarge("request body too large")
    return int(text)

