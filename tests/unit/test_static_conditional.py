"""Dates, entity-tag comparison, precondition precedence (RFC 9110 §13.2.2) and Range parsing."""

from __future__ import annotations

import pytest

from forkd.handlers import conditional as c
from forkd.handlers.conditional import evaluate_preconditions, if_range_allows, parse_ranges

ETAG = '"abc-1"'
MTIME = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"


def test_http_date_round_trip() -> None:
    assert c.http_date(MTIME) == DATE
    assert c.parse_http_date(DATE) == MTIME


@pytest.mark.parametrize("text", [
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
])
def test_three_date_forms(text: str) -> None:
    assert c.parse_http_date(text) == MTIME


@pytest.mark.parametrize("text", [
    "", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 31 Feb 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "1994-11-06T08:49:37Z",
])
def test_invalid_dates(text: str) -> None:
    assert c.parse_http_date(text) is None


def test_etag_comparisons() -> None:
    assert c.strong_match('"x", "abc-1"', ETAG)
    assert not c.strong_match('W/"abc-1"', ETAG)  # If-Match uses the strong comparison
    assert c.strong_match("*", ETAG)
    assert c.weak_match('W/"abc-1"', ETAG)  # If-None-Match uses the weak comparison
    assert c.weak_match('"nope" , W/"abc-1"', ETAG)
    assert not c.weak_match('"abc-2"', ETAG)
    assert not c.weak_match("abc-1", ETAG)  # unquoted: bad syntax matches nothing
    assert c.weak_match(" * ", ETAG)


def _eval(method: str = "GET", **fields: str) -> int | None:
    headers = {name.replace("_", "-"): value for name, value in fields.items()}
    return evaluate_preconditions(method, headers, ETAG, MTIME)


@pytest.mark.parametrize("fields, expected", [
    ({}, None),
    ({"if_none_match": ETAG}, 304),
    ({"if_none_match": 'W/"abc-1"'}, 304),
    ({"if_none_match": "*"}, 304),
    ({"if_none_match": '"other"'}, None),
    ({"if_modified_since": DATE}, 304),
    ({"if_modified_since": LATER}, 304),
    ({"if_modified_since": EARLIER}, None),
    ({"if_modified_since": "garbage"}, None),
    # If-None-Match wins over If-Modified-Since (step 3 before step 4).
    ({"if_none_match": '"other"', "if_modified_since": LATER}, None),
    ({"if_none_match": ETAG, "if_modified_since": EARLIER}, 304),
    ({"if_match": ETAG}, None),
    ({"if_match": '"other"'}, 412),
    ({"if_match": 'W/"abc-1"'}, 412),
    ({"if_match": "*"}, None),
    ({"if_unmodified_since": DATE}, None),
    ({"if_unmodified_since": EARLIER}, 412),
    ({"if_unmodified_since": "garbage"}, None),
    # If-Match wins over If-Unmodified-Since (step 1 before step 2).
    ({"if_match": ETAG, "if_unmodified_since": EARLIER}, None),
    # 412 from step 1 comes before a 304 from step 3.
    ({"if_match": '"other"', "if_none_match": ETAG}, 412),
    ({"if_match": ETAG, "if_none_match": ETAG}, 304),
])
def test_precedence(fields: dict[str, str], expected: int | None) -> None:
    assert _eval(**fields) == expected


def test_head_behaves_like_get_and_other_methods_get_412() -> None:
    assert _eval("HEAD", if_none_match=ETAG) == 304
    assert _eval("POST", if_none_match=ETAG) == 412
    assert _eval("POST", if_modified_since=LATER) is None  # only for GET and HEAD


def test_if_range() -> None:
    now = MTIME + 100
    assert if_range_allows(ETAG, ETAG, MTIME, now)
    assert not if_range_allows('W/"abc-1"', ETAG, MTIME, now)
    assert not if_range_allows('"other"', ETAG, MTIME, now)
    assert if_range_allows(DATE, ETAG, MTIME, now)
    assert not if_range_allows(LATER, ETAG, MTIME, now)
    assert not if_range_allows("garbage", ETAG, MTIME, now)
    # Modified within the last second: the date is a weak validator, so never matches.
    assert not if_range_allows(DATE, ETAG, MTIME, MTIME + 0.5)
    assert if_range_allows(ETAG, ETAG, MTIME, MTIME + 0.5)


@pytest.mark.parametrize("value, size, spans", [
    ("bytes=0-0", 10, [(0, 0)]),
    ("bytes=0-", 10, [(0, 9)]),
    ("bytes=2-5", 10, [(2, 5)]),
    ("bytes=5-100", 10, [(5, 9)]),
    ("bytes=-3", 10, [(7, 9)]),
    ("bytes=-30", 10, [(0, 9)]),
    ("BYTES = 1-2", 10, [(1, 2)]),
    ("bytes=0-1, 900-999", 1000, [(0, 1), (900, 999)]),
    ("bytes=900-999,0-1", 1000, [(900, 999), (0, 1)]),  # nothing merged: the client's order
    ("bytes=0-5,3-8", 1000, [(0, 8)]),  # overlapping: coalesced
    ("bytes=500-600,0-5,3-8", 1000, [(0, 8), (500, 600)]),
    ("bytes=0-1,20-21", 1000, [(0, 21)]),  # a gap smaller than a part header: one part
    ("bytes=0-1,,5-6", 1000, [(0, 6)]),
    ("bytes=5-9,20-30", 10, [(5, 9)]),  # the unsatisfiable one is dropped
    ("bytes=0-99999999999999999999999", 10, [(0, 9)]),
    ("bytes=10-", 10, []),
    ("bytes=-0", 10, []),
    ("bytes=99999999999999999999999-", 10, []),
    ("bytes=10-20,30-40", 10, []),
    ("bytes=5-4", 10, None),
    ("bytes=a-b", 10, None),
    ("bytes=1-2-3", 10, None),
    ("bytes=-", 10, None),
    ("bytes=", 10, None),
    ("bytes 0-1", 10, None),
    ("items=0-1", 10, None),
    ("bytes=+1-2", 10, None),
    ("bytes=٣-4", 10, None),  # non-ASCII digits are not DIGIT
    ("bytes=0-1", 0, None),  # a zero-length file: the whole (empty) file
])
def test_parse_ranges(value: str, size: int, spans: list[tuple[int, int]] | None) -> None:
    assert parse_ranges(value, size) == spans


def test_range_abuse_is_bounded() -> None:
    many_small = ",".join(f"{i * 200}-{i * 200}" for i in range(c.MAX_PARTS + 1))
    assert parse_ranges("bytes=" + many_small, 10**6) is None
    too_many_specs = ",".join(["0-0"] * (c.MAX_RANGE_SPECS + 1))
    assert parse_ranges("bytes=" + too_many_specs, 100) is None
    overlapping = ",".join(["0-"] * 50)
    assert parse_ranges("bytes=" + overlapping, 100) == [(0, 99)]
