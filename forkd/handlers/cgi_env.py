"""Finding the CGI script a request names, and the environment it runs with (RFC 3875 §3.3, §4.1).

Script lookup walks the decoded request path one segment at a time under the route's root: the first
segment that names a regular file is the script, the rest of the path is PATH_INFO (§4.1.5), so
`/cgi-bin/app.sh/extra/path` runs `ROOT/app.sh` with PATH_INFO `/extra/path`. A segment starting with
"." (dotfiles, and so also anything a symlink-free walk could use to climb) is never run; the script's
real path must lie inside the real root, so a symlink cannot lead out of it. A script is runnable when
it is executable or when its extension has an interpreter.

The environment is built from scratch for every request: PATH, the operator's `pass_env` and `env`, then
the meta-variables, which always win. Nothing else of forkd's own environment reaches a script.
Everything is bytes, because header values may hold any octet (they are latin-1 strings in Request) and
paths are UTF-8: the script sees exactly the octets that were received.

No sockets and no processes here: only stat calls and string work, so it is unit-tested directly.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from forkd.config import CgiConfig
from forkd.handlers.paths import inside
from forkd.http.errors import Forbidden, NotFound
from forkd.http.request import ConnectionInfo, Request

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

# Request headers that never become HTTP_* variables. Content-Length and Content-Type already are
# CONTENT_LENGTH / CONTENT_TYPE (§4.1.18 allows removing them); Transfer-Encoding described a framing
# the script never sees (the body it reads is de-chunked); Proxy would become HTTP_PROXY, which many
# HTTP libraries read as their proxy setting ("httpoxy", CVE-2016-5385).
SKIPPED_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding", "proxy"})

# Characters a header name may have to become a variable name. RFC 9110 tokens also allow
# "!#$%&'*+.^`|~", but mapping those to "_" (as older servers did) lets one header pose as another.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass(frozen=True, slots=True)
class Script:
    """A located script: what to run and the names the request gives it."""

    filename: str  # absolute path under the root (SCRIPT_FILENAME)
    name: str  # the URL path that names it (SCRIPT_NAME), decoded, e.g. "/cgi-bin/app.sh"
    path_info: str  # the rest of the decoded path ("" or "/extra/path")
    argv: tuple[str, ...]  # (filename,) or (interpreter, filename)

    @property
    def directory(self) -> str:
        return os.path.dirname(self.filename)

    @property
    def nph(self) -> bool:
        """Non-parsed-header scripts (§5.1) write the whole HTTP response themselves."""
        return os.path.basename(self.filename).startswith("nph-")


def locate(root_real: str, prefix: str, rest: str, interpreters: Mapping[str, str]) -> Script:
    """Split `rest` (the normalised path below the route prefix) into a script and its PATH_INFO.

    Raises NotFound for anything that is not a runnable script under the root, and Forbidden for a
    regular file that is neither executable nor handled by an interpreter.
    """
    segments = rest.strip("/").split("/") if rest.strip("/") else []
    current = root_real.rstrip("/")
    followed_link = False
    for index, segment in enumerate(segments):
        if segment.startswith("."):
            raise NotFound("dotfiles are never run")
        current = f"{current}/{segment}"
        mode = _mode(current, os.lstat)
        if stat.S_ISLNK(mode):
            followed_link = True
            mode = _mode(current, os.stat)
        if stat.S_ISDIR(mode):
            continue
        # Without a symlink on the way, a path built from plain segments under the real root is
        # inside it; only a link needs the (slower) resolution of the real path.
        if not stat.S_ISREG(mode) or (followed_link and not inside(root_real, current)):
            raise NotFound()
        script_part = "/" + "/".join(segments[: index + 1])
        return Script(
            filename=current,
            name=prefix.rstrip("/") + script_part,
            path_info=rest[len(script_part):],
            argv=_argv(current, interpreters),
        )
    # The root itself or a directory below it: CGI directories are never listed.
    raise NotFound("This path names a directory, not a script; CGI directories are never listed.")


def _mode(path: str, stat_call: Callable[[str], os.stat_result]) -> int:
    try:
        return stat_call(path).st_mode
    except PermissionError:
        raise Forbidden() from None
    except (OSError, ValueError):
        raise NotFound() from None


def _argv(filename: str, interpreters: Mapping[str, str]) -> tuple[str, ...]:
    interpreter = interpreters.get(os.path.splitext(filename)[1])
    if interpreter:
        return (interpreter, filename)
    if os.access(filename, os.X_OK):
        return (filename,)
    raise Forbidden("script is not executable")


def base_environment(cgi: CgiConfig, own_environ: Mapping[str, str]) -> dict[bytes, bytes]:
    """The operator-chosen part of every script's environment: PATH, pass_env, then env."""
    env = {b"PATH": os.fsencode(own_environ.get("PATH", DEFAULT_PATH))}
    for name in cgi.pass_env:
        if name in own_environ:
            env[os.fsencode(name)] = os.fsencode(own_environ[name])
    for name, value in cgi.env.items():
        env[os.fsencode(name)] = os.fsencode(str(value))
    return env


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the environment needs to know about the server, computed once per handler."""

    software: str  # SERVER_SOFTWARE
    document_root: str  # DOCUMENT_ROOT
    underscore_headers: bool  # pass request headers whose names contain "_"


def fixed_environment(base: Mapping[bytes, bytes], server: ServerFacts) -> dict[bytes, bytes]:
    """`base` plus the meta-variables that are the same for every request (computed once)."""
    env = dict(base)
    env.update({
        b"AUTH_TYPE": b"",  # §4.1.1: forkd authenticates nobody; the script sees Authorization itself
        b"GATEWAY_INTERFACE": b"CGI/1.1",
        b"SERVER_SOFTWARE": server.software.encode(),
        b"DOCUMENT_ROOT": os.fsencode(server.document_root),
        b"REDIRECT_STATUS": b"200",  # php-cgi refuses to run without it (force-cgi-redirect)
    })
    return env


def build_environ(
    request: Request,
    script: Script,
    fixed: Mapping[bytes, bytes],
    server: ServerFacts,
    path_translated: str | None,
) -> dict[bytes, bytes]:
    """The complete environment of one script run: `fixed` plus the request's meta-variables.

    Values taken from the request are latin-1 strings holding the octets received and go back to
    those octets; values derived from the decoded path are text, encoded as UTF-8.
    """
    env = dict(fixed)
    env.update(connection_environ(request.conn))
    env.update(script_environ(script, path_translated))
    env.update(request_environ(request, server))
    return env


def connection_environ(conn: ConnectionInfo | None) -> dict[bytes, bytes]:
    """The meta-variables that every request of one connection shares, worked out at its first
    script request (do not change the dict)."""
    if conn is None:
        return {b"REMOTE_ADDR": b"", b"REMOTE_HOST": b""}
    env = conn.cgi_variables
    if env is not None:
        return env
    remote_addr = conn.remote_addr.encode()
    env = conn.cgi_variables = {
        b"REMOTE_ADDR": remote_addr,
        b"REMOTE_HOST": remote_addr,  # §4.1.9: the address stands in for a name never looked up
        b"REMOTE_PORT": str(conn.remote_port).encode(),
        b"SERVER_ADDR": conn.server_addr.encode(),
        b"REQUEST_SCHEME": conn.scheme.encode(),
    }
    for name, value in conn.tls_variables.items():  # HTTPS=on, SSL_PROTOCOL, SSL_CLIENT_*...
        env[name.encode()] = value.encode("latin-1", "replace")
    return env


def script_environ(script: Script, path_translated: str | None) -> dict[bytes, bytes]:
    """The meta-variables that name the script and the rest of the path."""
    env = {
        b"PATH_INFO": os.fsencode(script.path_info),  # §4.1.5: decoded, not URL-encoded
        b"SCRIPT_NAME": os.fsencode(script.name),
        b"SCRIPT_FILENAME": os.fsencode(script.filename),
    }
    if path_translated is not None and script.path_info:
        env[b"PATH_TRANSLATED"] = os.fsencode(path_translated)  # §4.1.6: only with a PATH_INFO
    return env


def request_environ(request: Request, server: ServerFacts) -> dict[bytes, bytes]:
    """The meta-variables of the request itself: its line, its headers, the server it named."""
    conn = request.conn
    server_name, host_port = split_host(request.host)
    if request.site is not None:  # a virtual host: its own name, never a Host it merely caught
        server_name = request.site.server_name(server_name)
    server_port = host_port
    if conn is not None:
        server_port = conn.server_port or host_port
        server_name = server_name or _bracket(conn.server_addr)
    env = {
        b"SERVER_NAME": (server_name or "localhost").encode("latin-1", "replace"),
        b"SERVER_PORT": str(server_port or 80).encode(),
        b"SERVER_PROTOCOL": request.version.encode(),
        b"REQUEST_METHOD": request.method.encode("latin-1", "replace"),
        b"QUERY_STRING": request.query.encode("latin-1", "replace"),  # §4.1.7: still URL-encoded
        b"REQUEST_URI": request.target.encode("latin-1", "replace"),  # customary: the raw target
    }
    if request.content_length is not None or request.chunked:
        env[b"CONTENT_LENGTH"] = str(request.body_length).encode()  # §4.1.2: the de-chunked length
    headers = request.headers
    content_type = headers.get("content-type")
    if content_type is not None:
        env[b"CONTENT_TYPE"] = content_type.encode("latin-1", "replace")
    extra = request.extra
    for name, value in extra.items():
        # REDIRECT_* after a local redirect (§6.2.2); AUTH_TYPE, REMOTE_USER from basic auth.
        if name.startswith("REDIRECT_"):  # latin-1 strings holding the octets received
            env[name.encode("latin-1", "replace")] = value.encode("latin-1", "replace")
        elif name in AUTH_VARIABLES:  # the user name as decoded from UTF-8 credentials
            env[name.encode()] = value.encode("utf-8", "replace")
    env.update(header_variables(headers, server.underscore_headers))
    if "REMOTE_USER" in extra:  # the server checked the password: it stays with the server
        env.pop(b"HTTP_AUTHORIZATION", None)
    return env


AUTH_VARIABLES = frozenset({"AUTH_TYPE", "REMOTE_USER"})  # set by forkd.handlers.guard


def header_variables(headers: Mapping[str, str], underscore_headers: bool) -> dict[bytes, bytes]:
    """HTTP_* variables for request headers (§4.1.18), minus the ones that must not pass."""
    out: dict[bytes, bytes] = {}
    for name, value in headers.items():
        variable = _variable_name(name, underscore_headers)
        if variable is not None and "\x00" not in value:  # NUL cannot be in an environment string
            out[variable] = value.encode("latin-1", "replace")
    return out


# Header names seen so far and their variable names (None: not passed), so that the common names
# are worked out once per worker. Bounded: clients choose the names.
_variable_names: dict[tuple[str, bool], bytes | None] = {}
_MAX_REMEMBERED = 512  # names of at most _LONGEST_REMEMBERED chars: 32 KiB in all
_LONGEST_REMEMBERED = 64


def _variable_name(name: str, underscore_headers: bool) -> bytes | None:
    key = (name, underscore_headers)
    variable = _variable_names.get(key, b"")
    if variable != b"":
        return variable
    variable = None
    if name.lower() not in SKIPPED_HEADERS and _passable_name(name, underscore_headers):
        variable = b"HTTP_" + name.upper().replace("-", "_").encode("ascii")
    if len(_variable_names) < _MAX_REMEMBERED and len(name) <= _LONGEST_REMEMBERED:
        _variable_names[key] = variable
    return variable


def _passable_name(name: str, underscore_headers: bool) -> bool:
    # "X_Forwarded_For" and "X-Forwarded-For" would both become HTTP_X_FORWARDED_FOR: a client could
    # then forge a header a front proxy sets. Dropped unless the operator asks for them.
    for char in name.lower():
        if char not in _NAME_CHARS and not (char == "_" and underscore_headers):
            return False
    return bool(name)


def split_host(host: str) -> tuple[str, int]:
    """("name", port) from a Host value: "example.com:8080", "[::1]:80", "example.com"."""
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, 0
        name, rest = host[: end + 1], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else 0


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address
