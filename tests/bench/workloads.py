"""What is measured: the workloads, and how to tell that a server answered them correctly."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

from tests.bench.peers import CGI, LISTING, TLS
from tests.bench.tree import CGI_BODY, Tree


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    needs: str | None = None  # a peer feature (LISTING, CGI, TLS); peers without it are n/a
    status: int = 200  # the status every response must have
    throughput: bool = False  # big files: report MB/s
    connections: int = 50
    slow_cgi: int = 0  # requests for cgi-bin/slow.sh kept in flight while measuring (slowcgi.py)
    latency: bool = False  # the figure that matters is wrk's p99, not req/s
    tls: bool = False  # over the peer's HTTPS listener
    driver: str = "wrk"  # or "s_time-new" / "s_time-reuse": TLS handshakes (tls.py)


KEEPALIVE = Workload("1k-keepalive", "1 KiB file, keep-alive, 50 connections", "/1k.txt")
CLOSE = Workload("1k-close", "1 KiB file, Connection: close, 50 connections", "/1k.txt",
                 headers=(("Connection", "close"),))
ONE_MIB = Workload("1m", "1 MiB file, keep-alive, 50 connections", "/1m.bin", throughput=True)
TEN_MIB = Workload("10m", "10 MiB file, keep-alive, 50 connections", "/10m.bin", throughput=True)
NOT_FOUND = Workload("404", "404 Not Found, keep-alive, 50 connections", "/missing.txt",
                     status=404)
LISTING_50 = Workload("listing", "directory listing of 50 files, keep-alive, 50 connections",
                      "/list/", needs=LISTING)
CGI_HELLO = Workload("cgi", "shell CGI hello, keep-alive, 50 connections",
                     "/cgi-bin/hello.sh", needs=CGI)
SLOW_CGI = Workload("slow-cgi", "1 KiB file beside 4 slow CGI requests (a script sleeping 5 s "
                    "between two lines), keep-alive, 50 connections", "/1k.txt", needs=CGI,
                    slow_cgi=4, latency=True)
HTTPS_1K = Workload("https-1k", "1 KiB file over HTTPS (TLS 1.3, ECDSA P-256), keep-alive, "
                    "50 connections", "/1k.txt", needs=TLS, tls=True)
HTTPS_1M = Workload("https-1m", "1 MiB file over HTTPS, keep-alive, 50 connections", "/1m.bin",
                    needs=TLS, tls=True, throughput=True)
TLS_FULL = Workload("tls-full", "new TLS connections, full handshakes (openssl s_time -new, "
                    "8 in parallel), one 1 KiB GET each", "/1k.txt", needs=TLS, tls=True,
                    driver="s_time-new", connections=8)
TLS_RESUMED = Workload("tls-resumed", "new TLS connections, resumed sessions (openssl s_time "
                       "-reuse, 8 in parallel), one 1 KiB GET each", "/1k.txt", needs=TLS,
                       tls=True, driver="s_time-reuse", connections=8)
CAPACITY = Workload("capacity", "1 KiB file, 50 connections, while 5,000 idle keep-alive "
                    "connections are held open", "/1k.txt")

MEASURED = (KEEPALIVE, CLOSE, ONE_MIB, TEN_MIB, NOT_FOUND, LISTING_50, CGI_HELLO, SLOW_CGI,
            HTTPS_1K, HTTPS_1M, TLS_FULL, TLS_RESUMED)
ALL = MEASURED + (CAPACITY,)

# The request mix of the memory test: wrk cycles through it (see drive.MIX_LUA for the syntax).
# No HEAD: wrk cannot tell a HEAD response has no body and waits for one until its timeout.
MIX = (
    *["GET /1k.txt"] * 24,
    "GET /1k.txt If-Modified-Since: Tue, 01 Jan 2030 00:00:00 GMT",
    "GET /list/file03.txt If-None-Match: *",
    "GET /1k.txt Range: bytes=0-99", "GET /1k.txt Range: bytes=-10",
    "GET /1k.txt?query=string", "GET /list/file%30%37.txt",
    "GET /1k.txt Connection: close", "GET /list/file01.txt Connection: close",
    "GET /missing.txt", "GET /list/missing", "GET /../etc/passwd",
    "GET /list/", "GET /list/", "GET /list",
    "GET /1m.bin",
    "GET /cgi-bin/hello.sh", "GET /cgi-bin/hello.sh?a=b", "GET /cgi-bin/missing.sh",
    *[f"GET /list/file{i:02d}.txt" for i in range(12)],
)


def check_first_response(port: int, workload: Workload, tree: Tree) -> str | None:
    """Fetch once and compare with what the tree says; None when right, else the reason.
    `port` is the peer's HTTPS port for a TLS workload (the certificate is not verified)."""
    try:
        if workload.tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=10, context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", workload.path, headers=dict(workload.headers))
        response = conn.getresponse()
        body = response.read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"first request failed: {exc!r}"
    if response.status != workload.status:
        return f"status {response.status}, expected {workload.status}"
    if workload.path in tree.sizes and len(body) != tree.sizes[workload.path]:
        return f"body of {len(body)} bytes, expected {tree.sizes[workload.path]}"
    if workload.path.startswith("/cgi-bin/") and body != CGI_BODY:
        return f"CGI body {body[:40]!r}, expected {CGI_BODY!r}"
    if workload.needs == LISTING:
        missing = [n for n in tree.listing_names() if n.encode() not in body]
        if missing:
            return f"listing lacks {len(missing)} of {len(tree.listing_names())} names"
    return None
