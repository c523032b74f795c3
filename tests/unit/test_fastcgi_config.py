"""The fastcgi route's config: its keys, their defaults, and one `key.path: reason` per problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from forkd.config import ConfigError, FastCgiConfig, dump, loads


def build(tmp_path: Path, fastcgi: str) -> FastCgiConfig:
    (tmp_path / "www").mkdir(exist_ok=True)
    (tmp_path / "www" / "index.php").write_text("<?php\n")
    config = loads(f"routes:\n  - prefix: /\n    fastcgi: {fastcgi}\n", tmp_path)
    settings = config.routes[0].fastcgi
    assert settings is not None and config.routes[0].handler[0] == "fastcgi"
    assert loads(dump(config), tmp_path) == config  # `-T` prints it back, accepted as is
    return settings


def problems(tmp_path: Path, fastcgi: str) -> list[str]:
    (tmp_path / "www").mkdir(exist_ok=True)
    (tmp_path / "www" / "index.php").write_text("<?php\n")
    with pytest.raises(ConfigError) as caught:
        loads(f"routes:\n  - prefix: /\n    fastcgi: {fastcgi}\n", tmp_path)
    return [line.split(": ", 1)[1] for line in caught.value.problems]


def test_defaults(tmp_path: Path) -> None:
    settings = build(tmp_path, '{connect: "unix:/run/php/php8.2-fpm.sock", root: www}')
    assert settings.connect == "unix:/run/php/php8.2-fpm.sock"
    assert settings.root == tmp_path / "www"
    assert settings.index == ("index.php", "index.html") and settings.extensions == (".php",)
    assert settings.front_controller is None and dict(settings.params) == {}
    assert settings.timeout == 60.0 and settings.pass_authorization is False
    assert settings.connections == 0  # a new connection per request unless asked


def test_every_key(tmp_path: Path) -> None:
    settings = build(tmp_path, textwrap.dedent("""\
        {connect: "127.0.0.1:9000", root: www, index: [index.php], extensions: [.php, .PHTML],
               front_controller: /index.php, params: {APP_ENV: prod}, timeout: 5,
               pass_authorization: true, connections: 3}"""))
    assert settings.connections == 3
    assert settings.connect == "127.0.0.1:9000" and settings.extensions == (".php", ".phtml")
    assert settings.front_controller == "/index.php" and dict(settings.params) == {"APP_ENV": "prod"}
    assert build(tmp_path, '{connect: "unix:fpm.sock", root: www}').connect == (
        f"unix:{tmp_path}/fpm.sock")  # relative to the config file, like listen
    assert build(tmp_path, '{connect: "[::1]:9000", root: www}').connect == "[::1]:9000"


def test_problems_name_their_key(tmp_path: Path) -> None:
    found = problems(tmp_path, textwrap.dedent("""\
        {connect: "php-fpm.example:9000", root: nowhere, extensions: [php], index: [a/b.php],
               front_controller: /missing.php, timeout: 0, color: red}"""))
    text = "\n".join(found)
    assert "routes[0].fastcgi.connect: expected an IP address, not a name" in text
    assert "routes[0].fastcgi.root: no such directory" in text
    assert "routes[0].fastcgi.extensions[0]: an extension starts with '.'" in text
    assert "routes[0].fastcgi.index[0]: an index is a file name without '/'" in text
    assert "routes[0].fastcgi.timeout: must be positive" in text
    assert "routes[0].fastcgi.color: unknown key" in text
    assert problems(tmp_path, "{root: www}") == ["routes[0].fastcgi.connect: required key is missing"]
    assert "no such file" in problems(
        tmp_path, '{connect: "unix:/x", root: www, front_controller: /missing.php}')[0]
    (tmp_path / "www" / "index.html").write_text("static\n")
    assert "not one of fastcgi.extensions" in problems(
        tmp_path, '{connect: "unix:/x", root: www, front_controller: /index.html}')[0]
    assert problems(tmp_path, '{connect: "unix:/x", root: www, params: {SCRIPT_FILENAME: /x}}') == [
        "routes[0].fastcgi.params.SCRIPT_FILENAME: is set by forkd for every request"]
    assert "HTTP_HOST: is set by forkd" in problems(
        tmp_path, '{connect: "unix:/x", root: www, params: {HTTP_HOST: x}}')[0]
    assert "port 0" in problems(tmp_path, '{connect: "127.0.0.1:0", root: www}')[0]
    assert "e.g." in problems(tmp_path, '{connect: "nonsense", root: www}')[0]
    assert problems(tmp_path, '{connect: "unix:/x", root: www, connections: -1}') == [
        "routes[0].fastcgi.connections: must not be negative, got -1"]
    assert problems(tmp_path, '{connect: "unix:/x", root: www, connections: 5000}') == [
        "routes[0].fastcgi.connections: at most 1024, got 5000"]
    assert problems(tmp_path, '{connect: "unix:/x", root: www, half_close: maybe}') == [
        "routes[0].fastcgi.half_close: expected true or false, got the string 'maybe'"]
