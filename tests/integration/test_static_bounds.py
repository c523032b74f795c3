"""Static files within bounds: huge directories, directory swaps and 404 floods (issues #9, #10).

- A 100,000-file directory listed in a loop by 4 clients must not stall a small GET on the same
  (only) worker: listings are capped, cached by directory identity and never rescanned per request.
- A directory swapped with a symlink to the outside while it is being listed must never show an
  outside name: the listing is read through the descriptor that was validated.
- 5,000 distinct ~8 KB paths that all 404 must not grow the worker's memory: misses are not cached and
  every cache is bounded in bytes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, poll
from tests.support.static_site import static_config

HUGE = 100_000
SHOWN = 1000  # forkd.handlers.static.LISTING_SHOWN, as the README states it


@pytest.fixture(scope="module")
def huge_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a 1 KiB file and a directory of 100,000 empty files (made once per module)."""
    root = tmp_path_factory.mktemp("huge") / "www"
    big = root / "big"
    big.mkdir(parents=True)
    (root / "small.txt").write_bytes(b"s" * 1024)
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL | os.O_CLOEXEC
    for i in range(HUGE):
        os.close(os.open(big / f"file-{i:06d}.txt", flags, 0o644))
    return root


def worker_rss_kib(daemon: Daemon) -> int:
    (pid,) = daemon.worker_pids()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def listing_clients() -> Iterator[Callable[[str, list[str]], None]]:
    """Start shell loops of curl that fetch a URL over and over; all are killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str, extra: list[str]) -> None:
        args = " ".join(f"'{arg}'" for arg in extra)
        script = f"while :; do curl -s -o /dev/null {args} '{url}'; done"
        started.append(subprocess.Popen(["sh", "-c", script], start_new_session=True))

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_huge_listing_is_capped_with_a_note(make_daemon: Callable[..., Daemon],
                                            huge_site: Path) -> None:
    daemon = make_daemon({"workers": 1, **static_config(huge_site, autoindex=True)})
    status, _, body = daemon.get("/big/")
    page = body.decode()
    assert status == 200
    assert page.count('<tr><td><a href="file-') == SHOWN
    assert "file-000000.txt" in page and f"file-{SHOWN - 1:06d}.txt" in page  # the first by name
    assert f"file-{SHOWN:06d}.txt" not in page
    assert f"Only the first {SHOWN:,} of {HUGE:,} entries are listed" in page
    status, _, body = daemon.get("/big/", {"Accept": "application/json"})
    items = json.loads(body)
    files = [item for item in items if item["type"] == "file"]
    assert len(files) == SHOWN and files[0]["name"] == "file-000000.txt"
    assert items[-1] == {"type": "truncated", "listed": SHOWN, "entries": HUGE,
                         "note": f"Only the first {SHOWN:,} of {HUGE:,} entries are listed."}


def test_huge_listing_does_not_stall_the_worker(make_daemon: Callable[..., Daemon], huge_site: Path,
                                                listing_clients: Callable[[str, list[str]], None]
                                                ) -> None:
    daemon = make_daemon({"workers": 1, **static_config(huge_site, autoindex=True)})
    base = f"http://{daemon.host}:{daemon.port}"
    for accept in ("text/html", "application/json"):  # each first read is paid before the clock
        assert daemon.get("/big/", {"Accept": accept})[0] == 200
    for accept in ("text/html", "application/json", "text/html", "application/json"):
        listing_clients(f"{base}/big/", ["-H", f"Accept: {accept}"])
    poll(lambda: daemon.access_log.read_text().count("GET /big/") > 20, 30, "listings being served")
    served = daemon.access_log.read_text().count("GET /big/")
    times = []
    conn = daemon.connection()
    for _ in range(100):
        started = time.monotonic()
        conn.request("GET", "/small.txt")
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) == 1024
        times.append(time.monotonic() - started)
        time.sleep(0.01)
    conn.close()
    assert daemon.access_log.read_text().count("GET /big/") > served + 20  # listed all along
    times.sort()
    p99 = times[98]
    print(f"small GET beside 4 listing clients: p50 {times[49] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms")
    assert p99 < 0.1, f"p99 of the small GETs was {p99 * 1000:.0f} ms (max {times[-1] * 1000:.0f} ms)"


SWAPPER = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = (os.fsencode(arg) for arg in sys.argv[1:3])
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    print("swapping", flush=True)
    while True:
        if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
            sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
""")


def test_directory_swapped_with_a_symlink_never_lists_outside(
        make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """A directory exchanged atomically, over and over, with a symlink to a directory outside the
    root: every listing shows the directory's own names or is a 404, never an outside name."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    for i in range(20):
        (root / "sub" / f"inside-{i}.txt").write_bytes(b"in")
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(20):
        (outside / f"OUTSIDE-{i}.txt").write_bytes(b"out")
    swap = tmp_path / "swap"
    swap.symlink_to(outside)
    daemon = make_daemon({"workers": 1, **static_config(root, autoindex=True)})
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(root / "sub"), str(swap)],
                               stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == b"swapping\n"
        statuses: dict[int, int] = {}
        conn = daemon.connection()
        for i in range(3000):
            accept = "application/json" if i % 2 else "text/html"
            conn.request("GET", "/sub/", headers={"Accept": accept})
            response = conn.getresponse()
            body = response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            assert b"OUTSIDE" not in body, f"an outside name was listed after {i} requests"
        conn.close()
        assert swapper.poll() is None, "the swapper stopped"
    finally:
        swapper.kill()
        swapper.wait()
    # Both states were seen: the race was really run.
    assert statuses.get(200, 0) > 100 and statuses.get(404, 0) > 100, statuses


def test_distinct_404_paths_do_not_grow_the_worker(make_daemon: Callable[..., Daemon],
                                                   tmp_path: Path) -> None:
    """5,000 distinct ~8 KB paths that do not exist: the worker's RSS grows by less than 8 MiB
    (it grew by over 100 MiB when misses were cached with no byte bound)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    daemon = make_daemon({"workers": 1, **static_config(root)})

    def flood(count: int, tag: str) -> None:
        conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
        for i in range(count):
            # Segments of 200 bytes: each one a possible file name, 40 of them to a path.
            path = "".join(f"/{tag}{i:05d}-{n:02d}-" + "x" * 190 for n in range(40))
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 404
        conn.close()

    flood(200, "warm")  # the code paths and the allocator's arenas warmed up first
    before = worker_rss_kib(daemon)
    flood(5000, "miss")
    growth = worker_rss_kib(daemon) - before
    print(f"worker RSS {before} KiB, +{growth} KiB after 5,000 distinct ~8 KB 404 paths")
    assert growth < 8 * 1024, f"the worker grew by {growth} KiB"
