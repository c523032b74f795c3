"""The error log and the access log.

Each log is a file opened O_APPEND (or stderr for "-"). A line is always written whole by a single
os.write, so lines from several workers sharing one file never interleave. The access log buffers
whole lines and is flushed by the worker loop (at the latest when a buffer passes 4 KiB, below
PIPE_BUF, or when the loop goes idle); the error log writes at once. `reopen` re-opens the paths
(USR1, after logrotate renamed the files).

Opening is the dangerous part: the master opens (and with `user:` set, hands over) log files as
root, in a directory the workers' user may own. `open_log` therefore never follows a symbolic link
(O_NOFOLLOW: a planted link to /etc/shadow fails with ELOOP) and accepts only what a log can be: a
regular file with a single name (a planted hard link is refused), or a character device or FIFO
(/dev/null, /dev/full). `hand_over` changes the owner through the descriptor it opened (fchown),
never by path, so the file chowned is the file checked.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forkd.http.request import Request

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FLUSH_AT = 4096
# O_NONBLOCK only so that opening a FIFO nobody reads fails (ENXIO) instead of hanging the master.
OPEN_FLAGS = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
)


def open_log(path: str) -> int:
    """Open a log file for appending, creating it 0640; refuse links and odd file types.

    Raises OSError whose strerror says what is wrong (e.g. "is a symbolic link (not followed)").
    """
    try:
        fd = os.open(path, OPEN_FLAGS, 0o640)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link (not followed)", path) from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            if info.st_nlink != 1:
                raise OSError(errno.EMLINK, "has other hard links (refused)", path)
        elif not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
            raise OSError(errno.EINVAL, "is not a regular file, device or FIFO", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def hand_over(path: str, uid: int | None, gid: int | None) -> None:
    """Create the log at path (as open_log does) and give a regular file to uid/gid.

    The master calls this as root before workers running as `user` open the file themselves.
    """
    fd = open_log(path)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    finally:
        os.close(fd)


class LogFile:
    """An append-only line sink: a path, "-" (stderr) or None (discard)."""

    def __init__(self, target: str | None) -> None:
        self.target = target
        self.fd = -1
        self.problem = ""  # why the last reopen failed
        self.open()

    def open(self) -> None:
        if self.target is None:
            self.fd = -1
        elif self.target == "-":
            self.fd = 2
        else:
            self.fd = open_log(self.target)

    def reopen(self) -> bool:
        """Open the path again (after logrotate renamed it); on failure keep the old file.

        A log that cannot be reopened (its directory vanished, the disk is full) must not take the
        process down with it: the old descriptor stays in use and False is returned.
        """
        old = self.fd
        try:
            self.open()
        except OSError as exc:
            self.fd = old
            self.problem = exc.strerror or str(exc)
            return False
        if old > 2 and old != self.fd:
            os.close(old)
        return True

    def write(self, data: bytes) -> None:
        if self.fd < 0 or not data:
            return
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # a full disk or a closed stderr must never stop serving

    def close(self) -> None:
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1


class ErrorLog:
    """`2026-11-22T10:00:00Z [info] 1234: message` lines, written at once."""

    def __init__(self, target: str | None, level: str = "info") -> None:
        self.file = LogFile(target)
        self.threshold = LEVELS[level]

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = message.replace("\n", "\\n")
        self.file.write(f"{stamp} [{level}] {os.getpid()}: {text}\n".encode("utf-8", "replace"))

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    def reopen(self) -> bool:
        if self.file.reopen():
            return True
        self.error(
            f"cannot reopen {self.file.target}: {self.file.problem}; still writing to the old file"
        )
        return False


class AccessLog:
    """NCSA combined (default) or JSON lines, buffered whole lines at a time."""

    def __init__(self, target: str | None, fmt: str = "combined") -> None:
        self.file = LogFile(target)
        self.json = fmt == "json"
        self.buffer: list[bytes] = []
        self.buffered = 0
        self._stamp_second = -1
        self._stamp = ""

    @property
    def enabled(self) -> bool:
        return self.file.fd >= 0

    def record(self, request: Request | None, remote: str, status: int, sent: int, seconds: float,
               request_line: str = "-") -> None:
        if self.file.fd < 0:
            return
        if self.json:
            line = self._json(request, remote, status, sent, seconds, request_line)
        else:
            line = self._combined(request, remote, status, sent, request_line)
        self.buffer.append(line)
        self.buffered += len(line)
        if self.buffered >= FLUSH_AT:
            self.flush()

    def _combined(self, request: Request | None, remote: str, status: int, sent: int,
                  request_line: str) -> bytes:
        headers = request.headers if request else {}
        referer = _quote(headers.get("referer", "-"))
        agent = _quote(headers.get("user-agent", "-"))
        line = _quote(request.request_line if request else request_line)
        text = f'{remote or "-"} - - [{self._now()}] "{line}" {status} {sent} "{referer}" "{agent}"\n'
        return text.encode("latin-1", "replace")

    def _json(self, request: Request | None, remote: str, status: int, sent: int, seconds: float,
              request_line: str) -> bytes:
        headers = request.headers if request else {}
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "remote": remote,
            "method": request.method if request else None,
            "target": request.target if request else None,
            "request": request.request_line if request else request_line,
            "status": status,
            "bytes": sent,
            "duration_ms": round(seconds * 1000, 3),
            "referer": headers.get("referer"),
            "user_agent": headers.get("user-agent"),
            "pid": os.getpid(),
        }
        return (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")

    def _now(self) -> str:
        second = int(time.time())
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._stamp

    def flush(self) -> None:
        if self.buffer:
            self.file.write(b"".join(self.buffer))
            self.buffer.clear()
            self.buffered = 0

    def reopen(self) -> bool:
        self.flush()
        return self.file.reopen()


def _quote(text: str) -> str:
    """Escape what could forge a log line: quotes, backslashes, control bytes."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(
        f"\\x{ord(c):02x}" if not c.isprintable() or c in '"\\' else c for c in text
    )
