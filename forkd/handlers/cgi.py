"""The CGI/1.1 handler (RFC 3875): a route whose requests run scripts under a root directory.

Per request: `prepare` finds the script before the body is read (so a 404 or 403 needs no body, and
`Expect: 100-continue` is answered only for a script that will run); `handle` returns a CgiExchange,
which the connection starts once the body is complete. The exchange lives in the worker's loop: it
spawns the script (forkd.handlers.cgi_process), registers its stdin, stdout and stderr with the
reactor and acts on their events, never waiting on any of them:

  - stdin: the request body is written as the pipe takes it, then closed (§4.2);
  - stderr: logged line by line, escaped, prefixed with the script;
  - stdout, first the header block (forkd.handlers.cgi_output), within cgi.timeout (a script busy
    reading its body is working, so each bit it takes moves that deadline). What it means (§6.2):
      - document: status from Status (default 200), the script's headers, the rest of stdout as body:
        whole (bytes, one write with Content-Length) when the output ends within WHOLE_BODY_WAIT of
        the header block, else streamed (Content-Length when the script gave one, else chunked on
        HTTP/1.1, close-delimited on 1.0);
      - local redirect (`Location: /path`, no Status): the script is stopped and the connection
        serves the new target as a GET with REDIRECT_* variables;
      - client redirect (any other Location): 302 unless Status says otherwise;
      - nph- scripts (§5.1): no parsing, the output is the response, written raw.
  - stdout, then the body: the exchange is the response's BodySource. The connection reads it only
    when the client can take more, so a slow client slows the script down (its pipe fills) instead of
    filling memory; when the pipe is empty the exchange arms stdout and wakes the connection when the
    script writes again. cgi.timeout bounds silence, not length: a script streaming for hours is
    fine as long as it keeps writing, and cgi.min_send_rate is asked of its client.

At most cgi.max_processes scripts of a route run per worker (counted until reaped). Up to cgi.queue
requests beyond them wait in line, in order, each started as a script is reaped (a burst slightly
above the limit is served, not refused); a request that waits cgi.timeout, or finds the line
full, is answered 503 with Retry-After. However the request ends, `close` hands the script to the
Reaper, which stops its whole process group without the worker waiting.

The script is located again right before it is started when the request had a body: an upload
takes time, and the path checked when the head arrived may have been swapped meanwhile (a symlink
to a program outside the root); what runs is what the check just accepted.

Not done, on purpose: §4.4's command-line "search words" for queries without "=" (Apache does it; it
made php-cgi option injection possible, CVE-2012-1823), and REMOTE_HOST lookups (the address stands in).
"""

from __future__ import annotations

import os
import time
from collections import deque

from forkd import SERVER_SOFTWARE
from forkd.config import CgiConfig, Config
from forkd.handlers.base import HandlerContext, InternalRedirect, Reply
from forkd.handlers.cgi_env import (
    Script,
    ServerFacts,
    base_environment,
    build_environ,
    fixed_environment,
    locate,
)
from forkd.handlers.cgi_output import (
    Document,
    LocalRedirect,
    MalformedOutput,
    take_head,
    whole_body,
)
from forkd.handlers.cgi_process import (
    CHUNK,
    OVERLOAD_ERRNOS,
    Reaper,
    StderrPipe,
    home_directory,
    seal_descriptors,
    spawn,
)
from forkd.handlers.paths import normalize, strip_prefix
from forkd.http.errors import BadGateway, GatewayTimeout, HTTPError, ServiceUnavailable
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.logs import ErrorLog, escape
from forkd.reactor import EPOLLIN, EPOLLONESHOT, EPOLLOUT, Timer
from forkd.routing import matches

# After the header block, how long (and for how many bytes) to wait for the end of the output, so
# that a short response is sent whole rather than streamed.
WHOLE_BODY_WAIT = 0.003
WHOLE_BODY_LIMIT = 65536
BUSY = [("Retry-After", "1")]

# Phases of an exchange: before the spawn, reading the header block, gathering a short body,
# streaming the body, answered (nothing more to read from stdout).
STARTING, HEADER, GATHER, STREAM, ANSWERED, QUEUED = range(6)
# stdout while the body streams: no interest until read() finds the pipe empty. One-shot, so the
# hang-up a pipe reports regardless of interest wakes the connection once, not in a loop.
DISARMED = EPOLLONESHOT


