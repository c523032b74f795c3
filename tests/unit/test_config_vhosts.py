"""Config validation of virtual hosts, redirects and route options (no daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkd.config import ConfigError, loads
from forkd.routing import host_name


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    return tmp_path


def problems(text: str, base: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(text, base)
    return [line.split(": ", 1)[1] for line in caught.value.problems]


STATIC = "[{prefix: /, static: {root: www}}]"


def test_servers_replace_top_level_routes(base: Path) -> None:
    config = loads(f"servers:\n  - {{names: [Example.COM.], routes: {STATIC}}}\n", base)
    assert config.routes == ()
    assert config.servers[0].names == ("example.com",)


@pytest.mark.parametrize("name", ["*", "a.*.test", "*example.test", "x*.test", "*.*.test",
                                  "bad name.test", "a..test", ""])
def test_a_wildcard_or_name_in_the_wrong_form_is_refused(base: Path, name: str) -> None:
    found = problems(f"servers:\n  - {{names: ['{name}'], routes: {STATIC}}}\n", base)
    assert len(found) == 1 and found[0].startswith("servers[0].names[0]: "), found


def test_names_twice_and_two_defaults_are_refused(base: Path) -> None:
    found = problems(
        "servers:\n"
        f"  - {{names: [a.test, '*.b.test'], default: true, routes: {STATIC}}}\n"
        f"  - {{names: [c.test, '*.B.test'], default: true, routes: {STATIC}}}\n"
        f"  - {{names: [c.test], routes: []}}\n", base)
    assert found == [
        "servers[1].names[1]: *.b.test is already listed as servers[0].names[1]",
        "servers[1].default: servers[0] is already the default server",
        "servers[2].names[0]: c.test is already listed as servers[1].names[0]",
        "servers[2].routes: at least one route is required",
    ]


def test_server_routes_are_checked_with_their_path(base: Path) -> None:
    found = problems(
        "servers:\n  - names: [a.test]\n    routes:\n      - {prefix: /, static: {root: www}}\n"
        "      - {prefix: /x/, static: {root: nowhere}}\n", base)
    assert found[0] == "servers[0].routes[1]: unreachable: servers[0].routes[0] (prefix /) " \
                       "matches first"
    assert found[1].startswith("servers[0].routes[1].static.root: no such directory")


@pytest.mark.parametrize("to, reason", [
    ("{scheme}://{host}", "unknown placeholder"),
    ("//{host}{uri}", "must be an absolute URL"),
    ("{path}", "must be an absolute URL"),
    ("https://x.test/\r\nSet-Cookie: a", "spaces and control characters"),
])
def test_redirect_templates_are_checked(base: Path, to: str, reason: str) -> None:
    text = 'routes:\n  - prefix: /\n    redirect: {to: ' + repr(to).replace("'", '"') + '}\n'
    found = problems(text, base)
    assert len(found) == 1 and found[0].startswith("routes[0].redirect.to: " + reason), found


def test_redirect_status_must_be_a_redirect(base: Path) -> None:
    found = problems("routes: [{prefix: /, redirect: {to: /x, status: 200}}]\n", base)
    assert found == ["routes[0].redirect.status: must be one of 301, 302, 307, 308, got 200"]


def test_access_rules_are_addresses_networks_or_all(base: Path) -> None:
    found = problems("routes: [{prefix: /, static: {root: www}, "
                     "access: {allow: [10.0.0.0/8, '::1', all, 10.0.0.1/8, nonsense]}}]\n", base)
    assert [line.split(":")[0] for line in found] == ["routes[0].access.allow[3]",
                                                      "routes[0].access.allow[4]"]


def test_access_keeps_the_order_the_rules_were_written_in(base: Path) -> None:
    config = loads("routes: [{prefix: /, static: {root: www}, "
                   "access: {deny: [10.0.0.1], allow: [10.0.0.0/8]}}]\n", base)
    assert config.routes[0].access is not None
    assert config.routes[0].access.rule_order == ("deny", "allow")


def test_htpasswd_line_in_an_unknown_format_names_the_line(base: Path) -> None:
    (base / "users").write_text("# staff\nalice:$apr1$/X/pFYV7$BUu2n6vHRKAJt2KZraYya0\n"
                                "bob:plaintext\nnocolon\n")
    found = problems("routes: [{prefix: /, static: {root: www}, "
                     "auth_basic: {realm: staff, user_file: users}}]\n", base)
    assert found == [
        (f"routes[0].auth_basic.user_file: {base / 'users'} line 3: unknown password format for "
         "bob (use bcrypt ($2y$), $apr1$ or {SHA})"),
        f'routes[0].auth_basic.user_file: {base / "users"} line 4: expected "user:hash"',
    ]


def test_auth_basic_reads_the_users(base: Path) -> None:
    (base / "users").write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    config = loads("routes: [{prefix: /, static: {root: www}, "
                   "auth_basic: {realm: staff, user_file: users}}]\n", base)
    assert config.routes[0].auth_basic is not None
    assert dict(config.routes[0].auth_basic.users) == {
        "alice": "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}


@pytest.mark.parametrize("raw, name", [
    ("Example.COM", "example.com"), ("example.com.", "example.com"),
    ("example.com:8080", "example.com"), ("example.com.:80", "example.com"),
    ("[::1]:8080", "[::1]"), ("", ""),
])
def test_host_name(raw: str, name: str) -> None:
    assert host_name(raw) == name
