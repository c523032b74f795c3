"""Faults: workers killed under load, a full disk for the access log, too few file descriptors,
CGI descendants that ignore TERM.

- SIGKILL storm: one worker killed every 200 ms while keep-alive clients load the daemon. The only
  requests allowed to fail are those in flight on the killed worker (their connection is reset or
  closed mid-request): never a refused connection, a wrong status or a timeout, and never more
  failures than kills x connections. The service answers in every half-second of the storm.
- access_log: /dev/full: every write fails with ENOSPC; the requests are served all the same.
- RLIMIT_NOFILE lowered (prlimit) on the running master and worker, then three times more
  connections held than descriptors: each request ends as 200, 503 or a refused/closed connection
  (never a 500 or 502: running out of descriptors is an overload, RFC 9110 §15.6.4), no worker
  dies, and once the holders go, everything is served again.
- CGI: a script whose grandchild ignores TERM (detached, or holding the script's stdout open), and
  a script abandoned by its client: the whole process group is gone after the request.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hardening_support import (
    Load,
    alive,
    descendants,
    get,
    make_site,
    scaled,
    site_config,
)

from tests.support.daemon import Daemon, poll

IN_FLIGHT = ("closed with the request in flight", "recv: Connection reset by peer",
             "send: Connection reset by peer", "send: Broken pipe")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("faults"))


def start(tmp_path: Path, site: Path, name: str = "d", **overrides: object) -> Daemon:
    directory = tmp_path / name
    directory.mkdir()
    return Daemon(directory, site_config(site, **overrides)).start()


# -- SIGKILL every 200 ms ----------------------------------------------------------------------


def test_workers_killed_every_200ms_under_load(tmp_path: Path, site: Path) -> None:
    daemon = start(tmp_path, site, workers=2)
    seconds = scaled(6.0, 60.0)
    connections = 16
    kills = 0
    buckets: dict[int, int] = {}
    try:
        with Load(daemon.host, daemon.port, connections, [get("/1k.txt"), get("/index.html")]) as load:
            poll(lambda: load.ok > 100, 5, "load running")
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                before = load.ok
                workers = daemon.worker_pids()
                if workers:
                    os.kill(random.choice(workers), signal.SIGKILL)
                    kills += 1
                time.sleep(0.2)
                bucket = int((time.monotonic() - started) * 2)
                buckets[bucket] = buckets.get(bucket, 0) + load.ok - before
        assert daemon.proc is not None and daemon.proc.poll() is None, "the master died"
        unexpected = [f for f in load.failures if f not in IN_FLIGHT]
        assert unexpected == [], unexpected[:10]
        assert len(load.failures) <= kills * connections
        silent = [b for b, served in buckets.items() if served == 0]
        assert not silent, f"no answer in half-seconds {silent} of {sorted(buckets)}"
        poll(lambda: len(daemon.worker_pids()) == 2, 10, "two workers after the storm")
        assert daemon.get("/index.html")[0] == 200
        print(f"{kills} workers killed; {load.ok} requests served, {len(load.failures)} failed "
              f"(all in flight on a killed worker)")
    finally:
        daemon.stop()


# -- the access log on a full disk -------------------------------------------------------------


def test_a_full_disk_for_the_access_log_does_not_stop_serving(tmp_path: Path, site: Path) -> None:
    daemon = start(tmp_path, site, workers=2, access_log="/dev/full")
    try:
        workers = daemon.worker_pids()
        exchanges = [get("/1k.txt"), get("/missing", 404), get("/cgi-bin/hello.sh"),
                     get("/big.bin", 206, "Range: bytes=0-99\r\n")]
        with Load(daemon.host, daemon.port, 8, exchanges, limit=scaled(2000, 50000)) as load:
            load.wait(120)
        assert load.failures == [], load.failures[:5]
        assert daemon.worker_pids() == workers
        daemon.signal(signal.SIGUSR1)  # reopening a log that cannot be written to works too
        daemon.wait_for_log("reopened")
        assert daemon.get("/1k.txt")[0] == 200
    finally:
        daemon.stop()


# -- too many open files -----------------------------------------------------------------------

NOFILE = 48


def test_accepting_without_descriptors_gives_503_and_recovers(tmp_path: Path, site: Path) -> None:
    """RLIMIT_NOFILE lowered on the running master and worker, then 3 x NOFILE connections whose
    heads are incomplete; then every head is completed. Each request ends as 200, 503 or a
    refused/closed connection (or still waits in the listen queue); no worker dies; once the
    connections are gone, everything is served again."""
    daemon = start(tmp_path, site, workers=1)
    try:
        _flood_and_recover(daemon)
    finally:
        daemon.stop()


def _flood_and_recover(daemon: Daemon) -> None:
    workers = daemon.worker_pids()
    holders: list[socket.socket] = []
    try:
        for pid in [daemon.pid, *workers]:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        for index in range(NOFILE * 3):
            sock = socket.create_connection((daemon.host, daemon.port), timeout=5)
            path = ("/index.html", "/big.bin")[index % 2]
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: held\r\nConnection: close\r\n".encode())
            holders.append(sock)
        poll(lambda: "out of file descriptors" in daemon.log(), 5, "a worker ran out of fds")
        for sock in holders:
            try:
                sock.sendall(b"\r\n")
            except OSError:
                pass  # already refused
        outcomes: dict[str, int] = {}
        for sock in holders:
            outcome = _outcome(sock)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        print(f"RLIMIT_NOFILE {NOFILE}, {NOFILE * 3} connections: {outcomes}")
        assert set(outcomes) <= {"200", "503", "refused", "queued"}, outcomes
        assert outcomes.get("503", 0) + outcomes.get("refused", 0) >= 1, outcomes
        assert daemon.worker_pids() == workers, "a worker died of EMFILE"
    finally:
        for sock in holders:
            sock.close()
    # Accepting pauses for 0.5 s after EMFILE; meanwhile new connections wait in the backlog.
    poll(lambda: daemon.get("/index.html")[0] == 200, 10, "serving again")
    statuses = [daemon.get(path)[0] for path in ("/1k.txt", "/index.html", "/big.bin",
                                                 "/cgi-bin/hello.sh") for _ in range(5)]
    assert set(statuses) == {200}, statuses
    assert daemon.worker_pids() == workers
    assert "out of file descriptors" in daemon.log()


def _outcome(sock: socket.socket) -> str:
    """How a held request ended: its status, "refused" (reset or closed) or "queued"."""
    sock.settimeout(0.05)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        if not data:
            return "queued"  # still in the listen queue, or accepted and not yet answered
    except OSError:
        if not data:
            return "refused"
    if not data:
        return "refused"
    return data.split(b" ", 2)[1].decode()


BIG_BODY = 100000  # more than the worker keeps in memory: the body spools to a temporary file
NEEDS_A_DESCRIPTOR = {
    "static_file": b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "cgi_pipes": b"GET /cgi-bin/hello.sh HTTP/1.1\r\nHost: a\r\n\r\n",
    "body_spool": b"POST /cgi-bin/count.sh HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                  % BIG_BODY + b"x" * BIG_BODY,
}


@pytest.mark.parametrize("kind", sorted(NEEDS_A_DESCRIPTOR))
def test_a_request_needing_a_descriptor_when_none_is_left_gets_503(tmp_path: Path, site: Path,
                                                                   kind: str) -> None:
    """The worker's descriptor table is made full (every number below the soft limit in use), then a
    request on an open connection needs one more: a file to open, pipes for a script, a temporary
    file for a large body. The answer is 503 with Retry-After, the worker survives, and once a
    descriptor is free again the same request succeeds."""
    daemon = start(tmp_path, site, workers=1)
    try:
        worker = daemon.worker_pids()[0]
        client = _keep_alive(daemon)
        others = _fill_descriptor_table(daemon, worker)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (_highest_fd(worker) + 1, hard))
        client.sendall(NEEDS_A_DESCRIPTOR[kind])
        status, fields = _response(client)
        assert (status, fields.get("retry-after")) == (503, "1")
        assert daemon.worker_pids() == [worker]
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        for sock in others:
            sock.close()
        retry = _keep_alive(daemon)
        retry.sendall(NEEDS_A_DESCRIPTOR[kind])
        assert _response(retry)[0] == 200
        assert daemon.worker_pids() == [worker]
    finally:
        daemon.stop()


def _keep_alive(daemon: Daemon) -> socket.socket:
    """A connection the worker has accepted (one request answered on it)."""
    sock = socket.create_connection((daemon.host, daemon.port), timeout=5)
    sock.sendall(b"GET /1k.txt HTTP/1.1\r\nHost: a\r\n\r\n")
    assert _response(sock)[0] == 200
    return sock


def _fill_descriptor_table(daemon: Daemon, worker: int) -> list[socket.socket]:
    """Accepted connections fill the holes of the worker's descriptor table (accept takes the
    lowest free number) until every number up to the highest is in use."""
    held: list[socket.socket] = []
    for _ in range(200):
        numbers = {int(name) for name in os.listdir(f"/proc/{worker}/fd")}
        if len(numbers) == max(numbers) + 1:
            return held
        held.append(_keep_alive(daemon))
    raise AssertionError("the worker's descriptor table did not become dense")


def _highest_fd(worker: int) -> int:
    return max(int(name) for name in os.listdir(f"/proc/{worker}/fd"))


def _response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """Status and fields of one response (its body is read and dropped; chunked or not)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if fields.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
    else:
        length = int(fields.get("content-length", "0"))
        while len(rest) < length:
            rest += sock.recv(65536)
    return int(lines[0].split()[1]), fields


