"""The wsgi route (issue 13) with a stdlib app: PEP 3333 conformance, streaming, errors, the pool.

The app is tests/wsgi/pep3333_app.py. Under /app/ it runs wrapped in wsgiref.validate.validator,
which asserts on every breach of PEP 3333 by the server; under /raw/ it runs unwrapped (for what the
validator forbids, and for apps that break the protocol on purpose). A static route shares the
worker, to show that the app never holds the loop.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme

from tests.support.daemon import ROOT, Daemon, poll

APPS = str(ROOT / "tests" / "wsgi")
DATA = bytes(range(256)) * 4096  # 1 MiB served through wsgi.file_wrapper (more than the buffer)
BODY = b"".join(b"line %d of the body\n" % i for i in range(300))


def wsgi_site(make_daemon, tmp_path: Path, workers: int = 1, wsgi: dict | None = None,
              **settings: object) -> Daemon:
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "small.txt").write_bytes(b"x" * 1024)
    (tmp_path / "data.bin").write_bytes(DATA)
    env = dict(os.environ, WSGI_TEST_FILE=str(tmp_path / "data.bin"),
               WSGI_TEST_CLOSE_LOG=str(tmp_path / "close.log"))
    route = {"python_path": [APPS], **(wsgi or {})}
    return make_daemon({
        "workers": workers,
        "routes": [
            {"prefix": "/app/", "wsgi": {"app": "pep3333_app:application", **route}},
            {"prefix": "/raw/", "wsgi": {"app": "pep3333_app:raw", **route}},
            {"prefix": "/", "static": {"root": str(www)}},
        ],
        **settings,
    }, env=env)


def closes(tmp_path: Path) -> list[str]:
    path = tmp_path / "close.log"
    return path.read_text().splitlines() if path.exists() else []


def no_validator_complaints(daemon: Daemon) -> None:
    log = daemon.log()
    for sign in ("AssertionError", "WSGIWarning", "garbage collected", "Exception ignored"):
        assert sign not in log, log


# -- the environ ----------------------------------------------------------------------------------

def test_environ_holds_every_required_key(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    status, _, body = daemon.get("/app/environ?a=1&b=%20", {"X-Custom": "yes",
                                                              "Script-Name": "/forged"})
    assert status == 200
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == "/app"  # from the route prefix only, never from a header
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(daemon.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and int(env["REMOTE_PORT"]) > 0
    assert env["wsgi.version"] == [1, 0] and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False and env["wsgi.input_terminated"] is True
    assert env["HTTP_X_CUSTOM"] == "yes" and env["HTTP_SCRIPT_NAME"] == "/forged"
    assert "CONTENT_LENGTH" not in env and "HTTP_CONTENT_LENGTH" not in env
    no_validator_complaints(daemon)


def test_script_name_and_path_info_split_at_the_prefix(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    # "/app" itself: PATH_INFO is empty (PEP 3333), and the app's 404 names it.
    assert daemon.get("/app")[::2] == (404, b"not found: ")
    assert daemon.get("/app/")[::2] == (404, b"not found: /")
    # Decoded, normalised, and as PEP 3333 wants it: the UTF-8 bytes as latin-1 characters.
    status, _, body = daemon.get("/app/x/../%C3%A9t%C3%A9")
    latin1 = "/été".encode().decode("latin-1")  # "/Ã©tÃ©", which the app encodes as UTF-8
    assert (status, body) == (404, f"not found: {latin1}".encode())
    # Outside the prefix once normalised: not this route's.
    assert daemon.get("/app/../small.txt")[0] == 200


def test_input_read_methods_and_empty_past_the_end(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    expected = b"%d:%s:%s" % (len(BODY), b"", BODY)
    for way in ("read", "read-n", "readline", "readline-n", "readlines", "iter", "length"):
        assert daemon.get(f"/raw/echo?{way}", method="POST", body=BODY)[::2] == (200, expected)
        if way != "read":  # the validator allows read() only with a size
            assert daemon.get(f"/app/echo?{way}", method="POST", body=BODY)[::2] == (200,
                                                                                      expected)
    no_validator_complaints(daemon)


def test_chunked_request_body_is_dechunked_with_content_length(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    pieces = [BODY[:1000], BODY[1000:1001], BODY[1001:]]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = (b"POST /app/echo?length HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")
    answer = daemon.raw(head + chunked)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"%d::%s" % (len(BODY), BODY))  # CONTENT_LENGTH is the real length
    no_validator_complaints(daemon)


# -- start_response, write(), the iterable --------------------------------------------------------

def test_write_callable_and_exc_info_before_the_body(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    assert daemon.get("/app/write")[::2] == (200, b"written twice and returned")
    status, _, body = daemon.get("/app/exc-info")  # replaced: nothing was sent yet
    assert (status, body) == (503, b"replaced")
    no_validator_complaints(daemon)


def test_exc_info_after_the_body_started_reraises_and_cuts(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    daemon.expect_tracebacks(2)  # the app's, and the connection cut mid-body
    conn = daemon.connection()
    conn.request("GET", "/app/exc-info-late")
    response = conn.getresponse()
    assert response.status == 200  # sent before the app failed
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == b"first"
    daemon.wait_for_log("KeyError: 'late'")


def test_app_exception_is_a_500_with_the_traceback_in_the_log_only(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    daemon.expect_tracebacks(2)
    for path, message in (("/app/raise", "the app failed on purpose"),
                          ("/app/raise-in-iter", "the iterable failed on purpose")):
        status, _, body = daemon.get(path)
        assert status == 500 and b"purpose" not in body and b"Traceback" not in body
        assert message in daemon.log()
    poll(lambda: closes(tmp_path), 5, "close()")  # called even when the iteration raised
    assert closes(tmp_path) == ["raise-in-iter"]
    assert daemon.get("/app/write")[0] == 200  # the worker is unharmed


def test_protocol_breaches_are_logged_and_close_the_connection(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    daemon.expect_tracebacks(2)
    workers = daemon.worker_pids()
    for path, why in (("/raw/hop", "hop-by-hop header Connection"),
                      ("/raw/bad-status", "bad status line '200'")):
        status, headers, _ = daemon.get(path)
        assert (status, headers["connection"]) == (500, "close")
        assert why in daemon.log()
    # 5 bytes of a declared 10: the client learns it from the close (it would wait otherwise).
    answer = daemon.raw(b"GET /raw/short HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Content-Length: 10\r\n" in answer and b"Connection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\nshort")
    daemon.wait_for_log("shorter than its Content-Length 10")
    assert daemon.worker_pids() == workers


def test_wsgi_errors_go_to_the_error_log_escaped(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    assert daemon.get("/app/errors")[::2] == (200, b"logged")
    daemon.wait_for_log("wsgi pep3333_app:application: line \\x1b[31mtwo")
    assert "wsgi pep3333_app:application: line one\n" in daemon.log()
    assert "\x1b" not in daemon.log()
    no_validator_complaints(daemon)


# -- streaming, files, close() --------------------------------------------------------------------

def test_streaming_sends_each_chunk_as_the_app_yields_it(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /app/stream?3,0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"chunk 0" not in first:
            first += sock.recv(65536)
        took = time.monotonic() - started
        assert b"Transfer-Encoding: chunked" in first
        assert b"chunk 1" not in first and took < 0.4  # not held until the app is done
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
        assert b"chunk 1" in rest and b"chunk 2" in rest
    poll(lambda: closes(tmp_path), 5, "close()")
    assert closes(tmp_path) == ["stream"]
    big = daemon.get("/app/big")  # 8 MiB: more than the buffer between app thread and loop
    assert big[0] == 200 and big[2] == b"x" * (8 << 20)
    no_validator_complaints(daemon)


def test_file_wrapper_is_sent_with_sendfile_from_the_current_position(make_daemon,
                                                                      tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    status, headers, body = daemon.get("/raw/file?1000")
    assert (status, body) == (200, DATA[1000:])
    assert headers["content-length"] == str(len(DATA) - 1000)  # a file range, not a stream
    # Wrapped by the validator it is just an iterable: the same bytes, streamed.
    status, headers, body = daemon.get("/app/file?1000")
    assert (status, body) == (200, DATA[1000:]) and "content-length" not in headers
    no_validator_complaints(daemon)


@pytest.mark.parametrize("path", ["/app/stream?100,0.05", "/app/big"])
def test_close_is_called_exactly_once_when_the_client_leaves(make_daemon, tmp_path,
                                                              path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    with socket.create_connection((daemon.host, daemon.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    poll(lambda: closes(tmp_path), 10, "close() of the iterable")
    assert daemon.get("/app/write")[0] == 200  # the thread is free again
    daemon.barrier()
    assert len(closes(tmp_path)) == 1
    no_validator_complaints(daemon)


# -- the pool: slow apps, a full pool, timeouts ---------------------------------------------------

def test_a_slow_app_never_holds_static_files_of_its_worker(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path)
    results: list[tuple[int, float]] = []

    def slow() -> None:
        started = time.monotonic()
        status = daemon.get("/app/sleep?2")[0]
        results.append((status, time.monotonic() - started))

    sleepers = [threading.Thread(target=slow) for _ in range(3)]
    for thread in sleepers:
        thread.start()
    time.sleep(0.2)  # the three apps are asleep now
    conn = daemon.connection()
    times = []
    for _ in range(100):
        started = time.monotonic()
        conn.request("GET", "/small.txt")
        assert conn.getresponse().read() == b"x" * 1024
        times.append(time.monotonic() - started)
    conn.close()
    for thread in sleepers:
        thread.join()
    assert sorted(times)[98] < 0.05, statistics.quantiles(times, n=100)
    assert sum(times) < 1.5  # 100 static answers while the apps slept 2 s
    assert [status for status, _ in results] == [200, 200, 200]
    assert all(took < 3.5 for _, took in results)  # they slept side by side, in 3 threads


def test_a_full_pool_answers_503_with_retry_after(make_daemon, tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path, wsgi={"threads": 1, "queue": 1})
    statuses: list[int] = []

    def slow() -> None:
        statuses.append(daemon.get("/app/sleep?1")[0])

    sleepers = [threading.Thread(target=slow) for _ in range(2)]  # one runs, one waits
    for thread in sleepers:
        thread.start()
    time.sleep(0.3)
    status, headers, _ = daemon.get("/app/write")
    assert (status, headers["retry-after"]) == (503, "1")
    for thread in sleepers:
        thread.join()
    assert statuses == [200, 200]
    assert daemon.get("/app/write")[0] == 200
    daemon.wait_for_log("answering 503")


def test_an_app_past_its_timeout_gets_504_and_a_log_line_with_its_stack(make_daemon,
                                                                         tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path, wsgi={"timeout": 0.5})
    started = time.monotonic()
    status, _, _ = daemon.get("/app/sleep?3")
    assert status == 504 and time.monotonic() - started < 2.0
    log = daemon.log()
    assert "wsgi pep3333_app:application: 'GET /app/sleep?3 HTTP/1.1' took more than 0.5s" in log
    assert "cannot be stopped" in log and "time.sleep(float(query or 2))" in log
    assert daemon.get("/small.txt")[0] == 200


def test_an_app_stuck_past_timeouts_worker_gets_its_worker_replaced_gracefully(make_daemon,
                                                                                tmp_path) -> None:
    daemon = wsgi_site(make_daemon, tmp_path, wsgi={"timeout": 0.5},
                       timeouts={"worker": 1.5})
    [old] = daemon.worker_pids()
    conn = daemon.connection()  # a kept-alive client of the old worker
    conn.request("GET", "/small.txt")
    assert conn.getresponse().read() == b"x" * 1024
    assert daemon.get("/app/sleep?6")[0] == 504
    daemon.wait_for_log("has run for more than timeouts.worker (1.5s)", timeout=10)
    daemon.wait_for_log("worker asks to be replaced: wsgi app stuck on 'GET /app/sleep?6 HTTP/1.1'")
    poll(lambda: len(daemon.worker_pids()) == 1 and old not in daemon.worker_pids(), 15,
         "the old worker replaced")
    assert "exited with code 0" in daemon.log()  # retired, not killed
    assert "time.sleep(float(query or 2))" in daemon.log()  # the stuck thread's stack
    assert daemon.get("/app/write")[::2] == (200, b"written twice and returned")


# -- code reload ----------------------------------------------------------------------------------

APP_CODE = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{answer}"]
'''


def versioned_site(make_daemon, tmp_path: Path, preload: bool) -> tuple[Daemon, Path]:
    apps = tmp_path / "apps"
    apps.mkdir()
    module = apps / "versioned.py"
    module.write_text(APP_CODE.format(answer="one"))
    daemon = make_daemon({
        "workers": 2,
        "routes": [{"prefix": "/", "wsgi": {"app": "versioned", "python_path": [str(apps)],
                                            "preload": preload}}],
    })
    return daemon, module


def forkd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkd", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)


def reload(daemon: Daemon) -> tuple[int, str]:
    result = forkd("-c", str(daemon.config_path), "-s", "reload")
    return result.returncode, result.stderr


def test_reload_runs_the_new_code_without_failing_a_request(make_daemon, tmp_path) -> None:
    daemon, module = versioned_site(make_daemon, tmp_path, preload=False)
    assert daemon.get("/")[::2] == (200, b"one")
    answers: list[object] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                answers.append(daemon.get("/")[2])
            except OSError as exc:
                answers.append(exc)

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    module.write_text(APP_CODE.format(answer="two"))
    assert reload(daemon) == (0, "")
    poll(lambda: daemon.get("/")[2] == b"two", 10, "the new code")
    time.sleep(0.3)
    stop.set()
    for client in clients:
        client.join()
    assert set(answers) <= {b"one", b"two"} and b"two" in answers, set(map(repr, answers))


def test_preload_imports_once_in_the_master_so_reload_keeps_the_code(make_daemon,
                                                                     tmp_path) -> None:
    daemon, module = versioned_site(make_daemon, tmp_path, preload=True)
    module.write_text(APP_CODE.format(answer="two"))
    assert reload(daemon) == (0, "")
    daemon.wait_for_log("ready: generation 2")
    assert daemon.get("/")[::2] == (200, b"one")  # documented: new code needs a restart


@pytest.mark.parametrize("preload", [False, True])
def test_an_app_that_cannot_be_imported_rejects_the_reload(make_daemon, tmp_path,
                                                           preload: bool) -> None:
    daemon, _ = versioned_site(make_daemon, tmp_path, preload=preload)
    daemon.expect_tracebacks()  # the import error is logged with its traceback
    daemon.write_config(daemon.config_path.read_text().replace("versioned", "missing_module"))
    code, stderr = reload(daemon)
    assert code == 1 and "No module named 'missing_module'" in stderr, stderr
    assert daemon.get("/")[::2] == (200, b"one")


@pytest.mark.parametrize("preload", [False, True])
def test_an_app_that_cannot_be_imported_stops_the_start(tmp_path, preload: bool) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "broken.py").write_text("import no_such_dependency\n")
    config = tmp_path / "forkd.yaml"
    config.write_text("listen: ['127.0.0.1:0']\nworkers: 1\nroutes:\n"
                      f"  - {{prefix: /, wsgi: {{app: 'broken:app', python_path: [apps], "
                      f"preload: {str(preload).lower()}}}}}\n")
    assert forkd("-c", str(config), "--check").returncode == 0  # --check never imports the app
    result = forkd("-c", str(config))
    assert result.returncode == 1
    assert "Traceback" in result.stderr.replace("\\n", "\n")
    assert "No module named 'no_such_dependency'" in result.stderr


# -- HTTPS ----------------------------------------------------------------------------------------

def test_url_scheme_is_https_on_tls_with_the_ssl_variables(make_daemon, tmp_path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    daemon = wsgi_site(make_daemon, tmp_path,
                       listen=[{"address": "127.0.0.1:0", "tls": True}, "127.0.0.1:0"],
                       tls={"certificates": [{"cert": str(cert), "key": str(key)}]})
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=context, timeout=10)
    conn.request("GET", "/app/environ")
    env = json.loads(conn.getresponse().read())
    conn.request("GET", "/raw/file?1000")  # a file range over TLS: read and encrypted, no sendfile
    assert conn.getresponse().read() == DATA[1000:]
    conn.close()
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["REQUEST_SCHEME"] == "https" and env["SSL_PROTOCOL"].startswith("TLSv1.")
    plain_port = int(daemon.addresses[1].rsplit(":", 1)[1])
    plain = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)
    plain.request("GET", "/app/environ")
    env = json.loads(plain.getresponse().read())
    assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env
    no_validator_complaints(daemon)


def test_the_demo_sites_json_api(make_daemon) -> None:
    daemon = make_daemon({"routes": [{"prefix": "/api/", "wsgi": {
        "app": "demo_api:application", "python_path": [str(ROOT / "conf" / "apps")]}}]})
    status, headers, body = daemon.get("/api/")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body)["links"]["time"] == "/api/time"
    assert json.loads(daemon.get("/api/time")[2])["thread"].startswith("wsgi-")
    status, _, body = daemon.get("/api/echo", method="POST", body=b'{"a": [1, 2]}')
    assert (status, json.loads(body)) == (200, {"received": {"a": [1, 2]}, "bytes": 13})
    assert daemon.get("/api/echo", method="POST", body=b"{nope")[0] == 400
    assert daemon.get("/api/echo")[0] == 405 and daemon.get("/api/nothing")[0] == 404
