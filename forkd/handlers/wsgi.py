"""The WSGI handler (PEP 3333): a route whose requests are answered by a Python application.

Theory of operation
-------------------
The worker's loop stays the only thing that talks to clients; the application runs beside it in
a small pool of threads (`wsgi.threads` per route and worker), because an app may block (a
database, a sleep) and the loop must not:

    loop: head + whole body ──handle()──▶ WsgiExchange ──submit──▶ job queue ──▶ app thread
                                                                                 │ app(environ,
    loop: respond / resume ◀── on_news ◀── eventfd (reactor) ◀── notify ◀── chunks ┘ start_response)

- The connection reads the whole request first (`reads_body`), so the app's wsgi.input never
  waits for a client (forkd.handlers.wsgi_environ).
- At most `threads + queue` requests of a route are in a worker at once (running, or queued for a
  thread); beyond that the answer is 503 with Retry-After, at once.
- The app thread passes the response to the loop through the exchange: status and headers once
  committed (at the first non-empty chunk, or the end), then body chunks into a buffer of at most
  BUFFER_BYTES. When the buffer is full the app thread waits (back-pressure: a slow client slows
  its app down, memory stays bounded); the loop never waits for the app thread. After each change
  the app thread adds the exchange to the handler's news list and writes the handler's eventfd,
  which the reactor watches; the loop then answers or resumes the connection (`on_news`).
- A response whose app finished before the loop looked is sent whole, with Content-Length. One
  still running after GATHER_WAIT is streamed: Content-Length when the app declared one, else
  chunked (close-delimited to HTTP/1.0 clients). An unwrapped wsgi.file_wrapper over a regular
  file goes out with sendfile from the file's current position.
- `close()` of the app's iterable is called exactly once, by the app thread, however the request
  ended: finished, app error, client gone. When the loop gives up on an exchange (the client left,
  a timeout), it marks it cancelled and wakes the app thread, which stops iterating, closes, and
  takes the next job. A file wrapper sent with sendfile is closed by the loop once it is sent.
- `wsgi.timeout` bounds the wait for the response to start (then 504, if nothing was sent) and
  the silence between two chunks (then the response is cut). A thread cannot be killed in Python:
  a timed-out app keeps its thread until it returns. The log line names the app and the request
  line and shows the thread's stack, so the operator sees where it hangs. An app still running
  after timeouts.worker is stuck for good: the worker asks the master to replace it gracefully
  (context.retire), and the thread ends with the old worker.
- Errors: an exception from the app before its response started is a 500 (the traceback goes to
  the error log only); after it started, the connection is cut. start_response refuses a bad
  status line and hop-by-hop headers (PEP 3333): the app sees an exception, the client a 500
  with the connection closed. A body shorter than its Content-Length is logged and closes the
  connection.

The app itself is imported when the handler is built, i.e. in the worker after fork (new code on
each reload), unless `preload` imported it in the master first (wsgi_environ.preload_apps).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from collections import deque
from types import TracebackType
from typing import Any

from forkd import SERVER_SOFTWARE
from forkd.config import WsgiConfig
from forkd.handlers.base import HandlerContext, Reply
from forkd.handlers.paths import normalize, strip_prefix
from forkd.handlers.wsgi_environ import (
    AppProtocolError,
    Errors,
    FileWrapper,
    Input,
    build_environ,
    check_start_response,
    fixed_environ,
    load_app,
    own_body,
)
from forkd.http.errors import GatewayTimeout, InternalError, ServiceUnavailable
from forkd.http.request import Request
from forkd.http.response import FileRange, Response
from forkd.logs import ErrorLog
from forkd.reactor import EPOLLIN, Timer

BUFFER_BYTES = 256 * 1024  # response bytes an app thread may have waiting for its client
MIN_SEND_RATE = 1024  # bytes/s a client must average while a streamed response waits for it
GATHER_WAIT = 0.003  # after the first chunk, how long to wait for the end before streaming
BUSY = [("Retry-After", "1")]
STUCK_CHECK = 1.0  # seconds between looks for app threads running past timeouts.worker

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ClientDisconnected(OSError):
    """Raised by write() when the client is gone; the app may let it propagate."""


class AppBroken(InternalError):
    """The 500 for an AppProtocolError: the connection closes, since the app misbehaved."""

    close = True


HTTPErrorType = type[InternalError]


class WsgiHandler:
    """One route's application and its thread pool; built once per worker (after fork)."""

    reads_body = True

    def __init__(self, prefix: str, settings: WsgiConfig, context: HandlerContext) -> None:
        config = context.config
        self.prefix = prefix
        self.base = prefix.rstrip("/")  # SCRIPT_NAME
        self.settings = settings
        self.log: ErrorLog = context.log
        self.label = settings.app
        self.app = load_app(settings)
        self.errors = Errors(context.log, self.label)
        software = SERVER_SOFTWARE if config.server_tokens else "forkd"
        self.fixed = fixed_environ(settings, self.errors, software, config.workers > 1)
        self.reactor = context.reactor
        self.lock = threading.Lock()  # guards news, signalled and active (loop and app threads)
        self.news: list[WsgiExchange] = []  # exchanges with something new for the loop
        self.signalled = False  # the eventfd holds a wake-up the loop has not read yet
        self.active = 0  # requests accepted and not yet finished by their thread
        self.capacity = settings.threads + settings.queue
        self.jobs: queue.SimpleQueue[WsgiExchange | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.refused_logged = 0.0
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.reactor.watch(self.wake, EPOLLIN, self)
        self.running: set[WsgiExchange] = set()  # exchanges whose app runs now (under lock)
        self.stuck_after = config.timeouts.worker
        self.retire = context.retire
        self.reactor.call_at(time.monotonic() + STUCK_CHECK, self._check_stuck)

    # -- the Handler protocol (loop) ---------------------------------------------------------------
    def prepare(self, request: Request) -> None:
        request.prepared = self.split(request)

    def handle(self, request: Request) -> WsgiExchange:
        paths = request.prepared
        if not isinstance(paths, tuple):
            paths = self.split(request)  # an internal redirect, or a caller that skipped prepare
        return WsgiExchange(self, request, paths[0], paths[1])

    def split(self, request: Request) -> tuple[str, str]:
        """(SCRIPT_NAME, PATH_INFO): the route prefix from the config, and the rest of the path."""
        path = normalize(request.path)
        if path == self.base:
            return self.base, ""
        return self.base, strip_prefix(path, self.prefix)

    def shutdown(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)  # idle threads end; busy ones are daemons and die with the worker

    # -- the pool ----------------------------------------------------------------------------------
    def admit(self) -> None:
        """Count one more request in the pool, or refuse it with 503 when the pool is full."""
        with self.lock:
            full = self.active >= self.capacity
            if not full:
                self.active += 1
        if full:
            now = time.monotonic()
            if now - self.refused_logged >= 1.0:  # one line a second, not one per refusal
                self.refused_logged = now
                self.log.warning(f"wsgi {self.label}: {self.settings.threads} threads busy and "
                                 f"{self.settings.queue} requests queued: answering 503")
            raise ServiceUnavailable("the application is busy", BUSY)

    def release(self) -> None:
        with self.lock:
            self.active -= 1

    def submit(self, exchange: WsgiExchange) -> None:
        if len(self.threads) < self.settings.threads:  # started on demand, in the worker only
            thread = threading.Thread(target=self._serve_jobs, daemon=True,
                                      name=f"wsgi-{len(self.threads) + 1}")
            self.threads.append(thread)
            thread.start()
        self.jobs.put(exchange)

    def _serve_jobs(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job.run()
            finally:
                self.release()

    def _check_stuck(self, now: float) -> None:
        """An app running past timeouts.worker holds its thread for good: replace the worker."""
        with self.lock:
            running = list(self.running)
        for exchange in running:
            if not exchange.stuck and now - exchange.run_started > self.stuck_after:
                exchange.stuck = True
                self.log.error(
                    f"wsgi {self.label}: {exchange.request.request_line!r} has run for more than "
                    f"timeouts.worker ({self.stuck_after:g}s); its thread cannot be stopped, so "
                    f"this worker is replaced gracefully. Stack: {exchange.stack()}")
                if self.retire is not None:
                    self.retire(f"wsgi app stuck on {exchange.request.request_line!r}")
        self.reactor.call_at(now + STUCK_CHECK, self._check_stuck)

    # -- from app threads to the loop --------------------------------------------------------------
    def notify(self, exchange: WsgiExchange) -> None:
        """Tell the loop that `exchange` has news (app thread); one eventfd write per wake-up."""
        with self.lock:
            self.news.append(exchange)
            if self.signalled:
                return
            self.signalled = True
        os.eventfd_write(self.wake, 1)

    def on_event(self, fd: int, mask: int, now: float) -> None:
        """The eventfd is readable (loop): act on every exchange with news."""
        try:
            os.eventfd_read(self.wake)
        except BlockingIOError:
            pass
        with self.lock:
            news, self.news = self.news, []
            self.signalled = False
        for exchange in news:
            exchange.on_news(now)


class WsgiExchange:
    """One request's run of the app. Fields below `cond` are shared with the app thread."""

    def __init__(self, handler: WsgiHandler, request: Request, script_name: str,
                 path_info: str) -> None:
        self.handler = handler
        self.request = request
        self.script_name = script_name
        self.path_info = path_info
        self.timeout = handler.settings.timeout
        # Loop only.
        self.reply: Reply | None = None
        self.responded = False
        self.closed = False
        self.timer: Timer | None = None
        # Shared, under cond.
        self.cond = threading.Condition(threading.Lock())
        self.pending: tuple[int, list[tuple[str, str]], int | None] | None = None  # start_response
        self.committed = False  # headers are final: the loop may send them
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.given = 0  # body bytes the app produced
        self.finished = False  # the app produced its whole response
        self.failed: HTTPErrorType | None = None  # the app failed before its response started
        self.broken = False  # the app failed after its response started
        self.file: FileWrapper | None = None  # a file wrapper to send with sendfile
        self.file_range: tuple[int, int, int] | None = None
        self.cancelled = False  # the loop gave up on this request
        self.thread_id = 0
        self.run_started = 0.0  # when the app thread took it (monotonic)
        self.stuck = False  # reported as running past timeouts.worker

    # -- the loop's side ---------------------------------------------------------------------------
    def start(self, reply: Reply, now: float) -> None:
        handler = self.handler
        handler.admit()  # 503 when threads and queue are full
        try:
            self.body = Input(own_body(self.request.body), self.request.body_length)
        except BaseException:
            handler.release()
            raise
        self.reply = reply
        reply.set_deadline(now + self.timeout)
        handler.submit(self)

    def on_news(self, now: float) -> None:
        if self.closed:
            return
        reply = self.reply
        assert reply is not None
        if self.responded:
            reply.resume(now)
            return
        with self.cond:
            failed = self.failed
            if failed is None and self.broken:
                failed = InternalError  # it failed after committing, but nothing was sent yet
            if failed is None and not self.committed:
                return
            finished = self.finished
            whole = b"".join(self.chunks) if finished else b""
            file = self.file
            self.file = None
            if finished:
                self.chunks.clear()
                self.buffered = 0
                self.cond.notify()
        if failed is not None:
            self.responded = True
            reply.fail(failed(), now)
        elif file is not None:
            self._send_file(file, now)
        elif finished:
            self._respond_whole(whole, now)
        elif self.timer is None:
            self.timer = self.handler.reactor.call_at(now + GATHER_WAIT, self._stream)

    def _respond(self, response: Response, now: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.responded = True
        assert self.reply is not None
        self.reply.respond(response, now)

    def _respond_whole(self, body: bytes, now: float) -> None:
        assert self.pending is not None
        status, headers, length = self.pending
        if self.request.method == "HEAD":  # the head only; the app's Content-Length is kept
            self._respond(Response(status, headers, [], length=len(body) if length is None
                                   else length), now)
        elif length is None or length == len(body):
            self._respond(Response(status, headers, body), now)
        elif length < len(body):  # never more than declared (PEP 3333)
            self._respond(Response(status, headers, body[:length]), now)
        else:  # short: the client learns it from the close (logged by the app thread)
            self._respond(Response(status, headers, [body], length=length, close=True), now)

    def _send_file(self, wrapper: FileWrapper, now: float) -> None:
        assert self.pending is not None and self.file_range is not None
        status, headers, length = self.pending
        fd, offset, count = self.file_range
        if length is not None and length < count:
            count = length
        close = length is not None and length > count  # the file is shorter than declared
        self._respond(Response(status, headers, [FileRange(fd, offset, count)], length=length or count,
                               close=close, cleanup=lambda: self._close_file(wrapper)), now)

    def _close_file(self, wrapper: FileWrapper) -> None:
        try:
            wrapper.close()
        except Exception:  # noqa: BLE001 - the app's close failing costs a log line only
            self.handler.log.error(f"wsgi {self.handler.label}: close() failed: "
                                   f"{traceback.format_exc()}")

    def _stream(self, now: float) -> None:
        """The app is still producing after GATHER_WAIT: answer now, stream the rest."""
        self.timer = None
        if self.closed or self.responded:
            return
        assert self.pending is not None
        status, headers, length = self.pending
        self._respond(Response(status, headers, body=self, length=length, min_rate=MIN_SEND_RATE),
                      now)

    def read(self) -> bytes | None:
        """The response body as a BodySource (loop): b"" when the app has nothing new yet."""
        with self.cond:
            if self.chunks:
                data = b"".join(self.chunks)
                self.chunks.clear()
                self.buffered = 0
                self.cond.notify()  # the app thread may go on
                return data
            if self.broken:
                raise RuntimeError("the application failed after its response started")
            if self.finished:
                return None
        assert self.reply is not None
        self.reply.set_deadline(time.monotonic() + self.timeout)
        return b""

    def on_timeout(self, now: float) -> None:
        handler = self.handler
        what = "between two chunks" if self.responded else "to start its response"
        handler.log.error(
            f"wsgi {handler.label}: {self.request.request_line!r} took more than "
            f"{self.timeout:g}s {what}; its thread cannot be stopped and runs on. "
            f"Stack: {self.stack()}")
        if not self.responded:
            self.responded = True
            assert self.reply is not None
            self.reply.fail(GatewayTimeout(f"{handler.label} did not answer in time"), now)

    def stack(self) -> str:
        """The Python stack of the thread running this app (for the error log)."""
        frame = sys._current_frames().get(self.thread_id)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(not running)"

    def close(self) -> None:
        """The request is over (loop): the app thread stops at its next chunk. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        with self.cond:
            self.cancelled = True
            self.chunks.clear()
            self.buffered = 0
            file, self.file = self.file, None
            self.cond.notify_all()
        if file is not None:  # handed over but never sent
            self._close_file(file)

    # -- the app thread's side ---------------------------------------------------------------------
    def run(self) -> None:
        """Call the app and pass its response to the loop; never raises."""
        handler = self.handler
        self.thread_id = threading.get_ident()
        result: Any = None
        if self.cancelled:  # it waited in the queue past its timeout, or its client left
            self.body.close()
            return
        self.run_started = time.monotonic()
        with handler.lock:
            handler.running.add(self)
        try:
            environ = build_environ(self.request, self.script_name, self.path_info, handler.fixed,
                                    self.body)
            result = handler.app(environ, self.start_response)
            if isinstance(result, FileWrapper) and self._offer_file(result):
                result = None  # the loop sends and closes it
                return
            announce = type(result) not in (list, tuple)  # a list is whole: announce it once
            for chunk in result:
                if not self._put(chunk, announce):
                    break  # cancelled
            self._finish()
        except Exception as exc:  # noqa: BLE001 - the app's bug costs its request only
            self._app_failed(exc)
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception as exc:  # noqa: BLE001 - as above
                    self._app_failed(exc)
            self.body.close()
            with handler.lock:
                handler.running.discard(self)

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: ExcInfo | None = None) -> Any:
        if exc_info is not None:
            try:
                if self.committed:
                    raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late, re-raise
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.pending is not None:
            raise AppProtocolError("start_response called a second time without exc_info")
        self.pending = check_start_response(status, headers)
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's write() callable: buffered, waits while the buffer is full."""
        if not self._put(data, True):
            raise ClientDisconnected("the client is gone")

    def _commit(self) -> None:
        """Make the headers final (cond held)."""
        if not self.committed:
            if self.pending is None:
                raise AppProtocolError("the application sent a body before calling start_response")
            self.committed = True

    def _put(self, chunk: bytes, announce: bool) -> bool:
        if type(chunk) is not bytes:
            if not isinstance(chunk, (bytearray, memoryview)):
                raise AppProtocolError(f"the application produced {type(chunk).__name__}, "
                                       "not bytes")
            chunk = bytes(chunk)
        if not chunk:
            return not self.cancelled
        with self.cond:
            self._commit()
            while self.buffered >= BUFFER_BYTES and not self.cancelled:
                self.handler.notify(self)  # a long list: the loop must start streaming now
                self.cond.wait()
            if self.cancelled:
                return False
            self.chunks.append(chunk)
            self.buffered += len(chunk)
            self.given += len(chunk)
        if announce:
            self.handler.notify(self)
        return True

    def _finish(self) -> None:
        with self.cond:
            self._commit()
            self.finished = True
            assert self.pending is not None
            length = self.pending[2]
            short = length is not None and self.given < length and not self.cancelled
            if short and self.request.method != "HEAD":
                self.handler.log.error(
                    f"wsgi {self.handler.label}: {self.request.request_line!r}: body of "
                    f"{self.given} bytes is shorter than its Content-Length {length}; "
                    "connection closed")
        self.handler.notify(self)

    def _offer_file(self, wrapper: FileWrapper) -> bool:
        """Hand an unwrapped file wrapper to the loop for sendfile, when it is a regular file."""
        found = wrapper.file_range()
        if found is None:
            return False
        with self.cond:
            self._commit()
            if self.cancelled:
                wrapper.close()
                return True
            self.file_range = found
            self.file = wrapper
            self.finished = True
        self.handler.notify(self)
        return True

    def _app_failed(self, exc: Exception) -> None:
        handler = self.handler
        if self.cancelled:  # the request is over anyway (client gone, timeout)
            handler.log.debug(f"wsgi {handler.label}: {self.request.request_line!r}: "
                              f"{type(exc).__name__} after the request ended: {exc}")
            return
        handler.log.error(f"wsgi {handler.label}: {self.request.request_line!r} failed: "
                          f"{traceback.format_exc()}")
        with self.cond:
            if self.committed:
                self.broken = True
            else:
                self.failed = AppBroken if isinstance(exc, AppProtocolError) else InternalError
        handler.notify(self)
