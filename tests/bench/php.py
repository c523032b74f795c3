"""PHP through php-fpm: forkd's fastcgi route beside nginx + php-fpm, on identical pools, in one run.

    python3 -m tests.bench.php            # ~2.5 minutes: tests/bench/results/php.{md,json}

Each server has its own php-fpm pool, all alike (pm static, 4 children, a unix socket): a server
keeping FastCGI connections holds every child of its pool, so two such servers cannot share one.
Four servers have 2 workers, none an access log. Two open one FastCGI connection per request
(nginx's default without `fastcgi_keep_conn`, forkd's `connections: 0`); two keep connections
(nginx with `fastcgi_keep_conn on` and an upstream `keepalive 2`; forkd with `connections: 2`).
Three more have ONE worker each, which on two shared cores serves PHP faster: nginx and forkd
opening a connection per request, and forkd keeping 4. forkd half-closes a connection of its own
once the request is sent (`half_close`, its default); nginx does not. wrk -t2 -c50 drives `hello.php` on each, interleaved and
repeated (medians), plus forkd's own php-cgi route for the process-per-request baseline, and
wrk -t1 -c1 drives each server alone (per-request latency without queueing). Every row also gives
the CPU time the server's workers and php-fpm's children spent per request. Then the
isolation check of issue 17: a forkd with ONE worker serves a `sleep(1)` page to 4 clients while
another wrk measures a static 1 KiB file's latency on the same worker.

Like the rest of tests/bench, this is never run by pytest or CI. wrk runs on the same cores as the
servers and php-fpm: read the figures as relative.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.drive import Wrk, WrkResult, wrk_version
from tests.bench.peers import LISTEN_RE, REPO, fetch_status, free_port
from tests.support.php_fpm import PhpFpm, php_fpm_program

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = ("nginx + php-fpm", "nginx + php-fpm, keepalive 2", "forkd fastcgi",
        "forkd fastcgi, connections 2", "forkd php-cgi", "nginx + php-fpm, 1 worker",
        "forkd fastcgi, 1 worker", "forkd fastcgi, 1 worker, connections 4",
        "nginx + php-fpm, 1 connection",
        "nginx + php-fpm, keepalive 2, 1 connection", "forkd fastcgi, 1 connection",
        "forkd fastcgi, connections 2, 1 connection")
HELLO = '<?php\nheader("Content-Type: text/plain");\necho "Hello, world\\n";\n'
NGINX_CONF = """\
daemon off;
worker_processes {workers};
user root root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 10240; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 30s;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        root {docroot};
        location ~ \\.php$ {{
            try_files $uri =404;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass {upstream};{keep}
        }}
    }}
    upstream php {{
        server unix:{socket};
        keepalive 2;
    }}
}}
"""
FORKD_CONF = """\
listen: ["127.0.0.1:0"]
workers: {workers}
access_log: null
error_log: {dir}/error.log
timeouts: {{keepalive: 30}}
routes:
  - prefix: /cgi/
    cgi: {{root: {docroot}, interpreters: {{.php: php-cgi}}}}
  - prefix: /
    fastcgi: {{connect: "unix:{socket}", root: {docroot}, connections: {kept}}}