class ScriptTimeout(GatewayTimeout):
    """The script produced no output within its timeout."""


class ScriptFailed(BadGateway):
    """The script could not be started, or broke its output framing."""


class CgiHandler:
    """Runs the scripts below one route's root; built once per worker."""

    reads_body = True

    def __init__(self, prefix: str, cgi: CgiConfig, context: HandlerContext) -> None:
        config = context.config
        self.prefix = prefix
        self.cgi = cgi
        self.config = config
        self.log: ErrorLog = context.log
        self.reactor = context.reactor
        self.reaper = Reaper(context.reactor)
        self.root_real = os.path.realpath(cgi.root)
        self.facts = ServerFacts(
            software=SERVER_SOFTWARE if config.server_tokens else "forkd",
            document_root=_document_root(config, self.root_real),
            underscore_headers=cgi.underscore_headers,
        )
        self.fixed_env = fixed_environment(base_environment(cgi, os.environ), self.facts)
        # Scripts without a request body read /dev/null: one descriptor for all of them (O_CLOEXEC
        # here; the spawn dup2()s it onto the script's fd 0).
        self.stdin_null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # The worker's working directory, returned to after each spawn (scripts start in their own).
        self.home = home_directory()
        seal_descriptors()
        self.running = 0  # scripts started and not yet reaped
        self.waiting: deque[CgiExchange] = deque()  # requests waiting for a script slot
        self.refused_logged = 0.0

    # -- the Handler protocol --------------------------------------------------------------------
    def prepare(self, request: Request) -> None:
        request.prepared = self.locate(request)

    def handle(self, request: Request) -> CgiExchange:
        script = request.prepared
        if not isinstance(script, Script):
            script = self.locate(request)  # an internal redirect, or a caller that skipped prepare
        elif request.body is not None:
            script = self.locate(request)  # see the module docstring: check again, right now
        if self.running >= self.cgi.max_processes and len(self.waiting) >= self.cgi.queue:
            raise self.refusal(f"{self.running} scripts running (cgi.max_processes) and "
                               f"{len(self.waiting)} requests waiting (cgi.queue)")
        return CgiExchange(self, request, script)

    def refusal(self, why: str) -> ServiceUnavailable:
        """The 503 with Retry-After for `why`, logged once a second (not once per refusal)."""
        now = time.monotonic()
        if now - self.refused_logged >= 1.0:
            self.refused_logged = now
            self.log.warning(f"cgi {self.prefix}: {why}: answering 503")
        return ServiceUnavailable("too many scripts running", BUSY)

    def shutdown(self) -> None:
        self.reaper.shutdown()

    # -- helpers for exchanges -------------------------------------------------------------------
    def locate(self, request: Request) -> Script:
        rest = strip_prefix(normalize(request.path), self.prefix)
        return locate(self.root_real, self.prefix, rest, self.cgi.interpreters)

    def translate(self, path_info: str) -> str:
        """PATH_TRANSLATED (§4.1.6): PATH_INFO mapped to a file the way this server maps a URI path."""
        for route in self.config.routes:
            if matches(route.prefix, path_info) and hasattr(route.handler_config, "root"):
                root = str(route.handler_config.root)
                return root.rstrip("/") + strip_prefix(path_info, route.prefix)
        return self.facts.document_root.rstrip("/") + path_info

    def reaped(self) -> None:
        self.running -= 1
        now = time.monotonic()
        while self.waiting and self.running < self.cgi.max_processes:
            self.waiting.popleft().begin(now)  # a failure answers that request, and we go on

    @property
    def scripts_running(self) -> int:
        """For the scoreboard's forkd_cgi_processes gauge."""
        return self.running

    @property
    def requests_waiting(self) -> int:
        """For the scoreboard's forkd_requests_waiting gauge."""
        return len(self.waiting)


