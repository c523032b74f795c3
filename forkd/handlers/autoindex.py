"""Directory listings: HTML for people, JSON for programs.

Pure rendering: the static handler reads the directory (and decides which entries may be shown);
this module only orders and formats them. Order: directories first, then files, each group sorted by
name in code-point order (so the order is the same on every machine, whatever the locale).
Every name is HTML-escaped in text and percent-encoded in hrefs, so a file called
`<script>&"'.txt` is shown as text and links to itself; hrefs are relative ("name", "dir/") and a
name containing ":" is encoded so it can never read as a URI scheme.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from urllib.parse import quote

from forkd.handlers.conditional import http_date

# Characters left as they are in an href path segment (RFC 3986 pchar minus ":" and the
# characters HTML or the URL parser treat specially).
_SEGMENT_SAFE = "-._~!$&'()*+,;=@"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str  # the file name as decoded text (surrogate escapes for undecodable bytes)
    is_dir: bool
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Cut:
    """A listing that shows only some of a directory's entries (the reader's cap)."""

    listed: int  # entries chosen for the listing
    entries: int  # entries read from the directory
    more: bool = False  # the reader stopped counting: the directory holds more than `entries`

    @property
    def note(self) -> str:
        if self.more:
            return f"Only {self.listed:,} of more than {self.entries:,} entries are listed."
        return f"Only the first {self.listed:,} of {self.entries:,} entries are listed."


def ordered(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (not e.is_dir, e.name))


def href(name: str, is_dir: bool) -> str:
    """A relative reference to an entry, percent-encoded (undecodable bytes kept as bytes)."""
    raw = name.encode("utf-8", "surrogateescape")
    return quote(raw, safe=_SEGMENT_SAFE) + ("/" if is_dir else "")


def render_html(url_path: str, entries: list[Entry], parent: bool, cut: Cut | None = None) -> bytes:
    """An HTML page listing `entries` of the directory at `url_path` (a decoded path); `cut` says
    what was left out."""
    title = html.escape(_printable(url_path))
    rows = []
    if parent:
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for entry in ordered(entries):
        label = _printable(entry.name) + ("/" if entry.is_dir else "")
        size = "-" if entry.is_dir else str(entry.size)
        rows.append(
            f'<tr><td><a href="{html.escape(href(entry.name, entry.is_dir), quote=True)}">'
            f"{html.escape(label)}</a></td><td>{http_date(entry.mtime)}</td>"
            f'<td class="size">{size}</td></tr>'
        )
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>Index of {title}</title>"
        "<style>td{padding:0 1em 0 0}.size{text-align:right}</style></head>\n"
        f"<body><h1>Index of {title}</h1>\n"
        + (f'<p class="note">{html.escape(cut.note)}</p>\n' if cut else "")
        + "<table>\n"
        "<tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n"
        + "\n".join(rows)
        + "\n</table></body></html>\n"
    )
    return page.encode("utf-8")


def render_json(entries: list[Entry], cut: Cut | None = None) -> bytes:
    """`[{"name", "type": "directory"|"file", "mtime", "size"}]` (size null for a directory), the
    shape nginx's autoindex uses.

    A cut listing ends with `{"type": "truncated", "listed", "entries", "note"}` (`entries` is null
    when the directory holds more than the reader counted).
    """
    items = []
    for entry in ordered(entries):
        items.append({
            "name": _printable(entry.name),
            "type": "directory" if entry.is_dir else "file",
            "mtime": http_date(entry.mtime),
            "size": None if entry.is_dir else entry.size,  # a directory has no size to show
        })
    if cut:
        items.append({"type": "truncated", "listed": cut.listed,
                      "entries": None if cut.more else cut.entries, "note": cut.note})
    return (json.dumps(items, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def _printable(name: str) -> str:
    """Undecodable bytes (surrogate escapes) shown as U+FFFD; the href keeps the real bytes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
