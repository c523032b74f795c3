"""(stub, to be replaced) The worker process: see DESIGN.md."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from forkd.config import Config
from forkd.scoreboard import Slot

# Bytes a worker writes on its notify pipe to the master.
READY = b"R"  # booted: handlers built, about to accept
HEARTBEAT = b"."  # the loop is turning (at least once a second)
WANTS_RETIREMENT = b"Q"  # worker_requests reached: start my replacement, then send me TERM

EXIT_OK = 0
EXIT_BOOT_FAILED = 3  # could not build handlers / set up: the master backs off instead of respawning at once


@dataclass
class WorkerContext:
    config: Config
    listeners: list[socket.socket]  # shared, non-blocking listening sockets
    generation: int
    notify_fd: int  # write end of this worker's pipe to the master
    slot: Slot  # this worker's scoreboard slot


def run_worker(context: WorkerContext) -> int:
    """Run in the forked child until retired; return the exit code (the master calls os._exit)."""
    raise NotImplementedError
