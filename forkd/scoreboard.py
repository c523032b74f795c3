"""The shared scoreboard: one slot per worker (what it is doing, what it has done) and the master's totals.

Theory of operation
-------------------
The master creates one shared mapping at start, before it forks anything: a header page the master
writes, then SLOTS fixed-size slots. Every worker inherits the whole mapping, so any worker can read
every slot (that is how a `status` route answers for the whole server) and `forkd -s status` can map
the same memory when it is backed by a file (`PIDFILE.scoreboard`, mode 0600; without a pidfile the
mapping is anonymous and only the status route can show it).

Slots: the master claims a free slot for each worker it forks (state STARTING, generation, start
time; the pid once fork returned). From then on the worker is the only writer of its slot:
- per request, plain stores into its slot, no system call and no lock: `busy` (the request line
  and since when), `count` (status class, response bytes, duration histogram bucket and sum) and
  `idle`;
- per loop tick (a quarter second), the gauges: connections by state, CGI scripts running;
- rarely: its state (READY, RETIRING) and TLS handshake outcomes.
When the worker has exited (retired, crashed, SIGKILLed: the memory outlives the process) the master
folds its counters into the header's totals and frees the slot. Server-wide counters are totals +
the counters of live slots, so they never go backwards across reloads and replacements. A request
is counted when its response is finished; requests in flight when a worker is killed are not.

What a reader gets (the consistency):
- every field is an aligned 8-byte integer written with one store, so a field is never torn;
  fields of one slot may be a request apart (the 2xx count may already include a request whose
  bytes are not added yet). Counters only grow.
- the request line is guarded by a per-slot sequence number (a seqlock: odd while being written);
  a reader retries until it reads the same even number before and after, so it never shows half of
  one line and half of another.
- folding is guarded by the header's sequence number the same way: a reader summing totals and
  slots retries when a fold happened meanwhile, so a retired worker's requests are counted exactly
  once, never twice and never zero times.
The sequence numbers rely on stores becoming visible in program order, which x86-64 guarantees;
on weaker memory models a reader may rarely see a stale value that its next read corrects.

Nothing here knows HTTP; forkd.metrics renders snapshots for people and programs.
"""

from __future__ import annotations

import mmap
import os
import secrets
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = 0x666F726B64534231  # "forkdSB1"
SLOTS = 512  # workers that can exist at once, all generations together
HEADER_SIZE = 4096
SLOT_SIZE = 1024
SIZE = HEADER_SIZE + SLOTS * SLOT_SIZE
LINE_OFFSET = 512  # bytes into a slot: the request line
LINE_MAX = SLOT_SIZE - LINE_OFFSET
MESSAGE_OFFSET = 2048  # bytes into the header: the last reload's message
MESSAGE_MAX = HEADER_SIZE - MESSAGE_OFFSET

# Slot states.
FREE, STARTING, READY, RETIRING = range(4)
STATE_NAMES = {STARTING: "starting", READY: "ready", RETIRING: "retiring"}

# Request duration histogram: upper bounds in seconds (the last bucket is +Inf).
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Counters: indices into a counter block (a slot's or the header's totals).
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
C_BYTES = 5  # response body bytes
C_DURATION_US = 6  # sum of request durations, microseconds
C_TLS_OK = 7
C_TLS_FAILED = 8
C_BUCKETS = 9  # len(BOUNDS) + 1 buckets, not cumulative
COUNTERS = C_BUCKETS + len(BOUNDS) + 1

# Gauges of a slot (written each tick by its worker).
CONNECTION_STATES = ("handshake", "reading", "idle", "handling", "writing", "closing")
G_CGI = len(CONNECTION_STATES)
GAUGES = G_CGI + 1

# Slot fields, as indices of 8-byte integers.
S_PID, S_GENERATION, S_STATE, S_STARTED_NS, S_SINCE_NS, S_INFLIGHT, S_LINE_SEQ, S_LINE_LEN = range(8)
S_COUNTERS = 8
S_GAUGES = S_COUNTERS + COUNTERS
assert S_GAUGES + GAUGES <= LINE_OFFSET // 8

