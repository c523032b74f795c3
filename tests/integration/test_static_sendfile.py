"""Bodies sent with os.sendfile from the descriptor whose fstat gave the headers.

A file that shrinks while it is being sent cannot honour the Content-Length already sent: the worker
must cut the connection (never pad with zeros, never hang). A file that grows is sent at the length
announced, and the connection stays usable.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.daemon import Daemon
from tests.support.static_site import static_config

BIG = 64 * 1024 * 1024  # sparse: costs no disk


def _slow_socket(daemon: Daemon) -> socket.socket:
    """A client with a tiny receive window, so the server cannot push the whole file at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((daemon.host, daemon.port))
    return sock


def _read_head(sock: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed before the head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return headers, rest


def test_file_shrinking_mid_send_cuts_the_connection(make_daemon: Callable[..., Daemon],
                                                     tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    big = root / "big.bin"
    with open(big, "wb") as f:
        f.truncate(BIG)
    daemon = make_daemon(static_config(root))
    with _slow_socket(daemon) as sock:
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        headers, received = _read_head(sock)
        assert int(headers["content-length"]) == BIG
        while len(received) < 256 * 1024:
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
        with open(big, "r+b") as f:
            f.truncate(1024 * 1024)
        total = len(received)
        started = time.monotonic()
        while True:  # a hang would end in socket.timeout and fail the test
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        assert total < BIG  # cut short, not padded to the announced length
        assert time.monotonic() - started < 10
    assert daemon.get("/big.bin")[1]["content-length"] == str(1024 * 1024)  # workers still serve


def test_file_growing_mid_send_is_sent_at_the_announced_length(make_daemon: Callable[..., Daemon],
                                                               tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    size = 2 * 1024 * 1024
    (root / "grow.bin").write_bytes(b"a" * size)
    daemon = make_daemon(static_config(root))
    with _slow_socket(daemon) as sock:
        sock.sendall(b"GET /grow.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        headers, body = _read_head(sock)
        assert int(headers["content-length"]) == size
        with open(root / "grow.bin", "ab") as f:
            f.write(b"b" * 1024 * 1024)
        while len(body) < size:
            chunk = sock.recv(1 << 20)
            assert chunk
            body += chunk
        assert body == b"a" * size  # exactly what was announced, nothing of the growth
        sock.sendall(b"GET /grow.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-3\r\nConnection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 206") and rest.endswith(b"\r\n\r\nbbb")
