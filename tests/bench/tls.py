"""HTTPS rows: the benchmark's certificate, and counting TLS handshakes with `openssl s_time`.

The certificate is an ECDSA P-256 one, self-signed by `openssl req` for localhost and 127.0.0.1,
made fresh in the run's work directory; forkd and nginx both serve it, with the same profile
(Mozilla intermediate: forkd.tls's cipher list and ffdhe2048 group are handed to nginx), so
every client negotiates the same thing with both: TLS 1.3, X25519, TLS_AES_256_GCM_SHA384.

Keep-alive HTTPS is measured by wrk (an https:// URL). New connections are not: wrk keeps the
TLS session of a connection it closes and offers it again when it reconnects, so wrk with
`Connection: close` measures *resumed* handshakes after the first two (checked with nginx's
$ssl_session_reused). The handshake rows therefore use `openssl s_time`, which says what it did:
`-new` makes a full handshake per connection and never offers a session, `-reuse` offers the
session of its first connection every time; each connection then sends `GET /1k.txt HTTP/1.0`
and reads the answer to the end. s_time prints one character per connection ('r' for a resumed
session, '*' for a full handshake); those are counted, so a server that does not resume shows
it instead of being credited with resumptions it did not do. s_time runs one connection at a
time, so several run in parallel, and the rate is the connections of all of them over the wall
time from their start to the last exit (s_time's own "real seconds" are whole seconds).

On a machine this small the clients are not free: a full handshake costs the client about as
much as the server (an ECDSA verify and the key exchange against a sign and the key exchange),
so the figure of a fast server is partly the client's limit, and ratios are flattered.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.bench.drive import WrkFailed, WrkResult

CONNECTION_MARKS = re.compile(r"^[r*t3]+$")  # s_time's progress line: one character a connection


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed ECDSA P-256 certificate and key for localhost: (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0:
        raise OSError(f"openssl req failed: {out.stderr.strip()}")
    cert.chmod(0o644)
    key.chmod(0o600)  # both servers read it as root, before dropping privileges
    return cert, key


def s_time(port: int, path: str, seconds: float, clients: int, reuse: bool,
           ) -> tuple[WrkResult, dict[str, Any]]:
    """Run `clients` parallel `openssl s_time`; a WrkResult without latencies, and the counts."""
    argv = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-reuse" if reuse else "-new",
            "-time", f"{max(seconds, 1):.0f}", "-www", path]
    began = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(clients)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=seconds + 30))
    except subprocess.TimeoutExpired:
        raise WrkFailed(f"openssl s_time did not finish: {' '.join(argv)}") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - began
    full = resumed = bytes_read = failed = 0
    problem = ""
    for proc, (stdout, stderr) in zip(procs, outputs):
        marks = "".join(line for line in stdout.splitlines() if CONNECTION_MARKS.match(line))
        resumed += marks.count("r")
        full += len(marks) - marks.count("r")
        found = re.search(r"bytes read (\d+)", stdout)
        bytes_read += int(found.group(1)) if found else 0
        if proc.returncode != 0 or not found:
            failed += 1
            problem = problem or (stderr.strip() or stdout.strip())[-200:]
    connections = full + resumed
    if connections == 0:
        raise WrkFailed(f"openssl s_time made no connection: {problem}")
    result = WrkResult(requests=connections, bytes=bytes_read,
                       duration_us=int(elapsed * 1e6), connect=failed, read=0, write=0,
                       status=0, timeout=0, p50_us=0, p90_us=0, p99_us=0, max_us=0,
                       latency=False)
    counts = {"full": full, "resumed": resumed, "clients": clients, "failed_clients": failed,
              "bytes_per_connection": bytes_read // connections, "client_problem": problem}
    return result, counts
