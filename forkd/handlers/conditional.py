"""Validators, conditional requests and byte ranges (RFC 9110 §8.8, §13, §14): pure functions, no I/O.

The static handler knows a file's strong entity-tag and modification time; this module decides what a
request's If-* and Range fields make of them:

  - `evaluate_preconditions` applies §13.2.2 in its fixed order (If-Match, else If-Unmodified-Since;
    then If-None-Match, else If-Modified-Since) and answers None (go on), 304 or 412;
  - `if_range_allows` says whether a Range may be honoured (§13.1.5);
  - `parse_ranges` turns a Range field into the byte spans to send, `None` when the field must be
    ignored (not bytes, bad syntax, abusive), or `[]` when nothing is satisfiable (416).

Range abuse (§14.2, "many small ranges", overlapping ranges): at most MAX_RANGE_SPECS specs are read,
overlapping or nearly adjacent spans are coalesced (§14.6), and a request still needing more than
MAX_PARTS parts gets the whole representation instead. A server may always ignore Range.
"""

from __future__ import annotations

import calendar
import re
import time

MAX_RANGE_SPECS = 100  # more range-specs than this in one field: ignore the field
MAX_PARTS = 32  # more parts than this after coalescing: send the whole representation
COALESCE_GAP = 80  # spans closer than a part header's size are sent as one (RFC 9110 §14.6)
_HUGE = 1 << 62  # stands for a position too long to be real

# -- HTTP-date (RFC 9110 §5.6.7) --------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT   ("Sun, 06 Nov 1994 08:49:37 GMT")
_IMF = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT")
# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT   ("Sunday, 06-Nov-94 08:49:37 GMT")
_RFC850 = re.compile(r"[A-Z][a-z]+day, (\d\d)-([A-Z][a-z]{2})-(\d\d) (\d\d):(\d\d):(\d\d) GMT")
# asctime-date = day-name SP date3 SP time-of-day SP year   ("Sun Nov  6 08:49:37 1994")
_ASCTIME = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})")


