"""WebSocket routes: one program per connection, its stdin and stdout as the messages (websocketd).

Theory of operation
-------------------
`prepare` checks the opening handshake (forkd.http.websocket.check_handshake: 426, 405 or 400)
and the Origin (403: a page of another site must not open a socket in its visitor's name,
"cross-site WebSocket hijacking"). With `origins` configured, the Origin must be one of them
("*" allows any); without, it must name the Host the request was sent to (same-origin); clients
that send no Origin (not browsers) are let in. `handle` refuses with 503 when `max_processes`
programs of the route already run in this worker, else returns a WebSocketExchange.

The exchange starts the program like a CGI script (forkd.handlers.cgi_process.spawn: its own
process group, the CGI environment of the handshake request, the config file's directory as
working directory), then asks the connection to switch protocols (reply.upgrade): the 101 and
every byte after it go through the exchange, which is the connection's Tunnel from then on.

  client ──frames──▶ FrameParser ──messages──▶ `to_program` ──▶ program's stdin
  client ◀──frames── `out` ◀──messages── lines of stdout ◀── program's stdout

- Text mode (the default): each message the client sends is written to stdin followed by "\n";
  each line the program writes becomes a text message (without its "\n"; bytes that are not UTF-8
  are replaced, a line longer than max_message is cut). Binary mode: messages go to stdin as they
  are, and whatever stdout gives (a read of up to 64 KiB) becomes one binary message.
- Back-pressure, both ways, with bounded buffers: when HIGH_WATER bytes wait for the program's
  stdin, the socket is no longer read (the client's TCP window closes); when HIGH_WATER bytes wait
  for the client, stdout is no longer read (the program blocks on its full pipe).
- Liveness: a client silent for ping_interval is pinged; silent for another ping_interval, it is
  dropped (anything it sends counts as an answer, not only the pong).
- Endings. The program exits (its stdout ends, then its exit is awaited through a pidfd): the
  rest of its output is sent, then a close frame, 1000 for exit status 0 and 1011 otherwise. The
  client sends a close frame: it is answered, and the program is stopped (stdin closed, then TERM
  and KILL of its group by the Reaper, in the background of the loop). A protocol violation: a
  close frame with its code (1002, 1007, 1009) and the program stopped. After our close frame the
  client has CLOSE_TIMEOUT to answer; then the connection closes (lingering, so a client still
  sending does not get a reset that destroys the close frame). A worker that stops (a TERM, or a
  reload's old generation) lets WebSockets run while timeouts.graceful lasts, then, shortly
  before it runs out, calls going_away: a 1001 close frame and the program stopped. The
  connection ends any other way (client gone, fast stop): close() stops the program and, if the
  socket can still take it, sends a 1001 close frame.
"""

from __future__ import annotations

import os
import time

from forkd import SERVER_SOFTWARE
from forkd.config import WebSocketConfig
from forkd.handlers.base import HandlerContext, Link, Reply
from forkd.handlers.cgi_env import (
    DEFAULT_PATH,
    Script,
    ServerFacts,
    build_environ,
    fixed_environment,
    split_host,
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
from forkd.http.errors import BadGateway, Forbidden, ServiceUnavailable
from forkd.http.request import Request
from forkd.http.websocket import (
    BINARY,
    CLOSE,
    GOING_AWAY,
    INTERNAL,
    NORMAL,
    PING,
    PONG,
    TEXT,
    FrameParser,
    accept_key,
    check_handshake,
    close_payload,
    encode,
)
from forkd.logs import escape
from forkd.reactor import EPOLLIN, EPOLLONESHOT, EPOLLOUT

HIGH_WATER = 256 * 1024  # bytes queued for the client or for the program before the other side waits
CLOSE_TIMEOUT = 5.0  # seconds the client has to answer our close frame
EXIT_TIMEOUT = 5.0  # seconds a program has to exit once its stdout is closed
BUSY = [("Retry-After", "1")]
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}

