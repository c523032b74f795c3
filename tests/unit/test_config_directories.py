"""Directories the master writes in (logs, pidfile, unix sockets) must be out of others' reach.

See the rule above `untrusted_directory` in forkd/config.py. Cases that chown need root.
"""

from __future__ import annotations

import grp
import os
import pwd
import textwrap
from pathlib import Path

import pytest

from forkd.config import ConfigError, loads

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    return tmp_path


def problems(text: str, base: Path) -> list[str]:
    try:
        loads(textwrap.dedent(text) + "routes: [{prefix: /, static: {root: www}}]\n", base)
    except ConfigError as exc:
        return [f"{p.key}: {p.reason}" for p in exc.found]  # positions: see test_config.py
    return []


def directory(path: Path, mode: int, uid: int = -1, gid: int = -1) -> Path:
    path.mkdir()
    path.chmod(mode)
    if uid != -1 or gid != -1:
        os.chown(path, uid, gid)
    return path


def owner_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def test_private_directories_are_fine(base: Path) -> None:
    logs = directory(base / "logs", 0o755)
    assert problems(
        f"""
        access_log: {logs}/access.log
        error_log: {logs}/error.log
        pidfile: {logs}/forkd.pid
        listen: ["unix:{logs}/forkd.sock"]
        """,
        base,
    ) == []


def test_a_world_writable_directory_is_refused_for_every_key(base: Path) -> None:
    shared = directory(base / "shared", 0o777)
    found = problems(
        f"""
        access_log: {shared}/access.log
        error_log: {shared}/error.log
        pidfile: {shared}/forkd.pid
        listen: ["127.0.0.1:0", "unix:{shared}/forkd.sock"]
        """,
        base,
    )
    reason = f"directory {shared} is writable by other users (owner {owner_name()}, mode 0777)"
    assert found == [
        f"access_log: {reason}", f"error_log: {reason}", f"pidfile: {reason}",
        f"listen[1]: {reason}",
    ]


def test_a_sticky_root_directory_holds_pidfile_and_socket_but_no_log(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sticky exception is for root-owned directories")
    tmp = directory(base / "tmp", 0o1777)
    found = problems(
        f"""
        access_log: {tmp}/access.log
        pidfile: {tmp}/forkd.pid
        listen: ["unix:{tmp}/forkd.sock"]
        """,
        base,
    )
    assert found == [
        f"access_log: directory {tmp} is writable by other users (owner root, mode 1777)"
    ]


def test_a_link_kept_in_a_writable_directory_is_refused(base: Path) -> None:
    logs = directory(base / "logs", 0o755)
    shared = directory(base / "shared", 0o777)
    (shared / "logs").symlink_to(logs)  # whoever can write `shared` can point it elsewhere
    found = problems(f"access_log: {shared}/logs/access.log\n", base)
    reason = f"directory {shared} is writable by other users (owner {owner_name()}, mode 0777)"
    assert found == [f"access_log: {reason}"]


@needs_root
def test_the_configured_user_may_own_the_directory_itself(base: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    logs = directory(base / "logs", 0o755, nobody.pw_uid)
    text = f"access_log: {logs}/access.log\n"
    assert problems("user: nobody\n" + text, base) == []
    assert problems(text, base) == [
        f"access_log: directory {logs} is writable by other users (owner nobody, mode 0755)"
    ]


@needs_root
def test_the_configured_user_may_not_own_a_directory_above(base: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    home = directory(base / "home", 0o755, nobody.pw_uid)
    logs = directory(home / "logs", 0o755)  # root's, but nobody can rename it and plant a link
    assert problems(f"user: nobody\naccess_log: {logs}/access.log\n", base) == [
        f"access_log: directory {home} is writable by other users (owner nobody, mode 0755)"
    ]


@needs_root
def test_group_write_is_fine_for_the_configured_group_only(base: Path) -> None:
    nogroup = grp.getgrnam("nogroup").gr_gid
    logs = directory(base / "logs", 0o775, gid=nogroup)
    text = f"access_log: {logs}/access.log\n"
    assert problems(f"user: nobody\ngroup: nogroup\n{text}", base) == []
    assert problems(text, base) == [
        f"access_log: directory {logs} is writable by other users (owner root, mode 0775)"
    ]
