"""Ending the programs a test or soak starts in a session of their own (php-fpm, mariadbd)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes], signum: int, grace: float) -> None:
    """`signum` to the process group led by `proc`, SIGKILL if it is still there after `grace`
    seconds, then SIGKILL to what the group still holds (the children of a killed leader)."""
    for sig, wait in ((signum, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
