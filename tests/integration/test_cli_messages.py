"""What the command line says when something is wrong: the reason, never a misleading guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import run_forkd as forkd


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
    assert result.stderr.startswith(
        f"{config}:1:13: access_log: directory {shared} is writable by other users")
    assert forkd("-c", str(config)).returncode == 1  # and the server does not start either


@pytest.mark.parametrize("action", ["reload", "reopen", "stop"])
def test_signal_with_a_missing_config_says_so(tmp_path: Path, action: str) -> None:
    missing = tmp_path / "nowhere" / "forkd.yaml"
    result = forkd("-c", str(missing), "-s", action)
    assert result.returncode == 1
    assert f"{missing}: cannot read: No such file or directory" in result.stderr
    assert "sets no pidfile" not in result.stderr


@pytest.mark.parametrize("action", ["reload", "reopen", "stop"])
def test_signal_with_a_yaml_syntax_error_gives_line_and_column(tmp_path: Path, action: str) -> None:
    config = tmp_path / "forkd.yaml"
    config.write_text("pidfile: forkd.pid\nlisten: [\"127.0.0.1:0\"\nworkers: 2\n")
    result = forkd("-c", str(config), "-s", action)
    assert result.returncode == 1
    assert f"{config}:3:1: YAML syntax error" in result.stderr, result.stderr
    assert "sets no pidfile" not in result.stderr
    assert f"-s {action} needs the pidfile set in {config}, which cannot be read" in result.stderr


def test_signal_with_an_invalid_config_still_finds_the_pidfile(tmp_path: Path) -> None:
    config = write_config(tmp_path, "pidfile: forkd.pid\nworkerz: 2\n")
    result = forkd("-c", str(config), "-s", "stop")
    assert result.returncode == 1
    assert f"no live master in pidfile {tmp_path / 'forkd.pid'}" in result.stderr


def test_signal_without_a_pidfile_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, "workers: 1\n")
    result = forkd("-c", str(config), "-s", "reopen")
    assert result.returncode == 1
    assert "sets no pidfile: -s needs one to find the master" in result.stderr
