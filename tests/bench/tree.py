"""The one document tree every server under test serves.

Built fresh in a temporary directory for each run so that every peer reads the very same bytes:

    www/1k.txt            1 KiB
    www/1m.bin            1 MiB
    www/10m.bin           10 MiB
    www/list/             50 small files and no index: a generated directory listing
    www/cgi-bin/hello.sh  a shell CGI script printing a header block and "hello"
    www/cgi-bin/slow.sh   a shell CGI script: header block, "first", 5 s of sleep, "second"
    tls/cert.pem, key.pem an ECDSA P-256 certificate for localhost (beside www, not in it)

Everything is world-readable (and the script executable) because nginx, lighttpd and Apache read it
as `nobody` after dropping root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.bench.tls import make_certificate

LISTING_FILES = 50
CGI_SCRIPT = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho hello\n"
CGI_BODY = b"hello\n"
SLOW_CGI_PATH = "/cgi-bin/slow.sh"
SLOW_CGI_SLEEP = 5  # seconds between the two lines of slow.sh
SLOW_CGI_SCRIPT = (b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho first\n"
                   b"sleep %d\necho second\n" % SLOW_CGI_SLEEP)


@dataclass(frozen=True)
class Tree:
    root: Path  # the document root
    sizes: dict[str, int]  # URL path -> size in bytes of the file it serves
    cert: Path  # the HTTPS certificate (ECDSA P-256, localhost) and its key, see tls.py
    key: Path

    @property
    def cgi_root(self) -> Path:
        return self.root / "cgi-bin"

    @property
    def slow_script(self) -> Path:
        return self.root / SLOW_CGI_PATH.lstrip("/")

    def listing_names(self) -> list[str]:
        return [f"file{i:02d}.txt" for i in range(LISTING_FILES)]


def build(base: Path) -> Tree:
    """Create the tree under base/www and return its description."""
    root = base / "www"
    (root / "list").mkdir(parents=True)
    (root / "cgi-bin").mkdir()
    sizes = {}
    for name, size in (("1k.txt", 1024), ("1m.bin", 1 << 20), ("10m.bin", 10 << 20)):
        _write(root / name, _pattern(size))
        sizes["/" + name] = size
    for i in range(LISTING_FILES):
        _write(root / "list" / f"file{i:02d}.txt", f"file number {i}\n".encode())
    for name, text in (("hello.sh", CGI_SCRIPT), ("slow.sh", SLOW_CGI_SCRIPT)):
        script = root / "cgi-bin" / name
        _write(script, text)
        script.chmod(0o755)
    for directory in (base, root, root / "list", root / "cgi-bin"):
        directory.chmod(0o755)
    cert, key = make_certificate(base / "tls")
    return Tree(root=root, sizes=sizes, cert=cert, key=key)


def _pattern(size: int) -> bytes:
    """Printable, non-repeating-looking bytes (no compression tricks, no all-zero pages)."""
    line = b"".join(bytes([65 + (i * 7) % 26]) for i in range(63)) + b"\n"
    return (line * (size // len(line) + 1))[:size]


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o644)
