"""systemd integration written by hand: socket activation and sd_notify, no libsystemd.

Socket activation (sd_listen_fds(3)): systemd passes listening sockets as file descriptors 3, 4,
... and sets LISTEN_FDS to their number and LISTEN_PID to the pid they are meant for (a process
that forked without exec must not take them). The variables are removed from the environment once
read, so neither workers nor CGI scripts believe the sockets are theirs.

Notification (sd_notify(3)): NOTIFY_SOCKET names an AF_UNIX datagram socket, a path or an abstract
name written with a leading "@". Each message is newline-separated KEY=VALUE lines. forkd sends
READY=1 once its first generation serves, RELOADING=1 with MONOTONIC_USEC at the start of a reload
and READY=1 at its end, STATUS= lines, STOPPING=1, and WATCHDOG=1 from the master's loop when
the unit sets WatchdogSec= (WATCHDOG_USEC). These variables are removed from the environment too:
only the master (the service's main pid) may notify. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3


def listen_fds(environ: MutableMapping[str, str]) -> list[int]:
    """The file descriptors systemd passed to this process (none when not socket-activated)."""
    count = environ.pop("LISTEN_FDS", None)
    pid = environ.pop("LISTEN_PID", None)
    environ.pop("LISTEN_FDNAMES", None)
    if not count or not pid:
        return []
    try:
        if int(pid) != os.getpid():
            return []
        number = int(count)
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + number))


class Notifier:
    """Sends sd_notify messages to the socket named by NOTIFY_SOCKET, if any."""

    def __init__(self, address: str | None, watchdog_seconds: float = 0.0) -> None:
        self.address: str | bytes | None = None
        if address:
            # An abstract socket name is written "@name" and means "\0name" (sd_notify(3)).
            self.address = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.status = ""
        # WatchdogSec=: ping at half the interval, as sd_watchdog_enabled(3) recommends.
        self.watchdog_every = watchdog_seconds / 2
        self.next_watchdog = 0.0

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Notifier:
        address = environ.pop("NOTIFY_SOCKET", None)
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        watchdog = 0.0
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 1_000_000
        return cls(address, watchdog)

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError:
            pass  # the service manager went away: nothing useful can be done about it

    def ready(self, status: str) -> None:
        self.status = status
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # systemd >= 253 (Type=notify-reload) matches RELOADING=1 with this timestamp.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def update_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.send(f"STATUS={status}")

    def keepalive(self, now: float) -> None:
        """WATCHDOG=1 when due: proof that the master's loop is turning."""
        if self.watchdog_every and now >= self.next_watchdog:
            self.next_watchdog = now + self.watchdog_every
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
