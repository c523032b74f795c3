"""The FastCGI route: PHP (or any FastCGI responder) through php-fpm, from the worker's loop.

Per request: `prepare` selects the script or the file before the body is read
(forkd.handlers.fastcgi_script: no regular expression, no guessing); a file of the route that is
not a script is answered by the route's own StaticHandler (conditional requests, ranges, sendfile),
so one route does what `try_files $uri $uri/ /index.php` does elsewhere. A script gets a
FastCgiExchange, which the connection starts once the request body is complete.

The exchange is a FastCGI client living in the worker's reactor. By default a connection carries
one request (the BEGIN_REQUEST asks php-fpm to close it when done), so many requests of a worker
are simply many sockets. With `connections: N` the route's requests share at most N kept
connections per worker, one request at a time each, and the others wait in line in the worker
(forkd.handlers.fastcgi_pool, which says what that saves and what it costs).

  - connect, non-blocking. A unix socket whose backlog is full answers EAGAIN at once: php-fpm is
    busy, not broken, so the client gets 503 with Retry-After (and the next request tries again).
    Refused or missing (php-fpm down): 502 at once. A TCP connect in progress waits for EPOLLOUT.
  - out: BEGIN_REQUEST, the PARAMS stream, then the request body as STDIN records, written as the
    socket takes them (a big upload never sits in memory twice).
  - in: records (forkd.handlers.fastcgi_records). STDERR lines go to the error log, escaped
    (forkd.logs.escape), prefixed with the script; never into the response. STDOUT is a CGI
    response (RFC 3875 §6), parsed by forkd.handlers.cgi_output as for CGI: Status, Location (local
    redirects served internally), several Set-Cookie kept. END_REQUEST ends the output; an empty
    STDOUT record ends nothing by itself. An OVERLOADED protocol status is a 503, any other
    failure to speak FastCGI a 502.
  - the body: gathered for WHOLE_BODY_WAIT and sent whole when it ends that soon, else streamed.
    While it streams the exchange is the response's BodySource: the socket is read only when the
    client can take more, so a slow client slows php-fpm down (its socket buffer fills) instead of
    filling the worker's memory. `flush()` in PHP reaches the client as it happens.
  - silence: `timeout` bounds every wait for php-fpm (the connect, the header block, each piece of
    output); past it the answer is 504, or a cut response once it has started.
  - a connection per request is half-closed once the whole request is sent (`half_close`, on by
    default): php-fpm answers, shuts down its side, then reads until the end of its input before
    it closes and accepts again, and that end now comes at once instead of with forkd's close,
    which a busy worker makes later. (A responder that takes the end of its input for the end of
    the connection, as Go's net/http/fcgi does, answers nothing and needs `half_close: false`;
    the error log says so. fcgiwrap is content with the half-close, as php-fpm is.)
  - the end, however it comes (answered, client gone, timed out): `close` closes the socket. That
    is the abort: a php-fpm child reads its connection only when the script asks for input, so an
    FCGI_ABORT_REQUEST record would wait unread, while a closed connection makes the script's next
    output fail, and PHP then stops it (unless the script asked for ignore_user_abort). A kept
    connection goes back to its pool instead, but only after a clean END_REQUEST with nothing
    left unread or unsent.

The socket is registered for what the exchange wants next (input while it reads, output while it
has something to write), changed only when that changes. While it does not read (the client is
slow to take the body) the registration is EPOLLONESHOT: a peer that hung up is then reported
once, not in a loop, and the socket re-armed when the exchange reads again.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import time

from forkd import SERVER_SOFTWARE
from forkd.config import FastCgiConfig, StaticConfig, parse_listen
from forkd.handlers import fastcgi_records as fcgi
from forkd.handlers.base import HandlerContext, InternalRedirect, Reply
from forkd.handlers.cgi import WHOLE_BODY_LIMIT, WHOLE_BODY_WAIT
from forkd.handlers.cgi_env import Script
from forkd.handlers.cgi_output import (
    Document,
    LocalRedirect,
    MalformedOutput,
    take_head,
    whole_body,
)
from forkd.handlers.cgi_process import CHUNK, StderrLines
from forkd.handlers.fastcgi_pool import ConnectionPool
from forkd.handlers.fastcgi_script import STATIC, Params, Selector
from forkd.handlers.static import StaticHandler
from forkd.http.errors import BadGateway, GatewayTimeout, HTTPError, ServiceUnavailable
from forkd.http.request import Request
from forkd.http.response import Response
from forkd.logs import ErrorLog, escape
from forkd.reactor import EPOLLIN, EPOLLONESHOT, EPOLLOUT, Timer

BUSY = [("Retry-After", "1")]
REQUEST_ID = 1  # one request per connection
# Phases of an exchange: connecting, reading the header block, gathering a short body, streaming
# the body, answered; waiting in line for a kept connection.
CONNECTING, HEADER, GATHER, STREAM, ANSWERED, QUEUED = range(6)
# connect() errors that mean "busy, try again soon" rather than "broken": a full unix backlog, no
# descriptors or memory left here.
BUSY_ERRNOS = frozenset({errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
DISARMED = EPOLLONESHOT  # registered, reporting nothing (until re-armed)


class FastCgiBusy(ServiceUnavailable):
    """php-fpm's listen queue is full, or it said it is overloaded."""


