"""Script lookup and the CGI environment (RFC 3875 §3.3, §4.1), on a temporary directory tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forkd.config import CgiConfig
from forkd.handlers.cgi_env import (
    Script,
    ServerFacts,
    base_environment,
    build_environ,
    fixed_environment,
    header_variables,
    locate,
    split_host,
)
from forkd.http.errors import Forbidden, NotFound
from forkd.http.request import ConnectionInfo, Request


@pytest.fixture
def root(tmp_path: Path) -> str:
    base = tmp_path / "cgi"
    (base / "sub").mkdir(parents=True)
    for name in ("app.sh", "sub/deep.sh", ".hidden.sh", "nph-raw.sh"):
        (base / name).write_text("#!/bin/sh\n")
        (base / name).chmod(0o755)
    (base / "plain.txt").write_text("not a script")
    (base / "page.php").write_text("<?php echo 1;")
    (tmp_path / "outside.sh").write_text("#!/bin/sh\n")
    (tmp_path / "outside.sh").chmod(0o755)
    (base / "escape.sh").symlink_to(tmp_path / "outside.sh")
    (base / "alias.sh").symlink_to(base / "app.sh")
    return os.path.realpath(base)


PHP = {".php": "/usr/bin/php-cgi"}


def test_script_and_path_info(root: str) -> None:
    script = locate(root, "/cgi-bin/", "/app.sh/extra/path", {})
    assert script.filename == f"{root}/app.sh"
    assert script.name == "/cgi-bin/app.sh"
    assert script.path_info == "/extra/path"
    assert script.argv == (f"{root}/app.sh",)
    assert script.directory == root


def test_trailing_slash_stays_in_path_info(root: str) -> None:
    assert locate(root, "/cgi-bin", "/app.sh/", {}).path_info == "/"
    assert locate(root, "/cgi-bin", "/app.sh", {}).path_info == ""


def test_script_in_a_subdirectory(root: str) -> None:
    script = locate(root, "/cgi-bin/", "/sub/deep.sh/x", {})
    assert (script.name, script.path_info) == ("/cgi-bin/sub/deep.sh", "/x")


def test_interpreter_for_extension(root: str) -> None:
    script = locate(root, "/p/", "/page.php", PHP)
    assert script.argv == ("/usr/bin/php-cgi", f"{root}/page.php")


def test_nph_prefix(root: str) -> None:
    assert locate(root, "/c/", "/nph-raw.sh", {}).nph
    assert not locate(root, "/c/", "/app.sh", {}).nph


def test_symlink_inside_root_is_allowed(root: str) -> None:
    assert locate(root, "/c/", "/alias.sh", {}).filename == f"{root}/alias.sh"


@pytest.mark.parametrize("rest", [
    "/", "", "/sub", "/sub/", "/missing.sh", "/sub/missing.sh/x", "/.hidden.sh", "/sub/../.hidden.sh",
    "/escape.sh", "/app.sh\x00",
])
def test_not_found(root: str, rest: str) -> None:
    with pytest.raises(NotFound):
        locate(root, "/c/", rest, PHP)


def test_dot_directory_is_never_entered(root: str) -> None:
    os.mkdir(f"{root}/.git")
    Path(f"{root}/.git/hook.sh").write_text("#!/bin/sh\n")
    os.chmod(f"{root}/.git/hook.sh", 0o755)
    with pytest.raises(NotFound):
        locate(root, "/c/", "/.git/hook.sh", {})


def test_not_executable_is_forbidden(root: str) -> None:
    with pytest.raises(Forbidden):
        locate(root, "/c/", "/plain.txt", PHP)
    with pytest.raises(Forbidden):
        locate(root, "/c/", "/page.php", {})  # no interpreter configured for .php


def make_request(**overrides: object) -> Request:
    values: dict[str, object] = {
        "method": "POST", "target": "/cgi-bin/app.sh/a%20b/c?x=%41&y", "path": "/cgi-bin/app.sh/a%20b/c",
        "query": "x=%41&y", "version": "HTTP/1.1",
        "headers": {"host": "example.org:8080", "content-type": "text/plain", "content-length": "5",
                    "x-forwarded-for": "1.2.3.4", "x_forwarded_for": "6.6.6.6", "proxy": "http://evil/",
                    "user-agent": "t\xe9st", "accept": "*/*", "transfer-encoding": "chunked"},
        "host": "example.org:8080", "keep_alive": True, "content_length": 5, "body_length": 5,
        "conn": ConnectionInfo("10.0.0.7", 40123, "10.0.0.1", 8080),
    }
    values.update(overrides)
    return Request(**values)  # type: ignore[arg-type]


SCRIPT = Script(filename="/srv/cgi/app.sh", name="/cgi-bin/app.sh", path_info="/a b/c",
                argv=("/srv/cgi/app.sh",))
FACTS = ServerFacts(software="forkd/0.1.0", document_root="/srv/www", underscore_headers=False)


def environ(request: Request | None = None, script: Script = SCRIPT, facts: ServerFacts = FACTS,
            translated: str | None = "/srv/www/a b/c") -> dict[str, str]:
    fixed = fixed_environment({b"PATH": b"/bin"}, facts)
    env = build_environ(request or make_request(), script, fixed, facts, translated)
    return {k.decode(): v.decode("latin-1") for k, v in env.items()}


def test_rfc3875_meta_variables() -> None:
    env = environ()
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["AUTH_TYPE"] == ""
    assert env["CONTENT_LENGTH"] == "5"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["PATH_INFO"] == "/a b/c"
    assert env["PATH_TRANSLATED"] == "/srv/www/a b/c"
    assert env["QUERY_STRING"] == "x=%41&y"  # undecoded
    assert env["REMOTE_ADDR"] == env["REMOTE_HOST"] == "10.0.0.7"
    assert env["REMOTE_PORT"] == "40123"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/cgi-bin/app.sh"
    assert env["SERVER_NAME"] == "example.org"
    assert env["SERVER_PORT"] == "8080"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"] == "forkd/0.1.0"
    assert env["REQUEST_URI"] == "/cgi-bin/app.sh/a%20b/c?x=%41&y"
    assert env["SCRIPT_FILENAME"] == "/srv/cgi/app.sh"
    assert env["DOCUMENT_ROOT"] == "/srv/www"
    assert env["REDIRECT_STATUS"] == "200"
    assert env["PATH"] == "/bin"
    assert "HTTPS" not in env


def test_headers_become_http_variables_except_the_dangerous_ones() -> None:
    env = environ()
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["HTTP_ACCEPT"] == "*/*"
    assert env["HTTP_USER_AGENT"] == "t\xe9st"  # the received octet, not a re-encoding
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # never the underscore impostor
    for name in ("HTTP_PROXY", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_TRANSFER_ENCODING"):
        assert name not in env


def test_underscore_headers_when_asked() -> None:
    out = header_variables({"x_custom": "1", "x-other": "2"}, underscore_headers=True)
    assert out == {b"HTTP_X_CUSTOM": b"1", b"HTTP_X_OTHER": b"2"}
    assert header_variables({"x_custom": "1"}, underscore_headers=False) == {}


def test_header_names_with_odd_characters_are_dropped() -> None:
    assert header_variables({"x.forwarded.for": "1", "x+y": "2"}, underscore_headers=True) == {}


def test_no_body_means_no_content_length_and_no_path_translated_without_path_info() -> None:
    request = make_request(method="GET", content_length=None, body_length=0,
                           headers={"host": "example.org"})
    script = Script("/srv/cgi/app.sh", "/cgi-bin/app.sh", "", ("/srv/cgi/app.sh",))
    env = environ(request, script, translated=None)
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["PATH_INFO"] == ""
    assert "PATH_TRANSLATED" not in env
    assert env["SERVER_PORT"] == "8080"  # the port the connection arrived on


def test_chunked_body_gives_its_decoded_length() -> None:
    env = environ(make_request(content_length=None, chunked=True, body_length=12345))
    assert env["CONTENT_LENGTH"] == "12345"


def test_https_only_on_tls() -> None:
    tls = {"HTTPS": "on", "SSL_PROTOCOL": "TLSv1.3", "SSL_CLIENT_VERIFY": "NONE"}
    env = environ(make_request(conn=ConnectionInfo("::1", 1, "::1", 443, scheme="https",
                                                   tls_variables=tls)))
    assert env["HTTPS"] == "on"
    assert env["REQUEST_SCHEME"] == "https"
    assert env["SSL_PROTOCOL"] == "TLSv1.3" and env["SSL_CLIENT_VERIFY"] == "NONE"
    assert "HTTPS" not in environ(make_request(conn=ConnectionInfo("::1", 1, "::1", 80)))


def test_paths_are_utf8_and_query_is_raw_octets() -> None:
    script = Script("/srv/cgi/é.sh", "/cgi-bin/é.sh", "/ü", ("/srv/cgi/é.sh",))
    env = build_environ(make_request(query="q=\xe9"), script, {}, FACTS, "/srv/www/ü")
    assert env[b"SCRIPT_NAME"] == "/cgi-bin/é.sh".encode()
    assert env[b"PATH_INFO"] == "/ü".encode()
    assert env[b"QUERY_STRING"] == b"q=\xe9"


def test_redirect_variables_from_extra() -> None:
    env = environ(make_request(extra={"REDIRECT_URL": "/cgi-bin/old.sh", "REDIRECT_STATUS": "200",
                                      "NOT_REDIRECT": "x"}))
    assert env["REDIRECT_URL"] == "/cgi-bin/old.sh"
    assert "NOT_REDIRECT" not in env


def test_meta_variables_win_over_operator_env() -> None:
    env = build_environ(make_request(), SCRIPT, {b"SERVER_NAME": b"forged", b"GIT": b"1"}, FACTS, None)
    assert env[b"SERVER_NAME"] == b"example.org"
    assert env[b"GIT"] == b"1"


def test_base_environment_takes_only_path_pass_env_and_env() -> None:
    cgi = CgiConfig(root=Path("/"), env={"A": "1", "PATH": "/opt/bin"}, pass_env=("TZ", "ABSENT"))
    env = base_environment(cgi, {"PATH": "/usr/bin", "TZ": "UTC", "SECRET": "x", "HOME": "/root"})
    assert env == {b"PATH": b"/opt/bin", b"TZ": b"UTC", b"A": b"1"}
    assert base_environment(CgiConfig(root=Path("/")), {})[b"PATH"]


@pytest.mark.parametrize("host,expected", [
    ("example.org", ("example.org", 0)),
    ("example.org:8080", ("example.org", 8080)),
    ("[::1]:8080", ("[::1]", 8080)),
    ("[::1]", ("[::1]", 0)),
    ("", ("", 0)),
])
def test_split_host(host: str, expected: tuple[str, int]) -> None:
    assert split_host(host) == expected


def test_server_name_falls_back_to_the_local_address() -> None:
    env = environ(make_request(host="", headers={}, version="HTTP/1.0",
                               conn=ConnectionInfo("::1", 5, "::1", 8080)))
    assert env["SERVER_NAME"] == "[::1]"
