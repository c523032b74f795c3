"""CGI through the real daemon: real scripts (sh, Python, php-cgi) and real clients (http.client, raw sockets).

One daemon serves the whole module (starting one per test would cost more than the tests). Its routes
share the scripts in tests/cgi: /cgi/ (generous timeout), /fast/ (timeout 1 s, for the timeout faults),
/under/ (underscore_headers), /demo/ (the demo scripts of conf/cgi-bin).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import LISTEN_RE, ROOT, Daemon, poll
from tests.support.tools import need_root, need_tool

SCRIPTS = ROOT / "tests" / "cgi"
PHP_CGI = shutil.which("php-cgi")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("cgi")
    www = directory / "www"
    www.mkdir()
    (www / "index.html").write_text("static\n")
    interpreters = {".php": PHP_CGI} if PHP_CGI else {}
    config = {
        "workers": 2,
        "limits": {"body": 64 * 1024 * 1024},
        "routes": [
            {"prefix": "/cgi/", "cgi": {"root": str(SCRIPTS), "timeout": 20, "interpreters": interpreters,
                                        "env": {"FORKD_TEST_VAR": "set"}, "pass_env": ["FORKD_PASSED"]}},
            {"prefix": "/fast/", "cgi": {"root": str(SCRIPTS), "timeout": 1}},
            {"prefix": "/under/", "cgi": {"root": str(SCRIPTS), "underscore_headers": True}},
            {"prefix": "/demo/", "cgi": {"root": str(ROOT / "conf" / "cgi-bin"),
                                         "env": {"GUESTBOOK_DB": str(directory / "guestbook.sqlite3")}}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
    }
    env = dict(os.environ, FORKD_SECRET="must-not-leak", FORKD_PASSED="passed", HTTP_PROXY="http://evil:1/")
    server = Daemon(directory, config, env=env)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def get_json(daemon: Daemon, path: str, **kwargs: object) -> dict:
    status, _, body = daemon.get(path, **kwargs)  # type: ignore[arg-type]
    assert status == 200, body
    return json.loads(body)


def raw_exchange(daemon: Daemon, data: bytes, timeout: float = 10.0) -> bytes:
    return daemon.raw(data, timeout=timeout)


# -- the environment (RFC 3875 §4.1) -------------------------------------------------------------

def test_meta_variables(daemon: Daemon) -> None:
    body = b"hello=world"
    conn = daemon.connection()
    conn.request("POST", "/cgi/env.py/extra/p%20ath?a=%41&b=c+d", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Custom": "yes",
        "Proxy": "http://evil:1/", "X_Forwarded_For": "6.6.6.6", "X-Forwarded-For": "1.2.3.4",
        "Authorization": "Basic Zm9vOmJhcg==",
    })
    local_port = conn.sock.getsockname()[1]
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    env = data["env"]
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"].startswith("forkd")
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/cgi/env.py"
    assert env["SCRIPT_FILENAME"] == str(SCRIPTS / "env.py")
    assert env["PATH_INFO"] == "/extra/p ath"  # decoded (§4.1.5)
    assert env["PATH_TRANSLATED"] == str(daemon.dir / "www" / "extra" / "p ath")  # through the "/" route
    assert env["QUERY_STRING"] == "a=%41&b=c+d"  # exactly as sent (§4.1.7)
    assert env["REQUEST_URI"] == "/cgi/env.py/extra/p%20ath?a=%41&b=c+d"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_HOST"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(daemon.port)
    assert env["CONTENT_LENGTH"] == str(len(body))
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["AUTH_TYPE"] == ""
    assert env["HTTP_AUTHORIZATION"] == "Basic Zm9vOmJhcg=="  # forkd authenticates nobody; the script may
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert env["HTTP_HOST"] == f"{daemon.host}:{daemon.port}"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the underscore impostor was dropped
    assert env["REDIRECT_STATUS"] == "200"
    assert env["DOCUMENT_ROOT"] == str(daemon.dir / "www")
    assert "HTTP_PROXY" not in env  # httpoxy: neither the header nor forkd's own variable
    assert "HTTPS" not in env
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env
    assert data["stdin_length"] == len(body)
    assert data["cwd"] == str(SCRIPTS)  # §7.2: the script's directory


def test_nothing_leaks_from_forkds_environment(daemon: Daemon) -> None:
    status, _, body = daemon.get("/cgi/printenv.sh")
    assert status == 200
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    assert env["FORKD_TEST_VAR"] == "set"  # cgi.env
    assert env["FORKD_PASSED"] == "passed"  # cgi.pass_env
    assert env["PATH"] == os.environ["PATH"]
    meta = {"AUTH_TYPE", "GATEWAY_INTERFACE", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "REMOTE_HOST",
            "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_URI", "SCRIPT_NAME", "SCRIPT_FILENAME", "SERVER_NAME",
            "SERVER_PORT", "SERVER_ADDR", "SERVER_PROTOCOL", "SERVER_SOFTWARE", "DOCUMENT_ROOT",
            "REQUEST_SCHEME", "REDIRECT_STATUS"}
    operator = {"PATH", "FORKD_TEST_VAR", "FORKD_PASSED"}
    shell_own = {"PWD"}  # dash exports its working directory itself
    extra = {name for name in env if not name.startswith("HTTP_")} - meta - operator - shell_own
    assert extra == set()
    assert "must-not-leak" not in body.decode()


def test_query_without_path_info(daemon: Daemon) -> None:
    env = get_json(daemon, "/cgi/env.py?x")["env"]
    assert env["PATH_INFO"] == ""
    assert "PATH_TRANSLATED" not in env
    assert env["QUERY_STRING"] == "x"
    assert "CONTENT_LENGTH" not in env
    assert env["REQUEST_METHOD"] == "GET"


def test_underscore_headers_when_enabled(daemon: Daemon) -> None:
    env = get_json(daemon, "/under/env.py", headers={"X_Custom_Thing": "1"})["env"]
    assert env["HTTP_X_CUSTOM_THING"] == "1"


# -- request bodies ------------------------------------------------------------------------------

def test_chunked_body_is_dechunked_with_content_length(daemon: Daemon) -> None:
    payload = os.urandom(100_000)
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(payload[i:i + 7000]), payload[i:i + 7000])
                      for i in range(0, len(payload), 7000))
    request = (b"POST /cgi/cat.sh HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    response = raw_exchange(daemon, request)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"X-Content-Length: 100000" in head
    assert _dechunk(body) == payload


def test_large_post_with_script_writing_first(daemon: Daemon) -> None:
    """20 MiB echoed by a script that writes 1 MiB before reading: both pipes must be pumped together."""
    payload = os.urandom(20 * 1024 * 1024)
    conn = daemon.connection(timeout=60)
    conn.request("POST", "/cgi/echo.sh", body=payload, headers={"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("X-Content-Length") == str(len(payload))
    digest = hashlib.sha256()
    prefix = response.read(1024 * 1024)
    assert prefix == b"\0" * (1024 * 1024)
    size = 0
    while chunk := response.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    conn.close()
    assert size == len(payload)
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest()


def test_script_that_ignores_its_body(daemon: Daemon) -> None:
    """hello.sh never reads stdin: writing the rest of a large body meets EPIPE, not a hang."""
    conn = daemon.connection()
    for _ in range(2):
        conn.request("POST", "/cgi/hello.sh", body=b"x" * (2 * 1024 * 1024))
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello\n")
    conn.close()


def test_body_over_the_limit_is_413(daemon: Daemon) -> None:
    head = b"POST /cgi/cat.sh HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (65 * 1024 * 1024)
    assert raw_exchange(daemon, head).startswith(b"HTTP/1.1 413")


# -- output --------------------------------------------------------------------------------------

def test_streaming_before_the_script_ends(daemon: Daemon, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as sock:
        sock.sendall(f"GET /cgi/stream.sh?{flag} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        received = b""
        while b"first\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
        assert b"second" not in received  # the script is still waiting for the flag
        assert b"Transfer-Encoding: chunked" in received
        flag.touch()
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
    assert b"second\n" in received


def test_http10_stream_is_close_delimited(daemon: Daemon) -> None:
    response = raw_exchange(daemon, b"GET /cgi/later.sh HTTP/1.0\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert body == b"later\n"


def test_http11_stream_is_chunked(daemon: Daemon) -> None:
    response = raw_exchange(daemon, b"GET /cgi/later.sh HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert _dechunk(body) == b"later\n"


def test_short_output_declaring_more_is_502(daemon: Daemon) -> None:
    assert daemon.get("/cgi/short.sh")[0] == 502


def test_head_strips_the_body_and_keeps_the_connection(daemon: Daemon) -> None:
    conn = daemon.connection()
    conn.request("HEAD", "/cgi/hello.sh")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/plain"
    assert response.read() == b""
    conn.request("GET", "/cgi/hello.sh")
    assert conn.getresponse().read() == b"hello\n"
    conn.close()


def test_head_of_an_endless_stream_stops_the_script(daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    conn = daemon.connection()
    conn.request("HEAD", f"/cgi/group.sh?{pidfile}")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.request("GET", "/cgi/hello.sh")  # the connection is still in step
    assert conn.getresponse().read() == b"hello\n"
    conn.close()
    _wait_until_gone(daemon, *map(int, _wait_for_file(pidfile).split()))


def test_status_headers_and_declared_length(daemon: Daemon) -> None:
    status, headers, body = daemon.get("/cgi/status.sh")
    assert status == 418
    assert headers["x-custom"] == "yes"
    assert headers["content-length"] == "6"
    assert body == b"teapot"  # the extra output beyond Content-Length is not sent


def test_nph_output_is_passed_raw(daemon: Daemon) -> None:
    response = raw_exchange(daemon, b"GET /cgi/nph-raw.sh HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response == (b"HTTP/1.1 299 Custom\r\nContent-Type: text/plain\r\nX-Nph: yes\r\n"
                        b"Connection: close\r\n\r\nraw body\n")
    _wait_for_text(daemon.access_log, '"GET /cgi/nph-raw.sh HTTP/1.1" 299 ')  # its status, logged


def test_local_redirect_is_served_internally(daemon: Daemon) -> None:
    env = get_json(daemon, "/cgi/local-redirect.sh?orig=1", method="POST", body=b"ignored")["env"]
    assert env["SCRIPT_NAME"] == "/cgi/env.py"
    assert env["PATH_INFO"] == "/after"
    assert env["QUERY_STRING"] == "from=redirect"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REDIRECT_STATUS"] == "200"
    assert env["REDIRECT_URL"] == "/cgi/local-redirect.sh"
    assert env["REDIRECT_QUERY_STRING"] == "orig=1"
    assert env["REDIRECT_REQUEST_METHOD"] == "POST"  # the original method, the target runs as GET
    assert "CONTENT_LENGTH" not in env


@pytest.mark.parametrize("script,location", [
    ("client-redirect.sh", "http://example.com/elsewhere"),
    ("protocol-relative.sh", "//example.com/x"),  # not local: "//" starts an authority
])
def test_client_redirect_is_302(daemon: Daemon, script: str, location: str) -> None:
    status, headers, _ = daemon.get(f"/cgi/{script}")
    assert status == 302
    assert headers["location"] == location


# -- faults --------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", ["malformed.sh", "no-header-end.sh", "split.sh"])
def test_bad_header_block_is_502(daemon: Daemon, script: str) -> None:
    status, headers, _ = daemon.get(f"/cgi/{script}")
    assert status == 502
    assert "set-cookie" not in headers and "x-injected" not in headers
    daemon.wait_for_log(f"cgi {SCRIPTS / script}: ")


def test_script_that_cannot_start_is_502(daemon: Daemon) -> None:
    assert daemon.get("/cgi/no-shebang.sh")[0] == 502
    daemon.wait_for_log(f"cgi {SCRIPTS / 'no-shebang.sh'}: cannot run: Exec format error")


def test_no_header_before_timeout_is_504(daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    status, _, _ = daemon.get(f"/fast/slow-header.sh?{pidfile}")
    assert status == 504
    assert time.monotonic() - started < 5
    _wait_until_gone(daemon, int(_wait_for_file(pidfile)))  # and the script is stopped
    daemon.wait_for_log(f"cgi {SCRIPTS / 'slow-header.sh'}: no header block within 1s")


def test_a_script_reading_its_body_is_not_timed_out(daemon: Daemon) -> None:
    status, _, body = daemon.get("/fast/slow-reader.sh", method="POST", body=b"x" * (1024 * 1024))
    assert (status, body) == (200, b"read it all\n")


def test_timeout_mid_body_cuts_the_response(daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    request = f"GET /fast/slow-body.sh?{pidfile} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    response = raw_exchange(daemon, request)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"first part" in body
    assert not body.endswith(b"0\r\n\r\n")  # no last-chunk: the client can tell the body is cut
    assert b"never sent" not in body
    _wait_until_gone(daemon, int(_wait_for_file(pidfile)))


@pytest.mark.parametrize("path,status", [
    ("/cgi/missing.sh", 404), ("/cgi/.hidden.sh", 404), ("/cgi/", 404), ("/cgi/plain.txt", 403),
    ("/cgi/%2e%2e/%2e%2e/etc/passwd", 400), ("/cgi/sub/%2e%2e/hello.sh", 200), ("/cgi/hello.sh/", 200),
])
def test_lookup_statuses(daemon: Daemon, path: str, status: int) -> None:
    assert daemon.get(path)[0] == status


@pytest.mark.parametrize("path", ["/cgi/", "/demo/"])
def test_a_directory_is_not_a_script_and_the_page_says_so(daemon: Daemon, path: str) -> None:
    status, _, body = daemon.get(path)
    assert status == 404
    assert b"<p>This path names a directory, not a script; CGI directories are never listed.</p>" in body


def test_unreadable_interpreter_extension_without_interpreter_is_403(daemon: Daemon) -> None:
    assert daemon.get("/fast/page.php")[0] == 403  # .php has no interpreter on /fast/


# -- containment ---------------------------------------------------------------------------------

def test_signals_default_and_own_group(daemon: Daemon) -> None:
    status, _, body = daemon.get("/cgi/signals.sh")
    assert status == 200
    lines = body.decode().splitlines()
    ignored = int(lines[0].split()[1], 16)
    assert ignored & 0x7FFFFFFF == 0, f"ignored standard signals: {ignored:#x}"  # SIGPIPE, SIGHUP, ...
    assert lines[1] == "pipestatus-ok"
    fields = dict(item.split("=") for item in lines[2].split())
    assert fields["pgid"] == fields["pid"] == fields["sid"]  # its own session and process group


def test_no_server_descriptor_reaches_the_script(daemon: Daemon) -> None:
    idle = socket.create_connection((daemon.host, daemon.port))  # another client of the same worker
    try:
        fds = get_json(daemon, "/cgi/fds.py")
    finally:
        idle.close()
    assert set(fds) == {"0", "1", "2"}, fds
    assert fds["0"] == "/dev/null"
    assert not any(target.startswith("socket:") for target in fds.values())


def test_stderr_goes_to_the_error_log_line_by_line(daemon: Daemon) -> None:
    assert daemon.get("/cgi/stderr.sh")[2] == b"ok\n"
    prefix = f"cgi {SCRIPTS / 'stderr.sh'}: "
    daemon.wait_for_log(prefix + "third without newline")
    log = daemon.log()
    assert prefix + "first complaint" in log
    assert prefix + "second complaint" in log


def test_stderr_cannot_forge_log_lines_or_send_terminal_escapes(daemon: Daemon) -> None:
    assert daemon.get("/cgi/forge.sh")[2] == b"ok\n"
    prefix = f"cgi {SCRIPTS / 'forge.sh'}: "
    daemon.wait_for_log(prefix + "forged\\x0d2026")
    log = daemon.log()
    assert "\\x1b[31mred" in log
    assert "\r" not in log and "\x1b" not in log


def test_chatty_stderr_does_not_block(daemon: Daemon) -> None:
    assert daemon.get("/cgi/chatty.sh")[2] == b"done\n"


def test_client_disconnect_kills_the_group(daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    sock = socket.create_connection((daemon.host, daemon.port), timeout=10)
    sock.sendall(f"GET /cgi/group.sh?{pidfile} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert b"tick" in sock.recv(65536) + sock.recv(65536)
    script, grandchild = map(int, _wait_for_file(pidfile).split())
    assert _alive(script) and _alive(grandchild)
    sock.close()  # the worker notices on its next write and abandons the response
    _wait_until_gone(daemon, script, grandchild)


def test_leftover_grandchild_ignoring_term_is_killed(daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan"
    assert daemon.get(f"/cgi/orphan.sh?{pidfile}")[2] == b"done\n"
    _wait_until_gone(daemon, int(_wait_for_file(pidfile)))


# -- other interpreters --------------------------------------------------------------------------

def test_php_get_and_post(daemon: Daemon) -> None:
    need_tool("php-cgi")
    status, headers, body = daemon.get("/cgi/page.php/info?q=search")
    assert status == 200
    assert headers["x-powered-check"] == "php"
    lines = body.decode().splitlines()
    assert "method=GET" in lines and "q=search" in lines and "script=/cgi/page.php" in lines
    assert "path_info=/info" in lines
    status, _, body = daemon.get("/cgi/page.php", method="POST", body=b"name=Ada+Lovelace",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert "name=Ada Lovelace" in body.decode().splitlines()


def test_demo_guestbook_post_redirect_get(daemon: Daemon) -> None:
    status, headers, _ = daemon.get(
        "/demo/guestbook.py", method="POST", body=b"name=Grace&message=Hello+%3Cworld%3E",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    assert headers["location"] == "/demo/guestbook.py"
    status, _, body = daemon.get("/demo/guestbook.py")
    assert status == 200
    assert b"<b>Grace</b>" in body and b"Hello &lt;world&gt;" in body


def test_demo_env_and_time(daemon: Daemon) -> None:
    status, _, body = daemon.get("/demo/env.sh/x?y=1")
    assert status == 200 and b"PATH_INFO=/x\n" in body
    status, headers, body = daemon.get("/demo/time.py?format=json")
    assert status == 200 and headers["content-type"] == "application/json"
    assert abs(json.loads(body)["unix"] - time.time()) < 60


# -- helpers -------------------------------------------------------------------------------------

def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]


def _wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def _wait_for_text(path: Path, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in {path}")


def _alive(pid: int, daemon: Daemon | None = None) -> bool:
    """Running, or a zombie a forkd worker failed to reap (a zombie reparented to init is init's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    state, parent = fields[0], int(fields[1])
    if state in ("Z", "X"):
        return daemon is not None and parent in daemon.worker_pids()
    return True


def _wait_until_gone(daemon: Daemon, *pids: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid, daemon) for pid in pids):
            return
        time.sleep(0.02)
    raise AssertionError(f"still alive: {[pid for pid in pids if _alive(pid, daemon)]}")


