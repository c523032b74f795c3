"""Does a forkd worker grow? RSS of each worker and of the master around a long mixed load.

A fresh forkd (2 workers, no access log) is started. VmRSS (/proc/PID/status) of the master and
of each worker is read at start, after a short warm-up (imports done, caches filled: the baseline),
and after each chunk of load until the target number of requests is reached. The load is the
request mix of workloads.MIX: files, HEAD, ranges, 404s, listings, a 1 MiB file, CGI,
`Connection: close`. Growth is reported against the warm-up baseline, and the worker PIDs are
compared at the end: a replaced worker would make the figure meaningless, so it is flagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from tests.bench.drive import Wrk
from tests.bench.peers import Forkd, rss_kib
from tests.bench.workloads import MIX


def memory_test(peer: Forkd, wrk: Wrk, target: int, max_seconds: float,
                log: Callable[[str], None]) -> dict[str, Any]:
    peer.start()
    master, workers = wait_for_workers(peer, 2)
    start = snapshot(master, workers)
    warm = wrk.run(peer.url("/"), 2, mix=MIX)
    done = warm.requests
    baseline = snapshot(master, workers)
    samples = [{"requests": done, **baseline}]
    rate = max(warm.rps, 1.0)
    began = time.monotonic()
    non_2xx = warm.status
    errors = warm.socket_errors
    while done < target + warm.requests and time.monotonic() - began < max_seconds:
        remaining = target + warm.requests - done
        seconds = min(10, max(1, math.ceil(remaining / rate)))
        result = wrk.run(peer.url("/"), seconds, mix=MIX)
        done += result.requests
        non_2xx += result.status
        errors += result.socket_errors
        rate = max(result.rps, 1.0)
        samples.append({"requests": done, **snapshot(master, workers)})
        log(f"memory: {done - warm.requests:,} requests, workers "
            f"{', '.join(str(samples[-1]['workers'][str(p)]) for p in workers)} KiB")
    final = samples[-1]
    _, workers_after = peer.pids()
    return {
        "requests": done - warm.requests,
        "target": target,
        "seconds": round(time.monotonic() - began, 1),
        "non_2xx_3xx": non_2xx,
        "socket_errors": errors,
        "master_pid": master,
        "worker_pids": workers,
        "workers_replaced": sorted(workers_after) != sorted(workers),
        "start": start,
        "baseline": baseline,
        "final": {k: final[k] for k in ("master", "workers")},
        "growth_pct": {
            "master": _growth(baseline["master"], final["master"]),
            "workers": {pid: _growth(baseline["workers"][pid], final["workers"][pid])
                        for pid in baseline["workers"]},
        },
        "samples": samples,
    }


def wait_for_workers(peer: Forkd, count: int, timeout: float = 10.0) -> tuple[int, list[int]]:
    deadline = time.monotonic() + timeout
    while True:
        master, workers = peer.pids()
        if len(workers) >= count or time.monotonic() > deadline:
            return master, workers
        time.sleep(0.05)


def snapshot(master: int, workers: list[int]) -> dict[str, Any]:
    return {"master": rss_kib(master), "workers": {str(pid): rss_kib(pid) for pid in workers}}


def _growth(before: int, after: int) -> float:
    return round(100.0 * (after - before) / before, 2) if before else 0.0
