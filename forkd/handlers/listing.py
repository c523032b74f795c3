"""Directory listings that stay cheap and truthful: read through a checked descriptor, capped, cached.

Theory of operation
-------------------
The static handler opens a directory, checks the descriptor (a directory, inside the root) and hands
it here. Nothing is read by name: `scandir` of the descriptor gives the names, and each listed entry is
`stat`ed relative to it (a symlinked entry through an O_PATH descriptor of its own, whose real path
decides whether it stays inside the root). A directory swapped for a symlink after the check therefore
still lists what was checked.

Bounded work. A worker is single-threaded, so a listing must never hold it for long whatever the
directory holds:
- One pass over the names keeps only the first SHOWN in listing order (directories first, then code
  point order) in a heap; it stops counting after SCAN_LIMIT names. Only those SHOWN entries are
  `stat`ed and rendered, and the page says how many were left out.
- Listings are cached by the directory's identity: (st_dev, st_ino) of the descriptor, the URL path
  (the HTML page shows it) and the format. A hit needs the same (dev, ino, size, mtime_ns) and a
  trusted read less than RECHECK seconds old. Adding, removing or renaming an entry moves the
  directory's mtime, so such a change is seen at once; a file below that only changes size or time
  does not, so after RECHECK the SHOWN entries are `stat`ed again (not the names re-read) and the page
  is rendered again only if they changed.
- A directory with more than SHOWN names whose names changed is read again at most once per RECHECK,
  so a busy spool directory costs one pass over its names per second, not one per request.
- A read is not trusted when the directory was modified less than RACY_MTIME before it: the kernel's
  file-time clock is coarse, so a second change within the same tick would not move the mtime.
- The cache holds at most CACHE_BYTES (estimated: the page plus the names), oldest out first.
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from forkd.handlers import autoindex
from forkd.handlers.bounded import ENTRY_OVERHEAD, ByteCache, cost_of
from forkd.handlers.paths import hidden, within

SHOWN = 1000  # entries listed at most (the first ones in listing order)
SCAN_LIMIT = 250_000  # names read at most per pass over a directory
CACHE_BYTES = 8 * 1024 * 1024  # listings kept per route and worker
RECHECK = 1.0  # seconds a read is trusted while the directory is unchanged (as for files)
RACY_MTIME = 0.1  # see the module docstring
ENTRY_COST = 200  # estimated bytes per kept entry beyond its name (Entry, tuples, list slots)

_Name = tuple[bool, str]  # (not a directory, name): sorts in listing order


@dataclass(slots=True)
class _Listing:
    """A rendered listing and what it was rendered from."""

    identity: tuple[int, int, int, int]  # the directory's (st_dev, st_ino, st_size, st_mtime_ns)
    read_at: float  # time.monotonic() of the last pass over the names
    checked: float  # time.monotonic() of the last stat of the entries; 0.0: not to be trusted
    names: list[_Name]  # the names chosen for the listing
    cut: autoindex.Cut | None  # how many were left out, if any
    entries: list[autoindex.Entry]
    body: bytes


class Listings:
    """The listings of one static route's directories."""

    def __init__(self, root_real: str, dotfiles: bool, symlinks_outside_root: bool) -> None:
        self.root_real = root_real
        self.dotfiles = dotfiles
        self.symlinks_outside_root = symlinks_outside_root
        self._cache: ByteCache[tuple[int, int, str, bool], _Listing] = ByteCache(CACHE_BYTES)

    def cached(self, identity: tuple[int, int, int, int], url_path: str, as_json: bool) -> bytes | None:
        """The page of the directory whose stat is `identity`, if one is kept and still fresh.

        This may be asked with the stat of a name, before anything is opened: every page kept was
        read through a checked descriptor of exactly that directory (device and inode), so a hit
        can only show what was checked.
        """
        listing = self._cache.get((identity[0], identity[1], url_path, as_json))
        if listing is not None and _fresh(listing, identity, time.monotonic()):
            return listing.body
        return None

    def page(self, fd: int, st: os.stat_result, url_path: str, parent: bool, as_json: bool) -> bytes:
        """The listing body of the checked directory `fd` (whose fstat is `st`); OSError if unreadable.

        `url_path` is the directory's decoded URL path, `parent` whether to link "../".
        """
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        key = (st.st_dev, st.st_ino, url_path, as_json)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None:
            if _fresh(cached, identity, now):
                return cached.body
            if cached.identity == identity and cached.checked > 0.0:
                # The names are as read; only sizes and times may have moved.
                return self._refresh(fd, key, parent, cached, cached.names, cached.cut, now)
        names, cut = self._names(fd)
        # mtime_ns of the directory against the wall clock: was it modified just before the read?
        trusted = time.time() - st.st_mtime_ns / 1e9 >= RACY_MTIME
        listing = cached or _Listing(identity, now, 0.0, [], None, [], b"")
        listing.identity, listing.read_at = identity, now
        return self._refresh(fd, key, parent, listing, names, cut, now if trusted else 0.0,
                             render=cached is None)

    def _refresh(self, fd: int, key: tuple[int, int, str, bool], parent: bool, listing: _Listing,
                 names: list[_Name], cut: autoindex.Cut | None, checked: float,
                 render: bool = False) -> bytes:
        """Stat the chosen names; render the page again only if what it shows changed."""
        entries = self._entries(fd, names)
        listing.checked = checked
        if not render and entries == listing.entries and cut == listing.cut:
            listing.names = names
            return listing.body
        _, _, url_path, as_json = key
        if as_json:
            listing.body = autoindex.render_json(entries, cut)
        else:
            listing.body = autoindex.render_html(url_path, entries, parent, cut)
        listing.names, listing.cut, listing.entries = names, cut, entries
        cost = (cost_of(listing.body, url_path) + sum(cost_of(name) for _, name in names)
                + (ENTRY_COST - ENTRY_OVERHEAD) * len(names))
        self._cache.put(key, listing, cost)
        return listing.body

    # -- reading --------------------------------------------------------------------------------

    def _names(self, fd: int) -> tuple[list[_Name], autoindex.Cut | None]:
        """The first SHOWN visible names in listing order, and what was left out.

        The one pass over a directory of any size: keep this loop lean.
        """
        total = 0
        more = False
        dotfiles = self.dotfiles

        def visible() -> Iterator[_Name]:
            nonlocal total, more
            with os.scandir(fd) as scan:
                for item in scan:
                    name = item.name
                    if (name[0] == "." and not dotfiles) or not (name.isascii() or _utf8(name)):
                        continue
                    if total == SCAN_LIMIT:
                        more = True
                        return
                    total += 1
                    try:
                        is_dir = item.is_dir()  # d_type: no system call unless a symlink
                    except OSError:
                        is_dir = False
                    yield (not is_dir, name)

        names = heapq.nsmallest(SHOWN, visible())
        if total <= SHOWN:
            return names, None
        return names, autoindex.Cut(len(names), total, more)

    def _entries(self, fd: int, names: list[_Name]) -> list[autoindex.Entry]:
        entries = []
        for _, name in names:
            entry = self._entry(fd, name)
            if entry is not None:
                entries.append(entry)
        return entries

    def _entry(self, fd: int, name: str) -> autoindex.Entry | None:
        """An entry as listed, or None when it is gone, unservable or not a file or directory."""
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if st is not None and stat.S_ISLNK(st.st_mode):
                st = self._followed(fd, name)
        except OSError:
            return None  # a dangling symlink, or gone meanwhile
        if st is None:
            return None
        is_dir = stat.S_ISDIR(st.st_mode)
        if not (is_dir or stat.S_ISREG(st.st_mode)):
            return None
        return autoindex.Entry(name, is_dir, st.st_size, st.st_mtime)

    def _followed(self, fd: int, name: str) -> os.stat_result | None:
        """What the symlink `name` in directory `fd` leads to, or None when it leads out of the root
        (or to a dotfile) and the route does not allow that. Located and described through one
        O_PATH descriptor, so the link cannot be swapped between the check and the fstat."""
        if self.symlinks_outside_root:
            return os.stat(name, dir_fd=fd)
        target = os.open(name, os.O_PATH | os.O_CLOEXEC, dir_fd=fd)
        try:
            real = os.readlink(f"/proc/self/fd/{target}")
            root = self.root_real
            if not within(root, real):
                return None
            if not self.dotfiles and hidden(real[len(root.rstrip("/")):]):
                return None
            return os.fstat(target)
        finally:
            os.close(target)


def _fresh(listing: _Listing, identity: tuple[int, int, int, int], now: float) -> bool:
    """Whether a kept listing may be sent as it is for a directory whose stat is `identity`."""
    if listing.identity == identity and listing.checked > 0.0:
        return now - listing.checked < RECHECK
    # A big directory whose names changed is read again at most once per RECHECK.
    return listing.cut is not None and now - listing.read_at < RECHECK


def _utf8(name: str) -> bool:
    """False for a name that is not UTF-8 (surrogate escapes): no request path could name it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
