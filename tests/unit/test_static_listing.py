"""Listings read through a directory descriptor: the cap, the note, the cache (forkd/handlers/listing.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forkd.handlers import autoindex
from forkd.handlers.bounded import ByteCache, cost_of
from forkd.handlers.listing import RECHECK, SHOWN, Listings

MORE = 5  # files beyond the cap


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """SHOWN + MORE files, a directory whose name sorts last, and a hidden file."""
    root = tmp_path / "www"
    root.mkdir()
    for i in range(SHOWN + MORE):
        (root / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    (root / "zz-dir").mkdir()
    (root / ".hidden").write_bytes(b"h")
    old = time.time() - 60
    os.utime(root, (old, old))  # long unmodified: its first read is trusted
    return root


@pytest.fixture
def opened(crowded: Path) -> Iterator[int]:
    fd = os.open(crowded, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def page(listings: Listings, fd: int, as_json: bool = False) -> bytes:
    return listings.page(fd, os.fstat(fd), "/d/", True, as_json)


def test_the_first_entries_in_listing_order_and_a_note(crowded: Path, opened: int) -> None:
    listings = Listings(str(crowded), dotfiles=False, symlinks_outside_root=False)
    html = page(listings, opened).decode()
    total = SHOWN + MORE + 1  # the files and the directory; not the dotfile
    assert f'<p class="note">Only the first {SHOWN:,} of {total:,} entries are listed.</p>' in html
    assert html.index('href="zz-dir/"') < html.index('href="f00000"')  # directories first
    assert f'href="f{SHOWN - 2:05d}"' in html and f'href="f{SHOWN - 1:05d}"' not in html
    items = json.loads(page(listings, opened, as_json=True))
    assert len(items) == SHOWN + 1 and items[0]["name"] == "zz-dir"
    assert items[-1] == {"type": "truncated", "listed": SHOWN, "entries": total,
                         "note": f"Only the first {SHOWN:,} of {total:,} entries are listed."}


def test_a_listing_is_kept_and_refreshed_without_rereading_the_names(crowded: Path,
                                                                    opened: int) -> None:
    listings = Listings(str(crowded), dotfiles=False, symlinks_outside_root=False)
    first = page(listings, opened)
    assert page(listings, opened) is first  # a hit: not read, not rendered again
    (crowded / "f00003").write_bytes(b"grown to 19 bytes..")  # the directory's mtime stays
    deadline = time.monotonic() + 3 * RECHECK
    while b">19<" not in page(listings, opened):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_big_directory_is_read_again_at_most_once_per_recheck(crowded: Path, opened: int) -> None:
    listings = Listings(str(crowded), dotfiles=False, symlinks_outside_root=False)
    before = page(listings, opened)
    (crowded / "a-new-file").write_bytes(b"n")  # changes the directory's identity
    started = time.monotonic()
    again = page(listings, opened)
    if time.monotonic() - started < RECHECK:
        assert again is before  # still the old listing, without a new pass over the names
    deadline = time.monotonic() + 3 * RECHECK
    while b'href="a-new-file"' not in page(listings, opened):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_small_directory_change_is_seen_at_once(tmp_path: Path) -> None:
    root = tmp_path / "small"
    root.mkdir()
    old = time.time() - 60
    os.utime(root, (old, old))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listings = Listings(str(tmp_path), dotfiles=False, symlinks_outside_root=False)
        assert b"new.txt" not in page(listings, fd)
        (root / "new.txt").write_bytes(b"n")
        assert b"new.txt" in page(listings, fd)
    finally:
        os.close(fd)


def test_symlinked_entries_are_checked_through_their_own_descriptor(tmp_path: Path) -> None:
    root = tmp_path / "www"
    (root / "d").mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(b"s")
    (root / ".env").write_bytes(b"e")
    (root / "d" / "in").symlink_to("../.env")  # inside the root, but a dotfile
    (root / "d" / "out").symlink_to(tmp_path / "secret.txt")
    (root / "d" / "ok").symlink_to(root / ".." / "www" / "d")
    (root / "d" / "dangling").symlink_to("nowhere")
    fd = os.open(root / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = [item["name"] for item in json.loads(
            Listings(str(root), dotfiles=False, symlinks_outside_root=False).page(
                fd, os.fstat(fd), "/d/", True, True))]
        assert names == ["ok"]
        names = [item["name"] for item in json.loads(
            Listings(str(root), dotfiles=True, symlinks_outside_root=True).page(
                fd, os.fstat(fd), "/d/", True, True))]
        assert names == ["ok", "in", "out"]
    finally:
        os.close(fd)


def test_cut_notes() -> None:
    assert autoindex.Cut(10, 20).note == "Only the first 10 of 20 entries are listed."
    assert autoindex.Cut(1000, 250000, more=True).note == (
        "Only 1,000 of more than 250,000 entries are listed.")
    item = json.loads(autoindex.render_json([], autoindex.Cut(1, 9, more=True)))[-1]
    assert item["entries"] is None


def test_byte_cache_evicts_the_oldest_within_its_budget() -> None:
    cache: ByteCache[str, str] = ByteCache(1000)
    assert cache.put("a", "A", 400) and cache.put("b", "B", 400)
    assert cache.put("c", "C", 400)  # "a" leaves to make room
    assert cache.get("a") is None and cache.get("b") == "B" and cache.used == 800
    assert not cache.put("huge", "H", 1001)  # larger than the whole budget: not kept
    assert len(cache) == 2 and cache.used == 800
    cache.put("b", "B2", 100)  # replacing an entry gives back its cost
    assert cache.used == 500 and cache.get("b") == "B2"
    cache.discard("c")
    assert cache.used == 100 and "c" not in cache
    assert cost_of("x" * 1000) > 1000
