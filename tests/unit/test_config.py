"""forkd.config: YAML in, typed frozen objects out, every problem a `key.path: reason` line."""

from __future__ import annotations

import dataclasses
import os
import textwrap
import typing
from pathlib import Path

import pytest
import trustme
import yaml

from forkd.config import (
    NOT_KEYS,
    Config,
    ConfigError,
    ListenAddress,
    dump,
    load,
    loads,
    parse_listen,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    (tmp_path / "cgi-bin").mkdir()
    return tmp_path


def problems(text: str, base: Path) -> list[str]:
    """The problem lines, in file order, without the `<text>:` file name (LINE:COLUMN stays)."""
    with pytest.raises(ConfigError) as caught:
        loads(textwrap.dedent(text), base)
    assert all(line.startswith("<text>:") for line in caught.value.problems)
    return [line.removeprefix("<text>:").lstrip() for line in caught.value.problems]


MINIMAL = "routes: [{prefix: /, static: {root: www}}]\n"


def test_the_demo_config_is_valid() -> None:
    config = load(ROOT / "conf" / "site.yaml")
    assert config.listen == (ListenAddress("inet", "127.0.0.1", 8080),)
    assert config.source == ROOT / "conf" / "site.yaml"
    demo, app = config.servers  # the demo site (the default) and a second virtual host
    assert demo.default and "localhost" in demo.names and app.names == ("app.localhost",)
    cgi, php, chat, api, static = demo.routes
    assert php.fastcgi is not None and php.fastcgi.front_controller == "/index.php"
    assert chat.websocket is not None
    assert chat.websocket.command[0] == str(ROOT / "conf" / "websocket" / "chat.sh")
    assert api.wsgi is not None and api.wsgi.python_path == (ROOT / "conf" / "apps",)
    assert cgi.cgi is not None and cgi.cgi.root == ROOT / "conf" / "cgi-bin"
    assert set(cgi.cgi.interpreters) == {".py", ".php"}
    assert all(os.access(program, os.X_OK) for program in cgi.cgi.interpreters.values())
    assert static.static is not None and static.static.autoindex


def test_defaults_live_in_the_dataclasses(base: Path) -> None:
    config = loads(MINIMAL, base)
    assert config.workers == Config.workers
    assert config.timeouts.graceful == 30.0 and config.limits.body == 10485760
    assert config.access_log == "-" and config.pidfile is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 3  # type: ignore[misc]


def test_relative_paths_resolve_against_the_config_directory(base: Path) -> None:
    (base / "site.yaml").write_text(
        "pidfile: run.pid\naccess_log: access.log\nerror_log: '-'\n"
        "listen: [unix:forkd.sock]\n" + MINIMAL
    )
    config = load(base / "site.yaml")
    assert config.pidfile == base / "run.pid"
    assert config.access_log == str(base / "access.log") and config.error_log == "-"
    assert config.listen[0].path == str(base / "forkd.sock")
    assert config.routes[0].static is not None and config.routes[0].static.root == base / "www"


def test_unknown_keys_and_wrong_types_name_their_path(base: Path) -> None:
    found = problems(
        """
        workers: 0
        timeouts: {graceful: soon, header: -1}
        limits: {body: 1.5, bodies: 3}
        server_tokens: "yes"
        routes:
          - prefix: /
            static: {root: www, index: index.html, autoindx: true}
          - prefix: nope
            cgi: {root: cgi-bin}
            static: {root: www}
        """,
        base,
    )
    assert found == [  # in file order, each at its value (an unknown key: at the key)
        '2:10: workers: expected an integer >= 1 or "auto", got 0',
        "3:22: timeouts.graceful: expected a number of seconds, got the string 'soon'",
        "3:36: timeouts.header: must be positive, got -1",
        "4:16: limits.body: expected an integer, got float 1.5",
        "4:21: limits.bodies: unknown key (did you mean body?)",
        "5:16: server_tokens: expected true or false, got the string 'yes'",
        "8:44: routes[0].static.autoindx: unknown key (did you mean autoindex?)",
        ("9:5: routes[1]: a route needs exactly one handler: static, cgi, wsgi, redirect, fastcgi,"
         " websocket, status or health"),
        "9:13: routes[1].prefix: must be a path starting with '/', got 'nope'",
    ]


def test_missing_directories_are_reported(base: Path) -> None:
    found = problems(
        """
        pidfile: /no/such/dir/forkd.pid
        access_log: /no/such/dir/access.log
        listen: ["unix:/no/such/dir/forkd.sock"]
        routes: [{prefix: /, static: {root: missing}}]
        """,
        base,
    )
    assert found == [
        "2:10: pidfile: no such directory: /no/such/dir",
        "3:13: access_log: no such directory: /no/such/dir",
        "4:10: listen[0]: no such directory: /no/such/dir",
        f"5:37: routes[0].static.root: no such directory: {base / 'missing'}",
    ]


def test_cross_checks(base: Path) -> None:
    found = problems(
        """
        listen: ["127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1:0", "127.0.0.1:0"]
        user: no-such-user-forkd
        group: no-such-group-forkd
        limits: {request_line: 70000}
        routes:
          - {prefix: /static, static: {root: www}}
          - {prefix: /static/, static: {root: www}}
          - {prefix: /, static: {root: www}}
          - {prefix: /cgi-bin/, cgi: {root: cgi-bin}}
        """,
        base,
    )
    assert found == [
        "2:28: listen[1]: 127.0.0.1:8080 is already listed as listen[0]",
        "3:7: user: no such user: no-such-user-forkd",
        "4:8: group: no such group: no-such-group-forkd",
        "5:24: limits.request_line: must not exceed limits.header_bytes",
        "8:14: routes[1].prefix: /static/ is already routes[0].prefix",
        "10:5: routes[3]: unreachable: routes[2] (prefix /) matches first",
    ]


def test_every_problem_is_reported_together(base: Path) -> None:
    found = problems("workers: x\nbacklog: y\nroutes: []\n", base)
    assert found == [
        "1:10: workers: expected an integer >= 1 or \"auto\", got 'x'",
        "2:10: backlog: expected an integer, got the string 'y'",
        "3:9: routes: at least one route is required",
    ]


def test_a_problem_the_file_does_not_spell_out_takes_the_nearest_position(base: Path) -> None:
    assert problems("workers: 2\nroutes:\n  - prefix: /\n    static: {index: []}\n", base) == [
        "4:13: routes[0].static.root: required key is missing",  # at the mapping that lacks it
    ]
    assert problems("workers: 2\n", base) == ["1:1: routes: at least one route is required"]


def test_yaml_syntax_errors_give_the_line(base: Path) -> None:
    (base / "bad.yaml").write_text("workers: 2\nroutes:\n  - prefix: /\n   static: {}\n")
    with pytest.raises(ConfigError) as caught:
        load(base / "bad.yaml")
    [problem] = caught.value.problems
    assert problem.startswith(f"{base / 'bad.yaml'}:4:4: YAML syntax error: expected <block end>")


def test_a_repeated_key_is_an_error_not_a_silent_override(base: Path) -> None:
    [problem] = problems("workers: 2\nworkers: 4\n" + MINIMAL, base)
    assert problem == "2:1: workers: duplicate key (first on line 1)"


def test_a_repeated_key_is_reported_with_the_other_problems(base: Path) -> None:
    found = problems(
        "workers: 2\nbacklog: x\nlimits: {body: 1, body: 2}\nworkers: 0\n" + MINIMAL, base
    )
    assert found == [
        "2:10: backlog: expected an integer, got the string 'x'",
        "3:19: limits.body: duplicate key (first on line 3)",
        "4:1: workers: duplicate key (first on line 1)",
        '4:10: workers: expected an integer >= 1 or "auto", got 0',  # the last one given is used
    ]


def test_a_merge_key_is_not_a_repeated_key(base: Path) -> None:
    config = loads(
        "limits: &l {body: 5, headers: 7}\n"
        "timeouts: {<<: {header: 5, keepalive: 2}, keepalive: 3}\n" + MINIMAL,
        base,
    )
    assert config.limits.body == 5 and config.timeouts.keepalive == 3


def test_problems_name_the_file_as_given_with_line_and_column(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (base / "site.yaml").write_text(
        "workers: 2\nroutes:\n  - prefix: /\n    static:\n      autoindx: true\n"
        "      root: /no/such/www\n"
    )
    monkeypatch.chdir(base)
    with pytest.raises(ConfigError) as caught:
        load("site.yaml")
    assert caught.value.problems == [
        "site.yaml:5:7: routes[0].static.autoindx: unknown key (did you mean autoindex?)",
        "site.yaml:6:13: routes[0].static.root: no such directory: /no/such/www",
    ]
    assert caught.value.file == "site.yaml"
    assert [(p.key, p.line, p.column) for p in caught.value.found] == [
        ("routes[0].static.autoindx", 5, 7),
        ("routes[0].static.root", 6, 13),
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "absent.yaml")
    assert caught.value.problems == [
        f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory"
    ]  # no position: the problem is the file itself


def test_top_level_must_be_a_mapping(base: Path) -> None:
    assert problems("- a\n- b\n", base) == ["1:1: (top level): expected a mapping, got a list"]


def test_workers_auto_is_the_cpu_count(base: Path) -> None:
    assert loads("workers: auto\n" + MINIMAL, base).workers == (os.cpu_count() or 1)


def test_unix_mode_accepts_octal_text(base: Path) -> None:
    assert loads("unix_mode: '0660'\n" + MINIMAL, base).unix_mode == 0o660
    assert problems("unix_mode: '0999'\n" + MINIMAL, base) == [
        "1:12: unix_mode: expected permission bits such as \"0660\", got '0999'"
    ]


def test_interpreters_are_found_in_path(base: Path) -> None:
    config = loads("routes: [{prefix: /, cgi: {root: cgi-bin, interpreters: {.sh: sh}}}]\n", base)
    assert config.routes[0].cgi is not None
    assert os.path.basename(config.routes[0].cgi.interpreters[".sh"]) == "sh"
    assert problems(
        "routes: [{prefix: /, cgi: {root: cgi-bin, interpreters: "
        "{.x: no-such-program-forkd, py: /bin/sh}}}]\n",
        base,
    ) == [
        "1:62: routes[0].cgi.interpreters..x: no program named 'no-such-program-forkd' in PATH",
        "1:89: routes[0].cgi.interpreters.py: extension must be a string starting with '.'",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:8080", ListenAddress("inet", "127.0.0.1", 8080)),
        (":8080", ListenAddress("inet", "0.0.0.0", 8080)),
        ("[::1]:0", ListenAddress("inet6", "::1", 0)),
        ("unix:/run/forkd.sock", ListenAddress("unix", path="/run/forkd.sock")),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    if not text.startswith(":"):
        assert str(expected) == text


@pytest.mark.parametrize(
    "text, reason",
    [
        ("8080", 'expected "host:port", "[v6]:port" or "unix:/path", got \'8080\''),
        ("localhost:99999", "port 99999 is out of range (0 to 65535)"),
        ("localhost:65536", "port 65536 is out of range (0 to 65535)"),
        (
            "localhost:8\u0669",
            'expected "host:port", "[v6]:port" or "unix:/path", got \'localhost:8\u0669\'',
        ),
        ("::1:80", "IPv6 addresses need brackets: [::1]:80"),
        ("unix:", "unix: needs a socket path"),
        (8080, "expected an address string, got int 8080"),
    ],
)
def test_bad_listen_addresses(text: object, reason: str) -> None:
    assert parse_listen(text) == reason


# -- dump: the effective configuration (forkd -T) -------------------------------------------------

BOTH_HANDLERS = """\
routes:
  - {prefix: /cgi-bin/, cgi: {root: cgi-bin}}
  - {prefix: /app/, wsgi: {app: "site.wsgi:application", env: {A: b}}}
  - {prefix: /php/, fastcgi: {connect: "unix:/run/php/php8.2-fpm.sock", root: www}}
  - {prefix: /ws/, websocket: {command: [cat, -u]}}
  - {prefix: /server-status, status: {}}
  - {prefix: /healthz, health: {}}
  - {prefix: /, static: {root: www}}
"""


def _keys(cls: type, prefix: str = "") -> set[str]:
    """Every key path the dataclasses define, found from the types alone (a new field shows up)."""
    out = set()
    for spec in dataclasses.fields(cls):
        if spec.name in NOT_KEYS:
            continue
        out.add(prefix + spec.name)
        hint = typing.get_type_hints(cls)[spec.name]
        inner = [a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)]
        if inner and inner[0] is not ListenAddress:  # listen is written "host:port"
            out |= _keys(inner[0], prefix + spec.name + ".")
    return out


def _dumped_keys(data: object, prefix: str = "") -> set[str]:
    out = set()
    if isinstance(data, dict) and all(isinstance(k, str) and not k.startswith(".") for k in data):
        for key, value in data.items():
            out.add(prefix + key)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict) and key not in ("headers", "env", "interpreters"):
                    out |= _dumped_keys(item, prefix + key + ".")
    return out


def test_dump_writes_every_key_of_every_dataclass(base: Path) -> None:
    leaf = trustme.CA().issue_cert("localhost")
    (base / "site.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    leaf.private_key_pem.write_to_path(str(base / "site.key"))
    tls = "tls: {certificates: [{cert: site.pem, key: site.key}]}\n"
    (base / "users").write_text("u:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    server = (
        "servers:\n"
        "  - names: [example.com]\n    default: true\n    hsts: max-age=1\n"
        "    tls: {certificates: [{cert: site.pem, key: site.key}]}\n"
        "    routes:\n"
        "      - {prefix: /old/, redirect: {to: /new/}, access: {allow: [all]},\n"
        "         auth_basic: {realm: r, user_file: users}, scheme: http}\n"
        + BOTH_HANDLERS.replace("routes:\n", "").replace("  - ", "      - ")
    )
    routes = BOTH_HANDLERS.replace("routes:\n", "routes:\n" + (
        "  - {prefix: /old/, redirect: {to: /new/}, access: {deny: [all]},\n"
        "     auth_basic: {realm: r, user_file: users}, scheme: http}\n"
    ))
    data = yaml.safe_load(dump(loads(tls + routes + server, base)))
    assert _dumped_keys(data) == _keys(Config)


def test_dump_loads_back_to_an_equal_config(base: Path) -> None:
    (base / "logs").mkdir()
    config = loads(
        "listen: [':0', 'unix:forkd.sock', '[::1]:0']\nunix_mode: '0600'\naccess_log: logs/a.log\n"
        "workers: auto\ntimeouts: {header: 2.5}\n"
        + BOTH_HANDLERS.replace(
            "{root: www}", "{root: www, error_pages: {404: e.html}, headers: {X-A: b}, index: []}"
        ),
        base,
    )
    text = dump(config)
    again = loads(text, base / "logs")  # another base: nothing relative is left in the dump
    assert again == config
    assert dump(again) == text


def test_proxies_drain_and_proxy_listeners_load_and_dump_back(base: Path) -> None:
    config = loads(
        'listen: ["127.0.0.1:0", {address: "127.0.0.1:1", proxy_protocol: true}]\n'
        'trusted_proxies: ["10.1.2.3/8", "::1", unix]\ntimeouts: {drain: 0}\n' + MINIMAL,
        base,
    )
    assert [a.proxy_protocol for a in config.listen] == [False, True]
    assert config.trusted_proxies == ("10.0.0.0/8", "::1/128", "unix")
    assert loads(dump(config), base) == config
    assert yaml.safe_load(dump(config))["listen"][1] == {"address": "127.0.0.1:1",
                                                         "proxy_protocol": True}


def test_bad_trusted_proxies_and_drain(base: Path) -> None:
    assert problems(MINIMAL + "trusted_proxies: [10.0.0.0/33, 5]\ntimeouts: {drain: -1}\n",
                    base) == [
        ("2:19: trusted_proxies[0]: expected an address, a network such as 10.0.0.0/8 or "
        "\"unix\", got the string '10.0.0.0/33'"),
        ("2:32: trusted_proxies[1]: expected an address, a network such as 10.0.0.0/8 or "
        '"unix", got int 5'),
        "3:19: timeouts.drain: expected a number of seconds >= 0, got int -1",
    ]