# Phases of an exchange: messages flow; closing (our close frame is queued: the client's close
# frame, the end of its input or CLOSE_TIMEOUT ends it); ended (the connection is told).
OPEN, CLOSING, ENDED = range(3)


class WebSocketHandler:
    """Runs one route's program per WebSocket connection; built once per worker."""

    def __init__(self, prefix: str, settings: WebSocketConfig, context: HandlerContext) -> None:
        config = context.config
        self.prefix = prefix
        self.settings = settings
        self.log = context.log
        self.reactor = context.reactor
        self.reaper = Reaper(context.reactor)
        self.directory = str(config.source.parent) if config.source else os.getcwd()
        self.facts = ServerFacts(
            software=SERVER_SOFTWARE if config.server_tokens else "forkd",
            document_root=self.directory,
            underscore_headers=False,
        )
        path = os.fsencode(os.environ.get("PATH", DEFAULT_PATH))
        self.fixed_env = fixed_environment({b"PATH": path}, self.facts)
        self.label = escape(os.fsencode(settings.command[0]))
        self.origins = None if settings.origins is None else {
            _origin(origin) for origin in settings.origins}
        self.home = home_directory()
        seal_descriptors()
        self.running = 0  # programs started and not yet reaped
        self.refused_logged = 0.0

    # -- the Handler protocol --------------------------------------------------------------------
    def prepare(self, request: Request) -> None:
        request.prepared = check_handshake(request)
        self.check_origin(request)

    def handle(self, request: Request) -> WebSocketExchange:
        key = request.prepared
        if not isinstance(key, str):  # an internal redirect skipped prepare
            self.prepare(request)
            key = request.prepared
        if self.running >= self.settings.max_processes:
            now = time.monotonic()
            if now - self.refused_logged >= 1.0:  # one line a second, not one per refusal
                self.refused_logged = now
                self.log.warning(f"websocket {self.prefix}: {self.running} programs running "
                                 f"(websocket.max_processes): answering 503")
            raise ServiceUnavailable("too many WebSocket programs running", BUSY)
        return WebSocketExchange(self, request, key)

    def shutdown(self) -> None:
        self.reaper.shutdown()

    def check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is None:
            return  # not a browser: Origin protects browsers' users, other clients can lie
        if self.origins is not None:
            if "*" in self.origins or _origin(origin) in self.origins:
                return
        elif _same_origin(origin, request.host):
            return
        raise Forbidden("this WebSocket does not accept connections from that Origin")

    def reaped(self) -> None:
        self.running -= 1


def _origin(text: str) -> str:
    """An origin in one spelling: lower case, no trailing slash, no default port."""
    text = text.strip().lower().rstrip("/")
    scheme, sep, authority = text.partition("://")
    host, port = split_host(authority)
    if sep and port and DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return text


def _same_origin(origin: str, host_header: str) -> bool:
    """Origin names the host the request was sent to (and its port, when the Host gives one)."""
    scheme, sep, authority = origin.strip().lower().partition("://")
    if not sep:
        return False  # "null" and other opaque origins
    origin_host, origin_port = split_host(authority.rstrip("/"))
    host, port = split_host(host_header.lower().rstrip("."))
    if not host or origin_host != host:
        return False
    return not port or port == (origin_port or DEFAULT_PORTS.get(scheme, 0))


