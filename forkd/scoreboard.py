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
  and since when), `count` (status class x duration bucket, response bytes, duration sum) and
  `idle`;
- per loop tick (a quarter second), the gauges: connections by state, CGI scripts running,
  requests waiting in a route's line;
- rarely: its state (READY, RETIRING) and TLS handshake outcomes.
When the worker has exited (retired, crashed, SIGKILLed: the memory outlives the process) the master
folds its counters into the header's totals and frees the slot. Server-wide counters are totals +
the counters of live slots, so they never go backwards across reloads and replacements. A request
is counted when its response is finished; requests in flight when a worker is killed are not.

What a reader gets (the consistency):
- every field is an aligned 8-byte number written with one store, so a field is never torn;
  fields of one slot may be a request apart (the 2xx count may already include a request whose
  bytes are not added yet). Counters only grow.
- the request line is guarded by its start time, used as a sequence number (a seqlock: zero
  while being written, a new value for each request); a reader retries until it reads the same
  non-zero value before and after the line, so it never shows half of one line and half of another.
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
SLOT_SIZE = 2048
SIZE = HEADER_SIZE + SLOTS * SLOT_SIZE
LINE_OFFSET = 1024  # bytes into a slot: the request line
LINE_MAX = SLOT_SIZE - LINE_OFFSET
MESSAGE_OFFSET = 2048  # bytes into the header: the last reload's message
MESSAGE_MAX = HEADER_SIZE - MESSAGE_OFFSET

# Slot states.
FREE, STARTING, READY, RETIRING = range(4)
STATE_NAMES = {STARTING: "starting", READY: "ready", RETIRING: "retiring"}

# Request duration histogram: upper bounds in seconds (the last bucket is +Inf).
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Counters: indices into a counter block (a slot's or the header's totals). Requests are counted
# in one table of status class x duration bucket, so a response costs one increment for both.
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
BUCKETS = len(BOUNDS) + 1  # not cumulative; the last is +Inf
C_BYTES = 0  # response body bytes
C_DURATION = 1  # sum of request durations in seconds: a double (read through the "d" view)
C_TLS_OK = 2
C_TLS_FAILED = 3
C_TABLE = 4  # CLASSES x BUCKETS
COUNTERS = C_TABLE + len(CLASSES) * BUCKETS

# Gauges of a slot (written each tick by its worker).
CONNECTION_STATES = ("handshake", "reading", "idle", "handling", "writing", "closing")
G_CGI = len(CONNECTION_STATES)
G_WAITING = G_CGI + 1  # requests waiting in a route's line (cgi.queue, fastcgi.connections)
GAUGES = G_WAITING + 1

# Slot fields, as indices of 8-byte integers.
S_PID, S_GENERATION, S_STATE, S_STARTED_NS, S_SINCE_NS, S_LINE_LEN = range(6)
S_COUNTERS = 6
S_GAUGES = S_COUNTERS + COUNTERS
assert S_GAUGES + GAUGES <= LINE_OFFSET // 8

# Header fields.
(H_MAGIC, H_SLOTS, H_SEQ, H_MASTER_PID, H_STARTED_NS, H_STARTED_WALL, H_GENERATION, H_RELOADS_OK,
 H_RELOADS_REJECTED, H_RESTARTS, H_DRAINING, H_DRAIN_WANTED, H_WORKERS, H_LAST_RELOAD,
 H_LAST_RELOAD_WALL, H_MESSAGE_LEN) = range(16)
H_TOTALS = 32
assert H_TOTALS + COUNTERS <= MESSAGE_OFFSET // 8

# Where a status class's row of the table starts in a slot, by status // 100 % 10 (responses are
# 1xx to 5xx; anything else would be a bug, counted as 5xx rather than lost).
_ROW = tuple(S_COUNTERS + C_TABLE + BUCKETS * (c - 1 if 1 <= c <= 5 else 4) for c in range(10))
_S_BYTES = S_COUNTERS + C_BYTES
_S_DURATION = S_COUNTERS + C_DURATION
_FIRST_BOUND = BOUNDS[0]
_clock = time.monotonic_ns


