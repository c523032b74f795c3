"""The servers under test: how each one is configured, started, found ready and stopped.

Every peer serves the same tree (tree.py) on a loopback port with an equivalent set-up: two
workers where the server has workers, sendfile, no access log (except the "forkd, access log on"
row), 30 s keep-alive idle timeout, high keep-alive request limits; nginx and forkd also serve
it over HTTPS on a second port (the run's certificate, Mozilla intermediate). Each runs in its own
session (process group) with its output in its own directory, and `stop()` kills the whole group,
so an interrupted run leaves nothing behind. Peers bind a port chosen by binding port 0 and
releasing it (a tiny race that is acceptable in a benchmark, never in a test); forkd binds port 0
itself for plain HTTP and reports the port in its error log (its HTTPS port is chosen like the
peers').
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

from forkd import tls as forkd_tls
from tests.bench.tree import Tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATES = HERE / "templates"
LISTEN_RE = re.compile(r"listening on (\S+)")

LISTING = "listing"
CGI = "cgi"
TLS = "tls"  # an HTTPS listener with the run's certificate and the Mozilla intermediate profile


class PeerFailed(Exception):
    """A server did not start (the message carries the tail of its log)."""


class Peer:
    """One server under test. Subclasses say how to configure and launch it."""

    key = ""  # short identifier used in JSON and file names
    label = ""  # the name shown in tables
    features: frozenset[str] = frozenset()  # optional workloads it supports: LISTING, CGI, TLS
    stop_signal = signal.SIGTERM
    open_dir = True  # its directory is world-writable: servers that drop to nobody write there

    def __init__(self, workdir: Path, tree: Tree) -> None:
        self.dir = workdir / self.key
        self.tree = tree
        self.port = 0
        self.tls_port = 0  # the HTTPS listener, for peers with TLS
        self.proc: subprocess.Popen[bytes] | None = None

    # -- what a subclass provides -----------------------------------------------------------------
    @classmethod
    def missing(cls) -> list[str]:
        """Debian packages ("apt:NAME") or pip requirements ("pip:NAME") not installed."""
        return []

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def version(self) -> str:
        return ""

    # -- life cycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        os.chmod(self.dir / "tmp", 0o777)
        # servers that drop to nobody open their logs afterwards; forkd opens its logs and
        # pidfile before dropping privileges and refuses a directory others can write to
        os.chmod(self.dir, 0o777 if self.open_dir else 0o755)
        if not self.port:
            self.port = free_port()
        if TLS in self.features and not self.tls_port:
            self.tls_port = free_port()
        argv = self.command()
        with open(self.dir / "stdout.log", "ab") as out, open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(argv, cwd=self.dir, env=self.env(), stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.port and fetch_status(self.port, "/1k.txt") == 200:
                return
            time.sleep(0.05)
        raise PeerFailed(f"{self.label}: not ready within {timeout:.0f}s\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerFailed(f"{self.label}: exited with {self.proc.returncode}\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, grace in ((self.stop_signal, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
            if sig != signal.SIGKILL:
                _killpg_quietly(self.proc.pid)  # children that outlived their leader
            break
        self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        text = []
        for name in ("error.log", "stderr.log", "stdout.log"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)

    def url(self, path: str, tls: bool = False) -> str:
        if tls:
            return f"https://127.0.0.1:{self.tls_port}{path}"
        return f"http://127.0.0.1:{self.port}{path}"

    def render(self, template: str, target: str, **values: object) -> Path:
        text = string.Template((TEMPLATES / template).read_text())
        path = self.dir / target
        path.write_text(text.substitute(dir=self.dir, docroot=self.tree.root, port=self.port,
                                        tls_port=self.tls_port, cert=self.tree.cert,
                                        key=self.tree.key, **values))
        return path


class Nginx(Peer):
    key, label = "nginx", "nginx"
    features = frozenset({LISTING, TLS})

    @classmethod
    def missing(cls) -> list[str]:
        return [] if shutil.which("nginx") else ["apt:nginx"]

    def command(self) -> list[str]:
        # forkd's own intermediate profile, so that both servers offer exactly the same
        dhparam = self.dir / "ffdhe2048.pem"
        dhparam.write_bytes(forkd_tls.FFDHE2048)
        conf = self.render("nginx.conf", "nginx.conf", ciphers=forkd_tls.INTERMEDIATE_CIPHERS,
                           dhparam=dhparam)
        return ["nginx", "-e", str(self.dir / "error.log"), "-p", str(self.dir), "-c", str(conf)]

    def version(self) -> str:
        return _first_line(["nginx", "-v"])


class Lighttpd(Peer):
    key, label = "lighttpd", "lighttpd"
    features = frozenset({LISTING, CGI})
    stop_signal = signal.SIGINT  # lighttpd: INT = stop now, TERM waits for connections

    @classmethod
    def missing(cls) -> list[str]:
        return [] if shutil.which("lighttpd") else ["apt:lighttpd"]

    def command(self) -> list[str]:
        return ["lighttpd", "-D", "-f", str(self.render("lighttpd.conf", "lighttpd.conf"))]

    def version(self) -> str:
        return _first_line(["lighttpd", "-v"]).split(" - ")[0]


class Apache(Peer):
    key, label = "apache", "Apache prefork"
    features = frozenset({LISTING, CGI})

    @classmethod
    def missing(cls) -> list[str]:
        return [] if shutil.which("apache2") else ["apt:apache2"]

    def command(self) -> list[str]:
        conf = self.render("apache.conf", "apache.conf")
        return ["apache2", "-f", str(conf), "-DFOREGROUND"]

    def env(self) -> dict[str, str]:
        return {**os.environ, "APACHE_RUN_DIR": str(self.dir), "APACHE_LOCK_DIR": str(self.dir)}

    def version(self) -> str:
        return _first_line(["apache2", "-v"]).replace("Server version: ", "")


class Gunicorn(Peer):
    key, label, worker_class = "gunicorn-sync", "gunicorn sync", "sync"
    extra: tuple[str, ...] = ()

    @classmethod
    def missing(cls) -> list[str]:
        return [] if _importable("gunicorn") else ["pip:gunicorn"]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class",
                self.worker_class, "--bind", f"127.0.0.1:{self.port}", "--backlog", "2048",
                "--keep-alive", "30", "--log-level", "warning", *self.extra,
                "tests.bench.wsgi_app:app"]

    def env(self) -> dict[str, str]:
        return {**os.environ, "BENCH_DOCROOT": str(self.tree.root), "PYTHONPATH": str(REPO)}

    def version(self) -> str:
        return "gunicorn " + _module_version("gunicorn")


class GunicornThreads(Gunicorn):
    key, label, worker_class = "gunicorn-gthread", "gunicorn gthread", "gthread"
    extra = ("--threads", "4")


class PythonHttpServer(Peer):
    """`python3 -m http.server` as people run it (HTTP/1.0, a thread per connection), with --cgi."""

    key, label = "http.server", "python -m http.server"
    features = frozenset({LISTING, CGI})

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", "--cgi", "--bind", "127.0.0.1",
                "--directory", str(self.tree.root), str(self.port)]

    def version(self) -> str:
        return "Python " + sys.version.split()[0]


class Forkd(Peer):
    key, label = "forkd", "forkd"
    features = frozenset({LISTING, CGI, TLS})
    stop_signal = signal.SIGINT  # fast stop: the bench has no requests worth finishing
    access_log = False
    open_dir = False

    def command(self) -> list[str]:
        log = str(self.dir / "access.log") if self.access_log else "null"
        conf = self.render("forkd.yaml", "forkd.yaml", access_log=log)
        return [sys.executable, "-m", "forkd", "-c", str(conf)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO)}

    @classmethod
    def missing(cls) -> list[str]:
        needed = ("click", "yaml", "setproctitle")
        return [] if all(map(_importable, needed)) else [f"pip:-e {REPO}"]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            log = self.log_tail(200)
            ports = {int(a.rsplit(":", 1)[1]) for a in LISTEN_RE.findall(log)} - {self.tls_port}
            if "ready: generation 1" in log and ports:
                self.port = ports.pop()  # the plain listener's: the kernel's choice
                return
            time.sleep(0.05)
        raise PeerFailed(f"{self.label}: no 'ready: generation 1' within {timeout:.0f}s\n"
                         f"{self.log_tail()}")

    def start(self, timeout: float = 30.0) -> None:
        self.port = -1  # forkd picks its own port; see wait_ready
        super().start(timeout)

    def pids(self) -> tuple[int, list[int]]:
        """The master's PID and its workers' PIDs (by process title)."""
        assert self.proc is not None
        master = self.proc.pid
        workers = []
        for child in _children(master):
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"forkd: worker"):
                workers.append(child)
        return master, sorted(workers)

    def version(self) -> str:
        try:
            out = subprocess.run([sys.executable, "-m", "forkd", "--version"], env=self.env(),
                                 capture_output=True, text=True, timeout=10, check=False)
            return out.stdout.strip() or out.stderr.strip().splitlines()[-1]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "forkd"


class ForkdAccessLog(Forkd):
    key, label = "forkd-log", "forkd (access log on)"
    access_log = True


class ForkdNoLog(Forkd):
    key, label = "forkd-nolog", "forkd (access log off)"


ALL_PEERS: tuple[type[Peer], ...] = (Nginx, Lighttpd, Apache, GunicornThreads, Gunicorn,
                                     PythonHttpServer, ForkdNoLog, ForkdAccessLog)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch_status(port: int, path: str) -> int:
    """The status of one GET, or 0 when the server does not answer (yet)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _killpg_quietly(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _importable(module: str) -> bool:
    argv = [sys.executable, "-c", f"import {module}"]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _module_version(module: str) -> str:
    probe = subprocess.run([sys.executable, "-c", f"import {module}; print({module}.__version__)"],
                           capture_output=True, text=True, check=False)
    return probe.stdout.strip()


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else ""
