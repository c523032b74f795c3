"""Shared tools of the hardening suite (test_hardening_*.py); this module holds no tests.

- `SOAK`: FORKD_SOAK=1 in the environment raises every count and duration to the soak figures
  documented in README.md ("Hardening"); CI runs the small ones.
- `make_site`: a static tree (small page, 1 KiB, a 4 MiB file for slow readers and ranges) and a
  cgi-bin whose scripts append their QUERY_STRING to a counter file, so a test can prove which
  requests reached a handler.
- `Load`: N keep-alive connections driven by one thread and one selector, each sending requests
  from a list and checking each response's status; every request that does not get its expected
  answer is a failure, recorded with what went wrong (refused, reset, EOF in flight, bad status).
- `Probe`: one "normal" client making fresh requests in a loop while something hostile runs,
  keeping every latency, so a test can assert on the p99.
- `ProcessFacts`: RSS, open descriptors and children of the daemon's workers, read from /proc.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

SOAK = os.environ.get("FORKD_SOAK", "") not in ("", "0")


def scaled(ci: Any, soak: Any) -> Any:
    """The CI figure, or the soak figure under FORKD_SOAK=1."""
    return soak if SOAK else ci


BIG = 4 << 20  # bytes of www/big.bin

COUNT_CGI = """\
#!/bin/sh
# Every request that reaches this script leaves one line: proof that a handler ran it.
echo "$REQUEST_METHOD $QUERY_STRING" >> "$COUNTER"
cat > /dev/null
printf 'Content-Type: text/plain\\n\\ncounted\\n'
"""

HELLO_CGI = """\
#!/bin/sh
printf 'Content-Type: text/plain\\n\\nhello\\n'
"""


def make_site(directory: Path) -> Path:
    """www/ and cgi-bin/ under directory; returns directory."""
    www = directory / "www"
    www.mkdir(parents=True)
    (www / "index.html").write_text("<h1>hardened</h1>\n")
    (www / "1k.txt").write_bytes(b"k" * 1024)
    (www / "big.bin").write_bytes(os.urandom(1 << 16) * (BIG >> 16))
    cgi = directory / "cgi-bin"
    cgi.mkdir()
    for name, text in (("count.sh", COUNT_CGI), ("hello.sh", HELLO_CGI)):
        (cgi / name).write_text(text)
        (cgi / name).chmod(0o755)
    (directory / "counter").write_text("")
    return directory


def site_config(site: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "routes": [
            {"prefix": "/cgi-bin/", "cgi": {"root": str(site / "cgi-bin"), "timeout": 10,
                                            "env": {"COUNTER": str(site / "counter")}}},
            {"prefix": "/", "static": {"root": str(site / "www")}},
        ],
    }
    config.update(overrides)
    return config


def counted(site: Path) -> list[str]:
    """The lines the counting CGI wrote: one per request that reached it."""
    return (site / "counter").read_text().splitlines()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# -- a keep-alive load generator -------------------------------------------------------------------


@dataclass
class Exchange:
    """One request to send and the status it must get."""

    raw: bytes
    status: int = 200
    head_only: bool = False  # HEAD: no body follows whatever Content-Length says


def get(path: str, status: int = 200, headers: str = "") -> Exchange:
    return Exchange(f"GET {path} HTTP/1.1\r\nHost: load\r\n{headers}\r\n".encode(), status)


class _Client:
    __slots__ = ("exchange", "fresh", "inbuf", "index", "out", "sent_at", "sock")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.out = b""
        self.inbuf = bytearray()
        self.exchange: Exchange | None = None
        self.sent_at = 0.0
        self.index = index
        self.fresh = True


class Load:
    """`connections` keep-alive clients in one thread; see the module docstring.

    A response with `Connection: close` (a retiring worker's last answer, an error) makes the client
    reconnect. A request is a failure when the connection is refused, reset or closed while the
    request is in flight, when the answer is not the expected status, or when it takes longer
    than `timeout` seconds.
    """

    def __init__(self, host: str, port: int, connections: int, exchanges: list[Exchange],
                 timeout: float = 10.0, limit: int = 0) -> None:
        self.address = (host, port)
        self.connections = connections
        self.exchanges = exchanges
        self.timeout = timeout
        self.limit = limit  # stop after this many answered requests (0: until stop())
        self.ok = 0
        self.failures: list[str] = []
        # The failures on connections that had not been answered once yet (connect refused, reset
        # from the listen queue, ...), also counted in `failures`.
        self.fresh_failures: list[str] = []
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.finished = threading.Event()
        self.selector = selectors.DefaultSelector()
        self.next = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "load thread did not stop"

    def wait(self, timeout: float) -> None:
        """Until `limit` requests were answered (or failed)."""
        if not self.finished.wait(timeout):
            raise AssertionError(f"load not finished in {timeout}s: {self.ok} ok, "
                                 f"{len(self.failures)} failed")

    @property
    def answered(self) -> int:
        return self.ok + len(self.failures)

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        for index in range(self.connections):
            self._connect(index)
        while not self.done.is_set():
            for key, _ in self.selector.select(0.05):
                client: _Client = key.data
                self._readable(client) if client.out == b"" else self._writable(client)
            now = time.monotonic()
            for key in list(self.selector.get_map().values()):
                client = key.data
                if client.exchange is not None and now - client.sent_at > self.timeout:
                    self._fail(client, f"no answer in {self.timeout}s")
            if self.limit and self.answered >= self.limit:
                self.finished.set()
                self.done.wait()
        for key in list(self.selector.get_map().values()):
            key.data.sock.close()
        self.selector.close()

    def _connect(self, index: int) -> None:
        if self.done.is_set():
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.address)
        except BlockingIOError:
            pass
        except OSError as exc:
            sock.close()
            self.failures.append(f"connect: {exc}")
            self.fresh_failures.append(f"connect: {exc}")
            time.sleep(0.01)
            return self._connect(index) if not self.done.is_set() else None
        client = _Client(sock, index)
        self.selector.register(sock, selectors.EVENT_WRITE, client)
        self._send_next(client)

    def _send_next(self, client: _Client) -> None:
        exchange = self.exchanges[self.next % len(self.exchanges)]
        self.next += 1
        client.exchange = exchange
        client.out = exchange.raw
        client.sent_at = time.monotonic()
        self.selector.modify(client.sock, selectors.EVENT_WRITE, client)

    def _writable(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(client, f"send: {exc.strerror or exc}")
            return
        client.out = client.out[sent:]
        if not client.out:
            self.selector.modify(client.sock, selectors.EVENT_READ, client)

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(client, f"recv: {exc.strerror or exc}")
            return
        if not data:
            self._fail(client, "closed with the request in flight")
            return
        client.inbuf += data
        self._parse(client)

    def _parse(self, client: _Client) -> None:
        buffer = client.inbuf
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        fields = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        exchange = client.exchange
        assert exchange is not None
        if exchange.head_only or status in (100, 204, 304):
            length = 0
        elif fields.get("transfer-encoding") == "chunked":
            length = chunked_length(buffer, end + 4)
            if length < 0:
                return
        else:
            length = int(fields.get("content-length", "0"))
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        if status == 100:
            return self._parse(client)
        self.latencies.append(time.monotonic() - client.sent_at)
        client.fresh = False
        if status == exchange.status:
            self.ok += 1
        else:
            self.failures.append(f"status {status} for {exchange.raw[:40]!r}")
        client.exchange = None
        if fields.get("connection", "").lower() == "close":
            self._reconnect(client)
        else:
            self._send_next(client)

    def _fail(self, client: _Client, why: str) -> None:
        self.failures.append(why)
        if client.fresh:
            self.fresh_failures.append(why)
        client.exchange = None
        self._reconnect(client)

    def _reconnect(self, client: _Client) -> None:
        self.selector.unregister(client.sock)
        client.sock.close()
        self._connect(client.index)


def chunked_length(buffer: bytearray, start: int) -> int:
    """Bytes of the complete chunked body at buffer[start:], or -1 while incomplete."""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            return -1 if trailer_end < 0 else trailer_end + 4 - start
        position += size + 2
        if position > len(buffer):
            return -1


# -- a probing client ------------------------------------------------------------------------------


class Probe:
    """A normal client: a fresh connection and one GET every `interval` seconds, each timed."""

    def __init__(self, host: str, port: int, path: str = "/1k.txt", interval: float = 0.02,
                 timeout: float = 5.0) -> None:
        self.address = (host, port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode()
        self.interval = interval
        self.timeout = timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(self.timeout + 5)

    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                answer = self._one()
                if not answer.startswith(b"HTTP/1.1 200 "):
                    self.failures.append(f"answer {answer[:40]!r}")
            except OSError as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.monotonic() - started)
            self.stop_event.wait(self.interval)

    def _one(self) -> bytes:
        with socket.create_connection(self.address, timeout=self.timeout) as sock:
            sock.sendall(self.request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)


# -- process facts ---------------------------------------------------------------------------------


@dataclass
class ProcessFacts:
    rss_kib: int
    fds: int
    children: int
    fd_targets: list[str] = field(default_factory=list)


def process_facts(pid: int) -> ProcessFacts:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fd_dir = Path(f"/proc/{pid}/fd")
    targets = []
    for entry in fd_dir.iterdir():
        try:
            targets.append(os.readlink(entry))
        except OSError:
            pass
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                              check=False).stdout
    return ProcessFacts(rss, len(targets), len(children.split()), sorted(targets))


def descendants(pid: int) -> list[int]:
    """Every process below pid (children, grandchildren, ...)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True,
                             check=False).stdout
        for child in map(int, out.split()):
            found.append(child)
            frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def raise_own_nofile(wanted: int) -> None:
    """Slow-client tests open thousands of sockets in this process and in slowhttptest."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted <= hard or (soft < wanted and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def refused(exc: OSError) -> bool:
    return exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET)
