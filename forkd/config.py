"""The configuration: YAML in, validated, typed, immutable objects out.

This is the only module that reads YAML. Every setting is a field of a frozen dataclass below and its
default lives there, nowhere else. One generic builder walks the YAML mapping against the dataclass
fields: unknown keys, wrong types and bad values become problems, and all of them are collected and
reported together in one ConfigError. Relative paths resolve against the directory of the config file.
Nothing here binds, forks or reads the environment.

Where a problem is: the YAML text is composed into a node tree first (PyYAML keeps each node's line
and column), then constructed into plain data. One walk over the tree records, for every key path the
builder can name (`routes[0].static.root`), where its key and its value start, and finds keys repeated
in one mapping (PyYAML would silently keep the last). A problem is then printed compiler-style,
`site.yaml:7:11: routes[0].static.root: no such directory: /srv/www`; a path the file does not
spell out (a missing required key) takes the position of the nearest enclosing one that it does.

The opposite direction, `dump`, walks the same dataclasses and writes the effective configuration
back as YAML that this module accepts again (the `-T` of the command line).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import grp
import ipaddress
import os
import pwd
import re
import shutil
import stat
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from forkd import htpasswd, tls


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (key path, line, column) and why."""

    key: str  # `routes[0].static.root`; "" when the problem is the file itself (unreadable, syntax)
    reason: str
    line: int = 0  # 1-based position in the file; 0 when unknown
    column: int = 0

    def format(self, file: str) -> str:
        where = f"{file}:{self.line}:{self.column}" if self.line else file
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class ConfigError(Exception):
    """One or more problems with the config file `file`, in the order they appear in it.

    `problems` holds one printable line per problem: `FILE:LINE:COLUMN: key.path: reason`.
    """

    def __init__(self, file: str, found: list[Problem]) -> None:
        self.file = file
        self.found = sorted(found, key=lambda p: (p.line == 0, p.line, p.column))
        self.problems = [problem.format(file) for problem in self.found]
        super().__init__("\n".join(self.problems))


# Field metadata understood by the builder.
DIR = {"path": "dir"}  # a directory that must exist
FILE_OR_DIR = {"path": "any"}  # a path resolved against the config directory, not checked
EXECUTABLE = {"path": "exe"}  # an executable file that must exist
READABLE = {"path": "file"}  # a regular file forkd can read (certificates, keys)


