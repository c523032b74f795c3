"""Access logs that tell the truth: UTF-8 as UTF-8, every other byte and control escaped, and lines
short enough for the tools that read them (goaccess), in both formats, through the real daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, poll

MakeDaemon = Callable[..., Daemon]

# A User-Agent in UTF-8 with one invalid byte (obs-text, which HTTP allows), a Referer with a quote
# and a trailing backslash, and a request line with ESC and an invalid byte (answered 400).
NAMED = (
    b"GET /page HTTP/1.1\r\nHost: x\r\n"
    b"User-Agent: \xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9 \xff\r\n"
    b'Referer: http://a/"q\\\r\n'
    b"Connection: close\r\n\r\n"
)
FORGED = b"GET /\x1b[2J\xff HTTP/1.1\r\nHost: x\r\n\r\n"


def config(root: Path, **extra: object) -> dict[str, object]:
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("hi")
    return {"workers": 1, "routes": [{"prefix": "/", "static": {"root": str(root)}}], **extra}


def logged_lines(daemon: Daemon, count: int) -> list[bytes]:
    def enough() -> bool:
        return daemon.access_log.exists() and daemon.access_log.read_bytes().count(b"\n") >= count

    poll(enough, 5, f"{count} access log lines")
    return daemon.access_log.read_bytes().splitlines()


def assert_clean(data: bytes) -> None:
    data.decode("utf-8")  # valid UTF-8 throughout
    for byte in (b"\x1b", b"\xff", b"\r"):
        assert byte not in data


def test_json_log_keeps_utf8_and_escapes_the_rest(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(config(tmp_path / "www", log_format="json"))
    assert daemon.raw(NAMED).startswith(b"HTTP/1.1 404")
    assert daemon.raw(FORGED).startswith(b"HTTP/1.1 400")
    lines = logged_lines(daemon, 2)
    assert_clean(b"\n".join(lines))
    named, forged = (json.loads(line) for line in lines)
    assert named["user_agent"] == "ünïcödé \\xff"
    assert named["referer"] == 'http://a/"q\\\\'
    assert (named["method"], named["target"], named["status"]) == ("GET", "/page", 404)
    assert forged["request"] == "GET /\\x1b[2J\\xff HTTP/1.1"
    assert forged["status"] == 400


def test_combined_log_keeps_utf8_and_escapes_the_rest(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(config(tmp_path / "www"))
    daemon.raw(NAMED)
    daemon.raw(FORGED)
    named, forged = logged_lines(daemon, 2)
    assert_clean(named + forged)
    assert '"GET /page HTTP/1.1" 404 ' in named.decode()
    assert named.decode().endswith(' "http://a/\\"q\\\\" "ünïcödé \\xff"')
    assert '"GET /\\x1b[2J\\xff HTTP/1.1" 400 ' in forged.decode()


@pytest.mark.skipif(shutil.which("goaccess") is None, reason="goaccess (Debian package) missing")
def test_goaccess_reads_a_log_with_a_414_among_normal_requests(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(config(tmp_path / "www"))
    for path in ("/", "/a", "/index.html"):
        assert daemon.get(path, headers={"User-Agent": "curl/8.0 " + "ü" * 2000})[0] in (200, 404)
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert daemon.raw(long_line).startswith(b"HTTP/1.1 414")
    daemon.get("/after")
    lines = logged_lines(daemon, 5)
    assert max(len(line) for line in lines) < 4000
    assert any(b" 414 " in line and b"...[" in line for line in lines), lines
    result = subprocess.run(
        ["goaccess", str(daemon.access_log), "--log-format=COMBINED", "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    general = json.loads(result.stdout)["general"]
    assert (general["total_requests"], general["failed_requests"]) == (5, 0)