class WebSocketExchange:
    """One connection's program and its messages; see the module docstring."""

    def __init__(self, handler: WebSocketHandler, request: Request, key: str) -> None:
        self.handler = handler
        self.request = request
        self.key = key
        settings = handler.settings
        self.binary = settings.binary
        self.interval = settings.ping_interval
        self.max_message = settings.max_message
        self.parser = FrameParser(settings.max_message)
        self.link: Link | None = None
        self.phase = OPEN
        self.ending = False  # end the connection once `out` is sent
        self.out = bytearray()  # frames for the client
        self.to_program = bytearray()  # bytes for the program's stdin
        self.lines = bytearray()  # stdout not yet a whole line (text mode)
        self.pid = 0
        self.stdin = self.stdout = self.pidfd = -1
        self.stderr: StderrPipe | None = None
        self.stdin_watched = False
        self.stdout_paused = False
        self.stopped = False  # the program was handed to the reaper
        self.last_heard = 0.0
        self.ping_sent = 0.0
        self.close_by = 0.0  # CLOSING: when we stop waiting for the client's close frame
        self.exit_by = 0.0  # stdout ended: when we stop waiting for the program to exit
        self.closed = False

    # -- start: the program, then the 101 ----------------------------------------------------------
    def start(self, reply: Reply, now: float) -> None:
        handler = self.handler
        command = handler.settings.command
        rest = strip_prefix(normalize(self.request.path), handler.prefix)
        script = Script(command[0], handler.prefix.rstrip("/"), rest if rest != "/" else "",
                        command)
        env = build_environ(self.request, script, handler.fixed_env, handler.facts, None)
        try:
            self.pid, self.stdin, self.stdout, stderr = spawn(
                command, env, handler.directory, -1, handler.home)
        except OSError as exc:
            handler.log.error(f"websocket {handler.label}: cannot run: {exc.strerror or exc}")
            self.closed = True
            if exc.errno in OVERLOAD_ERRNOS:
                raise ServiceUnavailable(exc.strerror or "", BUSY) from None
            raise BadGateway(f"cannot run {handler.label}") from None
        handler.running += 1
        handler.reactor.watch(self.stdout, EPOLLIN, self)
        self.stderr = StderrPipe(stderr, handler.reactor, self._log_stderr)
        headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", accept_key(self.key))]
        reply.upgrade(headers, self, now)

    def on_timeout(self, now: float) -> None:
        if self.closed:
            return
        if self.phase == CLOSING:
            if now >= self.close_by:
                self._end(now)  # no close frame from the client in time
                return
        elif len(self.to_program) >= HIGH_WATER:
            self.last_heard = now  # the socket is not read (a slow program): not the client's fault
            self.ping_sent = 0.0
        elif self.exit_by and now >= self.exit_by:
            self.handler.log.error(f"websocket {self.handler.label}: stdout closed but the "
                                   f"program did not exit within {EXIT_TIMEOUT:g}s")
            self._stop_program(now)
            self._close(INTERNAL, "program did not exit", now)
            return
        elif self.ping_sent and self.last_heard < self.ping_sent:
            if now >= self.ping_sent + self.interval:
                self.handler.log.debug(f"websocket {self.handler.label}: no answer to a ping")
                self._end(now)  # the client is gone without a word: no close handshake
                return
        elif now >= self.last_heard + self.interval:
            self.ping_sent = now
            self.out += encode(PING, b"forkd")
            self._flush(now)
        else:
            self.ping_sent = 0.0  # it answered (or spoke): back to watching silence
        self._schedule()

    def _schedule(self) -> None:
        """The connection's deadline: the next thing that must happen if nothing else does."""
        if self.closed or self.link is None:
            return
        if self.phase == CLOSING:
            when = self.close_by
        elif self.ping_sent and self.last_heard < self.ping_sent:
            when = self.ping_sent + self.interval
        else:
            when = self.last_heard + self.interval
        if self.exit_by and self.phase == OPEN:
            when = min(when, self.exit_by)
        self.link.set_deadline(when)

    # -- the Tunnel protocol: the client's side ------------------------------------------------------
    def attach(self, link: Link, head: bytes, buffered: bytes, now: float) -> None:
        self.link = link
        self.last_heard = now
        self.out += head
        self._schedule()
        self._flush(now)
        if buffered and not self.closed:
            self.received(buffered, now)

    def received(self, data: bytes, now: float) -> None:
        if self.closed:
            return
        self.last_heard = now
        parser = self.parser
        for opcode, payload in parser.feed(data):
            if opcode == TEXT or opcode == BINARY:
                if self.phase == OPEN:
                    self._to_program(payload)
            elif opcode == PING:
                if self.phase == OPEN:
                    self.out += encode(PONG, payload)
            elif opcode == CLOSE:
                self._client_closed(payload, now)
                break
        error = parser.error
        if error is not None and not self.ending:
            self.handler.log.debug(f"websocket {self.handler.label}: {error.reason}")
            self._stop_program(now)
            self._close(error.code, error.reason, now)
            self.ending = True  # a broken stream: no close frame can be read from it anymore
        self._feed_program()
        self._flush(now)

    def writable(self, now: float) -> None:
        if not self.closed:
            self._flush(now)

    def peer_closed(self, now: float) -> None:
        if not self.closed:
            self._stop_program(now)
            self._end(now)

    def going_away(self, now: float) -> None:
        if not self.closed:
            self._stop_program(now)
            self._close(GOING_AWAY, "server stopping", now)

    def _client_closed(self, payload: bytes, now: float) -> None:
        """The client's close frame: answer it (echoing its code), stop the program, end."""
        if self.phase == OPEN:
            self.out += encode(CLOSE, payload[:2])
            self.phase = CLOSING
            self.close_by = now + CLOSE_TIMEOUT  # for sending our answer, should it be stuck
        self._stop_program(now)
        self.ending = True

    def _close(self, code: int, reason: str, now: float) -> None:
        """Start the closing handshake from our side (once)."""
        if self.phase != OPEN:
            return
        self.phase = CLOSING
        self.close_by = now + CLOSE_TIMEOUT
        self.out += encode(CLOSE, close_payload(code, reason))
        self._flush(now)
        self._schedule()

    def _flush(self, now: float) -> None:
        """Send what the socket takes; pause or resume stdout and reading; end when done."""
        out = self.out
        link = self.link
        if link is None or self.closed:
            return
        while out:
            try:
                sent = link.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._stop_program(now)
                self._end(now)  # the client is gone
                return
            link.written += sent
            del out[:sent]
        if self.ending and not out:
            self._end(now)
            return
        if self.stdout_paused and len(out) < HIGH_WATER and self.stdout >= 0:
            self.stdout_paused = False
            self.handler.reactor.modify(self.stdout, EPOLLIN)
        reading = len(self.to_program) < HIGH_WATER
        link.want((EPOLLIN if reading else 0) | (EPOLLOUT if out else 0))

    def _end(self, now: float) -> None:
        if self.closed or self.phase == ENDED:
            return
        self.phase = ENDED
        if self.link is not None:
            self.link.end_tunnel(now)  # calls close() through the connection's cleanup
        else:
            self.close()

    # -- the program's side --------------------------------------------------------------------------
    def on_event(self, fd: int, mask: int, now: float) -> None:
        if self.closed:
            return
        if fd == self.stdout:
            if not self.stdout_paused:
                self._read_stdout(now)
        elif fd == self.stdin:
            self._feed_program()
            self._flush(now)  # reading the socket may resume
        elif fd == self.pidfd:
            self._exited(now)

    def _to_program(self, payload: bytes) -> None:
        if self.stdin < 0:
            return  # the program closed its stdin or is gone: nobody reads messages any more
        self.to_program += payload
        if not self.binary:
            self.to_program += b"\n"

    def _feed_program(self) -> None:
        """Write to stdin what the pipe takes; wait for EPOLLOUT only while some is left."""
        pending = self.to_program
        if self.stdin < 0:
            pending.clear()
            return
        reactor = self.handler.reactor
        while pending:
            try:
                written = os.write(self.stdin, pending)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: the program closed stdin or exited
                self._close_stdin()
                return
            del pending[:written]
        if pending and not self.stdin_watched:
            reactor.watch(self.stdin, EPOLLOUT, self)
            self.stdin_watched = True
        elif not pending and self.stdin_watched:
            reactor.unwatch(self.stdin)
            self.stdin_watched = False

    def _read_stdout(self, now: float) -> None:
        while len(self.out) < HIGH_WATER:
            try:
                data = os.read(self.stdout, CHUNK)
            except BlockingIOError:
                break
            if not data:
                self._stdout_ended(now)
                break
            if self.binary:
                self.out += encode(BINARY, data)
            else:
                self._lines(data)
        else:  # the client is slow: leave the rest in the pipe until it catches up
            self.stdout_paused = True
            self.handler.reactor.modify(self.stdout, EPOLLONESHOT)  # no events, one hang-up
        self._flush(now)

    def _lines(self, data: bytes) -> None:
        """Each whole line of stdout is a text message."""
        pending = self.lines
        pending += data
        if b"\n" in data:
            *lines, rest = pending.split(b"\n")
            pending[:] = rest
            for line in lines:
                self.out += encode(TEXT, _text(bytes(line.rstrip(b"\r"))))
        while len(pending) > self.max_message:  # a line longer than a message may be: cut it
            cut = self.max_message
            while cut and pending[cut] & 0xC0 == 0x80:
                cut -= 1  # not inside a UTF-8 sequence
            self.out += encode(TEXT, _text(bytes(pending[:cut])))
            del pending[:cut]

    def _stdout_ended(self, now: float) -> None:
        """The program closed stdout: send what is left, then wait for its exit status."""
        reactor = self.handler.reactor
        reactor.unwatch(self.stdout)
        os.close(self.stdout)
        self.stdout = -1
        if self.lines:
            self.out += encode(TEXT, _text(bytes(self.lines)))
            self.lines.clear()
        if self.stopped:
            return
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:
            self._exited(now)  # no pidfd: ask now (waitid below), the reaper does the rest
            return
        reactor.watch(self.pidfd, EPOLLIN, self)
        self.exit_by = now + EXIT_TIMEOUT
        self._exited(now)  # it may have exited already

    def _exited(self, now: float) -> None:
        """If the program has exited: close with 1000 (status 0) or 1011 (anything else)."""
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is None and self.pidfd >= 0:
            self._schedule()
            return  # still running: the pidfd will say when it exits
        success = info is not None and info.si_code == os.CLD_EXITED and info.si_status == 0
        if info is not None and not success:
            what = ("exit status" if info.si_code == os.CLD_EXITED else "signal")
            self.handler.log.info(f"websocket {self.handler.label}: program ended "
                                  f"({what} {info.si_status})")
        self.exit_by = 0.0
        self._stop_program(now)
        self._close(NORMAL if success else INTERNAL, "" if success else "program failed", now)

    def _log_stderr(self, line: bytes) -> None:
        self.handler.log.error(f"websocket {self.handler.label}: {escape(line)}")

    def _close_stdin(self) -> None:
        if self.stdin >= 0:
            if self.stdin_watched:
                self.handler.reactor.unwatch(self.stdin)
                self.stdin_watched = False
            os.close(self.stdin)
            self.stdin = -1
        self.to_program.clear()

    def _stop_program(self, now: float) -> None:
        """Release the program's pipes and hand it to the reaper (stdin EOF, TERM, KILL). Once."""
        if self.stopped or self.pid == 0:
            return
        self.stopped = True
        reactor = self.handler.reactor
        self._close_stdin()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None  # it holds our bound method: no cycle left for the collector
        for fd in (self.stdout, self.pidfd):
            if fd >= 0:
                reactor.unwatch(fd)
                os.close(fd)
        self.stdout = self.pidfd = -1
        self.handler.reaper.stop(self.pid, True, self.handler.reaped, now)

    # -- the end -----------------------------------------------------------------------------------
    def close(self) -> None:
        """The connection is over, however it ended: stop the program; 1001 if still open."""
        if self.closed:
            return
        self.closed = True
        link = self.link
        if link is not None and self.phase == OPEN:
            goodbye = bytes(self.out) + encode(CLOSE, close_payload(GOING_AWAY, "server stopping"))
            try:
                link.written += link.send(goodbye)  # best effort: the socket closes next
            except OSError:
                pass
        self.phase = ENDED
        self._stop_program(time.monotonic())


def _text(line: bytes) -> bytes:
    """A line as a text message's payload: UTF-8, with anything else replaced."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace").encode("utf-8")
    return line
