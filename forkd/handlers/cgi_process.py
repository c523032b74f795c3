"""One running CGI script: spawning it, pumping its pipes, and making sure nothing of it outlives the request.

Spawning. subprocess.Popen with no shell and no preexec_fn, so CPython uses vfork + exec (the cheap
path). close_fds=True: listeners, client sockets and systemd's sockets never reach the script.
start_new_session=True: the script leads its own process group, which is how everything it starts is
found again at the end. restore_signals=True: SIGPIPE (ignored by Python) is default again, so a shell
pipeline in a script dies quietly when its reader goes away (RFC 3875 leaves signals to the system;
every script expects the default). The working directory is the script's (§7.2, Unix).

Pumping. The script's stdin, stdout and stderr are non-blocking pipes watched by one poll object. Every
wait serves all three at once: the request body is written to stdin as the script reads it (and stdin is
closed at its end, §4.2), stderr is read and logged line by line, stdout is returned to the caller.
Because nothing ever waits on one pipe alone, a script that writes a megabyte before reading its input,
or floods stderr, cannot deadlock against forkd. Output is pulled, never pushed: `read_output` is called
when the header block is needed and, through the body iterator, whenever the client socket can take
more, so a slow client slows the script down (its stdout pipe fills) instead of filling memory.

Time. `timeout` bounds each wait for output: the header block, and then every next piece of the body.
The first becomes 504, the second an exception out of the body iterator, which makes the worker cut the
connection (the status line is already gone).

The end. `close()` runs exactly once, whatever happened (done, client gone, HEAD, error): stdin is
closed; if the script is still running it gets SIGTERM on its whole group and a short grace; then the
group gets SIGKILL, which also sweeps grandchildren that ignore TERM or were left behind; then the
script is reaped (no zombies) and the pipes are closed (no descriptor leaks). The group is killed before
the leader is reaped: while the leader is unreaped its pid (the group id) cannot be reused, so the
kill can never hit a stranger.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from typing import BinaryIO, Iterator, Sequence

from forkd.http.errors import BadGateway, GatewayTimeout
from forkd.logs import ErrorLog

CHUNK = 65536
TERM_GRACE = 0.5  # seconds a running script has to exit after SIGTERM before the group is killed
EXIT_WAIT = 0.05  # after stdout closed, how long the script has to exit by itself
MAX_LOG_LINE = 4096



class ScriptTimeout(GatewayTimeout):
    """The script produced no output within its timeout."""


class ScriptFailed(BadGateway):
    """The script could not be started, or broke its output framing."""


class CgiProcess:
    """A spawned script and its three pipes; see the module docstring."""

    def __init__(self, argv: Sequence[str], env: dict[bytes, bytes], cwd: str, body: BinaryIO | None,
                 stdin_null: int, log: ErrorLog, label: str, timeout: float) -> None:
        self.log = log
        self.label = label
        self.timeout = timeout
        self.body = body
        self.closed = False
        self.output_done = False
        self._pending = memoryview(b"")
        self._errors = bytearray()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if body is not None else stdin_null,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env, bufsize=0,
                close_fds=True, start_new_session=True, restore_signals=True,
            )
        except OSError as exc:
            log.error(f"cgi {label}: cannot run: {exc.strerror or exc}")
            raise ScriptFailed(f"cannot run {label}") from None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = self.proc.stdout.fileno()
        self.stderr = self.proc.stderr.fileno()
        self.stdin = self.proc.stdin.fileno() if self.proc.stdin is not None else -1
        self.poll = select.poll()
        for fd in (self.stdout, self.stderr, self.stdin):
            if fd >= 0:
                os.set_blocking(fd, False)
        self.poll.register(self.stdout, select.POLLIN)
        self.poll.register(self.stderr, select.POLLIN)
        if self.stdin >= 0:
            self._feed()  # most bodies fit in the pipe at once; no need to wait for POLLOUT
            if self.stdin >= 0:
                self.poll.register(self.stdin, select.POLLOUT)

    # -- output ----------------------------------------------------------------------------------
    def read_output(self, deadline: float) -> bytes:
        """The next piece of stdout (b"" at its end), serving stdin and stderr meanwhile."""
        if self.output_done:
            return b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScriptTimeout(f"{self.label}: no output within {self.timeout:g}s")
            chunk = None
            for fd, events in self.poll.poll(remaining * 1000):
                if fd == self.stdout:
                    chunk = self._read_stdout()
                elif fd == self.stderr:
                    self._read_stderr()
                elif fd == self.stdin and events & select.POLLOUT:
                    self._feed()
                elif fd == self.stdin:
                    self._close_stdin()  # POLLERR: the script closed its end
            if chunk is not None:
                return chunk

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
        assert self.proc.stdin is not None
        self.proc.stdin.close()
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
        pid = self.proc.pid
        if not _exited(pid, EXIT_WAIT if self.output_done else 0):
            _kill_group(pid, signal.SIGTERM)
            _exited(pid, TERM_GRACE)
        _kill_group(pid, signal.SIGKILL)  # grandchildren, and a leader that ignored TERM
        self.proc.wait()
        self._drain_stderr()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.stderr = -1


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
