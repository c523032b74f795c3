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

What reaches a log from outside (request lines, headers, CGI stderr) passes through `escape`: UTF-8
stays UTF-8, and every byte that is not valid UTF-8, every control character (CR, LF, ESC, the
other C0 codes, DEL, C1) and every other unprintable character is written as `\\xNN`, one per byte,
so nothing can forge a line or drive a terminal. A backslash is doubled, so `\\xNN` in a log always
means an escaped byte. The combined format also writes `"` as `\\"` (as Apache does). Logged request
lines are cut to REQUEST_CAP characters and headers to HEADER_CAP, with a visible mark, so that a
combined line stays well below the 4 KiB line buffer of log analysers such as goaccess.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forkd.http.request import Request

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FLUSH_AT = 4096
REQUEST_CAP = 2000  # characters of a logged request line (method, target), the mark included
HEADER_CAP = 800  # characters of a logged Referer or User-Agent
# Bytes that `escape` must look at: controls, DEL, the backslash and everything beyond ASCII.
_SPECIAL = re.compile(rb"[\x00-\x1f\x7f-\xff\\]")
# One character of escaped text: an escape sequence, or a run of plain characters.
_TOKEN = re.compile(r"\\x[0-9a-f]{2}|\\.|[^\\]+")
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
            # Keep the descriptor's number (dup2 swaps the file under it atomically): WSGI app
            # threads write to it at any moment, and a closed number could meanwhile be reused
            # by a client socket.
            os.dup2(self.fd, old, inheritable=False)
            os.close(self.fd)
            self.fd = old
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
        referer = _field(headers.get("referer", "-"), HEADER_CAP, quote=True)
        agent = _field(headers.get("user-agent", "-"), HEADER_CAP, quote=True)
        line = _field(request.request_line if request else request_line, REQUEST_CAP, quote=True)
        client = _field(remote, HEADER_CAP) if remote else "-"
        text = f'{client} - - [{self._now()}] "{line}" {status} {sent} "{referer}" "{agent}"\n'
        return text.encode("utf-8")

    def _json(self, request: Request | None, remote: str, status: int, sent: int, seconds: float,
              request_line: str) -> bytes:
        headers = request.headers if request else {}
        referer = headers.get("referer")
        agent = headers.get("user-agent")
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "remote": _field(remote, HEADER_CAP),
            "method": _field(request.method, REQUEST_CAP) if request else None,
            "target": _field(request.target, REQUEST_CAP) if request else None,
            "request": _field(request.request_line if request else request_line, REQUEST_CAP),
            "status": status,
            "bytes": sent,
            "duration_ms": round(seconds * 1000, 3),
            "referer": None if referer is None else _field(referer, HEADER_CAP),
            "user_agent": None if agent is None else _field(agent, HEADER_CAP),
            "pid": os.getpid(),
        }
        return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")

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


def escape(data: bytes) -> str:
    """Bytes from outside as one printable line: UTF-8 kept, anything else as `\\xNN`.

    Invalid UTF-8 bytes, control characters (C0 including CR, LF, TAB and ESC; DEL; C1) and other
    unprintable characters (bidi overrides, line separators) become `\\xNN` for each of their bytes;
    a backslash becomes two. Quotes are left to the format: JSON and the combined log quote them.
    """
    if not _SPECIAL.search(data):
        return data.decode("ascii")
    text = data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _hex(c) for c in text)


def _hex(char: str) -> str:
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))


def _field(text: str, limit: int, quote: bool = False) -> str:
    """A request field (decoded as latin-1, one char per byte) escaped and cut to limit chars."""
    if text.isascii() and text.isprintable() and "\\" not in text and len(text) <= limit:
        return text.replace('"', '\\"') if quote and '"' in text else text
    raw = text.encode("latin-1", "replace")
    escaped = escape(raw)
    if quote:
        escaped = escaped.replace('"', '\\"')
    if len(escaped) <= limit:
        return escaped
    mark = f"...[{len(raw)} bytes]"
    return _cut(escaped, limit - len(mark)) + mark


def _cut(escaped: str, limit: int) -> str:
    """The longest prefix of escaped text within limit chars that splits no escape sequence."""
    kept = 0
    for token in _TOKEN.finditer(escaped):
        piece = token.group()
        if kept + len(piece) > limit:
            if piece[0] != "\\":
                kept = limit  # a plain run may be cut anywhere
            break
        kept += len(piece)
    return escaped[:kept]
