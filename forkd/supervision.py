"""What the master and its workers share: the notify-pipe protocol, exit codes, the worker context.

The master never imports the worker's HTTP stack: forkd.cli hands it the worker's entry point
(`worker_main`), and both sides agree only on what is defined here.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from forkd.config import Config
from forkd.scoreboard import Slot

# Bytes a worker writes on its notify pipe to the master.
READY = b"R"  # booted: handlers built, about to accept
HEARTBEAT = b"."  # the loop is turning (at least once a second)
WANTS_RETIREMENT = b"Q"  # worker_requests reached: start my replacement, then send me TERM
BOOT_FAILED = b"!"  # could not boot: the rest, up to EOF, is the reason (the master logs it)

EXIT_OK = 0
EXIT_BOOT_FAILED = 3  # could not build handlers / set up: the master backs off instead of respawning


@dataclass
class WorkerContext:
    """Everything a new worker is given by the master, in the forked child."""

    config: Config
    listeners: list[socket.socket]  # shared, non-blocking listening sockets
    generation: int
    notify_fd: int  # write end of this worker's pipe to the master
    slot: Slot  # this worker's scoreboard slot
    tls_contexts: Mapping[int, ssl.SSLContext] = field(default_factory=dict)  # by listener fd
    proxy_fds: frozenset[int] = frozenset()  # listeners where a PROXY header comes first
