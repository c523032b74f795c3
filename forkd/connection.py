"""One client connection inside a worker: the HTTP/1.1 state machine between the reactor and handlers.

Theory of operation
-------------------
A Connection owns one accepted, non-blocking socket and moves through these states:

    HEAD ──head complete──▶ (prepare) ──body?──▶ BODY ──body complete──▶ (handle) ──┬──────────▶ WRITE
      ▲                                                                              │ Exchange  ▲
      │                                                                              ▼           │
      │                                                                           HANDLE ──answer┘
      └──────────────── response written, keep-alive ◀──────────────────────────────────────────┘
                                       │ not keep-alive / error with close
                                       ▼
                              LINGER (write side shut, input drained briefly) ──▶ closed

- HEAD: bytes are appended to `buffer` until forkd.http.parser.find_head sees the blank line. An idle
  kept-alive connection is HEAD with an empty buffer (deadline: timeouts.keepalive); from the first
  byte of a request (empty lines before it included) the deadline is timeouts.header (then 408).
  A connection whose deadline passes is read once more before it is expired: a request that arrived
  while the worker was not running (stopped, descheduled) is answered, not reset.
- BODY: the handler's prepare() accepted the request; body bytes are fed to a LengthReader or
  ChunkedDecoder and stored in memory (small) or a spooled temporary file, bounded by limits.body
  (413), timeouts.body (408) and, across the worker, limits.body_spool (503). A handler that reads no
  body (static files) gets none: its bytes are read and dropped. Only a complete body reaches
  handle(). `100 Continue` is sent only here, once prepare() accepted (RFC 9110 §10.1.1).
- HANDLE: the handler returned an Exchange (a CGI script running): the exchange registers its own
  descriptors with the reactor and calls respond/fail/redirect on this connection later. Meanwhile
  the socket stays registered for input, so a client that leaves is noticed (its exchange is closed:
  the script is stopped); bytes it pipelines are kept, up to PAUSE_READING, then left in the kernel.
- WRITE: the response did not fit into the socket at once; the rest (bytes, file ranges sent with
  os.sendfile, or a streamed body read only when the socket can take more) goes out on EPOLLOUT.
  A streamed body may have nothing ready: the connection then waits for its producer (which calls
  `resume`) instead of the socket. The deadline is timeouts.send, renewed when the client takes
  bytes; a response with a `min_rate` instead asks that rate of the client over each timeouts.send
  spent waiting for it, so a trickling reader cannot hold a script forever.
- TUNNEL: an exchange called `upgrade` (a WebSocket handshake it accepted): the 101 head is
  handed to it, and from then on the connection parses no HTTP. It still owns the socket and the
  transport: it reads (RECV_SIZE at a time) and gives every piece, the bytes buffered behind the
  handshake first, to the tunnel (`received`, `peer_closed`), tells it when the socket can take
  more (`writable`), and registers the events the tunnel asks for (`want`: dropping EPOLLIN is how
  a tunnel applies back-pressure to its client). The tunnel writes with `send` (the transport's,
  so it works over TLS alike), counts what it wrote in `written`, sets the deadline, and calls
  `end_tunnel` when it is done; the exchange is closed as usual, however the connection ends. A
  worker about to stop calls `going_away` first, so the tunnel can close its protocol properly.
- LINGER: after a response that ends the connection while the client may still be sending (an
  error before its body was read, pipelined requests after Connection: close), the write side is
  shut and input is read and discarded briefly, so the kernel does not answer the unread bytes with
  a reset that would destroy the response in flight (RFC 9112 §9.6).

The common case stays cheap: a request that arrives in one segment and whose response fits the
socket buffer costs one recv and one send (or send + sendfile), and no epoll_ctl at all, because a
connection is registered for EPOLLIN once and switched to EPOLLOUT only when a write would block.

Posted answers. That one send (a response in one buffer: a head, or a head and a small body) is
not made at once: the connection *posts* the buffer (state WRITE) and the worker sends every
posted buffer when it has handled all the events of its loop turn (`send_posted`). Each send wakes
the client's process, which then competes with the worker for a core; sent in the middle of a
turn, those wake-ups preempt the worker while it still has requests to serve, and every
preemption costs a context switch and cold caches. Sent together at the end, they land when the
worker is about to wait anyway, and a client with many connections finds many answers per wake-up.
On two cores shared with wrk, a 1 KiB file went from 0.56x to 0.77x nginx's requests per second;
an answer waits at most one loop turn. Pipelined requests are served after their predecessor's
answer is sent, as before (the buffer waits in `ready`).

All socket I/O goes through three callables (`recv`, `send`, `sendfile`) bound at construction: the
transport seam. Everything else a connection uses of its worker comes through forkd.services.

Everything a client can send ends as a reply or a closed connection, never as an exception out of
this module: HTTPError subclasses become their status, anything else raised by a handler becomes a
500 whose traceback goes to the error log only.
"""