def http_date(seconds: float) -> str:
    """IMF-fixdate, the only form a sender may generate (RFC 9110 §5.6.7)."""
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {tuple(_MONTHS)[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch for any of the three HTTP-date forms; None when invalid."""
    text = text.strip()
    if m := _IMF.fullmatch(text):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _RFC850.fullmatch(text):
        day, month, yy, hh, mm, ss = m.groups()
        # Two-digit years: pick the century that puts the date at most 50 years ahead (§5.6.7).
        this_year = time.gmtime().tm_year
        year_int = this_year - this_year % 100 + int(yy)
        if year_int > this_year + 50:
            year_int -= 100
        year = str(year_int)
    elif m := _ASCTIME.fullmatch(text):
        month, day, hh, mm, ss, year = m.groups()
    else:
        return None
    if month not in _MONTHS:
        return None
    try:
        fields = (int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss))
        time.strptime(f"{fields[0]:04d}-{fields[1]:02d}-{fields[2]:02d}", "%Y-%m-%d")  # a real day
    except ValueError:
        return None
    if fields[3] > 23 or fields[4] > 59 or fields[5] > 60:
        return None
    return calendar.timegm((*fields, 0, 0, 0))


# -- Entity tags (RFC 9110 §8.8.3) ---------------------------------------------------------------

# entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def parse_etags(value: str) -> list[tuple[bool, str]]:
    """The (weak, opaque-tag) pairs of an If-Match / If-None-Match list ("*" is `is_star`'s job).
    A field with bad syntax yields an empty list: it matches nothing."""
    out: list[tuple[bool, str]] = []
    pos = 0
    value = value.strip()
    while pos < len(value):
        if value[pos] in ", \t":  # empty list elements are allowed (RFC 9110 §5.6.1)
            pos += 1
            continue
        m = _ETAG.match(value, pos)
        if not m:
            return []
        out.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return out


def is_star(value: str) -> bool:
    return value.strip() == "*"


def strong_match(value: str, etag: str) -> bool:
    """If-Match semantics: strong comparison, so a weak tag never matches (§8.8.3.2)."""
    if is_star(value):
        return True
    return any(not weak and tag == etag for weak, tag in parse_etags(value))


def weak_match(value: str, etag: str) -> bool:
    """If-None-Match semantics: weak comparison, W/"x" matches "x" (§13.1.2)."""
    if is_star(value):
        return True
    opaque = etag.removeprefix("W/")
    return any(tag == opaque for _, tag in parse_etags(value))


# -- Preconditions (RFC 9110 §13.2.2) ------------------------------------------------------------


def evaluate_preconditions(method: str, headers: dict[str, str], etag: str, mtime: int) -> int | None:
    """None to go on with the request, or the status that answers it instead (304 or 412).

    `mtime` is the representation's Last-Modified in whole seconds, `etag` its strong entity-tag.
    """
    if_match = headers.get("if-match")
    if if_match is not None:
        # Step 1: If-Match false → 412.
        if not strong_match(if_match, etag):
            return 412
    else:
        # Step 2: If-Unmodified-Since (only without If-Match); an invalid date is ignored (§13.1.4).
        since = headers.get("if-unmodified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and mtime > date:
                return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        # Step 3: If-None-Match false → 304 for GET/HEAD, 412 otherwise.
        if weak_match(if_none_match, etag):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD"):
        # Step 4: If-Modified-Since, only for GET/HEAD and only without If-None-Match (§13.1.3).
        since = headers.get("if-modified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and mtime <= date:
                return 304
    return None


def if_range_allows(value: str, etag: str, mtime: int, now: float) -> bool:
    """Step 5: may a Range be honoured under this If-Range value? (§13.1.5)"""
    value = value.strip()
    if value.startswith(('"', "W/")):
        # An entity-tag: strong comparison; a weak tag never matches.
        return value == etag
    date = parse_http_date(value)
    # A date matches only an exactly equal Last-Modified, and only if that date is a strong
    # validator: a file modified less than a second ago may change again within the same second
    # (§8.8.2.2), and parts of two versions must never be combined.
    return date is not None and date == mtime and mtime < int(now) - 1


# -- Range (RFC 9110 §14.1, §14.2) ---------------------------------------------------------------

Span = tuple[int, int]  # first and last byte position, inclusive


def parse_ranges(value: str, size: int) -> list[Span] | None:
    """The spans a Range field asks of a representation of `size` bytes.

    None: ignore the field and send the whole representation (another unit, invalid syntax, a
    zero-length representation, or too many ranges). []: no range is satisfiable (416).
    """
    unit, eq, range_set = value.partition("=")
    if not eq or unit.strip().lower() != "bytes" or size <= 0:
        return None
    specs = [spec.strip() for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # empty list elements are allowed
    if not specs or len(specs) > MAX_RANGE_SPECS:
        return None
    spans: list[Span] = []
    for spec in specs:
        first_text, dash, last_text = spec.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash or not _digits(first_text, allow_empty=True) or not _digits(last_text, True):
            return None
        if not first_text:
            # suffix-range: the last N bytes; "-0" is unsatisfiable.
            if not last_text:
                return None
            length = _number(last_text)
            if length > 0:
                spans.append((max(0, size - length), size - 1))
            continue
        first = _number(first_text)
        last = _number(last_text) if last_text else _HUGE
        if last < first:
            return None  # an invalid int-range makes the whole field invalid
        if first < size:
            spans.append((first, min(last, size - 1)))
    if not spans:
        return []
    spans = _coalesce(spans)
    return spans if len(spans) <= MAX_PARTS else None


def _digits(text: str, allow_empty: bool) -> bool:
    return (not text and allow_empty) or (text.isascii() and text.isdigit())


def _number(text: str) -> int:
    return _HUGE if len(text) > 18 else int(text)


def _coalesce(spans: list[Span]) -> list[Span]:
    """Merge overlapping or nearly adjacent spans (RFC 9110 §14.6); keep the client's order otherwise."""
    if len(spans) == 1:
        return spans
    ordered = sorted(spans)
    merged: list[Span] = [ordered[0]]
    for first, last in ordered[1:]:
        prev_first, prev_last = merged[-1]
        if first <= prev_last + 1 + COALESCE_GAP:
            merged[-1] = (prev_first, max(prev_last, last))
        else:
            merged.append((first, last))
    # Coalescing may reorder (§14.6 allows it "regardless of the order"); when nothing merged, the
    # parts go out in the order asked for.
    return merged if len(merged) < len(spans) else spans
