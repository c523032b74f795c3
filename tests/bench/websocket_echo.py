"""Messages per second through an echo program (`cat`): forkd's websocket route vs websocketd.

    python3 -m tests.bench.websocket_echo [--connections 4] [--seconds 3] [--size 32]

Each connection runs its own `cat`. A client thread per connection sends a window of text
messages in one write, reads their echoes, and repeats until time is up; the total of echoes per
second is reported per server. websocketd (Debian package `websocketd`) is skipped when absent.
Both servers spawn the same program, so the difference is the server's own cost per message.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.daemon import Daemon
from tests.support.websocket import RawClient, frame

WINDOW = 100


def measure(port: int, path: str, connections: int, seconds: float, size: int) -> float:
    counts = [0] * connections
    stop = time.monotonic() + seconds
    payload = b"m" * size

    def run(index: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        client = RawClient(sock, path)
        assert client.status == 101, client.head
        batch = b"".join(frame(0x1, payload) for _ in range(WINDOW))
        while time.monotonic() < stop:
            sock.sendall(batch)
            for _ in range(WINDOW):
                got = client.read_frame()
                assert got == (0x1, payload), got
            counts[index] += WINDOW
        sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    cat = shutil.which("cat")
    with tempfile.TemporaryDirectory() as directory:
        daemon = Daemon(Path(directory), {
            "workers": 2, "access_log": None,
            "routes": [{"prefix": "/", "websocket": {"command": [cat]}}],
        })
        daemon.start()
        try:
            rate = measure(daemon.port, "/", args.connections, args.seconds, args.size)
        finally:
            daemon.stop()
    print(f"forkd       {rate:10.0f} messages/s ({args.connections} connections, "
          f"{args.size}-byte messages)")
    websocketd = shutil.which("websocketd")
    if websocketd is None:
        print("websocketd  not installed (apt-get install websocketd): skipped")
        return
    port = 18000 + int(time.time()) % 1000
    server = subprocess.Popen([websocketd, f"--port={port}", "--address=127.0.0.1",
                               "--loglevel=fatal", cat], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        rate = measure(port, "/", args.connections, args.seconds, args.size)
    finally:
        server.terminate()
        server.wait()
    print(f"websocketd  {rate:10.0f} messages/s")


if __name__ == "__main__":
    main()