from __future__ import annotations

import functools
import io
import os
import select
import socket
import struct
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from forkd.handlers.base import Exchange, Handler, InternalRedirect, Tunnel
from forkd.http.body import ChunkedDecoder, LengthReader
from forkd.http.errors import (
    HTTPError,
    InternalError,
    RequestTimeout,
    ServiceUnavailable,
)
from forkd.http.framing import BYTES, CLOSE, NONE, PARTS, RAW, BodyWriter, IteratorSource, choose
from forkd.http.parser import find_head, skip_empty_lines
from forkd.http.request import ConnectionInfo, Request
from forkd.http.response import FileRange, Response, UnsafeHeader, error_body, render_head
from forkd.proxies import client_connection
from forkd.routing import redirected
from forkd.services import Services

HEAD, BODY, HANDLE, WRITE, LINGER, CLOSED, TUNNEL = range(7)

RECV_SIZE = 65536
INLINE_FILE = 16384  # file ranges up to this size are read and sent with the head in one send
COALESCE = 65536  # bytes bodies up to this size go out in the same send as the head
MEMORY_BODY = 65536  # request bodies up to this size stay in memory; larger ones spool to disk
PAUSE_READING = 65536  # bytes pipelined behind a request in progress that are read ahead at most
LINGER_SECONDS = 2.0
MAX_REDIRECTS = 10
PIPELINE_BURST = 16  # requests served from one buffer before other connections get a turn
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, drops unsent data
OPTIONS_ALLOW = "GET, HEAD, POST, OPTIONS"

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT


class ClientGone(Exception):
    """The peer reset or closed the connection while we were writing."""


class BodyFailed(Exception):
    """A streamed response body raised: the response cannot be completed."""


