"""WebSocket routes end to end: the real daemon, real clients (the `websockets` library, and a raw
client for what no library sends), real programs from tests/websocket/."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import statistics
import struct
import time
from pathlib import Path

import pytest
import trustme
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.daemon import ROOT, Daemon, poll
from tests.support.websocket import RawClient, frame

PROGRAMS = ROOT / "tests" / "websocket"
ECHO = str(PROGRAMS / "echo.sh")
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def site(make_daemon, tmp_path: Path, routes: dict[str, dict], workers: int = 1,
         **config: object) -> Daemon:
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("static hello")
    entries: list[dict] = [{"prefix": prefix, "websocket": settings}
                           for prefix, settings in routes.items()]
    entries.append({"prefix": "/", "static": {"root": str(www)}})
    return make_daemon({"workers": workers, "routes": entries, **config})


def url(daemon: Daemon, path: str = "/ws/", scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{daemon.port}{path}"


def raw(daemon: Daemon, path: str = "/ws/", headers: dict[str, str] | None = None,
        port: int | None = None) -> RawClient:
    sock = socket.create_connection(("127.0.0.1", port or daemon.port), timeout=10)
    return RawClient(sock, path, headers)


def close_code(ws: ClientConnection) -> int:
    """Wait for the server to close; the code of its close frame."""
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            ws.recv(timeout=10)
    assert caught.value.rcvd is not None, "no close frame from the server"
    return caught.value.rcvd.code


def opened(uri: str, **options: object) -> ClientConnection:
    """A connection the test closes itself (connect() outside a `with`)."""
    return connect(uri, **options).__enter__()  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


# -- messages ----------------------------------------------------------------------------------------

def test_echo_text_fragments_pings_and_big_messages(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO]}})
    with connect(url(daemon)) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send("κόσμε ✓")
        assert ws.recv(timeout=5) == "κόσμε ✓"
        ws.send(["frag", "men", "ted"])  # one message in three frames
        assert ws.recv(timeout=5) == "fragmented"
        assert ws.ping(b"are you there").wait(5)
        big = "0123456789" * 60_000  # 600 KB: more than the buffers between socket and program
        ws.send(big)
        assert ws.recv(timeout=10) == big
        for i in range(100):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=5) for _ in range(100)] == [f"message {i}" for i in range(100)]
    poll(lambda: '"GET /ws/ HTTP/1.1" 101 ' in daemon.access_log.read_text(), 5,
         "the WebSocket in the access log once it ended")


def test_binary_mode_passes_bytes_both_ways(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/bin/": {"command": [ECHO], "binary": True}})
    with connect(url(daemon, "/bin/")) as ws:
        ws.send(b"\x00\x01\xfe\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xfe\xff"


def test_the_program_sees_the_cgi_environment(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/env": {"command": [str(PROGRAMS / "env.sh")]}})
    with connect(url(daemon, "/env/extra?a=1"), additional_headers={"X-Test": "yes"}) as ws:
        lines = [ws.recv(timeout=5) for _ in range(11)]
        assert close_code(ws) == 1000
    assert "REQUEST_METHOD=GET" in lines and "SCRIPT_NAME=/env" in lines
    assert "PATH_INFO=/extra" in lines and "QUERY_STRING=a=1" in lines
    assert "HTTP_X_TEST=yes" in lines and "REMOTE_ADDR=127.0.0.1" in lines
    assert "GATEWAY_INTERFACE=CGI/1.1" in lines and "REQUEST_SCHEME=http" in lines
    assert lines[-1] == str(daemon.dir)  # the working directory: the config file's


def test_chat_among_three_clients(make_daemon, tmp_path) -> None:
    room = tmp_path / "room.log"
    daemon = site(make_daemon, tmp_path, {"/chat": {"command": [str(PROGRAMS / "chat.sh"),
                                                                str(room)]}})
    clients = [opened(url(daemon, "/chat")) for _ in range(3)]
    try:
        # tail -f starts in the background: wait until each client's program follows the room.
        for i, ws in enumerate(clients):
            deadline = time.monotonic() + 10
            while True:
                ws.send(f"hello from {i}")
                try:
                    if ws.recv(timeout=0.3) == f"hello from {i}":
                        break
                except TimeoutError:
                    assert time.monotonic() < deadline, "chat program never joined the room"
        for ws in clients:  # drain the greetings of the others
            while True:
                try:
                    ws.recv(timeout=0.5)
                except TimeoutError:
                    break
        clients[1].send("the news")
        for ws in clients:
            assert ws.recv(timeout=5) == "the news"
    finally:
        for ws in clients:
            ws.close()


# -- RFC 6455 through the daemon (Autobahn 1-7 and 9, the cases that need no library) -------------

GOOD = [  # (frames sent, payloads echoed)
    (frame(TEXT, b"x" * 125), [b"x" * 125]),
    (frame(TEXT, b"y" * 65536), [b"y" * 65536]),
    (frame(TEXT, b"a", fin=False) + frame(PING, b"p") + frame(CONTINUATION, b"b"), [b"ab"]),
    (frame(TEXT, "κό".encode()[:3], fin=False) + frame(CONTINUATION, "κό".encode()[3:]),
     ["κό".encode()]),
    (frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"") + frame(TEXT, b"z"), [b"", b"z"]),
]
BAD = [  # (frames sent, close code expected)
    (frame(TEXT, b"hello", masked=False), 1002),  # unmasked
    (frame(TEXT, b"x", rsv=1), 1002),
    (frame(5, b"x"), 1002),  # reserved opcode
    (frame(11, b"x"), 1002),
    (frame(PING, b"x" * 126), 1002),
    (frame(PING, b"x", fin=False), 1002),
    (frame(CONTINUATION, b"orphan"), 1002),
    (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
    (frame(TEXT, b"\xce\xba\xed\xa0\x80"), 1007),  # a surrogate
    (frame(TEXT, b"\xce", fin=False) + frame(CONTINUATION, b"\xff"), 1007),
    (frame(TEXT, b"\xce\xba\xe1"), 1007),  # truncated at the end
    (frame(CLOSE, struct.pack("!H", 1005)), 1002),
    (frame(CLOSE, struct.pack("!H", 999)), 1002),
    (frame(CLOSE, b"\x03"), 1002),
    (frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
    (frame(BINARY, b"", length=70_000), 1009),  # the header alone is too big
]


def test_autobahn_cases_through_the_daemon(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO], "max_message": 1000 + 65536}})
    for data, echoed in GOOD:
        client = raw(daemon)
        assert client.status == 101
        client.send(data)
        for payload in echoed:
            got = client.read_frame()
            while got is not None and got[0] == PONG:
                got = client.read_frame()
            assert got == (TEXT, payload)
        client.send(frame(CLOSE, struct.pack("!H", 1000)))
        assert client.read_close() == 1000
        assert client.at_end()
    for data, code in BAD:
        client = raw(daemon)
        client.send(data)
        assert client.read_close() == code, data[:20]
        assert client.at_end()


def test_close_codes_are_echoed_and_the_connection_ends(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO]}})
    for code in (1000, 1001, 3000, 4999):
        client = raw(daemon)
        client.send(frame(CLOSE, struct.pack("!H", code) + b"bye"))
        assert client.read_close() == code
        assert client.at_end()
    client = raw(daemon)
    client.send(frame(CLOSE))  # no code at all: answered without one
    assert client.read_frame() == (CLOSE, b"")


def test_oversize_messages_close_with_1009(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO], "max_message": 1000}})
    with connect(url(daemon)) as ws:
        ws.send("x" * 1000)
        assert ws.recv(timeout=5) == "x" * 1000
        ws.send("x" * 1001)
        assert close_code(ws) == 1009
    with connect(url(daemon)) as ws:
        ws.send(["x" * 600, "x" * 600])  # every frame is small: the whole message is not
        assert close_code(ws) == 1009
    # A client still sending its too-big message gets the close frame, not a reset.
    client = raw(daemon)
    client.send(frame(BINARY, b"y" * 512 * 1024))
    assert client.read_close() == 1009
    assert client.at_end()


# -- the handshake ------------------------------------------------------------------------------------

def test_handshake_refusals(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO]}})
    status, headers, _ = daemon.get("/ws/")
    assert status == 426 and headers["upgrade"] == "websocket"
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    status, headers, _ = daemon.get("/ws/", {**upgrade, "Sec-WebSocket-Version": "8"})
    assert status == 426 and headers["sec-websocket-version"] == "13"
    status, _, _ = daemon.get("/ws/", {**upgrade, "Sec-WebSocket-Version": "13",
                                       "Sec-WebSocket-Key": "short"})
    assert status == 400
    assert raw(daemon, headers={"Sec-WebSocket-Version": "13"}).status == 101


def test_origins(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {
        "/same/": {"command": [ECHO]},
        "/listed/": {"command": [ECHO], "origins": ["https://app.example.com"]},
    })
    own = f"http://127.0.0.1:{daemon.port}"
    with connect(url(daemon, "/same/"), origin=own) as ws:  # type: ignore[arg-type]
        ws.send("same origin")
        assert ws.recv(timeout=5) == "same origin"
    for path, origin in (("/same/", "https://evil.example"), ("/same/", "null"),
                         ("/same/", "http://127.0.0.1:1"), ("/listed/", own),
                         ("/listed/", "https://app.example.com.evil.example")):
        with pytest.raises(InvalidStatus) as caught:
            connect(url(daemon, path), origin=origin)  # type: ignore[arg-type]
        assert caught.value.response.status_code == 403, (path, origin)
    with connect(url(daemon, "/listed/"), origin="https://App.Example.com:443") as ws:  # type: ignore[arg-type]
        ws.send("listed")
        assert ws.recv(timeout=5) == "listed"


def test_max_processes_answers_503_beyond_it(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO], "max_processes": 2}})
    first, second = opened(url(daemon)), opened(url(daemon))
    with pytest.raises(InvalidStatus) as caught:
        connect(url(daemon))
    assert caught.value.response.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "1"
    first.close()
    second.send("still here")
    assert second.recv(timeout=5) == "still here"

    def room_again() -> bool:
        try:
            opened(url(daemon)).close()
            return True
        except InvalidStatus:
            return False

    poll(room_again, 10, "a program slot after a client left")
    second.close()


# -- programs and endings ------------------------------------------------------------------------------

def test_program_exit_status_becomes_the_close_code(make_daemon, tmp_path) -> None:
    exit_sh = str(PROGRAMS / "exit.sh")
    daemon = site(make_daemon, tmp_path, {"/ok": {"command": [exit_sh, "0"]},
                                          "/fail": {"command": [exit_sh, "3"]}})
    with connect(url(daemon, "/ok")) as ws:
        assert ws.recv(timeout=5) == "bye"
        assert close_code(ws) == 1000
    with connect(url(daemon, "/fail")) as ws:
        assert ws.recv(timeout=5) == "bye"
        assert close_code(ws) == 1011
    daemon.wait_for_log("program ended (exit status 3)")


def test_client_close_ends_the_program_and_its_group(make_daemon, tmp_path) -> None:
    stubborn = tmp_path / "stubborn.sh"
    stubborn.write_text("#!/bin/sh\ntrap '' TERM\necho $$\nsleep 60 &\nwait\n")
    stubborn.chmod(0o755)
    daemon = site(make_daemon, tmp_path, {"/pid": {"command": [str(PROGRAMS / "pid.sh")]},
                                          "/stubborn": {"command": [str(stubborn)]}})
    for path in ("/pid", "/stubborn"):
        ws = opened(url(daemon, path))
        pid = int(ws.recv(timeout=5))
        assert not gone(pid)
        ws.close()
        poll(lambda pid=pid: gone(pid), 10, f"{path}: program {pid} gone after the client closed")
    client = raw(daemon, "/pid")
    pid = int(client.read_frame()[1])  # type: ignore[index]
    client.sock.close()  # no close frame: the connection just ends
    poll(lambda: gone(pid), 10, f"program {pid} gone after the client vanished")


def test_idle_clients_are_pinged_and_silent_ones_dropped(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO], "ping_interval": 0.5}})
    with connect(url(daemon), ping_interval=None) as ws:  # answers pings, never sends its own
        time.sleep(2)
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"
    client = raw(daemon)
    started = time.monotonic()
    assert client.read_frame() == (PING, b"forkd")
    assert client.at_end()  # it never answers: dropped after another interval
    assert time.monotonic() - started < 5


def test_back_pressure_client_to_program(make_daemon, tmp_path) -> None:
    """A program that reads nothing: the server stops reading the socket, the client blocks."""
    daemon = site(make_daemon, tmp_path, {"/deaf": {"command": [str(PROGRAMS / "deaf.sh")],
                                                     "ping_interval": 0.5}})
    client = raw(daemon, "/deaf")
    client.sock.settimeout(2)
    message = frame(TEXT, b"x" * 65535)
    sent = 0
    with pytest.raises(TimeoutError):
        while sent < 256 * 1024 * 1024:
            client.sock.sendall(message)
            sent += len(message)
    assert sent < 64 * 1024 * 1024  # kernel buffers, a pipe and HIGH_WATER: far from unbounded
    # The server cannot read the client's pongs now; that is the program's doing, not the
    # client's: the connection is not dropped as silent.
    client.sock.settimeout(3)
    with pytest.raises(TimeoutError):
        while True:
            got = client.read_frame()
            assert got is not None, "a client was dropped because its program was slow"
            assert got[0] == PING


def worker_rss(daemon: Daemon) -> int:
    pid = daemon.worker_pids()[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_back_pressure_program_to_client(make_daemon, tmp_path) -> None:
    """A program that writes for ever to a client that reads slowly: the worker's memory stays."""
    daemon = site(make_daemon, tmp_path, {"/flood": {"command": [str(PROGRAMS / "flood.sh")]}})
    client = raw(daemon, "/flood")
    assert client.read_frame()[0] == TEXT  # type: ignore[index]
    before = worker_rss(daemon)
    time.sleep(2)  # `yes` writes hundreds of MB/s if nothing holds it back
    assert worker_rss(daemon) - before < 32 * 1024 * 1024
    for _ in range(10_000):  # and the flow goes on when the client reads
        assert client.read_frame() == (TEXT, b"flood of lines, the client decides how fast")


