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

from forkd.config import Limits
from forkd.http.errors import (
    BadRequest,
    ContentTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplementedCoding,
    URITooLong,
    VersionNotSupported,
)
from forkd.http.request import Request

# -- Grammar (RFC 9110 §5.6.2, RFC 9112 §3, RFC 3986 §3) ------------------------------------------

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
#       / DIGIT / ALPHA
# token = 1*tchar
TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(rb"[" + TCHAR + rb"]+")

# HTTP-version = HTTP-name "/" DIGIT "." DIGIT ; HTTP-name = %s"HTTP"
HTTP_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")

# request-line = method SP request-target SP HTTP-version
# method = token
# request-target: any visible US-ASCII (the four forms are told apart after the match); RFC 3986
# allows no octets outside VCHAR in a URI, so neither CTLs nor obs-text are accepted here.
REQUEST_LINE = re.compile(rb"([" + TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")

# field-line = field-name ":" OWS field-value OWS ; field-name = token
# field-value = *field-content ; field-vchar = VCHAR / obs-text ; plus SP / HTAB inside.
# Everything else below 0x20, and DEL, is forbidden anywhere in a head. CR and LF are checked
# separately (they may only appear as the CRLF pair).
FORBIDDEN_OCTET = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Host = uri-host [ ":" port ]        (RFC 9110 §7.2)
# uri-host = IP-literal / IPv4address / reg-name ; reg-name = *( unreserved / pct-encoded / sub-delims )
# IP-literal = "[" ( IPv6address / IPvFuture ) "]" (checked loosely: hex digits, colons and dots)
HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")

# absolute-form = absolute-URI, for the "http" and "https" schemes (RFC 9110 §4.2):
# http-URI = "http" "://" authority path-abempty [ "?" query ]
ABSOLUTE_URI = re.compile(r"([Hh][Tt][Tt][Pp][Ss]?)://([^/?#]*)(.*)")

DIGITS = re.compile(r"[0-9]+")
MAX_LENGTH_DIGITS = 18  # fits an int64; longer is larger than any body limit (413)

SUPPORTED_VERSIONS = {(1, 1): "HTTP/1.1", (1, 0): "HTTP/1.0"}
SINGLETON_FIELDS = frozenset({"host", "content-length", "transfer-encoding"})


# -- Finding the head ----------------------------------------------------------------------------


def skip_empty_lines(buffer: bytearray) -> None:
    """Drop CRLFs received before a request line (RFC 9112 §2.2); call when buffer[0] is CR."""
    start = 0
    while buffer.startswith(b"\r\n", start):
        start += 2
    if start:
        del buffer[:start]


def find_head(buffer: bytes | bytearray, limits: Limits) -> int:
    """Index just past the blank line ending the head, or -1 when more bytes are needed.

    Raises as soon as the bytes so far cannot become a valid head within the limits.
    """
    end = buffer.find(b"\r\n\r\n")
    if end >= 0:
        if end + 4 > limits.header_bytes:
            raise HeadersTooLarge("request head too large")
        return end + 4
    _check_partial(buffer, limits)
    return -1


def _check_partial(buffer: bytes | bytearray, limits: Limits) -> None:
    line_end = buffer.find(b"\r\n")
    if line_end < 0:
        if buffer.find(b"\n") >= 0:
            raise BadRequest("bare LF line ending")
        if len(buffer) > limits.request_line:
            raise URITooLong("request line too long")
        return
    if line_end > limits.request_line:
        raise URITooLong("request line too long")
    parse_request_line(bytes(buffer[:line_end]))  # HTTP/0.9 and garbage fail here, early
    if len(buffer) > limits.header_bytes:
        raise HeadersTooLarge("request head too large")
    if buffer.count(b"\n") != buffer.count(b"\r\n"):
        raise BadRequest("bare LF line ending")


# -- Parsing the head ----------------------------------------------------------------------------


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    """(method, request-target, version) of a request line, or the error it deserves."""
    match = REQUEST_LINE.fullmatch(line)
    if match is None:
        raise _bad_request_line(line)
    method, target, major, minor = match.groups()
    version = SUPPORTED_VERSIONS.get((major[0] - 48, minor[0] - 48))
    if version is None:
        # RFC 9110 §15.6.6: 505 for a major version we do not support. The HTTP/2 preface
        # "PRI * HTTP/2.0" lands here too: a prior-knowledge h2 client gets 505 and a close.
        raise VersionNotSupported(f"HTTP/{major.decode()}.{minor.decode()} is not supported")
    return method.decode("ascii"), target.decode("ascii"), version


def _bad_request_line(line: bytes) -> BadRequest | VersionNotSupported:
    """Tell an unsupported version (505) from a malformed line (400)."""
    _, space, version = line.rpartition(b" ")
    if space and HTTP_VERSION.fullmatch(version) and version not in (b"HTTP/1.0", b"HTTP/1.1"):
        return VersionNotSupported("HTTP version not supported")
    return BadRequest("malformed request line")


def parse_head(head: bytes, limits: Limits) -> Request:
    """Parse a complete head (as delimited by find_head) into a Request without its body."""
    if FORBIDDEN_OCTET.search(head) is not None:
        raise BadRequest("control character in request head")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise BadRequest("bare CR or LF in request head")  # RFC 9112 §2.2
    lines = head[:-4].split(b"\r\n")
    request_line = lines[0]
    if len(request_line) > limits.request_line:
        raise URITooLong("request line too long")
    method, target, version = parse_request_line(request_line)
    if len(lines) - 1 > limits.headers:
        raise HeadersTooLarge("too many header fields")
    headers = parse_fields(lines, 1)
    request = Request(method, target, "", "", version, headers, "", version == "HTTP/1.1")
    request.request_line = request_line.decode("ascii")
    _apply_target(request, headers, version)
    if "connection" in headers:
        _apply_connection(request, headers["connection"], version)
    if "content-length" in headers or "transfer-encoding" in headers:
        _apply_framing(request, headers, version, limits)
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


def parse_fields(lines: list[bytes], start: int) -> dict[str, str]:
    """Field lines into a dict of lower-cased names; repeats joined with ", " (RFC 9110 §5.3)."""
    headers: dict[str, str] = {}
    token = TOKEN.fullmatch
    for index in range(start, len(lines)):
        name, colon, value = lines[index].partition(b":")
        if not colon or token(name) is None:
            # Covers obs-fold (the line starts with SP/HTAB: RFC 9112 §5.2), whitespace before the
            # colon (§5.1) and lines with no colon at all.
            raise BadRequest("malformed header field")
        key = name.lower().decode("ascii")
        text = value.strip(b" \t").decode("latin-1")
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
    if target[0] == "/":  # origin-form = absolute-path [ "?" query ]
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
        if not coding or TOKEN.fullmatch(coding.encode("latin-1")) is None:
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

