"""Which PHP script a request runs, or whether it names a file to serve as it is; and its params.

Theory of operation
-------------------
The recipes that put php-fpm behind nginx split the URL with a regular expression and let PHP's
`cgi.fix_pathinfo` guess the script; both produced famous holes: `/uploads/avatar.gif/x.php`
executing an uploaded image, and CVE-2019-11043 (a `%0a` in the path broke
`fastcgi_split_path_info` and gave remote code execution). Here nothing is split by a pattern: the
decoded, normalised path below the route prefix is walked under the route's root one segment at a
time, as CGI does (forkd.handlers.cgi_env.locate), and the file system answers:

  - a CR, LF (or NUL, refused by forkd.handlers.paths.normalize) in the decoded path: 400;
  - a segment starting with "." (outside /.well-known/): 404, never run nor served;
  - the first existing regular file with one of `extensions` (compared case-insensitively, so that
    `X.PHP` is never served as source) is SCRIPT_FILENAME and the rest of the path PATH_INFO;
  - the first existing regular file with another extension ends the walk: when it is the last
    segment, the route serves it itself (STATIC: the static handler's semantics); when more
    segments follow (`x.jpg/y.php`) the answer is 404, whatever the last segment says;
  - a directory: with a trailing slash its first `index` that is a script runs; without one, or
    without a script index, the static handler answers (redirect to the slash, index.html, 403);
  - nothing there (a pretty permalink): the `front_controller` script runs, with the original
    REQUEST_URI; without one, 404.
A script reached through a symlink must really lie inside the root; a file served as it is
through a symlink must not really be a script (its source would leak).

The params are the CGI/1.1 meta-variables built by forkd.handlers.cgi_env (the same bytes a CGI
script would get, HTTP_PROXY never among them) plus what php-fpm expects of a web server:
DOCUMENT_ROOT (the route's root), DOCUMENT_URI, SCRIPT_FILENAME, REQUEST_URI, HTTPS on TLS.
HTTP_AUTHORIZATION passes only with `pass_authorization`: the credentials a client sends are the
application's business only where the operator says so. No sockets here: stat calls and strings.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from forkd.config import FastCgiConfig
from forkd.handlers.cgi_env import (
    Script,
    ServerFacts,
    connection_environ,
    fixed_environment,
    request_environ,
    script_environ,
)
from forkd.handlers.fastcgi_records import encode_pairs
from forkd.handlers.fastcgi_records import params as params_stream
from forkd.handlers.paths import hidden, inside, normalize, strip_prefix
from forkd.http.errors import BadRequest, Forbidden, NotFound
from forkd.http.request import ConnectionInfo, Request

# Request paths whose walk is remembered per route: only strings and Script objects are kept, the
# file system is asked each time.
PATH_CACHE = 4096


class Static:
    """The request names a file (or directory) of the route that is served as it is."""


STATIC = Static()


class Walk(NamedTuple):
    """What a request path's walk needs that does not depend on the file system."""

    url_path: str  # decoded and normalised
    steps: tuple[tuple[str, Script | None], ...]  # per segment: the file, its Script if a script


class Selector:
    """Script selection for one route (see the module docstring); built once per worker."""

    def __init__(self, prefix: str, settings: FastCgiConfig) -> None:
        self.prefix = prefix
        self.root_real = os.path.realpath(settings.root)
        self.extensions = frozenset(extension.lower() for extension in settings.extensions)
        self.index = tuple(name for name in settings.index if self.is_script_name(name))
        self.front_controller = settings.front_controller
        self._walks: dict[str, Walk] = {}  # raw path -> its walk

    def is_script_name(self, name: str) -> bool:
        return os.path.splitext(name)[1].lower() in self.extensions

    def select(self, raw_path: str) -> Script | Static:
        walk = self._walks.get(raw_path) or self._walk(raw_path)
        steps = walk.steps
        followed_link = False
        for position, (current, script) in enumerate(steps):
            mode, linked = _mode(current)
            followed_link = followed_link or linked
            if mode is None:
                return self._missing()
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode) or (followed_link and not inside(self.root_real, current)):
                raise NotFound()
            if script is not None:
                return script
            if position < len(steps) - 1:
                raise NotFound("only scripts take a path after their name")  # x.jpg/y.php
            if linked and self.is_script_name(os.path.realpath(current)):
                raise NotFound()  # a link to a script: its source is never served
            return STATIC
        url_path = walk.url_path
        if not url_path.endswith("/"):
            return STATIC  # a directory named without its slash: the static handler redirects
        current = steps[-1][0] if steps else self.root_real.rstrip("/")
        rest = strip_prefix(url_path, self.prefix)
        for name in self.index:
            filename = f"{current}/{name}"
            mode, linked = _mode(filename)
            if mode is not None and stat.S_ISREG(mode):
                if (followed_link or linked) and not inside(self.root_real, filename):
                    continue
                return self._script(filename, rest.rstrip("/") + "/" + name, "")
        return STATIC

    def _walk(self, raw_path: str) -> Walk:
        """The walk of a path not seen lately (remembered, bounded); raises 400 or 404 for a path
        that is never walked."""
        url_path = normalize(raw_path)
        if "\r" in url_path or "\n" in url_path:
            raise BadRequest("CR or LF in the decoded path")
        rest = strip_prefix(url_path, self.prefix)
        if hidden(rest):
            raise NotFound("dotfiles are never run nor served")
        segments = [segment for segment in rest.split("/") if segment]
        steps = []
        current = self.root_real.rstrip("/")
        for position, segment in enumerate(segments):
            current = f"{current}/{segment}"
            script = None
            if self.is_script_name(segment):
                script_part = "/" + "/".join(segments[: position + 1])
                script = self._script(current, script_part, rest[len(script_part):])
            steps.append((current, script))
        walk = Walk(url_path, tuple(steps))
        if len(self._walks) >= PATH_CACHE:
            self._walks.clear()
        self._walks[raw_path] = walk
        return walk

    def _script(self, filename: str, script_part: str, path_info: str) -> Script:
        return Script(filename=filename, name=self.prefix.rstrip("/") + script_part,
                      path_info=path_info, argv=())

    def _missing(self) -> Script:
        if self.front_controller is None:
            raise NotFound()
        return self._script(self.root_real.rstrip("/") + self.front_controller,
                            self.front_controller, "")