class CgiExchange:
    """One script run for one request; see the module docstring. All per-request state is here."""

    def __init__(self, handler: CgiHandler, request: Request, script: Script) -> None:
        self.handler = handler
        self.request = request
        self.script = script
        self.label = escape(os.fsencode(script.filename))
        self.timeout = handler.cgi.timeout
        self.phase = STARTING
        self.reply: Reply | None = None
        self.pid = 0
        self.stdin = self.stdout = -1
        self.stderr: StderrPipe | None = None
        self.body = request.body
        self.pending_input = memoryview(b"")
        self.output = bytearray()  # the header block so far, then the body gathered with it
        self.outcome: Document | None = None
        self.output_done = False
        self.timer: Timer | None = None
        self.closed = False

    # -- start -----------------------------------------------------------------------------------
    def start(self, reply: Reply, now: float) -> None:
        handler = self.handler
        self.reply = reply
        if handler.running >= handler.cgi.max_processes:  # wait for a script to be reaped
            handler.waiting.append(self)
            self.phase = QUEUED
            reply.set_deadline(now + self.timeout)
            return
        self._spawn(now)

    def begin(self, now: float) -> None:
        """A script slot is free: start the script of this waiting request (off the line)."""
        self.phase = STARTING
        try:
            self._spawn(now)
        except HTTPError as error:
            self._fail(error, now)

    def _spawn(self, now: float) -> None:
        handler = self.handler
        script = self.script
        reply = self.reply
        assert reply is not None
        translated = handler.translate(script.path_info) if script.path_info else None
        env = build_environ(self.request, script, handler.fixed_env, handler.facts, translated)
        try:
            self.pid, self.stdin, self.stdout, stderr = spawn(
                script.argv, env, script.directory,
                handler.stdin_null if self.body is None else -1, handler.home)
        except OSError as exc:
            handler.log.error(f"cgi {self.label}: cannot run: {exc.strerror or exc}")
            self.closed = True
            if exc.errno in OVERLOAD_ERRNOS:  # out of descriptors or processes: retry soon
                raise ServiceUnavailable(exc.strerror or "", BUSY) from None
            raise ScriptFailed(f"cannot run {self.label}") from None
        handler.running += 1
        self.phase = HEADER
        reactor = handler.reactor
        reactor.watch(self.stdout, EPOLLIN, self)
        self.stderr = StderrPipe(stderr, reactor, self._log_stderr)
        if self.stdin >= 0:
            self._feed()  # most bodies fit in the pipe at once
            if self.stdin >= 0:
                reactor.watch(self.stdin, EPOLLOUT, self)
        reply.set_deadline(now + self.timeout)

    # -- events ----------------------------------------------------------------------------------
    def on_event(self, fd: int, mask: int, now: float) -> None:
        if self.closed:
            return
        if fd == self.stdout:
            if self.phase == STREAM:
                assert self.reply is not None
                self.reply.resume(now)  # the one-shot registration is spent: read() re-arms it
            else:
                self._read_head_or_gather(now)
        elif fd == self.stdin:
            self._feed()
            if self.phase == HEADER:
                # Reading its body is work, not silence (a git push indexes its pack first).
                assert self.reply is not None
                self.reply.set_deadline(now + self.timeout)

    def on_timeout(self, now: float) -> None:
        if self.phase == QUEUED:
            self.handler.waiting.remove(self)
            self.phase = ANSWERED
            self._fail(self.handler.refusal(f"a request waited {self.timeout:g}s for a script "
                                            f"slot"), now)
            return
        if self.phase == STREAM:
            self.handler.log.error(f"cgi {self.label}: no output for {self.timeout:g}s, response cut")
        else:
            self.handler.log.error(f"cgi {self.label}: no header block within {self.timeout:g}s")
        self._fail(ScriptTimeout(f"{self.label}: no output within {self.timeout:g}s"), now)

    # -- stdout before the body streams ----------------------------------------------------------
    def _read_head_or_gather(self, now: float) -> None:
        while not self.closed and self.phase in (HEADER, GATHER):
            try:
                data = os.read(self.stdout, CHUNK)
            except BlockingIOError:
                return
            if not data:
                self._stdout_ended()
                self._output_ended(now)
                return
            if self.phase == HEADER:
                self._header_bytes(data, now)
            else:
                self.output += data
                if len(self.output) > WHOLE_BODY_LIMIT:
                    self._stream(now)

    def _header_bytes(self, data: bytes, now: float) -> None:
        if self.script.nph:  # §5.1: the output is the response; nothing to parse
            self.output += data
            self._respond(Response(_raw_status(data), body=self, raw=True, min_rate=self._rate()),
                          now, STREAM)
            return
        try:
            outcome = take_head(self.output, data)
        except MalformedOutput as exc:
            self._malformed(exc.detail, now)
            return
        if outcome is None:
            return  # the header block goes on
        if isinstance(outcome, LocalRedirect):
            assert self.reply is not None
            extra = _redirect_variables(self.request)
            self.close()
            self.reply.redirect(InternalRedirect(outcome.target, extra), now)
            return
        self.outcome = outcome
        self.phase = GATHER
        self.timer = self.handler.reactor.call_at(now + WHOLE_BODY_WAIT, self._stream)

    def _output_ended(self, now: float) -> None:
        """stdout closed: in HEADER a fault, in GATHER the whole body is here."""
        if self.phase == HEADER:
            if self.script.nph or not self.output:
                self._malformed("no output", now)
            else:
                self._malformed("output ended inside the header block", now)
            return
        outcome = self.outcome
        assert outcome is not None
        try:
            body = whole_body(outcome, self.output)
        except MalformedOutput as exc:
            self._malformed(exc.detail, now)
            return
        self.output = bytearray()
        self._respond(Response(outcome.status, outcome.fields, body=body), now, ANSWERED)

    def _stream(self, now: float) -> None:
        """The output goes on: answer now and stream the rest as the client takes it."""
        if self.phase != GATHER:
            return
        outcome = self.outcome
        assert outcome is not None
        self._respond(Response(outcome.status, outcome.fields, body=self, length=outcome.length,
                               min_rate=self._rate()), now, STREAM)

    def _respond(self, response: Response, now: float, phase: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = phase
        if phase == STREAM:
            self.handler.reactor.modify(self.stdout, DISARMED)
        assert self.reply is not None
        self.reply.respond(response, now)

    def _rate(self) -> int:
        return self.handler.cgi.min_send_rate

    def _malformed(self, reason: str, now: float) -> None:
        self.handler.log.error(f"cgi {self.label}: {reason}")
        self._fail(MalformedOutput(reason), now)

    def _fail(self, error: HTTPError, now: float) -> None:
        reply = self.reply
        self.close()
        assert reply is not None
        reply.fail(error, now)

    # -- stdout as the response body (BodySource) ------------------------------------------------
    def read(self) -> bytes | None:
        if self.output:
            data = bytes(self.output)
            self.output = bytearray()
            return data
        if self.output_done or self.closed:
            return None
        try:
            data = os.read(self.stdout, CHUNK)
        except BlockingIOError:
            self.handler.reactor.modify(self.stdout, EPOLLIN | EPOLLONESHOT)
            assert self.reply is not None
            self.reply.set_deadline(time.monotonic() + self.timeout)
            return b""
        if not data:
            self._stdout_ended()
            return None
        return data

    def _stdout_ended(self) -> None:
        self.output_done = True
        self.handler.reactor.unwatch(self.stdout)
        os.close(self.stdout)
        self.stdout = -1

    # -- stdin and the log -----------------------------------------------------------------------
    def _feed(self) -> None:
        """Write as much of the request body as the pipe takes; close stdin after the last byte."""
        assert self.body is not None
        while True:
            if not self.pending_input:
                data = self.body.read(CHUNK)
                if not data:
                    self._close_stdin()
                    return
                self.pending_input = memoryview(data)
            try:
                written = os.write(self.stdin, self.pending_input)
            except BlockingIOError:
                return
            except OSError:  # EPIPE: the script closed stdin or exited without reading it all
                self._close_stdin()
                return
            self.pending_input = self.pending_input[written:]

    def _close_stdin(self) -> None:
        if self.stdin >= 0:
            self.handler.reactor.unwatch(self.stdin)
            os.close(self.stdin)
            self.stdin = -1
            self.pending_input = memoryview(b"")

    def _log_stderr(self, line: bytes) -> None:
        self.handler.log.error(f"cgi {self.label}: {escape(line)}")

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """The request is over: release the pipes and hand the script to the reaper. Idempotent."""
        if self.phase == QUEUED:
            self.handler.waiting.remove(self)
            self.phase = ANSWERED
        if self.closed or self.pid == 0:
            self.closed = True
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        reactor = self.handler.reactor
        self._close_stdin()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None  # it holds our bound method: no cycle left for the collector
        if self.stdout >= 0:
            reactor.unwatch(self.stdout)
            os.close(self.stdout)
            self.stdout = -1
        self.handler.reaper.stop(self.pid, self.output_done, self.handler.reaped, time.monotonic())


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
    statics = [(route.prefix, route.static) for route in config.routes if route.static is not None]
    for prefix, static in statics:
        if prefix == "/":
            return str(static.root)
    return str(statics[0][1].root) if statics else cgi_root