class FastCgiFailed(BadGateway):
    """php-fpm could not be reached, or broke the protocol."""


class FastCgiTimeout(GatewayTimeout):
    """php-fpm stayed silent longer than fastcgi.timeout."""


class FastCgiHandler:
    """The scripts and files of one fastcgi route; built once per worker."""

    reads_body = True

    def __init__(self, prefix: str, settings: FastCgiConfig, context: HandlerContext) -> None:
        config = context.config
        self.prefix = prefix
        self.settings = settings
        self.log = context.log
        self.reactor = context.reactor
        self.selector = Selector(prefix, settings)
        software = SERVER_SOFTWARE if config.server_tokens else "forkd"
        self.params = Params(settings, software, self.selector.root_real)
        # The route's other files, served as a static route of the same root would serve them;
        # index names that are not scripts (index.html) are the static handler's.
        static_index = tuple(name for name in settings.index
                             if not self.selector.is_script_name(name))
        self.static = StaticHandler(prefix, StaticConfig(root=settings.root, index=static_index),
                                    context)
        address = parse_listen(settings.connect)
        assert not isinstance(address, str)  # validated by forkd.config
        self.family = socket.AF_UNIX
        self.address: str | tuple[str, int] = address.path
        if address.family != "unix":
            self.family = socket.AF_INET6 if address.family == "inet6" else socket.AF_INET
            self.address = (address.host, address.port)
        self.logged = 0.0  # when a connect failure was last logged (one line a second)
        self.pool = (ConnectionPool(settings.connections, self.reactor) if settings.connections
                     else None)
        # Every request starts with the same record: keep the connection, or not.
        self.begin = fcgi.begin_request(REQUEST_ID, keep_connection=self.pool is not None)
        self.half_close = settings.half_close and self.pool is None

    # -- the Handler protocol --------------------------------------------------------------------
    def prepare(self, request: Request) -> None:
        target = self.selector.select(request.path)
        request.prepared = target
        if target is STATIC:
            self.static.prepare(request)

    def handle(self, request: Request) -> Response | FastCgiExchange:
        target = request.prepared
        if target is None or request.body is not None:
            # An internal redirect skipped prepare; an upload took time, and the path checked
            # when the head arrived may have changed meanwhile: what runs is what is checked now.
            target = self.selector.select(request.path)
        if isinstance(target, Script):
            return FastCgiExchange(self, request, target)
        return self.static.handle(request)

    @property
    def requests_waiting(self) -> int:
        """For the scoreboard's forkd_requests_waiting gauge."""
        return len(self.pool.waiting) if self.pool is not None else 0

    def quiesce(self) -> None:
        """The worker retires: kept connections are closed as they become idle."""
        if self.pool is not None:
            self.pool.retire()

    # -- helpers for exchanges -------------------------------------------------------------------
    def connect_failed(self, code: int, label: str) -> HTTPError:
        """The error for a failed connect(), logged at most once a second."""
        reason = os.strerror(code)
        busy = code in BUSY_ERRNOS
        now = time.monotonic()
        if now - self.logged >= 1.0:
            self.logged = now
            what = "busy (listen queue full)" if code == errno.EAGAIN else reason
            message = f"fastcgi {self.settings.connect}: {what}, answering {503 if busy else 502}"
            if busy:
                self.log.warning(message)
            else:
                self.log.error(message)
        if busy:
            return FastCgiBusy(reason, BUSY)
        return FastCgiFailed(f"cannot connect to {self.settings.connect}")


