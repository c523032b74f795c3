"""The benchmark run: forkd and its peers, side by side, in one command.

    python3 -m tests.bench            # full: 3 interleaved repeats, about 7 minutes on 2 cores
    python3 -m tests.bench --quick    # 1 repeat, 1 s per measurement, under 2 minutes

Theory of operation. One temporary directory holds the document tree (tree.py) and one
sub-directory per server (config, logs). All servers are started first and stay up for the whole
run; they are idle except while measured. Measurements are interleaved: for each repeat, for each
workload, every server in turn (the order rotates between repeats), so slow drifts of the machine
(thermal, a teammate's build) spread over all servers instead of hitting one. Each measurement
fetches once and checks the response (status, size, body) and then runs wrk; a server that
answered with the wrong status even once is disqualified for that row. The median over repeats is
reported. The slow-CGI workload runs wrk beside slow scripts and a stall probe (slowcgi.py); the
TLS handshake workloads run `openssl s_time` instead of wrk (tls.py says why). The capacity
workload (5,000 idle keep-alive connections held by idle.py while wrk measures) runs once per
server at the end, then the memory test runs on a fresh forkd. Everything is stopped in a
`finally`, also on Ctrl-C and SIGTERM.

wrk runs on the same machine as the servers and competes with them for the CPU: with 2 cores,
a server with 2 workers never has both cores to itself. The figures compare servers under the
same handicap; they are not absolute capacities.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python3 tests/bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench import peers as peer_defs
from tests.bench import report, tls, tree
from tests.bench.drive import Wrk, WrkFailed, WrkResult, wrk_version
from tests.bench.memory import memory_test
from tests.bench.peers import Peer, PeerFailed
from tests.bench.slowcgi import SlowCgiLoad, StallProbe
from tests.bench.workloads import ALL, CAPACITY, Workload, check_first_response

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Settings:
    quick: bool
    repeats: int
    seconds: int  # per wrk measurement
    threads: int  # wrk threads
    idle: int  # idle connections in the capacity workload
    idle_seconds: float  # time allowed to open them
    memory_requests: int
    memory_seconds: float  # upper bound on the memory test's load phase
    out: Path

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        quick = args.quick
        return cls(
            quick=quick,
            repeats=args.repeats or (1 if quick else 3),
            seconds=args.seconds or (1 if quick else 2),
            threads=args.threads,
            idle=args.idle,
            idle_seconds=2.0 if quick else 5.0,
            memory_requests=args.memory_requests or (100_000 if quick else 1_000_000),
            memory_seconds=20.0 if quick else 100.0,
            out=Path(args.out) if args.out else RESULTS,
        )


@dataclass
class Cell:
    """One server x one workload: every repeat, and what they add up to."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    state: str = "ok"  # ok | n/a | DQ | failed | stalled (slow-cgi) | not run
    note: str = ""

    def add(self, result: WrkResult | None, problem: str | None, state: str = "DQ",
            extra: dict[str, Any] | None = None) -> None:
        """Record one repeat; a problem marks the cell (DQ: wrong answers, failed: no measure)."""
        run: dict[str, Any] = {"result": result.as_dict() if result else None, "problem": problem}
        if extra:
            run["extra"] = extra
        self.runs.append(run)
        if problem and self.state == "ok":
            self.state, self.note = state, problem

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "note": self.note}
        results = [r["result"] for r in self.runs if r["result"]]
        if self.state != "ok" or not results:
            return out
        out["rps"] = statistics.median(r["rps"] for r in results)
        out["mbps"] = statistics.median(r["mbps"] for r in results)
        out["p99_ms"] = statistics.median(r["p99_us"] for r in results) / 1000
        out["socket_errors"] = sum(r["connect"] + r["read"] + r["write"] + r["timeout"]
                                   for r in results)
        out["requests"] = sum(r["requests"] for r in results)
        out["max_ms"] = max(r["max_us"] for r in results) / 1000
        if not results[0].get("latency", True):
            out["p99_ms"] = out["max_ms"] = None  # s_time measures no latency
        extras = [r["extra"] for r in self.runs if r.get("extra")]
        if extras and "full" in extras[0]:  # TLS handshakes: what s_time did
            out["full"] = sum(e["full"] for e in extras)
            out["resumed"] = sum(e["resumed"] for e in extras)
        elif extras:  # the slow-CGI workload: the worst of every repeat
            probes = [e["probe_max_ms"] for e in extras if e.get("probe_max_ms") is not None]
            out["probe_max_ms"] = max(probes) if probes else None
            out["slow_running_min"] = min(e["slow_running_min"] for e in extras)
            out["slow_requests"] = extras[0]["slow_requests"]
            out["slow_streamed"] = sum(e["slow_streamed"] for e in extras)
            out["slow_started"] = sum(e["slow_started"] for e in extras)
        return out


