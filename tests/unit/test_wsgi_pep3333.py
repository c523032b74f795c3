"""The PEP 3333 pieces of the wsgi route without a server: config, wsgi.input, start_response's
checks, wsgi.errors, the file wrapper (issue 13). The daemon tests are in
tests/integration/test_wsgi*.py."""

from __future__ import annotations

import io
import tempfile
import textwrap
from pathlib import Path

import pytest

from forkd.config import ConfigError, dump, loads
from forkd.handlers.wsgi_environ import (
    AppProtocolError,
    Errors,
    FileWrapper,
    Input,
    check_start_response,
    own_body,
    split_app,
)
from forkd.logs import ErrorLog

BODY = b"first line\nsecond line\n\nlast, no newline"


def config_problems(route: str, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(f"routes:\n  - {route}\n"), base)
    return [line.split(": ", 1)[1] for line in caught.value.problems]


def test_config_accepts_a_wsgi_route_and_dumps_it_back(tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    text = ("routes: [{prefix: /app/, wsgi: {app: 'site.wsgi:application', python_path: [apps], "
            "env: {DJANGO_SETTINGS_MODULE: site.settings}, threads: 8}}]\n")
    config = loads(text, tmp_path)
    settings = config.routes[0].wsgi
    assert settings is not None and settings.python_path == (tmp_path / "apps",)
    assert (settings.threads, settings.queue, settings.preload) == (8, 64, False)
    assert config.routes[0].handler[0] == "wsgi"
    assert loads(dump(config), tmp_path) == config


def test_config_problems_of_a_wsgi_route(tmp_path: Path) -> None:
    found = config_problems("{prefix: /, wsgi: {app: 'not a module', python_path: [nowhere], "
                            "threads: 0, env: {'A=B': x}, workers: 2}}", tmp_path)
    assert sorted(found) == sorted([
        "routes[0].wsgi.workers: unknown key",
        'routes[0].wsgi.app: expected "package.module:callable", got \'not a module\'',
        f"routes[0].wsgi.python_path[0]: no such directory: {tmp_path / 'nowhere'}",
        "routes[0].wsgi.threads: must be at least 1",
        "routes[0].wsgi.env.A=B: not a valid environment variable name",
    ])
    assert config_problems("{prefix: /, wsgi: {python_path: []}}", tmp_path) == [
        "routes[0].wsgi.app: required key is missing"]
    assert config_problems("{prefix: /, wsgi: {app: x:y:z}}", tmp_path)[0].startswith(
        "routes[0].wsgi.app: expected")


def test_app_reference_defaults_to_application() -> None:
    assert split_app("pkg.mod") == ("pkg.mod", "application")
    assert split_app("pkg.mod:make.app") == ("pkg.mod", "make.app")


@pytest.mark.parametrize("make", [
    lambda: io.BytesIO(BODY),
    lambda: _spooled(BODY, 10),  # rolled over to a file
    lambda: _spooled(BODY, 1000),  # still in memory
])
def test_input_methods_and_empty_past_the_end(make) -> None:
    def fresh() -> Input:
        return Input(own_body(make()), len(BODY))

    assert fresh().read() == BODY
    stream = fresh()
    assert stream.read(5) + stream.read(None) == BODY
    assert stream.read() == b"" and stream.read(3) == b"" and stream.readline() == b""
    assert fresh().readlines() == BODY.splitlines(keepends=True)
    assert list(fresh()) == BODY.splitlines(keepends=True)
    stream = fresh()
    assert stream.readline(4) == b"firs" and stream.readline() == b"t line\n"
    assert fresh().readlines(15) == [b"first line\n", b"second line\n"]  # a hint stops early


def test_input_stops_at_the_declared_length() -> None:
    stream = Input(io.BytesIO(BODY + b"next request"), len(BODY))
    assert stream.read() == BODY and stream.read() == b""
    assert Input(None, 0).read() == b"" and list(Input(None, 0)) == []


def test_own_body_survives_the_connection_closing_its_copy() -> None:
    original = _spooled(BODY, 10)
    mine = own_body(original)
    original.close()
    assert mine is not None and mine.read() == BODY


def _spooled(data: bytes, limit: int) -> tempfile.SpooledTemporaryFile[bytes]:
    spooled = tempfile.SpooledTemporaryFile(limit)  # noqa: SIM115 - returned
    spooled.write(data)
    spooled.seek(0)
    return spooled


@pytest.mark.parametrize(("status", "headers", "why"), [
    ("200", [], "bad status line"),
    ("200 OK\r\nX: y", [], "bad status line"),
    (b"200 OK", [], "bad status line"),
    ("200 OK", (("A", "b"),), "must be a list"),
    ("200 OK", [("A", "b", "c")], r"\(name, value\) tuple"),
    ("200 OK", [("Bad Name", "x")], "bad response header name"),
    ("200 OK", [("X-A", "a\r\nSet-Cookie: evil")], "bad value"),
    ("200 OK", [("X-A", "snowman \u2603")], "bad value"),
    ("200 OK", [("Transfer-Encoding", "chunked")], "hop-by-hop"),
    ("200 OK", [("Keep-Alive", "timeout=5")], "hop-by-hop"),
    ("200 OK", [("Content-Length", "-1")], "bad Content-Length"),
])
def test_start_response_refuses_what_pep_3333_forbids(status, headers, why: str) -> None:
    with pytest.raises(AppProtocolError, match=why):
        check_start_response(status, headers)


def test_start_response_reads_the_declared_length() -> None:
    headers = [("Content-Type", "text/plain"), ("content-length", "12")]
    assert check_start_response("404 Not Found", headers) == (404, headers, 12)
    assert check_start_response("299 ", []) == (299, [], None)  # an empty reason phrase is allowed


def test_wsgi_errors_become_escaped_log_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "error.log"
    errors = Errors(ErrorLog(str(log_path)), "site:app")
    errors.write("one\ntw")
    errors.writelines(["o\x1b[2J\n", "partial"])
    assert log_path.read_text().count("site:app") == 2
    errors.flush()
    lines = [line.split(": ", 1)[1] for line in log_path.read_text().splitlines()]
    assert lines == ["wsgi site:app: one", "wsgi site:app: two\\x1b[2J",
                     "wsgi site:app: partial"]
    with pytest.raises(TypeError):
        errors.write(b"bytes")  # type: ignore[arg-type]


def test_file_wrapper_iterates_and_finds_its_file_range(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 100)
    with open(path, "rb") as handle:
        handle.seek(10)
        wrapper = FileWrapper(handle, 300)
        fd, offset, count = wrapper.file_range()  # type: ignore[misc]
        assert (fd, offset, count) == (handle.fileno(), 10, 990)
        assert [len(part) for part in wrapper] == [300, 300, 300, 90]
    assert FileWrapper(io.BytesIO(b"abc")).file_range() is None  # no descriptor: iterated
    assert list(FileWrapper(io.BytesIO(b"abc"), 2)) == [b"ab", b"c"]
