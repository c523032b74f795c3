"""The CGI response header block: finding it, parsing it, and deciding what kind of response it is.

A script's output starts with header fields, one per line, ended by an empty line (RFC 3875 §6.2,
§6.3). Lines may end in LF or CRLF (scripts written in sh print LF). The block must contain at least one
CGI field (Content-Type, Location or Status); everything else is passed to the client. What is refused,
as a 502 (the script misbehaved):
  - no empty line before the output ends or before MAX_HEADER_BYTES;
  - a line that is not `token ":" value`;
  - a control character in a value other than HTAB, above all a bare CR: with LF line ends a CR
    inside a value would let a script (or data it echoes) split the response (response splitting);
  - a Status that is not a 3-digit code in 200..599, a Content-Length that is not digits, or a
    repeated Status / Location / Content-Type.
Continuation lines (obs-fold, inherited from HTTP/1.0 by §6.3) are unfolded to one space, as
RFC 9112 §5.2 asks of a recipient.

Then `classify` names the response (§6.2): a local redirect (Location is an absolute path, no Status)
is served internally; any other Location is a client redirect (302 unless a Status says otherwise);
the rest are documents. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from forkd.http.errors import BadGateway

MAX_HEADER_BYTES = 65536

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value octets (RFC 9110 §5.5): VCHAR, obs-text, SP and HTAB; nothing else (no CR, LF, NUL).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# The worker writes these itself (framing, Date, Server); a script's copy would duplicate or contradict
# them. Hop-by-hop fields (RFC 9110 §7.6.1) describe the script's pipe, not the client connection.
_DROPPED = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
    "content-length", "date", "server",
})


class MalformedOutput(BadGateway):
    """The script's header block breaks RFC 3875 §6."""


@dataclass(slots=True)
class CgiHeaders:
    status: int | None = None  # from Status; None when absent
    location: str | None = None
    content_type: str | None = None
    content_length: int | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)  # what goes to the client, in order


