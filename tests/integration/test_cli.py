"""The command line as an operator meets it: --help, -T, and what a config that cannot start prints.

Every test runs the real `python3 -m forkd` (and, where the output must also work, the real daemon).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import Daemon
from tests.support.daemon import run_forkd as forkd


def site(directory: Path) -> Path:
    (directory / "www").mkdir()
    (directory / "www" / "index.html").write_text("hello\n")
    (directory / "cgi-bin").mkdir()
    (directory / "cgi-bin" / "hi.sh").write_text(
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhi\\n'\n"
    )
    (directory / "cgi-bin" / "hi.sh").chmod(0o755)
    return directory


# -- configuration problems ----------------------------------------------------------------------
def test_check_reports_every_problem_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    site(tmp_path)
    (tmp_path / "site.yaml").write_text(
        "workers: 2\n"
        "listen: ['127.0.0.1:99999']\n"
        "workers: 3\n"
        "routes:\n"
        "  - prefix: /\n"
        "    static:\n"
        "      root: /no/such/www\n"
        "      autoindx: true\n"
    )
    result = forkd("-c", "site.yaml", "--check", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [  # the duplicate key no longer hides the rest
        "site.yaml:2:10: listen[0]: port 99999 is out of range (0 to 65535)",
        "site.yaml:3:1: workers: duplicate key (first on line 1)",
        "site.yaml:7:13: routes[0].static.root: no such directory: /no/such/www",
        "site.yaml:8:7: routes[0].static.autoindx: unknown key (did you mean autoindex?)",
    ]


def test_a_server_that_cannot_start_names_the_file_and_counts_the_problems(tmp_path: Path) -> None:
    site(tmp_path)
    (tmp_path / "site.yaml").write_text(
        "listen: ['127.0.0.1:0']\nworkerz: 2\nroutes: [{prefix: /, static: {root: nowhere}}]\n"
        "timeouts: {header: 0}\n"
    )
    result = forkd("-c", "site.yaml", cwd=tmp_path, timeout=15)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "forkd: site.yaml:2:1: workerz: unknown key (did you mean workers?)",
        f"forkd: site.yaml:3:37: routes[0].static.root: no such directory: {tmp_path / 'nowhere'}",
        "forkd: site.yaml:4:20: timeouts.header: must be positive, got 0",
        "forkd: not started: 3 problems in site.yaml",
    ]
    (tmp_path / "site.yaml").write_text("routes: [{prefix: /, static: {root: www}}\n")
    result = forkd("-c", "site.yaml", cwd=tmp_path, timeout=15)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "forkd: not started: 1 problem in site.yaml"
    assert result.stderr.startswith("forkd: site.yaml:2:1: YAML syntax error: ")


# -- -T: the effective configuration -------------------------------------------------------------

SHORT = """\
listen: ["127.0.0.1:0", "unix:forkd.sock"]
workers: auto
pidfile: run/forkd.pid
access_log: logs/access.log
error_log: logs/error.log
unix_mode: "0660"
limits: {body: 1024}
routes:
  - prefix: /cgi-bin/
    cgi: {root: cgi-bin, interpreters: {.sh: sh}, env: {A: "1"}}
  - prefix: /
    static: {root: www, headers: {X-Site: demo}, error_pages: {404: index.html}}
