"""A scoreboard Snapshot as people and programs read it: HTML, JSON, Prometheus, mod_status, text.

Pure functions of a forkd.scoreboard.Snapshot; the `status` route (forkd.handlers.status) and
`forkd -s status` (forkd.cli) call them. The names are part of the contract (CONTRACT.md,
"Observability"): dashboards rely on them.

- Prometheus: text exposition format 0.0.4. Counters end in `_total`; the duration histogram has
  cumulative `_bucket{le=...}` series ending with `le="+Inf"`, then `_sum` and `_count`.
- `?auto`: the keys of Apache mod_status's machine-readable page (`Total Accesses`, `Total kBytes`,
  `Uptime`, `ReqPerSec`, `BytesPerSec`, `BusyWorkers`, `IdleWorkers`, `Scoreboard`). Scoreboard
  letters: `_` idle, `W` busy, `S` starting, `G` retiring (gracefully finishing), `.` free.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from forkd.scoreboard import BOUNDS, CONNECTION_STATES, G_CGI, G_WAITING, Snapshot

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LETTERS = {"idle": "_", "busy": "W", "starting": "S", "retiring": "G"}


def counters(snapshot: Snapshot) -> dict[str, Any]:
    """The server-wide counters and gauges as a flat mapping (the JSON `counters`)."""
    buckets = snapshot.buckets
    ok, failed = snapshot.tls_handshakes
    return {
        "requests": snapshot.requests,
        "requests_by_class": snapshot.by_class,
        "response_bytes": snapshot.response_bytes,
        "request_duration_seconds_sum": round(snapshot.duration_sum, 6),
        "request_duration_buckets": {  # cumulative, as in Prometheus
            _le(i): sum(buckets[: i + 1]) for i in range(len(buckets))
        },
        "tls_handshakes": {"ok": ok, "failed": failed},
        "worker_restarts": snapshot.restarts,
        "reloads": {"ok": snapshot.reloads_ok, "rejected": snapshot.reloads_rejected},
        "workers": {"busy": snapshot.busy, "idle": snapshot.idle},
        "connections": sum(snapshot.gauges[: len(CONNECTION_STATES)]),
        "connections_by_state": {
            name: snapshot.gauges[i] for i, name in enumerate(CONNECTION_STATES)
        },
        "cgi_processes": snapshot.gauges[G_CGI],
        "requests_waiting": snapshot.gauges[G_WAITING],
    }


def render_json(snapshot: Snapshot) -> str:
    data = {
        "generation": snapshot.generation,
        "uptime": round(snapshot.uptime, 3),
        "draining": snapshot.draining,
        "master_pid": snapshot.master_pid,
        "last_reload": snapshot.last_reload,
        "workers": [
            {"pid": w.pid, "generation": w.generation, "state": w.state, "request": w.request,
             "age": round(w.age, 3), "uptime": round(w.uptime, 3), "requests": w.requests,
             "bytes": w.bytes, "connections": w.connections}
            for w in snapshot.workers
        ],
        "counters": counters(snapshot),
    }
    return json.dumps(data, indent=1) + "\n"


def render_prometheus(snapshot: Snapshot) -> str:
    out: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, float | int]]) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{series} {_number(value)}" for series, value in samples)

    family("forkd_requests_total", "counter", "Responses finished, by status class.",
           [(f'forkd_requests_total{{class="{name}"}}', count)
            for name, count in snapshot.by_class.items()])
    family("forkd_response_bytes_total", "counter", "Response body bytes sent.",
           [("forkd_response_bytes_total", snapshot.response_bytes)])
    buckets = []
    running = 0
    for i, count in enumerate(snapshot.buckets):
        running += count
        buckets.append((f'forkd_request_duration_seconds_bucket{{le="{_le(i)}"}}', running))
    family("forkd_request_duration_seconds", "histogram",
           "Time from a complete request head to the end of its response.",
           [*buckets, ("forkd_request_duration_seconds_sum", round(snapshot.duration_sum, 6)),
            ("forkd_request_duration_seconds_count", running)])
    family("forkd_workers", "gauge", "Workers serving a request (busy) or waiting (idle).",
           [('forkd_workers{state="busy"}', snapshot.busy),
            ('forkd_workers{state="idle"}', snapshot.idle)])
    family("forkd_connections", "gauge", "Open client connections, by state.",
           [(f'forkd_connections{{state="{name}"}}', snapshot.gauges[i])
            for i, name in enumerate(CONNECTION_STATES)])
    family("forkd_cgi_processes", "gauge", "CGI scripts running.",
           [("forkd_cgi_processes", snapshot.gauges[G_CGI])])
    family("forkd_requests_waiting", "gauge",
           "Requests waiting for a CGI script slot or a kept php-fpm connection.",
           [("forkd_requests_waiting", snapshot.gauges[G_WAITING])])
    family("forkd_worker_restarts_total", "counter", "Workers replaced after an unplanned exit.",
           [("forkd_worker_restarts_total", snapshot.restarts)])
    family("forkd_reloads_total", "counter", "Reloads, by outcome.",
           [('forkd_reloads_total{outcome="ok"}', snapshot.reloads_ok),
            ('forkd_reloads_total{outcome="rejected"}', snapshot.reloads_rejected)])
    family("forkd_tls_handshakes_total", "counter", "TLS handshakes, by result.",
           [('forkd_tls_handshakes_total{result="ok"}', snapshot.tls_handshakes[0]),
            ('forkd_tls_handshakes_total{result="failed"}', snapshot.tls_handshakes[1])])
    family("forkd_generation", "gauge", "The serving generation (1 + successful reloads).",
           [("forkd_generation", snapshot.generation)])
    family("forkd_uptime_seconds", "gauge", "Seconds since the master started.",
           [("forkd_uptime_seconds", round(snapshot.uptime, 3))])
    family("forkd_draining", "gauge", "1 while health routes answer 503.",
           [("forkd_draining", int(snapshot.draining))])
    return "\n".join(out) + "\n"


def render_auto(snapshot: Snapshot) -> str:
    """Apache mod_status `?auto`."""
    uptime = max(int(snapshot.uptime), 1)
    total_bytes = snapshot.response_bytes
    board = "".join(LETTERS.get(w.state, ".") for w in snapshot.workers)
    lines = [
        "ServerVersion: forkd",
        f"ServerUptimeSeconds: {uptime}",
        f"Uptime: {uptime}",
        f"Total Accesses: {snapshot.requests}",
        f"Total kBytes: {total_bytes // 1024}",
        f"ReqPerSec: {snapshot.requests / uptime:.6g}",
        f"BytesPerSec: {total_bytes / uptime:.6g}",
        f"BusyWorkers: {snapshot.busy}",
        f"IdleWorkers: {snapshot.idle}",
        f"ConnsTotal: {sum(snapshot.gauges[: len(CONNECTION_STATES)])}",
        f"Scoreboard: {board}",
    ]
    return "\n".join(lines) + "\n"


def render_text(snapshot: Snapshot) -> str:
    """The terminal view of `forkd -s status`."""
    c = counters(snapshot)
    draining = ", DRAINING" if snapshot.draining else ""
    lines = [
        f"forkd master {snapshot.master_pid}: generation {snapshot.generation}, "
        + f"up {_duration(snapshot.uptime)}{draining}",
        f"workers: {snapshot.busy} busy, {snapshot.idle} idle ({snapshot.workers_wanted} wanted); "
        + f"restarts {snapshot.restarts}; reloads {snapshot.reloads_ok} ok, "
        + f"{snapshot.reloads_rejected} rejected",
    ]
    if snapshot.last_reload:
        lines.append(f"last reload ({_clock(snapshot.last_reload_wall)}): "
                     f"{snapshot.last_reload.splitlines()[0]}")
    classes = " ".join(f"{k} {v}" for k, v in c["requests_by_class"].items())
    lines.append(f"requests: {c['requests']} ({classes}); {c['response_bytes']} bytes; "
                 f"connections {c['connections']}; cgi {c['cgi_processes']}; "
                 f"waiting {c['requests_waiting']}")
    lines.append("")
    lines.append(f"{'PID':>8} {'GEN':>4} {'STATE':<9} {'UP':>8} {'REQS':>8} {'FOR':>8}  REQUEST")
    for w in snapshot.workers:
        age = f"{w.age:.1f}s" if w.request else ""
        lines.append(f"{w.pid:>8} {w.generation:>4} {w.state:<9} {_duration(w.uptime):>8} "
                     f"{w.requests:>8} {age:>8}  {_printable(w.request)}")
    return "\n".join(lines) + "\n"


def render_html(snapshot: Snapshot) -> str:
    c = counters(snapshot)
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{w.pid}</td><td>{w.generation}</td><td>{w.state}</td>"
        f"<td>{_duration(w.uptime)}</td><td>{w.requests}</td><td>{w.connections}</td>"
        f"<td>{f'{w.age:.3f}s' if w.request else ''}</td><td><code>{esc(w.request)}</code></td></tr>"
        for w in snapshot.workers
    )
    classes = ", ".join(f"{k}: {v}" for k, v in c["requests_by_class"].items())
    states = ", ".join(f"{k}: {v}" for k, v in c["connections_by_state"].items())
    reload = (f"<p>Last reload ({_clock(snapshot.last_reload_wall)}): "
              f"<code>{esc(snapshot.last_reload)}</code></p>" if snapshot.last_reload else "")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>forkd status</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:left}}</style></head>
<body><h1>forkd status</h1>
<p>Master {snapshot.master_pid}, generation {snapshot.generation}, up {_duration(snapshot.uptime)}
(since {_clock(snapshot.started_wall)}){'; <strong>draining</strong>' if snapshot.draining else ''}.</p>
<p>Workers: {snapshot.busy} busy, {snapshot.idle} idle, {snapshot.workers_wanted} wanted;
restarts: {snapshot.restarts}. Reloads: {snapshot.reloads_ok} ok, {snapshot.reloads_rejected} rejected.</p>
{reload}
<p>Requests: {c["requests"]} ({classes}); response bytes: {c["response_bytes"]};
TLS handshakes: {c["tls_handshakes"]["ok"]} ok, {c["tls_handshakes"]["failed"]} failed.</p>
<p>Connections: {c["connections"]} ({states}); CGI scripts running: {c["cgi_processes"]};
requests waiting in a route's line: {c["requests_waiting"]}.</p>
<table><tr><th>pid</th><th>generation</th><th>state</th><th>up</th><th>requests</th>
<th>connections</th><th>for</th><th>request</th></tr>
{rows}
</table></body></html>
"""


def _le(i: int) -> str:
    return "+Inf" if i == len(BOUNDS) else repr(BOUNDS[i])


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    text = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {text}" if days else text


def _clock(wall: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def _printable(text: str) -> str:
    """A request line on a terminal: control characters shown as escapes, never interpreted."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
