"""The CGI/1.1 handler (RFC 3875): a route whose requests run scripts under a root directory.

Per request: `prepare` finds the script before the body is read (so a 404 or 403 needs no body, and
`Expect: 100-continue` is answered only for a script that will run); `handle` builds the environment
(forkd.handlers.cgi_env), starts the script (forkd.handlers.cgi_process), waits for its header block
(forkd.handlers.cgi_output) and returns a Response whose body iterator keeps pumping the script while
the worker sends. What the header block means (§6.2):
  - document: status from Status (default 200), the script's headers, the rest of stdout as body:
    whole (bytes) when the script ends within WHOLE_BODY_WAIT of its header block, else streamed
    (Content-Length when the script gave one, else the worker chunks on HTTP/1.1, closes on 1.0);
  - local redirect (`Location: /path`, no Status): the script is stopped and InternalRedirect raised;
    the worker serves the new target as a GET with REDIRECT_* variables;
  - client redirect (any other Location): 302 unless Status says otherwise;
  - nph- scripts (§5.1): no parsing, the output is the response, written raw.
The Response's cleanup stops and reaps the script; the worker calls it once the response is sent or
abandoned (client gone, HEAD), and the handler calls it itself on every path that returns no Response.

Not done, on purpose: §4.4's command-line "search words" for queries without "=" (Apache does it; it
made php-cgi option injection possible, CVE-2012-1823), and REMOTE_HOST lookups (the address stands in).
"""

from __future__ import annotations

import os

from forkd import SERVER_SOFTWARE
from forkd.config import CgiConfig, Config
from forkd.handlers import InternalRedirect, matches
from forkd.handlers.cgi_env import (
    Script,
    ServerFacts,
    base_environment,
    build_environ,
    fixed_environment,
    locate,
)
from forkd.handlers.cgi_output import (
    MAX_HEADER_BYTES,
    LocalRedirect,
    MalformedOutput,
    classify,
    find_end,
    line_start,
    parse,
)
from forkd.handlers.cgi_process import (
    CgiProcess,
    ScriptTimeout,
    body_iterator,
    home_directory,
    seal_descriptors,
)
from forkd.handlers.paths import normalize, strip_prefix
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.logs import ErrorLog

# After the header block, how long (and for how many bytes) to wait for the end of the output, so
# that a short response is sent whole rather than streamed (see CgiProcess.collect).
WHOLE_BODY_WAIT = 0.003
WHOLE_BODY_LIMIT = 65536