# -- CGI descendants ---------------------------------------------------------------------------

DETACHED = """\
#!/bin/sh
# A grandchild that ignores TERM, detached from every pipe; the script answers and exits.
sh -c 'trap "" TERM; exec sleep 300' </dev/null >/dev/null 2>&1 &
echo "$!" > "$PIDFILE.$QUERY_STRING"
printf 'Content-Type: text/plain\\nContent-Length: 5\\n\\nbye!\\n'
"""

HOLDER = """\
#!/bin/sh
# A grandchild that ignores TERM and keeps the script's stdout open; the script exits at once.
sh -c 'trap "" TERM; while :; do sleep 1; done' &
echo "$!" > "$PIDFILE.$QUERY_STRING"
printf 'Content-Type: text/plain\\n\\npartial\\n'
"""

TRICKLE = """\
#!/bin/sh
# A grandchild that ignores TERM; the script itself streams forever (until its client leaves).
sh -c 'trap "" TERM; exec sleep 300' </dev/null >/dev/null 2>&1 &
echo "$!" > "$PIDFILE.$QUERY_STRING"
printf 'Content-Type: text/plain\\n\\n'
while :; do echo tick; sleep 0.05; done
"""


@pytest.fixture
def cgi_daemon(tmp_path: Path, site: Path) -> Iterator[tuple[Daemon, Path]]:
    cgi = tmp_path / "cgi"
    cgi.mkdir()
    for name, text in (("detached.sh", DETACHED), ("holder.sh", HOLDER), ("trickle.sh", TRICKLE)):
        (cgi / name).write_text(text)
        (cgi / name).chmod(0o755)
    pids = tmp_path / "pids"
    pids.mkdir()
    daemon = start(tmp_path, site, workers=1, routes=[
        {"prefix": "/cgi-bin/", "cgi": {"root": str(cgi), "timeout": 2,
                                        "env": {"PIDFILE": str(pids / "pid")}}},
        {"prefix": "/", "static": {"root": str(site / "www")}},
    ])
    yield daemon, pids
    daemon.stop()