@dataclass(frozen=True)
class ListenAddress:
    """One listener: a TCP host/port or a unix socket path."""

    family: Literal["inet", "inet6", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""
    tls: bool = False  # HTTPS on this listener (the mapping form's `tls: true`)
    proxy_protocol: bool = False  # a PROXY v1/v2 header from a trusted proxy comes first

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        if self.family == "inet6":
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    header: float = 10.0  # from the first byte of a request to its complete head (then 408)
    body: float = 30.0  # to receive a request body
    keepalive: float = 5.0  # an idle kept-alive connection is closed after this
    graceful: float = 30.0  # TERM / reload: how long retiring workers may finish requests
    send: float = 60.0  # a client that reads nothing of its response for this long is dropped
    worker: float = 120.0  # a worker busy with one request (or silent) this long is stuck: killed
    drain: float = 0.0  # TERM: health routes answer 503 this long before the listeners close


@dataclass(frozen=True)
class Limits:
    request_line: int = 8190  # bytes; longer → 414
    header_bytes: int = 65536  # bytes of the whole head; more → 431
    headers: int = 100  # number of header fields; more → 431
    body: int = 10485760  # bytes; more → 413
    worker_requests: int = 0  # a worker retires after about this many requests (0: never)
    connections: int = 10000  # open connections per worker; idle ones are closed oldest first
    body_spool: int = 268435456  # bytes of request bodies one worker holds at once; beyond: 503


@dataclass(frozen=True)
class StaticConfig:
    root: Path = field(metadata=DIR)
    index: tuple[str, ...] = ("index.html",)
    autoindex: bool = False
    precompressed: bool = True  # serve FILE.br / FILE.gz when Accept-Encoding allows
    dotfiles: bool = False  # serve names starting with "." (/.well-known/ is always allowed)
    symlinks_outside_root: bool = False  # follow symlinks that lead out of root
    cache_control: str | None = None  # Cache-Control value for successful responses
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers
    error_pages: Mapping[int, str] = field(default_factory=dict)  # status → file under root
    fallback: str | None = None  # issue 12: file under root for extensionless misses (an SPA)
    gzip: bool = False  # issue 12: compress text files on the fly (forkd.handlers.compress)


@dataclass(frozen=True)
class CgiConfig:
    root: Path = field(metadata=DIR)
    timeout: float = 30.0  # seconds for the script to produce its header block / each output
    interpreters: Mapping[str, str] = field(default_factory=dict)  # ".php" → /usr/bin/php-cgi
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables for every script
    pass_env: tuple[str, ...] = ()  # names copied from forkd's own environment
    underscore_headers: bool = False  # pass request headers whose names contain "_"
    max_processes: int = 32  # scripts of this route running at once per worker; beyond: queue
    min_send_rate: int = 1024  # bytes/s a client must average while a script's output waits for it
    queue: int = 64  # requests per worker waiting for a script slot (at most `timeout`); beyond: 503


# -- WSGI (issue 13): Python web applications (PEP 3333) run in a thread pool of each worker --------
@dataclass(frozen=True)
class WsgiConfig:
    app: str  # "package.module:callable" (":application" when the callable is left out)
    python_path: tuple[Path, ...] = field(default=(), metadata=DIR)  # put before sys.path
    env: Mapping[str, str] = field(default_factory=dict)  # os.environ entries set before the import
    threads: int = 4  # app threads per worker
    queue: int = 64  # requests per worker waiting for a free thread; beyond: 503 + Retry-After
    timeout: float = 60.0  # seconds for the app to start its response (then 504) or between chunks
    preload: bool = False  # import in the master before fork (HUP then keeps the old code)


WSGI_APP = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?")
# -- end of WSGI ---------------------------------------------------------------------------------


# -- virtual hosts, redirects and route options (issue 12) ----------------------------------------


@dataclass(frozen=True)
class RedirectConfig:
    to: str  # "https://{host}{uri}": {host} {uri} {path} {query} are replaced, nothing else
    status: Literal[301, 302, 307, 308] = 301


@dataclass(frozen=True)
class AccessConfig:
    """Client address rules: the first entry that matches decides (forkd.access)."""

    allow: tuple[str, ...] = ()  # CIDRs, addresses or "all"
    deny: tuple[str, ...] = ()
    rule_order: tuple[str, ...] = ("allow", "deny")  # the order the keys were written in


@dataclass(frozen=True)
class AuthBasicConfig:
    realm: str
    user_file: Path = field(metadata=READABLE)  # Apache htpasswd: bcrypt, $apr1$ or {SHA}
    users: Mapping[str, str] = field(default_factory=dict)  # user → hash, read from user_file


ROUTE_OPTIONS = ("prefix", "access", "auth_basic", "scheme")  # Route fields, not handler keys
SCHEMES = ("http", "https")  # what a route's `scheme` may name; absent: both


# -- fastcgi (issue 17): PHP through php-fpm -------------------------------------------------------
@dataclass(frozen=True)
class FastCgiConfig:
    connect: str  # "unix:/run/php/php8.2-fpm.sock" or "127.0.0.1:9000" (php-fpm's listen)
    root: Path = field(metadata=DIR)  # the scripts and the route's static files, as php-fpm sees them
    index: tuple[str, ...] = ("index.php", "index.html")  # in a directory: scripts run, others served
    extensions: tuple[str, ...] = (".php",)  # only files with these run (compared case-insensitively)
    front_controller: str | None = None  # "/index.php": runs for paths that match no file
    params: Mapping[str, str] = field(default_factory=dict)  # extra params (the request's always win)
    timeout: float = 60.0  # seconds php-fpm may stay silent (connect, header block, each output)
    pass_authorization: bool = False  # pass the Authorization header as HTTP_AUTHORIZATION
    min_send_rate: int = 1024  # bytes/s a client must average while a script's output waits for it
    # Kept connections per worker (FCGI_KEEP_CONN), requests beyond wait in the worker; 0: a new
    # connection per request. Each holds a php-fpm child: workers x this <= pm.max_children.
    connections: int = 0
    # With a connection per request: shut down the sending side once the request is sent, so
    # php-fpm, which waits for the end of its input before it takes the next connection, need
    # not wait for forkd's close. false for responders that take that for the end of everything.
    half_close: bool = True


FASTCGI_MAX_CONNECTIONS = 1024
# Params forkd sets itself (with HTTP_*, REDIRECT_*, SSL_*): `params` cannot override them.
FASTCGI_REQUEST_PARAMS = frozenset({
    "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "DOCUMENT_ROOT", "DOCUMENT_URI",
    "GATEWAY_INTERFACE", "HTTPS", "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REMOTE_ADDR",
    "REMOTE_HOST", "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_SCHEME", "REQUEST_URI", "SCRIPT_FILENAME",
    "SCRIPT_NAME", "SERVER_ADDR", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
})


# -- websocket (issue 15): programs as WebSocket endpoints, websocketd's model ---------------------
@dataclass(frozen=True)
class WebSocketConfig:
    command: tuple[str, ...]  # program and arguments; a program with a "/" resolves like a path
    max_processes: int = 100  # programs of this route running at once per worker; beyond: 503
    origins: tuple[str, ...] | None = None  # allowed Origin values; absent: same origin only
    max_message: int = 1048576  # bytes of one whole message (all fragments); beyond: close 1009
    ping_interval: float = 30.0  # ping a client silent this long; close when it stays silent
    binary: bool = False  # messages are raw bytes both ways instead of lines of text


# -- observability and proxies (issue 14): the status and health route types ----------------------
@dataclass(frozen=True)
class StatusConfig:
    """The live scoreboard (HTML, ?format=json|prometheus, ?auto); protect it with `access`."""


@dataclass(frozen=True)
class HealthConfig:
    """200 "ok", or 503 while the server drains (forkd -s drain, timeouts.drain)."""


@dataclass(frozen=True)
class Route:
    prefix: str
    static: StaticConfig | None = None
    cgi: CgiConfig | None = None
    wsgi: WsgiConfig | None = None  # issue 13
    redirect: RedirectConfig | None = None
    fastcgi: FastCgiConfig | None = None  # issue 17
    websocket: WebSocketConfig | None = None  # issue 15
    status: StatusConfig | None = None  # issue 14
    health: HealthConfig | None = None  # issue 14
    access: AccessConfig | None = None  # options any route may carry (issue 12)
    auth_basic: AuthBasicConfig | None = None
    # scheme-scoped routes: only requests over this scheme take the route (absent: both)
    scheme: Literal["http", "https"] | None = None

    @property
    def schemes(self) -> tuple[str, ...]:
        """The schemes whose requests this route serves."""
        return (self.scheme,) if self.scheme else SCHEMES

    @property
    def handler_config(self) -> Any:
        return self.handler[1]

    @property
    def handler(self) -> tuple[str, Any]:
        """(route type, its settings): the one handler key this route carries."""
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name not in ROUTE_OPTIONS and value is not None:
                return item.name, value
        raise ValueError(f"route {self.prefix} has no handler")


@dataclass(frozen=True)
class CertificatePair:
    cert: Path = field(metadata=READABLE)  # PEM: the certificate, then its chain
    key: Path = field(metadata=READABLE)  # PEM private key, unencrypted (RSA or ECDSA)


@dataclass(frozen=True)
class TlsConfig:
    certificates: tuple[CertificatePair, ...] = ()  # the first is the default (no or unknown SNI)
    profile: Literal["modern", "intermediate", "old"] = "intermediate"  # Mozilla server profiles
    client_certificates: Literal["none", "optional", "required"] = "none"
    client_ca: Path | None = field(default=None, metadata=READABLE)  # CAs client certs chain to
    handshake_timeout: float = 10.0  # seconds for a complete TLS handshake


@dataclass(frozen=True)
class ServerTlsConfig:
    """A virtual host's certificates; they join the SNI selection of every TLS listener."""

    certificates: tuple[CertificatePair, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    """One virtual host (issue 12): the requests whose Host is one of `names`."""

    names: tuple[str, ...] = ()  # "example.com", "*.example.org"; lower-cased, no trailing dot
    default: bool = False  # serves any Host no server names (else the first server does)
    tls: ServerTlsConfig | None = None
    hsts: str | None = None  # Strict-Transport-Security on HTTPS answers (else the top level's)
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Config:
    listen: tuple[ListenAddress, ...] = (ListenAddress("inet", "127.0.0.1", 8080),)
    workers: int = 2  # "auto" in YAML becomes the CPU count
    pidfile: Path | None = field(default=None, metadata=FILE_OR_DIR)
    user: str | None = None
    group: str | None = None
    access_log: str | None = "-"  # a path, "-" for stderr, or null
    log_format: Literal["combined", "json"] = "combined"
    error_log: str | None = "-"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    server_tokens: bool = True  # send "Server: forkd/VERSION"; false sends "Server: forkd"
    backlog: int = 2048
    unix_mode: int = 0o666  # permission bits of unix listener sockets
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    routes: tuple[Route, ...] = ()
    tls: TlsConfig | None = None  # needed by listeners with `tls: true`
    hsts: str | None = None  # Strict-Transport-Security value for HTTPS answers
    servers: tuple[ServerConfig, ...] = ()  # virtual hosts; none: `routes` serve every Host
    # Issue 14: peers (CIDRs, or "unix" for unix-socket peers) whose PROXY header, Forwarded or
    # X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()
    source: Path | None = None  # the file this came from (not a YAML key)

    def tls_settings(self) -> TlsConfig | None:
        """The TLS settings listeners use: the top level's, with every server's certificates.

        The top level's certificates come first (the default for clients without SNI), then the
        default server's, then the other servers' in order.
        """
        servers = sorted(self.servers, key=lambda server: not server.default)
        extra = tuple(pair for server in servers if server.tls for pair in server.tls.certificates)
        if self.tls is None and not extra:
            return None
        base = self.tls or TlsConfig()
        return dataclasses.replace(base, certificates=base.certificates + extra)


NOT_KEYS = {"source", "users", "rule_order"}  # filled in by the builder, not read from YAML


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem.

    Problems name the file as it was given (`site.yaml`, as the operator typed it); the config's
    `source` is the absolute path.
    """
    name = os.fspath(path)
    path = Path(path).absolute()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(name, [Problem("", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(name, [Problem("", "not UTF-8 text")]) from None
    config = _build(text, path.parent, name)
    return dataclasses.replace(config, source=path)


def loads(text: str, base: Path, name: str = "<text>") -> Config:
    """Validate YAML text whose relative paths resolve against base (for tests and tools)."""
    return _build(text, base, name)


Position = tuple[int, int]  # 1-based line and column
MERGE_TAG = "tag:yaml.org,2002:merge"


def _build(text: str, base: Path, name: str) -> Config:
    data, marks, found = _parse(text, name)
    builder = _Builder(base, marks)
    config = builder.build(Config, data, "")
    found += builder.problems
    if found:
        raise ConfigError(name, found)
    return config


def _parse(text: str, name: str) -> tuple[Any, dict[str, tuple[Position, Position]], list[Problem]]:
    """(the data, where each key path's key and value start, the repeated keys)."""
    marks: dict[str, tuple[Position, Position]] = {}
    repeated: list[Problem] = []
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            # Before construction, which flattens merge keys (`<<: *defaults`) into the mappings.
            marks[""] = (_position(node), _position(node))
            _walk(node, "", marks, repeated, set())
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(name, [Problem("", f"YAML syntax error: {problem}", *at)]) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    return ({} if data is None else data), marks, repeated


def _walk(
    node: yaml.Node,
    path: str,
    marks: dict[str, tuple[Position, Position]],
    repeated: list[Problem],
    visited: set[int],
) -> None:
    """Record the key and value positions under `path`, and every key repeated in one mapping."""
    if id(node) in visited:  # an alias: already walked where its anchor is (and no cycles)
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                continue  # merged keys may be overridden; unhashable keys PyYAML refuses
            where = _join(path, key_node.value)
            key_at = _position(key_node)
            if key_node.value in first_line:
                first = first_line[key_node.value]
                repeated.append(Problem(where, f"duplicate key (first on line {first})", *key_at))
            first_line.setdefault(key_node.value, key_at[0])
            # A repeated key: the last one given wins, as in the constructed data.
            marks[where] = (key_at, _position(value_node))
            _walk(value_node, where, marks, repeated, visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            where = f"{path}[{index}]"
            marks[where] = (_position(item), _position(item))
            _walk(item, where, marks, repeated, visited)


def _position(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _parent(path: str) -> str:
    """`routes[0].static.root` → `routes[0].static` → `routes[0]` → `routes` → ``."""
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


class _Builder:
    """Turns plain YAML data into dataclasses, collecting problems instead of stopping at the first."""

    def __init__(self, base: Path, marks: Mapping[str, tuple[Position, Position]]) -> None:
        self.base = base
        self.marks = marks
        self.problems: list[Problem] = []

    def fail(self, path: str, reason: str, at_key: bool = False) -> None:
        """Record a problem at the value of `path` (or at its key, for a key that is wrong)."""
        found = path
        while found and found not in self.marks:
            found = _parent(found)
        key_at, value_at = self.marks.get(found, ((0, 0), (0, 0)))
        at = key_at if at_key and found == path else value_at
        self.problems.append(Problem(path or "(top level)", reason, *at))

    def build(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping, got {_kind(data)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in NOT_KEYS}
        for key in data:
            if key not in fields:
                self.fail(_join(path, key), _unknown(key, fields), at_key=True)
        values = {}
        for name, spec in fields.items():
            if name not in data:
                if (
                    spec.default is dataclasses.MISSING
                    and spec.default_factory is dataclasses.MISSING
                ):
                    self.fail(_join(path, name), "required key is missing")
                continue
            special = getattr(self, f"_field_{cls.__name__}_{name}", None)
            where = _join(path, name)
            if special:
                value = special(data[name], where)
            else:
                value = self.value(hints[name], data[name], where, spec.metadata)
            values[name] = value
        check = getattr(self, f"_check_{cls.__name__}", None)
        if check:
            check(values, path)
        try:
            return cls(**values)
        except TypeError:
            return None  # a required field failed; the problem is already recorded

    def value(self, hint: Any, data: Any, path: str, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (Union, types.UnionType):
            if data is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], data, path, meta)
        if origin is Literal:
            if data not in args:
                self.fail(path, f"must be one of {', '.join(map(str, args))}, got {data!r}")
            return data
        if origin is tuple:
            items = [data] if isinstance(data, str) else data
            if not isinstance(items, list):
                self.fail(path, f"expected a list, got {_kind(data)}")
                return ()
            return tuple(
                self.value(args[0], item, f"{path}[{i}]", meta) for i, item in enumerate(items)
            )
        if origin in (collections.abc.Mapping, dict):
            if not isinstance(data, dict):
                self.fail(path, f"expected a mapping, got {_kind(data)}")
                return types.MappingProxyType({})
            key_type, value_type = args
            out = {}
            for key, item in data.items():
                out[self.value(key_type, key, f"{path}.{key}", {})] = self.value(
                    value_type, item, f"{path}.{key}", {}
                )
            return types.MappingProxyType(out)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, data, path)  # type: ignore[arg-type]
        if hint is Path:
            return self.path(data, path, meta.get("path", "any"))
        if hint is bool:
            if not isinstance(data, bool):
                self.fail(path, f"expected true or false, got {_kind(data)}")
            return data
        if hint is int:
            if isinstance(data, bool) or not isinstance(data, int):
                self.fail(path, f"expected an integer, got {_kind(data)}")
                return 0
            if data < 0:
                self.fail(path, f"must not be negative, got {data}")
            return data
        if hint is float:
            if isinstance(data, bool) or not isinstance(data, (int, float)):
                self.fail(path, f"expected a number of seconds, got {_kind(data)}")
                return 0.0
            if data <= 0:
                self.fail(path, f"must be positive, got {data}")
            return float(data)
        if hint is str:
            if not isinstance(data, str):
                self.fail(path, f"expected a string, got {_kind(data)}")
                return ""
            return data
        raise TypeError(f"config builder cannot handle {hint!r}")  # a bug in this module

    def path(self, data: Any, where: str, check: str) -> Path | None:
        if not isinstance(data, str) or not data:
            self.fail(where, f"expected a path, got {_kind(data)}")
            return None
        resolved = (self.base / data).resolve() if not os.path.isabs(data) else Path(data)
        if check == "dir" and not resolved.is_dir():
            self.fail(where, f"no such directory: {resolved}")
        elif check == "exe" and not (resolved.is_file() and os.access(resolved, os.X_OK)):
            self.fail(where, f"not an executable file: {resolved}")
        elif check == "file":
            reason = _unreadable(resolved)
            if reason:
                self.fail(where, reason)
                return None
        return resolved

    # Fields with a grammar of their own.

    def _field_Config_listen(self, data: Any, path: str) -> tuple[ListenAddress, ...]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not items:
            self.fail(path, "expected a non-empty list of addresses")
            return ()
        out = []
        for i, item in enumerate(items):
            address = self.listen_entry(item, f"{path}[{i}]")
            if address is not None:
                if address.family == "unix":
                    address = dataclasses.replace(address, path=str(self.base / address.path))
                out.append(address)
        return tuple(out)

    def listen_entry(self, item: Any, path: str) -> ListenAddress | None:
        """One `listen` entry: "host:port" or {address: "host:port", tls: bool}."""
        options: dict[str, Any] = {}
        if isinstance(item, dict):
            options = dict(item)
            item = options.pop("address", None)
            if item is None:
                self.fail(f"{path}.address", "required key is missing")
                return None
            for key in options:
                if key not in LISTEN_OPTIONS:
                    self.fail(f"{path}.{key}", "unknown key")
                elif not isinstance(options[key], bool):
                    self.fail(f"{path}.{key}", f"expected true or false, got {_kind(options[key])}")
            path = f"{path}.address"
        address = parse_listen(item)
        if isinstance(address, str):
            self.fail(path, address)
            return None
        if options.get("tls") is True:
            if address.family == "unix":
                self.fail(path, "tls is for TCP listeners")
            address = dataclasses.replace(address, tls=True)
        if options.get("proxy_protocol") is True:
            address = dataclasses.replace(address, proxy_protocol=True)
        return address

    def _field_Config_workers(self, data: Any, path: str) -> int:
        if data == "auto":
            return os.cpu_count() or 1
        if isinstance(data, bool) or not isinstance(data, int) or data < 1:
            self.fail(path, f'expected an integer >= 1 or "auto", got {data!r}')
            return 1
        return data

    def _field_Config_unix_mode(self, data: Any, path: str) -> int:
        if isinstance(data, str):
            try:
                data = int(data, 8)
            except ValueError:
                pass
        if isinstance(data, bool) or not isinstance(data, int) or not 0 <= data <= 0o777:
            self.fail(path, f'expected permission bits such as "0660", got {data!r}')
            return 0o666
        return data

    def _field_CgiConfig_interpreters(self, data: Any, path: str) -> Mapping[str, str]:
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping of extension to program, got {_kind(data)}")
            return types.MappingProxyType({})
        out = {}
        for ext, program in data.items():
            where = f"{path}.{ext}"
            if not isinstance(ext, str) or not ext.startswith("."):
                self.fail(where, "extension must be a string starting with '.'")
                continue
            if isinstance(program, str) and program and "/" not in program:
                found = shutil.which(program)  # "python3": looked up in PATH, like a shell would
                if found is None:
                    self.fail(where, f"no program named {program!r} in PATH")
                    continue
                program = found
            exe = self.path(program, where, "exe")
            if exe is not None:
                out[ext] = str(exe)
        return types.MappingProxyType(out)

    # -- fastcgi (issue 17) --
    def _field_FastCgiConfig_connect(self, data: Any, path: str) -> str:
        address = parse_listen(data) if isinstance(data, str) else "expected a string"
        if isinstance(address, str):
            self.fail(path, f'{address} (e.g. "unix:/run/php/php8.2-fpm.sock" or "127.0.0.1:9000")')
            return ""
        if address.family == "unix":
            return f"unix:{self.base / address.path}"
        try:  # a name would need a lookup, which would block a worker: addresses only
            ipaddress.ip_address(address.host)
        except ValueError:
            self.fail(path, f"expected an IP address, not a name: {address.host!r}")
        if address.port == 0:
            self.fail(path, "port 0 cannot be connected to")
        return str(address)

    def _field_FastCgiConfig_extensions(self, data: Any, path: str) -> tuple[str, ...]:
        names = self.value(tuple[str, ...], data, path, {})
        for i, name in enumerate(names):
            if not name.startswith(".") or len(name) < 2 or "/" in name:
                self.fail(f"{path}[{i}]", f"an extension starts with '.', got {name!r}")
        if not names:
            self.fail(path, "at least one extension is required")
        return tuple(name.lower() for name in names)

    def _field_FastCgiConfig_index(self, data: Any, path: str) -> tuple[str, ...]:
        names = self.value(tuple[str, ...], data, path, {})
        for i, name in enumerate(names):
            if name in ("", ".", "..") or "/" in name:
                self.fail(f"{path}[{i}]", f"an index is a file name without '/', got {name!r}")
        return tuple(names)

    def _check_FastCgiConfig(self, values: dict[str, Any], path: str) -> None:
        kept = values.get("connections")
        if isinstance(kept, int) and kept > FASTCGI_MAX_CONNECTIONS:
            self.fail(f"{path}.connections", f"at most {FASTCGI_MAX_CONNECTIONS}, got {kept}")
        for name in values.get("params") or {}:
            if name in FASTCGI_REQUEST_PARAMS or name.startswith(("HTTP_", "REDIRECT_", "SSL_")):
                self.fail(f"{path}.params.{name}", "is set by forkd for every request")
        controller, root = values.get("front_controller"), values.get("root")
        if not isinstance(controller, str) or not isinstance(root, Path):
            return
        where = f"{path}.front_controller"
        if not controller.startswith("/") or "/." in controller or controller.endswith("/"):
            self.fail(where, f"must be a path under root starting with '/', got {controller!r}")
        elif not (root / controller.lstrip("/")).is_file():
            self.fail(where, f"no such file: {root / controller.lstrip('/')}")
        elif os.path.splitext(controller)[1].lower() not in values.get("extensions", (".php",)):
            self.fail(where, "its extension is not one of fastcgi.extensions")

    def _field_Config_access_log(self, data: Any, path: str) -> str | None:
        return self.log_target(data, path)

    def _field_Config_error_log(self, data: Any, path: str) -> str | None:
        return self.log_target(data, path)

    def log_target(self, data: Any, path: str) -> str | None:
        if data is None or data == "-":
            return data
        resolved = self.path(data, path, "any")
        if resolved is None:
            return None
        if not resolved.parent.is_dir():
            self.fail(path, f"no such directory: {resolved.parent}")
        elif resolved.is_dir():
            self.fail(path, f"is a directory: {resolved}")
        return str(resolved)

    def _field_Route_prefix(self, data: Any, path: str) -> str:
        if not isinstance(data, str) or not data.startswith("/"):
            self.fail(path, f"must be a path starting with '/', got {data!r}")
            return ""  # never matches, and the cross-checks skip it
        return data

    def _check_Route(self, values: dict[str, Any], path: str) -> None:
        kinds = [f.name for f in dataclasses.fields(Route) if f.name not in ROUTE_OPTIONS]
        handlers = [name for name in kinds if name in values]
        if len(handlers) != 1:
            listed = ", ".join(kinds[:-1]) + f" or {kinds[-1]}"
            self.fail(path, f"a route needs exactly one handler: {listed}")

    # WSGI (issue 13): the app reference and the variables are checked here; importing the app
    # is the worker's job (or the master's, with preload), never --check's.
    def _field_WsgiConfig_app(self, data: Any, path: str) -> str:
        if not isinstance(data, str) or WSGI_APP.fullmatch(data) is None:
            self.fail(path, f'expected "package.module:callable", got {data!r}')
            return ""
        return data

    def _check_WsgiConfig(self, values: dict[str, Any], path: str) -> None:
        if values.get("threads") == 0:
            self.fail(f"{path}.threads", "must be at least 1")
        for name in values.get("env") or {}:
            if not name or "=" in name or "\0" in name:
                self.fail(f"{path}.env.{name}", "not a valid environment variable name")

    def _field_WebSocketConfig_command(self, data: Any, path: str) -> tuple[str, ...]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            self.fail(path, "expected a program and its arguments, a non-empty list of strings")
            return ()
        program = items[0]
        if "/" not in program:
            found = shutil.which(program)  # "python3": looked up in PATH, like a shell would
            if found is None:
                self.fail(f"{path}[0]", f"no program named {program!r} in PATH")
                return ()
            program = found
        exe = self.path(program, f"{path}[0]", "exe")
        return (str(exe), *items[1:]) if exe is not None else ()

    def _check_WebSocketConfig(self, values: dict[str, Any], path: str) -> None:
        if values.get("max_message") == 0:
            self.fail(f"{path}.max_message", "must be at least 1")
        if values.get("max_processes") == 0:
            self.fail(f"{path}.max_processes", "must be at least 1")

    def _field_Timeouts_drain(self, data: Any, path: str) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)) or data < 0:
            self.fail(path, f"expected a number of seconds >= 0, got {_kind(data)}")
            return 0.0
        return float(data)

    def _field_Config_trusted_proxies(self, data: Any, path: str) -> tuple[str, ...]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list):
            self.fail(path, f"expected a list of networks such as 10.0.0.0/8, got {_kind(data)}")
            return ()
        out = []
        for i, item in enumerate(items):
            if item == "unix":
                out.append(item)
                continue
            try:
                if not isinstance(item, str):
                    raise TypeError(item)  # ip_network would take the integer 5 as 0.0.0.5
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except (TypeError, ValueError):
                self.fail(f"{path}[{i}]", f'expected an address, a network such as 10.0.0.0/8 or '
                                          f'"unix", got {_kind(item)}')
        return tuple(out)

    def _check_Config(self, values: dict[str, Any], path: str) -> None:
        if not values.get("routes") and not values.get("servers"):
            self.fail("routes", "at least one route is required")
        self._check_servers(values.get("servers") or ())
        limits = values.get("limits")
        if isinstance(limits, Limits) and limits.request_line > limits.header_bytes:
            self.fail("limits.request_line", "must not exceed limits.header_bytes")
        self._check_accounts(values)
        self._check_listen(values.get("listen") or ())
        self._check_routes(values.get("routes") or ())
        servers = tuple(server for server in values.get("servers") or () if server is not None)
        self._check_tls_listeners(values.get("listen") or (), values.get("tls"), servers)
        self._check_route_schemes(values.get("listen", Config.listen) or (), values)
        pidfile = values.get("pidfile")
        if isinstance(pidfile, Path) and not pidfile.parent.is_dir():
            self.fail("pidfile", f"no such directory: {pidfile.parent}")
        self._check_master_directories(values)

    def _check_accounts(self, values: dict[str, Any]) -> None:
        user, group = values.get("user"), values.get("group")
        if isinstance(user, str):
            try:
                pwd.getpwnam(user)
            except KeyError:
                self.fail("user", f"no such user: {user}")
        if isinstance(group, str):
            try:
                grp.getgrnam(group)
            except KeyError:
                self.fail("group", f"no such group: {group}")

    def _check_master_directories(self, values: dict[str, Any]) -> None:
        """Refuse directories where others could swap the files the master writes (see below)."""
        try:
            account = pwd.getpwnam(values["user"]) if isinstance(values.get("user"), str) else None
            group = grp.getgrnam(values["group"]) if isinstance(values.get("group"), str) else None
        except KeyError:
            return  # reported by _check_accounts
        trusted = Trusted.of(
            account.pw_uid if account else None,
            group.gr_gid if group else (account.pw_gid if account else None),
        )
        places: list[tuple[str, str, bool]] = []  # (key path, file, in a sticky directory is safe)
        for key in ("access_log", "error_log"):
            target = values.get(key)
            if isinstance(target, str) and target != "-":
                places.append((key, target, False))
        pidfile = values.get("pidfile")
        if isinstance(pidfile, Path):
            places.append(("pidfile", str(pidfile), True))
        for i, address in enumerate(values.get("listen") or ()):
            if isinstance(address, ListenAddress) and address.family == "unix":
                places.append((f"listen[{i}]", address.path, True))
        for key, target, sticky_ok in places:
            reason = untrusted_directory(os.path.dirname(target), trusted, sticky_ok)
            if reason:
                self.fail(key, reason)

    def _check_listen(self, addresses: tuple[ListenAddress, ...]) -> None:
        seen: dict[str, int] = {}
        for i, address in enumerate(addresses):
            key = str(address)
            if key in seen and address.port != 0:
                self.fail(f"listen[{i}]", f"{key} is already listed as listen[{seen[key]}]")
            seen.setdefault(key, i)
            if address.family == "unix" and not os.path.isdir(os.path.dirname(address.path)):
                self.fail(f"listen[{i}]", f"no such directory: {os.path.dirname(address.path)}")

    def _check_tls_listeners(
        self, addresses: tuple[ListenAddress, ...], settings: TlsConfig | None,
        servers: tuple[ServerConfig, ...] = (),
    ) -> None:
        if any(server.tls and server.tls.certificates for server in servers):
            return  # the servers' certificates serve the TLS listeners (Config.tls_settings)
        for i, address in enumerate(addresses):
            if address.tls and (settings is None or not settings.certificates):
                self.fail("tls.certificates", f"required by listen[{i}] (a tls listener)")
                return

    def _check_certificates(self, values: dict[str, Any], path: str) -> None:
        """The certificate files themselves: parseable, current, and matching their keys."""
        for i, pair in enumerate(values.get("certificates") or ()):
            if pair is None or pair.cert is None or pair.key is None:
                continue  # a path problem, already reported
            where = f"{path}.certificates[{i}]"
            for which, reason in tls.pair_problems(pair.cert, pair.key, f"{where}.cert"):
                self.fail(f"{where}.{which}", reason)

    def _check_TlsConfig(self, values: dict[str, Any], path: str) -> None:
        self._check_certificates(values, path)
        mode = values.get("client_certificates", "none")
        client_ca = values.get("client_ca")
        reported = any(p.key == f"{path}.client_ca" for p in self.problems)
        if mode != "none" and client_ca is None and not reported:
            self.fail(f"{path}.client_ca", f"required when client_certificates is {mode}")
        elif isinstance(client_ca, Path):
            reason = tls.ca_problem(client_ca)
            if reason:
                self.fail(f"{path}.client_ca", reason)

    def _check_routes(self, routes: tuple[Route | None, ...], base: str = "routes") -> None:
        """Every route must be reachable: a route is shadowed on a scheme by an earlier `/` or an
        earlier route with the same prefix that serves that scheme, and an error when it is
        shadowed on every scheme it serves (`scheme: http` then an unscoped route is fine)."""
        owners: dict[str, dict[str, int]] = {}  # prefix -> scheme -> the first route serving it
        for i, route in enumerate(routes):
            if route is None or not route.prefix:
                continue
            key = route.prefix.rstrip("/") or "/"
            catch_all = owners.get("/", {})
            same = owners.setdefault(key, {})
            if all(scheme in catch_all for scheme in route.schemes):
                first = sorted({catch_all[scheme] for scheme in route.schemes})
                names = " and ".join(f"{base}[{j}]" for j in first)
                verb = "matches" if len(first) == 1 else "match"
                self.fail(f"{base}[{i}]", f"unreachable: {names} (prefix /) {verb} first")
            elif all(scheme in same for scheme in route.schemes):
                first = sorted({same[scheme] for scheme in route.schemes})
                names = " and ".join(f"{base}[{j}].prefix" for j in first)
                scoped = f" (scheme {route.scheme})" if route.scheme else ""
                self.fail(f"{base}[{i}].prefix", f"{route.prefix}{scoped} is already {names}")
            for scheme in route.schemes:
                same.setdefault(scheme, i)

    def _check_route_schemes(self, addresses: tuple[ListenAddress, ...],
                             values: dict[str, Any]) -> None:
        """A scheme-scoped route needs a listener of its scheme, or it can never match."""
        listening = {"https" if address.tls else "http" for address in addresses
                     if isinstance(address, ListenAddress)}
        if not listening:
            return  # no usable listener: reported elsewhere
        places = [("routes", values.get("routes") or ())]
        places += [(f"servers[{i}].routes", server.routes)
                   for i, server in enumerate(values.get("servers") or ()) if server is not None]
        for base, routes in places:
            for i, route in enumerate(routes):
                if route is None or route.scheme not in SCHEMES or route.scheme in listening:
                    continue
                reason = ("no listener has tls: true" if route.scheme == "https"
                          else "every listener has tls: true")
                self.fail(f"{base}[{i}].scheme", f"{route.scheme} can never match: {reason}")

    # -- virtual hosts and route options (issue 12) --

    def _field_ServerConfig_names(self, data: Any, path: str) -> tuple[str, ...]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not items:
            self.fail(path, "expected a non-empty list of host names")
            return ()
        names = []
        for i, item in enumerate(items):
            name = item.lower().removesuffix(".") if isinstance(item, str) else item
            reason = host_name_problem(name)
            if reason:
                self.fail(f"{path}[{i}]", reason)
            else:
                names.append(name)
        return tuple(names)

    def _check_ServerConfig(self, values: dict[str, Any], path: str) -> None:
        if not values.get("routes"):
            self.fail(f"{path}.routes", "at least one route is required")
        self._check_routes(values.get("routes") or (), f"{path}.routes")

    def _check_ServerTlsConfig(self, values: dict[str, Any], path: str) -> None:
        self._check_certificates(values, path)

    def _check_servers(self, servers: tuple[ServerConfig | None, ...]) -> None:
        """Across servers: every name once, at most one default."""
        owner: dict[str, str] = {}
        default: int | None = None
        for i, server in enumerate(servers):
            if server is None:
                continue
            for j, name in enumerate(server.names):
                where = f"servers[{i}].names[{j}]"
                if name in owner:
                    self.fail(where, f"{name} is already listed as {owner[name]}")
                owner.setdefault(name, where)
            if server.default:
                if default is not None:
                    self.fail(f"servers[{i}].default",
                              f"servers[{default}] is already the default server")
                default = i if default is None else default

    def _field_StaticConfig_fallback(self, data: Any, path: str) -> str | None:
        if data is not None and (not isinstance(data, str) or not data.startswith("/")):
            self.fail(path, f"expected a file path under root starting with '/', got {data!r}")
            return None
        return data  # type: ignore[no-any-return]

    def _check_RedirectConfig(self, values: dict[str, Any], path: str) -> None:
        to = values.get("to")
        if isinstance(to, str):
            reason = redirect_target_problem(to)
            if reason:
                self.fail(f"{path}.to", reason)

    def _field_Route_access(self, data: Any, path: str) -> AccessConfig | None:
        config = self.build(AccessConfig, data, path)
        if config is None:
            return None
        for key in ("allow", "deny"):
            for i, entry in enumerate(getattr(config, key)):
                reason = access_rule_problem(entry)
                if reason:
                    self.fail(f"{path}.{key}[{i}]", reason)
        # Rules apply in the order written: `deny` before `allow` when it comes first.
        order = tuple(key for key in data if key in ("allow", "deny"))
        return dataclasses.replace(config, rule_order=order or ("allow", "deny"))

    def _check_AuthBasicConfig(self, values: dict[str, Any], path: str) -> None:
        realm = values.get("realm")
        if isinstance(realm, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in realm):
            self.fail(f"{path}.realm", "control characters are not allowed")
        user_file = values.get("user_file")
        if not isinstance(user_file, Path):
            return  # reported already
        try:
            text = user_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.fail(f"{path}.user_file", f"cannot read {user_file}: {exc}")
            return
        users, problems = htpasswd.parse(text)
        for line, reason in problems:
            self.fail(f"{path}.user_file", f"{user_file} line {line}: {reason}")
        values["users"] = types.MappingProxyType(users)


def host_name_problem(name: Any) -> str:
    """Why name cannot be a server name ("" when it can): a DNS name, an optional `*.` first."""
    if not isinstance(name, str) or not name:
        return f"expected a host name, got {_kind(name)}"
    labels = name.split(".")
    if "*" in name:
        if labels[0] != "*" or "*" in ".".join(labels[1:]) or len(labels) < 2:
            return f"a wildcard is allowed only as the whole first label (*.example.org): {name}"
        labels = labels[1:]
    if name.startswith("[") and name.endswith("]"):
        return ""  # an IPv6 literal, as a Host header carries it
    for label in labels:
        if not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label) \
                or not label.isascii():
            return f"not a host name: {name}"
    return ""


