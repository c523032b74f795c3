"""Turning the raw results into results/<stem>.json, <stem>.md (tables) and <stem>.png (chart)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REFERENCES = ("nginx", "lighttpd")  # the ratio column compares with the first one measured


def write_all(results: dict[str, Any], out: Path, stem: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    paths["md"].write_text(markdown(results, paths["png"].name))
    try:
        chart(results, paths["png"])
    except ImportError:
        paths["md"].write_text(markdown(results, None))
        del paths["png"]
    return paths


# -- markdown -------------------------------------------------------------------------------------
def markdown(results: dict[str, Any], png: str | None) -> str:
    lines = ["# forkd benchmarks", "", machine_line(results), "", settings_line(results), ""]
    lines += summary_table(results) + [""]
    if png:
        lines += [f"![requests per second by workload]({png})", ""]
    for workload in results["workloads"]:
        if workload["key"] == "capacity":
            lines += capacity_table(results, workload)
        elif workload["key"] == "slow-cgi":
            lines += slow_cgi_table(results, workload)
        else:
            lines += workload_table(results, workload)
    lines += memory_table(results)
    lines += peers_table(results)
    return "\n".join(lines) + "\n"


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (f"Machine: {m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
            f"{m['wrk']}; run {m['date']} in {results.get('elapsed_s', 0):.0f} s.")


def settings_line(results: dict[str, Any]) -> str:
    s = results["settings"]
    mode = "quick" if s["quick"] else "full"
    cores = results["machine"]["cores"]
    return (f"Mode {mode}: wrk -t{s['threads']} -c50, {s['seconds']} s per run, median of "
            f"{s['repeats']} interleaved repeat(s). wrk runs on the same {cores} cores as the "
            "servers and competes with them for the CPU, so these are relative figures. Every "
            "run checks the first response (status, size, body) and that all responses had the "
            "expected status; **DQ** = disqualified (wrong answers), n/a = the server has no "
            "such feature.")


def summary_table(results: dict[str, Any]) -> list[str]:
    workloads = results["workloads"]
    head = "| server | " + " | ".join(_short(w) for w in workloads) + " |"
    lines = [("## Summary (requests/s; MB/s for the big files; new connections/s for the TLS "
              "handshakes; capacity = req/s beside the idle connections; p99 ms of the 1 KiB GETs "
              "beside slow CGI scripts)"), "", head,
             "|---|" + "---:|" * len(workloads)]
    for peer in results["peers"]:
        cells = []
        for w in workloads:
            if w["key"] == "capacity":
                cap = results["capacity"].get(peer["key"])
                cells.append(_num(cap.get("rps")) if cap and not cap.get("problem") else
                             ("DQ" if cap else "–"))
                continue
            cell = _cell(results, peer["key"], w["key"])
            if cell.get("state") != "ok":
                cells.append(cell.get("state", "–"))
            elif w.get("latency"):
                cells.append(f"{cell['p99_ms']:.1f} ms")
            else:
                cells.append(_num(cell["mbps"] if w["throughput"] else cell["rps"]))
        lines.append(f"| {_bold(peer)} | " + " | ".join(cells) + " |")
    if any(p["key"] == "forkd-nolog" for p in results["peers"]):
        lines.append("| *forkd (log off) ÷ nginx* | "
                     + " | ".join(_forkd_ratio(results, w) for w in workloads) + " |")
    return lines


def _forkd_ratio(results: dict[str, Any], workload: dict[str, Any]) -> str:
    """forkd without access log against the reference peer (lighttpd where nginx has no row)."""
    if workload.get("latency"):
        return ""  # a latency: the table beside the summary says more than a ratio
    if workload["key"] == "capacity":
        cap = results["capacity"]
        ref_key = next((k for k in REFERENCES if cap.get(k, {}).get("rps")), "")
        mine = cap.get("forkd-nolog", {}).get("rps")
        if not ref_key or mine is None:
            return ""
        ratio, ref = mine / cap[ref_key]["rps"], ref_key
    else:
        ref, value = _reference(results, workload)
        cell = _cell(results, "forkd-nolog", workload["key"])
        if not value or cell.get("state") != "ok":
            return ""
        ratio = cell["mbps" if workload["throughput"] else "rps"] / value
    return f"*{ratio:.2f}*" + ("" if ref == "nginx" else f" *(÷ {ref})*")


def workload_table(results: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    ref_key, ref_value = _reference(results, workload)
    metric = "mbps" if workload["throughput"] else "rps"
    ratio_head = f"× {ref_key}" if ref_key else "ratio"
    lines = [f"## {workload['title']}", ""]
    if workload["key"] in TLS_NOTES:
        lines += [TLS_NOTES[workload["key"]], ""]
    lines += [f"| server | req/s | MB/s | p99 ms | socket errors | {ratio_head} | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for peer in results["peers"]:
        cell = _cell(results, peer["key"], workload["key"])
        state = cell.get("state", "not run")
        if state != "ok":
            lines.append(f"| {_bold(peer)} | {state} | | | | | {_escape(cell.get('note', ''))} |")
            continue
        ratio = f"{cell[metric] / ref_value:.2f}" if ref_value else ""
        p99 = "–" if cell.get("p99_ms") is None else f"{cell['p99_ms']:.2f}"
        note = ""
        if "resumed" in cell:
            note = f"{cell['full']:,} full and {cell['resumed']:,} resumed handshakes"
        lines.append(f"| {_bold(peer)} | {_num(cell['rps'])} | {_num(cell['mbps'])} | "
                     f"{p99} | {cell['socket_errors']} | {ratio} | {note} |")
    return lines + [""]


def capacity_table(results: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    cap = results["capacity"]
    idle = results["settings"]["idle"]
    ref = next((cap[k]["rps"] for k in REFERENCES if k in cap and cap[k].get("rps")), None)
    lines = [(f"## Capacity: 1 KiB file, 50 connections, while {idle:,} idle keep-alive "
              "connections are held open"), "",
             ("*idle held*: connections that got their response and stayed open; *still open*: of "
             "those, open after the measurement (a server may close idle connections, e.g. "
             "HTTP/1.0 or a per-worker limit)."), "",
             "| server | idle held | still open | req/s | p99 ms | socket errors | × nginx | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for peer in results["peers"]:
        row = cap.get(peer["key"])
        if not row:
            lines.append(f"| {_bold(peer)} | – | | | | | | {_escape(peer['status'])} |")
            continue
        errors = sum(row.get(k, 0) for k in ("connect", "read", "write", "timeout"))
        ratio = f"{row['rps'] / ref:.2f}" if ref and row.get("rps") is not None else ""
        lines.append(f"| {_bold(peer)} | {row.get('idle', 0):,} | {row.get('still_open', 0):,} | "
                     f"{_num(row.get('rps'))} | {row.get('p99_ms', 0):.2f} | {errors} | {ratio} | "
                     f"{_escape(row.get('problem') or row.get('note') or '')} |")
    return lines + [""]


def slow_cgi_table(results: dict[str, Any], workload: dict[str, Any]) -> list[str]:
    lines = [f"## {workload['title']}", "",
             ("Scripts print their header block and a line, sleep 5 s and print a second line; "
              "a client thread per script starts the next request as soon as one ends. wrk's "
              "p99 and max hold only the requests that completed within its 2 s timeout (a "
              "connection stalled to the end of the run adds no sample), so a *probe* of 4 "
              "keep-alive connections, one 1 KiB GET every 20 ms each, waits out any stall: "
              "*probe max* is its slowest request. *scripts alive*: the fewest of the server's "
              "slow.sh processes seen during the run (all of them must sleep throughout); "
              "*first line streamed*: of the slow requests sent, those whose first line reached "
              "the client before the sleep ended."), "",
             ("| server | req/s | p99 ms | max ms | probe max ms | scripts alive | "
              "first line streamed | socket errors | note |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for peer in results["peers"]:
        cell = _cell(results, peer["key"], workload["key"])
        state = cell.get("state", "not run")
        if state != "ok":
            lines.append(f"| {_bold(peer)} | {state} | | | | | | | "
                         f"{_escape(cell.get('note', ''))} |")
            continue
        probe = cell.get("probe_max_ms")
        alive = f"{cell.get('slow_running_min', 0)} of {cell.get('slow_requests', 0)}"
        streamed = f"{cell.get('slow_streamed', 0)} of {cell.get('slow_started', 0)}"
        lines.append(f"| {_bold(peer)} | {_num(cell['rps'])} | {cell['p99_ms']:.2f} | "
                     f"{cell.get('max_ms', 0):.1f} | {'–' if probe is None else f'{probe:.1f}'} | "
                     f"{alive} | {streamed} | {cell['socket_errors']} | |")
    return lines + [""]


def memory_table(results: dict[str, Any]) -> list[str]:
    mem = results.get("memory") or {}
    if not mem:
        return []
    if "problem" in mem:
        return ["## Memory", "", f"Not measured: {_escape(mem['problem'])}", ""]
    lines = ["## Memory: forkd RSS around a long mixed load", "",
             (f"{mem['requests']:,} requests of a mix (files, conditional GETs, ranges, 404, "
              f"listings, 1 MiB, CGI, Connection: close) in {mem['seconds']:.0f} s on a fresh "
              "forkd with 2 workers. Baseline = after a 2 s warm-up. Workers replaced during the "
              "test: "
             f"{'YES (figures unreliable)' if mem['workers_replaced'] else 'no'}."), "",
             "| process | RSS at start KiB | baseline KiB | after KiB | growth |",
             "|---|---:|---:|---:|---:|",
             (f"| master | {mem['start']['master']:,} | {mem['baseline']['master']:,} | "
             f"{mem['final']['master']:,} | {mem['growth_pct']['master']:+.2f}% |")]
    for i, pid in enumerate(mem["baseline"]["workers"]):
        lines.append(f"| worker {i + 1} | {mem['start']['workers'][pid]:,} | "
                     f"{mem['baseline']['workers'][pid]:,} | {mem['final']['workers'][pid]:,} | "
                     f"{mem['growth_pct']['workers'][pid]:+.2f}% |")
    return lines + [""]


def peers_table(results: dict[str, Any]) -> list[str]:
    lines = ["## Servers", "", "| server | version | set-up |", "|---|---|---|"]
    for peer in results["peers"]:
        status = "" if peer["status"] == "ok" else f" ({peer['status']})"
        lines.append(f"| {peer['label']} | {peer['version']}{status} | "
                     f"{SETUPS.get(peer['key'], '')} |")
    return lines + [""]


TLS_NOTES = {
    "https-1k": ("wrk over an https URL: one TLS handshake per connection, then keep-alive "
                 "requests. Both servers: the same ECDSA P-256 certificate, Mozilla intermediate "
                 "(wrk negotiates TLS 1.3, X25519, TLS_AES_256_GCM_SHA384)."),
    "tls-full": ("req/s = new connections per second, each a full TLS 1.3 handshake (s_time "
                 "-new never offers a session) and one `GET /1k.txt HTTP/1.0`; no latency. "
                 "The s_time clients share the cores and spend about as much CPU per handshake "
                 "as the server (an ECDSA verify against a sign), so a fast server's figure is "
                 "partly the clients' limit. wrk is not used here: with `Connection: close` it "
                 "offers its last session again and measures resumptions."),
    "tls-resumed": ("req/s = new connections per second, each resuming the session of the "
                    "client's first connection (TLS 1.3 ticket) and sending one GET; the note "
                    "counts what the server actually resumed."),
}

SETUPS = {
    "nginx": "2 workers, sendfile, access_log off, keepalive_requests 1000000, autoindex; HTTPS: "
             "forkd's intermediate cipher list and ffdhe2048, session cache and tickets",
    "lighttpd": "1 process (its documented set-up), sendfile, mod_cgi, mod_dirlisting",
    "apache": "prefork, StartServers 60, MaxRequestWorkers 150, EnableSendfile, mod_cgi, "
              "mod_autoindex, MaxKeepAliveRequests 0",
    "gunicorn-gthread": "2 workers × 4 threads, tests/bench/wsgi_app.py (wsgi.file_wrapper)",
    "gunicorn-sync": "2 sync workers (no keep-alive), tests/bench/wsgi_app.py",
    "http.server": "python3 -m http.server --cgi (HTTP/1.0, a thread per connection)",
    "forkd-nolog": "2 workers, access_log null, autoindex, CGI route, TLS listener (intermediate)",
    "forkd-log": "2 workers, access log to a file (combined), autoindex, CGI route, TLS listener",
}


def _reference(results: dict[str, Any], workload: dict[str, Any]) -> tuple[str, float]:
    metric = "mbps" if workload["throughput"] else "rps"
    for key in REFERENCES:
        cell = _cell(results, key, workload["key"])
        if cell.get("state") == "ok" and cell.get(metric):
            return key, cell[metric]
    return "", 0.0


def _cell(results: dict[str, Any], peer: str, workload: str) -> dict[str, Any]:
    return results["cells"].get(f"{peer}|{workload}", {})  # type: ignore[no-any-return]


def _short(workload: dict[str, Any]) -> str:
    return {"1k-keepalive": "1 KiB", "1k-close": "1 KiB close", "1m": "1 MiB MB/s",
            "10m": "10 MiB MB/s", "404": "404", "listing": "listing", "cgi": "CGI",
            "capacity": "capacity", "slow-cgi": "beside slow CGI p99",
            "https-1k": "HTTPS 1 KiB", "https-1m": "HTTPS 1 MiB MB/s",
            "tls-full": "TLS full handshakes", "tls-resumed": "TLS resumed"}.get(
                workload["key"], workload["key"])


def _bold(peer: dict[str, Any]) -> str:
    return f"**{peer['label']}**" if peer["key"].startswith("forkd") else peer["label"]


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]


# -- chart ----------------------------------------------------------------------------------------
def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    workloads = results["workloads"]
    peers = results["peers"]
    columns = 4
    rows = (len(workloads) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows + 0.8),
                             squeeze=False)
    labels = [p["label"] for p in peers]
    for ax, workload in zip(axes.flat, workloads):
        values, notes = _bars(results, workload, peers)
        colors = ["#d62728" if p["key"].startswith("forkd") else "#7f7f7f" for p in peers]
        positions = range(len(peers))
        ax.barh(positions, values, color=colors)
        ax.set_yticks(list(positions), labels, fontsize=8)
        ax.invert_yaxis()
        unit = "MB/s" if workload["throughput"] else "req/s"
        if workload.get("latency"):
            unit = "ms, lower is better"
        elif workload.get("driver", "wrk") != "wrk":
            unit = "connections/s"
        title = _short(workload).replace(" MB/s", "")
        ax.set_title(f"{title} ({unit})", fontsize=10)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        top = max(values) if any(values) else 1
        for position, (value, note) in enumerate(zip(values, notes)):
            text = note or _num(value)
            ax.text(value + top * 0.01, position, text, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.3)
    for ax in list(axes.flat)[len(workloads):]:
        ax.axis("off")
    m = results["machine"]
    fig.suptitle(f"forkd vs peers — {m['cores']} cores, Linux {m['kernel']}, Python {m['python']},"
                 f" {m['date']} (wrk on the same cores)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _thousands(value: float, _position: int) -> str:
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def _bars(results: dict[str, Any], workload: dict[str, Any],
          peers: list[dict[str, Any]]) -> tuple[list[float], list[str]]:
    values, notes = [], []
    for peer in peers:
        if workload["key"] == "capacity":
            row = results["capacity"].get(peer["key"]) or {}
            ok = bool(row) and not row.get("problem")
            values.append(row.get("rps", 0.0) if ok else 0.0)
            notes.append("" if ok else ("DQ" if row else "–"))
            continue
        cell = _cell(results, peer["key"], workload["key"])
        if cell.get("state") == "ok" and workload.get("latency"):
            values.append(cell["p99_ms"])
            notes.append(f"{cell['p99_ms']:.1f}")
        elif cell.get("state") == "ok":
            values.append(cell["mbps"] if workload["throughput"] else cell["rps"])
            notes.append("")
        else:
            values.append(0.0)
            notes.append(cell.get("state", "–"))
    return values, notes
