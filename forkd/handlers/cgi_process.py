"""CGI scripts as processes: starting one, logging its stderr, and stopping it without waiting.

Spawning. os.posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK, then exec): no shell, no Python code
in the child, the cheapest way to start a program, which matters because a trivial script's cost is
mostly its spawn. subprocess.Popen without preexec_fn takes the same kernel path but spends about
twice the parent CPU in Python bookkeeping. What Popen's options did is done here explicitly:
  - the script's stdin/stdout/stderr are dup2()ed pipes (stdin is the handler's /dev/null descriptor
    when there is no body); our ends are non-blocking and live in the worker's reactor;
  - setsid: the script leads its own session and process group, which is how everything it starts is
    found again at the end;
  - setsigdef over every signal and an empty signal mask: a script starts with all dispositions at
    their default, as any program expects (RFC 3875 leaves signals to the system). Python ignores
    SIGPIPE, the worker ignores SIGHUP and others, and ignored dispositions survive exec: without
    this a shell pipeline in a script would not die when its reader goes away;
  - the working directory is the script's (§7.2, Unix): the worker chdir()s there for the spawn and
    fchdir()s back (it is single-threaded, so nothing observes the detour);
  - no descriptor of the server reaches the script: Python creates every descriptor close-on-exec
    (PEP 446), and `seal_descriptors`, run once when the handler is built, marks the ones forkd
    inherited (systemd's sockets, whatever the parent left open) close-on-exec too.
    tests/cgi/fds.py proves the result through the real daemon.

Stopping. A script's request can end in many ways (answered, client gone, timed out, worker
retiring); the Reaper then makes sure nothing of the script outlives it, without the worker ever
waiting: a script that is still running gets a moment to exit by itself (when it has finished its
output), then SIGTERM to its process group, then SIGKILL TERM_GRACE later. Its exit is noticed
through a pidfd registered with the reactor; then the group is killed (grandchildren that linger)
and the leader reaped. Until then the script counts against cgi.max_processes.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Sequence

from forkd.reactor import EPOLLIN, Reactor, Timer

CHUNK = 65536
TERM_GRACE = 0.5  # seconds a running script has to exit after SIGTERM before the group is killed
EXIT_WAIT = 0.05  # after its output ended, how long a script has to exit by itself
MAX_LOG_LINE = 4096
# A spawn failing with one of these is the server's momentary shortage (descriptors, processes,
# memory), not the script's fault: 503 with Retry-After instead of 502.
OVERLOAD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})

# Every signal a process may catch or ignore: all are reset to SIG_DFL in the child (setsigdef).
_ALL_SIGNALS = tuple(sorted(set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}))


def spawn(argv: Sequence[str], env: dict[bytes, bytes], cwd: str, stdin_fd: int,
          home: int) -> tuple[int, int, int, int]:
    """Start a script; return (pid, stdin write end or -1, stdout read end, stderr read end).

    `stdin_fd` >= 0 becomes the script's stdin as is; -1 asks for a pipe. `home` is a descriptor of
    the worker's own working directory, returned to after the spawn. Our pipe ends are non-blocking;
    the script's ends stay blocking, as programs expect.
    """
    opened: list[int] = []
    try:
        if stdin_fd < 0:
            child_in, stdin_w = os.pipe()
            opened += (child_in, stdin_w)
        else:
            child_in, stdin_w = stdin_fd, -1
        stdout_r, child_out = os.pipe()
        opened += (stdout_r, child_out)
        stderr_r, child_err = os.pipe()
        opened += (stderr_r, child_err)
        actions = [(os.POSIX_SPAWN_DUP2, child_in, 0), (os.POSIX_SPAWN_DUP2, child_out, 1),
                   (os.POSIX_SPAWN_DUP2, child_err, 2)]
        os.chdir(cwd)
        try:
            pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions, setsid=True,
                                 setsigmask=(), setsigdef=_ALL_SIGNALS)
        finally:
            _return_home(home)
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    for fd in (child_out, child_err) if stdin_fd >= 0 else (child_in, child_out, child_err):
        os.close(fd)
    for fd in (stdin_w, stdout_r, stderr_r):
        if fd >= 0:
            os.set_blocking(fd, False)
    return pid, stdin_w, stdout_r, stderr_r


def home_directory() -> int:
    """A descriptor of the worker's working directory, for `spawn` to return to."""
    try:
        return os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        # Workers may run as a user who cannot enter the directory forkd was started from (root's
        # home, say). A worker needs no particular working directory: "/" will do.
        os.chdir("/")
        return os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def _return_home(home: int) -> None:
    try:
        os.fchdir(home)
    except OSError:
        os.chdir("/")  # see home_directory