"""


class Server:
    def __init__(self, name: str, argv: list[str], directory: Path, port: int = 0) -> None:
        self.name, self.argv, self.dir, self.port = name, argv, directory, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.dir / "out.log", "ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.dir, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self.port:
                found = LISTEN_RE.findall(_read(self.dir / "error.log"))
                self.port = int(found[-1].rsplit(":", 1)[1]) if found else 0
            if self.port and fetch_status(self.port, "/hello.php") == 200:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {_read(self.dir / 'out.log')[-2000:]}"
                           f"{_read(self.dir / 'error.log')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            self.proc = None


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def nginx(work: Path, docroot: Path, socket: Path, keep: bool = False, workers: int = 2) -> Server:
    """nginx + php-fpm; with `keep`, FastCGI connections kept (an upstream with keepalive 2)."""
    directory = work / f"nginx-{workers}{'-keep' if keep else ''}"
    (directory / "tmp").mkdir(parents=True)
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(
        dir=directory, port=port, docroot=docroot, socket=socket, workers=workers,
        upstream="php" if keep else f"unix:{socket}",
        keep="\n            fastcgi_keep_conn on;" if keep else ""))
    return Server("nginx + php-fpm", ["nginx", "-e", str(directory / "error.log"), "-p",
                                      str(directory), "-c", str(conf)], directory, port)


def forkd(work: Path, docroot: Path, socket: Path, workers: int, name: str,
          kept: int = 0) -> Server:
    directory = work / name
    directory.mkdir()
    conf = directory / "forkd.yaml"
    conf.write_text(FORKD_CONF.format(dir=directory, workers=workers, docroot=docroot,
                                      socket=socket, kept=kept))
    return Server(name, [sys.executable, "-m", "forkd", "-c", str(conf)], directory)


def measure(wrk: Wrk, server: Server, path: str, seconds: float,
            connections: int = 50) -> WrkResult:
    return wrk.run(f"http://127.0.0.1:{server.port}{path}", seconds, connections)


def children_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the direct children of `pid` (the workers of a
    server, the children of a php-fpm pool); 0 when /proc does not tell."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    ticks = 0
    for child in children:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_cpu(wrk: Wrk, server: Server, fpm: PhpFpm, path: str, seconds: float,
                connections: int = 50) -> dict[str, float]:
    """A wrk run, plus the CPU the server's workers and php-fpm's children spent per request
    (tells a server's own cost from the time its requests wait: the cores are shared)."""
    assert server.proc is not None and fpm.proc is not None
    before = children_cpu(server.proc.pid), children_cpu(fpm.proc.pid)
    result = measure(wrk, server, path, seconds, connections)
    after = children_cpu(server.proc.pid), children_cpu(fpm.proc.pid)
    requests = max(result.requests, 1)
    return {**result.as_dict(), "server_cpu_us": (after[0] - before[0]) / requests * 1e6,
            "fpm_cpu_us": (after[1] - before[1]) / requests * 1e6}


def run(seconds: float, repeats: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="forkd-bench-php-"))
    docroot = work / "www"
    docroot.mkdir()
    (docroot / "hello.php").write_text(HELLO)
    (docroot / "sleep.php").write_text("<?php\nsleep(1);\necho \"slept\\n\";\n")
    (docroot / "1k.txt").write_bytes(b"x" * 1024)
    pools = [PhpFpm(work / f"fpm{number}", children=4, backlog=2048) for number in range(7)]
    wrk = Wrk(work, threads=2, timeout=5)
    single = Wrk(work, threads=1, timeout=5)  # one connection: per-request latency, no queueing
    # Kept FastCGI connections: 2 per worker, 2 workers each, the pool's 4 children. On two
    # cores one worker each may do better (the workers, php-fpm and wrk share them): one forkd
    # worker opens a connection per request or keeps 4, one nginx worker opens one per request.
    servers = [nginx(work, docroot, pools[0].socket),
               nginx(work, docroot, pools[1].socket, keep=True),
               forkd(work, docroot, pools[2].socket, 2, "forkd"),
               forkd(work, docroot, pools[3].socket, 2, "forkd-kept", kept=2),
               nginx(work, docroot, pools[4].socket, workers=1),
               forkd(work, docroot, pools[5].socket, 1, "forkd-1"),
               forkd(work, docroot, pools[6].socket, 1, "forkd-1-kept", kept=4)]
    pool_of = {id(server): pool for server, pool in zip(servers, pools)}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in ROWS}
    try:
        for pool in pools:
            pool.start()
        for server in servers:
            server.start()
        ngx, ngx_kept, fkd, fkd_kept, ngx_one, fkd_one, fkd_one_kept = servers
        for _ in range(repeats):  # interleaved, so a noisy neighbour hits every row alike
            for name, server, path, driver, connections in (
                    ("nginx + php-fpm", ngx, "/hello.php", wrk, 50),
                    ("nginx + php-fpm, keepalive 2", ngx_kept, "/hello.php", wrk, 50),
                    ("forkd fastcgi", fkd, "/hello.php", wrk, 50),
                    ("forkd fastcgi, connections 2", fkd_kept, "/hello.php", wrk, 50),
                    ("forkd php-cgi", fkd, "/cgi/hello.php", wrk, 50),
                    ("nginx + php-fpm, 1 worker", ngx_one, "/hello.php", wrk, 50),
                    ("forkd fastcgi, 1 worker", fkd_one, "/hello.php", wrk, 50),
                    ("forkd fastcgi, 1 worker, connections 4", fkd_one_kept, "/hello.php", wrk,
                     50),
                    ("nginx + php-fpm, 1 connection", ngx, "/hello.php", single, 1),
                    ("nginx + php-fpm, keepalive 2, 1 connection", ngx_kept, "/hello.php",
                     single, 1),
                    ("forkd fastcgi, 1 connection", fkd, "/hello.php", single, 1),
                    ("forkd fastcgi, connections 2, 1 connection", fkd_kept, "/hello.php",
                     single, 1)):
                rows[name].append(measure_cpu(driver, server, pool_of[id(server)], path, seconds,
                                              connections))
        for server in servers:
            server.stop()
        isolation = sleeping_beside_static(work, docroot, pools[2].socket, wrk, seconds)
    finally:
        for server in servers:
            server.stop()
        for pool in pools:
            pool.stop()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wrk": wrk_version(), "php_fpm": php_fpm_program(), "seconds": seconds,
        "repeats": repeats, "cpus": os.cpu_count(),
        "hello": {name: _median(results) for name, results in rows.items()},
        "isolation": isolation,
    }


def sleeping_beside_static(work: Path, docroot: Path, socket: Path, wrk: Wrk,
                           seconds: float) -> dict[str, Any]:
    """One forkd worker: 4 clients on sleep.php while wrk -c10 times the static 1 KiB file."""
    server = forkd(work, docroot, socket, 1, "forkd-1-worker").start()
    try:
        alone = wrk.run(f"http://127.0.0.1:{server.port}/1k.txt", seconds, 10)
        sleepers: list[WrkResult] = []
        thread = threading.Thread(target=lambda: sleepers.append(wrk.run(
            f"http://127.0.0.1:{server.port}/sleep.php", seconds + 2, 4)))
        thread.start()
        time.sleep(1.0)  # the sleepers are in flight
        static = wrk.run(f"http://127.0.0.1:{server.port}/1k.txt", seconds, 10)
        thread.join()
    finally:
        server.stop()
    return {"alone": alone.as_dict(), "static": static.as_dict(),
            "sleep": sleepers[0].as_dict() if sleepers else {}}