"""


def test_print_config_fills_in_every_default_and_resolves_every_path(tmp_path: Path) -> None:
    site(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "site.yaml").write_text(SHORT)
    result = forkd("-c", "site.yaml", "-T", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = yaml.safe_load(result.stdout)
    assert data["workers"] == os.cpu_count()  # "auto", as it will run
    assert data["listen"] == ["127.0.0.1:0", f"unix:{tmp_path / 'forkd.sock'}"]
    assert data["pidfile"] == str(tmp_path / "run" / "forkd.pid")
    assert data["access_log"] == str(tmp_path / "logs" / "access.log")
    assert data["unix_mode"] == "0660"
    assert data["timeouts"] == {
        "header": 10.0,
        "body": 30.0,
        "keepalive": 5.0,
        "graceful": 30.0,
        "send": 60.0,
        "worker": 120.0,
        "drain": 0.0,
    }
    assert data["limits"]["body"] == 1024 and data["limits"]["headers"] == 100
    cgi, static = data["routes"]
    assert set(cgi) == {"prefix", "cgi"} and set(static) == {"prefix", "static"}
    assert cgi["cgi"]["root"] == str(tmp_path / "cgi-bin") and cgi["cgi"]["timeout"] == 30.0
    assert os.path.isabs(cgi["cgi"]["interpreters"][".sh"])
    assert static["static"]["root"] == str(tmp_path / "www")
    assert static["static"]["error_pages"] == {404: "index.html"}
    assert static["static"]["autoindex"] is False and static["static"]["index"] == ["index.html"]


def test_print_config_output_is_a_config_that_prints_itself_again(tmp_path: Path) -> None:
    site(tmp_path)
    for name in ("run", "logs", "elsewhere"):
        (tmp_path / name).mkdir()
    (tmp_path / "site.yaml").write_text(SHORT)
    first = forkd("-c", "site.yaml", "-T", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # Saved in another directory: nothing may depend on where the file is (every path is absolute).
    saved = tmp_path / "elsewhere" / "effective.yaml"
    saved.write_text(first.stdout)
    check = forkd("-c", str(saved), "--check")
    assert (check.returncode, check.stdout) == (0, f"forkd: configuration {saved} is ok\n")
    second = forkd("-c", str(saved), "-T")
    assert second.returncode == 0 and second.stdout == first.stdout


def test_the_printed_config_serves_the_same_site(tmp_path: Path) -> None:
    site(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "site.yaml").write_text(
        f"listen: ['127.0.0.1:0']\nerror_log: {run / 'error.log'}\naccess_log: null\n"
        "routes: [{prefix: /cgi-bin/, cgi: {root: cgi-bin}}, {prefix: /, static: {root: www}}]\n"
    )
    printed = forkd("-c", str(tmp_path / "site.yaml"), "-T")
    assert printed.returncode == 0, printed.stderr
    daemon = Daemon(run, printed.stdout)  # the dump itself is the daemon's config file
    try:
        daemon.start()
        assert daemon.get("/")[::2] == (200, b"hello\n")
        assert daemon.get("/cgi-bin/hi.sh")[::2] == (200, b"hi\n")
    finally:
        daemon.stop()


def test_print_config_of_a_broken_config_fails_like_check(tmp_path: Path) -> None:
    site(tmp_path)
    (tmp_path / "site.yaml").write_text("workers: 0\nroutes: [{prefix: /, static: {root: www}}]\n")
    printed = forkd("-c", "site.yaml", "-T", cwd=tmp_path)
    checked = forkd("-c", "site.yaml", "-t", cwd=tmp_path)
    assert printed.returncode == checked.returncode == 1
    assert printed.stdout == ""
    assert (
        printed.stderr
        == checked.stderr
        == ('site.yaml:1:10: workers: expected an integer >= 1 or "auto", got 0\n')
    )


# -- --help ---------------------------------------------------------------------------------------


def test_help_describes_gives_examples_and_points_to_the_readme() -> None:
    result = forkd("--help")
    assert result.returncode == 0
    text = result.stdout
    assert "static files, CGI, Python web apps (WSGI)" in text
    for example in (
        "forkd -c /etc/forkd/site.yaml ",
        "forkd -c /etc/forkd/site.yaml -t",
        "forkd -c /etc/forkd/site.yaml -T",
        "forkd -c /etc/forkd/site.yaml -s reload",
    ):
        assert f"\n    {example}" in text  # kept on its own line, as written
    assert "-T, --print-config" in text
    assert "README.md" in " ".join(text.split())  # the pointer to the operator's guide
    assert max(map(len, text.splitlines())) <= 80  # readable in a plain terminal
    assert forkd("-h").stdout == text


# -- the master's last words ----------------------------------------------------------------------


def _served(directory: Path, **extra: object) -> Daemon:
    site(directory)
    config: dict[str, object] = {
        "routes": [{"prefix": "/", "static": {"root": str(directory / "www")}}]
    }
    config.update(extra)
    return Daemon(directory, config)


@pytest.mark.parametrize(
    "signum, reason",
    [
        (signal.SIGTERM, "graceful stop on SIGTERM"),
        (signal.SIGINT, "fast stop on SIGINT"),
        (signal.SIGQUIT, "fast stop on SIGQUIT"),
    ],
)
def test_the_master_logs_that_it_exits_and_why(tmp_path: Path, signum: int, reason: str) -> None:
    daemon = _served(tmp_path)
    try:
        daemon.start()
        daemon.signal(signum)
        assert daemon.wait(15) == 0
        last = daemon.error_log.read_text().splitlines()[-1]
        assert re.search(
            rf"\[info\] {daemon.pid}: exiting with code 0: {reason}, done in \d+\.\ds$", last
        )
    finally:
        daemon.stop()


def test_a_fast_stop_during_a_graceful_one_says_both(tmp_path: Path) -> None:
    daemon = _served(tmp_path)
    try:
        daemon.start()
        with socket.create_connection((daemon.host, daemon.port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a request keeps a worker busy
            daemon.signal(signal.SIGTERM)
            daemon.wait_for_log("stopping gracefully")
            daemon.signal(signal.SIGINT)
            daemon.signal(signal.SIGINT)  # a second Ctrl-C adds nothing to the story
            assert daemon.wait(15) == 0
        last = daemon.error_log.read_text().splitlines()[-1]
        assert (
            "exiting with code 0: fast stop on SIGINT during a graceful stop on SIGTERM, " in last
        )
    finally:
        daemon.stop()


def test_a_master_that_cannot_start_logs_why_it_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = _served(tmp_path, listen=[f"127.0.0.1:{port}"])
        daemon.start(wait=False)
        assert daemon.wait(15) == 1
    lines = daemon.error_log.read_text().splitlines()
    assert lines[-1].endswith(
        f"exiting with code 1: cannot start: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    )
    assert (daemon.dir / "stderr.log").read_text().splitlines()[-1] == (
        f"forkd: not started: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start workers as another user")
def test_a_first_generation_that_fails_is_the_logged_reason(tmp_path: Path) -> None:
    # As "nobody" the workers cannot open their logs under the test's private (0700) directory.
    daemon = _served(tmp_path, user="nobody")
    daemon.expect_tracebacks()  # each worker that cannot boot logs why, with its traceback
    daemon.start(wait=False)
    try:
        assert daemon.wait(40) == 1
    finally:
        daemon.stop()
    last = daemon.error_log.read_text().splitlines()[-1]
    assert (
        "[error]" in last and "exiting with code 1: cannot start: workers could not start: " in last
    )


# -- the access log of refused requests -----------------------------------------------------------

REFUSED = [
    pytest.param(b"DELETE / HTTP/1.1\r\n", b"", 405, id="405"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 2048\r\n", b"", 413, id="413"),
    pytest.param(
        b"POST / HTTP/1.1\r\nExpect: teapot\r\nContent-Length: 1\r\n",
        b"x",
        417,
        id="417",
    ),
]


@pytest.mark.parametrize("log_format", ["combined", "json"])
@pytest.mark.parametrize("head, body, status", REFUSED)
def test_a_request_refused_after_its_head_logs_its_user_agent_and_referer(
    tmp_path: Path, log_format: str, head: bytes, body: bytes, status: int
) -> None:
    daemon = _served(tmp_path, log_format=log_format, limits={"body": 1024})
    try:
        daemon.start()
        request = (
            head + b"Host: x\r\nUser-Agent: probe/1.0\r\n"
            b"Referer: http://example.com/from\r\nConnection: close\r\n\r\n" + body
        )
        assert daemon.raw(request).startswith(b"HTTP/1.1 %d " % status)
        daemon.signal(signal.SIGTERM)  # flushes the access log buffers
        assert daemon.wait(15) == 0
    finally:
        daemon.stop()
    [line] = daemon.access_log.read_text().splitlines()
    if log_format == "json":
        entry = json.loads(line)
        assert (entry["status"], entry["user_agent"], entry["referer"]) == (
            status,
            "probe/1.0",
            "http://example.com/from",
        )
    else:
        assert f'" {status} ' in line
        assert line.endswith('"http://example.com/from" "probe/1.0"')
