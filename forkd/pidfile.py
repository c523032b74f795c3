"""The files beside the master: its pidfile and its reload status file.

The pidfile holds the master's pid followed by a newline. It is written atomically (a temporary
file in the same directory, then rename) so a reader never sees it half written, and removed at
exit only if it still holds our pid. The temporary file has an unpredictable name and is created
O_EXCL|O_NOFOLLOW: a link planted in the directory can never redirect the root master's write.

The reload status file (`PIDFILE.reload`) is how `forkd -s reload` learns the outcome of a reload
that the running master performed, since a signal carries no reply. It is a small JSON object, also
written atomically:

    {"pid": 1234, "started": 7, "finished": 7, "ok": true, "generation": 8, "message": "..."}

`started` counts reloads begun by this master; the master writes it *before* it reads the config
file. `finished` and the rest describe the last reload that ended. A client that read `started =
S`, then sent SIGHUP, waits for `finished > S`: every reload numbered above S began after the
client's read, so it read the config after the operator's edit. Concurrent clients cannot be handed
a result that predates their edit, and several HUPs arriving together are simply served by one
reload.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

# A new file or nothing: never an existing one, never through a link someone planted.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomically(path: Path, text: str) -> None:
    """Replace path with a file holding text, mode 0644, so that readers never see it half written.

    The master writes these as root, possibly in a directory others can write to: the temporary
    name is unpredictable and created with O_EXCL|O_NOFOLLOW, and rename(2) replaces the name
    `path` itself (a link found there is replaced, not followed).
    """
    for _ in range(10):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(temporary, CREATE_FLAGS, 0o644)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write(path: Path, pid: int) -> None:
    write_atomically(path, f"{pid}\n")


def read(path: Path) -> int | None:
    """The pid in the file, or None when the file is missing or does not hold a pid."""
    try:
        text = path.read_text()
    except OSError:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def remove(path: Path, pid: int) -> None:
    """Remove the pidfile if it is still ours (a successor may have written its own)."""
    if read(path) == pid:
        try:
            path.unlink()
        except OSError:
            pass


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def is_forkd_master(pid: int) -> bool:
    """True when pid is alive and titled as a forkd master (a reused pid is not)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return is_alive(pid)  # no /proc: trust the pid
    return title.startswith(b"forkd: master")


def status_path(pidfile: Path) -> Path:
    return pidfile.with_name(pidfile.name + ".reload")


@dataclass
class ReloadStatus:
    pid: int
    started: int = 0
    finished: int = 0
    ok: bool = True
    generation: int = 1
    message: str = ""

    @classmethod
    def load(cls, path: Path) -> ReloadStatus | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


class ReloadRecorder:
    """The master's side of the reload status file; a no-op without a pidfile."""

    def __init__(self, pidfile: Path | None, pid: int, generation: int) -> None:
        self.path = status_path(pidfile) if pidfile else None
        self.status = ReloadStatus(pid, generation=generation)
        self._save()

    def begin(self) -> int:
        self.status.started += 1
        self._save()
        return self.status.started

    def finish(self, serial: int, ok: bool, generation: int, message: str) -> None:
        self.status.finished = serial
        self.status.ok = ok
        self.status.generation = generation
        self.status.message = message
        self._save()

    def remove(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass

    def _save(self) -> None:
        if self.path is not None:
            try:
                write_atomically(self.path, json.dumps(asdict(self.status)) + "\n")
            except OSError:
                pass  # `-s reload` will time out and say so; serving matters more