def seal_descriptors() -> None:
    """Mark every descriptor above stderr close-on-exec, so that no script can inherit it."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the descriptor listdir itself used, already closed


class StderrLines:
    """A script's stderr, cut into lines, each passed to `emit` (the error log)."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.pending = bytearray()

    def feed(self, data: bytes) -> None:
        self.pending += data
        self._lines(final=False)

    def end(self) -> None:
        self._lines(final=True)

    def _lines(self, final: bool) -> None:
        pending = self.pending
        while pending:
            newline = pending.find(b"\n")
            if newline == -1:
                if not (final or len(pending) > MAX_LOG_LINE):
                    return
                newline = min(len(pending), MAX_LOG_LINE)
            line = bytes(pending[:newline]).rstrip(b"\r")
            del pending[: newline + 1]
            self.emit(line)


class StderrPipe:
    """A program's stderr in the worker's reactor: read as it comes, each line passed to `emit`."""

    def __init__(self, fd: int, reactor: Reactor, emit: Callable[[bytes], None]) -> None:
        self.fd = fd
        self.reactor = reactor
        self.lines = StderrLines(emit)
        reactor.watch(fd, EPOLLIN, self)

    def on_event(self, fd: int, mask: int, now: float) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        if data:
            self.lines.feed(data)
        else:
            self.close()

    def close(self) -> None:
        """Log what is left (the last words are often the useful ones), then close. Idempotent."""
        if self.fd < 0:
            return
        try:
            self.lines.feed(os.read(self.fd, CHUNK))
        except OSError:
            pass
        self.reactor.unwatch(self.fd)
        os.close(self.fd)
        self.fd = -1
        self.lines.end()


class _Stopping:
    __slots__ = ("on_gone", "pid", "pidfd", "timer")

    def __init__(self, pid: int, pidfd: int, on_gone: Callable[[], None]) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.on_gone = on_gone
        self.timer: Timer | None = None


class Reaper:
    """Stops and reaps scripts in the background of the worker's loop (see the module docstring)."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.stopping: dict[int, _Stopping] = {}  # pidfd -> the script behind it

    def stop(self, pid: int, output_done: bool, on_gone: Callable[[], None], now: float) -> None:
        """End script `pid` and its group; call on_gone once the leader is reaped."""
        if _has_exited(pid):
            _bury(pid)
            on_gone()
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # no pidfd (old kernel) or no descriptor left: do it the hard way, now
            _kill_group(pid, signal.SIGKILL)
            _bury(pid)
            on_gone()
            return
        entry = _Stopping(pid, pidfd, on_gone)
        self.stopping[pidfd] = entry
        self.reactor.watch(pidfd, EPOLLIN, self)
        if output_done:  # it is probably exiting right now: a moment before SIGTERM
            entry.timer = self.reactor.call_at(now + EXIT_WAIT, lambda at: self._term(entry, at))
        else:
            self._term(entry, now)

    def _term(self, entry: _Stopping, now: float) -> None:
        _kill_group(entry.pid, signal.SIGTERM)
        entry.timer = self.reactor.call_at(now + TERM_GRACE,
                                           lambda at: _kill_group(entry.pid, signal.SIGKILL))

    def on_event(self, fd: int, mask: int, now: float) -> None:
        entry = self.stopping.pop(fd)
        self._finish(entry)

    def _finish(self, entry: _Stopping) -> None:
        self.reactor.unwatch(entry.pidfd)
        os.close(entry.pidfd)
        if entry.timer is not None:
            entry.timer.cancel()
        _bury(entry.pid)
        entry.on_gone()

    def shutdown(self) -> None:
        """The worker is exiting: kill what is still being stopped, now."""
        for entry in list(self.stopping.values()):
            _kill_group(entry.pid, signal.SIGKILL)
        for pidfd in list(self.stopping):
            self._finish(self.stopping.pop(pidfd))


def _bury(pid: int) -> None:
    """The leader has exited (or been killed): kill what its group left behind, then reap it.

    The group id cannot be reused before the leader is reaped, so the kill hits only its group.
    """
    _kill_group(pid, signal.SIGKILL)
    while True:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        return


def _has_exited(pid: int) -> bool:
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped: nothing left to wait for
    return result is not None


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass  # the script became another user (setuid): only its own leader is ours to kill
