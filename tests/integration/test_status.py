"""The live scoreboard against the real daemon: counters that add up across reloads and kills,
the status route's formats, `forkd -s status`, health and draining (`-s drain`, timeouts.drain)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import ROOT, Daemon, poll

SCRIPTS = str(ROOT / "tests" / "cgi")


def site(make_daemon, tmp_path: Path, workers: int = 2, **extra: object) -> Daemon:
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_bytes(b"x" * 1024)
    return make_daemon({
        "workers": workers,
        "routes": [
            {"prefix": "/server-status", "status": {}},
            {"prefix": "/healthz", "health": {}},
            {"prefix": "/cgi/", "cgi": {"root": SCRIPTS}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
        **extra,
    })


def forkd(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkd", "-c", str(daemon.config_path), *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def status(daemon: Daemon) -> dict:
    code, _, body = daemon.get("/server-status?format=json")
    assert code == 200
    return json.loads(body)


def hammer(daemon: Daemon, requests: int, connections: int = 4) -> None:
    """`requests` GETs over `connections` keep-alive connections opened at once (several workers)."""
    conns = [daemon.connection() for _ in range(connections)]
    for conn in conns:
        conn.connect()
    for i in range(requests):
        conn = conns[i % connections]
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and len(response.read()) == 1024
    for conn in conns:
        conn.close()


def test_counters_add_up_across_reloads_a_rejected_reload_and_a_sigkill(make_daemon,
                                                                        tmp_path) -> None:
    daemon = site(make_daemon, tmp_path)
    served = 0
    seen = 0
    for round_ in range(3):
        hammer(daemon, 50)
        served += 50
        result = forkd(daemon, "-s", "reload")
        assert result.returncode == 0, result.stderr
        counters = status(daemon)["counters"]
        served += 1  # that status request is counted once its response is finished
        assert counters["requests"] >= seen  # never backwards
        assert counters["requests"] == served - 1, (round_, counters)
        seen = counters["requests"]
    assert status(daemon)["generation"] == 4
    served += 1

    # A rejected reload: the counter says so and nothing else changes.
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "nonsense: 1\n")
    assert forkd(daemon, "-s", "reload").returncode == 1
    daemon.config_path.write_text(good)

    # A worker killed in the middle of a request: the status page lists it busy with that
    # request, and the request is the only one the counters miss.
    marker = tmp_path / "script.pid"
    hung = threading.Thread(target=lambda: daemon.raw(
        f"GET /cgi/slow-header.sh?{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=20))
    hung.start()
    poll(marker.exists, 10, "the slow script started")
    busy = [w for w in status(daemon)["workers"] if w["request"].startswith("GET /cgi/slow")]
    served += 1
    assert len(busy) == 1 and busy[0]["state"] == "busy" and busy[0]["age"] >= 0
    os.kill(busy[0]["pid"], signal.SIGKILL)
    daemon.wait_for_log(f"worker {busy[0]['pid']} (generation 4) killed by SIGKILL")
    hung.join(20)
    hammer(daemon, 30)
    served += 30
    poll(lambda: len(daemon.worker_pids()) == 2, 10, "the killed worker replaced")

    data = status(daemon)
    counters = data["counters"]
    assert counters["requests"] == served, (counters, served)
    assert counters["requests_by_class"]["2xx"] == served
    assert counters["response_bytes"] >= 1024 * (served - 10)
    assert counters["worker_restarts"] == 1
    assert counters["reloads"] == {"ok": 3, "rejected": 1}
    assert sum(counters["request_duration_buckets"].values()) >= served
    assert counters["request_duration_buckets"]["+Inf"] == served
    # Every response of the access log is counted, and nothing else (the last status request is
    # logged once it is finished, after its snapshot).
    poll(lambda: len(daemon.access_log.read_text().splitlines()) == served + 1, 5,
         "the access log holds every request")
    # The workers listed are the live ones (a retired one leaves the list once it is reaped).
    poll(lambda: {w["pid"] for w in status(daemon)["workers"]} == set(daemon.worker_pids()), 5,
         "the status page lists the running workers")


def test_status_formats_and_the_terminal_view(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path)
    hammer(daemon, 10)
    code, headers, body = daemon.get("/server-status?format=prometheus")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert headers["cache-control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"forkd_requests", "forkd_response_bytes", "forkd_request_duration_seconds",
            "forkd_workers", "forkd_connections", "forkd_cgi_processes",
            "forkd_worker_restarts", "forkd_reloads", "forkd_tls_handshakes"} <= names
    code, headers, body = daemon.get("/server-status?auto")
    auto = dict(line.split(": ", 1) for line in body.decode().splitlines())
    assert code == 200 and int(auto["Total Accesses"]) >= 11
    assert int(auto["BusyWorkers"]) + int(auto["IdleWorkers"]) == 2
    assert len(auto["Scoreboard"]) == 2
    code, headers, body = daemon.get("/server-status")
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert b"GET /server-status HTTP/1.1" in body  # the request it is serving
    assert daemon.get("/server-status", method="HEAD")[2] == b""
    assert daemon.get("/server-status", method="POST", body=b"x")[0] == 405

    result = forkd(daemon, "-s", "status")
    assert result.returncode == 0, result.stderr
    for pid in daemon.worker_pids():
        assert str(pid) in result.stdout
    assert f"forkd master {daemon.pid}: generation 1" in result.stdout


def test_drain_and_undrain_are_idempotent_and_outlive_a_reload(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path)
    assert daemon.get("/healthz")[:3:2] == (200, b"ok\n")
    for _ in range(2):
        result = forkd(daemon, "-s", "drain")
        assert result.returncode == 0 and "draining" in result.stdout
        code, headers, body = daemon.get("/healthz")
        assert (code, body, headers["cache-control"]) == (503, b"draining\n", "no-store")
        assert daemon.get("/")[0] == 200  # everything else is served as usual
    assert forkd(daemon, "-s", "reload").returncode == 0
    assert daemon.get("/healthz")[0] == 503
    assert status(daemon)["draining"] is True
    for _ in range(2):
        assert forkd(daemon, "-s", "undrain").returncode == 0
        assert daemon.get("/healthz")[0] == 200
    assert daemon.log().count(": draining (on request)") == 1  # the second drain changed nothing


def test_term_drains_for_timeouts_drain_before_the_listeners_close(make_daemon,
                                                                   tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, timeouts={"drain": 2})
    keep = daemon.connection()
    keep.request("GET", "/healthz")
    assert keep.getresponse().read() == b"ok\n"
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    daemon.wait_for_log("draining (graceful stop on SIGTERM")
    keep.request("GET", "/healthz")
    assert keep.getresponse().status == 503  # at once, on a kept-alive connection too
    assert daemon.get("/")[0] == 200  # new connections are still accepted and served
    assert daemon.wait(15) == 0
    assert time.monotonic() - started >= 1.9
    assert "exiting with code 0: graceful stop on SIGTERM" in daemon.log()
    keep.close()


def test_a_fast_stop_does_not_wait_for_the_drain(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, timeouts={"drain": 30})
    daemon.signal(signal.SIGTERM)
    daemon.wait_for_log("draining (graceful stop")
    daemon.signal(signal.SIGINT)
    assert daemon.wait(10) == 0


def test_status_needs_a_running_master(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    (tmp_path / "w").mkdir()
    config.write_text(f"pidfile: {tmp_path}/f.pid\nroutes: [{{prefix: /, static: {{root: w}}}}]\n")
    result = subprocess.run([sys.executable, "-m", "forkd", "-c", str(config), "-s", "status"],
                            capture_output=True, text=True, check=False,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 1 and "not running" in result.stderr


def test_keep_alive_connection_gauges(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, workers=1)
    conns = [daemon.connection() for _ in range(5)]
    for conn in conns:
        conn.request("GET", "/")
        conn.getresponse().read()
    watcher = daemon.connection()  # one kept-alive connection asks: it counts itself, idle

    def idle_count() -> int:
        watcher.request("GET", "/server-status?format=json")
        return json.loads(watcher.getresponse().read())["counters"]["connections_by_state"]["idle"]

    poll(lambda: idle_count() == 6, 5, "five idle kept-alive connections and the watcher")
    for conn in conns:
        conn.close()
    poll(lambda: idle_count() == 1, 5, "closed connections no longer counted")
    watcher.close()



def test_requests_waiting_in_a_line_are_a_gauge(make_daemon, tmp_path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    daemon = make_daemon({"workers": 1, "routes": [
        {"prefix": "/server-status", "status": {}},
        {"prefix": "/cgi/", "cgi": {"root": SCRIPTS, "max_processes": 1, "timeout": 10}},
        {"prefix": "/", "static": {"root": str(www)}},
    ]})
    clients = []
    for _ in range(3):  # one script runs (silent for 30 s), two requests wait for its slot
        sock = socket.create_connection((daemon.host, daemon.port))
        sock.sendall(b"GET /cgi/slow-header.sh HTTP/1.1\r\nHost: t\r\n\r\n")
        clients.append(sock)
    poll(lambda: status(daemon)["counters"]["requests_waiting"] == 2, 5, "two requests waiting")
    assert status(daemon)["counters"]["cgi_processes"] == 1
    _, _, body = daemon.get("/server-status?format=prometheus")
    gauges = {sample.name: sample.value for family in text_string_to_metric_families(body.decode())
              for sample in family.samples}
    assert gauges["forkd_requests_waiting"] == 2
    for sock in clients:
        sock.close()
    poll(lambda: status(daemon)["counters"]["requests_waiting"] == 0, 5, "the line empty")
