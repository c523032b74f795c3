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
from forkd.http.request import Request

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
    raise NotFound("no script named")  # the root itself or a directory: never listed


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


def build_environ(
    request: Request,
    script: Script,
    base: Mapping[bytes, bytes],
    server: ServerFacts,
    path_translated: str | None,
) -> dict[bytes, bytes]:
    """The complete environment of one script run: `base` plus the meta-variables of RFC 3875 §4.1."""
    env = dict(base)
    conn = request.conn
    remote_addr = conn.remote_addr if conn else ""
    server_name, host_port = split_host(request.host)
    server_port = conn.server_port if conn and conn.server_port else host_port
    # Values taken from the request are latin-1 strings holding the octets received; values derived
    # from the decoded path or the filesystem are text, encoded as UTF-8 (os.fsencode).
    received = {
        "AUTH_TYPE": "",  # §4.1.1: forkd authenticates nobody; the script sees Authorization itself
        "GATEWAY_INTERFACE": "CGI/1.1",
        "QUERY_STRING": request.query,  # §4.1.7: exactly as received, still URL-encoded
        "REMOTE_ADDR": remote_addr,
        "REMOTE_HOST": remote_addr,  # §4.1.9: the address stands in when the name is not looked up
        "REMOTE_PORT": str(conn.remote_port) if conn else "",
        "REQUEST_METHOD": request.method,
        "REQUEST_URI": request.target,  # customary (Apache, lighttpd): the raw request-target
        "SERVER_NAME": server_name or _bracket(conn.server_addr if conn else "") or "localhost",
        "SERVER_PORT": str(server_port or 80),
        "SERVER_ADDR": conn.server_addr if conn else "",
        "SERVER_PROTOCOL": request.version,
        "SERVER_SOFTWARE": server.software,
        "REQUEST_SCHEME": conn.scheme if conn else "http",
        "REDIRECT_STATUS": "200",  # php-cgi refuses to run without it (force-cgi-redirect)
    }
    if conn is not None and conn.scheme == "https":
        received["HTTPS"] = "on"
    if request.content_length is not None or request.chunked:
        received["CONTENT_LENGTH"] = str(request.body_length)  # §4.1.2: the de-chunked length
    content_type = request.headers.get("content-type")
    if content_type is not None:
        received["CONTENT_TYPE"] = content_type
    for name, value in request.extra.items():
        if name.startswith("REDIRECT_"):
            received[name] = value  # set by the worker after a local redirect (§6.2.2)
    paths = {
        "PATH_INFO": script.path_info,  # §4.1.5: decoded, not URL-encoded
        "SCRIPT_NAME": script.name,
        "SCRIPT_FILENAME": script.filename,
        "DOCUMENT_ROOT": server.document_root,
    }
    if path_translated is not None and script.path_info:
        paths["PATH_TRANSLATED"] = path_translated  # §4.1.6: only when PATH_INFO is not empty
    for name, value in received.items():
        env[name.encode()] = value.encode("latin-1", "replace")
    for name, value in paths.items():
        env[name.encode()] = os.fsencode(value)
    env.update(header_variables(request.headers, server.underscore_headers))
    return env


def header_variables(headers: Mapping[str, str], underscore_headers: bool) -> dict[bytes, bytes]:
    """HTTP_* variables for request headers (§4.1.18), minus the ones that must not pass."""
    out: dict[bytes, bytes] = {}
    for name, value in headers.items():
        if name.lower() in SKIPPED_HEADERS or not _passable_name(name, underscore_headers):
            continue
        if "\x00" in value:
            continue  # cannot be in an environment string; the parser should have refused it
        out[b"HTTP_" + name.upper().replace("-", "_").encode("ascii")] = value.encode("latin-1", "replace")
    return out


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
