"""fastcgi.keep_connections: kept FastCGI connections (FCGI_KEEP_CONN), bounded per worker.

What php-fpm holds is read from the kernel: /proc/net/unix lists the sockets php-fpm accepted on
its listening path, with their state (03: connected). One request per connection leaves none once
the answers are in; a kept connection stays, one for a run of requests, and a php-fpm restart
under a kept connection costs the next request nothing but a new connection.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon
from tests.support.php_fpm import PhpFpm

APP = ROOT / "tests" / "fastcgi" / "app"


def accepted(socket_path: Path) -> int:
    """Connected sockets php-fpm accepted on `socket_path` (its listening socket excluded)."""
    count = 0
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(socket_path) and fields[5] == "03":
            count += 1
    return count


def settle(socket_path: Path, expected: int) -> int:
    """The count once it reached `expected`, or whatever it is after a few seconds."""
    deadline = time.monotonic() + 5
    count = accepted(socket_path)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = accepted(socket_path)
    return count


@pytest.fixture
def fpm(tmp_path: Path) -> Iterator[PhpFpm]:
    pool = PhpFpm(tmp_path / "fpm", children=3).start()
    yield pool
    pool.stop()


def daemon_for(tmp_path: Path, fpm: PhpFpm, keep: int) -> Daemon:
    app = tmp_path / "app"
    if not app.exists():
        shutil.copytree(APP, app)
    directory = tmp_path / f"forkd-{keep}"
    directory.mkdir()
    return Daemon(directory, {"workers": 1, "routes": [
        {"prefix": "/", "fastcgi": {"connect": fpm.connect, "root": str(app),
                                    "keep_connections": keep}}]})


def test_by_default_no_connection_outlives_its_request(tmp_path: Path, fpm: PhpFpm) -> None:
    daemon = daemon_for(tmp_path, fpm, 0)
    daemon.start()
    try:
        for _ in range(5):
            assert daemon.get("/env.php")[0] == 200
        assert settle(fpm.socket, 0) == 0
    finally:
        daemon.stop()


def test_a_kept_connection_carries_the_next_requests(tmp_path: Path, fpm: PhpFpm) -> None:
    daemon = daemon_for(tmp_path, fpm, 1)
    daemon.start()
    try:
        bodies = [daemon.get(f"/env.php?n={n}") for n in range(5)]
        assert [status for status, _, _ in bodies] == [200] * 5
        queries = [json.loads(body)["server"]["QUERY_STRING"] for _, _, body in bodies]
        assert queries == [f"n={n}" for n in range(5)]  # each answer is its own request's
        assert settle(fpm.socket, 1) == 1  # one connection for the five, still open
        # A body is never sent on a kept connection (it could not be sent twice): a new one.
        status, _, _ = daemon.get("/env.php", method="POST", body=b"a=1",
                                  headers={"Content-Type": "text/plain"})
        assert status == 200
        assert settle(fpm.socket, 1) == 1  # at most keep_connections stay
    finally:
        daemon.stop()
    assert settle(fpm.socket, 0) == 0  # the worker closed it on its way out


def test_php_fpm_restarted_under_a_kept_connection(tmp_path: Path, fpm: PhpFpm) -> None:
    daemon = daemon_for(tmp_path, fpm, 1)
    daemon.start()
    try:
        assert daemon.get("/env.php")[0] == 200
        assert settle(fpm.socket, 1) == 1
        fpm.stop()
        fpm.start()
        for _ in range(3):
            assert daemon.get("/env.php")[0] == 200
        assert daemon.log().count("php-fpm closed the connection") == 0
    finally:
        daemon.stop()
