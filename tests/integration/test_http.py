"""HTTP/1.1 protocol behaviour of the real daemon, over raw sockets.

Keep-alive, pipelining, HTTP/1.0, HEAD, OPTIONS *, 100-continue, chunked request bodies, limits,
request smuggling probes (each answered once with 400/501, then the connection closes), handler
failures (500, worker survives) and connection limits. Timeouts and slow clients are in
test_http_slow.py. RawClient is shared with it.

Most tests share one daemon per module (`server`, started through the same Daemon class as the
make_daemon fixture and killed by process group at teardown): starting a daemon per test would
cost more than the tests themselves. Tests that kill workers or need another config use
make_daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import ROOT, Daemon, poll


class RawClient:
    """One TCP connection; exact bytes out, whole responses in (Content-Length, chunked or close)."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed mid-line")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self._fill():
                raise ConnectionError("closed mid-body")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next response (1xx included); header names lower-cased."""
        version, status, _ = self._line().split(b" ", 2)
        assert version == b"HTTP/1.1"
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        code = int(status)
        if head_only or code < 200 or code in (204, 304):
            return code, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            return code, headers, self._chunked()
        if "content-length" in headers:
            return code, headers, self._take(int(headers["content-length"]))
        return code, headers, self.read_to_close()

    def _chunked(self) -> bytes:
        out = []
        while size := int(self._line().split(b";")[0], 16):
            out.append(self._take(size))
            assert self._take(2) == b"\r\n"
        while self._line():
            pass
        return b"".join(out)

    def read_to_close(self) -> bytes:
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        data, self.buffer = self.buffer, b""
        return data

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes (EOF or reset) within timeout without sending more."""
        self.sock.settimeout(timeout)
        try:
            return not self.buffer and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def request(self, path: str = "/", method: str = "GET", headers: str = "",
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode() + body)
        return self.response(head_only=method == "HEAD")


# -- the site and the shared daemon ----------------------------------------------------------------

CAT_CGI = """\
#!/bin/sh
printf 'Content-Type: application/octet-stream\\nX-Content-Length: %s\\n\\n' "$CONTENT_LENGTH"
exec cat
"""

STREAM_CGI = """\
#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
printf 'first,'
sleep 0.1
printf 'second'
"""

LOOP_CGI = """\
#!/bin/sh
printf 'Location: /cgi-bin/loop.sh?again\\n\\n'
"""

# Fault injection for the handler-bug test: a site hook loaded by the daemon's interpreter makes the
# static handler raise on one path. The daemon itself is the real one, unmodified.
FAULT_HOOK = """\
import forkd.handlers.static as static

_handle = static.StaticHandler.handle


def handle(self, request):
    if request.path == "/boom":
        raise RuntimeError("secret internal detail")
    if request.path == "/bad-header":
        from forkd.http.response import Response
        return Response(200, [("X-Evil", "a\\r\\nSet-Cookie: injected=1")], b"nope")
    if request.path == "/bad-iterator":
        from forkd.http.response import Response

        def body():
            yield b"partial"
            raise OSError("the producer broke")

        return Response(200, [], body(), cleanup=lambda: open(__file__ + ".cleanups", "a").write("ran\\n"))
    return _handle(self, request)


static.StaticHandler.handle = handle
"""


def make_site(directory: Path) -> Path:
    www = directory / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>hello</h1>\n")
    (www / "1k.txt").write_bytes(b"x" * 1024)
    (www / "big.bin").write_bytes(os.urandom(1 << 20) * 16)  # 16 MiB: more than socket buffers
    cgi = directory / "cgi-bin"
    cgi.mkdir()
    (cgi / "cat.sh").write_text(CAT_CGI)
    (cgi / "stream.sh").write_text(STREAM_CGI)
    (cgi / "loop.sh").write_text(LOOP_CGI)
    for script in cgi.iterdir():
        script.chmod(0o755)
    return directory


def site_config(site: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "routes": [
            {"prefix": "/cgi-bin/", "cgi": {"root": str(site / "cgi-bin")}},
            {"prefix": "/", "static": {"root": str(site / "www")}},
        ],
    }
    config.update(overrides)
    return config


