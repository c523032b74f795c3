"""A script's stderr follows the error log through USR1: after logrotate renames the file, the
worker's reopened log (which the CGI handler shares) receives the script's complaints."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from tests.support.daemon import ROOT, Daemon, poll

SCRIPTS = ROOT / "tests" / "cgi"


def test_script_stderr_goes_to_the_reopened_error_log(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon({"routes": [{"prefix": "/cgi/", "cgi": {"root": str(SCRIPTS)}}]})
    assert daemon.get("/cgi/stderr.sh")[0] == 200
    daemon.wait_for_log("first complaint")
    rotated = daemon.dir / "error.log.1"
    daemon.error_log.rename(rotated)
    daemon.signal(signal.SIGUSR1)

    def reopened(pid: int) -> bool:  # the worker's descriptors name the new file, not the old
        names = open_files(pid)
        return str(daemon.error_log) in names and str(rotated) not in names

    poll(lambda: all(reopened(pid) for pid in daemon.worker_pids()), 5, "every worker reopened")
    # From now on script stderr goes to the new file only.
    before = rotated.read_text().count("first complaint")
    for _ in range(6):
        assert daemon.get("/cgi/stderr.sh")[0] == 200
    poll(lambda: daemon.error_log.exists()
         and daemon.error_log.read_text().count("first complaint") == 6, 5,
         "the six complaints in the new error log")
    assert rotated.read_text().count("first complaint") == before


def open_files(pid: int) -> set[str]:
    names = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return names
