"""Nothing outside the root is ever served (issue #3, part 5).

A secret file lies next to the root (and in a sibling directory); every traversal payload — dot
segments in each encoding, encoded and back slashes, overlong UTF-8, NUL, absolute-form targets,
the prefix trick, symlinks out of the root, dotfiles — is sent raw over a socket, and the reply must
never contain the secret (nor /etc/passwd). The payloads go to a route with a prefix as well as to
the "/" route, and with every relevant option on and off.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.static_site import SECRET, build_site, raw_request, static_config

TRAVERSALS = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%2e%2e%2fsecret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/..\\secret.txt",
    "/..%5csecret.txt",
    "/..%5Csecret.txt",
    "/%2e%2e%5csecret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%c0%ae%c0%ae%c0%afsecret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/%c1%9c%c1%9csecret.txt",
    "/dir/../../secret.txt",
    "/dir/%2e%2e/%2e%2e/secret.txt",
    "/./../secret.txt",
    "//../secret.txt",
    "/..;/secret.txt",
    "/a.txt%00/../../secret.txt",
    "/%00../secret.txt",
    "/..%00/secret.txt",
    "/..%c0%afsecret.txt",
    "/out",
    "/relout",
    "/outdir/secret.txt",
    "/outdir/",
    "/in/../../secret.txt",
    "/.env",
    "/%2eenv",
    "/.git/config",
    "/%2egit/config",
    "/to-env",
    "/listing/.hidden",
    "/listing/link-out",
    "/.well-known/../.env",
    "/.well-known/%2e%2e/.env",
    "http://test/../secret.txt",
    "http://test/../../../../etc/passwd",
    "http://test/%2e%2e/secret.txt",
    "http://test/out",
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return build_site(tmp_path / "site")


def _assert_safe(reply_raw: bytes, target: str) -> None:
    assert SECRET not in reply_raw, target
    assert b"root:x:0:0" not in reply_raw, target


def _send(daemon: Daemon, target: str) -> bytes:
    try:
        return raw_request(daemon.host, daemon.port, target).raw
    except ConnectionResetError:
        return b""  # refused outright: nothing served


@pytest.mark.parametrize("options", [
    {"autoindex": True},
    {"autoindex": True, "index": ["index.html", "secret.txt"], "error_pages": {404: "../secret.txt"}},
])
def test_traversal_battery_on_the_root_route(make_daemon: Callable[..., Daemon], site: Path,
                                             options: dict[str, Any]) -> None:
    daemon = make_daemon(static_config(site, "/", **options))
    for target in TRAVERSALS:
        raw = _send(daemon, target)
        _assert_safe(raw, target)
        status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
        assert status in (0, 400, 403, 404), (target, raw[:200])
    # The daemon is still fine afterwards.
    assert daemon.get("/a.txt")[2] == b"hello\n"


def test_traversal_battery_on_a_prefix_route(make_daemon: Callable[..., Daemon], site: Path) -> None:
    # Only /static is routed; "/static../secret.txt" must not be read as "/static" + "../secret.txt".
    daemon = make_daemon(static_config(site, "/static", autoindex=True))
    targets = ["/static" + t for t in TRAVERSALS if t.startswith("/")]
    targets += ["/static../secret.txt", "/static..%2fsecret.txt", "/static%2f..%2fsecret.txt",
                "/static/..", "/static/%2e%2e", "/static/../static/../secret.txt",
                "http://test/static/../secret.txt", "/staticx/../secret.txt"]
    for target in targets:
        raw = _send(daemon, target)
        _assert_safe(raw, target)
    assert daemon.get("/static/a.txt")[2] == b"hello\n"


def test_the_secret_is_reachable_when_the_options_allow_it(make_daemon: Callable[..., Daemon],
                                                           site: Path) -> None:
    # The control: the same requests do return the secret once symlinks out and dotfiles are allowed,
    # so the refusals above are the handler's doing, not a broken fixture.
    daemon = make_daemon(static_config(site, "/", symlinks_outside_root=True, dotfiles=True))
    for target in ("/out", "/relout", "/outdir/secret.txt", "/.env", "/.git/config", "/to-env"):
        status, _, body = daemon.get(target)
        assert (status, body) == (200, SECRET), target
    for target in ("/../secret.txt", "/%2e%2e/secret.txt", "http://test/../secret.txt"):
        _assert_safe(_send(daemon, target), target)  # traversal stays impossible


def test_index_names_cannot_leave_the_directory(make_daemon: Callable[..., Daemon], site: Path) -> None:
    options = {"index": ["../secret.txt", "../../secret.txt", "..", "."], "symlinks_outside_root": True}
    daemon = make_daemon(static_config(site, "/", **options))
    for target in ("/", "/empty/", "/outdir/", "/dir/sub/"):
        status, _, body = daemon.get(target)
        assert status == 403 and SECRET not in body, target


def test_well_known_is_served_but_not_other_dotfiles(make_daemon: Callable[..., Daemon], site: Path) -> None:
    daemon = make_daemon(static_config(site))
    status, _, body = daemon.get("/.well-known/security.txt")
    assert status == 200 and body.startswith(b"Contact:")
    assert daemon.get("/.env")[0] == 404
    assert daemon.get("/.git/")[0] == 404


def test_symlinks_inside_the_root_are_followed(make_daemon: Callable[..., Daemon], site: Path) -> None:
    daemon = make_daemon(static_config(site))
    assert daemon.get("/in")[2] == b"hello\n"


def test_symlink_swapped_to_point_outside(make_daemon: Callable[..., Daemon], site: Path) -> None:
    daemon = make_daemon(static_config(site))
    assert daemon.get("/in")[2] == b"hello\n"  # validated and cached in some worker
    os.unlink(site / "in")
    os.symlink(site.parent / "secret.txt", site / "in")
    for _ in range(6):  # every worker, whatever it cached
        status, _, body = daemon.get("/in")
        assert status == 404 and SECRET not in body


def test_fifo_is_refused_without_blocking(make_daemon: Callable[..., Daemon], site: Path) -> None:
    daemon = make_daemon(static_config(site, "/", symlinks_outside_root=True, dotfiles=True))
    started = time.monotonic()
    for _ in range(4):
        assert daemon.get("/fifo")[0] == 404
    assert time.monotonic() - started < 3
    assert daemon.get("/a.txt")[2] == b"hello\n"  # no worker is stuck on the FIFO


def test_device_files_are_not_served(make_daemon: Callable[..., Daemon], site: Path) -> None:
    (site / "null").symlink_to("/dev/zero")
    daemon = make_daemon(static_config(site, "/", symlinks_outside_root=True))
    assert daemon.get("/null")[0] == 404


def test_unreadable_file_is_403(make_daemon: Callable[..., Daemon], site: Path) -> None:
    if os.geteuid() != 0:
        (site / "a.txt").chmod(0)
        daemon = make_daemon(static_config(site))
        assert daemon.get("/a.txt")[0] == 403
        return
    # Root reads every file: the workers run as nobody instead, from a tree nobody may enter.
    shared = Path(tempfile.mkdtemp(prefix="forkd-unreadable-"))
    try:
        shared.chmod(0o755)
        www = build_site(shared)
        (www / "a.txt").chmod(0)
        config = {**static_config(www), "user": "nobody", "error_log": str(shared / "error.log"),
                  "access_log": str(shared / "access.log")}
        daemon = make_daemon(config, start=False)
        daemon.error_log = shared / "error.log"
        daemon.start()
        assert daemon.get("/a.txt")[0] == 403
        assert daemon.get("/digits.txt")[0] == 200  # readable by all: served
        daemon.stop()  # and check its logs while they still exist
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_bad_requests_close_and_keep_the_worker(make_daemon: Callable[..., Daemon], site: Path) -> None:
    daemon = make_daemon(static_config(site))
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        sock.sendall(b"GET /%2e%2e/secret.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.count(b"HTTP/1.1 ") == 1  # closed after the 400: the pipelined request is dropped
    assert daemon.get("/a.txt")[2] == b"hello\n"
