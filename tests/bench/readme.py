"""Rewrite the "## Benchmarks" section of README.md from results/latest.json.

    python3 -m tests.bench.readme

Only that section changes (up to the next "## " heading); the rest of README.md belongs to others.
Kept apart from the run itself so that running the benchmark never edits the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.bench import report

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Benchmarks"

INTRO = """\
forkd is measured in the same run, on the same files and the same loopback, as nginx, lighttpd,
Apache httpd (prefork with mod_cgi), gunicorn (sync and gthread, with a small WSGI app serving the
same files) and `python3 -m http.server`. One command starts them all with equivalent set-ups
(2 workers where the server has workers, sendfile, no access log, 30 s keep-alive), drives them
with wrk, stops them (also on Ctrl-C) and writes the tables and the chart:

```sh
python3 -m pip install -e '.[bench]'           # matplotlib, gunicorn, Flask, Django
apt-get install -y nginx lighttpd apache2 wrk openssl  # done by the harness when run as root
python3 -m tests.bench           # full, ~11 min on 2 cores: tests/bench/results/latest.{md,png,json}
python3 -m tests.bench --quick   # under 2 minutes: tests/bench/results/quick.{md,png,json}
python3 -m tests.bench.readme    # copy the latest results into this section
```

`--only nginx,forkd-nolog` and `--workloads 1k-keepalive,cgi` narrow a run; `--help` lists the rest.
Workloads: a 1 KiB file with keep-alive and with `Connection: close`, 1 MiB and 10 MiB files (MB/s),
a 404, a directory listing of 50 files, a shell CGI "hello", a WSGI "hello" as a plain app, in
Flask and as a Django view (forkd's `wsgi` route and gunicorn run the same apps from
`tests/bench/wsgi_app.py`), all with 50 connections; "beside
slow CGI": the 1 KiB file (p99 latency and req/s) while 4 requests for a script that prints a
line, sleeps 5 s and prints another are kept in flight (servers with CGI only: a worker that
waited for its script would stall every connection it carries); HTTPS (forkd and nginx, the
same ECDSA P-256 certificate made by `openssl req` in the run's directory, the same Mozilla
intermediate profile): the 1 KiB file with keep-alive, the 1 MiB file (MB/s), new connections per
second with full handshakes and with resumed sessions; capacity: the 1 KiB file while 5,000 idle
keep-alive connections are held open; memory: forkd's RSS around 1,000,000 mixed requests.
Measurements are interleaved across servers and repeated three times (medians). Every run checks
the first response (status, size, body) and that all responses had the expected status: a server
that answers errors fast is disqualified (DQ), not fast. The harness (`tests/bench/`) is never run
by pytest or CI.