def _grandchild(pids: Path, tag: str) -> int:
    path = pids / f"pid.{tag}"
    poll(path.exists, 5, f"{path} written")
    return int(path.read_text())


def test_cgi_grandchild_ignoring_term_is_killed_after_the_response(cgi_daemon: tuple[Daemon, Path]) -> None:
    daemon, pids = cgi_daemon
    status, _, body = daemon.get("/cgi-bin/detached.sh?a")
    assert (status, body) == (200, b"bye!\n")
    grandchild = _grandchild(pids, "a")
    poll(lambda: not alive(grandchild), 3, "detached grandchild killed")


def test_cgi_grandchild_holding_stdout_is_killed_at_the_timeout(cgi_daemon: tuple[Daemon, Path]) -> None:
    daemon, pids = cgi_daemon
    started = time.monotonic()
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as sock:
        sock.sendall(b"GET /cgi-bin/holder.sh?b HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # the body never ends; the timeout (2 s) cuts it
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
    assert time.monotonic() - started < 6
    grandchild = _grandchild(pids, "b")
    poll(lambda: not alive(grandchild), 3, "stdout-holding grandchild killed")
    assert daemon.get("/index.html")[0] == 200


def test_cgi_abandoned_by_its_client_is_cleaned_up(cgi_daemon: tuple[Daemon, Path]) -> None:
    daemon, pids = cgi_daemon
    worker = daemon.worker_pids()[0]
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /cgi-bin/trickle.sh?c HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    grandchild = _grandchild(pids, "c")
    poll(lambda: not alive(grandchild) and not descendants(worker), 5, "script group killed")


def test_cgi_of_a_killed_worker_is_cleaned_up(cgi_daemon: tuple[Daemon, Path]) -> None:
    """A worker SIGKILLed mid-CGI (OOM killer, stuck-worker kill) cannot clean up itself."""
    daemon, pids = cgi_daemon
    worker = daemon.worker_pids()[0]
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /cgi-bin/trickle.sh?d HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        grandchild = _grandchild(pids, "d")
        script = [p for p in descendants(worker) if p != grandchild]
        os.kill(worker, signal.SIGKILL)
    poll(lambda: not alive(grandchild) and not any(alive(p) for p in script), 5,
         "the script and its grandchild killed after their worker died")