# -- TLS, load, reload and stop ---------------------------------------------------------------------

def test_wss_over_tls(make_daemon, tmp_path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "site.pem", tmp_path / "site.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO]}},
                  listen=[{"address": "127.0.0.1:0", "tls": True}],
                  tls={"certificates": [{"cert": str(cert), "key": str(key)}]})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with connect(url(daemon, scheme="wss"), ssl=context) as ws:
        ws.send("secret")
        assert ws.recv(timeout=5) == "secret"
        big = "z" * 600_000  # several TLS records, and more than one TLS send, each way
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("bye")
        assert ws.recv(timeout=5) == "bye"


def test_static_stays_fast_while_100_websockets_are_open(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO]}})  # one worker
    sockets = [opened(url(daemon)) for _ in range(100)]
    try:
        for i, ws in enumerate(sockets):
            ws.send(f"hello {i}")
        assert [ws.recv(timeout=10) for ws in sockets] == [f"hello {i}" for i in range(100)]
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        times = []
        for _ in range(50):
            started = time.monotonic()
            conn.request("GET", "/index.html")
            assert conn.getresponse().read() == b"static hello"
            times.append(time.monotonic() - started)
        conn.close()
        assert statistics.median(times) < 0.05, times  # milliseconds, on a loaded machine
        for ws in sockets:
            ws.send("still")
        assert all(ws.recv(timeout=10) == "still" for ws in sockets)
    finally:
        for ws in sockets:
            ws.close()


