"""One client connection inside a worker: the HTTP/1.1 state machine between the selector and handlers.

Theory of operation
-------------------
A Connection owns one accepted, non-blocking socket and moves through these states:

    HEAD ──head complete──▶ (prepare) ──body?──▶ BODY ──body complete──▶ (handle) ──▶ WRITE
      ▲                                                                                │
      └──────────────── response written, keep-alive ◀────────────────────────────────┘
                                       │ not keep-alive / error with close
                                       ▼
                              LINGER (write side shut, input drained briefly) ──▶ closed

- HEAD: bytes are appended to `buffer` until forkd.http.parser.find_head sees the blank line. An idle
  kept-alive connection is HEAD with an empty buffer (deadline: timeouts.keepalive); from the first
  byte of a request the deadline is timeouts.header (then 408 and close).
- BODY: the handler's prepare() accepted the request; body bytes are fed to a LengthReader or
  ChunkedDecoder and stored in memory (small) or a spooled temporary file, bounded by limits.body
  (413) and timeouts.body (408). Only a complete body reaches handle(). `100 Continue` is sent
  only here, i.e. once prepare() accepted and the body will really be read (RFC 9110 §10.1.1).
- WRITE: the response did not fit into the socket at once; the rest (bytes, file ranges sent with
  os.sendfile, or an iterator pulled only when the socket can take more) goes out on EPOLLOUT.
  The deadline is timeouts.send, renewed whenever the client takes some bytes.
- LINGER: after a response that ends the connection while the client may still be sending (an
  error before its body was read, pipelined requests after Connection: close), the write side is
  shut and input is read and discarded briefly, so the kernel does not answer the unread bytes with
  a reset that would destroy the response in flight (RFC 9112 §9.6).

The common case stays cheap: a request that arrives in one segment and whose response fits the
socket buffer costs one recv and one send (or send + sendfile), and no epoll_ctl at all, because a
connection is registered for EPOLLIN once and switched to EPOLLOUT only when a write would block.

Everything a client can send ends as a reply or a closed connection, never as an exception out of
this module: HTTPError subclasses become their status, anything else raised by a handler becomes a
500 whose traceback goes to the error log only.
"""

from __future__ import annotations

import io
import os
import select
import socket
import struct
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from forkd.handlers import Handler, InternalRedirect
from forkd.http.body import ChunkedDecoder, LengthReader
from forkd.http.errors import HTTPError, InternalError, RequestTimeout, ServiceUnavailable
from forkd.http.parser import find_head, skip_empty_lines
from forkd.http.request import ConnectionInfo, Request
from forkd.http.response import (
    NO_CONTENT,
    FileRange,
    Response,
    UnsafeHeader,
    error_body,
    render_head,
)

if TYPE_CHECKING:
    from forkd.worker import Worker

HEAD, BODY, WRITE, LINGER, CLOSED = range(5)

RECV_SIZE = 65536
INLINE_FILE = 16384  # file ranges up to this size are read and sent with the head in one send
COALESCE = 65536  # bytes bodies up to this size go out in the same send as the head
MEMORY_BODY = 65536  # request bodies up to this size stay in memory; larger ones spool to disk
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
    """A response body iterator raised: the response cannot be completed."""


