"""One shared-memory slot per worker: which request it is serving and since when.

The master creates a slot (an anonymous MAP_SHARED mapping) before forking a worker; the worker writes
into it at the start and end of every request (a memory write, no system call), and the master reads
it to find stuck workers and to name the request they were stuck in. Liveness itself travels over the
notify pipe; this slot only says what the worker is doing.
"""

from __future__ import annotations

import mmap
import struct
import time

_HEADER = struct.Struct("dI")  # busy-since (monotonic seconds, 0.0 when idle), request-line length
SIZE = 1024
_LINE_MAX = SIZE - _HEADER.size


class Slot:
    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, SIZE, flags=mmap.MAP_SHARED)

    def busy(self, request_line: bytes) -> None:
        line = request_line[:_LINE_MAX]
        self.memory[_HEADER.size : _HEADER.size + len(line)] = line
        _HEADER.pack_into(self.memory, 0, time.monotonic(), len(line))

    def idle(self) -> None:
        _HEADER.pack_into(self.memory, 0, 0.0, 0)

    def read(self) -> tuple[float, str]:
        """(seconds busy with the current request or 0.0 when idle, its request line)."""
        since, length = _HEADER.unpack_from(self.memory, 0)
        if not since:
            return 0.0, ""
        line = bytes(self.memory[_HEADER.size : _HEADER.size + min(length, _LINE_MAX)])
        return time.monotonic() - since, line.decode("latin-1")

    def close(self) -> None:
        self.memory.close()
