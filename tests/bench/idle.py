"""Hold thousands of idle keep-alive connections open against a server (the capacity workload).

Run as `python3 -m tests.bench.idle PORT COUNT SECONDS PATH`. It opens COUNT non-blocking
connections to 127.0.0.1:PORT, sends one `GET PATH` on each and reads the response; connections
that got a whole response within SECONDS (and were not closed) are the idle keep-alive
connections the server now has to carry. It prints one JSON line with the counts and then sits
idle until a line arrives on stdin; it then prints how many are still open and exits, closing all.
Meanwhile it keeps reading: a connection the server closes is closed at once, as a browser would.

A server with a process (or thread) per connection has to park one per idle connection, so with
more idle connections than processes new clients queue: that is what the capacity row shows.
"""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import sys
import time
from typing import TextIO


class Holder:
    """Non-blocking connections in two states: pending (request sent, response incomplete) and
    idle (response complete). Idle ones stay watched: when the server closes one, the holder
    closes its side too, as a browser would (a server lingering for the client's FIN is not
    held up by the benchmark)."""

    def __init__(self, port: int, count: int, path: str) -> None:
        self.port = port
        self.count = count
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self.selector = selectors.DefaultSelector()
        self.pending: dict[socket.socket, bytearray] = {}
        self.idle: set[socket.socket] = set()
        self.refused = 0
        self.closed = 0  # closed by the server before or after answering

    def establish(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for _ in range(self.count):
            self.open_one()
        while self.pending and time.monotonic() < deadline:
            self.poll(0.1)

    def hold(self, stop: TextIO) -> None:
        """Keep serving socket events until a line arrives on `stop`."""
        self.selector.register(stop, selectors.EVENT_READ)
        while True:
            for key, events in self.selector.select(timeout=1.0):
                if key.fileobj is stop:
                    stop.readline()
                    return
                self.step(key.fileobj, events)  # type: ignore[arg-type]

    def poll(self, timeout: float) -> None:
        for key, events in self.selector.select(timeout=timeout):
            self.step(key.fileobj, events)  # type: ignore[arg-type]

    def open_one(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.refused += 1
            return
        self.pending[sock] = bytearray()
        self.selector.register(sock, selectors.EVENT_WRITE)

    def step(self, sock: socket.socket, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.drop(sock, refused=True)
                return
            sock.send(self.request)  # small enough for an empty send buffer
            self.selector.modify(sock, selectors.EVENT_READ)
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop(sock)
            return
        buffer = self.pending.get(sock)
        if buffer is None:
            return  # unexpected bytes on an idle connection: ignore them
        buffer += data
        if _complete(buffer):
            del self.pending[sock]
            self.idle.add(sock)

    def drop(self, sock: socket.socket, refused: bool = False) -> None:
        self.selector.unregister(sock)
        self.pending.pop(sock, None)
        self.idle.discard(sock)
        sock.close()
        if refused:
            self.refused += 1
        else:
            self.closed += 1


def _complete(buffer: bytearray) -> bool:
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buffer) >= head_end + 4 + length


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def main() -> int:
    port, count, seconds, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    raise_nofile(count + 100)
    holder = Holder(port, count, path)
    started = time.monotonic()
    holder.establish(seconds)
    holder.poll(0.2)  # servers that close right after answering (HTTP/1.0) show up here
    report = {"idle": len(holder.idle), "waiting": len(holder.pending), "refused": holder.refused,
              "closed": holder.closed, "seconds": round(time.monotonic() - started, 2)}
    print(json.dumps(report), flush=True)
    holder.hold(sys.stdin)
    print(json.dumps({"still_open": len(holder.idle)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
