"""A real php-fpm master for a test: its own config, a pool on a unix socket in the test directory.

`PhpFpm(directory, ...).start()` writes php-fpm.conf, starts `php-fpm8.2 --nodaemonize` in its own
process group and waits until the pool's socket accepts connections; `stop()` ends the group
(QUIT, then KILL) and waits for it. php.ini is not read (-n): the pool runs PHP's built-in
defaults (no output buffering, display_errors to the output off), plus the `php_admin_value`s
given, so a test does not depend on the machine's PHP configuration. Shared extensions (Debian
builds mysqli, gd and opcache as modules) load only when named in `extensions`, in that order:
`zend:opcache` loads a Zend extension.

Run as root (as CI does), the pool's children run as root too (--allow-to-run-as-root): the
test directories live under pytest's 0700 base directory, which no other account can enter.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.processes import stop_group
from tests.support.tools import need_tool


def php_fpm_program() -> str:
    """The php-fpm binary (Debian installs it as /usr/sbin/php-fpmX.Y, often outside PATH)."""
    for name in ("php-fpm", "php-fpm8.2"):
        found = shutil.which(name)
        if found:
            return found
    candidates = sorted(glob.glob("/usr/sbin/php-fpm*"))
    if candidates:
        return candidates[-1]
    return need_tool("php-fpm")  # skips, or fails under FORKD_REQUIRE_TOOLS


class PhpFpm:
    def __init__(self, directory: Path, children: int = 4, backlog: int = 511,
                 admin_values: dict[str, str] | None = None,
                 extensions: list[str] | None = None, max_requests: int = 0) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.dir / "php-fpm.sock"
        self.log = self.dir / "php-fpm.log"
        self.conf = self.dir / "php-fpm.conf"
        self.children = children
        self.backlog = backlog
        self.admin_values = admin_values or {}
        self.extensions = extensions or []
        self.max_requests = max_requests  # a child exits after this many requests (0: never)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def connect(self) -> str:
        return f"unix:{self.socket}"

    def write_config(self) -> None:
        root = os.geteuid() == 0
        values = "".join(f"php_admin_value[{name}] = {value}\n"
                         for name, value in self.admin_values.items())
        self.conf.write_text(
            "[global]\n"
            f"pid = {self.dir / 'php-fpm.pid'}\n"
            f"error_log = {self.log}\n"
            "daemonize = no\n"
            "[test]\n"
            + ("user = root\ngroup = root\n" if root else "")
            + f"listen = {self.socket}\n"
            f"listen.backlog = {self.backlog}\n"
            "pm = static\n"
            f"pm.max_children = {self.children}\n"
            f"pm.max_requests = {self.max_requests}\n"
            "catch_workers_output = yes\n"
            "security.limit_extensions = .php\n"
            + values
        )

    def start(self, timeout: float = 15.0) -> PhpFpm:
        program = php_fpm_program()
        self.write_config()
        argv = [program, "--nodaemonize", "-n", "--fpm-config", str(self.conf)]
        for name in self.extensions:
            kind, _, module = name.rpartition(":")
            argv += ["-d", f"{'zend_extension' if kind == 'zend' else 'extension'}={module}"]
        if os.geteuid() == 0:
            argv.append("--allow-to-run-as-root")
        with open(self.dir / "php-fpm.out", "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"php-fpm did not start: {self.output()}")
            time.sleep(0.05)
        return self

    def _accepts(self) -> bool:
        if not self.socket.exists():
            return False
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(self.socket))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def output(self) -> str:
        texts = []
        for path in (self.dir / "php-fpm.out", self.log):
            if path.exists():
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, signal.SIGQUIT, 5.0)  # QUIT: php-fpm's graceful stop
