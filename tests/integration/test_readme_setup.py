"""README.md's Set-up, as a newcomer follows it: the order of the steps, the packages, Ctrl-C.

The steps are read from the README itself, so the text and the tests cannot drift apart. Following
them for real (a fresh virtual environment, `pip install -e .` from the package index, the demo
site) needs the network and takes a while: it runs with FORKD_NEWCOMER=1, as `.ci/run` may do.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import LISTEN_RE, ROOT

RUN = "python3 -m pip install -e . && forkd -c conf/site.yaml"  # CONTRACT.md, verbatim
TEST = "python3 -m pip install -e '.[test]' && python3 -m pytest"


def setup_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## Set-up\n", 1)[1].split("\n## ", 1)[0]


def commands() -> list[str]:
    """The shell lines of the Set-up section's code blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", setup_section(), flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()
            if line.strip()]


def test_the_contract_commands_are_there_verbatim_after_the_venv_step() -> None:
    lines = commands()
    assert RUN in lines and TEST in lines
    venv = next(i for i, line in enumerate(lines) if "python3 -m venv" in line)
    activate = next(i for i, line in enumerate(lines) if ". .venv/bin/activate" in line)
    first_pip = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert venv <= activate < first_pip  # no "externally-managed-environment" on the way
    assert "Ctrl-C" in setup_section()


def test_every_debian_package_the_ci_installs_for_the_tests_is_in_the_readme() -> None:
    ci = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    [install] = re.findall(r"apt-get install -y --no-install-recommends ([^\n]+)", ci)
    wanted = set(install.split()) - {"python3-pip", "ca-certificates"}  # pip comes with the venv
    readme = {
        word
        for line in commands()
        if "apt-get install" in line
        for word in line.split("apt-get install", 1)[1].split()
        if not word.startswith("-")
    }
    assert wanted <= readme, f"in .ci/run but not in the README's Set-up: {wanted - readme}"


def assert_serving(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> None:
    """Wait until the forkd writing its terminal to `out` is ready, then GET / from it: 200."""
    deadline = time.monotonic() + timeout
    while "ready: generation 1" not in out.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, out.read_text()
        time.sleep(0.1)
    [address] = LISTEN_RE.findall(out.read_text())
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
        assert response.status == 200


def test_ctrl_c_stops_the_demo_site(tmp_path: Path) -> None:
    """The demo config (on port 0, so as not to depend on 8080 being free), stopped as a terminal's
    Ctrl-C does it: SIGINT to the whole foreground process group, master and workers alike."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("forkd.pid*", "*.sqlite3"))
    site = conf / "site.yaml"
    site.write_text(site.read_text().replace('"127.0.0.1:8080"', '"127.0.0.1:0"'))
    out = tmp_path / "terminal.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with out.open("wb") as terminal:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forkd", "-c", "conf/site.yaml"],
            cwd=tmp_path,
            env=env,
            stdout=terminal,
            stderr=terminal,
            start_new_session=True,
        )
    try:
        assert_serving(proc, out, 15)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    log = out.read_text()
    assert "exiting with code 0: fast stop on SIGINT" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert not (conf / "forkd.pid").exists()


@pytest.mark.skipif(
    os.environ.get("FORKD_NEWCOMER") != "1",
    reason="needs the package index; FORKD_NEWCOMER=1 follows the Set-up in a fresh venv",
)
def test_a_newcomer_following_the_setup_gets_the_demo_site(tmp_path: Path) -> None:
    """Steps 1 and 2 as written (apt-get aside), in a copy of the sources, in a fresh venv."""
    repo = tmp_path / "forkd"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        if name:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name, follow_symlinks=False)
    site = repo / "conf" / "site.yaml"
    site.write_text(site.read_text().replace('"127.0.0.1:8080"', '"127.0.0.1:0"'))
    steps = [line for line in commands() if "apt-get" not in line]
    steps = steps[: steps.index(RUN) + 1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = tmp_path / "terminal.log"
    with out.open("wb") as terminal:
        proc = subprocess.Popen(
            ["bash", "-euc", " && ".join(f"{{ {step}; }}" for step in steps)],
            cwd=repo,
            env=env,
            stdout=terminal,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert_serving(proc, out, 300)  # the venv and the pip install come first
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(15) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert (repo / ".venv" / "bin" / "forkd").exists()
