"""Timeouts and slow clients: none of them may pin a worker.

Every daemon here has ONE worker, so if a slow client held the worker, the fast client's requests
would stall and the timing assertions would fail.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_http import MakeDaemon, RawClient, connect, make_site, site_config, start

from tests.support.daemon import Daemon, poll

FAST = 0.5  # seconds a fast client may wait for one small response while others misbehave


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("slow"))


@pytest.fixture(scope="module")
def one_worker(site: Path) -> Iterator[Daemon]:
    daemon = start(site / "d", site_config(
        site, workers=1, timeouts={"header": 1, "body": 1, "keepalive": 2, "send": 1},
    ))
    yield daemon
    daemon.stop()


def fast_requests(daemon: Daemon, count: int = 10) -> float:
    """The slowest of `count` small requests on a fresh keep-alive connection, in seconds."""
    conn = connect(daemon)
    worst = 0.0
    for _ in range(count):
        start_at = time.monotonic()
        status, _, body = conn.request("/1k.txt")
        worst = max(worst, time.monotonic() - start_at)
        assert status == 200 and len(body) == 1024
    conn.close()
    return worst


def test_408_after_header_timeout(one_worker: Daemon) -> None:
    conn = connect(one_worker)
    conn.send(b"GET /1k.txt HTTP/1.1\r\nHost: a\r\n")  # never the blank line
    start_at = time.monotonic()
    status, headers, _ = conn.response()
    waited = time.monotonic() - start_at
    assert status == 408 and headers["connection"] == "close"
    assert 0.8 <= waited < 2.5
    assert conn.closed()


def test_silent_connection_closed_without_reply(one_worker: Daemon) -> None:
    conn = connect(one_worker)
    assert conn.closed(timeout=3)  # nothing sent, nothing owed: closed after timeouts.header


def test_idle_keep_alive_closed_after_keepalive_timeout(one_worker: Daemon) -> None:
    conn = connect(one_worker)
    assert conn.request("/1k.txt")[0] == 200
    start_at = time.monotonic()
    assert conn.closed(timeout=4)
    assert 1.5 <= time.monotonic() - start_at < 3.5


def test_408_after_body_timeout(one_worker: Daemon) -> None:
    conn = connect(one_worker)
    conn.send(b"GET /1k.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
    status, headers, _ = conn.response()
    assert status == 408 and headers["connection"] == "close"


def test_trickling_head_does_not_pin_the_worker(one_worker: Daemon) -> None:
    """slowloris: one byte every 0.2 s while another client is served at full speed."""
    stop = threading.Event()
    trickling = threading.Event()
    slow = socket.create_connection((one_worker.host, one_worker.port))

    def trickle() -> None:
        for byte in b"GET /1k.txt HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"z" * 100:
            if stop.wait(0.2):
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return
            trickling.set()

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        assert trickling.wait(5)
        [worker] = one_worker.worker_pids()
        poll(lambda: one_worker.client_sockets(worker) >= 1, 5, "the worker holds the slow client")
        assert fast_requests(one_worker) < FAST
    finally:
        stop.set()
        thread.join()
        slow.close()


def test_trickling_body_does_not_pin_the_worker(one_worker: Daemon) -> None:
    """slowhttptest -B: a complete head, then a body one byte at a time."""
    slow = RawClient(one_worker.host, one_worker.port)
    slow.send(b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(3):
        slow.send(b"b")
        time.sleep(0.1)  # the client under test is slow: this is its pace
    assert fast_requests(one_worker) < FAST
    status, _, _ = slow.response()  # timeouts.body ends it
    assert status == 408


def test_slow_reader_does_not_pin_the_worker_and_is_dropped(one_worker: Daemon) -> None:
    """slowhttptest -X: ask for 16 MiB and read nothing; timeouts.send drops the client."""
    slow = socket.create_connection((one_worker.host, one_worker.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
    poll(lambda: _readable(slow), 5, "the response started")  # the worker is writing to it now
    assert fast_requests(one_worker) < FAST
    time.sleep(1.5)  # the client under test: it reads nothing for longer than timeouts.send
    received = 0
    slow.settimeout(5)
    start_at = time.monotonic()
    try:
        while chunk := slow.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass  # the expected end: reset, so the unread rest is not left trickling out
    slow.close()
    assert received < 16 << 20  # cut off, not served in full
    assert time.monotonic() - start_at < 3


def _readable(sock: socket.socket) -> bool:
    """Bytes wait in the socket's receive queue (peeked, not taken)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def test_many_slow_clients_and_one_fast(one_worker: Daemon) -> None:
    slow = [socket.create_connection((one_worker.host, one_worker.port)) for _ in range(50)]
    for index, sock in enumerate(slow):
        sock.send(b"GET / HTTP/1.1\r\n" if index % 2 else b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\n")
    assert fast_requests(one_worker) < FAST
    for sock in slow:
        sock.close()


def test_retiring_worker_closes_keep_alive_after_next_response(make_daemon: MakeDaemon, site: Path) -> None:
    daemon = make_daemon(site_config(site, workers=1))
    conn = connect(daemon)
    assert conn.request("/1k.txt")[0] == 200
    [worker] = daemon.worker_pids()
    os.kill(worker, signal.SIGTERM)
    poll(lambda: not daemon.listening(worker), 5, "the worker retiring (its listeners closed)")
    status, headers, _ = conn.request("/1k.txt")  # within the retirement grace
    assert status == 200 and headers["connection"] == "close"
    assert conn.closed()
    daemon.wait_for_log(f"{worker}")  # the master logged the exit of the retired worker
    idle = connect(daemon)
    assert idle.request("/index.html")[0] == 200  # the replacement serves
