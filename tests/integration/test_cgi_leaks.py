"""1,000 CGI requests of every outcome leave the worker with the same descriptors and no children."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.daemon import ROOT, Daemon

SCRIPTS = str(ROOT / "tests" / "cgi")

# (method, path, body, expected status): documents, bodies, HEAD (abandoned output), faults, redirects.
MIX = [
    ("GET", "/cgi/hello.sh", None, 200),
    ("POST", "/cgi/cat.sh", b"x" * 70_000, 200),  # more than a pipe holds
    ("HEAD", "/cgi/hello.sh", None, 200),
    ("GET", "/cgi/malformed.sh", None, 502),
    ("GET", "/cgi/status.sh", None, 418),
    ("GET", "/cgi/nph-raw.sh", None, 299),
    ("GET", "/cgi/missing.sh", None, 404),
    ("GET", "/cgi/client-redirect.sh", None, 302),
    ("GET", "/cgi/stderr.sh", None, 200),
    ("GET", "/cgi/hello.sh", None, 200),
]


def test_no_descriptor_or_process_leaks_over_1000_requests(make_daemon) -> None:
    daemon: Daemon = make_daemon({
        "workers": 1,
        "routes": [{"prefix": "/cgi/", "cgi": {"root": SCRIPTS, "timeout": 10}}],
    })
    [worker] = daemon.worker_pids()
    run(daemon, 20)  # warm up: lazily created objects are not leaks
    fds_before = descriptors(worker)
    run(daemon, 1000)
    assert descriptors(worker) == fds_before
    assert children(worker) == []


def run(daemon: Daemon, count: int) -> None:
    conn = daemon.connection()
    for i in range(count):
        method, path, body, status = MIX[i % len(MIX)]
        if status == 299:  # nph responses close the connection
            conn.close()
            assert daemon.raw(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()).startswith(
                b"HTTP/1.1 299")
            conn = daemon.connection()
            continue
        conn.request(method, path, body=body)
        response = conn.getresponse()
        data = response.read()
        assert response.status == status, (path, data)
        if body is not None:
            assert data == body
        if response.will_close:
            conn.close()
            conn = daemon.connection()
    conn.close()


def descriptors(pid: int) -> list[str]:
    """The worker's descriptors once its connections are closed (the count settles within a moment)."""
    deadline = time.monotonic() + 5
    previous: list[str] = []
    while time.monotonic() < deadline:
        current = sorted(_kind(pid, fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        if current == previous:
            return current
        previous = current
        time.sleep(0.1)
    return previous


def children(pid: int) -> list[str]:
    """Every process whose parent is the worker, with its state: a zombie here is a leak."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(f"{entry.name} {fields[0]}")
    return found


def _kind(pid: int, fd: str) -> str:
    """What a descriptor is ("socket", "pipe", a path); "gone" when it closed while we looked
    (scripts are reaped in the background, so pidfds come and go)."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").split(":")[0]
    except FileNotFoundError:
        return "gone"