def start(directory: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> Daemon:
    directory.mkdir()
    return Daemon(directory, config, env=env).start()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[Daemon]:
    """Two workers, small limits: shared by the tests that neither kill nor reconfigure it."""
    hook = site / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    env = dict(os.environ, PYTHONPATH=f"{hook}:{ROOT}")
    daemon = start(site / "shared", site_config(
        site, workers=2, limits={"body": 100000, "request_line": 1024, "header_bytes": 4096,
                                 "headers": 20},
    ), env)
    yield daemon
    daemon.stop()


MakeDaemon = Callable[..., Daemon]  # the conftest fixture: make_daemon(config) -> a started Daemon


def connect(daemon: Daemon, timeout: float = 5.0) -> RawClient:
    return RawClient(daemon.host, daemon.port, timeout)


# -- keep-alive, pipelining, versions ----------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(server: Daemon) -> None:
    conn = connect(server)
    for _ in range(5):
        status, headers, body = conn.request("/index.html")
        assert status == 200 and body == b"<h1>hello</h1>\n"
        assert "connection" not in headers  # HTTP/1.1: persistent by default
    assert not conn.closed(0.2)
    conn.close()


def test_pipelined_requests_answered_in_order(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"
              b"HEAD /1k.txt HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET /1k.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert conn.response()[2] == b"<h1>hello</h1>\n"
    status, headers, _ = conn.response(head_only=True)
    assert status == 200 and headers["content-length"] == "1024"
    assert conn.response()[0] == 404
    status, headers, body = conn.response()
    assert status == 200 and body == b"x" * 1024 and headers["connection"] == "close"
    assert conn.closed()


def test_long_pipelines_are_answered_whole_again_and_again(server: Daemon) -> None:
    # More than a burst (16) per buffer: the rest waits for the worker's next turn, each time.
    for _ in range(4):
        conn = connect(server)
        conn.send(b"GET /1k.txt HTTP/1.1\r\nHost: a\r\n\r\n" * 40)
        for _ in range(40):
            status, _, body = conn.response()
            assert status == 200 and len(body) == 1024
        conn.close()


def test_pipelined_requests_split_at_odd_places(server: Daemon) -> None:
    data = b"GET /1k.txt HTTP/1.1\r\nHost: a\r\n\r\n" * 3
    conn = connect(server)
    for piece in (data[:10], data[10:45], data[45:46], data[46:]):
        conn.send(piece)
        time.sleep(0.02)  # pacing, not waiting: the pieces should arrive as separate segments
    for _ in range(3):
        assert conn.response()[2] == b"x" * 1024


def test_http10_closes_unless_keep_alive_asked(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"GET /1k.txt HTTP/1.0\r\n\r\n")
    status, headers, body = conn.response()
    assert status == 200 and headers["connection"] == "close" and len(body) == 1024
    assert conn.closed()
    conn = connect(server)
    conn.send(b"GET /1k.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = conn.response()
    assert headers["connection"] == "keep-alive"
    conn.send(b"GET /index.html HTTP/1.0\r\n\r\n")
    assert conn.response()[0] == 200
    assert conn.closed()


def test_connection_close_honoured(server: Daemon) -> None:
    conn = connect(server)
    _, headers, _ = conn.request("/1k.txt", headers="Connection: close\r\n")
    assert headers["connection"] == "close"
    assert conn.closed()


def test_head_has_get_headers_and_no_body(server: Daemon) -> None:
    conn = connect(server)
    get_status, get_headers, _ = conn.request("/1k.txt")
    status, headers, _ = conn.request("/1k.txt", method="HEAD")
    assert status == get_status == 200
    assert headers["content-length"] == get_headers["content-length"] == "1024"
    assert headers["etag"] == get_headers["etag"]
    # Had a body been sent, it would now be read as the next response's status line.
    assert conn.request("/index.html")[0] == 200


def test_date_and_server_headers(server: Daemon) -> None:
    _, headers, _ = connect(server).request("/index.html")
    assert headers["server"].startswith("forkd/")
    assert headers["date"].endswith(" GMT")


def test_options_asterisk_answered_by_the_server(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, body = conn.response()
    assert status == 200 and "GET" in headers["allow"] and body == b""
    assert conn.request("/1k.txt")[0] == 200


def test_absolute_form_target(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"GET http://elsewhere.example/index.html HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.response()[2] == b"<h1>hello</h1>\n"


def test_connect_is_501_and_what_follows_is_never_a_request(server: Daemon) -> None:
    """A well-formed CONNECT: forkd opens no tunnels (501, RFC 9110 §15.6.2), then closes, so the
    bytes a client sent optimistically behind it (here a request) are never served."""
    conn = connect(server)
    conn.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
              b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, _ = conn.response()
    assert status == 501
    assert headers["connection"] == "close"
    assert b"HTTP/1.1" not in conn.read_to_close()
    conn = connect(server)
    conn.send(b"CONNECT /index.html HTTP/1.1\r\nHost: a\r\n\r\n")  # not authority-form
    assert conn.response()[0] == 400


def test_leading_empty_lines_ignored(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.response()[0] == 200


def test_encoded_route_prefix_cannot_bypass_cgi_route(server: Daemon) -> None:
    """/%63gi-bin/ is /cgi-bin/ once decoded: it must run the script, never serve its source."""
    status, _, body = connect(server).request("/%63gi-bin/cat.sh", method="POST",
                                              headers="Content-Length: 3\r\n", body=b"abc")
    assert b"exec cat" not in body
    assert status == 200 and body == b"abc"


# -- files: sendfile, parts -------------------------------------------------------------------


def test_large_file_is_sent_whole_and_the_connection_reused(server: Daemon, site: Path) -> None:
    conn = connect(server, timeout=20)
    status, _, body = conn.request("/big.bin")  # far more than a socket buffer: EPOLLOUT
    assert status == 200 and body == (site / "www" / "big.bin").read_bytes()
    assert conn.request("/1k.txt")[0] == 200


def test_ranges_mix_bytes_and_file_parts(server: Daemon, site: Path) -> None:
    data = (site / "www" / "big.bin").read_bytes()
    conn = connect(server)
    status, headers, body = conn.request("/big.bin", headers="Range: bytes=0-99999\r\n")
    assert status == 206 and body == data[:100000]  # a file part larger than one inline read
    status, headers, body = conn.request("/big.bin", headers="Range: bytes=10-19,300000-300009\r\n")
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    assert data[10:20] in body and data[300000:300010] in body
    assert len(body) == int(headers["content-length"])
    status, headers, _ = conn.request("/big.bin", method="HEAD", headers="Range: bytes=0-9\r\n")
    assert status == 200 and headers["content-length"] == str(len(data))  # Range is GET-only
    assert conn.request("/1k.txt")[2] == b"x" * 1024  # the framing held throughout


# -- streamed (iterator) responses ----------------------------------------------------------


def test_streamed_response_is_chunked_on_http11(server: Daemon) -> None:
    conn = connect(server)
    status, headers, body = conn.request("/cgi-bin/stream.sh")
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers and body == b"first,second"
    assert conn.request("/index.html")[0] == 200  # the last-chunk delimited it: still usable


def test_streamed_response_is_close_delimited_on_http10(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"GET /cgi-bin/stream.sh HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert "transfer-encoding" not in headers and body == b"first,second"


def test_head_of_a_streamed_response(server: Daemon) -> None:
    conn = connect(server)
    status, headers, _ = conn.request("/cgi-bin/stream.sh", method="HEAD")
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert conn.request("/index.html")[2] == b"<h1>hello</h1>\n"  # no body was sent


def test_internal_redirect_loop_ends_in_500(server: Daemon) -> None:
    conn = connect(server)
    status, _, body = conn.request("/cgi-bin/loop.sh")
    assert status == 500 and b"500" in body
    assert conn.request("/index.html")[0] == 200


# -- request bodies ------------------------------------------------------------------------------


def test_content_length_body_reaches_the_handler(server: Daemon) -> None:
    payload = os.urandom(70000)  # spooled beyond the in-memory size
    status, headers, body = connect(server).request(
        "/cgi-bin/cat.sh", "POST", f"Content-Length: {len(payload)}\r\n", payload)
    assert status == 200 and body == payload and headers["x-content-length"] == "70000"


def test_chunked_body_is_decoded_for_the_handler(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"5\r\nhello\r\n", b"1;ext=1\r\n,\r\n", b"6\r\n world\r\n", b"0\r\nX-T: 1\r\n\r\n"):
        conn.send(piece)
        time.sleep(0.01)  # pacing, not waiting: the chunks should arrive as separate segments
    status, headers, body = conn.response()
    assert status == 200 and body == b"hello, world"
    assert headers["x-content-length"] == "12"  # CGI sees the decoded length (RFC 3875 §4.1.2)
    assert conn.request("/index.html")[0] == 200  # the framing held: the connection is reusable


def test_expect_100_continue_when_the_body_is_wanted(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
              b"Expect: 100-continue\r\n\r\n")
    status, _, _ = conn.response()
    assert status == 100  # sent before the client sent any body byte
    conn.send(b"ping")
    status, _, body = conn.response()
    assert status == 200 and body == b"ping"


def test_expect_100_continue_refused_without_continue(server: Daemon) -> None:
    """prepare() rejects the request: no 100, the final status at once, then close (body unread)."""
    conn = connect(server)
    conn.send(b"POST /index.html HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n"
              b"Expect: 100-continue\r\n\r\n")
    status, headers, _ = conn.response()
    assert status == 405 and headers["connection"] == "close"
    assert conn.closed()


def test_unknown_expectation_is_417(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 999-x\r\n\r\nx")
    assert conn.response()[0] == 417
    assert conn.closed()


def test_rejected_body_is_drained_before_close(server: Daemon) -> None:
    """A 405 to a request whose body is still arriving must reach the client intact (no RST)."""
    conn = connect(server)
    conn.send(b"POST /index.html HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n")
    conn.send(b"z" * 60000)
    status, _, body = conn.response()
    assert status == 405 and b"405" in body


def test_body_over_limit_is_413(server: Daemon) -> None:
    conn = connect(server)
    conn.send(b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 100001\r\n\r\n")
    assert conn.response()[0] == 413
    assert conn.closed()
    conn = connect(server)
    conn.send(b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"ffff\r\n" + b"a" * 0xFFFF + b"\r\n" + b"ffff\r\n")
    assert conn.response()[0] == 413


@pytest.mark.parametrize("head, status", [
    (b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(25)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 5000 + b"\r\n\r\n", 431),
])
def test_head_limits(server: Daemon, head: bytes, status: int) -> None:
    conn = connect(server)
    conn.send(head)
    assert conn.response()[0] == status
    assert conn.closed()


# -- smuggling probes: one answer, then close --------------------------------------------------

SMUGGLING = {
    "cl_te": b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "te_cl": b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
             b"Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"
                b"0\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "te_space_colon": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
                      b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "te_obs_fold": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te_chunked_identity": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n"
                           b"\r\n0\r\n\r\n",
    "te_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    "cl_signed": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
    "cl_duplicate": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n"
                    b"helloGET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunk_overflow": b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"10000000000000005\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\rGET / HTTP/1.1\r\n\r\n",
    "lf_before_body": b"POST /cgi-bin/cat.sh HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\nhello",
    "http09": b"GET /\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "double_host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_probe_gets_one_answer_then_close(server: Daemon, name: str) -> None:
    conn = connect(server)
    conn.send(SMUGGLING[name])
    status, headers, _ = conn.response()
    assert status in (400, 501, 505), name
    assert headers["connection"] == "close"
    rest = conn.read_to_close()
    assert b"HTTP/1.1" not in rest, f"{name}: a second response: {rest[:80]!r}"


# -- failures inside the server ------------------------------------------------------------------


def test_handler_exception_is_500_and_the_worker_survives(server: Daemon) -> None:
    server.expect_tracebacks(1)  # provoked: the handler fails on purpose
    workers = server.worker_pids()
    conn = connect(server)
    status, _, body = conn.request("/boom")
    assert status == 500
    assert b"secret internal detail" not in body and b"Traceback" not in body
    assert conn.request("/index.html")[0] == 200  # a 500 does not lose the connection
    assert server.worker_pids() == workers
    server.wait_for_log("secret internal detail")  # the traceback is in the error log only


def test_failing_body_iterator_aborts_only_its_connection(server: Daemon) -> None:
    server.expect_tracebacks(1)  # provoked: the handler fails on purpose
    workers = server.worker_pids()
    conn = connect(server)
    conn.send(b"GET /bad-iterator HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(ConnectionError):
        conn.response()  # chunked, but the last-chunk never comes: the connection just ends
    server.wait_for_log("the producer broke")
    cleanups = Path(server.env["PYTHONPATH"].split(":")[0]) / "sitecustomize.py.cleanups"
    assert cleanups.read_text() == "ran\n"  # the handler's cleanup ran exactly once
    assert server.worker_pids() == workers
    assert connect(server).request("/index.html")[0] == 200


def test_response_splitting_header_becomes_500(server: Daemon) -> None:
    conn = connect(server)
    status, headers, _ = conn.request("/bad-header")
    assert status == 500 and "set-cookie" not in headers


# -- many connections --------------------------------------------------------------------------


def test_200_concurrent_keep_alive_connections_on_2_workers(server: Daemon) -> None:
    conns = [connect(server, timeout=10) for _ in range(200)]
    for _round in range(2):
        for conn in conns:
            conn.send(b"GET /1k.txt HTTP/1.1\r\nHost: a\r\n\r\n")
        for conn in conns:
            status, _, body = conn.response()
            assert status == 200 and len(body) == 1024
    for conn in conns:
        conn.close()


def test_full_worker_closes_its_oldest_idle_connection(make_daemon: MakeDaemon, site: Path) -> None:
    daemon = make_daemon(site_config(site, workers=1, limits={"connections": 3}))
    conns = [connect(daemon) for _ in range(3)]
    for conn in conns:
        # Each answer is awaited: the next connection's keep-alive deadline is set on a later
        # turn of the worker's loop, so "oldest idle" is well defined without sleeping.
        assert conn.request("/index.html")[0] == 200
    newcomer = connect(daemon)
    assert newcomer.request("/index.html")[0] == 200
    assert conns[0].closed()  # the oldest idle one made room
    assert conns[2].request("/index.html")[0] == 200


def test_full_worker_without_idle_connections_answers_503(make_daemon: MakeDaemon,
                                                           site: Path) -> None:
    daemon = make_daemon(site_config(site, workers=1, limits={"connections": 2}))
    [worker] = daemon.worker_pids()
    busy = [connect(daemon) for _ in range(2)]
    for conn in busy:
        conn.send(b"GET /1k.txt HTTP/1.1\r\n")  # mid-head: not idle, cannot be closed
    poll(lambda: daemon.client_sockets(worker) == 2, 5, "the worker holds both connections")
    newcomer = connect(daemon)
    status, headers, _ = newcomer.response()
    assert status == 503 and headers["retry-after"] == "1"
    for conn in busy:
        conn.send(b"Host: a\r\n\r\n")
        assert conn.response()[0] == 200


def test_server_tokens_off(make_daemon: MakeDaemon, site: Path) -> None:
    daemon = make_daemon(site_config(site, workers=1, server_tokens=False))
    _, headers, _ = connect(daemon).request("/index.html")
    assert headers["server"] == "forkd"
    # The access log is flushed once the worker goes idle, not only when its buffer fills.
    poll(lambda: "GET /index.html HTTP/1.1" in _read(daemon.access_log), 5,
         "access log line flushed")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_worker_retires_after_worker_requests_without_failing_any(make_daemon: MakeDaemon, site: Path) -> None:
    daemon = make_daemon(site_config(site, workers=1, limits={"worker_requests": 20}))
    first = daemon.worker_pids()
    conn = connect(daemon)
    served = 0
    deadline = time.monotonic() + 15
    while first[0] in daemon.worker_pids() or served < 30:
        assert time.monotonic() < deadline, "the worker never retired"
        status, headers, _ = conn.request("/1k.txt")
        assert status == 200
        served += 1
        if headers.get("connection") == "close":  # the retiring worker's last answer
            assert conn.closed()
            conn = connect(daemon)
    daemon.wait_for_log(f"worker {first[0]} ", timeout=5)  # the master logged its exit
