"""Client threads, each looping GETs over one keep-alive connection, counting every failure.

Used while a test reloads or recycles workers under load: a request that fails, or answers
anything but 200 with the expected body, is kept in `failures`; a `Connection: close` from a
retiring worker just makes the client reconnect.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from typing import Self


class KeepAliveLoad:
    def __init__(self, connect: Callable[[], http.client.HTTPConnection], threads: int,
                 path: str = "/", body: bytes | None = None, join_timeout: float = 10) -> None:
        self._connect = connect
        self.path = path
        self.body = body  # the expected body; None: any non-empty body
        self.join_timeout = join_timeout
        self.stop = threading.Event()
        self.ok = 0
        self.connections = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(self.join_timeout)

    def connect(self) -> http.client.HTTPConnection:
        with self.lock:
            self.connections += 1
        return self._connect()

    def client(self) -> None:
        conn = self.connect()
        while not self.stop.is_set():
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                status, closing = response.status, response.will_close
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(repr(exc))
                conn.close()
                conn = self.connect()
                continue
            good = status == 200 and (body == self.body if self.body is not None else bool(body))
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failures.append(f"status {status}: {body[:80]!r}")
            if closing:  # the server said Connection: close (a retiring worker): reconnect
                conn.close()
                conn = self.connect()
        conn.close()
