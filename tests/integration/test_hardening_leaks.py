"""Leaks: many mixed requests must leave the workers as they found them.

Keep-alive clients send a mix through 2 workers: small and large static files, 404s, ranges (206
and 416), conditional 304s, HEAD, 405s, CGI scripts (with and without a request body, the large
bodies spooled to temporary files), 400s that close the connection, and 505s. After a warm-up
(caches filled, code paths touched), each worker's RSS, open descriptors and child processes are
recorded; after the main run they must be back: the same descriptors, no children, no file left in
the daemon's TMPDIR, and RSS within 5% (+1 MiB of allocator slack).

CI: 20,000 requests. FORKD_SOAK=1: 200,000.
"""

from __future__ import annotations

import os
from pathlib import Path

from test_hardening_support import (
    Exchange,
    Load,
    ProcessFacts,
    get,
    make_site,
    process_facts,
    scaled,
    site_config,
)

from tests.support.daemon import Daemon, poll

REQUESTS = scaled(20000, 200000)
WARM_UP = 3000
BODY = b"b" * 70000  # above the 64 KiB kept in memory: spooled to a temporary file


def exchanges() -> list[Exchange]:
    post = (f"POST /cgi-bin/count.sh?leak HTTP/1.1\r\nHost: l\r\nContent-Length: {len(BODY)}\r\n"
            f"\r\n").encode() + BODY
    chunked = (b"POST /cgi-bin/count.sh?chunked HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    return [
        get("/1k.txt"), get("/index.html"), get("/missing.txt", 404),
        get("/big.bin", 206, "Range: bytes=100-200\r\n"),
        get("/big.bin", 206, "Range: bytes=-70000\r\n"),
        get("/big.bin", 416, "Range: bytes=99999999-\r\n"),
        get("/1k.txt", 304, "If-None-Match: *\r\n"),
        Exchange(b"HEAD /big.bin HTTP/1.1\r\nHost: l\r\n\r\n", 200, head_only=True),
        Exchange(b"DELETE /1k.txt HTTP/1.1\r\nHost: l\r\n\r\n", 405),
        get("/cgi-bin/hello.sh"), get("/1k.txt"), get("/cgi-bin/missing.sh", 404),
        Exchange(post, 200), Exchange(chunked, 200),
        Exchange(b"GET /1k.txt HTTP/1.1\r\nHost: l\r\nContent-Length: x\r\n\r\n", 400),
        Exchange(b"GET /1k.txt HTTP/3.0\r\nHost: l\r\n\r\n", 505),
        get("/big.bin"),
    ]


def snapshot(pids: list[int]) -> dict[int, ProcessFacts]:
    return {pid: process_facts(pid) for pid in pids}


def test_mixed_requests_leak_no_memory_descriptors_or_processes(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (tmp_path / "d").mkdir()
    daemon = Daemon(tmp_path / "d", site_config(site, workers=2),
                    env=dict(os.environ, TMPDIR=str(scratch)))
    daemon.start()
    try:
        workers = daemon.worker_pids()
        with Load(daemon.host, daemon.port, 8, exchanges(), limit=WARM_UP) as load:
            load.wait(120)
        assert load.failures == [], load.failures[:5]
        poll(lambda: all(process_facts(p).children == 0 for p in workers), 5, "scripts reaped")
        before = snapshot(workers)
        master_before = process_facts(daemon.pid)

        with Load(daemon.host, daemon.port, 8, exchanges(), limit=REQUESTS) as load:
            load.wait(REQUESTS / 100)
        assert load.failures == [], load.failures[:5]
        assert daemon.worker_pids() == workers

        # Connections are closed; the workers notice within a loop turn.
        poll(lambda: all(process_facts(p).fds == before[p].fds for p in workers), 5,
             "descriptors back to their count after the warm-up")
        after = snapshot(workers)
        for pid in workers:
            assert after[pid].fd_targets == before[pid].fd_targets
            assert after[pid].children == 0
            growth = after[pid].rss_kib - before[pid].rss_kib
            assert growth <= before[pid].rss_kib * 0.05 + 1024, (
                f"worker {pid}: RSS {before[pid].rss_kib} -> {after[pid].rss_kib} KiB")
        master_after = process_facts(daemon.pid)
        assert master_after.fds == master_before.fds
        assert master_after.children == 2
        assert list(scratch.iterdir()) == []
        print(f"{load.ok} mixed requests: RSS "
              + ", ".join(f"{before[p].rss_kib}->{after[p].rss_kib} KiB" for p in workers)
              + f"; descriptors {[after[p].fds for p in workers]} unchanged; no children")
    finally:
        daemon.stop()
