"""Issue 12's two figures: virtual hosts cost nothing measurable, cached gzip beats nginx's.

    python3 -m tests.bench.vhosts [--seconds 3] [--rounds 5]

1. A 1000-byte file, keep-alive, 50 connections: forkd with one site (top-level routes) against
   forkd with a `servers` config of three sites (requests for an exact name of one of them).
2. A 100 KiB HTML file with `Accept-Encoding: gzip`, keep-alive, 50 connections: forkd with
   `gzip: true` (compressed once, then served from its cache) against nginx with `gzip on`
   (which compresses every response, at its default level 1).

The servers run side by side and wrk alternates between them round by round, so a change in the
machine's load hits both; the report gives every round and the medians. Needs wrk and nginx.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = b"".join(b"<p>line %d of a page with some text that repeats, as HTML does</p>\n" % i
                for i in range(1600))[:102400]
NGINX = """daemon off; master_process on; worker_processes 2; pid {dir}/nginx.pid;
error_log {dir}/nginx.err warn; events {{ worker_connections 10240; }}
http {{ include /etc/nginx/mime.types; access_log off; sendfile on; tcp_nopush on;
  keepalive_requests 1000000; client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp;
  fastcgi_temp_path {dir}/tmp; uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
  gzip on; gzip_min_length 1024;
  server {{ listen 127.0.0.1:{port}; root {dir}/www; }} }}
"""


def forkd_config(directory: Path, name: str, port: int, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f'listen: ["127.0.0.1:{port}"]\nworkers: 2\naccess_log: null\n'
                    f"error_log: {directory}/{name}.err\n{body}")
    return path


def start(command: list[str], url: str, headers: dict[str, str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(command, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return proc
        except OSError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"{command[0]} did not start: {command}")


def wrk(url: str, headers: dict[str, str], seconds: float) -> float:
    args = ["wrk", "-t2", "-c50", f"-d{seconds:g}s", url]
    for name, value in headers.items():
        args[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None or "Non-2xx" in out:
        raise SystemExit(f"wrk failed:\n{out}")
    return float(found.group(1))


def compare(title: str, contenders: list[tuple[str, str, dict[str, str]]], rounds: int,
            seconds: float) -> dict[str, float]:
    figures: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
    for _ in range(rounds):
        for label, url, headers in contenders:
            figures[label].append(wrk(url, headers, seconds))
    print(f"\n{title}")
    medians = {}
    for label, values in figures.items():
        medians[label] = statistics.median(values)
        rounds_text = " ".join(f"{v:,.0f}" for v in values)
        print(f"  {label:28} median {medians[label]:>9,.0f} req/s   rounds: {rounds_text}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("nginx")):
        raise SystemExit("needs wrk and nginx (apt-get install wrk nginx)")
    with tempfile.TemporaryDirectory(prefix="forkd-bench-vhosts-") as name:
        directory = Path(name)
        for site in ("www", "a", "b", "tmp"):
            (directory / site).mkdir()
            (directory / site / "1k.html").write_bytes(b"x" * 1000)
        (directory / "www" / "page.html").write_bytes(PAGE)
        os.chmod(directory, 0o755)
        one = forkd_config(directory, "one", 18181, f"routes: [{{prefix: /, static: "
                           f"{{root: {directory}/www, gzip: true}}}}]\n")
        def static(site: str) -> str:
            return f"[{{prefix: /, static: {{root: {directory}/{site}}}}}]"

        three = forkd_config(directory, "three", 18182, (
            "servers:\n"
            f"  - {{names: [a.test, www.a.test], routes: {static('a')}}}\n"
            f"  - {{names: ['*.b.test'], routes: {static('b')}}}\n"
            f"  - {{names: [c.test], default: true, routes: {static('www')}}}\n"))
        (directory / "nginx.conf").write_text(NGINX.format(dir=directory, port=18183))
        gz = {"Accept-Encoding": "gzip"}
        procs = [
            start([sys.executable, "-m", "forkd", "-c", str(one)], "http://127.0.0.1:18181/1k.html",
                  {}),
            start([sys.executable, "-m", "forkd", "-c", str(three)],
                  "http://127.0.0.1:18182/1k.html", {"Host": "c.test"}),
            start(["nginx", "-c", str(directory / "nginx.conf")], "http://127.0.0.1:18183/1k.html",
                  {}),
        ]
        try:
            sites = compare("1000-byte file, keep-alive, 50 connections", [
                ("forkd, one site", "http://127.0.0.1:18181/1k.html", {}),
                ("forkd, servers: 3 sites", "http://127.0.0.1:18182/1k.html",
                 {"Host": "www.a.test"}),
            ], options.rounds, options.seconds)
            gzip = compare("100 KiB HTML, Accept-Encoding: gzip, keep-alive, 50 connections", [
                ("forkd gzip: true (cached)", "http://127.0.0.1:18181/page.html", gz),
                ("nginx gzip on", "http://127.0.0.1:18183/page.html", gz),
            ], options.rounds, options.seconds)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
        vhosts = sites["forkd, servers: 3 sites"] / sites["forkd, one site"]
        compressed = gzip["forkd gzip: true (cached)"] / gzip["nginx gzip on"]
        print(f"\nthree sites / one site: {vhosts:.2f}   forkd gzip / nginx gzip: {compressed:.2f}")


if __name__ == "__main__":
    main()
