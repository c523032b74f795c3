"""forkd.config: the `scheme` route option (scheme-scoped routes) and its --check errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trustme

from forkd.config import ConfigError, dump, loads

REDIRECT = '{to: "https://{host}{uri}", status: 301}'


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    leaf = trustme.CA().issue_cert("example.com")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "site.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "site.key"))
    return tmp_path


BOTH = """\
listen: [{address: "127.0.0.1:8443", tls: true}, "127.0.0.1:8080"]
tls: {certificates: [{cert: site.pem, key: site.key}]}
"""


def problems(text: str, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(text), base)
    return [line.split(": ", 1)[1] for line in caught.value.problems]


def test_the_two_line_redirect_is_valid(base: Path) -> None:
    config = loads(BOTH + textwrap.dedent(f"""\
        routes:
          - {{prefix: /.well-known/acme-challenge/, static: {{root: www}}, scheme: http}}
          - {{prefix: /, redirect: {REDIRECT}, scheme: http}}
          - {{prefix: /, static: {{root: www}}}}
        """), base)
    assert [route.scheme for route in config.routes] == ["http", "http", None]
    assert [route.handler[0] for route in config.routes] == ["static", "redirect", "static"]
    assert config.routes[2].schemes == ("http", "https")


def test_a_scheme_is_http_or_https(base: Path) -> None:
    found = problems(BOTH + "routes: [{prefix: /, static: {root: www}, scheme: ftp}]\n", base)
    assert found == ["routes[0].scheme: must be one of http, https, got 'ftp'"]


def test_same_prefix_twice_is_refused_unless_the_schemes_differ(base: Path) -> None:
    found = problems(BOTH + textwrap.dedent("""\
        routes:
          - {prefix: /a/, static: {root: www}, scheme: http}
          - {prefix: /a, static: {root: www}, scheme: https}
          - {prefix: /a/, static: {root: www}}
          - {prefix: /b/, static: {root: www}}
          - {prefix: /b/, static: {root: www}, scheme: https}
          - {prefix: /c/, static: {root: www}, scheme: https}
          - {prefix: /c/, static: {root: www}, scheme: https}
          - {prefix: /c/, static: {root: www}}
          - {prefix: /, static: {root: www}}
        """), base)
    assert found == [
        "routes[2].prefix: /a/ is already routes[0].prefix and routes[1].prefix",
        "routes[4].prefix: /b/ (scheme https) is already routes[3].prefix",
        "routes[6].prefix: /c/ (scheme https) is already routes[5].prefix",
    ]  # routes[7] still serves /c/ over plain HTTP


def test_routes_after_a_scheme_scoped_slash(base: Path) -> None:
    found = problems(BOTH + textwrap.dedent(f"""\
        routes:
          - {{prefix: /, redirect: {REDIRECT}, scheme: http}}
          - {{prefix: /x/, static: {{root: www}}}}
          - {{prefix: /y/, static: {{root: www}}, scheme: http}}
          - {{prefix: /, static: {{root: www}}, scheme: https}}
          - {{prefix: /z/, static: {{root: www}}}}
          - {{prefix: /, static: {{root: www}}}}
        """), base)
    assert found == [  # /x/ still serves HTTPS requests, /y/ none, nothing after both `/`s
        "routes[2]: unreachable: routes[0] (prefix /) matches first",
        "routes[4]: unreachable: routes[0] and routes[3] (prefix /) match first",
        "routes[5]: unreachable: routes[0] and routes[3] (prefix /) match first",
    ]


def test_a_scheme_without_a_listener_of_it_is_refused(base: Path) -> None:
    found = problems(textwrap.dedent("""\
        listen: ["127.0.0.1:8080", "unix:/tmp/forkd-scheme.sock"]
        routes:
          - {prefix: /s/, static: {root: www}, scheme: https}
          - {prefix: /, static: {root: www}, scheme: http}
        servers:
          - names: [a.test]
            routes: [{prefix: /, static: {root: www}, scheme: https}]
        """), base)
    assert found == [
        "routes[0].scheme: https can never match: no listener has tls: true",
        "servers[0].routes[0].scheme: https can never match: no listener has tls: true",
    ]
    found = problems(textwrap.dedent("""\
        listen: [{address: "127.0.0.1:8443", tls: true}]
        tls: {certificates: [{cert: site.pem, key: site.key}]}
        routes: [{prefix: /, static: {root: www}, scheme: http}]
        """), base)
    assert found == ["routes[0].scheme: http can never match: every listener has tls: true"]


def test_the_default_listener_is_plain_http(base: Path) -> None:
    config = loads("routes: [{prefix: /, static: {root: www}, scheme: http}]\n", base)
    assert config.routes[0].scheme == "http"
    found = problems("routes: [{prefix: /, static: {root: www}, scheme: https}]\n", base)
    assert found == ["routes[0].scheme: https can never match: no listener has tls: true"]


def test_server_routes_may_be_scheme_scoped(base: Path) -> None:
    config = loads(BOTH + textwrap.dedent(f"""\
        servers:
          - names: [example.com]
            routes:
              - {{prefix: /, redirect: {REDIRECT}, scheme: http}}
              - {{prefix: /, static: {{root: www}}}}
        """), base)
    assert [route.scheme for route in config.servers[0].routes] == ["http", None]


def test_the_dump_keeps_a_scheme_and_omits_an_absent_one(base: Path) -> None:
    config = loads(BOTH + textwrap.dedent(f"""\
        routes:
          - {{prefix: /, redirect: {REDIRECT}, scheme: http}}
          - {{prefix: /, static: {{root: www}}}}
        """), base)
    text = dump(config)
    assert text.count("scheme: http") == 1 and "scheme: null" not in text
    assert loads(text, base) == config  # `forkd -T` prints a config that loads back as is
