"""A script's stderr follows the error log through USR1: after logrotate renames the file, the
worker's reopened log (which the CGI handler shares) receives the script's complaints."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from tests.support.daemon import ROOT, Daemon

SCRIPTS = ROOT / "tests" / "cgi"


def test_script_stderr_goes_to_the_reopened_error_log(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon({"routes": [{"prefix": "/cgi/", "cgi": {"root": str(SCRIPTS)}}]})
    assert daemon.get("/cgi/stderr.sh")[0] == 200
    daemon.wait_for_log("first complaint")
    rotated = daemon.dir / "error.log.1"
    daemon.error_log.rename(rotated)
    daemon.signal(signal.SIGUSR1)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert daemon.get("/cgi/stderr.sh")[0] == 200  # every worker must have reopened by then
        if daemon.error_log.exists() and daemon.error_log.read_text().count("first complaint") >= 3:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("script stderr never reached the new error log")
    # Once both workers reopened, nothing more goes to the renamed file.
    before = rotated.read_text().count("first complaint")
    for _ in range(6):
        daemon.get("/cgi/stderr.sh")
    time.sleep(0.2)
    assert rotated.read_text().count("first complaint") == before
