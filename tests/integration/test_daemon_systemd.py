"""forkd under systemd: socket activation, sd_notify, and the unit files."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon, poll
from tests.support.tools import need_tool

MakeDaemon = Callable[..., Daemon]


def write_site(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("activated")
    cgi = tmp_path / "cgi"
    cgi.mkdir()
    script = cgi / "fds.sh"
    script.write_text(
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n"
        'echo "LISTEN_FDS=${LISTEN_FDS:-unset} NOTIFY_SOCKET=${NOTIFY_SOCKET:-unset}"\n'
        "ls /proc/$$/fd\n"
    )
    script.chmod(0o755)
    config = tmp_path / "forkd.yaml"
    config.write_text(
        "listen: ['127.0.0.1:1']\nworkers: 2\npidfile: forkd.pid\n"
        f"error_log: {tmp_path}/error.log\n"
        "access_log: null\nroutes:\n"
        f"  - {{prefix: /cgi-bin/, cgi: {{root: {cgi}}}}}\n"
        f"  - {{prefix: /, static: {{root: {tmp_path / 'www'}}}}}\n"
    )
    return config


def test_socket_activation(tmp_path: Path) -> None:
    need_tool("systemd-socket-activate")
    config = write_site(tmp_path)
    log = tmp_path / "error.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = None
    try:
        # systemd-socket-activate cannot bind port 0: pick ports until one is free.
        activate_log = tmp_path / "activate.log"
        for _ in range(20):
            port = random.randint(20000, 60000)
            with open(activate_log, "w") as activate_err:  # the child keeps its own copy
                proc = subprocess.Popen(
                    ["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                     sys.executable, "-m", "forkd", "-c", str(config)],
                    env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                    stderr=activate_err,
                )
            poll(lambda p=proc: p.poll() is not None or "Listening on" in activate_log.read_text(),
                 10, "systemd-socket-activate listening")
            if proc.poll() is None:
                break
        assert proc is not None and proc.poll() is None, activate_log.read_text()
        # It runs forkd only when the first connection arrives; forkd then answers that one.
        url = f"http://127.0.0.1:{port}"
        assert urllib.request.urlopen(url + "/", timeout=15).read() == b"activated"
        text = log.read_text()
        assert "socket activation: 1 listener(s) from systemd" in text
        assert f"listening on 127.0.0.1:{port}" in text  # the configured 127.0.0.1:1 is ignored

        environment = urllib.request.urlopen(url + "/cgi-bin/fds.sh", timeout=5).read().decode()
        assert environment.startswith("LISTEN_FDS=unset NOTIFY_SOCKET=unset")
        assert "3" not in environment.split()[2:]  # fd 3, the activated socket, is not inherited

        # A reload keeps the inherited socket and serves the new config through it.
        (tmp_path / "www2").mkdir()
        (tmp_path / "www2" / "index.html").write_text("reloaded")
        config.write_text(config.read_text().replace(str(tmp_path / "www"), str(tmp_path / "www2")))
        os.kill(proc.pid, signal.SIGHUP)
        poll(lambda: "ready: generation 2" in log.read_text() or "reload failed" in log.read_text()
             or "reload rejected" in log.read_text(), 15, "the reload's outcome")
        assert "ready: generation 2" in log.read_text(), log.read_text()
        # An old worker may still take a connection until its TERM arrives: poll, briefly.
        poll(lambda: urllib.request.urlopen(url + "/", timeout=5).read() == b"reloaded", 5,
             "generation 2 serves through the activated socket")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_sd_notify_messages_arrive_in_order(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    name = f"@forkd-test-{os.getpid()}-{random.randrange(1 << 30)}"  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name[1:])
        receiver.settimeout(10)
        (tmp_path / "www").mkdir()
        daemon = make_daemon(
            {"routes": [{"prefix": "/", "static": {"root": str(tmp_path / "www")}}]},
            start=False,
            env=dict(os.environ, NOTIFY_SOCKET=name, WATCHDOG_USEC="400000"),
        )
        daemon.start()
        time.sleep(0.5)  # long enough for two watchdog periods
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("ready: generation 2")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        messages = []
        receiver.settimeout(0.5)
        try:
            while True:
                messages.append(receiver.recv(4096).decode())
        except TimeoutError:
            pass
    kinds = [
        line
        for message in messages
        for line in message.split("\n")
        if line in ("READY=1", "RELOADING=1", "STOPPING=1")
    ]
    assert kinds == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], messages
    first_ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=generation 1, 2 workers" in first_ready
    assert messages.count("WATCHDOG=1") >= 2  # every 0.2 s from the master's loop
    reloading = next(m for m in messages if "RELOADING=1" in m)
    usec = int(re.search(r"MONOTONIC_USEC=(\d+)", reloading).group(1))  # type: ignore[union-attr]
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < now - usec < 30_000_000
    assert any("STATUS=generation 2, 2 workers" in m for m in messages)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    need_tool("systemd-analyze")
    units = [ROOT / "systemd" / "forkd.socket", ROOT / "systemd" / "forkd.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], check=False, capture_output=True,
        text=True, timeout=60,
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/usr/local/bin/forkd is not executable" not in line
    ]
    if result.returncode != 0 and any(
        "Failed to" in line and "manager" in line for line in complaints
    ):
        pytest.skip(f"systemd-analyze cannot run here: {complaints}")
    assert complaints == []
    service = units[1].read_text()
    for setting in (
        "Type=notify",
        "KillMode=mixed",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ExecReload=/usr/local/bin/forkd -c /etc/forkd/site.yaml -s reload",
    ):
        assert setting in service
    assert "MemoryDenyWriteExecute" not in service.replace("MemoryDenyWriteExecute is", "")
    stop = int(re.search(r"TimeoutStopSec=(\d+)", service).group(1))  # type: ignore[union-attr]
    assert stop > 30  # above the default timeouts.graceful
