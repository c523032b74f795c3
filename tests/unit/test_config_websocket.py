"""The `websocket` route key: its command resolved and checked, its limits validated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forkd.config import ConfigError, WebSocketConfig, loads


def websocket(base: Path, settings: str) -> WebSocketConfig:
    config = loads(f"routes:\n  - prefix: /ws/\n    websocket: {settings}\n", base)
    route = config.routes[0]
    assert route.handler[0] == "websocket"
    return route.handler_config  # type: ignore[no-any-return]


def problems(base: Path, settings: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        websocket(base, settings)
    return caught.value.problems


def test_defaults_and_a_command_relative_to_the_config(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "chat.sh"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    settings = websocket(tmp_path, "{command: [bin/chat.sh, --room, lobby]}")
    assert settings.command == (str(program), "--room", "lobby")
    assert settings.max_processes == 100 and settings.max_message == 1048576
    assert settings.origins is None and settings.ping_interval == 30.0 and not settings.binary


def test_a_bare_program_name_is_looked_up_in_path(tmp_path: Path) -> None:
    settings = websocket(tmp_path, "{command: cat, origins: ['https://example.com'], binary: true}")
    assert settings.command == (shutil.which("cat"),)
    assert settings.origins == ("https://example.com",) and settings.binary


@pytest.mark.parametrize("settings, expected", [
    ("{}", "routes[0].websocket.command: required key is missing"),
    ("{command: []}", "routes[0].websocket.command: expected a program and its arguments"),
    ("{command: [no-such-program-here]}", "command[0]: no program named 'no-such-program-here'"),
    ("{command: [./missing.sh]}", "command[0]: not an executable file"),
    ("{command: [cat], max_message: 0}", "websocket.max_message: must be at least 1"),
    ("{command: [cat], max_processes: 0}", "websocket.max_processes: must be at least 1"),
    ("{command: [cat], ping_interval: 0}", "websocket.ping_interval: must be positive"),
    ("{command: [cat], origin: [x]}", "websocket.origin: unknown key (did you mean origins?)"),
])
def test_bad_settings_name_their_key(tmp_path: Path, settings: str, expected: str) -> None:
    found = problems(tmp_path, settings)
    assert any(expected in line for line in found), found
