"""The pidfile and reload status writes: atomic, never through a planted link."""

from __future__ import annotations

import os
from pathlib import Path

from forkd import pidfile


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "forkd.pid"
    path.write_text("stale\n")
    old_umask = os.umask(0o077)
    try:
        pidfile.write(path, 1234)
    finally:
        os.umask(old_umask)
    assert path.read_text() == "1234\n"
    assert path.stat().st_mode & 0o777 == 0o644  # readable by `forkd -s` whatever the umask
    assert os.listdir(tmp_path) == ["forkd.pid"]


def test_links_planted_at_predictable_names_are_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "forkd.pid"
    # The names the first version used, and the destination itself.
    (tmp_path / f".forkd.pid.{os.getpid()}.tmp").symlink_to(victim)
    (tmp_path / f".forkd.pid.reload.{os.getpid()}.tmp").symlink_to(victim)
    path.symlink_to(victim)
    pidfile.write(path, 42)
    pidfile.ReloadRecorder(path, 42, 1).begin()
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.read_text() == "42\n"
    status = pidfile.ReloadStatus.load(pidfile.status_path(path))
    assert status is not None and status.started == 1