class Bench:
    def __init__(self, settings: Settings, peer_classes: list[type[Peer]],
                 workloads: list[Workload]) -> None:
        self.settings = settings
        self.workdir = Path(tempfile.mkdtemp(prefix="forkd-bench-"))
        self.tree = tree.build(self.workdir)
        self.wrk = Wrk(self.workdir, settings.threads)
        self.peers = [cls(self.workdir, self.tree) for cls in peer_classes]
        self.workloads = workloads
        self.status: dict[str, str] = {}  # peer key -> "ok" or why it is not measured
        self.cells: dict[tuple[str, str], Cell] = {}
        self.capacity: dict[str, dict[str, Any]] = {}
        self.memory: dict[str, Any] = {}

    # -- phases ---------------------------------------------------------------------------------
    def start_peers(self) -> None:
        for peer in self.peers:
            if peer.key in self.status:
                continue
            try:
                peer.start()
                self.status[peer.key] = "ok"
                log(f"started {peer.label} on port {peer.port}")
            except (PeerFailed, OSError) as exc:
                self.status[peer.key] = f"did not start: {str(exc).splitlines()[0]}"
                log(f"FAILED to start {peer.label}: {exc}")
                peer.stop()

    def warm_up(self) -> None:
        for peer in self.running():
            try:
                self.wrk.run(peer.url("/1k.txt"), 1)
            except WrkFailed:
                pass

    def measure_all(self) -> None:
        measured = [w for w in self.workloads if w is not CAPACITY]
        for repeat in range(self.settings.repeats):
            order = self.peers[repeat % len(self.peers):] + self.peers[:repeat % len(self.peers)]
            for workload in measured:
                for peer in order:
                    self.measure(peer, workload)
                log(f"repeat {repeat + 1}/{self.settings.repeats}: {workload.key} done")

    def measure(self, peer: Peer, workload: Workload) -> None:
        cell = self.cells.setdefault((peer.key, workload.key), Cell())
        if self.status.get(peer.key) != "ok":
            cell.state, cell.note = "not run", self.status.get(peer.key, "")
            return
        if workload.needs and workload.needs not in peer.features:
            cell.state = "n/a"
            return
        if cell.state != "ok":
            return  # disqualified in an earlier repeat: do not spend time on it again
        if not self.alive(peer):
            cell.state, cell.note = "failed", self.status[peer.key]
            return
        port = peer.tls_port if workload.tls else peer.port
        problem = check_first_response(port, workload, self.tree)
        if problem:
            cell.add(None, f"wrong first response: {problem}")
            return
        if workload.slow_cgi:
            self.measure_beside_slow_cgi(peer, workload, cell)
            return
        if workload.driver.startswith("s_time"):
            self.measure_handshakes(peer, workload, cell)
            return
        try:
            result = self.wrk.run(peer.url(workload.path, workload.tls), self.settings.seconds,
                                  workload.connections, workload.headers)
        except WrkFailed as exc:
            cell.add(None, str(exc), state="failed")
            return
        cell.add(result, wrong_statuses(result, workload))

    def measure_handshakes(self, peer: Peer, workload: Workload, cell: Cell) -> None:
        """New TLS connections per second with openssl s_time (see tls.py)."""
        reuse = workload.driver == "s_time-reuse"
        try:
            result, counts = tls.s_time(peer.tls_port, workload.path, self.settings.seconds,
                                        workload.connections, reuse)
        except WrkFailed as exc:
            cell.add(None, str(exc), state="failed")
            return
        problem, state = None, "DQ"
        least = self.tree.sizes[workload.path]
        if counts["bytes_per_connection"] < least:
            problem = (f"{counts['bytes_per_connection']} bytes read per connection, expected "
                       f"over {least} (the file and its header)")
        elif counts["failed_clients"]:
            problem, state = (f"{counts['failed_clients']} of {counts['clients']} s_time "
                              f"clients failed: {counts['client_problem']}"), "failed"
        elif reuse and counts["resumed"] < 0.9 * result.requests:
            problem, state = (f"only {counts['resumed']:,} of {result.requests:,} handshakes "
                              "resumed the offered session"), "not resumed"
        elif not reuse and counts["resumed"]:
            problem, state = f"{counts['resumed']:,} handshakes resumed", "failed"
        cell.add(result, problem, state, counts)

    def measure_beside_slow_cgi(self, peer: Peer, workload: Workload, cell: Cell) -> None:
        """wrk on the static file while slow CGI scripts sleep (see slowcgi.py)."""
        assert peer.proc is not None
        load = SlowCgiLoad(peer.port, tree.SLOW_CGI_PATH, workload.slow_cgi,
                           self.tree.slow_script, peer.proc.pid)
        probe = StallProbe(peer.port, workload.path)
        result, problem, state = None, None, "DQ"
        load.start()
        try:
            if not load.wait_running():
                problem, state = "no slow CGI script started within 10 s", "failed"
            else:
                probe.start()
                result = self.wrk.run(peer.url(workload.path), self.settings.seconds,
                                      workload.connections, workload.headers)
                problem = wrong_statuses(result, workload) if result.requests else None
        except WrkFailed as exc:
            problem, state = str(exc), "failed"
        finally:
            extra = {**probe.stop(), **load.stop()}  # the probe first: it waits for stalls
        probe_ms = extra["probe_max_ms"] or 0.0
        if not problem and result and (not result.requests or probe_ms > self.wrk.timeout * 1000):
            # a legitimate result, and the one this workload is there to show
            problem, state = (f"stalled: wrk got {result.requests:,} responses; the probe's "
                              f"slowest request took {probe_ms:,.0f} ms"), "stalled"
        if not problem and (extra["slow_wrong"] or extra["probe_failures"]):
            problem = (extra["slow_wrong"] + extra["probe_failures"])[0]
        cell.add(result, problem, state, extra)

    def measure_capacity(self) -> None:
        if CAPACITY not in self.workloads:
            return
        for peer in self.running():
            self.capacity[peer.key] = self.capacity_one(peer)
            held = self.capacity[peer.key]
            log(f"capacity {peer.label}: {held.get('idle', '?')} idle held, "
                f"{held.get('rps', 0):.0f} req/s")

    def capacity_one(self, peer: Peer) -> dict[str, Any]:
        s = self.settings
        holder = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.idle", str(peer.port), str(s.idle),
             str(s.idle_seconds), "/1k.txt"],
            cwd=peer_defs.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            assert holder.stdin and holder.stdout
            opened = json.loads(holder.stdout.readline() or "{}")
            out: dict[str, Any] = dict(opened)
            try:
                result = self.wrk.run(peer.url("/1k.txt"), s.seconds)
                out.update(result.as_dict())
                out["p99_ms"] = result.p99_us / 1000
                problem = wrong_statuses(result, CAPACITY)
                if result.requests == 0:
                    problem = None  # a legitimate result: the server could not take new clients
                    out["note"] = f"no response within wrk's {self.wrk.timeout:.0f} s timeout"
                out["problem"] = problem
            except WrkFailed as exc:
                out["problem"] = str(exc)
            holder.stdin.write("\n")
            holder.stdin.flush()
            out.update(json.loads(holder.stdout.readline() or "{}"))
            return out
        finally:
            stop_process(holder)
            time.sleep(0.5)  # let the server take back the connections it held

    def run_memory(self) -> None:
        peer = peer_defs.ForkdNoLog(self.workdir / "memory", self.tree)
        try:
            self.memory = memory_test(peer, self.wrk, self.settings.memory_requests,
                                      self.settings.memory_seconds, log)
        except (PeerFailed, WrkFailed, OSError) as exc:
            self.memory = {"problem": str(exc)}
            log(f"memory test failed: {exc}")
        finally:
            peer.stop()

    # -- helpers --------------------------------------------------------------------------------
    def running(self) -> list[Peer]:
        return [p for p in self.peers if self.status.get(p.key) == "ok" and self.alive(p)]

    def alive(self, peer: Peer) -> bool:
        try:
            peer.check_alive()
            return True
        except PeerFailed as exc:
            self.status[peer.key] = f"crashed: {str(exc).splitlines()[0]}"
            return False

    def stop(self) -> None:
        for peer in self.peers:
            peer.stop()

    def results(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "settings": {k: str(v) if isinstance(v, Path) else v
                         for k, v in vars(self.settings).items()},
            "peers": [{"key": p.key, "label": p.label, "version": p.version(),
                       "status": self.status.get(p.key, "not run")} for p in self.peers],
            "workloads": [{"key": w.key, "title": w.title, "throughput": w.throughput,
                           "latency": w.latency, "driver": w.driver} for w in self.workloads],
            "cells": {f"{p}|{w}": {**c.summary(), "runs": c.runs}
                      for (p, w), c in self.cells.items()},
            "capacity": self.capacity,
            "memory": self.memory,
        }


