"""What a root master with `user:` set must not be tricked into: following a link planted by the
workers' user (a CGI script has their rights) to chown, append to or overwrite a root-owned file.

Each attack is played by the test itself (it runs as root), with the rights the workers' user has:
it rewrites entries of the directory that user owns. These tests need root (to start workers as
`nobody`) and skip cleanly without it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, poll
from tests.support.daemon import run_forkd as forkd

MakeDaemon = Callable[..., Daemon]
SECRET = b"root:$y$secret:19000:0:99999:7:::\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run workers as nobody")




@pytest.fixture
def shared() -> Iterator[Path]:
    """A root-owned 0755 directory outside pytest's private (0700) tmp_path, so nobody can enter."""
    directory = Path(tempfile.mkdtemp(prefix="forkd-trust-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def secret_file(directory: Path) -> Path:
    """A root-owned 0600 file standing for /etc/shadow."""
    secret = directory / "shadow"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return secret


def assert_untouched(secret: Path) -> None:
    info = secret.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o600)
    assert secret.read_bytes() == SECRET


def site(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "index.html").write_text("hi")
    return directory


def start_as_nobody(make_daemon: MakeDaemon, shared: Path, **extra: object) -> Daemon:
    """A daemon whose access log lives in a directory owned by the workers' user."""
    logs = shared / "logs"
    logs.mkdir()
    os.chown(logs, nobody(), -1)
    config: dict[str, object] = {
        "user": "nobody",
        "workers": 1,
        "error_log": str(shared / "error.log"),
        "access_log": str(logs / "access.log"),
        "routes": [{"prefix": "/", "static": {"root": str(site(shared / "www"))}}],
    }
    config.update(extra)
    daemon = make_daemon(config, start=False)
    daemon.error_log = shared / "error.log"
    daemon.access_log = logs / "access.log"
    return daemon.start()


def test_reopen_does_not_follow_a_planted_access_log_link(
    make_daemon: MakeDaemon, shared: Path
) -> None:
    daemon = start_as_nobody(make_daemon, shared)
    assert daemon.access_log.stat().st_uid == nobody()
    secret = secret_file(shared)
    # The attack: the workers' user swaps its log for a link to a root-only file.
    daemon.access_log.unlink()
    daemon.access_log.symlink_to(secret)
    result = forkd("-c", str(daemon.config_path), "-s", "reopen")
    assert result.returncode == 0, result.stderr
    daemon.wait_for_log("log files reopened")
    daemon.wait_for_log("worker reopened its logs")
    assert daemon.get("/")[0] == 200
    assert_untouched(secret)
    assert "is a symbolic link (not followed)" in daemon.log()


def test_a_planted_log_link_stops_a_start_with_the_reason(
    make_daemon: MakeDaemon, shared: Path
) -> None:
    secret = secret_file(shared)
    logs = shared / "logs"
    logs.mkdir()
    os.chown(logs, nobody(), -1)
    (logs / "access.log").symlink_to(secret)
    daemon = make_daemon(
        {
            "user": "nobody",
            "error_log": str(shared / "error.log"),
            "access_log": str(logs / "access.log"),
            "routes": [{"prefix": "/", "static": {"root": str(site(shared / "www"))}}],
        },
        start=False,
    )
    daemon.error_log = shared / "error.log"
    daemon.start(wait=False)
    assert daemon.wait(30) == 1
    assert f"cannot open access_log {logs / 'access.log'}: is a symbolic link" in daemon.log()
    assert_untouched(secret)


def test_reload_does_not_follow_a_planted_error_log_link(
    make_daemon: MakeDaemon, shared: Path
) -> None:
    daemon = start_as_nobody(make_daemon, shared)
    secret = secret_file(shared)
    # A reload that moves the error log into the user's directory, where a link waits for it.
    planted = shared / "logs" / "error.log"
    planted.symlink_to(secret)
    text = daemon.config_path.read_text().replace(str(shared / "error.log"), str(planted))
    daemon.config_path.write_text(text)
    result = forkd("-c", str(daemon.config_path), "-s", "reload")
    assert result.returncode == 1
    assert "is a symbolic link" in result.stderr
    assert_untouched(secret)
    assert daemon.get("/")[0] == 200


def test_a_hard_link_to_a_root_file_is_not_handed_over(
    make_daemon: MakeDaemon, shared: Path
) -> None:
    daemon = start_as_nobody(make_daemon, shared)
    secret = secret_file(shared)
    daemon.access_log.unlink()
    os.link(secret, daemon.access_log)  # what protected_hardlinks=0 would let the user do
    daemon.signal(signal.SIGUSR1)
    daemon.wait_for_log("has other hard links (refused)")
    poll(lambda: "log files reopened" in daemon.log(), 5, "master reopened its logs")
    assert_untouched(secret)


def test_reload_status_is_not_written_through_a_planted_link(
    make_daemon: MakeDaemon, shared: Path
) -> None:
    run = shared / "run"
    run.mkdir()
    os.chown(run, nobody(), -1)
    daemon = start_as_nobody(make_daemon, shared, pidfile=str(run / "forkd.pid"))
    secret = secret_file(shared)
    # The first version wrote `.forkd.pid.reload.<master pid>.tmp` with O_CREAT|O_TRUNC.
    (run / f".forkd.pid.reload.{daemon.pid}.tmp").symlink_to(secret)
    result = forkd("-c", str(daemon.config_path), "-s", "reload")
    assert result.returncode == 0, result.stderr
    assert_untouched(secret)
    assert not (run / "forkd.pid.reload").is_symlink()
    assert (run / "forkd.pid").read_text() == f"{daemon.pid}\n"


@pytest.mark.parametrize(("configured", "expected"), [("0660", 0o660), ("0666", 0o666)])
def test_unix_socket_is_born_with_its_mode_whatever_the_umask(
    make_daemon: MakeDaemon, shared: Path, configured: str, expected: int
) -> None:
    path = shared / "forkd.sock"
    daemon = make_daemon(
        {
            "listen": ["127.0.0.1:0", f"unix:{path}"],
            "unix_mode": configured,
            "routes": [{"prefix": "/", "static": {"root": str(site(shared / "www"))}}],
        },
        start=False,
    )
    old_umask = os.umask(0o077)  # inherited by the daemon
    try:
        daemon.start()
    finally:
        os.umask(old_umask)
    info = path.lstat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == expected
    assert (info.st_uid, info.st_gid) == (0, 0)


def test_a_link_in_place_of_the_unix_socket_is_refused(
    make_daemon: MakeDaemon, shared: Path
) -> None:
    secret = secret_file(shared)
    path = shared / "forkd.sock"
    path.symlink_to(secret)
    daemon = make_daemon(
        {
            "listen": [f"unix:{path}"],
            "routes": [{"prefix": "/", "static": {"root": str(site(shared / "www"))}}],
        },
        start=False,
    )
    daemon.start(wait=False)
    assert daemon.wait(30) == 1
    assert "a file that is not a socket is in the way" in daemon.log()
    assert path.is_symlink()
    assert_untouched(secret)


def test_a_worker_that_cannot_open_its_log_says_why_to_the_operator(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    """Workers as nobody cannot reach logs under pytest's private (0700) tmp_path: the reason must
    reach the master's error log and `forkd -s reload`, not only the master's stderr."""
    daemon = make_daemon(
        {"workers": 1, "routes": [{"prefix": "/", "static": {"root": str(site(tmp_path / "www"))}}]}
    )
    daemon.expect_tracebacks()  # the refused workers log their boot failure with its traceback
    text = daemon.config_path.read_text() + "user: nobody\n"
    daemon.config_path.write_text(text)
    result = forkd("-c", str(daemon.config_path), "-s", "reload")
    assert result.returncode == 1
    reason = f"PermissionError: [Errno 13] Permission denied: '{daemon.dir / 'error.log'}'"
    assert f"(could not boot: {reason}) before it was ready" in result.stderr, result.stderr
    assert "see the error log" not in result.stderr
    logged = daemon.error_log.read_text()  # the file alone, not the daemon's stderr
    assert f"exited with code 3 (could not boot: {reason})" in logged