def _mode(path: str) -> tuple[int | None, bool]:
    """(st_mode following links, or None when nothing is there; whether `path` is a link)."""
    try:
        mode = os.lstat(path).st_mode
        linked = stat.S_ISLNK(mode)
        if linked:
            mode = os.stat(path).st_mode
    except PermissionError:
        raise Forbidden() from None
    except (OSError, ValueError):  # ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, a dangling link
        return None, False
    return mode, linked


class Params:
    """The FastCGI params of a request (see the module docstring); built once per worker.

    They come in four groups, each encoded as soon as it is known, so that a request encodes only
    its own: the fixed ones once per route (the operator's `params`, which forkd.config keeps clear
    of the request's names, and GATEWAY_INTERFACE, SERVER_SOFTWARE, DOCUMENT_ROOT,
    REDIRECT_STATUS), the connection's once per connection, the script's once per script
    (remembered, bounded), then the request's.
    """

    def __init__(self, settings: FastCgiConfig, software: str, root_real: str) -> None:
        self.facts = ServerFacts(software=software, document_root=root_real,
                                 underscore_headers=False)
        operator = {name.encode(): str(value).encode() for name, value in settings.params.items()}
        self.fixed = fixed_environment(operator, self.facts)
        self.fixed_encoded = encode_pairs(self.fixed.items())
        self.pass_authorization = settings.pass_authorization
        self._scripts: dict[Script, bytes] = {}  # script -> its params, encoded

    def record(self, request_id: int, request: Request, script: Script) -> bytes:
        """The whole PARAMS stream of a request."""
        variables = request_environ(request, self.facts)
        if not self.pass_authorization:
            variables.pop(b"HTTP_AUTHORIZATION", None)
        if request.extra:
            # REDIRECT_STATUS after a local redirect, AUTH_TYPE after basic auth: the request's
            # value replaces the fixed one (one pair per name), so nothing is encoded ahead.
            pairs = {**self.fixed, **connection_environ(request.conn),
                     **self._script_environ(script), **variables}
            return params_stream(request_id, pairs.items())
        encoded = self.fixed_encoded + self._connection(request.conn) + self._script(script)
        return params_stream(request_id, variables.items(), encoded)

    def _connection(self, conn: ConnectionInfo | None) -> bytes:
        if conn is None:
            return encode_pairs(connection_environ(conn).items())
        if conn.fastcgi_params is None:
            conn.fastcgi_params = encode_pairs(connection_environ(conn).items())
        return conn.fastcgi_params

    def _script(self, script: Script) -> bytes:
        encoded = self._scripts.get(script)
        if encoded is None:
            encoded = encode_pairs(self._script_environ(script).items())
            if len(self._scripts) >= PATH_CACHE:
                self._scripts.clear()
            self._scripts[script] = encoded
        return encoded

    def _script_environ(self, script: Script) -> dict[bytes, bytes]:
        root = self.facts.document_root.rstrip("/")
        translated = root + script.path_info if script.path_info else None
        env = script_environ(script, translated)
        env[b"DOCUMENT_URI"] = os.fsencode(script.name + script.path_info)
        return env
