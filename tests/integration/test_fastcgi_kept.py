"""Kept FastCGI connections (`fastcgi.connections`) against a real php-fpm.

Each test starts its own php-fpm pool and a one-worker daemon whose fastcgi route keeps at most
`connections` connections. `pid.php` answers with the php-fpm child that ran it (after `ms`
milliseconds): requests on one kept connection are always run by the same child, one at a time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.php_fpm import PhpFpm

PID = "<?php\nusleep((int)($_GET['ms'] ?? 0) * 1000);\necho getmypid();\n"
ECHO = ("<?php\nheader('Content-Type: application/json');\n"
        "$in = file_get_contents('php://input');\n"
        "echo json_encode(['pid' => getmypid(), 'length' => strlen($in), 'md5' => md5($in)]);\n")
TRICKLE = ("<?php\nheader('Content-Type: text/plain');\n"
           "for ($i = 0; $i < 6; $i++) { echo \"$i\\n\"; flush(); usleep(400000); }\n")


class Site:
    def __init__(self, directory: Path, connections: int, children: int = 4,
                 max_requests: int = 0, timeout: float = 10) -> None:
        self.root = directory / "www"
        self.root.mkdir(parents=True)
        for name, text in (("pid.php", PID), ("echo.php", ECHO), ("trickle.php", TRICKLE)):
            (self.root / name).write_text(text)
        self.fpm = PhpFpm(directory / "fpm", children=children, max_requests=max_requests)
        self.fpm.start()
        (directory / "forkd").mkdir()
        self.daemon = Daemon(directory / "forkd", {
            "workers": 1,
            "routes": [{"prefix": "/", "fastcgi": {
                "connect": self.fpm.connect, "root": str(self.root), "timeout": timeout,
                "connections": connections}}],
        })
        self.daemon.start()

    def pid(self, ms: int = 0) -> int:
        status, _, body = self.daemon.get(f"/pid.php?ms={ms}")
        assert status == 200, body
        return int(body)

    def stop(self) -> None:
        self.daemon.stop()
        self.fpm.stop()


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Any]:
    sites: list[Site] = []

    def make(**options: Any) -> Site:
        site = Site(tmp_path / f"site{len(sites)}", **options)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()


def in_parallel(count: int, call: Any) -> list[Any]:
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_requests_take_turns_on_the_kept_connections(make_site: Any) -> None:
    site = make_site(connections=1)
    first = site.pid()
    assert [site.pid() for _ in range(10)] == [first] * 10  # one connection, one child
    began = time.monotonic()
    pids = in_parallel(4, lambda: site.pid(ms=300))
    elapsed = time.monotonic() - began
    # Four children are free, yet the four requests ran one after the other on the kept
    # connection: they waited in the worker, not in php-fpm.
    assert pids == [first] * 4
    assert elapsed >= 1.1, elapsed


def test_two_connections_run_two_scripts_at_once(make_site: Any) -> None:
    site = make_site(connections=2)
    began = time.monotonic()
    pids = in_parallel(4, lambda: site.pid(ms=400))
    elapsed = time.monotonic() - began
    assert len(set(pids)) == 2, pids
    assert 0.75 <= elapsed < 1.6, elapsed
    assert {site.pid() for _ in range(10)} <= set(pids)  # no third connection, ever


def test_without_kept_connections_nothing_waits(make_site: Any) -> None:
    site = make_site(connections=0)
    began = time.monotonic()
    pids = in_parallel(4, lambda: site.pid(ms=400))
    assert time.monotonic() - began < 1.0
    assert len(set(pids)) == 4


def test_a_connection_php_fpm_closed_is_replaced(make_site: Any) -> None:
    # Each child exits after 3 requests, closing the kept connection under the worker.
    site = make_site(connections=1, children=1, max_requests=3)
    payload = bytes(range(256)) * 400
    pids = []
    for number in range(12):
        if number % 2:
            status, _, body = site.daemon.get("/echo.php", method="POST", body=payload,
                                              headers={"Content-Type": "x/y"})
            assert status == 200, body
            data = json.loads(body)
            assert data["length"] == len(payload)
            pids.append(data["pid"])
        else:
            pids.append(site.pid())
        time.sleep(0.05)  # the exit of a child is not instantaneous: let some happen while idle
    assert len(set(pids)) == 4, pids  # a new child every third request, and no failure
    site.fpm.stop()
    site.fpm.start()  # a restarted php-fpm: the kept connection is gone
    assert site.pid() not in pids
    assert "php-fpm closed the connection" not in site.daemon.log()


def test_the_wait_in_line_is_bounded_by_timeout(make_site: Any) -> None:
    site = make_site(connections=1, timeout=1)
    holder = threading.Thread(target=lambda: site.daemon.get("/trickle.php"))
    holder.start()  # never silent for a second, holds the only connection for 2.4 s
    time.sleep(0.3)
    began = time.monotonic()
    status, _, _ = site.daemon.get("/pid.php")
    waited = time.monotonic() - began
    holder.join(10)
    assert status == 504
    assert 0.9 <= waited < 2.0, waited
    site.daemon.wait_for_log("no kept connection free for 1s, answering 504")
    assert site.pid() > 0  # the connection is free again


def test_a_client_that_leaves_the_line_takes_nothing_with_it(make_site: Any) -> None:
    site = make_site(connections=1)
    first = site.pid()
    holder = threading.Thread(target=lambda: site.pid(ms=600))
    holder.start()
    time.sleep(0.15)
    for _ in range(5):  # queued behind the holder, then gone
        with socket.create_connection((site.daemon.host, site.daemon.port)) as sock:
            sock.sendall(b"GET /pid.php HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.02)
    holder.join(10)
    assert [site.pid() for _ in range(5)] == [first] * 5


def test_php_fpm_gone_under_a_long_line_answers_every_request(make_site: Any) -> None:
    # Each waiting request gets the place of the one before, whose connect failed: 300 of them
    # must fail one after the other, not one inside the other (the worker's stack).
    site = make_site(connections=1, children=1)
    holder = threading.Thread(target=lambda: site.daemon.get("/pid.php?ms=1500"))
    holder.start()
    time.sleep(0.2)
    clients = []
    for _ in range(300):
        sock = socket.create_connection((site.daemon.host, site.daemon.port))
        sock.sendall(b"GET /pid.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        clients.append(sock)
    time.sleep(0.3)
    site.fpm.stop()  # the holder's connection ends, and nobody listens any more
    statuses = []
    for sock in clients:
        sock.settimeout(10)
        with sock:
            statuses.append(sock.recv(64).split(b" ")[1])
    holder.join(10)
    assert statuses == [b"502"] * 300
    status, _, _ = site.daemon.get("/pid.php")
    assert status == 502  # the worker is alive and says why