REDIRECT_PLACEHOLDERS = ("{host}", "{uri}", "{path}", "{query}")


def redirect_target_problem(to: str) -> str:
    """Why a redirect's `to` cannot be used ("" when it can)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in to):
        return "spaces and control characters are not allowed"
    rest = to
    for placeholder in REDIRECT_PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        return "unknown placeholder: only {host} {uri} {path} {query} are replaced"
    if not to.startswith(("http://", "https://", "/")) or to.startswith("//"):
        return 'must be an absolute URL (http:// or https://) or a path starting with "/"'
    return ""


def access_rule_problem(entry: str) -> str:
    """Why an access rule entry is unusable ("" when it is an address, a CIDR or "all")."""
    if entry == "all":
        return ""
    try:
        ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        return f'expected an address, a CIDR or "all": {exc}'
    return ""


# -- the effective configuration, back as YAML ----------------------------------------------------

DUMP_HEADER = (
    "# forkd: the effective configuration. Every default is filled in and every path is absolute;\n"
    "# forkd accepts this file as it is (forkd -c FILE -T prints it again unchanged).\n"
)


def dump(config: Config) -> str:
    """The config as YAML that `load` accepts again and that loads to an equal Config.

    Generic over the dataclasses, so a new key appears here without a change: dataclasses become
    mappings, tuples lists, paths strings. Only fields with a grammar of their own (the builder's
    `_field_*` methods) have a `_dump_*` counterpart. An absent optional section (a route's
    other handler types) or route option (`scheme`) is left out rather than written as null.
    """
    return DUMP_HEADER + yaml.dump(
        _dump_fields(config), Dumper=_IndentedDumper, sort_keys=False, allow_unicode=True
    )


class _IndentedDumper(yaml.SafeDumper):
    """Indent list items under their key, as people write them (PyYAML puts them flush)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # type: ignore[no-untyped-call]