class FastCgiExchange:
    """One script run through php-fpm for one request; see the module docstring."""

    def __init__(self, handler: FastCgiHandler, request: Request, script: Script) -> None:
        self.handler = handler
        self.request = request
        self.script = script
        self.timeout = handler.settings.timeout
        self.phase = CONNECTING
        self.reply: Reply | None = None
        self.sock: socket.socket | None = None
        self.fd = -1
        self.armed = 0
        self.pending = bytearray()  # records not yet written
        self.body = request.body
        self.input_done = False  # the STDIN stream is ended (or php-fpm stopped reading it)
        self.reader = fcgi.RecordReader()
        self.output = bytearray()  # the header block so far, then body bytes not yet taken
        self.outcome: Document | None = None
        self.output_done = False  # END_REQUEST received
        self.waiting = False  # the connection waits for body bytes (streaming)
        self.broken = False  # the connection to php-fpm ended without END_REQUEST mid-stream
        self.timer: Timer | None = None
        self.closed = False
        self.pooled = False  # holds a place in the handler's pool
        self.reused = False  # on a kept connection, which php-fpm may have closed meanwhile
        self.received = False  # a byte came from php-fpm on this connection
        self.body_started = False  # some of the request body was read (it cannot be sent again)
        self.reusable = False  # ended cleanly on a kept connection: give it back
        self.records = b""  # BEGIN_REQUEST and PARAMS (and the end of STDIN): to send again
        self.errors: StderrLines | None = None  # from the first STDERR record on

    @property
    def label(self) -> str:
        """The script, as the error log names it."""
        return escape(os.fsencode(self.script.filename))

    def _stderr(self, data: bytes) -> None:
        if self.errors is None:
            # Not a bound method of self: that would make the exchange a reference cycle, freed
            # only by the garbage collector instead of at once.
            self.errors = StderrLines(functools.partial(_log_stderr, self.handler.log, self.label))
        self.errors.feed(data)

    # -- start -----------------------------------------------------------------------------------
    def start(self, reply: Reply, now: float) -> None:
        handler = self.handler
        self.reply = reply
        pool = handler.pool
        self.pending = bytearray(
            handler.begin + handler.params.record(REQUEST_ID, self.request, self.script))
        if self.body is None:
            self._end_input()
        reply.set_deadline(now + self.timeout)
        if pool is None:
            error = self._open(now)
            if error is not None:
                self.closed = True
                raise error
            return
        self.records = bytes(self.pending)
        if not pool.take(self, now):
            self.phase = QUEUED

    def _open(self, now: float) -> HTTPError | None:
        """Open a new connection and start sending; the error to answer when that fails."""
        handler = self.handler
        try:
            sock = socket.socket(handler.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            return handler.connect_failed(exc.errno or errno.EMFILE, self.label)
        code = sock.connect_ex(handler.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return handler.connect_failed(code, self.label)
        self.sock, self.fd = sock, sock.fileno()
        self.phase = CONNECTING
        if code == 0:
            self.phase = HEADER
            self._send(now)
        self.armed = self._wanted()
        handler.reactor.watch(self.fd, self.armed, self)
        return None

    # -- the pool's side (forkd.handlers.fastcgi_pool) --------------------------------------------
    def connect(self, now: float) -> None:
        """A new kept connection for this request (it holds a place in the pool from now on)."""
        self.pooled = True
        self._set_deadline(now)
        error = self._open(now)
        if error is not None:
            self._fail(error, now)

    def attach(self, sock: socket.socket, armed: int, now: float) -> bool:
        """Send this request on a kept connection registered for `armed` events; False (socket
        closed) if php-fpm closed it."""
        try:
            sent = sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # EPIPE, ECONNRESET: php-fpm closed it while it was idle
            self.handler.reactor.unwatch(sock.fileno())
            sock.close()
            return False
        del self.pending[:sent]
        self.sock, self.fd = sock, sock.fileno()
        self.pooled = self.reused = True
        self._set_deadline(now)
        self.phase = HEADER
        if self.pending or not self.input_done:
            self._send(now)
        self.handler.reactor.rebind(self.fd, self)
        self.armed = armed
        self._arm()  # no epoll_ctl when it wants what the connection's last owner wanted
        return True

    def _set_deadline(self, now: float) -> None:
        if self.phase == QUEUED:  # the wait in line is over: php-fpm's own time begins
            assert self.reply is not None
            self.reply.set_deadline(now + self.timeout)

    def _retry(self, now: float) -> None:
        """A kept connection ended before any answer: send the request again on a new one."""
        assert self.sock is not None
        self.handler.reactor.unwatch(self.fd)
        self.sock.close()
        self.sock, self.reused = None, False  # a new connection: no second retry
        self.pending = bytearray(self.records)
        self.input_done = self.body is None
        self.reader = fcgi.RecordReader()
        error = self._open(now)
        if error is not None:
            self._fail(error, now)

    # -- events ----------------------------------------------------------------------------------
    def on_event(self, fd: int, mask: int, now: float) -> None:
        if self.armed & EPOLLONESHOT:
            self.armed = DISARMED  # this report disarmed the registration
        if self.closed:
            return
        if self.phase == CONNECTING:
            assert self.sock is not None
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._fail(self.handler.connect_failed(code, self.label), now)
                return
            self.phase = HEADER
        if self.pending or not self.input_done:
            self._send(now)
        if self.closed:
            return
        if self.phase == STREAM:
            if self.waiting and mask & ~EPOLLOUT:
                self.waiting = False
                assert self.reply is not None
                self.reply.resume(now)  # the connection calls read()
        elif self.phase in (HEADER, GATHER):
            self._receive(now)
        self._arm()

    def on_timeout(self, now: float) -> None:
        if self.phase == QUEUED:
            self.handler.log.error(f"fastcgi {self.label}: no kept connection free for "
                                   f"{self.timeout:g}s, answering 504")
            self._fail(FastCgiTimeout(f"no connection within {self.timeout:g}s"), now)
            return
        what = "response cut" if self.phase == STREAM else "answering 504"
        self.handler.log.error(f"fastcgi {self.label}: php-fpm silent for {self.timeout:g}s, {what}")
        self._fail(FastCgiTimeout(f"no answer within {self.timeout:g}s"), now)

    def _wanted(self) -> int:
        mask = 0
        if self.phase == CONNECTING or self.pending or not self.input_done:
            mask |= EPOLLOUT
        if self.phase in (HEADER, GATHER) or self.waiting:
            mask |= EPOLLIN
        if not mask & EPOLLIN:
            # Not reading (the client is slow to take the body): a hang-up, which epoll reports
            # whatever the mask, must come once, not on every turn of the loop.
            mask |= EPOLLONESHOT
        return mask

    def _arm(self) -> None:
        if self.closed or self.sock is None:
            return
        mask = self._wanted()
        if mask != self.armed:
            self.armed = mask
            self.handler.reactor.modify(self.fd, mask)

    # -- out: params and the request body ---------------------------------------------------------
    def _send(self, now: float) -> None:
        """Write what the socket takes: the queued records, then the body as STDIN records."""
        sock = self.sock
        assert sock is not None
        progress = False
        while True:
            if not self.pending:
                if self.input_done:
                    break
                self._next_input()
                continue
            try:
                sent = sock.send(self.pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # php-fpm stopped reading (the script ended): the rest is not needed
                self.pending.clear()
                self.input_done = True
                break
            del self.pending[:sent]
            progress = True
        if progress and not self.pending and self.input_done and self.handler.half_close:
            _shut_sending(sock)  # the request is all sent (see "the end" in the module docstring)
        if progress and self.phase == HEADER and self.body is not None:
            assert self.reply is not None
            self.reply.set_deadline(now + self.timeout)  # taking an upload is work, not silence

    def _next_input(self) -> None:
        assert self.body is not None
        data = self.body.read(fcgi.WRITE_CONTENT * 4)
        self.body_started = True
        if data:
            self.pending += fcgi.stream(fcgi.STDIN, REQUEST_ID, data)
        else:
            self._end_input()

    def _end_input(self) -> None:
        self.pending += fcgi.end_of_stream(fcgi.STDIN, REQUEST_ID)
        self.input_done = True

    # -- in: records before the body streams ---------------------------------------------------
    def _receive(self, now: float) -> None:
        while not self.closed and self.phase in (HEADER, GATHER):
            data = self._recv()
            if data is None:
                break
            if not data:
                if self.reused and not self.received and not self.body_started:
                    self._retry(now)
                else:
                    self._connection_ended(now)
                return
            self.received = True
            if self.phase == HEADER:
                assert self.reply is not None
                self.reply.set_deadline(now + self.timeout)
            if not self._records(data, now):
                return
            if self.phase == GATHER and len(self.output) > WHOLE_BODY_LIMIT:
                self._stream(now)  # after the whole batch: its records keep their order
        if self.phase == GATHER and self.timer is None:
            # The header block came, the end did not (yet): gather a little longer. A short
            # answer (header, body and END_REQUEST read at once) never sets this timer.
            self.timer = self.handler.reactor.call_at(now + WHOLE_BODY_WAIT, self._stream)

    def _recv(self) -> bytes | None:
        """Bytes from php-fpm, b"" at its end (a reset counts as one), None when none are ready."""
        assert self.sock is not None
        try:
            return self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _records(self, data: bytes, now: float) -> bool:
        """Act on the records completed by `data`; False when the exchange ended meanwhile."""
        try:
            records = self.reader.feed(data)
        except fcgi.ProtocolError as exc:
            self._broken_protocol(str(exc), now)
            return False
        for kind, request_id, content in records:
            if request_id != REQUEST_ID:
                continue  # management records (id 0) are answers to questions never asked
            if kind == fcgi.STDOUT:
                if content:  # an empty STDOUT record ends the stream, not the request
                    self._stdout(content, now)
            elif kind == fcgi.STDERR:
                self._stderr(content)
            elif kind == fcgi.END_REQUEST:
                self._end_request(content, now)
            if self.closed:
                return False
        return True

    def _stdout(self, data: bytes, now: float) -> None:
        if self.phase == HEADER:
            self._header_bytes(data, now)
        else:
            self.output += data

    def _header_bytes(self, data: bytes, now: float) -> None:
        try:
            outcome = take_head(self.output, data)
        except MalformedOutput as exc:
            self._malformed(exc.detail, now)
            return
        if outcome is None:
            return  # the header block goes on
        if isinstance(outcome, LocalRedirect):
            reply = self.reply
            assert reply is not None
            extra = {"REDIRECT_STATUS": "200", "REDIRECT_URL": self.request.path}
            self.close()
            reply.redirect(InternalRedirect(outcome.target, extra), now)
            return
        self.outcome = outcome
        self.phase = GATHER  # _receive sets the gathering timer if the end is not in this batch

    def _end_request(self, content: bytes, now: float) -> None:
        try:
            _app_status, protocol_status = fcgi.end_request_status(content)
        except fcgi.ProtocolError as exc:
            self._broken_protocol(str(exc), now)
            return
        self.output_done = True
        if protocol_status == fcgi.REQUEST_COMPLETE:
            if self.phase in (HEADER, GATHER):
                self._output_ended(now)
            return
        if self.phase in (HEADER, GATHER):
            if protocol_status == fcgi.OVERLOADED:
                self.handler.log.warning(f"fastcgi {self.label}: php-fpm is overloaded")
                self._fail(FastCgiBusy("php-fpm is overloaded", BUSY), now)
            else:
                self._broken_protocol(f"request refused (protocol status {protocol_status})", now)

    def _output_ended(self, now: float) -> None:
        """END_REQUEST: in HEADER a fault, in GATHER the whole body is here."""
        if self.phase == HEADER:
            self._malformed("output ended inside the header block" if self.output
                            else "no output", now)
            return
        outcome = self.outcome
        assert outcome is not None
        try:
            body = whole_body(outcome, self.output)
        except MalformedOutput as exc:
            self._malformed(exc.detail, now)
            return
        self.output = bytearray()
        self._check_reusable()
        # Close (or give back) before answering: after END_REQUEST php-fpm's child waits for
        # this close, or the next request, so every moment spent sending first idles it.
        self.close()
        self._respond(Response(outcome.status, outcome.fields, body=body), now, ANSWERED)

    def _connection_ended(self, now: float) -> None:
        """php-fpm closed the connection before END_REQUEST (its child died, or was killed)."""
        hint = ""
        if self.handler.half_close and not self.received:
            # Nothing came back at all: maybe a responder that ends the connection with its input.
            hint = " (if it is not php-fpm and answers nothing, try fastcgi.half_close: false)"
        self.handler.log.error(f"fastcgi {self.label}: php-fpm closed the connection "
                               f"before the end of the request{hint}")
        self._fail(FastCgiFailed("php-fpm closed the connection"), now)

    def _stream(self, now: float) -> None:
        """The output goes on: answer now and stream the rest as the client takes it."""
        if self.phase != GATHER:
            return
        outcome = self.outcome
        assert outcome is not None
        self._respond(Response(outcome.status, outcome.fields, body=self, length=outcome.length,
                               min_rate=self.handler.settings.min_send_rate), now, STREAM)

    def _respond(self, response: Response, now: float, phase: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.phase = phase
        assert self.reply is not None
        self.reply.respond(response, now)
        self._arm()

    def _broken_protocol(self, reason: str, now: float) -> None:
        self.handler.log.error(f"fastcgi {self.label}: {reason}")
        self._fail(FastCgiFailed(reason), now)

    def _malformed(self, reason: str, now: float) -> None:
        self.handler.log.error(f"fastcgi {self.label}: {reason}")
        self._fail(MalformedOutput(reason), now)

    def _fail(self, error: HTTPError, now: float) -> None:
        reply = self.reply
        self.close()
        assert reply is not None
        reply.fail(error, now)

    # -- the body, as the response's BodySource -------------------------------------------------
    def read(self) -> bytes | None:
        while True:
            if self.output:
                ready = bytes(self.output)
                self.output = bytearray()
                return ready
            if self.output_done or self.closed:
                return None
            if self.broken:
                return b""  # the connection is being aborted (see _cut)
            data = self._recv()
            if data is None:
                now = time.monotonic()
                self.waiting = True
                self._arm()
                assert self.reply is not None
                self.reply.set_deadline(now + self.timeout)
                return b""
            if not data:
                self._cut("php-fpm closed the connection before the end of the response")
                continue
            try:
                records = self.reader.feed(data)
            except fcgi.ProtocolError as exc:
                self._cut(str(exc))
                continue
            for kind, request_id, content in records:
                if request_id != REQUEST_ID:
                    continue
                if kind == fcgi.STDOUT:
                    self.output += content
                elif kind == fcgi.STDERR:
                    self._stderr(content)
                elif kind == fcgi.END_REQUEST:
                    self.output_done = True
                    self._check_reusable()

    def _cut(self, reason: str) -> None:
        """The response started and cannot be completed: abort the client's connection soon (not
        from inside read(), which the connection is calling)."""
        self.handler.log.error(f"fastcgi {self.label}: {reason}, response cut")
        self.broken = True
        self.timer = self.handler.reactor.call_at(time.monotonic(), self._abort)

    def _abort(self, now: float) -> None:
        if not self.closed:
            self._fail(FastCgiFailed("response cut"), now)

    # -- the end ---------------------------------------------------------------------------------
    def _check_reusable(self) -> None:
        """After END_REQUEST: may the connection carry the next request?"""
        self.reusable = (self.pooled and self.input_done and not self.pending
                         and not self.reader.pending)

    def close(self) -> None:
        """The request is over: close the connection to php-fpm (see the module docstring)."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.errors is not None:
            self.errors.end()
        pool = self.handler.pool
        sock, self.sock = self.sock, None
        if self.phase == QUEUED:
            assert pool is not None
            pool.cancel(self)
        if sock is not None:
            if self.reusable:
                assert pool is not None
                pool.give_back(sock, self.armed, time.monotonic())
                return
            self.handler.reactor.unwatch(self.fd)
            sock.close()
        if self.pooled:
            assert pool is not None
            pool.lost(time.monotonic())


def _shut_sending(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # php-fpm closed it meanwhile: the answer (or its absence) will say so
        pass


def _log_stderr(log: ErrorLog, label: str, line: bytes) -> None:
    """A line the script wrote to FCGI_STDERR, to the error log (never into the response)."""
    log.error(f"fastcgi {label}: {escape(line)}")