Read the figures as relative: wrk runs on the same cores as the servers and takes its share of
the CPU, so nobody gets the whole machine. Reading the rows: forkd caches a rendered directory
listing until the directory changes, where nginx, lighttpd and Apache render it on each request;
gunicorn sync and `http.server` (HTTP/1.0) close every connection, so they hold no idle ones in the
capacity row; Apache prefork parks one process per idle keep-alive connection (150 at most), so
with 5,000 idle clients new ones get no answer at all. wrk's latency percentiles count only the
requests that completed within its 2 s timeout, and a connection stalled until the end of a run
adds no sample at all; so the slow-CGI row also runs a probe (4 keep-alive connections timing a
GET every 20 ms, waiting out any stall) and marks a server *stalled* when wrk got no answer or
the probe waited longer than 2 s (`latest.md` has the probe's maximum and how many scripts were
alive throughout). lighttpd buffers a CGI answer (the client sees the first line only when the
script ends); forkd and Apache pass it on as it comes. HTTPS: wrk negotiates TLS 1.3 (X25519,
AES-256-GCM) and makes one handshake per connection, so the keep-alive rows measure the
encryption, not handshakes. For handshakes wrk is no use: with `Connection: close` it offers the
closed connection's session again, so it measures resumptions. The two handshake rows use
`openssl s_time` instead (8 in parallel, each connection one `GET /1k.txt HTTP/1.0`): `-new`
makes a full handshake every time, `-reuse` offers the session of its first connection, and its
per-connection marks are counted, so a row says how many handshakes were really full or resumed.
These clients share the two cores and spend about as much CPU per full handshake as the server,
so a fast server's figure there is partly the clients' limit.
"""


def section(results: dict) -> str:
    lines = [HEADING, "", INTRO, "### Latest results", "", report.machine_line(results), "",
             report.settings_line(results), ""]
    lines += [("Requests per second (MB/s for the 1 MiB and 10 MiB files, plain and HTTPS; "
              "connections per second for the TLS handshake rows; capacity: requests per second "
              "for the 1 KiB file beside the idle connections; p99 latency of the 1 KiB GETs "
              "beside slow CGI scripts):"), ""]
    lines += report.summary_table(results)[2:]  # the table without its own heading
    lines += ["", ("![forkd and its peers, requests per second by workload]"
              "(tests/bench/results/latest.png)"), ""]
    lines += [line.replace("## ", "#### ", 1) if line.startswith("## ") else line
              for line in report.memory_table(results)]
    lines += [("Every workload's table (p99 latency, socket errors, ratio to nginx), the capacity "
              "details and the server versions: [tests/bench/results/latest.md]"
              "(tests/bench/results/latest.md); raw numbers: `latest.json`."), ""]
    php = Path(__file__).parent / "results" / "php.json"
    if php.exists():
        lines += php_section(json.loads(php.read_text()))
    return "\n".join(lines)


PHP_ROWS = (  # results/php.json row -> how the README names it
    ("nginx + php-fpm", "nginx + php-fpm (a connection per request)"),
    ("nginx + php-fpm, keepalive 2", "nginx + php-fpm, `fastcgi_keep_conn` + upstream `keepalive 2`"),
    ("forkd fastcgi", "forkd `fastcgi`, `connections: 0`"),
    ("forkd fastcgi, connections 2", "forkd `fastcgi`, `connections: 2`"),
    ("forkd php-cgi", "forkd `cgi` with php-cgi"),
    ("nginx + php-fpm, 1 worker", "nginx + php-fpm, 1 worker"),
    ("forkd fastcgi, 1 worker", "forkd `fastcgi`, 1 worker, `connections: 0`"),
    ("forkd fastcgi, 1 worker, connections 4", "forkd `fastcgi`, 1 worker, `connections: 4`"),
)


def php_section(data: dict) -> list[str]:
    """### PHP through php-fpm, from results/php.json (`python3 -m tests.bench.php`)."""
    hello = data["hello"]
    if not all(key in hello for key, _ in PHP_ROWS):
        return []  # written before these rows existed
    lines = ["### PHP through php-fpm", "", (
        "`python3 -m tests.bench.php` (about 2.5 minutes; `--repeats 5` about 4.5; "
        "`tests/bench/results/php.md`) drives `hello.php` through forkd's `fastcgi` route and "
        "through nginx, each server with 2 workers (or 1 where the row says so) and its own "
        "php-fpm pool of 4 children (pm static, a unix socket), wrk -t2 -c50, "
        f"{data['seconds']:g} s runs, medians of {data['repeats']} interleaved repeats. "
        f"Run {data['date']}:"), "",
        "| hello.php through | req/s | p99 ms | server CPU µs/request | php-fpm CPU µs/request |",
        "|---|---:|---:|---:|---:|"]
    for key, name in PHP_ROWS:
        row = hello[key]
        fpm = "" if key == "forkd php-cgi" else f"{row['fpm_cpu_us']:.0f}"
        lines.append(f"| {name} | {row['rps']:,.0f} | {row['p99_us'] / 1000:.1f} | "
                     f"{row['server_cpu_us']:.0f} | {fpm} |")
    nginx, plain = hello["nginx + php-fpm"]["rps"], hello["forkd fastcgi"]["rps"]
    kept, cgi = hello["forkd fastcgi, connections 2"]["rps"], hello["forkd php-cgi"]["rps"]
    static = data["isolation"]["static"]
    one_forkd = hello["forkd fastcgi, 1 worker"]["rps"]
    one_kept = hello["forkd fastcgi, 1 worker, connections 4"]["rps"]
    one_nginx = hello["nginx + php-fpm, 1 worker"]["rps"]
    plain_row, nginx_row = hello["forkd fastcgi"], hello["nginx + php-fpm"]
    lines += ["", (
        f"With two workers each, forkd is at {plain / nginx:.2f}× nginx with a connection per "
        f"request and {kept / nginx:.2f}× with kept connections; the fastcgi route does "
        f"{plain / max(cgi, 1):.0f}× forkd's own php-cgi route. With one worker each (fewer "
        f"processes taking turns on the two cores) forkd is at {one_forkd / one_nginx:.2f}× "
        f"nginx ({one_kept / one_nginx:.2f}× keeping 4 connections). A php-fpm child reads until "
        "the end of its input before it takes its next connection; forkd half-closes each "
        "connection once the request is sent, so that end comes at once, while behind nginx it "
        "comes with nginx's close. Where forkd is behind, it is its worker's own CPU per request "
        f"({plain_row['server_cpu_us']:.0f} µs against nginx's "
        f"{nginx_row['server_cpu_us']:.0f} with two workers), and in it the Python interpreter: "
        "a worker makes the same system calls as nginx and spends about the same system time, "
        "but its user time is several times nginx's. What forkd does not repeat per request: a "
        "path's walk (only the stat calls), the params of the connection and of the script, a "
        "header block already seen, and, with kept connections, the epoll_ctl of a connection "
        "changing hands. nginx keeping connections shows the hazard `connections` avoids: its "
        "idle kept connections hold every child of the pool, and requests on new connections "
        "wait behind them (its p99). One forkd worker serving a `sleep(1)` page to 4 clients "
        f"keeps a static file's p99 at {static['p99_us'] / 1000:.1f} ms."), ""]
    return lines


def replace_section(readme: str, new: str) -> str:
    start = readme.find(HEADING + "\n")
    if start < 0:
        return readme.rstrip("\n") + "\n\n" + new
    end = readme.find("\n## ", start + len(HEADING))
    tail = readme[end + 1:] if end >= 0 else ""
    return readme[:start] + new + ("\n" + tail if tail else "")


def main() -> int:
    results = json.loads((Path(__file__).parent / "results" / "latest.json").read_text())
    path = REPO / "README.md"
    path.write_text(replace_section(path.read_text(), section(results)))
    print(f"updated the {HEADING!r} section of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