class Connection:
    __slots__ = (
        "body_file",
        "body_pending",
        "buffer",
        "deadline",
        "fd",
        "handler",
        "head_length",
        "info",
        "keep",
        "out",
        "reader",
        "remote",
        "request",
        "response",
        "scanned",
        "slot_line",
        "sock",
        "started",
        "state",
        "status",
        "worker",
        "written",
    )

    def __init__(self, worker: Worker, sock: socket.socket, info: ConnectionInfo, now: float) -> None:
        self.worker = worker
        self.sock = sock
        self.fd = sock.fileno()
        self.info = info
        self.remote = info.remote_addr
        self.buffer = bytearray()
        self.scanned = 0  # bytes of a partial head in buffer already examined by find_head
        self.state = HEAD
        # Nothing received yet: a connection that sends nothing is closed after timeouts.header.
        self.deadline = now + worker.timeouts.header
        self.out: deque[Any] = deque()
        self._reset_request()

    def _reset_request(self) -> None:
        self.request: Request | None = None
        self.handler: Handler | None = None
        self.reader: LengthReader | ChunkedDecoder | None = None
        self.body_file: Any = None
        self.body_pending = False
        self.response: Response | None = None
        self.keep = False
        self.status = 0
        self.head_length = 0
        self.written = 0
        self.started = 0.0
        self.slot_line = b""

    # -- events from the selector ----------------------------------------------------------------

    def on_readable(self, now: float) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort("connection reset while reading")
            return
        if not data:
            self._peer_closed()
            return
        state = self.state
        if state == HEAD and not self.buffer:
            self.deadline = now + self.worker.timeouts.header  # the first byte of a request
            if data.find(b"\r\n\r\n") == len(data) - 4 and data[0] != 13:
                # The common case: the segment is exactly one complete head. Skip the buffer.
                self._start(data, now)
                return
        elif state == LINGER:
            return  # discarded: we only wait for the peer's FIN
        self.buffer += data
        if state == HEAD or state == BODY:
            self.process(now)

    def on_writable(self, now: float) -> None:
        if self.state == WRITE:
            self._write(now)
            if self.state == HEAD and self.buffer:
                self.process(now)  # pipelined requests that arrived while we were writing
        else:
            self.on_readable(now)

    def on_timeout(self, now: float) -> None:
        state = self.state
        if state == HEAD and not self.buffer:
            self.close()  # idle keep-alive (or silent new) connection: no reply owed
        elif state == HEAD or state == BODY:
            self.fail(RequestTimeout("request not received in time"), now)
        elif state == WRITE:
            # Reset rather than close: a graceful close would leave the unread response in the
            # kernel's send buffer, trickling out to the slow reader for a long time.
            self._reset_on_close()
            self.abort("client did not read the response in time")
        else:
            self.close()

    def _peer_closed(self) -> None:
        if self.state == HEAD and not self.buffer or self.state == LINGER:
            self.close()
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
                return
        if self.state == HEAD and self.buffer:
            self.worker.ready.append(self)  # more pipelined requests: after the others' turn

    def _read_head(self, now: float) -> bool:
        buffer = self.buffer
        if not buffer:
            return False
        if buffer[0] == 13:
            skip_empty_lines(buffer)
            self.scanned = 0
            if not buffer:
                return False
        try:
            end = find_head(buffer, self.worker.limits, self.scanned)
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
        try:
            request = self.worker.head_parser.parse(head)
        except HTTPError as error:
            self.fail(error, now)
            return
        worker = self.worker
        self.request = request
        self.started = now
        request.conn = self.info
        # Until the body is read the framing of the next request is unknown: an error now closes.
        has_body = self.body_pending = request.chunked or bool(request.content_length)
        worker.slot.busy(self.slot_line)
        try:
            if request.path == "*":
                self.respond(Response(200, [("Allow", OPTIONS_ALLOW)]), now)  # RFC 9110 §9.3.7
                return
            handler = worker.routes.get(request.path) or worker.route(request)
            handler.prepare(request)
        except HTTPError as error:
            self.fail(error, now)
            return
        except Exception:  # noqa: BLE001 - a handler bug must become a 500, never kill the worker
            worker.error_log.error(f"handler prepare failed: {traceback.format_exc()}")
            self.fail(InternalError(), now)
            return
        if not has_body:
            self._dispatch(handler, now)
            return
        self.handler = handler
        length = request.content_length or 0
        self.reader = ChunkedDecoder(worker.limits.body) if request.chunked else LengthReader(length)
        try:
            self.body_file = _body_file(request.chunked, length)  # closed in _cleanup
        except OSError as exc:
            self._no_room(exc, now)
            return
        self.state = BODY
        self.deadline = now + worker.timeouts.body
        if request.expect_continue and not self.buffer:
            self._send_continue()

    def _no_room(self, exc: OSError, now: float) -> None:
        """No descriptor or disk space for the body: an overload, 503 (RFC 9110 §15.6.4)."""
        self.worker.error_log.error(f"cannot store a request body: {exc}")
        self.fail(ServiceUnavailable("no room for the request body", [("Retry-After", "1")]), now)

    def _send_continue(self) -> None:
        try:
            sent = self.sock.send(CONTINUE)
        except OSError:
            sent = 0
        if sent != len(CONTINUE):
            # A fresh socket buffer always takes 25 bytes; if not, the peer is gone or hostile.
            self.abort("could not send 100 Continue")

    def _read_body(self, now: float) -> bool:
        reader = self.reader
        assert reader is not None and self.request is not None
        if self.buffer:
            data = self.buffer
            self.buffer = bytearray()
            try:
                payload = reader.feed(data)
            except HTTPError as error:
                self.fail(error, now)
                return False
            if payload:
                try:
                    self.body_file.write(payload)
                except OSError as exc:  # a spooled body rolling over to a full disk, no fd left
                    self._no_room(exc, now)
                    return False
            if reader.done and reader.rest:
                self.buffer = bytearray(reader.rest)
        if not reader.done:
            return False
        self.body_pending = False
        body = self.body_file
        self.request.body_length = body.tell()
        body.seek(0)
        self.request.body = body
        handler = self.handler
        assert handler is not None
        self._dispatch(handler, now)
        return True

    # -- handling --------------------------------------------------------------------------------

    def _dispatch(self, handler: Handler, now: float) -> None:
        request = self.request
        assert request is not None
        try:
            try:
                response = handler.handle(request)
            except InternalRedirect as redirect:
                response = self._redirect(request, redirect)
            if type(response) is not Response:
                raise TypeError(f"handler returned {type(response).__name__}, not a Response")
        except HTTPError as error:
            response = self._error_response(error)
        except Exception:  # noqa: BLE001 - any handler bug is a 500
            self.worker.error_log.error(
                f"handler failed on {request.request_line!r}: {traceback.format_exc()}"
            )
            response = self._error_response(InternalError())
        self.respond(response, now)

    def _redirect(self, request: Request, redirect: InternalRedirect) -> Response:
        """Serve local redirects (RFC 3875 §6.2.2) until a handler answers, at most MAX_REDIRECTS."""
        for _ in range(MAX_REDIRECTS):
            request = self.worker.redirected(request, redirect)
            handler = self.worker.route(request)
            handler.prepare(request)
            try:
                return handler.handle(request)
            except InternalRedirect as again:
                redirect = again
        raise InternalError("too many internal redirects")

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
        worker = self.worker
        request = self.request
        self.response = response
        self.status = response.status
        keep = (
            request is not None and request.keep_alive and not response.close
            and not self.body_pending and not worker.retiring
        )
        if response.raw:
            self.keep = False
            self.out.append(_Pull(response.body, RAW, 0))  # type: ignore[arg-type]
            self._write(now)
            return
        http10 = request is not None and request.version == "HTTP/1.0"
        head_only = request is not None and request.method == "HEAD"
        status = response.status
        body = response.body
        kind = type(body)
        if status in NO_CONTENT:
            framing, mode, length = "", NONE, 0
        elif kind is bytes:
            length = len(body)  # type: ignore[arg-type]
            framing, mode = f"Content-Length: {length}\r\n", BYTES
        elif kind is list:
            given = response.length
            length = _parts_length(body) if given is None else given  # type: ignore[arg-type]
            framing, mode = f"Content-Length: {length}\r\n", PARTS
        elif response.length is not None:
            length = response.length
            framing, mode = f"Content-Length: {length}\r\n", LENGTH
        elif http10:
            framing, mode, length, keep = "", CLOSE, 0, False  # close-delimited (RFC 9112 §6.3)
        else:
            framing, mode, length = "Transfer-Encoding: chunked\r\n", CHUNKED, 0
        self.keep = keep
        try:
            head = render_head(status, response.headers, worker.server, framing, keep, http10)
        except (UnsafeHeader, UnicodeEncodeError) as exc:
            worker.error_log.error(f"handler produced an invalid header: {exc}")
            self._release_response()
            self.respond(self._error_response(InternalError()), now)
            return
        self.head_length = len(head)
        if head_only or mode == NONE:
            self._send(head, now)
            return
        if mode == BYTES and length <= COALESCE:
            self._send(head + body, now)  # type: ignore[operator]
            return
        if mode == BYTES:
            self.out.append(head)
            self.out.append(body)
        elif mode == PARTS:
            self._queue_parts(head, body)  # type: ignore[arg-type]
        else:
            self.out.append(head)
            self.out.append(_Pull(body, mode, length))  # type: ignore[arg-type]
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
        """The common case, one buffer (head and small body): one send, no queue handling."""
        try:
            sent = self.sock.send(data)
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

    def _write(self, now: float) -> None:
        try:
            done = self._flush(now)
        except ClientGone as gone:
            self.abort(str(gone))
            return
        except BodyFailed:  # a broken body iterator aborts its connection, nothing else
            self.worker.error_log.error(f"response body failed: {traceback.format_exc()}")
            self.abort("response body failed")
            return
        if done:
            self._finish(now)
        elif self.state != WRITE:
            self.state = WRITE
            self.deadline = now + self.worker.timeouts.send
            self.worker.epoll.modify(self.fd, EPOLLOUT)

    def _flush(self, now: float) -> bool:
        """Write queued items until done (True) or the socket is full (False)."""
        out = self.out
        sock = self.sock
        written = self.written
        try:
            while out:
                item = out[0]
                kind = type(item)
                if kind is bytes or kind is memoryview:
                    flags = socket.MSG_MORE if len(out) > 1 and type(out[1]) is list else 0
                    sent = sock.send(item, flags)
                    written += sent
                    if sent == len(item):
                        out.popleft()
                    else:
                        out[0] = memoryview(item)[sent:]
                        break
                elif kind is list:  # [fd, offset, count] of a file range
                    sent = os.sendfile(self.fd, item[0], item[1], item[2])
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
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            raise ClientGone(f"write failed: {exc.strerror}") from None
        if written != self.written:
            self.written = written
            self.deadline = now + self.worker.timeouts.send
        return not out

    def _finish(self, now: float) -> None:
        worker = self.worker
        request = self.request
        keep = self.keep
        if worker.access_log_enabled:
            worker.access_log.record(
                request, self.remote, self.status, max(self.written - self.head_length, 0),
                time.monotonic() - self.started if self.started else 0.0, _line(self.slot_line),
            )
        # After an error before a request was parsed or its body read, the client may still be
        # sending: linger so that a reset does not destroy the reply.
        linger = request is None or self.body_pending or bool(self.buffer)
        self._cleanup()
        if request is not None:
            worker.request_done()
        if self.state == WRITE:
            worker.epoll.modify(self.fd, EPOLLIN)
        if not keep:
            self._end(now, linger)
            return
        self.state = HEAD
        self.deadline = now + (worker.timeouts.header if self.buffer else worker.timeouts.keepalive)

    def _release_response(self) -> None:
        """Call the handler's cleanup, exactly once per response."""
        response = self.response
        if response is not None and response.cleanup is not None:
            cleanup, response.cleanup = response.cleanup, None
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - cleanup must not stop the loop
                self.worker.error_log.error(f"response cleanup failed: {traceback.format_exc()}")

    def _cleanup(self) -> None:
        """Release what the request held: the response, the body file, the scoreboard slot."""
        if self.response is not None and self.response.cleanup is not None:
            self._release_response()
        if self.body_file is not None:
            self.body_file.close()
        if self.request is not None:
            self.worker.slot.idle()
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
        self.buffer = bytearray()
        self.state = LINGER
        self.deadline = now + LINGER_SECONDS

    def _reset_on_close(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass

    def abort(self, reason: str) -> None:
        """Drop the connection mid-request (client gone, send timeout, broken body iterator)."""
        if self.request is not None or self.response is not None:
            self.worker.error_log.debug(f"{self.remote or 'unix'}: {reason}")
            if self.request is not None:
                self.worker.access_log.record(
                    self.request, self.remote, self.status or 499,
                    max(self.written - self.head_length, 0), 0.0, _line(self.slot_line),
                )
        self._cleanup()
        self.close()

    def close(self) -> None:
        if self.state == CLOSED:
            return
        if self.request is not None or self.response is not None:
            self._cleanup()
        self.state = CLOSED
        self.worker.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def idle(self) -> bool:
        return self.state == HEAD and not self.buffer and self.request is None


# Body modes of a response.
NONE, BYTES, PARTS, LENGTH, CHUNKED, CLOSE, RAW = range(7)


class _Pull:
    """An iterator body, framed as it is pulled: chunked, length-checked, close-delimited or raw."""

    __slots__ = ("finished", "iterator", "mode", "remaining", "short")

    def __init__(self, iterator: Iterator[bytes], mode: int, length: int) -> None:
        self.iterator = iter(iterator)
        self.mode = mode
        self.remaining = length
        self.finished = False
        self.short = False  # the body ended before its declared length: the framing is broken

    def pull(self) -> bytes | None:
        """The next bytes to send ("" to try again), or None when the body is complete."""
        if self.finished:
            return None
        try:
            chunk = next(self.iterator)
        except StopIteration:
            self.finished = True
            if self.mode == CHUNKED:
                return b"0\r\n\r\n"  # last-chunk and an empty trailer section (RFC 9112 §7.1)
            if self.mode == LENGTH and self.remaining:
                self.short = True
            return None
        if not chunk:
            return b""
        mode = self.mode
        if mode == CHUNKED:
            return b"%x\r\n%b\r\n" % (len(chunk), chunk)
        if mode == LENGTH:
            if len(chunk) >= self.remaining:
                chunk = chunk[: self.remaining]
                self.finished = True  # a longer body than declared is cut at the declared length
            self.remaining -= len(chunk)
        return chunk


def _body_file(chunked: bool, length: int) -> Any:
    """Where a request body is collected: memory when small, else a temporary file."""
    if chunked:  # the length is unknown: memory first, a file once it grows
        return tempfile.SpooledTemporaryFile(MEMORY_BODY)
    if length <= MEMORY_BODY:
        return io.BytesIO()
    return tempfile.TemporaryFile()


def _parts_length(parts: list[bytes | FileRange]) -> int:
    return sum(len(part) if type(part) is bytes else part.count for part in parts)  # type: ignore


def _line(raw: bytes) -> str:
    return raw.decode("latin-1") if raw else "-"
