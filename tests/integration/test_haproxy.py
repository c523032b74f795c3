"""A real load balancer in front of two forkd instances: HAProxy sends PROXY v2 (health checks
too), checks /healthz, and a rolling restart (drain, stop, start, undrain, one instance at a time)
under steady load fails no request; the access logs name the real client, not HAProxy.

HAProxy listens on a socket the test binds (port 0) and passes it (`bind fd@N`), so no port is guessed.
The clients connect from 127.0.0.2, HAProxy from 127.0.0.1 (the only trusted proxy): an access
log line with 127.0.0.2 can only come from the PROXY header.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.daemon import ROOT, Daemon, poll
from tests.support.tools import need_tool

CLIENT_ADDRESS = "127.0.0.2"

HAPROXY_CONFIG = """\
global
    stats socket {admin} level admin
defaults
    mode http
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout
frontend web
    bind fd@{fd}
    default_backend forkd
backend forkd
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 100ms fall 2 rise 2 send-proxy-v2 check-send-proxy
{servers}
"""


def forkd_config(tmp: Path, name: str, port: int = 0) -> dict[str, object]:
    www = tmp / f"www-{name}"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text(name)
    return {
        "listen": [{"address": f"127.0.0.1:{port}", "proxy_protocol": True}],
        "trusted_proxies": ["127.0.0.1/32"],
        "timeouts": {"graceful": 10},
        "routes": [
            {"prefix": "/healthz", "health": {}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
    }


def forkd(daemon: Daemon, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "forkd", "-c", str(daemon.config_path), *args],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr


class HAProxy:
    def __init__(self, tmp: Path, servers: dict[str, int]) -> None:
        self.admin = tmp / "haproxy.sock"
        lines = "\n".join(f"    server {name} 127.0.0.1:{port} check"
                          for name, port in servers.items())
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        fd = self.listener.fileno()
        config = tmp / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(admin=self.admin, servers=lines, fd=fd))
        with open(tmp / "haproxy.log", "wb") as log:
            self.proc = subprocess.Popen([need_tool("haproxy"), "-db", "-f", str(config)],
                                         pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=log)
        poll(self.admin.exists, 10, "HAProxy started")

    def state(self, server: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.admin))
            sock.sendall(b"show stat\n")
            data = b"".join(iter(lambda: sock.recv(65536), b""))
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("svname") == server:
                return row["status"]
        return "?"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.listener.close()


class Load:
    """Clients through HAProxy, from 127.0.0.2, keep-alive, counting every failure."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        conn = self.connect()
        while not self.stopping.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200 and body in (b"a", b"b"):
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status} {body[:80]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = self.connect()
            time.sleep(0.002)  # the clients' own pace: steady load, not a flood
        conn.close()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=20,
                                          source_address=(CLIENT_ADDRESS, 0))

    def finish(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)


def test_rolling_restart_behind_haproxy_fails_no_request(make_daemon, tmp_path) -> None:
    need_tool("haproxy")
    daemons = {name: make_daemon(forkd_config(tmp_path, name)) for name in ("a", "b")}
    every = list(daemons.values())  # the restarted instances too: all their access logs
    ports = {name: d.port for name, d in daemons.items()}
    haproxy = HAProxy(tmp_path, ports)
    load = None
    try:
        for name in ports:
            poll(lambda n=name: haproxy.state(n) == "UP", 10, f"server {name} UP")
        load = Load(haproxy.port)
        poll(lambda: load.ok > 50, 20, "load flowing")
        for name, daemon in list(daemons.items()):
            forkd(daemon, "-s", "drain")
            poll(lambda n=name: haproxy.state(n).startswith("DOWN"), 10, f"{name} out of rotation")
            served = load.ok
            poll(lambda s=served: load.ok > s + 20, 20, "the other instance serving alone")
            forkd(daemon, "-s", "stop")
            # A new master on the same port, as a deploy would start it.
            again = make_daemon(forkd_config(tmp_path, name, ports[name]))
            forkd(again, "-s", "undrain")  # a fresh master is not draining: a no-op, exit 0
            poll(lambda n=name: haproxy.state(n) == "UP", 10, f"{name} back in rotation")
            daemons[name] = again
            every.append(again)
        served = load.ok
        poll(lambda: load.ok > served + 100, 20, "load after the restarts")
    finally:
        if load is not None:
            load.finish()
        haproxy.stop()
    assert load is not None and load.failures == [], load.failures[:10]
    print(f"{load.ok} requests through HAProxy, 0 failed, over a rolling restart of 2 instances")
    # The access logs name the real client (from the PROXY v2 header), never HAProxy; HAProxy's
    # own health checks (PROXY v2 LOCAL) are the only lines from 127.0.0.1.
    for daemon in every:
        lines = daemon.access_log.read_text().splitlines()
        pages = {line.split(" ", 1)[0] for line in lines if '"GET / HTTP/1.1"' in line}
        checks = {line.split(" ", 1)[0] for line in lines if "/healthz" in line}
        assert pages == {CLIENT_ADDRESS} and checks == {"127.0.0.1"}, (pages, checks)