class CgiHandler:
    """Runs the scripts below one route's root; built once per worker."""

    def __init__(self, prefix: str, cgi: CgiConfig, config: Config, log: ErrorLog | None = None) -> None:
        self.prefix = prefix
        self.cgi = cgi
        self.config = config
        self.root_real = os.path.realpath(cgi.root)
        self.facts = ServerFacts(
            software=SERVER_SOFTWARE if config.server_tokens else "forkd",
            document_root=_document_root(config, self.root_real),
            underscore_headers=cgi.underscore_headers,
        )
        self.fixed_env = fixed_environment(base_environment(cgi, os.environ), self.facts)
        self.log = log or ErrorLog(config.error_log, config.log_level)
        # Scripts without a request body read /dev/null: one descriptor for all of them (O_CLOEXEC
        # here; the spawn dup2()s it onto the script's fd 0).
        self.stdin_null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # The worker's working directory, returned to after each spawn (scripts start in their own).
        self.home = home_directory()
        seal_descriptors()
        self._prepared: tuple[Request, Script] | None = None

    # -- the Handler protocol --------------------------------------------------------------------
    def prepare(self, request: Request) -> None:
        self._prepared = (request, self._locate(request))

    def handle(self, request: Request) -> Response:
        script = self._script_for(request)
        translated = self._translate(script.path_info) if script.path_info else None
        env = build_environ(request, script, self.fixed_env, self.facts, translated)
        process = CgiProcess(script.argv, env, script.directory, request.body, self.stdin_null,
                             self.home, self.log, script.filename, self.cgi.timeout)
        try:
            if script.nph:
                return self._raw_response(process)
            return self._response(request, process)
        except BaseException:
            process.close()
            raise

    # -- script lookup ---------------------------------------------------------------------------
    def _script_for(self, request: Request) -> Script:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] is request:
            return prepared[1]
        return self._locate(request)  # an internal redirect, or a caller that skipped prepare

    def _locate(self, request: Request) -> Script:
        rest = strip_prefix(normalize(request.path), self.prefix)
        return locate(self.root_real, self.prefix, rest, self.cgi.interpreters)

    def _translate(self, path_info: str) -> str:
        """PATH_TRANSLATED (§4.1.6): PATH_INFO mapped to a file the way this server maps a URI path."""
        for route in self.config.routes:
            if matches(route.prefix, path_info):
                root = str(route.handler_config.root)
                return root.rstrip("/") + strip_prefix(path_info, route.prefix)
        return self.facts.document_root.rstrip("/") + path_info

    # -- responses -------------------------------------------------------------------------------
    def _response(self, request: Request, process: CgiProcess) -> Response:
        head, first = self._header_block(process)
        try:
            outcome = classify(parse(head))
        except MalformedOutput as exc:
            self.log.error(f"cgi {process.label}: malformed header block: {exc.detail}")
            raise
        if isinstance(outcome, LocalRedirect):
            process.close()
            raise InternalRedirect(outcome.target, _redirect_variables(request))
        body, complete = process.collect(first, WHOLE_BODY_WAIT, WHOLE_BODY_LIMIT)
        if not complete:
            return Response(
                outcome.status, outcome.fields, body=body_iterator(process, body, outcome.length),
                length=outcome.length, cleanup=process.close,
            )
        if outcome.length is not None:
            if len(body) < outcome.length:
                self.log.error(f"cgi {process.label}: output ended before its Content-Length")
                raise MalformedOutput("output shorter than its Content-Length")
            body = body[: outcome.length]
        return Response(outcome.status, outcome.fields, body=body, cleanup=process.close)

    def _header_block(self, process: CgiProcess) -> tuple[bytes, bytes]:
        """(the header lines, the body bytes read along with them), within the script's timeout."""
        buffer = bytearray()
        deadline = process.deadline()
        while True:
            chunk = self._read(process, deadline)
            if not chunk:
                reason = "output ended inside the header block" if buffer else "no output"
                self.log.error(f"cgi {process.label}: {reason}")
                raise MalformedOutput(reason)
            resume = line_start(buffer, len(buffer))
            buffer += chunk
            end = find_end(buffer, resume)
            if end is not None:
                return bytes(buffer[: end[0]]), bytes(buffer[end[1]:])
            if len(buffer) > MAX_HEADER_BYTES:
                self.log.error(f"cgi {process.label}: no end of the header block in {MAX_HEADER_BYTES} bytes")
                raise MalformedOutput("header block too large")

    def _raw_response(self, process: CgiProcess) -> Response:
        first = self._read(process, process.deadline())
        if not first:
            self.log.error(f"cgi {process.label}: no output")
            raise MalformedOutput("no output")
        return Response(_raw_status(first), body=body_iterator(process, first, None), raw=True,
                        cleanup=process.close)

    def _read(self, process: CgiProcess, deadline: float) -> bytes:
        try:
            return process.read_output(deadline)
        except ScriptTimeout:
            self.log.error(f"cgi {process.label}: no header block within {self.cgi.timeout:g}s")
            raise


def _raw_status(first: bytes) -> int:
    """The status an nph script wrote in its status line, for the access log (200 if unreadable)."""
    parts = first.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:3].isdigit():
        return int(parts[1][:3])
    return 200


def _redirect_variables(request: Request) -> dict[str, str]:
    """What the target of a local redirect learns about the original request (Apache's names)."""
    extra = {
        "REDIRECT_STATUS": "200",
        "REDIRECT_URL": request.path,
        "REDIRECT_REQUEST_METHOD": request.method,
    }
    if request.query:
        extra["REDIRECT_QUERY_STRING"] = request.query
    return extra


def _document_root(config: Config, cgi_root: str) -> str:
    """DOCUMENT_ROOT: the static root that serves "/", else the first static root, else the CGI root."""
    statics = [route for route in config.routes if route.static is not None]
    for route in statics:
        if route.prefix == "/":
            return str(route.handler_config.root)
    return str(statics[0].handler_config.root) if statics else cgi_root