class Connection:
    __slots__ = (
        "body_file",
        "body_held",
        "body_pending",
        "buffer",
        "deadline",
        "deferred",
        "episode_written",
        "events",
        "exchange",
        "fd",
        "fresh",
        "handler",
        "head_length",
        "info",
        "keep",
        "min_rate",
        "out",
        "posted",
        "reader",
        "recv",
        "redirects",
        "refused",
        "remote",
        "request",
        "response",
        "scanned",
        "send",
        "sendfile",
        "services",
        "slot_line",
        "sock",
        "started",
        "state",
        "status",
        "tunnel",
        "waiting",
        "written",
    )

    def __init__(self, services: Services, sock: socket.socket, info: ConnectionInfo,
                 now: float) -> None:
        self.services = services
        self.sock = sock
        self.fd = sock.fileno()
        # The transport seam: plain sockets keep the socket's own calls (one system call each).
        self.recv: Callable[[int], bytes] = sock.recv
        self.send: Callable[..., int] = sock.send
        self.sendfile: Callable[[int, int, int], int] = functools.partial(os.sendfile, self.fd)
        self.info = info
        self.remote = info.remote_addr
        self.buffer = bytearray()
        self.scanned = 0  # bytes of a partial head in buffer already examined by find_head
        self.state = HEAD
        self.events = EPOLLIN  # what the socket is registered for (the worker registers EPOLLIN)
        self.fresh = True  # no byte of the next request yet: the first one starts its deadline
        # Nothing received yet: a connection that sends nothing is closed after timeouts.header.
        self.deadline = now + services.timeouts.header
        self.out: deque[Any] = deque()
        self.posted: bytes | None = None  # a response in one buffer, sent at the end of the turn
        self.tunnel: Tunnel | None = None  # set by upgrade(): who gets the socket in TUNNEL
        self._reset_request()

    def _reset_request(self) -> None:
        self.request: Request | None = None
        self.handler: Handler | None = None
        self.exchange: Exchange | None = None
        self.reader: LengthReader | ChunkedDecoder | None = None
        self.body_file: Any = None
        self.body_held = 0
        self.body_pending = False
        self.response: Response | None = None
        self.keep = False
        self.deferred = False
        self.waiting = False  # WRITE: waiting for the body's producer, not for the socket
        self.min_rate = 0
        self.episode_written = 0
        self.redirects = 0
        self.refused: Request | None = None  # a head refused by the parser, for the access log
        self.status = 0
        self.head_length = 0
        self.written = 0
        self.started = 0.0
        self.slot_line = b""

    def _want(self, events: int) -> None:
        if events != self.events:
            self.events = events
            self.services.epoll.modify(self.fd, events)

    # -- events from the reactor -----------------------------------------------------------------

    def on_readable(self, now: float) -> None:
        try:
            data = self.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort("connection reset while reading")
            return
        if not data:
            self._peer_closed()
            return
        self._received(data, now)

    def _received(self, data: bytes, now: float) -> None:
        state = self.state
        if state == HEAD and not self.buffer:
            if self.fresh:
                self.fresh = False
                self.deadline = now + self.services.timeouts.header  # the first byte of a request
            if data.find(b"\r\n\r\n") == len(data) - 4 and data[0] != 13:
                # The common case: the segment is exactly one complete head. Skip the buffer.
                self._start(data, now)
                return
        elif state == LINGER:
            return  # discarded: we only wait for the peer's FIN
        elif state == TUNNEL:
            self.tunnel.received(data, now)  # type: ignore[union-attr]
            return
        self.buffer += data
        if state == HEAD or state == BODY:
            self.process(now)
        elif len(self.buffer) >= PAUSE_READING:
            self._want(0)  # a request is in progress: read no further ahead until it is done

    def on_writable(self, now: float) -> None:
        if self.state == WRITE and not self.waiting:
            self._write(now)
            if self.state == HEAD and self.buffer:
                self.process(now)  # pipelined requests that arrived while we were writing
        elif self.state == TUNNEL:
            self.tunnel.writable(now)  # type: ignore[union-attr]
            if self.state == TUNNEL and self.events & EPOLLIN:
                self.on_readable(now)  # both directions ready: epoll reported them together
        else:
            self.on_readable(now)

    def on_timeout(self, now: float) -> None:
        state = self.state
        if state == HEAD and not self.buffer:
            if self._read_late(now):
                return
            self.close()  # idle keep-alive (or silent new) connection: no reply owed
        elif state == HEAD or state == BODY:
            if self._read_late(now):
                return
            self.fail(RequestTimeout("request not received in time"), now)
        elif state == HANDLE or state == TUNNEL:
            assert self.exchange is not None
            self.exchange.on_timeout(now)
        elif state == WRITE:
            self._write_timeout(now)
        else:
            self.close()

    def _read_late(self, now: float) -> bool:
        """Whether bytes waiting in the socket moved the connection on (see HEAD above).

        Progress is what sets a later deadline: the first byte of a request, a request served. A
        head or body that is merely longer than before is not, so a trickle cannot outlive it.
        """
        self.on_readable(now)
        return self.state != CLOSED and self.deadline > now

    def _write_timeout(self, now: float) -> None:
        if self.waiting:  # the producer was silent too long: it says why, then we abort
            if self.exchange is not None:
                self.exchange.on_timeout(now)
            if self.state != CLOSED:
                self.abort("response body stalled")
            return
        timeout = self.services.timeouts.send
        if self.min_rate and self.written - self.episode_written >= self.min_rate * timeout:
            self.episode_written = self.written  # slow, but not below the floor: another round
            self.deadline = now + timeout
            return
        # Reset rather than close: a graceful close would leave the unread response in the
        # kernel's send buffer, trickling out to the slow reader for a long time.
        self._reset_on_close()
        self.abort("client did not read the response in time")

    def _peer_closed(self) -> None:
        if self.state == HEAD and not self.buffer or self.state == LINGER:
            self.close()
        elif self.state == TUNNEL:
            self.tunnel.peer_closed(time.monotonic())  # type: ignore[union-attr]
        else:
            self.abort("client closed the connection mid-request")

    # -- reading requests ------------------------------------------------------------------------

    def process(self, now: float) -> None:
        """Serve what the buffer holds: heads, bodies, pipelined requests."""
        for _ in range(PIPELINE_BURST):
            state = self.state
            if state == HEAD:
                if not self._read_head(now):
                    return
            elif state == BODY:
                if not self._read_body(now):
                    return
            else:
                if state == TUNNEL and self.events & EPOLLIN:
                    self.on_readable(now)  # TLS plaintext already decrypted (tls_connection)
                return
        if self.state == HEAD and self.buffer:
            self.services.ready.append(self)  # more pipelined requests: after the others' turn

    def _read_head(self, now: float) -> bool:
        buffer = self.buffer
        if not buffer:
            return False
        if buffer[0] == 13:
            skip_empty_lines(buffer)  # they count against the header deadline all the same
            self.scanned = 0
            if not buffer:
                return False
        try:
            end = find_head(buffer, self.services.limits, self.scanned)
        except HTTPError as error:
            self.fail(error, now)
            return False
        if end < 0:
            self.scanned = len(buffer)  # a trickled head is examined once per byte, not per piece
            return False
        self.scanned = 0
        head = bytes(buffer[:end])
        del buffer[:end]
        self._start(head, now)
        return True

    def _start(self, head: bytes, now: float) -> None:
        """Parse a complete head and serve the request (or wait for its body)."""
        self.slot_line = head[: head.find(b"\r\n")]
        services = self.services
        try:
            request = services.head_parser.parse(head)
        except HTTPError as error:
            self.refused = error.request
            self.fail(error, now)
            return
        self.request = request
        self.started = now
        request.conn = self.info
        if self.info.trusted_peer:  # a trusted proxy may name the client (forkd.proxies)
            request.conn = client_connection(self.info, request.headers, services.trusted)
            self.remote = request.conn.remote_addr
        # Until the body is read the framing of the next request is unknown: an error now closes.
        has_body = self.body_pending = request.chunked or bool(request.content_length)
        services.slot.busy(self.slot_line)
        try:
            if request.path == "*":
                self.respond(Response(200, [("Allow", OPTIONS_ALLOW)]), now)  # RFC 9110 §9.3.7
                return
            handler = services.router.cache.get(request.path) or services.router.route(request)
            handler.prepare(request)
        except HTTPError as error:
            self.fail(error, now)
            return
        except Exception:  # noqa: BLE001 - a handler bug must become a 500, never kill the worker
            services.error_log.error(f"handler prepare failed: {traceback.format_exc()}")
            self.fail(InternalError(), now)
            return
        if not has_body:
            self._dispatch(handler, request, now)
            return
        self._expect_body(handler, request, now)

    def _expect_body(self, handler: Handler, request: Request, now: float) -> None:
        services = self.services
        self.handler = handler
        length = request.content_length or 0
        self.reader = ChunkedDecoder(services.limits.body) if request.chunked else LengthReader(length)
        if getattr(handler, "reads_body", False):  # handlers that use bodies say so
            if not self._hold(length, now):
                return
            try:
                self.body_file = _body_file(request.chunked, length)  # closed in _cleanup
            except OSError as exc:
                self._no_room(f"cannot store a request body: {exc}", now)
                return
        self.state = BODY
        self.deadline = now + services.timeouts.body
        if request.expect_continue and not self.buffer:
            self._send_continue()

    def _hold(self, size: int, now: float) -> bool:
        """Count `size` more body bytes against limits.body_spool; 503 when over it."""
        services = self.services
        if services.body_bytes + size > services.limits.body_spool:
            self._no_room("request bodies in progress reached limits.body_spool", now)
            return False
        services.body_bytes += size
        self.body_held += size
        return True

    def _no_room(self, why: str, now: float) -> None:
        """No descriptor, disk space or budget for the body: an overload, 503 (RFC 9110 §15.6.4)."""
        self.services.error_log.warning(why)
        self.fail(ServiceUnavailable("no room for the request body", [("Retry-After", "1")]), now)

    def _send_continue(self) -> None:
        try:
            sent = self.send(CONTINUE)
        except OSError:
            sent = 0
        if sent != len(CONTINUE):
            # A fresh socket buffer always takes 25 bytes; if not, the peer is gone or hostile.
            self.abort("could not send 100 Continue")

    def _read_body(self, now: float) -> bool:
        reader = self.reader
        request = self.request
        assert reader is not None and request is not None
        if self.buffer:
            data = self.buffer
            self.buffer = bytearray()
            try:
                payload = reader.feed(data)
            except HTTPError as error:
                self.fail(error, now)
                return False
            if payload and self.body_file is not None:
                if request.chunked and not self._hold(len(payload), now):
                    return False
                try:
                    self.body_file.write(payload)
                except OSError as exc:  # a spooled body rolling over to a full disk, no fd left
                    self._no_room(f"cannot store a request body: {exc}", now)
                    return False
            if reader.done and reader.rest:
                self.buffer = bytearray(reader.rest)
        if not reader.done:
            return False
        self.body_pending = False
        body = self.body_file
        if body is not None:
            request.body_length = body.tell()
            body.seek(0)
            request.body = body
        handler = self.handler
        assert handler is not None
        self._dispatch(handler, request, now)
        return True

    # -- handling --------------------------------------------------------------------------------

    def _dispatch(self, handler: Handler, request: Request, now: float) -> None:
        try:
            try:
                answer = handler.handle(request)
            except InternalRedirect as internal:
                self.redirect(internal, now)
                return
            if type(answer) is not Response:
                if not hasattr(answer, "start"):
                    raise TypeError(f"handler returned {type(answer).__name__}, not a Response")
                self._defer(answer, now)  # type: ignore[arg-type]
                return
        except HTTPError as error:
            answer = self._error_response(error)
        except Exception:  # noqa: BLE001 - any handler bug is a 500
            self.services.error_log.error(
                f"handler failed on {request.request_line!r}: {traceback.format_exc()}"
            )
            answer = self._error_response(InternalError())
        self.respond(answer, now)

    def _defer(self, exchange: Exchange, now: float) -> None:
        """The answer will come later, from the exchange (see HANDLE in the module docstring)."""
        self.exchange = exchange
        self.state = HANDLE
        self.deferred = True
        try:
            exchange.start(self, now)
        except HTTPError as error:
            self.fail(error, now)
        except Exception:  # noqa: BLE001 - as in _dispatch
            self.services.error_log.error(f"handler failed to start: {traceback.format_exc()}")
            self.fail(InternalError(), now)

    def redirect(self, internal: InternalRedirect, now: float) -> None:
        """Serve a local redirect (RFC 3875 §6.2.2), at most MAX_REDIRECTS in a row."""
        original = self.request
        assert original is not None
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.close()
        self.state = HEAD  # no longer HANDLE: the next handler starts afresh
        self.redirects += 1
        if self.redirects > MAX_REDIRECTS:
            self.fail(InternalError("too many internal redirects"), now)
            return
        try:
            request = redirected(original, internal)
            handler = self.services.router.route(request)
            handler.prepare(request)
        except HTTPError as error:
            self.fail(error, now)
            return
        self._dispatch(handler, request, now)

    def set_deadline(self, when: float) -> None:
        self.deadline = when

    # -- switching protocols (TUNNEL in the module docstring) --------------------------------------

    def upgrade(self, headers: list[tuple[str, str]], tunnel: Tunnel, now: float) -> None:
        """Answer 101 Switching Protocols (RFC 9110 §15.2.2) and hand the connection to `tunnel`."""
        services = self.services
        try:
            head = render_head(101, headers, services.server, "Connection: Upgrade\r\n", True,
                               False)
        except (UnsafeHeader, UnicodeEncodeError) as exc:
            services.error_log.error(f"handler produced an invalid header: {exc}")
            self.fail(InternalError(), now)
            return
        self.status = 101
        self.head_length = len(head)
        self.keep = False
        self.state = TUNNEL
        self.tunnel = tunnel
        # A tunnel lives as long as its client likes: the scoreboard must not count it as one
        # request the worker is busy with (the master takes a long one for a stuck worker).
        services.slot.idle()
        buffered, self.buffer = bytes(self.buffer), bytearray()
        self._want(EPOLLIN)
        tunnel.attach(self, head, buffered, now)

    def want(self, events: int) -> None:
        """Register the socket for `events` (the tunnel's choice: EPOLLIN, EPOLLOUT, both, none)."""
        self._want(events)

    def going_away(self, now: float) -> None:
        """The worker stops soon: a tunnel closes its protocol properly while it still can."""
        if self.state == TUNNEL:
            self.tunnel.going_away(now)  # type: ignore[union-attr]

    def end_tunnel(self, now: float) -> None:
        """The tunnel is done: log the request and close the connection, lingering (LINGER)."""
        if self.state == TUNNEL:
            # The client may still be sending (the rest of a message refused with 1009): treat
            # it as an unread body, so its bytes are drained rather than answered with a reset
            # that could destroy the close frame in flight.
            self.body_pending = True
            self._finish(now)

    def fail(self, error: HTTPError, now: float) -> None:
        """Answer with an error's status; the connection closes if the error says so."""
        if self.state == WRITE:
            self.abort(f"error after the response started: {error}")
            return
        self.respond(self._error_response(error), now)

    def _error_response(self, error: HTTPError) -> Response:
        # 4xx details are our own short texts (escaped anyway); 5xx details may hold internals.
        detail = error.detail if error.status < 500 else ""
        headers = [("Content-Type", "text/html; charset=utf-8"), *error.headers]
        return Response(error.status, headers, error_body(error.status, detail), close=error.close)

    # -- writing responses -----------------------------------------------------------------------

    def respond(self, response: Response, now: float) -> None:
        """Frame the response, queue it and write as much as the socket takes now."""
        services = self.services
        request = self.request
        self.response = response
        self.status = response.status
        http10 = request is not None and request.version == "HTTP/1.0"
        framing, mode, length = choose(response, http10)
        self.keep = keep = (
            request is not None and request.keep_alive and not response.close
            and not self.body_pending and not services.retiring and mode != CLOSE and mode != RAW
        )
        body = response.body
        if mode == RAW:
            self.min_rate = response.min_rate
            self.out.append(BodyWriter(_source(body), RAW, 0))
            self._write(now)
            return
        try:
            head = render_head(response.status, response.headers, services.server, framing, keep,
                               http10)
        except (UnsafeHeader, UnicodeEncodeError) as exc:
            services.error_log.error(f"handler produced an invalid header: {exc}")
            self._release_response()
            self.respond(self._error_response(InternalError()), now)
            return
        self.head_length = len(head)
        if mode == NONE or request is not None and request.method == "HEAD":
            self._send(head, now)
            return
        if mode == BYTES:
            if length <= COALESCE:
                self._send(head + body, now)  # type: ignore[operator]
                return
            self.out.append(head)
            self.out.append(body)
        elif mode == PARTS:
            self._queue_parts(head, body)  # type: ignore[arg-type]
        else:
            self.min_rate = response.min_rate
            self.out.append(head)
            self.out.append(BodyWriter(_source(body), mode, length))
        self._write(now)

    def _queue_parts(self, head: bytes, parts: list[bytes | FileRange]) -> None:
        """Queue head and parts; small file ranges are read now so everything leaves in one send."""
        out = self.out
        pending = [head]
        for part in parts:
            if isinstance(part, bytes):
                pending.append(part)
            elif part.count <= INLINE_FILE:
                data = os.pread(part.fd, part.count, part.offset)
                pending.append(data)
                if len(data) != part.count:
                    self.keep = False  # the file shrank: the body is short, only a close can say so
                    break
            else:
                out.append(b"".join(pending))
                pending = []
                out.append([part.fd, part.offset, part.count])  # type: ignore[union-attr]
        if pending:
            out.append(b"".join(pending))

    def _send(self, data: bytes, now: float) -> None:
        """The common case, one buffer (head and small body): posted, sent at the end of the
        worker's loop turn (see "Posted answers" in the module docstring)."""
        self.state = WRITE
        self.posted = data
        self.services.posted.append(self)

    def send_posted(self, now: float) -> None:
        """Send the posted buffer: one send, no queue handling (the worker calls this)."""
        data, self.posted = self.posted, None
        if data is None or self.state != WRITE:
            return  # the connection ended since (aborted, closed)
        self.deferred = True  # answered outside process(): _finish queues pipelined requests
        try:
            sent = self.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.abort(f"write failed: {exc.strerror}")
            return
        self.written = sent
        if sent == len(data):
            self._finish(now)
            return
        self.out.append(memoryview(data)[sent:])
        self._write(now)

    def resume(self, now: float) -> None:
        """The streamed body's producer has more: go on writing (called by an exchange)."""
        if self.state == WRITE and self.waiting:
            self._write(now)

    def _write(self, now: float) -> None:
        try:
            done = self._flush(now)
        except ClientGone as gone:
            self.abort(str(gone))
            return
        except BodyFailed:  # a broken body aborts its connection, nothing else
            self.services.error_log.error(f"response body failed: {traceback.format_exc()}")
            self.abort("response body failed")
            return
        if done:
            self._finish(now)
            return
        starting = self.state != WRITE
        self.state = WRITE
        if self.waiting:
            # The producer has nothing yet and calls resume(); it set the deadline. Meanwhile
            # only a departure of the client matters (read ahead, bounded, as in HANDLE).
            self._want(EPOLLIN if len(self.buffer) < PAUSE_READING else 0)
            return
        if starting or self.events != EPOLLOUT:  # from now on we wait for the client
            self.deadline = now + self.services.timeouts.send
            self.episode_written = self.written
        self._want(EPOLLOUT)

    def _flush(self, now: float) -> bool:
        """Write queued items until done (True), or the socket is full or the body's producer has
        nothing ready (False; `waiting` tells which)."""
        out = self.out
        send = self.send
        written = self.written
        self.waiting = False
        try:
            while out:
                item = out[0]
                kind = type(item)
                if kind is bytes or kind is memoryview:
                    flags = socket.MSG_MORE if len(out) > 1 and type(out[1]) is list else 0
                    sent = send(item, flags)
                    written += sent
                    if sent == len(item):
                        out.popleft()
                    else:
                        out[0] = memoryview(item)[sent:]
                        break
                elif kind is list:  # [fd, offset, count] of a file range
                    sent = self.sendfile(item[0], item[1], item[2])
                    if sent == 0:
                        raise ClientGone("file shrank while being sent")
                    written += sent
                    item[1] += sent
                    item[2] -= sent
                    if not item[2]:
                        out.popleft()
                else:
                    try:
                        chunk = item.pull()
                    except Exception as exc:
                        raise BodyFailed() from exc
                    if chunk is None:
                        out.popleft()
                        if item.short:
                            self.keep = False
                    elif chunk:
                        out.appendleft(chunk)
                    else:
                        self.waiting = True
                        break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            raise ClientGone(f"write failed: {exc.strerror}") from None
        if written != self.written:
            self.written = written
            if not (self.min_rate or self.waiting):  # the producer set the deadline it waits for
                self.deadline = now + self.services.timeouts.send
        return not out

    def _finish(self, now: float) -> None:
        services = self.services
        request = self.request
        keep = self.keep
        body_bytes = self.written - self.head_length
        if body_bytes < 0:  # noqa: PLR1730 - cheaper than a call to max() on the hot path
            body_bytes = 0
        elapsed = time.monotonic() - self.started if self.started else 0.0
        # Counted in the scoreboard; the slot is idle again if the request had made it busy.
        services.slot.done(self.status, body_bytes, elapsed, request is not None)
        if services.access_log_enabled:
            services.access_log.record(
                request or self.refused, self.remote, self.status, body_bytes, elapsed,
                _line(self.slot_line),
            )
        # After an error before a request was parsed or its body read, the client may still be
        # sending: linger so that a reset does not destroy the reply.
        linger = request is None or self.body_pending or bool(self.buffer)
        deferred = self.deferred
        self._cleanup(False)
        if request is not None:
            services.request_done()
        if not keep:
            self._end(now, linger)
            return
        self._want(EPOLLIN)
        self.state = HEAD
        if self.buffer:
            self.deadline = now + services.timeouts.header
            if deferred:  # answered from an exchange's event: nobody else looks at the buffer
                services.ready.append(self)
        else:
            self.fresh = True
            self.deadline = now + services.timeouts.keepalive

    def _release_response(self) -> None:
        """Call the handler's cleanup, exactly once per response."""
        response = self.response
        if response is not None and response.cleanup is not None:
            cleanup, response.cleanup = response.cleanup, None
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - cleanup must not stop the loop
                self.services.error_log.error(f"response cleanup failed: {traceback.format_exc()}")

    def _cleanup(self, idle: bool = True) -> None:
        """Release what the request held: the response, its exchange, the body, the slot (unless
        `done` already made it idle)."""
        services = self.services
        if self.response is not None and self.response.cleanup is not None:
            self._release_response()
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            try:
                exchange.close()
            except Exception:  # noqa: BLE001 - as in _release_response
                services.error_log.error(f"exchange close failed: {traceback.format_exc()}")
        if self.body_file is not None:
            self.body_file.close()
        if self.body_held:
            services.body_bytes -= self.body_held
        if idle and self.request is not None:
            services.slot.idle()
        self.out.clear()
        self._reset_request()

    # -- ending ----------------------------------------------------------------------------------

    def _end(self, now: float, linger: bool) -> None:
        """Close after a final response; linger when the client may still be sending."""
        if not linger:
            self.close()
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self._want(EPOLLIN)
        self.buffer = bytearray()
        self.state = LINGER
        self.deadline = now + LINGER_SECONDS

    def _reset_on_close(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass

    def abort(self, reason: str) -> None:
        """Drop the connection mid-request (client gone, send timeout, broken body)."""
        if self.request is not None or self.response is not None:
            services = self.services
            services.error_log.debug(f"{self.remote or 'unix'}: {reason}")
            if self.request is not None:
                body_bytes = max(self.written - self.head_length, 0)
                services.slot.count(self.status or 499, body_bytes, 0.0)
                services.access_log.record(
                    self.request, self.remote, self.status or 499, body_bytes, 0.0,
                    _line(self.slot_line),
                )
        self._cleanup()
        self.close()

    def close(self) -> None:
        if self.state == CLOSED:
            return
        if self.request is not None or self.response is not None or self.exchange is not None:
            self._cleanup()
        self.state = CLOSED
        self.services.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def idle(self) -> bool:
        return self.state == HEAD and not self.buffer and self.request is None


def _source(body: Any) -> Any:
    """A streamed body as a BodySource: sources as they are, plain iterators wrapped."""
    return body if hasattr(body, "read") else IteratorSource(body)


def _body_file(chunked: bool, length: int) -> Any:
    """Where a request body is collected: memory when small, else a temporary file."""
    if chunked:  # the length is unknown: memory first, a file once it grows
        return tempfile.SpooledTemporaryFile(MEMORY_BODY)
    if length <= MEMORY_BODY:
        return io.BytesIO()
    return tempfile.TemporaryFile()


def _line(raw: bytes) -> str:
    return raw.decode("latin-1") if raw else "-"