def _median(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def one(hello: dict[str, dict[str, float]], server: str) -> dict[str, float]:
    """The 1-connection row of `server` (empty figures in results written before it existed)."""
    for name, row in hello.items():
        if name.startswith(server) and name.endswith("1 connection"):
            return row
    return {"rps": float("nan")}


def one_worker_each(hello: dict[str, dict[str, float]]) -> str:
    """The ratios of the one-worker rows (nothing in results written before they existed)."""
    forkd_one = hello.get("forkd fastcgi, 1 worker")
    forkd_kept = hello.get("forkd fastcgi, 1 worker, connections 4")
    nginx_one = hello.get("nginx + php-fpm, 1 worker")
    if forkd_one is None or forkd_kept is None or nginx_one is None:
        return ""
    return (f"; one worker each: **{forkd_one['rps'] / nginx_one['rps']:.2f}**, forkd keeping 4: "
            f"**{forkd_kept['rps'] / nginx_one['rps']:.2f}**")


def report(data: dict[str, Any]) -> str:
    hello = data["hello"]
    ngx, fkd, cgi = hello["nginx + php-fpm"], hello["forkd fastcgi"], hello["forkd php-cgi"]
    kept = hello.get("forkd fastcgi, connections 2", {"rps": float("nan")})
    lines = [
        "# PHP: forkd's fastcgi route and nginx + php-fpm",
        "",
        (f"Run {data['date']} on {data['cpus']} cores; {data['wrk']}; php-fpm {data['php_fpm']} "
         f"(pm static, 4 children, unix socket; one such pool per server). wrk -t2 -c50 "
         "(-t1 -c1 for the 1-connection rows), "
         f"{data['seconds']:g} s per run, median of {data['repeats']} interleaved repeats. "
         "Quick run; wrk, the servers and php-fpm share the cores: relative figures."),
        "",
        ("CPU µs/request: user + system time of the server's workers (php-fpm's children) "
         "divided by the requests served; on busy shared cores it includes cache and "
         "context-switch costs."),
        "",
        ("| hello.php through | requests/s | p50 ms | p99 ms | non-2xx | socket errors "
         "| server CPU µs/request | php-fpm CPU µs/request |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in hello.items():
        errors = row["connect"] + row["read"] + row["write"] + row["timeout"]
        lines.append(f"| {name} | {row['rps']:,.0f} | {row['p50_us'] / 1000:.2f} | "
                     f"{row['p99_us'] / 1000:.1f} | {row['status']:.0f} | {errors:.0f} | "
                     f"{row.get('server_cpu_us', 0):.0f} | {row.get('fpm_cpu_us', 0):.0f} |")
    lines += [
        "",
        (f"forkd fastcgi ÷ nginx + php-fpm: **{fkd['rps'] / ngx['rps']:.2f}**, with "
         f"connections 2: **{kept['rps'] / ngx['rps']:.2f}**; "
         f"forkd fastcgi ÷ forkd php-cgi: **{fkd['rps'] / max(cgi['rps'], 1):.1f}**; "
         f"one connection: **{one(hello, 'forkd')['rps'] / one(hello, 'nginx')['rps']:.2f}**"
         f"{one_worker_each(hello)}."),
        "",
        ("keepalive 2: nginx with `fastcgi_keep_conn on` and an upstream keeping 2 idle "
         "connections per worker; connections 2: forkd keeping at most 2 per worker, the others "
         "waiting in line (2 workers x 2 = the pool's 4 children for both)."),
        "",
    ]
    isolation = data["isolation"]
    alone, static, sleep = isolation["alone"], isolation["static"], isolation["sleep"]
    lines += [
        ("One forkd worker, 4 clients on a `sleep(1)` page, wrk -c10 on a static 1 KiB file "
         "meanwhile:"),
        "",
        (f"- static: {static['rps']:,.0f} requests/s, p50 {static['p50_us'] / 1000:.1f} ms, "
         f"p99 **{static['p99_us'] / 1000:.1f} ms**, max {static['max_us'] / 1000:.1f} ms"),
        (f"- the same without the sleepers: p50 {alone['p50_us'] / 1000:.1f} ms, "
         f"p99 {alone['p99_us'] / 1000:.1f} ms"),
        (f"- sleep.php: {sleep.get('requests', 0):,.0f} answers, "
         f"p50 {sleep.get('p50_us', 0) / 1000:.0f} ms"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="php", help="results file name (without extension)")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "php-cgi"):
        if shutil.which(tool) is None:
            sys.exit(f"tests.bench.php needs {tool}")
    data = run(args.seconds, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(data, indent=2) + "\n")
    text = report(data)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
