"""The one-wait worker: nothing a script or a client does holds the loop (issue 9's acceptance).

Every test runs one worker, so "another connection of the same worker" is any other connection.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, poll

LINE_SLEEP_LINE = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nfirst\\n'\nsleep {pause}\necho second\n"
STREAM = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nfor i in $(seq {count}); do echo line $i; sleep 1; done\n"
BIG = "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec head -c {size} /dev/zero\n"
# Ends its output, then lingers: the response must not wait for its exit.
LINGER = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ndone\\n'\nexec >&- 2>&-\nsleep 30\n"


def scripts(tmp_path: Path, **programs: str) -> Path:
    root = tmp_path / "cgi"
    root.mkdir(exist_ok=True)
    for name, text in programs.items():
        script = root / f"{name}.sh"
        script.write_text(text)
        script.chmod(0o755)
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "small.txt").write_bytes(b"x" * 1024)
    return root


def one_worker(make_daemon, root: Path, tmp_path: Path, cgi: dict | None = None,
               **settings: object) -> Daemon:
    return make_daemon({
        "workers": 1,
        "routes": [
            {"prefix": "/cgi/", "cgi": {"root": str(root), **(cgi or {})}},
            {"prefix": "/", "static": {"root": str(tmp_path / "www")}},
        ],
        **settings,
    })


def static_latencies(daemon: Daemon, count: int, pause: float = 0.0) -> list[float]:
    """Seconds each of `count` static GETs took, each on a new connection."""
    times = []
    for _ in range(count):
        started = time.monotonic()
        status, _, body = daemon.get("/small.txt")
        times.append(time.monotonic() - started)
        assert (status, len(body)) == (200, 1024)
        time.sleep(pause)
    return times


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_static_gets_are_not_held_by_a_sleeping_script(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, pause=LINE_SLEEP_LINE.format(pause=4))
    daemon = one_worker(make_daemon, root, tmp_path)
    result: list[object] = []
    slow = threading.Thread(target=lambda: result.append(daemon.get("/cgi/pause.sh")))
    slow.start()
    try:
        poll(lambda: children_of(daemon.worker_pids()[0]), 5, "the script running")
        times = static_latencies(daemon, 200)
    finally:
        slow.join(15)
    assert p99(times) < 0.05, f"p99 {p99(times) * 1000:.1f} ms"
    assert result and result[0][0] == 200 and result[0][2] == b"first\nsecond\n"  # type: ignore[index]


def test_a_stream_longer_than_the_worker_timeout_completes(make_daemon, tmp_path: Path) -> None:
    """cgi.timeout bounds silence, not length, and the heartbeat is true: nobody kills the worker."""
    root = scripts(tmp_path, stream=STREAM.format(count=4))
    daemon = one_worker(make_daemon, root, tmp_path, cgi={"timeout": 2},
                        timeouts={"worker": 1.5})
    worker = daemon.worker_pids()
    status, headers, body = daemon.get("/cgi/stream.sh")
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert body == b"".join(b"line %d\n" % i for i in range(1, 5))
    assert daemon.worker_pids() == worker
    assert "stuck" not in daemon.log()
    poll(lambda: '"GET /cgi/stream.sh HTTP/1.1" 200' in daemon.access_log.read_text(), 5,
         "the stream's access log line")


def slow_reader(daemon: Daemon, path: str) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((daemon.host, daemon.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock, sock.recv(64)


def test_slow_readers_hold_at_most_max_processes_scripts(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, big=BIG.format(size=20_000_000))
    daemon = one_worker(make_daemon, root, tmp_path, cgi={"max_processes": 8, "queue": 0})
    worker = daemon.worker_pids()[0]
    clients = []
    most = 0
    for _ in range(200):
        clients.append(slow_reader(daemon, "/cgi/big.sh"))
        most = max(most, len(children_of(worker)))
    answers = [first[:12] for _, first in clients]
    assert answers.count(b"HTTP/1.1 200") == 8
    assert answers.count(b"HTTP/1.1 503") == 192
    times = static_latencies(daemon, 100)
    most = max(most, len(children_of(worker)))
    assert most <= 8
    assert p99(times) < 0.1, f"p99 {p99(times) * 1000:.1f} ms"
    for sock, _ in clients:
        sock.close()
    poll(lambda: not children_of(worker), 5, "every script gone after its client left")


SHORT = "#!/bin/sh\nsleep 0.3\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n"


def test_a_burst_above_max_processes_waits_in_line(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, short=SHORT)
    daemon = one_worker(make_daemon, root, tmp_path, cgi={"max_processes": 2, "queue": 4})
    worker = daemon.worker_pids()[0]
    results: list[int] = []
    most = 0

    def fetch() -> None:
        results.append(daemon.get("/cgi/short.sh")[0])

    began = time.monotonic()
    threads = [threading.Thread(target=fetch) for _ in range(6)]  # 2 running + 4 waiting
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        most = max(most, len(children_of(worker)))
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    assert results == [200] * 6  # none refused: the line took the burst
    assert most <= 2
    assert elapsed >= 0.85, elapsed  # three turns of 0.3 s


def test_beyond_the_line_and_after_timeout_the_answer_is_503(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, stream=STREAM.format(count=3), short=SHORT)
    daemon = one_worker(make_daemon, root, tmp_path,
                        cgi={"max_processes": 1, "queue": 1, "timeout": 1.5})
    holder = slow_reader(daemon, "/cgi/stream.sh")  # a line a second for 3 s: the only slot
    assert holder[1].startswith(b"HTTP/1.1 200")
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as waiting:
        waiting.sendall(b"GET /cgi/short.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
        status, headers, _ = daemon.get("/cgi/short.sh")  # the line is full
        assert status == 503 and headers["retry-after"] == "1"
        began = time.monotonic()
        answer = waiting.recv(64)
        assert answer.startswith(b"HTTP/1.1 503"), answer  # waited its timeout for a slot
        assert 1.0 < time.monotonic() - began + 0.2 < 2.5
    holder[0].close()
    daemon.wait_for_log("waited 1.5s for a script slot")
    assert daemon.get("/cgi/short.sh")[2] == b"ran\n"  # slot and line are free again


def test_a_client_that_leaves_the_line_starts_nothing(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, short=SHORT, pause=LINE_SLEEP_LINE.format(pause=1))
    daemon = one_worker(make_daemon, root, tmp_path, cgi={"max_processes": 1, "queue": 8})
    worker = daemon.worker_pids()[0]
    holder = threading.Thread(target=lambda: daemon.get("/cgi/pause.sh"))
    holder.start()
    time.sleep(0.2)
    for _ in range(5):
        with socket.create_connection((daemon.host, daemon.port)) as sock:
            sock.sendall(b"GET /cgi/short.sh HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.02)
    holder.join(10)
    poll(lambda: not children_of(worker), 5, "the holder reaped")
    time.sleep(0.5)
    assert not children_of(worker)  # the departed waiters never ran
    assert daemon.get("/cgi/short.sh")[2] == b"ran\n"


def test_a_client_below_the_floor_rate_is_dropped_and_its_script_stopped(
        make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, big=BIG.format(size=20_000_000))
    daemon = one_worker(make_daemon, root, tmp_path, cgi={"min_send_rate": 1_000_000},
                        timeouts={"send": 1})
    worker = daemon.worker_pids()[0]
    sock, first = slow_reader(daemon, "/cgi/big.sh")
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    try:
        while sock.recv(64):
            time.sleep(0.05)  # about 1 KB/s: far below the floor
    except ConnectionResetError:
        pass
    assert time.monotonic() - started < 6
    poll(lambda: not children_of(worker), 5, "the script stopped with its client")
    sock.close()


def test_a_script_that_closes_its_output_early_is_answered_at_once(
        make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, linger=LINGER)
    daemon = one_worker(make_daemon, root, tmp_path)
    worker = daemon.worker_pids()[0]
    started = time.monotonic()
    for _ in range(5):
        assert daemon.get("/cgi/linger.sh")[2] == b"done\n"
    assert time.monotonic() - started < 1.0  # was 0.5 s of blocked worker per request
    poll(lambda: not children_of(worker), 3, "each lingering script stopped")


def test_a_client_that_leaves_ends_its_silent_script(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path, pause=LINE_SLEEP_LINE.format(pause=30).replace("first", ""))
    daemon = one_worker(make_daemon, root, tmp_path)
    worker = daemon.worker_pids()[0]
    with socket.create_connection((daemon.host, daemon.port)) as sock:
        sock.sendall(b"GET /cgi/pause.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        poll(lambda: children_of(worker), 5, "the script running")
    poll(lambda: not children_of(worker), 3, "the script stopped when its client left")
    assert daemon.get("/small.txt")[0] == 200


def test_empty_lines_do_not_extend_the_header_deadline(make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path)
    daemon = one_worker(make_daemon, root, tmp_path, timeouts={"header": 1})
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:
            try:
                sock.sendall(b"\r\n")
            except OSError:
                closed = True
                break
            ready = sock.recv(100) if _readable(sock, 0.3) else None
            if ready is not None:
                closed = True
                break
        assert closed and time.monotonic() - started < 2.5


def _readable(sock: socket.socket, wait: float) -> bool:
    import select

    return bool(select.select([sock], [], [], wait)[0])


def test_a_request_sent_while_the_worker_was_stopped_is_answered(
        make_daemon, tmp_path: Path) -> None:
    root = scripts(tmp_path)
    daemon = one_worker(make_daemon, root, tmp_path, timeouts={"keepalive": 1})
    worker = daemon.worker_pids()[0]
    conn = daemon.connection()
    conn.request("GET", "/small.txt")
    assert conn.getresponse().read() == b"x" * 1024
    os.kill(worker, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # past the keep-alive timeout, while the worker cannot run
        conn.request("GET", "/small.txt")
        time.sleep(0.2)
    finally:
        os.kill(worker, signal.SIGCONT)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"x" * 1024)
    conn.close()


@pytest.mark.parametrize("handler", ["static", "cgi"])
def test_request_bodies_in_flight_are_bounded_per_worker(
        make_daemon, tmp_path: Path, handler: str) -> None:
    """limits.body_spool caps what uploads in progress hold; a body no handler reads holds nothing."""
    root = scripts(tmp_path, cat="#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec wc -c\n")
    daemon = one_worker(make_daemon, root, tmp_path,
                        limits={"body": 600_000, "body_spool": 1_000_000})
    request = "POST /cgi/cat.sh" if handler == "cgi" else "GET /small.txt"
    head = f"{request} HTTP/1.1\r\nHost: t\r\nContent-Length: 600000\r\n\r\n".encode()
    first = socket.create_connection((daemon.host, daemon.port), timeout=5)
    first.sendall(head + b"a" * 1000)  # an upload in progress
    time.sleep(0.3)  # let the worker take the head and reserve the body
    second = daemon.raw(head + b"b" * 600_000)
    expected = b"600000" if handler == "cgi" else b"x" * 1024
    if handler == "cgi":
        assert second.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in second
    else:
        assert second.startswith(b"HTTP/1.1 200")  # static reads no body: nothing held
    first.sendall(b"a" * 599_000)
    answer = b""
    while b"\r\n\r\n" not in answer or expected not in answer.split(b"\r\n\r\n", 1)[1]:
        answer += first.recv(65536)
    first.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert expected in answer.split(b"\r\n\r\n", 1)[1]
    third = daemon.raw(head + b"c" * 600_000)  # the budget was given back
    assert third.startswith(b"HTTP/1.1 200")


def test_streaming_responses_with_a_declared_length_keep_the_connection(
        make_daemon, tmp_path: Path) -> None:
    script = ("#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 12\\n\\n'\n"
              "printf 'hello '\nsleep 0.2\nprintf 'world!'\n")
    root = scripts(tmp_path, length=script)
    daemon = one_worker(make_daemon, root, tmp_path)
    conn = daemon.connection()
    for _ in range(2):
        conn.request("GET", "/cgi/length.sh")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == "12"
        assert response.read() == b"hello world!"
    conn.request("GET", "/small.txt")
    assert conn.getresponse().status == 200
    conn.close()
    assert isinstance(conn, http.client.HTTPConnection)


def test_a_trickled_head_is_cut_at_its_deadline(make_daemon, tmp_path: Path) -> None:
    """Bytes that keep coming do not stretch timeouts.header: the head must be complete in time."""
    root = scripts(tmp_path)
    daemon = one_worker(make_daemon, root, tmp_path, timeouts={"header": 1})
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /small.txt HTTP/1.1\r\n")
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 4 and not answer:
            try:
                sock.sendall(b"X")  # a byte of a header name every 0.1 s
            except OSError:
                break
            if _readable(sock, 0.1):
                answer = sock.recv(100)
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 2.5
