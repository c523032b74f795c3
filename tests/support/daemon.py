"""Start the real forkd daemon for a test and talk to it.

The daemon runs in its own session (process group) with its error log in a file; its listeners bind
port 0 and the master logs `listening on HOST:PORT` for each, which is how tests learn the port (no
racy free-port probing). `ready: generation N` in the log means the workers accept. Teardown kills the
whole group, so no test leaves a process behind, and then fails the test if the daemon logged a
Python traceback (a bug in forkd, whatever the test asserted): a test that provokes one on purpose
says so with `daemon.expect_tracebacks()`.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"listening on (\S+)")


class Daemon:
    def __init__(self, directory: Path, config: dict[str, Any] | str, env: dict[str, str] | None = None):
        self.dir = Path(directory)
        self.config_path = self.dir / "forkd.yaml"
        self.error_log = self.dir / "error.log"
        self.access_log = self.dir / "access.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: list[str] = []
        self.tracebacks_allowed: int | None = 0  # None: any number
        self.checked = False
        self.write_config(config)

    # -- config ---------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any] | str) -> None:
        if isinstance(config, str):
            text = textwrap.dedent(config)
        else:
            data = {"listen": ["127.0.0.1:0"], "workers": 2, "error_log": str(self.error_log),
                    "access_log": str(self.access_log), "pidfile": str(self.dir / "forkd.pid")}
            data.update(config)
            text = yaml.safe_dump(data, sort_keys=False)
        self.config_path.write_text(text)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, *extra: str, wait: bool = True, timeout: float = 15.0) -> Daemon:
        env = dict(os.environ if self.env is None else self.env)
        # This clone's forkd first, whatever else the environment puts on the path.
        paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
        if str(ROOT) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])
        with open(self.dir / "stdout.log", "ab") as out, open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "forkd", "-c", str(self.config_path), *extra],
                cwd=self.dir, env=env, start_new_session=True, stdout=out, stderr=err,
            )
        if wait:
            self.wait_for_log("ready: generation 1", timeout)
            self.addresses = LISTEN_RE.findall(self.log())
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.addresses[0].rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.addresses[0].rsplit(":", 1)[0].strip("[]")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def barrier(self, timeout: float = 10.0) -> None:
        """Return once the master has begun a new pass of its loop after this call.

        The master logs every signal it dispatches at the top of its loop; USR1 (reopen the logs)
        changes nothing a test looks at. Whatever the master decided in earlier passes (spawning,
        retiring, killing) has then been done: a test can assert that something did *not* happen
        without sleeping for a guessed while.
        """
        seen = self.log().count("received SIGUSR1")
        self.signal(signal.SIGUSR1)
        self.wait_for_log("received SIGUSR1", timeout, count=seen + 1)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Kill the whole process group, whatever state it is in; then check the logs."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if not self.checked:
            self.checked = True
            self.check_no_traceback()

    def expect_tracebacks(self, count: int | None = None) -> None:
        """This test provokes `count` more logged tracebacks (None: any number)."""
        if count is None or self.tracebacks_allowed is None:
            self.tracebacks_allowed = None
        else:
            self.tracebacks_allowed += count

    def check_no_traceback(self) -> None:
        """Fail when the logs hold more Python tracebacks than the test said it provokes."""
        if self.tracebacks_allowed is None:
            return
        # One logged event per line (forkd escapes the newlines of a traceback).
        found = [line for line in self.log().splitlines()
                 if "Traceback (most recent call last)" in line]
        if len(found) > self.tracebacks_allowed:
            shown = "\n".join(line[:4000].replace("\\n", "\n") for line in found[:3])
            raise AssertionError(
                f"forkd logged {len(found)} traceback(s), {self.tracebacks_allowed} expected "
                f"(a bug, or a test that should call expect_tracebacks()):\n{shown}"
            )

    # -- logs -----------------------------------------------------------------------------------
    def log(self) -> str:
        parts = []
        for name in (self.error_log, self.dir / "stderr.log"):
            if name.exists():
                parts.append(name.read_text(errors="replace"))
        return "".join(parts)

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"forkd exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()}")

    # -- processes ------------------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        pids = []
        for pid in map(int, out.split()):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if title.startswith(b"forkd: worker"):
                pids.append(pid)
        return sorted(pids)

    def listening(self, pid: int) -> bool:
        """Whether process `pid` still holds one of the master's listening sockets."""
        return bool(sockets(pid) & sockets(self.pid))

    def client_sockets(self, pid: int) -> int:
        """How many sockets worker `pid` holds besides the listeners: its client connections."""
        return len(sockets(pid) - sockets(self.pid))

    # -- clients --------------------------------------------------------------------------------
    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 5.0, shut: bool = False) -> bytes:
        """Send raw bytes, return everything the server sends until it closes (or timeout)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except TimeoutError:
                pass
            return b"".join(chunks)


def sockets(pid: int) -> set[str]:
    """The socket inodes process `pid` holds open ("socket:[1234]"), from /proc."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def poll(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until condition() is true; fail the test naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout}s: {what}")


def run_forkd(*args: str, timeout: float = 60, cwd: Path | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """The forkd command line as an operator runs it (this checkout's code), output captured."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "forkd", *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd, check=False,
    )