def test_descriptors_forkd_inherited_do_not_reach_scripts(tmp_path: Path) -> None:
    """Like systemd's sockets: a descriptor forkd inherits (open across exec) stays out of scripts."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    server = Daemon(tmp_path, {"workers": 1, "routes": [{"prefix": "/cgi/", "cgi": {"root": str(SCRIPTS)}}]})
    with open(tmp_path / "stderr.log", "ab") as stderr:
        server.proc = subprocess.Popen(
            [sys.executable, "-m", "forkd", "-c", str(server.config_path)], cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True, pass_fds=(write_end,),
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        os.close(write_end)
        server.wait_for_log("ready: generation 1", 15)
        server.addresses = LISTEN_RE.findall(server.log())
        [worker] = server.worker_pids()
        assert os.path.exists(f"/proc/{worker}/fd/{write_end}")  # the worker does hold it
        fds = get_json(server, "/cgi/fds.py")
        assert set(fds) == {"0", "1", "2"}, fds
    finally:
        server.stop()
        os.close(read_end)


def test_workers_as_nobody_started_from_a_private_directory(make_daemon, tmp_path: Path) -> None:
    """forkd started from a directory its workers' user may not enter (root's home, say)."""
    need_root("workers switch to nobody")
    logs = Path(tempfile.mkdtemp(prefix="forkd-cgi-nobody-"))
    try:
        logs.chmod(0o755)  # the master creates error.log and hands it to nobody
        # The scripts are copied: the clone itself may live where nobody cannot enter.
        scripts = logs / "cgi"
        scripts.mkdir(mode=0o755)
        for name in ("hello.sh", "printenv.sh"):
            shutil.copy2(SCRIPTS / name, scripts / name)
        server = make_daemon({"workers": 1, "user": "nobody", "error_log": str(logs / "error.log"),
                              "access_log": None,
                              "routes": [{"prefix": "/cgi/", "cgi": {"root": str(scripts)}}]},
                             start=False)
        server.dir.chmod(0o700)
        server.error_log.symlink_to(logs / "error.log")  # where the fixture looks for the log
        server.start()
        assert server.get("/cgi/hello.sh")[2] == b"hello\n"
        env = dict(line.split("=", 1) for line in server.get("/cgi/printenv.sh")[2].decode().splitlines())
        assert env["PWD"] == str(scripts)
        server.stop()  # and check its logs while they still exist
    finally:
        shutil.rmtree(logs)


def test_a_script_swapped_for_a_link_during_the_upload_is_not_run(make_daemon, tmp_path: Path) -> None:
    """The script is checked when the head arrives and again right before it starts (issue 10).

    A client with write access to the CGI directory (another script, say) replaces the checked script
    with a symlink to a program outside the root while the upload is still arriving.
    """
    root, outside = tmp_path / "cgi", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    for directory, word in ((root, "INSIDE"), (outside, "OUTSIDE RAN")):
        script = directory / "upload.sh"
        script.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf 'Content-Type: text/plain\\n\\n{word}\\n'\n")
        script.chmod(0o755)
    daemon = make_daemon({"workers": 1, "routes": [{"prefix": "/cgi/", "cgi": {"root": str(root)}}]})
    head = b"POST /cgi/upload.sh HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n"
    assert daemon.raw(head + b"x" * 2000).endswith(b"INSIDE\n")
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        sock.sendall(head + b"x" * 1000)  # the head is checked; the body is still coming
        poll(lambda: _unread_by_server(daemon, sock) == 0, 5, "the worker read the head")
        swap = root / "swap"
        swap.symlink_to(outside / "upload.sh")
        os.rename(swap, root / "upload.sh")
        sock.sendall(b"x" * 1000)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b"OUTSIDE RAN" not in answer
    assert answer.startswith(b"HTTP/1.1 404")


def _unread_by_server(daemon: Daemon, client: socket.socket) -> int:
    """Bytes the server side of this connection has not read yet (its receive queue, /proc/net/tcp)."""
    local = f"{daemon.port:04X}"
    peer = f"{client.getsockname()[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(":" + local) and fields[2].endswith(":" + peer):
            return int(fields[4].split(":")[1], 16)
    return -1