class Slot:
    """One worker's slot. The worker calls busy/count/idle per request (stores, no system call)."""

    __slots__ = ("board", "d", "in_flight", "index", "line", "q", "raw", "response_bytes",
                 "seconds")

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.board = board
        self.index = index
        start = HEADER_SIZE + index * SLOT_SIZE
        self.raw = board.view[start : start + SLOT_SIZE]
        self.q = self.raw.cast("q")
        self.d = self.raw.cast("d")  # the same memory, for the one double (C_DURATION)
        self.in_flight = 0  # requests in progress (the worker's own count; not shared)
        self.line = b""  # the request line in the slot now
        # The worker's copies of two of its counters: as their only writer it stores them, which
        # costs less than reading them back from shared memory to add to them.
        self.response_bytes = 0
        self.seconds = 0.0

    # -- the worker, per request (each item access is tens of nanoseconds: keep them few) --------
    def busy(self, request_line: bytes) -> None:
        """A request starts. Its start time doubles as the line's version (see `request`).

        The line is written only when it differs from the one in the slot (a worker often serves
        the same line again: health checks, a hot page); comparing costs less than writing.
        """
        q = self.q
        if request_line != self.line:
            line = self.line = request_line[:LINE_MAX]
            q[S_SINCE_NS] = 0  # the line is being written
            self.raw[LINE_OFFSET : LINE_OFFSET + len(line)] = line
            q[S_LINE_LEN] = len(line)
        q[S_SINCE_NS] = _clock()
        self.in_flight += 1

    def done(self, status: int, body_bytes: int, seconds: float, busy: bool) -> None:
        """A response is finished: count it (status class and duration bucket, body bytes,
        duration) and, when its request made the slot busy, do what `idle` does, in one call.

        One read-modify-write and two stores of shared memory, about 0.2 µs in all. (Counting in
        a Python list and publishing it once per loop turn measured worse: one pack_into of the
        block costs more than a turn's few requests save.)
        """
        q = self.q
        bucket = 0 if seconds <= _FIRST_BOUND else bisect_left(BOUNDS, seconds)
        q[_ROW[status // 100 % 10] + bucket] += 1
        self.response_bytes += body_bytes
        q[_S_BYTES] = self.response_bytes
        self.seconds += seconds
        self.d[_S_DURATION] = self.seconds
        if busy:
            if self.in_flight > 1:
                self.in_flight -= 1
            else:
                self.in_flight = 0
                q[S_SINCE_NS] = 0

    def count(self, status: int, body_bytes: int, seconds: float) -> None:
        """Count a response whose request never made the slot busy, or was made idle already."""
        self.done(status, body_bytes, seconds, False)

    def idle(self) -> None:
        """A request is over without a response counted by `done` (aborted, refused)."""
        if self.in_flight > 1:
            self.in_flight -= 1
        else:
            self.in_flight = 0
            self.q[S_SINCE_NS] = 0

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
        """(monotonic ns the current request began or 0, its line), read consistently.

        The start time is the line's version: zero while the line is written (or when idle), and
        different for every request. The same non-zero value before and after reading the line
        means nobody wrote the line in between.
        """
        q = self.q
        for _ in range(1000):
            since = q[S_SINCE_NS]
            if not since:
                return 0, ""
            line = bytes(self.raw[LINE_OFFSET : LINE_OFFSET + min(q[S_LINE_LEN], LINE_MAX)])
            if q[S_SINCE_NS] == since:
                return since, line.decode("latin-1")
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
    counters: list[float] = field(default_factory=lambda: [0] * COUNTERS)  # a counter block
    gauges: list[int] = field(default_factory=lambda: [0] * GAUGES)

    @property
    def by_class(self) -> dict[str, int]:
        return {name: int(sum(self._row(i))) for i, name in enumerate(CLASSES)}

    @property
    def buckets(self) -> list[int]:
        """Requests per duration bucket (not cumulative), all classes together."""
        rows = [self._row(i) for i in range(len(CLASSES))]
        return [int(sum(row[b] for row in rows)) for b in range(BUCKETS)]

    def _row(self, index: int) -> list[float]:
        start = C_TABLE + index * BUCKETS
        return self.counters[start : start + BUCKETS]

    @property
    def requests(self) -> int:
        return int(sum(self.counters[C_TABLE:]))

    @property
    def response_bytes(self) -> int:
        return int(self.counters[C_BYTES])

    @property
    def duration_sum(self) -> float:
        return self.counters[C_DURATION]

    @property
    def tls_handshakes(self) -> tuple[int, int]:
        """(succeeded, failed)."""
        return int(self.counters[C_TLS_OK]), int(self.counters[C_TLS_FAILED])

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
        self.d = self.view[:HEADER_SIZE].cast("d")
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
        q[H_SEQ] += 1
        for i, value in enumerate(_counters(slot.q, slot.d, S_COUNTERS)):
            if i == C_DURATION:
                self.d[H_TOTALS + i] += value
            else:
                q[H_TOTALS + i] += int(value)
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
            counters = _counters(q, self.d, H_TOTALS)
            gauges = [0] * GAUGES
            workers = []
            for slot in self.slots:
                sq = slot.q
                if sq[S_STATE] == FREE:
                    continue
                for i, value in enumerate(_counters(sq, slot.d, S_COUNTERS)):
                    counters[i] += value
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
            requests=sum(sq[S_COUNTERS + C_TABLE : S_COUNTERS + COUNTERS]),
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


def _counters(q: memoryview[int], d: memoryview[float], start: int) -> list[float]:
    """A counter block as numbers (all integers but the duration sum)."""
    block: list[float] = list(q[start : start + COUNTERS])
    block[C_DURATION] = d[start + C_DURATION]
    return block


def file_path(pidfile: Path) -> Path:
    """Where the master keeps its board when it has a pidfile."""
    return pidfile.with_name(pidfile.name + ".scoreboard")