def wrong_statuses(result: WrkResult, workload: Workload) -> str | None:
    """Why a wrk run does not count, judged by the status of its responses."""
    if result.requests == 0:
        return "no response at all"
    if workload.status < 400 and result.status:
        return f"{result.status} of {result.requests} responses were not 2xx/3xx"
    if workload.status >= 400 and result.status != result.requests:
        return f"{result.requests - result.status} of {result.requests} responses were 2xx/3xx"
    return None


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "wrk": wrk_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- tools ----------------------------------------------------------------------------------------
def ensure_tools(peer_classes: list[type[Peer]], install: bool) -> list[type[Peer]]:
    """Install what is missing (when allowed) or say what to install; return the usable peers."""
    apt, pip = set(), set()
    if not shutil.which("wrk"):
        apt.add("wrk")
    if not shutil.which("openssl"):
        apt.add("openssl")  # the HTTPS certificate and the handshake rows (tls.py)
    if not _has_module("matplotlib"):
        pip.add("matplotlib")
    for cls in peer_classes:
        for need in cls.missing():
            kind, _, name = need.partition(":")
            (apt if kind == "apt" else pip).add(name)
    commands = []
    if apt:
        commands.append(["apt-get", "install", "-y", *sorted(apt)])
    if pip:
        names = [word for name in sorted(pip) for word in name.split()]
        commands.append([sys.executable, "-m", "pip", "install", *names])
    if commands and install and os.geteuid() == 0:
        for argv in commands:
            log("installing: " + " ".join(argv))
            if subprocess.run(argv, check=False).returncode != 0 and argv[0] == "apt-get":
                subprocess.run(["apt-get", "update"], check=False)
                subprocess.run(argv, check=False)
    elif commands:
        log("missing tools; install them with:\n  " + "\n  ".join(" ".join(a) for a in commands))
    if not shutil.which("wrk") or not shutil.which("openssl"):
        raise SystemExit("wrk and openssl are required: apt-get install -y wrk openssl")
    usable = []
    for cls in peer_classes:
        missing = cls.missing()
        if missing:
            log(f"skipping {cls.label}: needs {', '.join(missing)}")
        else:
            usable.append(cls)
    return usable


