"""php-fpm busy: a full listen queue is 503 with Retry-After (try again), never 502 (broken).

php-fpm with one child and `listen.backlog = 1`: one sleeping script holds the child, the next
connection waits in the queue, and a unix socket whose queue is full refuses further connects with
EAGAIN at once. forkd must answer those 503 with Retry-After, and serve again as soon as the child
is free: nothing about the refusal sticks.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from tests.support.daemon import ROOT, Daemon
from tests.support.php_fpm import PhpFpm

APP = ROOT / "tests" / "fastcgi" / "app"


def test_full_backlog_is_503_with_retry_after(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APP, app)
    fpm = PhpFpm(tmp_path / "fpm", children=1, backlog=1).start()
    (tmp_path / "forkd").mkdir()
    daemon = Daemon(tmp_path / "forkd", {"workers": 1, "routes": [
        {"prefix": "/", "fastcgi": {"connect": fpm.connect, "root": str(app), "timeout": 10}}]})
    try:
        daemon.start()
        answers: list[tuple[int, dict[str, str]]] = []

        def ask(path: str) -> None:
            status, headers, _ = daemon.get(path)
            answers.append((status, headers))

        sleeper = threading.Thread(target=ask, args=("/sleep.php?s=2",))
        sleeper.start()
        time.sleep(0.5)  # the child has taken the sleeper
        others = [threading.Thread(target=ask, args=("/env.php",)) for _ in range(6)]
        for thread in others:
            thread.start()
        for thread in [sleeper, *others]:
            thread.join(30)
        statuses = sorted(status for status, _ in answers)
        assert 503 in statuses, statuses
        assert 502 not in statuses and 504 not in statuses, statuses
        assert all(headers.get("retry-after") == "1" for status, headers in answers
                   if status == 503)
        assert daemon.get("/env.php")[0] == 200  # the refusal does not stick
        daemon.wait_for_log("busy (listen queue full)")
    finally:
        daemon.stop()
        fpm.stop()
