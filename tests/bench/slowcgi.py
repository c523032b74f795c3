"""The "static GET beside a slow CGI" workload: slow scripts kept running, and a stall probe.

While wrk measures 1 KiB GETs, `SlowCgiLoad` keeps a few requests for cgi-bin/slow.sh in flight
(a script that prints its header block and a line, sleeps 5 s, prints a second line): each of its
threads sends one request, reads the answer and starts the next as soon as one ends, so scripts
sleep through the whole measurement. A worker that waited for its script's output would stall
every other connection it carries, which is what the workload is there to show.

Whether the scripts really run is not taken on trust: a monitor thread counts the server's
processes running slow.sh (found in /proc by command line, and by ancestry, so that a script
another server left behind is not counted), `wait_running` waits for all of them before the
measurement starts, and the smallest count seen during the measurement is reported. Aborted
requests (the measurement ends before the 5 s) are closed by the client, as a browser would.

wrk's own figures have a blind spot for exactly this failure: its latency histogram holds only
the requests that completed within its `--timeout`, and a connection stalled until the end of the
run contributes no sample at all. So `StallProbe` runs beside wrk: a few keep-alive connections,
each sending a 1 KiB GET every 20 ms and timing it (a stalled request is waited for, up to 30 s,
even after the run ends), whose maximum is reported next to wrk's p99.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.tree import SLOW_CGI_SLEEP

FIRST, SECOND = b"first\n", b"second\n"


class SlowCgiLoad:
    """`count` requests for the slow script against one server, kept running by threads."""

    def __init__(self, port: int, path: str, count: int, script: Path, server_pid: int) -> None:
        self.port = port
        self.request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Connection: close\r\n\r\n").encode()
        self.count = count
        self.script = str(script).encode()
        self.server_pid = server_pid
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.started = self.completed = self.aborted = 0
        self.streamed = 0  # answers whose first line came before the sleep ended
        self.wrong: list[str] = []
        self.running = 0  # scripts of this server alive at the last count
        self.window_min: int | None = None  # fewest scripts alive during the measurement
        self.in_window = False
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(count)]
        self.threads.append(threading.Thread(target=self._monitor, daemon=True))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_running(self, timeout: float = 10.0) -> int:
        """Wait for `count` scripts (at most `timeout`), open the measurement window, return
        how many run. A server that runs fewer at once (a worker blocked on its first script
        takes no other request) is measured all the same: the table shows how many ran."""
        deadline = time.monotonic() + timeout
        while self.running < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:
            self.in_window, self.window_min = True, self.running
        return self.running

    def stop(self) -> dict[str, Any]:
        with self.lock:
            self.in_window = False
        self.stopping.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(5)
        return {"slow_requests": self.count, "slow_started": self.started,
                "slow_completed": self.completed, "slow_aborted": self.aborted,
                "slow_streamed": self.streamed,
                "slow_running_min": self.window_min or 0, "slow_wrong": self.wrong[:1]}

    # -- threads -----------------------------------------------------------------------------------
    def _client(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                self.started += 1
            try:
                self._one()
            except OSError as exc:
                self._wrong(f"slow CGI request failed: {exc!r}")
                self.stopping.wait(0.5)

    def _one(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(self.request)
            sock.settimeout(0.2)
            sent, data, first_at = time.monotonic(), bytearray(), 0.0
            while not self.stopping.is_set():
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    self._judge(bytes(data))
                    return
                data += chunk
                if not first_at and FIRST in data:
                    first_at = time.monotonic()
                    if first_at - sent < SLOW_CGI_SLEEP / 2:
                        with self.lock:
                            self.streamed += 1  # the first line came before the sleep ended
            with self.lock:
                self.aborted += 1
            if data and not data.startswith(b"HTTP/1.1 200 ") and not data.startswith(
                    b"HTTP/1.0 200 "):
                self._wrong(f"slow CGI answered {bytes(data[:40])!r}")

    def _judge(self, data: bytes) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")) or \
                not (FIRST in body and body.find(SECOND) > body.find(FIRST)):
            self._wrong(f"slow CGI answered {data[:60]!r}")
            return
        with self.lock:
            self.completed += 1

    def _wrong(self, why: str) -> None:
        with self.lock:
            self.wrong.append(why)

    def _monitor(self) -> None:
        while not self.stopping.is_set():
            self.running = running_scripts(self.script, self.server_pid)
            with self.lock:
                if self.in_window and self.window_min is not None:
                    self.window_min = min(self.window_min, self.running)
            self.stopping.wait(0.2)


def running_scripts(script: bytes, ancestor: int) -> int:
    """Processes whose command line names `script` and that descend from `ancestor`."""
    parents: dict[int, int] = {}
    matches = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            parents[pid] = int(stat[stat.rindex(b")") + 2:].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if script in f.read():
                    matches.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    found = 0
    for pid in matches:
        seen = 0
        while pid > 1 and seen < 64:  # a bounded walk up the process tree
            pid, seen = parents.get(pid, 0), seen + 1
            if pid == ancestor:
                found += 1
                break
    return found


class StallProbe:
    """Keep-alive connections timing one 1 KiB GET every 20 ms each; the slowest is kept."""

    def __init__(self, port: int, path: str, connections: int = 4, timeout: float = 30.0) -> None:
        self.port, self.path, self.timeout = port, path, timeout
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._probe, daemon=True)
                        for _ in range(connections)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(self.timeout + 5)
        ordered = sorted(self.latencies)
        return {"probe_requests": len(ordered),
                "probe_max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
                "probe_failures": self.failures[:1]}

    def _probe(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    took = time.monotonic() - began
                    if isinstance(exc, TimeoutError):
                        self.latencies.append(took)  # the stall this probe is there to catch
                    self.failures.append(f"probe: {exc!r} after {took:.1f} s")
                    conn.close()
                    self.stopping.wait(0.2)
                    continue
                self.latencies.append(time.monotonic() - began)
                if response.status != 200:
                    self.failures.append(f"probe: status {response.status}")
                self.stopping.wait(0.02)
        finally:
            conn.close()
