"""Driving a server with wrk and reading back what it measured.

wrk runs with a Lua script whose `done()` hook prints one JSON line (requests, bytes, duration,
socket errors, non-2xx/3xx count, latency percentiles): no scraping of wrk's human output. A
script that also defines `request()` cycles through a fixed mix of requests (the memory test);
wrk decides from the script's top level whether requests are dynamic, so the two scripts are kept
separate and the plain one stays on wrk's fast static-request path.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

REPORT_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "bytes": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""

MIX_LUA = r"""
local mix = {}
local position = 0

init = function(args)
  -- each argument: "METHOD PATH" optionally followed by " Name: value"
  for _, spec in ipairs(args) do
    local method, path, name, value = spec:match("^(%u+) (%S+) ?([^:]*):? ?(.*)$")
    local headers = {}
    if name ~= nil and name ~= "" then headers[name] = value end
    table.insert(mix, wrk.format(method, path, headers))
  end
  position = math.random(#mix)
end

request = function()
  position = position % #mix + 1
  return mix[position]
end
"""


@dataclass
class WrkResult:
    requests: int
    bytes: int
    duration_us: int
    connect: int
    read: int
    write: int
    status: int  # responses that were not 2xx or 3xx
    timeout: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    latency: bool = True  # False: the driver measures no latencies (tls.s_time)

    @property
    def seconds(self) -> float:
        return max(self.duration_us, 1) / 1e6

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6

    @property
    def socket_errors(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "rps": round(self.rps, 1), "mbps": round(self.mbps, 2)}


class WrkFailed(Exception):
    pass


class Wrk:
    """Runs wrk with a fixed thread count; scripts live in the run's work directory."""

    def __init__(self, workdir: Path, threads: int, timeout: float = 2.0) -> None:
        self.threads = threads
        self.timeout = timeout
        self.report_script = workdir / "report.lua"
        self.mix_script = workdir / "mix.lua"
        self.report_script.write_text(REPORT_LUA)
        self.mix_script.write_text(MIX_LUA + REPORT_LUA)

    def run(self, url: str, seconds: float, connections: int = 50,
            headers: tuple[tuple[str, str], ...] = (), mix: tuple[str, ...] = ()) -> WrkResult:
        argv = ["wrk", f"-t{self.threads}", f"-c{max(connections, self.threads)}",
                f"-d{max(seconds, 1):.0f}s", f"--timeout={self.timeout:.0f}s",
                "-s", str(self.mix_script if mix else self.report_script)]
        for name, value in headers:
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        if mix:
            argv += ["--", *mix]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                                 check=False)
        except subprocess.TimeoutExpired:
            raise WrkFailed(f"wrk did not finish: {' '.join(argv)}") from None
        for line in out.stdout.splitlines():
            if line.startswith("WRKJSON "):
                return WrkResult(**json.loads(line[len("WRKJSON "):]))
        raise WrkFailed(f"wrk exited {out.returncode} without a summary: {out.stderr.strip()}"
                        f" {out.stdout.strip()[-300:]}")


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    text = (out.stdout + out.stderr).strip()
    return text.split(" Copyright")[0] if text else ""
