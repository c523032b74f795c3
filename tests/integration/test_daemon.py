"""The master as operators meet it: start, reload, scale, stop, signals, logs, liveness.

Every test runs the real daemon (tests.support.daemon) on port 0 and talks to it over sockets.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon, poll
from tests.support.daemon import run_forkd as forkd
from tests.support.keepalive_load import KeepAliveLoad
from tests.support.tools import need_root

MakeDaemon = Callable[..., Daemon]


def site(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text(text)
    return directory


def static_config(root: Path, **extra: object) -> dict[str, object]:
    config: dict[str, object] = {"routes": [{"prefix": "/", "static": {"root": str(root)}}]}
    config.update(extra)
    return config


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie no one reaped yet is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False




def load_of(daemon: Daemon, threads: int, path: str = "/") -> KeepAliveLoad:
    """Keep-alive GETs of `path` from `threads` clients while a test reloads or recycles."""
    return KeepAliveLoad(daemon.connection, threads, path)


# -- start, serve, titles -------------------------------------------------------------------------


def test_serves_a_page_with_titled_processes(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "hello")))
    assert daemon.get("/")[::2] == (200, b"hello")
    master_title = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert master_title.startswith(f"forkd: master [gen 1] -c {daemon.config_path}".encode())
    assert len(daemon.worker_pids()) == 2
    for pid in daemon.worker_pids():
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"forkd: worker [gen 1]")
    assert Path(daemon.dir / "forkd.pid").read_text() == f"{daemon.pid}\n"


def test_listens_on_ipv6_and_unix_socket(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    sock_path = tmp_path / "forkd.sock"
    daemon = make_daemon(
        static_config(
            site(tmp_path / "www", "both"),
            listen=["[::1]:0", f"unix:{sock_path}"],
            unix_mode="0600",
        )
    )
    assert daemon.addresses[0].startswith("[::1]:")
    assert daemon.get("/")[::2] == (200, b"both")
    assert oct(sock_path.stat().st_mode & 0o777) == "0o600"
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(sock_path))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"both" in b"".join(iter(lambda: client.recv(65536), b""))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert not sock_path.exists()


def test_stale_unix_socket_is_replaced(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    sock_path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock_path))  # bound but never listening, then closed: a stale file
    daemon = make_daemon(static_config(site(tmp_path / "www", "x"), listen=[f"unix:{sock_path}"]))
    assert f"listening on unix:{sock_path}" in daemon.log()


# -- reloads --------------------------------------------------------------------------------------


def test_hup_serves_the_new_config_with_new_workers(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "old", "old")))
    old_workers = daemon.worker_pids()
    daemon.write_config(static_config(site(tmp_path / "new", "new"), workers=3))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("ready: generation 2, 3 workers")
    poll(lambda: not any(alive(pid) for pid in old_workers), 5, "old generation gone")
    assert daemon.get("/")[::2] == (200, b"new")
    assert daemon.proc is not None and daemon.proc.poll() is None
    new_workers = daemon.worker_pids()
    assert len(new_workers) == 3 and not set(new_workers) & set(old_workers)
    assert Path(f"/proc/{daemon.pid}/cmdline").read_bytes().startswith(b"forkd: master [gen 2]")


def test_hup_with_a_broken_config_keeps_serving(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "still here")))
    workers = daemon.worker_pids()
    daemon.write_config(static_config(tmp_path / "missing"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("reload rejected")
    assert f"routes[0].static.root: no such directory: {tmp_path / 'missing'}" in daemon.log()
    assert daemon.get("/")[::2] == (200, b"still here")
    assert daemon.worker_pids() == workers


def test_thirty_reloads_under_keepalive_load_fail_nothing(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "steady")))
    with load_of(daemon, threads=8) as load:
        for generation in range(2, 32):
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log(f"ready: generation {generation},")
        served = load.ok
    assert load.failures == []
    assert served > 100


def test_reload_command_reports_the_outcome(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "a", "a")))
    config = str(daemon.config_path)
    daemon.write_config(static_config(site(tmp_path / "b", "b")))
    result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 0, result.stderr
    assert "generation 2 is serving" in result.stdout
    assert daemon.log().count("ready: generation 2,") == 1  # the answer came after the commit

    daemon.write_config(
        f"pidfile: {daemon.dir / 'forkd.pid'}\nbogus: 1\n"
        "routes: [{prefix: /, static: {root: nowhere}}]\n"
    )
    result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 1
    assert "bogus: unknown key" in result.stderr and "routes[0].static.root" in result.stderr

    with socket.socket() as taken:  # a new listener that cannot be bound: rejected, not fatal
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon.write_config(
            static_config(tmp_path / "b", listen=["127.0.0.1:0", f"127.0.0.1:{port}"])
        )
        result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert daemon.get("/")[::2] == (200, b"b")


def test_concurrent_reload_commands_both_see_their_edit(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "a", "a")))
    daemon.write_config(static_config(site(tmp_path / "b", "b")))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "forkd", "-c", str(daemon.config_path), "-s", "reload"]
    clients = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outputs = [client.communicate(timeout=60)[0] for client in clients]
    assert [client.returncode for client in clients] == [0, 0, 0], outputs
    assert daemon.get("/")[::2] == (200, b"b")


def test_workers_switch_to_the_configured_user(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    need_root("workers switch to nobody")
    import pwd
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="forkd-user-"))  # outside the private (0700) tmp_path
    try:
        shared.chmod(0o755)
        www = site(shared / "www", "as nobody")
        config = static_config(
            www,
            user="nobody",
            error_log=str(shared / "error.log"),
            access_log=str(shared / "access.log"),
        )
        daemon = make_daemon(config, start=False)
        daemon.error_log = shared / "error.log"
        daemon.start()
        nobody = pwd.getpwnam("nobody").pw_uid
        assert daemon.get("/")[::2] == (200, b"as nobody")
        for pid in daemon.worker_pids():
            assert uid_of(pid) == nobody
        assert uid_of(daemon.pid) == os.geteuid()  # the master keeps its privileges
        assert (shared / "access.log").stat().st_uid == nobody
        daemon.stop()  # and check its logs while they still exist
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nUid:")[1].split()[1])  # the effective uid


def test_reload_whose_workers_cannot_boot_is_rejected(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    need_root("the new workers run as nobody")
    daemon = make_daemon(static_config(site(tmp_path / "www", "old generation")))
    workers = daemon.worker_pids()
    # As "nobody" the new workers cannot open their logs under the test's private (0700) directory.
    daemon.expect_tracebacks()  # the workers that cannot boot log why, with their traceback
    daemon.write_config(static_config(tmp_path / "www", user="nobody"))
    result = forkd("-c", str(daemon.config_path), "-s", "reload")
    assert result.returncode == 1
    assert "before it was ready" in result.stderr
    assert "reload failed" in daemon.log()
    assert daemon.get("/")[::2] == (200, b"old generation")
    assert daemon.worker_pids() == workers


def test_reload_adds_and_removes_listeners(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    sock_path = tmp_path / "extra.sock"
    daemon = make_daemon(static_config(site(tmp_path / "www", "x")))
    daemon.write_config(
        static_config(tmp_path / "www", listen=["127.0.0.1:0", f"unix:{sock_path}"])
    )
    assert forkd("-c", str(daemon.config_path), "-s", "reload").returncode == 0
    assert sock_path.exists()
    assert daemon.get("/")[0] == 200  # the kept TCP listener is the same socket, same port
    daemon.write_config(static_config(tmp_path / "www"))
    assert forkd("-c", str(daemon.config_path), "-s", "reload").returncode == 0
    poll(lambda: not sock_path.exists(), 5, "removed unix listener closed and unlinked")


# -- worker supervision ---------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_within_a_second(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x")))
    victim = daemon.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    poll(
        lambda: len(daemon.worker_pids()) == 2 and victim not in daemon.worker_pids(),
        1.0,
        "replacement worker",
    )
    assert time.monotonic() - started < 1.0
    daemon.wait_for_log("killed by SIGKILL not sent by forkd: out of memory?")
    assert f"worker {victim} (generation 1) killed by SIGKILL" in daemon.log()


def test_ttin_and_ttou_change_the_worker_count(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x"), workers=1))
    daemon.signal(signal.SIGTTIN)
    poll(lambda: len(daemon.worker_pids()) == 2, 3, "two workers after TTIN")
    daemon.signal(signal.SIGTTIN)
    poll(lambda: len(daemon.worker_pids()) == 3, 3, "three workers after TTIN")
    for count in range(4):  # never below one
        daemon.signal(signal.SIGTTOU)
        daemon.wait_for_log("received SIGTTOU", count=count + 1)
    poll(lambda: len(daemon.worker_pids()) == 1, 5, "one worker after TTOU")
    daemon.barrier()
    assert len(daemon.worker_pids()) == 1
    assert daemon.log().count("workers: 1\n") == 3  # 3 -> 2 -> 1, then twice kept at 1
    assert daemon.get("/")[0] == 200


def test_reload_resets_the_worker_count_to_the_configured_one(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x"), workers=1, log_level="debug"))
    daemon.signal(signal.SIGTTIN)
    poll(lambda: len(daemon.worker_pids()) == 2, 3, "two workers after TTIN")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("ready: generation 2, 1 workers")
    daemon.barrier()  # the passes after the commit are done: nothing more was spawned
    spawned = re.findall(r"spawned worker \d+ \(generation 2\)", daemon.log())
    assert len(spawned) == 1, "TTIN's extra worker came back after the reload"
    poll(lambda: len(daemon.worker_pids()) == 1, 5, "one worker of generation 2")


def test_crashing_workers_back_off(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = make_daemon(
        static_config(site(tmp_path / "www", "x"), access_log=str(logs / "access.log"))
    )
    daemon.expect_tracebacks()  # every worker that cannot boot logs why, with its traceback
    logs.rename(tmp_path / "logs.away")
    logs.write_text("a file where the log directory was: new workers cannot open their log")
    for pid in daemon.worker_pids():
        os.kill(pid, signal.SIGKILL)
    daemon.wait_for_log("crash(es) in a row: next worker starts in 0.4s", timeout=5)
    spawned = daemon.log().count("could not boot")
    assert spawned <= 8, "respawned in a storm"
    logs.unlink()
    (tmp_path / "logs.away").rename(logs)
    poll(lambda: len(daemon.worker_pids()) == 2, 15, "workers back after the back-off")
    assert daemon.get("/")[0] == 200
    before = cpu_seconds(daemon.pid)
    time.sleep(0.5)  # not a wait for anything: the interval over which the master's CPU is measured
    assert cpu_seconds(daemon.pid) - before < 0.1, "the master spins once the back-off is over"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_stuck_worker_is_killed_and_its_request_logged(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    """A worker whose loop stops turning (here: SIGSTOP while a request is in hand) is replaced.

    A slow script cannot do this any more (the loop never waits on it): only a stopped loop can.
    """
    cgi = tmp_path / "cgi"
    cgi.mkdir()
    script = cgi / "sleep.sh"
    script.write_text("#!/bin/sh\nsleep 4\necho 'Content-Type: text/plain'\necho\necho late\n")
    script.chmod(0o755)
    daemon = make_daemon(
        {
            "workers": 1,
            "timeouts": {"worker": 1.5},
            "routes": [
                {"prefix": "/cgi-bin/", "cgi": {"root": str(cgi), "timeout": 30}},
                {"prefix": "/", "static": {"root": str(site(tmp_path / "www", "x"))}},
            ],
        }
    )
    stuck = daemon.worker_pids()[0]
    conn = daemon.connection()
    conn.request("GET", "/cgi-bin/sleep.sh?why=test")
    poll(lambda: subprocess.run(["pgrep", "-f", str(script)], capture_output=True,
                                check=False).returncode == 0, 5, "the script running")
    os.kill(stuck, signal.SIGSTOP)
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.getresponse().read()
    daemon.wait_for_log(f"worker {stuck} (generation 1) is stuck")
    assert "'GET /cgi-bin/sleep.sh?why=test HTTP/1.1'" in daemon.log()
    poll(lambda: daemon.worker_pids() not in ([], [stuck]), 2, "stuck worker replaced")
    assert daemon.get("/")[0] == 200


def test_recycling_under_load_fails_nothing(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(
        static_config(site(tmp_path / "www", "recycled"), limits={"worker_requests": 50})
    )
    first = daemon.worker_pids()
    with load_of(daemon, threads=4) as load:
        poll(
            lambda: daemon.log().count("recycled: its replacement is ready") >= 4,
            20,
            "four recycles",
        )
    assert load.failures == []
    poll(
        lambda: not set(first) & set(daemon.worker_pids()) and len(daemon.worker_pids()) == 2,
        5,
        "recycled workers gone, two workers left",
    )


def slow_cgi_config(tmp_path: Path, **extra: object) -> dict[str, object]:
    """One worker, /cgi-bin/slow-body.sh sends a first part and then stays silent for 30 s."""
    config: dict[str, object] = {
        "workers": 1,
        "routes": [
            {"prefix": "/cgi-bin/", "cgi": {"root": str(ROOT / "tests" / "cgi")}},
            {"prefix": "/", "static": {"root": str(site(tmp_path / "www", "x"))}},
        ],
    }
    config.update(extra)
    return config


def start_slow_request(daemon: Daemon) -> socket.socket:
    """A client whose request keeps the worker busy (the CGI is silent after its first part)."""
    client = socket.create_connection((daemon.host, daemon.port), timeout=10)
    client.sendall(b"GET /cgi-bin/slow-body.sh HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while b"first part" not in received:
        chunk = client.recv(65536)
        assert chunk, f"closed before the first part: {received!r}"
        received += chunk
    return client


def test_reload_kills_an_old_worker_still_busy_after_timeouts_graceful(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(slow_cgi_config(tmp_path, timeouts={"graceful": 1}))
    [old] = daemon.worker_pids()
    with start_slow_request(daemon) as client:
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("ready: generation 2")
        daemon.wait_for_log(f"retiring worker {old} (generation 1)")
        # Without the SIGKILL the old worker would serve its silent script for 30 s more.
        daemon.wait_for_log(
            f"worker {old} (generation 1) killed by SIGKILL (still running after "
            "timeouts.graceful)", timeout=8)
        poll(lambda: not alive(old), 3, "the old worker gone")
        client.settimeout(5)
        assert b"never sent" not in b"".join(iter(lambda: client.recv(65536), b""))
    assert daemon.get("/")[0] == 200


# -- stopping -------------------------------------------------------------------------------------


def test_term_kills_workers_still_busy_after_timeouts_graceful(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(slow_cgi_config(tmp_path, timeouts={"graceful": 1}))
    [busy] = daemon.worker_pids()
    with start_slow_request(daemon):
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_log("stopping gracefully")
        # The script stays silent for 30 s: only the deadline ends the stop in time.
        began = time.monotonic()
        assert daemon.wait(10) == 0
        assert time.monotonic() - began < 3
    # At the deadline the master sends SIGKILL, and the worker gives up by itself (aborting its
    # connections, killing its scripts): whichever comes first ends it, on time either way.
    log = daemon.log()
    assert (f"worker {busy} (generation 1) killed by SIGKILL (did not stop in time)" in log
            or f"worker {busy} (generation 1) exited with code 0" in log), log
    assert not alive(busy)


def test_sigint_stops_at_once_without_waiting_for_requests(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(slow_cgi_config(tmp_path, timeouts={"graceful": 60}))
    workers = daemon.worker_pids()
    with start_slow_request(daemon) as client:
        started = time.monotonic()
        daemon.signal(signal.SIGINT)
        assert daemon.wait(15) == 0  # not the 30 s of the script, nor the 60 s graceful timeout
        assert time.monotonic() - started < 15
        client.settimeout(5)
        assert b"never sent" not in b"".join(iter(lambda: client.recv(65536), b""))
    assert "received SIGINT" in daemon.log() and "stopping now" in daemon.log()
    assert not (daemon.dir / "forkd.pid").exists()
    poll(lambda: not any(alive(pid) for pid in workers), 3, "workers gone")


def test_term_lets_a_slow_download_finish(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    www = site(tmp_path / "www", "x")
    size = 16 * 1024 * 1024
    (www / "big.bin").write_bytes(os.urandom(1024) * (size // 1024))
    # timeouts.worker is shorter than the download: a worker whose loop keeps turning is not stuck.
    daemon = make_daemon(static_config(www, timeouts={"graceful": 20, "worker": 1}))
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        received = client.recv(65536)
        daemon.signal(signal.SIGTERM)
        daemon.wait_for_log("stopping gracefully")
        time.sleep(1.3)  # the download is stalled by this slow reader while the master stops
        assert daemon.proc is not None and daemon.proc.poll() is None
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        while len(body) < size:
            chunk = client.recv(1 << 20)
            assert chunk, f"connection closed after {len(body)} of {size} bytes"
            body += chunk
        assert len(body) == size
    assert daemon.wait(10) == 0
    assert not (daemon.dir / "forkd.pid").exists()
    assert "stuck" not in daemon.log()


def test_fast_stop_and_stop_command(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x")))
    result = forkd("-c", str(daemon.config_path), "-s", "stop")
    assert result.returncode == 0, result.stderr
    assert daemon.wait(5) == 0
    quick = make_daemon(static_config(tmp_path / "www"))
    quick.signal(signal.SIGQUIT)
    assert quick.wait(5) == 0
    assert "stopping now" in quick.log()


def test_killing_the_master_takes_the_workers_along(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x")))
    workers = daemon.worker_pids()
    daemon.signal(signal.SIGKILL)
    daemon.wait(5)
    poll(lambda: not any(alive(pid) for pid in workers), 3, "workers gone with their master")


# -- logs -----------------------------------------------------------------------------------------


def test_usr1_reopens_the_access_log(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x")))
    assert daemon.get("/before")[0] == 404
    poll(lambda: "/before" in daemon.access_log.read_text(), 3, "first request logged")
    daemon.access_log.rename(daemon.dir / "access.log.1")
    result = forkd("-c", str(daemon.config_path), "-s", "reopen")
    assert result.returncode == 0, result.stderr
    daemon.wait_for_log("log files reopened")

    def logged_after() -> bool:
        daemon.get("/after")  # a worker may see USR1 a moment after the master
        return daemon.access_log.exists() and "/after" in daemon.access_log.read_text()

    poll(logged_after, 5, "request logged in a new access.log")
    assert "/after" not in (daemon.dir / "access.log.1").read_text()


def test_json_access_log(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "hello"), log_format="json"))
    assert daemon.get("/?q=1", headers={"User-Agent": "probe/1", "Referer": "http://r/"})[0] == 200
    assert daemon.get("/missing")[0] == 404
    assert daemon.raw(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")

    def lines() -> list[str]:
        return daemon.access_log.read_text().splitlines() if daemon.access_log.exists() else []

    poll(lambda: len(lines()) == 3, 5, "three access log lines")
    entries = {entry["status"]: entry for entry in map(json.loads, lines())}
    ok, missing, bad = entries[200], entries[404], entries[400]
    assert ok["method"] == "GET" and ok["target"] == "/?q=1"
    assert ok["request"] == "GET /?q=1 HTTP/1.1"
    assert ok["status"] == 200 and ok["bytes"] == len("hello")  # the body, as in combined
    assert ok["user_agent"] == "probe/1" and ok["referer"] == "http://r/"
    assert ok["remote"] == "127.0.0.1"
    assert ok["pid"] in daemon.worker_pids()
    assert isinstance(ok["duration_ms"], (int, float)) and ok["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ok["time"])
    assert (missing["status"], missing["target"]) == (404, "/missing")
    assert missing["user_agent"] is None and missing["referer"] is None  # absent, not "-"
    assert bad["status"] == 400 and bad["method"] is None


# -- the command line -----------------------------------------------------------------------------


def test_check_command(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "x")))
    good = forkd(
        "-c", str(daemon.config_path), "--check"
    )  # beside the running server: binds nothing
    assert good.returncode == 0
    assert good.stdout == f"forkd: configuration {daemon.config_path} is ok\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: many\nroutes:\n  - prefix: /\n    static: {root: /no/such/dir}\n")
    result = forkd("-t", "-c", str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}:1:10: workers: expected an integer >= 1 or \"auto\", got 'many'",
        f"{bad}:4:20: routes[0].static.root: no such directory: /no/such/dir",
    ]
    assert result.stdout == ""
    bad.write_text("routes:\n  - prefix: /\n   static: {}\n")
    result = forkd("-t", "-c", str(bad))
    assert result.returncode == 1 and f"{bad}:3:4: YAML syntax error: " in result.stderr
    assert forkd("--version").stdout.startswith("forkd ")


def test_signal_command_without_a_running_master(tmp_path: Path) -> None:
    config = tmp_path / "forkd.yaml"
    site(tmp_path / "www", "x")
    config.write_text("pidfile: forkd.pid\nroutes: [{prefix: /, static: {root: www}}]\n")
    result = forkd("-c", str(config), "-s", "reload")
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_startup_failure_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "forkd.yaml"
        site(tmp_path / "www", "x")
        config.write_text(
            f"listen: ['127.0.0.1:{port}']\nroutes: [{{prefix: /, static: {{root: www}}}}]\n"
        )
        result = forkd("-c", str(config), timeout=15)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"forkd: not started: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_exit_1_when_the_first_workers_cannot_boot(tmp_path: Path) -> None:
    site(tmp_path / "www", "x")
    # A dangling link into a missing directory: the config is valid, but no worker can open it.
    log = tmp_path / "access.log"
    log.symlink_to(tmp_path / "gone" / "access.log")
    config = tmp_path / "forkd.yaml"
    config.write_text(
        f"listen: ['127.0.0.1:0']\nworkers: 2\naccess_log: '{log}'\n"
        "routes: [{prefix: /, static: {root: www}}]\n"
    )
    assert forkd("-c", str(config), "--check").returncode == 0
    result = forkd("-c", str(config), timeout=40)
    assert result.returncode == 1, result.stderr
    assert "cannot start: workers could not start" in result.stderr
    assert "could not boot" in result.stderr
    assert "ready: generation 1" not in result.stderr


def test_a_second_master_on_the_same_pidfile_refuses_to_start(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(static_config(site(tmp_path / "www", "first")))
    result = forkd("-c", str(daemon.config_path), timeout=15)
    assert result.returncode == 1
    assert f"already running as pid {daemon.pid}" in daemon.log()
    assert (daemon.dir / "forkd.pid").read_text() == f"{daemon.pid}\n"
    assert daemon.get("/")[::2] == (200, b"first")
    assert forkd("-c", str(daemon.config_path), "-s", "reload").returncode == 0  # status file kept