def test_1000_concurrent_echo_connections_on_2_workers(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO], "max_processes": 1000}},
                  workers=2)
    clients = []
    for _ in range(1000):
        client = raw(daemon)
        assert client.status == 101, client.head
        clients.append(client)
    for i, client in enumerate(clients):
        client.send(frame(TEXT, b"echo %d" % i))
    for i, client in enumerate(clients):
        assert client.read_frame() == (TEXT, b"echo %d" % i)
    for client in clients:
        client.send(frame(CLOSE, struct.pack("!H", 1000)))
    for client in clients:
        assert client.read_close() == 1000
        client.sock.close()
    workers = daemon.worker_pids()
    assert len(workers) == 2

    def programs_left() -> int:
        return sum(len(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
                   for pid in workers)

    poll(lambda: programs_left() == 0, 20, "every program stopped and reaped")
    assert all(daemon.client_sockets(pid) == 0 for pid in workers)
    assert "[error]" not in daemon.log()


def test_reload_keeps_websockets_and_stop_closes_them_with_1001(make_daemon, tmp_path) -> None:
    daemon = site(make_daemon, tmp_path, {"/ws/": {"command": [ECHO]}},
                  timeouts={"graceful": 5})
    ws = opened(url(daemon))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("ready: generation 2")
    ws.send("after the reload")
    assert ws.recv(timeout=5) == "after the reload"  # the old worker still serves it
    with connect(url(daemon)) as fresh:  # and the new generation serves new ones
        fresh.send("new")
        assert fresh.recv(timeout=5) == "new"
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert close_code(fresh) == 1001
        assert close_code(ws) == 1001
        assert time.monotonic() - started < 10