def find_end(buffer: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(end of the header lines, start of the body) once the empty line is in buffer, else None.

    `start` must be the beginning of a line (a previous call's progress is not remembered: callers
    pass the length of the buffer before the last append, backed up to the last line start).
    """
    position = start
    while True:
        newline = buffer.find(b"\n", position)
        if newline == -1:
            return None
        if newline == position or (newline == position + 1 and buffer[position] == 0x0D):
            return position, newline + 1
        position = newline + 1


def line_start(buffer: bytes | bytearray, length: int) -> int:
    """The start of the line that holds offset `length` (where a search may safely resume)."""
    return buffer.rfind(b"\n", 0, length) + 1


def parse(block: bytes) -> CgiHeaders:
    """Parse the header lines (the bytes before the empty line)."""
    headers = CgiHeaders()
    for names, raw_value in _fields(block):
        _add(headers, names, raw_value)
    if headers.status is None and headers.location is None and headers.content_type is None:
        raise MalformedOutput("no Content-Type, Location or Status header")
    return headers


def _fields(block: bytes) -> list[tuple[tuple[str, str], bytes]]:
    """((name, lower-cased name), raw value) of each field, continuation lines unfolded."""
    fields: list[tuple[tuple[str, str], bytes]] = []
    if not block:
        return fields
    lines = block[:-1].split(b"\n") if block.endswith(b"\n") else block.split(b"\n")
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedOutput("continuation line before any header")
            folded, value = fields[-1]
            fields[-1] = (folded, value + b" " + line.strip(b" \t"))
            continue
        raw_name, colon, value = line.partition(b":")
        names = _NAMES.get(raw_name)
        if names is None:
            if not colon or not _TOKEN.fullmatch(raw_name):
                raise MalformedOutput(f"not a header line: {line[:80]!r}")
            name = raw_name.decode("ascii")
            names = (name, name.lower())
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[raw_name] = names
        elif not colon:
            raise MalformedOutput(f"not a header line: {line[:80]!r}")
        fields.append((names, value.strip(b" \t")))
    return fields


# Field names seen so far (valid tokens only), decoded and lower-cased once per worker. Bounded:
# a script may echo names its clients chose.
_NAMES: dict[bytes, tuple[str, str]] = {}
_MAX_NAMES = 256


def _add(headers: CgiHeaders, names: tuple[str, str], raw_value: bytes) -> None:
    name, key = names
    if _BAD_VALUE.search(raw_value):
        raise MalformedOutput(f"control character in the value of {name!r}")
    value = raw_value.decode("latin-1")
    if key == "status":
        _once(headers.status, name)
        headers.status = _status(value)
        return
    if key == "location":
        _once(headers.location, name)
        headers.location = value
    elif key == "content-type":
        _once(headers.content_type, name)
        headers.content_type = value
    elif key == "content-length":
        if not value.isdigit() or not value.isascii():
            raise MalformedOutput(f"bad Content-Length {value!r}")
        if headers.content_length is not None and headers.content_length != int(value):
            raise MalformedOutput("conflicting Content-Length headers")
        headers.content_length = int(value)
    if key not in _DROPPED:
        headers.fields.append((name, value))


def _once(previous: object, name: str) -> None:
    if previous is not None:
        raise MalformedOutput(f"repeated {name} header")


def _status(value: str) -> int:
    code = value.split(" ", 1)[0]
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not 200 <= int(code) <= 599:
        raise MalformedOutput(f"bad Status {value!r}")
    return int(code)


# Made per response: plain (not frozen) slotted classes, three times cheaper to build.
@dataclass(slots=True)
class LocalRedirect:
    target: str  # an absolute path, with its query


@dataclass(slots=True)
class Document:
    status: int
    fields: list[tuple[str, str]]
    length: int | None


def classify(headers: CgiHeaders) -> LocalRedirect | Document:
    """§6.2: local redirect, client redirect (a document with a Location and 302) or document."""
    location = headers.location
    if location is not None and headers.status is None and is_local(location):
        return LocalRedirect(location)
    status = headers.status
    if status is None:
        status = 302 if location is not None else 200
    return Document(status, headers.fields, headers.content_length)


def take_head(buffer: bytearray, data: bytes) -> LocalRedirect | Document | None:
    """Add `data` to the output gathered so far; once the header block is complete, remove it
    from `buffer` (what follows is the body's start) and return what it says; None until then.

    Raises MalformedOutput, its detail the whole reason: no end within MAX_HEADER_BYTES, or a
    block that breaks §6. Only the tail is searched again (a block trickled in pieces is not
    rescanned from its start each time).
    """
    resume = line_start(buffer, len(buffer))
    buffer += data
    end = find_end(buffer, resume)
    if end is None:
        if len(buffer) > MAX_HEADER_BYTES:
            raise MalformedOutput(f"no end of the header block in {MAX_HEADER_BYTES} bytes")
        return None
    head = bytes(buffer[: end[0]])
    del buffer[: end[1]]
    known = _OUTCOMES.get(head)
    if known is None:
        try:
            known = classify(parse(head))
        except MalformedOutput as exc:
            raise MalformedOutput(f"malformed header block: {exc.detail}") from None
        if len(head) <= _LONGEST_REMEMBERED:
            if len(_OUTCOMES) >= _MAX_OUTCOMES:
                _OUTCOMES.clear()
            _OUTCOMES[head] = known
    if isinstance(known, Document):
        return Document(known.status, list(known.fields), known.length)  # the caller's own copy
    return known


# Header blocks seen lately and what they say: a script tends to send the same block again and
# again (the same Content-Type, the same X-Powered-By), and parsing it is the costliest part of
# reading its answer. Bounded in count and size; a block that breaks the rules is never kept.
_OUTCOMES: dict[bytes, LocalRedirect | Document] = {}
_MAX_OUTCOMES = 256
_LONGEST_REMEMBERED = 1024


def whole_body(document: Document, output: bytearray) -> bytes:
    """The body of a document whose output has ended, cut to its Content-Length if it gave one;
    MalformedOutput when the output ended before that length."""
    body = bytes(output)
    if document.length is not None:
        if len(body) < document.length:
            raise MalformedOutput("output ended before its Content-Length")
        body = body[: document.length]
    return body


def is_local(location: str) -> bool:
    """§6.2.2 local-Location = local-pathquery: an absolute path, not "//authority" (a client redirect)."""
    return location.startswith("/") and not location.startswith("//")
