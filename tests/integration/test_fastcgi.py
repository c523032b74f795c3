"""The fastcgi route against a real php-fpm: params, bodies, streaming, faults, the famous holes.

One php-fpm master (a pool of 4 on a unix socket in the test directory, see tests/support/php_fpm)
and one daemon serve the module. The PHP scripts of tests/fastcgi/app are copied into the test
directory, so a test may change the tree. Routes: /fast/ (timeout 1 s), /auth/
(pass_authorization), /down/ (a socket path nobody listens on), /refused/ (a socket that refuses),
/gone/ (a root whose front controller is deleted after start) and / (front controller /index.php).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon, poll
from tests.support.php_fpm import PhpFpm

APP = ROOT / "tests" / "fastcgi" / "app"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, PhpFpm, Path]]:
    directory = tmp_path_factory.mktemp("fastcgi")
    app = directory / "app"
    shutil.copytree(APP, app)
    gone = directory / "gone"
    gone.mkdir()
    (gone / "index.php").write_text("<?php echo 'here';\n")
    refusing = socket.socket(socket.AF_UNIX)  # bound, never listening: connect() is refused
    refusing.bind(str(directory / "refused.sock"))
    fpm = PhpFpm(directory / "fpm")
    fpm.start()
    php = {"connect": fpm.connect, "root": str(app)}
    config = {
        "workers": 2,
        "limits": {"body": 32 * 1024 * 1024},
        "routes": [
            {"prefix": "/fast/", "fastcgi": {**php, "timeout": 1}},
            {"prefix": "/auth/", "fastcgi": {**php, "pass_authorization": True}},
            {"prefix": "/down/", "fastcgi": {**php, "connect": f"unix:{directory}/nobody.sock"}},
            {"prefix": "/refused/", "fastcgi": {**php, "connect": f"unix:{directory}/refused.sock"}},
            {"prefix": "/gone/", "fastcgi": {**php, "root": str(gone),
                                             "front_controller": "/index.php"}},
            {"prefix": "/", "fastcgi": {**php, "front_controller": "/index.php",
                                        "params": {"APP_ENV": "test"}}},
        ],
    }
    (directory / "forkd").mkdir()
    daemon = Daemon(directory / "forkd", config)
    try:
        daemon.start()
        yield daemon, fpm, app
    finally:
        daemon.stop()
        fpm.stop()
        refusing.close()


@pytest.fixture
def daemon(site: tuple[Daemon, PhpFpm, Path]) -> Daemon:
    return site[0]


def server_vars(daemon: Daemon, path: str, **kwargs: object) -> dict:
    status, _, body = daemon.get(path, **kwargs)  # type: ignore[arg-type]
    assert status == 200, body
    return json.loads(body)


def head_and_body(raw: bytes) -> tuple[list[str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


# -- params ----------------------------------------------------------------------------------------

def test_params_are_what_php_expects(daemon: Daemon) -> None:
    conn = daemon.connection()
    conn.request("GET", "/env.php/extra/p%20ath?a=%41&b=c+d", headers={
        "X-Custom": "yes", "Proxy": "http://evil:1/", "X_Forwarded_For": "6.6.6.6",
        "X-Forwarded-For": "1.2.3.4", "Authorization": "Basic Zm9vOmJhcg==",
    })
    local_port = conn.sock.getsockname()[1]
    data = json.loads(conn.getresponse().read())
    conn.close()
    env = data["server"]
    root = str(daemon.dir.parent / "app")
    assert env["SCRIPT_FILENAME"] == f"{root}/env.php"
    assert env["SCRIPT_NAME"] == "/env.php"
    assert env["PATH_INFO"] == "/extra/p ath"  # decoded
    assert env["PATH_TRANSLATED"] == f"{root}/extra/p ath"
    assert env["DOCUMENT_ROOT"] == root
    assert env["DOCUMENT_URI"] == "/env.php/extra/p ath"
    assert env["REQUEST_URI"] == "/env.php/extra/p%20ath?a=%41&b=c+d"  # as received
    assert env["QUERY_STRING"] == "a=%41&b=c+d"
    assert data["get"] == {"a": "A", "b": "c d"}
    assert env["REQUEST_METHOD"] == "GET"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"].startswith("forkd")
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(daemon.port)
    assert env["SERVER_ADDR"] == "127.0.0.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(local_port)
    assert env["REDIRECT_STATUS"] == "200"
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the underscore impostor was dropped
    assert env["APP_ENV"] == "test"  # fastcgi.params
    assert "HTTP_PROXY" not in env  # httpoxy
    assert "HTTP_AUTHORIZATION" not in env and "PHP_AUTH_USER" not in env
    assert "HTTPS" not in env
    assert "CONTENT_LENGTH" not in env or env["CONTENT_LENGTH"] in ("", "0")


def test_authorization_passes_only_where_the_operator_says(daemon: Daemon) -> None:
    env = server_vars(daemon, "/auth/env.php", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert env["server"]["HTTP_AUTHORIZATION"] == "Basic Zm9vOmJhcg=="
    assert env["server"]["PHP_AUTH_USER"] == "foo" and env["server"]["PHP_AUTH_PW"] == "bar"
    assert env["server"]["SCRIPT_NAME"] == "/auth/env.php"  # the prefix is part of the name


# -- request bodies --------------------------------------------------------------------------------

def test_form_post_reaches_php(daemon: Daemon) -> None:
    body = b"name=forkd&list%5B%5D=1&list%5B%5D=2"
    data = server_vars(daemon, "/env.php", method="POST", body=body,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert data["post"] == {"name": "forkd", "list": ["1", "2"]}
    assert data["server"]["CONTENT_LENGTH"] == str(len(body))
    assert data["server"]["CONTENT_TYPE"] == "application/x-www-form-urlencoded"


def test_big_and_chunked_bodies_arrive_whole(daemon: Daemon) -> None:
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB
    data = server_vars(daemon, "/env.php", method="PUT", body=payload,
                       headers={"Content-Type": "application/octet-stream"})
    assert data["input_length"] == len(payload)
    assert data["input_md5"] == hashlib.md5(payload).hexdigest()
    pieces = [b"hello ", b"chunked ", b"world"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    raw = daemon.raw(b"POST /env.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: text/plain\r\nConnection: close\r\n\r\n" + chunked)
    _, body = head_and_body(raw)
    data = json.loads(body)
    assert data["input_length"] == len(b"".join(pieces))
    assert data["server"]["CONTENT_LENGTH"] == str(len(b"".join(pieces)))  # de-chunked


# -- responses -------------------------------------------------------------------------------------

def test_status_cookies_and_headers_of_php(daemon: Daemon) -> None:
    raw = daemon.raw(b"GET /headers.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    lines, body = head_and_body(raw)
    assert lines[0] == "HTTP/1.1 201 Created"
    cookies = [line for line in lines if line.lower().startswith("set-cookie:")]
    assert cookies == ["Set-Cookie: first=one", "Set-Cookie: second=two"]
    assert "X-From-Php: yes" in lines
    assert body == b"created\n"


def test_location_is_a_client_redirect(daemon: Daemon) -> None:
    status, headers, _ = daemon.get("/redirect.php")
    assert status == 302 and headers["location"] == "https://example.com/elsewhere"


def test_big_output_is_streamed_whole(daemon: Daemon) -> None:
    conn = daemon.connection(timeout=30)
    conn.request("GET", "/big.php?mb=8")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"  # streamed, not gathered
    data = response.read()
    conn.close()
    assert data == b"0123456789abcdef" * 4096 * 16 * 8


def test_slow_reader_holds_php_back(daemon: Daemon) -> None:
    """Back-pressure: while the client reads nothing, forkd does not take 32 MiB from php-fpm,
    nor spin on the php-fpm socket that has more to give (it is not watched meanwhile)."""
    before = max(rss(pid) for pid in daemon.worker_pids())
    with socket.create_connection((daemon.host, daemon.port), timeout=30) as sock:
        sock.sendall(b"GET /big.php?mb=32 HTTP/1.0\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # the response has started; both socket buffers fill up
        cpu_before = sum(cpu_seconds(pid) for pid in daemon.worker_pids())
        time.sleep(1.0)  # php-fpm could write it all meanwhile; forkd must not read it all
        busy = sum(cpu_seconds(pid) for pid in daemon.worker_pids()) - cpu_before
        during = max(rss(pid) for pid in daemon.worker_pids())
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    assert during - before < 16 << 20, (before, during)
    assert busy < 0.3, f"the workers used {busy:.2f} s of CPU while nothing could move"
    _, body = head_and_body(bytes(received))
    assert len(body) == 32 << 20 and body[-16:] == b"0123456789abcdef"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_flushed_output_reaches_the_client_at_once(daemon: Daemon) -> None:
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as sock:
        sock.sendall(b"GET /flush.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        started = time.monotonic()
        received = b""
        while b"first" not in received:
            received += sock.recv(4096)
        first_at = time.monotonic() - started
        while chunk := sock.recv(4096):
            received += chunk
        total = time.monotonic() - started
    assert first_at < 1.5 and total >= 1.9, (first_at, total)  # the script sleeps 2 s in between
    assert b"second" in received


def test_stderr_goes_to_the_error_log_escaped_never_to_the_client(daemon: Daemon) -> None:
    status, _, body = daemon.get("/stderr.php")
    assert status == 200 and body == b"answered\n"
    daemon.wait_for_log("complaint from php")
    line = next(line for line in daemon.log().splitlines() if "complaint from php" in line)
    assert "stderr.php" in line
    assert "\\x1b[31mred" in line and "\x1b" not in line


# -- faults ----------------------------------------------------------------------------------------

def test_php_fpm_down_is_502_at_once(daemon: Daemon) -> None:
    for path in ("/down/env.php", "/refused/env.php"):
        started = time.monotonic()
        status, _, _ = daemon.get(path)
        assert status == 502 and time.monotonic() - started < 2
    daemon.wait_for_log("nobody.sock")


def test_silent_script_is_504(daemon: Daemon) -> None:
    started = time.monotonic()
    status, _, _ = daemon.get("/fast/sleep.php?s=3")
    assert status == 504 and time.monotonic() - started < 2.5
    daemon.wait_for_log("silent for 1s")


def test_primary_script_unknown_is_404(site: tuple[Daemon, PhpFpm, Path]) -> None:
    daemon = site[0]
    assert daemon.get("/gone/any/path")[0] == 200
    (daemon.dir.parent / "gone" / "index.php").unlink()  # forkd selected it; php-fpm finds nothing
    status, _, _ = daemon.get("/gone/any/path")
    assert status == 404


def test_client_gone_stops_the_script(site: tuple[Daemon, PhpFpm, Path], tmp_path: Path) -> None:
    daemon = site[0]
    marker = tmp_path / "marker"
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as sock:
        sock.sendall(f"GET /abort.php?marker={marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # The script would stream for 20 s; with the connection to php-fpm closed its next writes
    # fail and PHP stops it.
    poll(marker.exists, 10, "the script to stop")
    count = int(marker.read_text().split()[-1])
    assert count < 150


# -- script selection: the famous holes ------------------------------------------------------------

def test_upload_with_a_script_name_after_it_is_never_run(daemon: Daemon) -> None:
    for path in ("/uploads/evil.jpg/x.php", "/uploads/evil.jpg/index.php", "/uploads/evil.jpg/"):
        status, _, body = daemon.get(path)
        assert status == 404 and b"EXECUTED" not in body, path
    status, headers, body = daemon.get("/uploads/evil.jpg")  # the file itself is only a file
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert body.startswith(b"<?php")


def test_newline_in_the_path_is_refused(daemon: Daemon) -> None:
    # CVE-2019-11043 sent /index.php/PHP%0Ais_the_shittiest_lang.php to break a PATH_INFO regex.
    for path in ("/index.php/PHP%0Ais_the_shittiest_lang.php?a", "/env.php%0a.jpg",
                 "/env.php/%0d", "/x%0a/env.php"):
        raw = daemon.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert raw.startswith(b"HTTP/1.1 400 "), (path, raw[:60])


def test_script_source_is_never_served(daemon: Daemon) -> None:
    status, _, body = daemon.get("/upper.PHP")  # another case of the extension: still a script
    assert b"EXECUTED" not in body and not body.startswith(b"<?php")
    assert status == 403  # php-fpm's security.limit_extensions says no
    link = daemon.dir.parent / "app" / "source.txt"
    link.symlink_to("env.php")
    try:
        status, _, body = daemon.get("/source.txt")  # a link to a script is not a text file
        assert status == 404 and b"<?php" not in body
    finally:
        link.unlink()
    for path in ("/.hidden.php", "/%2ehtaccess"):
        assert daemon.get(path)[0] == 404


# -- the route's own files, and the front controller -----------------------------------------------

def test_front_controller_takes_paths_that_match_no_file(daemon: Daemon) -> None:
    status, _, body = daemon.get("/2024/05/hello-world/?replytocom=3")
    assert status == 200
    assert body == (b"front controller\nREQUEST_URI=/2024/05/hello-world/?replytocom=3\n"
                    b"SCRIPT_NAME=/index.php\nPATH_INFO=\n")
    status, _, body = daemon.get("/")  # the directory index is the same script
    assert status == 200 and b"REQUEST_URI=/\n" in body
    status, _, body = daemon.get("/sub/")
    assert status == 200 and body == b"sub index\n"
    status, headers, _ = daemon.get("/sub")
    assert status == 301 and headers["location"] == "sub/"
    assert daemon.get("/plain/")[2] == b"plain directory\n"  # index.html: a static index


def test_static_files_of_the_route(daemon: Daemon) -> None:
    status, headers, body = daemon.get("/style.css")
    assert status == 200 and body == b"body { color: black; }\n"
    assert headers["content-type"].startswith("text/css")
    etag, modified = headers["etag"], headers["last-modified"]
    assert daemon.get("/style.css", headers={"If-None-Match": etag})[0] == 304
    assert daemon.get("/style.css", headers={"If-Modified-Since": modified})[0] == 304
    status, headers, body = daemon.get("/style.css", headers={"Range": "bytes=0-3"})
    assert status == 206 and body == b"body" and headers["content-range"] == "bytes 0-3/23"
    status, _, _ = daemon.get("/style.css", method="POST", body=b"x")
    assert status == 405