def _has_module(name: str) -> bool:
    argv = [sys.executable, "-c", f"import {name}"]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def raise_nofile() -> None:
    """Servers and the idle holder inherit this: 5,000 idle connections need more than 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 12000:
        log(f"RLIMIT_NOFILE hard limit is {hard}: the capacity workload may be limited by it")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m tests.bench",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 1 s runs: results/quick.*")
    parser.add_argument("--only", help="comma-separated server keys (" +
                        ", ".join(c.key for c in peer_defs.ALL_PEERS) + ")")
    parser.add_argument("--workloads", help="comma-separated workload keys (" +
                        ", ".join(w.key for w in ALL) + ")")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (3; 1 with --quick)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (2; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections for capacity")
    parser.add_argument("--memory-requests", type=int, help="requests of the memory test")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory test")
    parser.add_argument("--no-install", action="store_true", help="never apt-get/pip install")
    parser.add_argument("--out", help="results directory (tests/bench/results)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


def select(args: argparse.Namespace) -> tuple[list[type[Peer]], list[Workload]]:
    peer_classes = list(peer_defs.ALL_PEERS)
    workloads = list(ALL)
    if args.only:
        keys = args.only.split(",")
        peer_classes = [c for c in peer_classes if c.key in keys]
    if args.workloads:
        keys = args.workloads.split(",")
        workloads = [w for w in workloads if w.key in keys]
    if not peer_classes or not workloads:
        raise SystemExit("nothing to measure: check --only / --workloads")
    return peer_classes, workloads


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.from_args(args)
    peer_classes, workloads = select(args)
    signal.signal(signal.SIGTERM, _interrupt)
    raise_nofile()
    peer_classes = ensure_tools(peer_classes, install=not args.no_install)
    started = time.monotonic()
    bench = Bench(settings, peer_classes, workloads)
    log(f"work directory {bench.workdir}; wrk -t{settings.threads}, {settings.seconds} s per run, "
        f"{settings.repeats} repeat(s)")
    try:
        bench.start_peers()
        if not settings.quick:
            bench.warm_up()
        bench.measure_all()
        bench.measure_capacity()
        bench.stop()
        if not args.no_memory:
            bench.run_memory()
    except KeyboardInterrupt:
        log("interrupted: stopping every server")
        return 130
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    results = bench.results()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    stem = "quick" if settings.quick and not args.out else "latest"
    paths = report.write_all(results, settings.out, stem)
    print(paths["md"].read_text())
    log(f"done in {results['elapsed_s']:.0f} s: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
