"""One running CGI script: spawning it, pumping its pipes, and making sure nothing of it outlives the request.

Spawning. os.posix_spawn (glibc: clone with CLONE_VM|CLONE_VFORK, then exec): no shell, no Python code
in the child, the cheapest way to start a program, which matters because a trivial script's cost is
mostly its spawn. subprocess.Popen without preexec_fn takes the same kernel path but spends about
twice the parent CPU in Python bookkeeping. What Popen's options did is done here explicitly:
  - the script's stdin/stdout/stderr are dup2()ed pipes (stdin is the handler's /dev/null descriptor
    when there is no body);
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

Pumping. The script's stdin, stdout and stderr are non-blocking pipes watched by one poll object. Every
wait serves all three at once: the request body is written to stdin as the script reads it (and stdin is
closed at its end, §4.2), stderr is read and logged line by line, stdout is returned to the caller.
Because nothing ever waits on one pipe alone, a script that writes a megabyte before reading its input,
or floods stderr, cannot deadlock against forkd. Output is pulled, never pushed: `read_output` is called
when the header block is needed and, through the body iterator, whenever the client socket can take
more, so a slow client slows the script down (its stdout pipe fills) instead of filling memory.

Time. `timeout` bounds each wait for output: the header block, and then every next piece of the body.
The first becomes 504, the second an exception out of the body iterator, which makes the worker cut the
connection (the status line is already gone). A script that takes in request body meanwhile is
working, so each piece it takes restarts the wait.

The end. `close()` runs exactly once, whatever happened (done, client gone, HEAD, error): stdin is
closed; if the script is still running it gets SIGTERM on its whole group and a short grace; then the
group gets SIGKILL, which also sweeps grandchildren that ignore TERM or were left behind; then the
script is reaped (no zombies) and the pipes are closed (no descriptor leaks). The group is killed before
the leader is reaped: while the leader is unreaped its pid (the group id) cannot be reused, so the
kill can never hit a stranger.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Collection, Iterator, Sequence
from typing import BinaryIO

from forkd.http.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from forkd.logs import ErrorLog

CHUNK = 65536
TERM_GRACE = 0.5  # seconds a running script has to exit after SIGTERM before the group is killed
EXIT_WAIT = 0.05  # after stdout closed, how long the script has to exit by itself
MAX_LOG_LINE = 4096
# A spawn failing with one of these is the server's momentary shortage (descriptors, processes,
# memory), not the script's fault: 503 with Retry-After instead of 502.
OVERLOAD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


class ScriptTimeout(GatewayTimeout):
    """The script produced no output within its timeout."""


class ScriptFailed(BadGateway):
    """The script could not be started, or broke its output framing."""


class CgiProcess:
    """A spawned script and its three pipes; see the module docstring."""

    def __init__(self, argv: Sequence[str], env: dict[bytes, bytes], cwd: str, body: BinaryIO | None,
                 stdin_null: int, home: int, log: ErrorLog, label: str, timeout: float) -> None:
        self.log = log
        self.label = label
        self.timeout = timeout
        self.body = body
        self.closed = False
        self.output_done = False
        self._pending = memoryview(b"")
        self._errors = bytearray()
        try:
            self.pid, self.stdin, self.stdout, self.stderr = spawn(
                argv, env, cwd, stdin_null if body is None else -1, home)
        except OSError as exc:
            log.error(f"cgi {label}: cannot run: {exc.strerror or exc}")
            if exc.errno in OVERLOAD_ERRNOS:  # out of descriptors or processes: retry soon
                raise ServiceUnavailable(exc.strerror or "", [("Retry-After", "1")]) from None
            raise ScriptFailed(f"cannot run {label}") from None
        self.poll = select.poll()
        self.poll.register(self.stdout, select.POLLIN)
        self.poll.register(self.stderr, select.POLLIN)
        if self.stdin >= 0:
            try:
                self._feed()  # most bodies fit in the pipe at once: no need to wait for POLLOUT
            except BaseException:
                self.close()
                raise
            if self.stdin >= 0:
                self.poll.register(self.stdin, select.POLLOUT)

    # -- output ----------------------------------------------------------------------------------
    def read_output(self, deadline: float, patient: bool = True) -> bytes:
        """The next piece of stdout (b"" at its end), serving stdin and stderr meanwhile.

        `patient`: a script that is reading its request body is working, not stuck (a git push
        indexes its whole pack before it answers), so each bit of the body it takes moves the
        deadline to `timeout` from then. Output on stderr does not count.
        """
        if self.output_done:
            return b""
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ScriptTimeout(f"{self.label}: no output within {self.timeout:g}s")
            chunk = None
            for fd, events in self.poll.poll((deadline - now) * 1000):
                if fd == self.stdout:
                    chunk = self._read_stdout()
                elif fd == self.stderr:
                    self._read_stderr()
                elif fd == self.stdin and events & select.POLLOUT:
                    self._feed()
                    if patient:
                        deadline = time.monotonic() + self.timeout
                elif fd == self.stdin:
                    self._close_stdin()  # POLLERR: the script closed its end
            if chunk is not None:
                return chunk

    def collect(self, first: bytes, wait: float, limit: int) -> tuple[bytes, bool]:
        """`first` plus the output that follows within `wait` seconds, and whether stdout has ended.

        Most scripts are done a moment after their header block: their whole body then leaves as
        one piece with a Content-Length (one write, keep-alive even on HTTP/1.0) instead of a stream.
        """
        pieces = [first]
        size = len(first)
        deadline = time.monotonic() + wait
        while size <= limit:
            try:
                piece = self.read_output(deadline, patient=False)
            except ScriptTimeout:
                break
            if not piece:
                return b"".join(pieces), True
            pieces.append(piece)
            size += len(piece)
        return b"".join(pieces), False

    def _read_stdout(self) -> bytes | None:
        try:
            chunk = os.read(self.stdout, CHUNK)
        except BlockingIOError:
            return None
        if not chunk:
            self.output_done = True
            self.poll.unregister(self.stdout)
        return chunk

    def deadline(self) -> float:
        return time.monotonic() + self.timeout

    # -- stdin -----------------------------------------------------------------------------------
    def _feed(self) -> None:
        """Write as much of the request body as the pipe takes; close stdin after the last byte."""
        assert self.body is not None
        while True:
            if not self._pending:
                data = self.body.read(CHUNK)
                if not data:
                    self._close_stdin()
                    return
                self._pending = memoryview(data)
            try:
                written = os.write(self.stdin, self._pending)
            except BlockingIOError:
                return
            except OSError:  # EPIPE: the script closed stdin or exited without reading it all
                self._close_stdin()
                return
            self._pending = self._pending[written:]

    def _close_stdin(self) -> None:
        if self.stdin < 0:
            return
        try:
            self.poll.unregister(self.stdin)
        except KeyError:
            pass  # closed before it was ever registered
        os.close(self.stdin)
        self.stdin = -1
        self._pending = memoryview(b"")

    # -- stderr ----------------------------------------------------------------------------------
    def _read_stderr(self) -> None:
        try:
            data = os.read(self.stderr, CHUNK)
        except BlockingIOError:
            return
        if not data:
            self.poll.unregister(self.stderr)
            self._log_errors(final=True)
            os.close(self.stderr)
            self.stderr = -1
            return
        self._errors.extend(data)
        self._log_errors(final=False)

    def _log_errors(self, final: bool) -> None:
        """Each complete line goes to the error log, prefixed with the script."""
        while True:
            newline = self._errors.find(b"\n")
            if newline == -1:
                if not (final or len(self._errors) > MAX_LOG_LINE) or not self._errors:
                    return
                newline = len(self._errors)
            line = bytes(self._errors[:newline]).rstrip(b"\r")
            del self._errors[: newline + 1]
            self.log.error(f"cgi {self.label}: {line.decode('utf-8', 'replace')}")

    def _drain_stderr(self) -> None:
        """Whatever the finished script left in its stderr pipe."""
        while self.stderr >= 0:
            try:
                data = os.read(self.stderr, CHUNK)
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            self._errors.extend(data)
        self._log_errors(final=True)

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the script's group, reap it, close the pipes. Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self._close_stdin()
        pid = self.pid
        if not _exited(pid, EXIT_WAIT if self.output_done else 0):
            _kill_group(pid, signal.SIGTERM)
            _exited(pid, TERM_GRACE)
        _kill_group(pid, signal.SIGKILL)  # grandchildren, and a leader that ignored TERM
        _reap(pid)
        self._drain_stderr()
        os.close(self.stdout)
        if self.stderr >= 0:
            os.close(self.stderr)
            self.stderr = -1


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


def _exited(pid: int, wait: float) -> bool:
    """True once pid has exited (without reaping it), waiting up to `wait` seconds."""
    if _has_exited(pid):
        return True
    if wait <= 0:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return _poll_exit(pid, wait)
    try:
        watcher = select.poll()
        watcher.register(pidfd, select.POLLIN)
        return bool(watcher.poll(wait * 1000)) or _has_exited(pid)
    finally:
        os.close(pidfd)


def _reap(pid: int) -> None:
    while True:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            return  # already reaped: SIGCHLD is ignored
        except InterruptedError:
            continue
        return


def _has_exited(pid: int) -> bool:
    try:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped (SIGCHLD ignored): nothing left to wait for
    return result is not None


def _poll_exit(pid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _has_exited(pid):
            return True
        time.sleep(0.005)
    return _has_exited(pid)


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        pass  # the script became another user (setuid): only its own leader is ours to kill


def body_iterator(process: CgiProcess, first: bytes, length: int | None) -> Iterator[bytes]:
    """The response body: `first` (output read along with the header block), then the rest of stdout.

    With a declared Content-Length, exactly that many bytes: extra output is dropped (it would be
    read as the next response on a kept-alive connection) and short output raises, so the worker
    cuts the connection instead of leaving the client waiting for bytes that never come.
    """
    remaining = length
    piece = first
    while True:
        if piece:
            if remaining is not None:
                piece = piece[:remaining]
                remaining -= len(piece)
            yield piece
        if remaining == 0:
            return
        try:
            piece = process.read_output(process.deadline())
        except ScriptTimeout:
            process.log.error(f"cgi {process.label}: no output for {process.timeout:g}s, response cut")
            raise
        if not piece:
            if remaining:
                raise ScriptFailed(f"{process.label}: output ended {remaining} bytes short")
            return


def kill_orphans(keep: Collection[int]) -> list[int]:
    """SIGKILL the process group of every child of this process that is not in `keep`; return their pids.

    For the master, made a child subreaper (prctl PR_SET_CHILD_SUBREAPER): when a worker dies without
    cleaning up (SIGKILL, OOM killer), its scripts, which lead their own sessions, are reparented to
    the master instead of init, and this finds and stops them with everything they started. Children
    in the caller's own process group (workers, helpers) are never touched.
    """
    me, own_group = os.getpid(), os.getpgrp()
    killed = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in keep:
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                fields = stat_file.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parent, group = int(fields[1]), int(fields[2])
        if parent == me and group != own_group:  # scripts and what they started, never ours
            _kill_group(group, signal.SIGKILL)
            killed.append(int(entry.name))
    return killed
