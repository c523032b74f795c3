"""What the command line says when something is wrong: the reason, never a misleading guess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import ROOT


def forkd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "forkd", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )


def write_config(directory: Path, text: str) -> Path:
    (directory / "www").mkdir(exist_ok=True)
    path = directory / "forkd.yaml"
    path.write_text(text + "routes: [{prefix: /, static: {root: www}}]\n")
    return path


def test_check_names_a_log_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    config = write_config(tmp_path, f"access_log: {shared}/access.log\n")
    result = forkd("-c", str(config), "--check")
    assert result.returncode == 1
    assert result.stderr.startswith(f"access_log: directory {shared} is writable by other users")
    assert forkd("-c", str(config)).returncode == 1  # and the server does not start either
