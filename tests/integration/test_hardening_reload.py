"""Reload and stop under load: no request lost.

- HUP after HUP (each waiting for its generation's `ready` line) while 50 keep-alive connections
  send requests without pause: zero failed requests. A retiring worker answers the next request
  of each of its connections with `Connection: close`, and the client reconnects to the listener,
  which never closed. (test_daemon.py has 30 reloads under 8 threads; this is the 50-connection
  version, with more reloads.)
- TERM under the same load: every request sent on a connection a worker had accepted is answered;
  the daemon exits 0. Connections made after the stop began are refused at once (the client then
  knows its request was not sent), never queued for nobody and reset with their request sent.
- FORKD_SOAK=1 also runs the reload test against nginx (when installed) with the same client
  and prints its failures for comparison; that one asserts nothing about nginx.

CI: 100 reloads. FORKD_SOAK=1: 500 reloads.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_hardening_support import SOAK, Load, get, make_site, scaled, site_config

from tests.support.daemon import Daemon, poll

RELOADS = scaled(100, 500)
CONNECTIONS = 50


def start(tmp_path: Path, **overrides: object) -> tuple[Daemon, Path]:
    site = make_site(tmp_path / "site")
    (tmp_path / "d").mkdir()
    return Daemon(tmp_path / "d", site_config(site, **overrides)).start(), site


def test_hundred_reloads_under_50_keep_alive_connections_fail_nothing(tmp_path: Path) -> None:
    daemon, _ = start(tmp_path, workers=2)
    try:
        started = time.monotonic()
        with Load(daemon.host, daemon.port, CONNECTIONS, [get("/1k.txt"), get("/index.html")],
                  timeout=10) as load:
            poll(lambda: load.ok > 200, 10, "load running")
            for generation in range(2, RELOADS + 2):
                daemon.signal(signal.SIGHUP)
                daemon.wait_for_log(f"ready: generation {generation},", timeout=20)
            served = load.ok
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:10]}"
        assert served > RELOADS * 10
        poll(lambda: len(daemon.worker_pids()) == 2, 30, "old generations gone")
        print(f"{RELOADS} reloads in {time.monotonic() - started:.1f}s under {CONNECTIONS} "
              f"keep-alive connections: {served} requests, 0 failed")
    finally:
        daemon.stop()


def term_under_load(tmp_path: Path) -> Load:
    """50 keep-alive connections loading the daemon when it gets TERM; the load after it exited."""
    daemon, _ = start(tmp_path, workers=2, timeouts={"graceful": 10})
    try:
        with Load(daemon.host, daemon.port, CONNECTIONS, [get("/1k.txt"), get("/big.bin")],
                  timeout=10) as load:
            poll(lambda: load.ok > 500, 10, "load running")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        return load
    finally:
        daemon.stop()


def test_term_under_load_answers_every_accepted_request_and_refuses_new_ones(tmp_path: Path) -> None:
    load = term_under_load(tmp_path)
    lost = [f for f in load.failures if f not in load.fresh_failures]
    assert lost == [], f"requests lost on connections a worker had accepted: {lost[:10]}"
    # New connections: refused at once, never reset with their request sent.
    dropped = [f for f in load.fresh_failures if "refused" not in f]
    assert dropped == [], f"{len(dropped)} requests sent on new connections were dropped"
    print(f"TERM under {CONNECTIONS} connections: {load.ok} answered, 0 lost; "
          f"{len(load.fresh_failures)} connection attempts after the stop began, all refused")


NGINX_CONF = """\
worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


@pytest.mark.skipif(not SOAK or shutil.which("nginx") is None, reason="soak only, needs nginx")
def test_nginx_under_the_same_reloads_for_comparison(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site")
    with socket.socket() as probe:  # nginx cannot report a port of its own choice: racy, soak only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port, root=site / "www"))
    nginx = subprocess.Popen(["nginx", "-c", str(conf)], start_new_session=True)
    try:
        time.sleep(1)
        with Load("127.0.0.1", port, CONNECTIONS, [get("/1k.txt"), get("/index.html")]) as load:
            poll(lambda: load.ok > 200, 10, "nginx load running")
            for _ in range(RELOADS):
                subprocess.run(["nginx", "-c", str(conf), "-s", "reload"], check=True,
                               stderr=subprocess.DEVNULL)
                time.sleep(0.2)
        print(f"nginx: {RELOADS} reloads under {CONNECTIONS} keep-alive connections: {load.ok} "
              f"requests, {len(load.failures)} failed: {sorted(set(load.failures))[:5]}")
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
