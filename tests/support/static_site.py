"""A small static site for the static-file tests, and a raw HTTP/1.1 client that parses replies.

The tree (under tmp/www) has text and binary files of several types, a directory with an index, a
directory of hostile names for listings, dotfiles, a .well-known file, a FIFO, symlinks inside and out
of the root, precompressed siblings and an error page. A secret file lies OUTSIDE the root (tmp/secret.txt
and tmp/outside/secret.txt): no request may ever return its content.
"""

from __future__ import annotations

import gzip
import os
import socket
from dataclasses import dataclass
from pathlib import Path

SECRET = b"TOPSECRET-forkd-static-test"
HOSTILE = ["<script>&\"'.txt", "sp ace.txt", "ünïcødé.txt", "100%.txt", "a:b.txt", "q?x#y.txt"]
TEXT = ("The quick brown fox jumps over the lazy dog. " * 200).encode()  # compresses well


def build_site(base: Path) -> Path:
    """Create the tree under base and return the root (base/www)."""
    root = base / "www"
    for directory in ("dir", "dir/sub", "listing", "listing/zdir", "listing/adir", "empty",
                      ".git", ".well-known"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (base / "outside").mkdir()
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "1k.html").write_bytes(b"<!DOCTYPE html>" + b"x" * 1009)
    (root / "digits.txt").write_bytes(b"0123456789")
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "style.css").write_text("body{}\n")
    (root / "app.js").write_text("let a = 1;\n")
    (root / "data.json").write_text('{"a": 1}\n')
    (root / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>\n")
    (root / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "noext").write_bytes(b"?")
    (root / "text.txt").write_bytes(TEXT)
    (root / "text.txt.gz").write_bytes(gzip.compress(TEXT, mtime=0))
    (root / "text.txt.br").write_bytes(b"not really brotli")
    (root / "dir" / "index.html").write_bytes(b"<p>dir index</p>\n")
    (root / "dir" / "sub" / "f.txt").write_bytes(b"f\n")
    (root / "404.html").write_bytes(b"<h1>custom not found</h1>\n")
    (root / ".env").write_bytes(SECRET)
    (root / ".git" / "config").write_bytes(SECRET)
    (root / ".well-known" / "security.txt").write_bytes(b"Contact: mailto:x@example.com\n")
    for name in HOSTILE:
        (root / "listing" / name).write_bytes(name.encode())
    (root / "listing" / ".hidden").write_bytes(SECRET)
    (root / "listing" / "zdir" / "inner.txt").write_bytes(b"inner\n")
    (root / "out").symlink_to(base / "secret.txt")
    (root / "outdir").symlink_to(base / "outside")
    (root / "relout").symlink_to("../secret.txt")
    (root / "in").symlink_to("a.txt")
    (root / "to-env").symlink_to(".env")
    (root / "listing" / "link-out").symlink_to(base / "secret.txt")
    os.mkfifo(root / "fifo")
    return root


def static_config(root: Path, prefix: str = "/", **options: object) -> dict[str, object]:
    return {"routes": [{"prefix": prefix, "static": {"root": str(root), **options}}]}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names (repeated fields joined with ", ")
    body: bytes
    raw: bytes


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines[0].startswith("HTTP/") else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Reply(status, headers, body, data)


def raw_request(host: str, port: int, target: str, method: str = "GET",
                headers: dict[str, str] | None = None, timeout: float = 5.0) -> Reply:
    """One request on its own connection (Connection: close); the target is sent byte for byte."""
    lines = [f"{method} {target} HTTP/1.1", "Host: test", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_reply(b"".join(chunks))