def _dump_fields(obj: Any) -> dict[str, Any]:
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        absent = value is None and (_is_section(hints[spec.name])
                                    or (cls is Route and spec.name in ROUTE_OPTIONS))
        if spec.name in NOT_KEYS or absent:
            continue
        special = _DUMP_SPECIAL.get((cls.__name__, spec.name))
        out[spec.name] = special(value) if special else _dump_value(value)
    return out


def _dump_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dump_fields(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_dump_value(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _dump_value(item) for key, item in value.items()}
    return value


def _is_section(hint: Any) -> bool:
    """An optional dataclass: `static: StaticConfig | None`."""
    return any(dataclasses.is_dataclass(arg) for arg in typing.get_args(hint))


def _dump_listen(address: ListenAddress) -> str | dict[str, Any]:
    options = {name: True for name in LISTEN_OPTIONS if getattr(address, name)}
    return {"address": str(address), **options} if options else str(address)


_DUMP_SPECIAL: dict[tuple[str, str], Any] = {
    ("Config", "listen"): lambda addresses: [_dump_listen(address) for address in addresses],
    ("Config", "unix_mode"): lambda mode: f"{mode:04o}",
    ("Route", "access"): lambda access: {  # the rules in the order they apply
        key: list(getattr(access, key))
        for key in dict.fromkeys((*access.rule_order, "allow", "deny"))
    },
}


# -- directories the master writes in ----------------------------------------------------------
#
# The master runs as root and creates, appends to and hands over files by name: the logs, the
# pidfile and its reload status, unix sockets. Whoever can rename entries along such a path can
# make those names point elsewhere (a link to /etc/shadow, a directory swapped for a link to /etc).
# O_NOFOLLOW guards the last name only, so the directories themselves must be beyond the reach of
# anyone but root, forkd's own user and the configured `user`/`group`:
#
# - the file's own directory is owned by one of them, and neither writable by others nor by a group
#   other than theirs; a root-owned sticky directory (/tmp, /run/lock) is accepted for the pidfile
#   and unix sockets only, which are created with O_EXCL or bind() and never reopened by name;
# - every directory above it is owned by root (or forkd's user), and not writable by others or an
#   untrusted group, unless it is sticky and the entry below it is root's (others can then neither
#   rename nor remove that entry).
# Both the path as written and the path with its links resolved are checked. A directory forkd
# cannot look at (no permission) is not reported: the master, which can, checks again at start.


@dataclass(frozen=True)
class Trusted:
    """The owners and groups that may write where the master writes."""

    owners: frozenset[int]  # may own or write the file's own directory
    groups: frozenset[int]
    above_owners: frozenset[int]  # may own or write the directories above it
    above_groups: frozenset[int]

    @classmethod
    def of(cls, uid: int | None, gid: int | None) -> Trusted:
        us, our_groups = {0, os.geteuid()}, {0, os.getegid()}
        return cls(
            frozenset(us | ({uid} if uid is not None else set())),
            frozenset(our_groups | ({gid} if gid is not None else set())),
            frozenset(us),
            frozenset(our_groups),
        )


def untrusted_directory(directory: str, trusted: Trusted, sticky_ok: bool) -> str | None:
    """Why users other than the trusted ones could swap files in directory; None when they cannot."""
    written = os.path.abspath(directory)
    for path in dict.fromkeys((written, os.path.realpath(written))):
        try:
            reason = _own_directory(path, trusted, sticky_ok) or _directories_above(path, trusted)
        except OSError:
            return None  # missing (reported elsewhere) or not ours to look at
        if reason:
            return reason
    return None


def _own_directory(path: str, trusted: Trusted, sticky_ok: bool) -> str | None:
    info = os.stat(path)
    if sticky_ok and _sticky_root(info):
        return None
    if info.st_uid not in trusted.owners or _others_write(info, trusted.groups):
        return _writable(path, info)
    return None


def _directories_above(path: str, trusted: Trusted) -> str | None:
    entry = path
    while entry != "/":
        parent = os.path.dirname(entry)
        info = os.stat(parent)  # the directory the name `entry` lives in, links followed
        if info.st_uid not in trusted.above_owners or _others_write(info, trusted.above_groups):
            below = os.lstat(entry)
            if not (_sticky_root(info) and below.st_uid in trusted.above_owners):
                return _writable(parent, info)
        entry = parent
    return None


def _others_write(info: os.stat_result, groups: frozenset[int]) -> bool:
    return bool(info.st_mode & stat.S_IWOTH) or (
        bool(info.st_mode & stat.S_IWGRP) and info.st_gid not in groups
    )


def _sticky_root(info: os.stat_result) -> bool:
    return bool(info.st_mode & stat.S_ISVTX) and info.st_uid == 0


def _writable(path: str, info: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    mode = stat.S_IMODE(info.st_mode)
    return f"directory {path} is writable by other users (owner {owner}, mode {mode:04o})"


def parse_listen(text: Any) -> ListenAddress | str:
    """Parse "host:port", "[v6]:port" or "unix:/path"; a string result is the reason it is invalid."""
    if not isinstance(text, str):
        return f"expected an address string, got {_kind(text)}"
    if text.startswith("unix:"):
        if not text[5:]:
            return "unix: needs a socket path"
        return ListenAddress("unix", path=text[5:])
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        family = "inet6"
    else:
        host, sep, port = text.rpartition(":")
        family = "inet"
    if not sep or not port.isascii() or not port.isdigit():
        return f'expected "host:port", "[v6]:port" or "unix:/path", got {text!r}'
    if int(port) > 65535:
        return f"port {int(port)} is out of range (0 to 65535)"
    if family == "inet" and ":" in host:
        return f"IPv6 addresses need brackets: [{host}]:{port}"
    return ListenAddress(family, host or "0.0.0.0", int(port))  # type: ignore[arg-type]


LISTEN_OPTIONS = ("tls", "proxy_protocol")


def _unreadable(path: Path) -> str:
    """Why path cannot be read as a regular file, or "" when it can."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return f"no such file: {path}"
    except IsADirectoryError:
        return f"is a directory: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return ""


def _unknown(key: Any, known: Mapping[str, Any]) -> str:
    """`unknown key`, with the nearest known key when one is close enough to be a typo."""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(data: Any) -> str:
    if data is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: f"the string {data!r}",
        bool: f"{data}".lower(),
    }.get(type(data), f"{type(data).__name__} {data!r}")
