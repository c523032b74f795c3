"""What a test needs from the machine: outside programs, Python modules, root.

A test (or the fixture that starts what the test drives) calls `need_tool("curl")` or
`need_module("redbot")` before it uses the tool. On a developer's machine a
missing tool skips the test with the reason. In CI (`.ci/run` exports FORKD_REQUIRE_TOOLS=1,
having installed every tool) a missing tool *fails* the test instead: a CI run that silently
skipped the slow-client or CGI tests would report green while testing nothing of them.

Root is not a tool: tests that need it (workers switching to `nobody`) skip when not run as root,
in CI too, since running as root is the CI's own choice.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest

REQUIRE_ENV = "FORKD_REQUIRE_TOOLS"


def tools_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def _missing(what: str) -> None:
    if tools_required():
        pytest.fail(f"{what} is missing, and {REQUIRE_ENV}=1 says every tool must be here")
    pytest.skip(f"{what} is not installed")


def need_tool(name: str) -> str:
    """The path of program `name`; skip the test (fail under FORKD_REQUIRE_TOOLS) without it."""
    path = shutil.which(name)
    if path is None:
        _missing(f"the program {name!r}")
    assert path is not None  # _missing raised (skip or fail)
    return path


def need_module(name: str) -> None:
    """Skip (or fail, see need_tool) unless the Python module `name` can be imported."""
    if importlib.util.find_spec(name) is None:
        _missing(f"the Python module {name!r}")


def debian_package_installed(name: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True,
                         text=True, check=False).stdout
    return out.endswith(" installed")


def need_packages(names: list[str]) -> None:
    """Skip (or fail, see need_tool) unless every Debian package in `names` is installed."""
    missing = [name for name in names if not debian_package_installed(name)]
    if missing:
        _missing(f"the Debian package(s) {' '.join(missing)}")


def need_root(why: str) -> None:
    """Skip unless running as root (never a failure: see the module docstring)."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")
