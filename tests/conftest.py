from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """make_daemon(config_dict_or_yaml, start=True) → a running Daemon, killed at teardown."""
    daemons: list[Daemon] = []

    def factory(config: dict | str, start: bool = True, **kwargs) -> Daemon:
        directory = tmp_path / f"d{len(daemons)}"
        directory.mkdir()
        daemon = Daemon(directory, config, **kwargs)
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield factory
    for daemon in daemons:
        daemon.stop()