# Header fields.
(H_MAGIC, H_SLOTS, H_SEQ, H_MASTER_PID, H_STARTED_NS, H_STARTED_WALL, H_GENERATION, H_RELOADS_OK,
 H_RELOADS_REJECTED, H_RESTARTS, H_DRAINING, H_DRAIN_WANTED, H_WORKERS, H_LAST_RELOAD,
 H_LAST_RELOAD_WALL, H_MESSAGE_LEN) = range(16)
H_TOTALS = 32
assert H_TOTALS + COUNTERS <= MESSAGE_OFFSET // 8

# The index of a status code's class counter in a slot, by status // 100 (0 and 6+ never occur).
_CLASS_INDEX = (S_COUNTERS + 4, S_COUNTERS, S_COUNTERS + 1, S_COUNTERS + 2, S_COUNTERS + 3,
                S_COUNTERS + 4)
_S_BYTES = S_COUNTERS + C_BYTES
_S_DURATION = S_COUNTERS + C_DURATION_US
_S_BUCKETS = S_COUNTERS + C_BUCKETS


class Slot:
    """One worker's slot. The worker calls busy/count/idle per request (stores, no system call)."""

    __slots__ = ("board", "index", "q", "raw")

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.board = board
        self.index = index
        start = HEADER_SIZE + index * SLOT_SIZE
        self.raw = board.view[start : start + SLOT_SIZE]
        self.q = self.raw.cast("q")

    # -- the worker, per request ---------------------------------------------------------------
    def busy(self, request_line: bytes) -> None:
        q = self.q
        line = request_line[:LINE_MAX]
        q[S_LINE_SEQ] += 1  # odd: the line is being written
        self.raw[LINE_OFFSET : LINE_OFFSET + len(line)] = line
        q[S_LINE_LEN] = len(line)
        q[S_SINCE_NS] = time.monotonic_ns()
        q[S_LINE_SEQ] += 1
        q[S_INFLIGHT] += 1

    def count(self, status: int, body_bytes: int, seconds: float) -> None:
        q = self.q
        q[_CLASS_INDEX[status // 100 if status < 600 else 5]] += 1
        q[_S_BYTES] += body_bytes
        q[_S_DURATION] += int(seconds * 1e6)
        q[_S_BUCKETS + bisect_left(BOUNDS, seconds)] += 1

    def idle(self) -> None:
        q = self.q
        if q[S_INFLIGHT] > 1:
            q[S_INFLIGHT] -= 1
        else:
            q[S_INFLIGHT] = 0
            q[S_SINCE_NS] = 0

    # -- the worker, rarely --------------------------------------------------------------------
    def set_state(self, state: int) -> None:
        self.q[S_STATE] = state

    def set_gauges(self, values: list[int]) -> None:
        q = self.q
        for i, value in enumerate(values):
            q[S_GAUGES + i] = value

    def tls_handshake(self, ok: bool) -> None:
        self.q[S_COUNTERS + (C_TLS_OK if ok else C_TLS_FAILED)] += 1

    # -- readers -------------------------------------------------------------------------------
    def read(self) -> tuple[float, str]:
        """(seconds busy with the current request or 0.0 when idle, its request line)."""
        since, line = self.request()
        return ((time.monotonic_ns() - since) / 1e9 if since else 0.0), line

    def request(self) -> tuple[int, str]:
        """(monotonic ns the current request began or 0, its line), read consistently."""
        q = self.q
        for _ in range(1000):
            seq = q[S_LINE_SEQ]
            if seq & 1:
                continue
            since = q[S_SINCE_NS]
            line = bytes(self.raw[LINE_OFFSET : LINE_OFFSET + min(q[S_LINE_LEN], LINE_MAX)])
            if q[S_LINE_SEQ] == seq:
                return since, (line.decode("latin-1") if since else "")
        return 0, ""

    def close(self) -> None:
        """Nothing to release: the mapping is the board's (kept for the old interface)."""


@dataclass
class WorkerView:
    pid: int
    generation: int
    state: str  # starting | idle | busy | retiring
    request: str  # the request line of its latest request in progress, "" when idle
    age: float  # seconds that request has been in progress
    uptime: float  # seconds since the worker was forked
    requests: int
    bytes: int
    connections: int


@dataclass
class Snapshot:
    master_pid: int
    generation: int
    uptime: float
    started_wall: float
    draining: bool
    workers_wanted: int
    reloads_ok: int
    reloads_rejected: int
    restarts: int
    last_reload: str  # "" when none yet; else "ok: ..." or "rejected: ..."
    last_reload_wall: float
    workers: list[WorkerView] = field(default_factory=list)
    counters: list[int] = field(default_factory=lambda: [0] * COUNTERS)
    gauges: list[int] = field(default_factory=lambda: [0] * GAUGES)

    @property
    def requests(self) -> int:
        return sum(self.counters[: len(CLASSES)])

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.state == "busy")

    @property
    def idle(self) -> int:
        return sum(1 for w in self.workers if w.state == "idle")


class Scoreboard:
    """The whole mapping: created by the master, inherited by workers, mapped by `forkd -s`."""

    def __init__(self, memory: mmap.mmap, path: Path | None = None, inode: int = 0) -> None:
        self.memory = memory
        self.view = memoryview(memory)
        self.q = self.view[:HEADER_SIZE].cast("q")
        self.path = path
        self.inode = inode
        self.slots = [Slot(self, i) for i in range(SLOTS)]

    # -- creating and opening ------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | None, master_pid: int) -> Scoreboard:
        """A fresh board; at `path` (atomically, never through a planted link) or anonymous."""
        if path is None:
            board = cls(mmap.mmap(-1, SIZE, flags=mmap.MAP_SHARED))
        else:
            board = cls._create_file(path)
        q = board.q
        q[H_SLOTS] = SLOTS
        q[H_MASTER_PID] = master_pid
        q[H_STARTED_NS] = time.monotonic_ns()
        q[H_STARTED_WALL] = int(time.time())
        q[H_LAST_RELOAD] = -1
        q[H_MAGIC] = MAGIC
        return board

    @classmethod
    def _create_file(cls, path: Path) -> Scoreboard:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600)  # request lines may carry query strings
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, SIZE)
            memory = mmap.mmap(fd, SIZE, flags=mmap.MAP_SHARED)
            inode = os.fstat(fd).st_ino
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
        finally:
            os.close(fd)
        return cls(memory, path, inode)

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> Scoreboard:
        """Map a running master's board (for `forkd -s status|drain|undrain`); OSError, ValueError."""
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != SIZE:
                raise ValueError(f"{path} is not a forkd scoreboard of this version")
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            memory = mmap.mmap(fd, SIZE, access=access)
        finally:
            os.close(fd)
        if not writable:  # a read-only mapping cannot back a writable memoryview cast: copy
            board = cls(mmap.mmap(-1, SIZE))
            board.memory[:] = memory[:]
            memory.close()
        else:
            board = cls(memory, path)
        if board.q[H_MAGIC] != MAGIC or board.q[H_SLOTS] != SLOTS:
            raise ValueError(f"{path} is not a forkd scoreboard of this version")
        return board

    def remove(self) -> None:
        """The master at exit: unlink the file if it is still ours."""
        if self.path is None:
            return
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == self.inode:
                self.path.unlink()
        except OSError:
            pass

    # -- the master ----------------------------------------------------------------------------
    def claim(self, generation: int) -> Slot | None:
        """A free slot, marked STARTING for a worker about to be forked; None when all are taken."""
        for slot in self.slots:
            q = slot.q
            if q[S_STATE] == FREE:
                slot.raw[:] = bytes(SLOT_SIZE)
                q[S_GENERATION] = generation
                q[S_STARTED_NS] = time.monotonic_ns()
                q[S_STATE] = STARTING
                return slot
        return None

    def release(self, slot: Slot) -> None:
        """Fold a dead worker's counters into the totals and free its slot (see the seqlock)."""
        q = self.q
        sq = slot.q
        q[H_SEQ] += 1
        for i in range(COUNTERS):
            q[H_TOTALS + i] += sq[S_COUNTERS + i]
        slot.raw[:] = bytes(SLOT_SIZE)  # the state becomes FREE with the rest
        q[H_SEQ] += 1

    def set(self, index: int, value: int) -> None:
        self.q[index] = value

    def add(self, index: int, amount: int = 1) -> None:
        self.q[index] += amount

    def reload_done(self, ok: bool, generation: int, message: str) -> None:
        q = self.q
        q[H_RELOADS_OK if ok else H_RELOADS_REJECTED] += 1
        q[H_GENERATION] = generation
        data = message.encode("utf-8", "replace")[:MESSAGE_MAX]
        self.view[MESSAGE_OFFSET : MESSAGE_OFFSET + len(data)] = data
        q[H_MESSAGE_LEN] = len(data)
        q[H_LAST_RELOAD_WALL] = int(time.time())
        q[H_LAST_RELOAD] = int(ok)

    @property
    def draining(self) -> bool:
        return bool(self.q[H_DRAINING])

    # -- readers -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        q = self.q
        now = time.monotonic_ns()
        message = bytes(self.view[MESSAGE_OFFSET : MESSAGE_OFFSET + min(q[H_MESSAGE_LEN],
                                                                        MESSAGE_MAX)])
        verdict = {-1: "", 0: "rejected: ", 1: "ok: "}.get(q[H_LAST_RELOAD], "")
        snapshot = Snapshot(
            master_pid=q[H_MASTER_PID], generation=q[H_GENERATION],
            uptime=(now - q[H_STARTED_NS]) / 1e9, started_wall=float(q[H_STARTED_WALL]),
            draining=bool(q[H_DRAINING]), workers_wanted=q[H_WORKERS],
            reloads_ok=q[H_RELOADS_OK], reloads_rejected=q[H_RELOADS_REJECTED],
            restarts=q[H_RESTARTS],
            last_reload=verdict + message.decode("utf-8", "replace") if verdict else "",
            last_reload_wall=float(q[H_LAST_RELOAD_WALL]),
        )
        for _ in range(1000):  # a fold takes microseconds; a master stopped mid-fold: last read
            seq = q[H_SEQ]
            counters = [q[H_TOTALS + i] for i in range(COUNTERS)]
            gauges = [0] * GAUGES
            workers = []
            for slot in self.slots:
                sq = slot.q
                if sq[S_STATE] == FREE:
                    continue
                for i in range(COUNTERS):
                    counters[i] += sq[S_COUNTERS + i]
                for i in range(GAUGES):
                    gauges[i] += sq[S_GAUGES + i]
                workers.append(self._worker(slot, now))
            if not seq & 1 and q[H_SEQ] == seq:
                break
        snapshot.counters, snapshot.gauges, snapshot.workers = counters, gauges, workers
        return snapshot

    @staticmethod
    def _worker(slot: Slot, now: int) -> WorkerView:
        sq = slot.q
        since, line = slot.request()
        state = sq[S_STATE]
        name = STATE_NAMES.get(state, "starting")
        if state == READY:
            name = "busy" if since else "idle"
        return WorkerView(
            pid=sq[S_PID], generation=sq[S_GENERATION], state=name, request=line,
            age=(now - since) / 1e9 if since else 0.0, uptime=(now - sq[S_STARTED_NS]) / 1e9,
            requests=sum(sq[S_COUNTERS + i] for i in range(len(CLASSES))),
            bytes=sq[S_COUNTERS + C_BYTES],
            connections=sum(sq[S_GAUGES + i] for i in range(len(CONNECTION_STATES))),
        )

    def close(self) -> None:
        for slot in self.slots:
            slot.q.release()
            slot.raw.release()
        self.slots = []
        self.q.release()
        self.view.release()
        self.memory.close()


def file_path(pidfile: Path) -> Path:
    """Where the master keeps its board when it has a pidfile."""
    return pidfile.with_name(pidfile.name + ".scoreboard")
