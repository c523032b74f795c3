"""The worker process: after-fork set-up, the selector loop, heartbeat, graceful retirement.

Theory of operation
-------------------
The master forks a worker and calls `run_worker`; its return value is the exit code. A worker is
one single-threaded process with one epoll instance over:

- the shared listeners, registered with EPOLLEXCLUSIVE so that a new connection wakes one worker
  rather than all of them (several workers wait on the same listening sockets). The kernel wakes
  the first waiter in registration order, so after each accept a worker re-registers (moving to
  the back of the line) and, in a burst, yields the CPU once: keep-alive connections opened
  together then spread over the workers instead of all landing on the first one;
- its own connections (forkd.connection.Connection: the per-connection HTTP state machine), each
  registered for EPOLLIN, switched to EPOLLOUT only while a response waits for the socket; on a
  `proxy_protocol` listener a connection starts as a forkd.proxy_prelude.ProxyPrelude (trusted
  peers only) that reads the PROXY header and then puts the real connection in its place;
- every other descriptor a request needs (a CGI script's pipes, the pidfd of a script being
  stopped), registered by its handler through the reactor (forkd.reactor) with a watcher to call;
- the read end of a self-pipe given to signal.set_wakeup_fd, so a signal interrupts the wait.

That epoll wait is the only place the worker ever waits: no handler reads a pipe, sleeps or polls
by itself, so one slow script or client never delays another, and the heartbeat below is true by
construction (a worker is stuck only if its loop is).

Signal handlers only record the signal; the loop acts on it: TERM retires gracefully (stop
accepting, finish requests in flight, answer the next request of each kept-alive connection with
`Connection: close`, close idle ones after a short grace, exit 0, within timeouts.graceful); INT
and QUIT exit at once; USR1 reopens the logs; HUP is ignored (reload is the master's business).

Every turn of the loop at most every TICK seconds the worker writes HEARTBEAT on its notify pipe,
publishes its connection gauges in its scoreboard slot,
expires deadlines (header, body, keep-alive, send; see Connection), resumes accepting after a
pause and checks that its master is still alive (a worker never outlives its master). The access
log is flushed at the end of each turn, i.e. at once when the loop goes idle.

Accepting is bounded: limits.connections per worker (when full, the oldest idle connection is
closed first, or the newcomer gets a 503), and accept() failing with EMFILE/ENFILE frees the
reserve descriptor to answer the newcomer 503 and pauses accepting briefly instead of spinning.

A worker never dies because of what a client sent: client input can only produce an HTTPError
(a status reply) or a dropped connection; a handler's exception becomes a 500, and any other
exception while handling one connection is logged and costs that connection only.
"""

from __future__ import annotations

import errno
import os
import random
import select
import signal
import socket
import ssl
import time
import traceback
from functools import partial
from typing import Any

from setproctitle import setproctitle

from forkd import SERVER_SOFTWARE, scoreboard
from forkd.config import Config
from forkd.connection import BODY, HANDLE, HEAD, LINGER, WRITE, Connection
from forkd.handlers.base import HandlerContext
from forkd.http.request import ConnectionInfo
from forkd.logs import AccessLog, ErrorLog
from forkd.proxy_prelude import PRELUDE, ProxyPrelude
from forkd.reactor import Reactor
from forkd.routing import Router
from forkd.services import Services
from forkd.supervision import (
    BOOT_FAILED,
    EXIT_BOOT_FAILED,
    EXIT_OK,
    HEARTBEAT,
    READY,
    WANTS_RETIREMENT,
    WorkerContext,
)
from forkd.tls_connection import SHAKE, TlsConnection

TICK = 0.25  # seconds between heartbeats / deadline sweeps (the poll timeout when idle)
RETIRE_GRACE = 1.0  # seconds idle kept-alive connections may still send a request after TERM
# Before timeouts.graceful runs out (and the master kills a worker still busy), tunnels (WebSockets)
# are told the server is going away, so that they close with 1001 instead of being cut.
GOODBYE_AHEAD = 1.0
ACCEPT_PAUSE = 0.5  # seconds without accepting after running out of file descriptors
DRAIN_LIMIT = 1024  # queued connections a retiring worker still takes before closing its listeners
YIELD_BURST = 100.0  # accepts after which this worker stops yielding the CPU to its siblings...
YIELD_RATE = 100.0  # ... and how fast that allowance comes back, per second
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
    b"Connection: close\r\nRetry-After: 1\r\n\r\nserver overloaded.\r\n"
)

# Connection states as scoreboard gauges (forkd.scoreboard.CONNECTION_STATES); an idle
# kept-alive connection is HEAD with nothing received yet.
_GAUGE = scoreboard.CONNECTION_STATES.index
GAUGE_IDLE = _GAUGE("idle")
GAUGE_OF_STATE = {
    PRELUDE: _GAUGE("handshake"), SHAKE: _GAUGE("handshake"), HEAD: _GAUGE("reading"),
    BODY: _GAUGE("reading"), HANDLE: _GAUGE("handling"), WRITE: _GAUGE("writing"),
    LINGER: _GAUGE("closing"),
}

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)


def run_worker(context: WorkerContext) -> int:
    """Run in the forked child until retired; return the exit code (the master calls os._exit)."""
    try:
        worker = Worker(context)
    except Exception as exc:  # noqa: BLE001 - any boot failure is EXIT_BOOT_FAILED
        _boot_failure(context.config, traceback.format_exc())
        reason = traceback.format_exception_only(exc)[-1].strip().encode("utf-8", "replace")
        try:  # the worker may not be able to open its error log: the master can
            os.write(context.notify_fd, BOOT_FAILED + reason[:500])
        except OSError:
            pass
        return EXIT_BOOT_FAILED
    return worker.run()


def _boot_failure(config: Config, text: str) -> None:
    try:
        ErrorLog(config.error_log, "error").error(f"worker failed to boot: {text}")
    except Exception:  # noqa: BLE001 - last resort: stderr
        os.write(2, f"forkd: worker failed to boot: {text}\n".encode("utf-8", "replace"))


class Worker:
    """The loop of one worker process and the state shared by its connections."""

    def __init__(self, context: WorkerContext) -> None:
        config = context.config
        self.context = context
        self.config = config
        self.timeouts = config.timeouts
        self.limits = config.limits
        self.slot = context.slot
        self.notify_fd = context.notify_fd
        os.set_blocking(self.notify_fd, False)  # a master slow to read must never stall the loop
        self.parent = os.getppid()
        self.signals: list[int] = []
        self._install_signals()
        setproctitle(f"forkd: worker [gen {context.generation}]")
        self.error_log = ErrorLog(config.error_log, config.log_level)
        self.access_log = AccessLog(config.access_log, config.log_format)
        self.reactor = Reactor()
        self.epoll = self.reactor.epoll
        self.router = Router(config, HandlerContext(config, self.error_log, self.reactor,
                                                    self.ask_retirement, context.slot.board))
        self.services = Services(
            config, self.reactor, self.router, self.error_log, self.access_log, context.slot,
            SERVER_SOFTWARE if config.server_tokens else "forkd", self.forget, self.request_done,
        )
        self.connections: dict[int, Connection | ProxyPrelude] = {}
        self.ready = self.services.ready  # connections with buffered pipelined requests
        self.retiring = False
        self.retire_at = 0.0  # idle connections are closed from then on
        self.give_up_at = 0.0  # timeouts.graceful after TERM
        self.goodbye_at = 0.0  # GOODBYE_AHEAD before that: tunnels are told to close
        self.stopping = False
        self.served = 0
        limit = self.limits.worker_requests
        # Up to 10% jitter so that workers started together do not all retire together.
        self.retire_after = limit + random.randint(0, limit // 10) if limit else 0
        self.asked_retirement = False
        self.accept_paused_until = 0.0
        self.reserve_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.listeners = {sock.fileno(): sock for sock in context.listeners}
        self.rotate_accepts = config.workers > 1
        self.yield_tokens = YIELD_BURST
        self.yield_refilled = time.monotonic()
        self.listener_info = {fd: _listener_facts(sock) for fd, sock in self.listeners.items()}
        self.tls_contexts = context.tls_contexts
        self.proxy_fds = context.proxy_fds
        self.epoll.register(self.wakeup_read, EPOLLIN)
        self._listen(True)

    # -- set-up ----------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(signum, self._record_signal)
        for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # CGI children are reaped by their handler
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def _record_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _listen(self, on: bool) -> None:
        for fd, sock in self.listeners.items():
            if on:
                sock.setblocking(False)
                self.epoll.register(fd, EPOLLIN | EPOLLEXCLUSIVE)
            else:
                try:
                    self.epoll.unregister(fd)
                except OSError:
                    pass

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> int:
        self.slot.set_state(scoreboard.READY)
        self._notify(READY)
        self.error_log.debug(f"worker of generation {self.context.generation} ready")
        next_tick = 0.0
        connections = self.connections
        listeners = self.listeners
        watchers = self.reactor.watchers
        reactor = self.reactor
        poll = self.epoll.poll
        access_log = self.access_log
        services = self.services
        while not self.stopping:
            if self.ready:
                events = poll(0)
            elif reactor.has_timers:
                events = poll(reactor.timeout(time.monotonic(), TICK))
            else:
                events = poll(TICK)
            now = time.monotonic()
            for fd, mask in events:
                connection = connections.get(fd)
                if connection is not None:
                    try:
                        if mask & EPOLLOUT:
                            connection.on_writable(now)
                        else:
                            connection.on_readable(now)
                    except Exception:  # noqa: BLE001 - a bug costs one connection, not the worker
                        self._connection_failed(connection)
                elif fd in watchers:
                    self._watcher_event(fd, mask, now)
                elif fd in listeners:
                    try:
                        self._accept(listeners[fd], fd, now)
                    except Exception:  # noqa: BLE001 - e.g. epoll_ctl out of memory: try again later
                        self.error_log.error(f"accept failed: {traceback.format_exc()}")
                elif fd == self.wakeup_read:
                    self._drain_signals(now)
            if reactor.has_timers:
                self._run_timers(now)
            if self.ready:
                self._serve_ready(now)
            if services.posted:
                self._send_posted(now)  # every answer of the turn, at once (forkd.connection)
            if now >= next_tick:
                next_tick = now + TICK
                self._tick(now)  # it sees the connections as their answers left them
                if services.posted:
                    self._send_posted(now)  # answers to timeouts
            if access_log.buffer:
                access_log.flush()
        self._shutdown()
        return EXIT_OK

    def _connection_failed(self, connection: Connection | ProxyPrelude) -> None:
        self.error_log.error(f"connection failed: {traceback.format_exc()}")
        try:
            connection.abort("internal error")
        except Exception:  # noqa: BLE001 - make sure the connection is gone at least
            self.forget(connection)
            connection.sock.close()

    def _watcher_event(self, fd: int, mask: int, now: float) -> None:
        try:
            self.reactor.watchers[fd].on_event(fd, mask, now)
        except Exception:  # noqa: BLE001 - a handler bug costs its request, not the worker
            self.error_log.error(f"event handler failed: {traceback.format_exc()}")
            self.reactor.unwatch(fd)

    def _run_timers(self, now: float) -> None:
        try:
            self.reactor.run_timers(now)
        except Exception:  # noqa: BLE001 - as above
            self.error_log.error(f"timer failed: {traceback.format_exc()}")

    def _send_posted(self, now: float) -> None:
        posted, self.services.posted = self.services.posted, []
        for connection in posted:
            try:
                connection.send_posted(now)
            except Exception:  # noqa: BLE001 - as in run()
                self._connection_failed(connection)

    def _serve_ready(self, now: float) -> None:
        ready = self.ready[:]  # emptied in place: connections append to this very list
        self.ready.clear()
        for connection in ready:
            try:
                connection.process(now)
            except Exception:  # noqa: BLE001 - as in run()
                self._connection_failed(connection)

    def _tick(self, now: float) -> None:
        self._notify(HEARTBEAT)
        if os.getppid() != self.parent:
            self.error_log.warning("master is gone; worker exits")
            self.stopping = True
            return
        for connection in [c for c in self.connections.values() if c.deadline <= now]:
            try:
                connection.on_timeout(now)
            except Exception:  # noqa: BLE001 - as in run()
                self._connection_failed(connection)
        if self.accept_paused_until and now >= self.accept_paused_until and not self.retiring:
            self.accept_paused_until = 0.0
            self._listen(True)
        if self.retiring:
            self._retire_step(now)
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        """Connections by state, CGI scripts running and requests waiting in a route's line,
        into this worker's scoreboard slot."""
        counts = [0] * scoreboard.GAUGES
        for connection in self.connections.values():
            state = connection.state
            if state == HEAD and connection.idle:
                counts[GAUGE_IDLE] += 1
            elif state in GAUGE_OF_STATE:
                counts[GAUGE_OF_STATE[state]] += 1
        handlers = self.router.handlers()
        counts[scoreboard.G_CGI] = sum(getattr(h, "scripts_running", 0) for h in handlers)
        counts[scoreboard.G_WAITING] = sum(getattr(h, "requests_waiting", 0) for h in handlers)
        self.slot.set_gauges(counts)

    def _notify(self, message: bytes) -> None:
        try:
            os.write(self.notify_fd, message)
        except BlockingIOError:
            pass  # the master is busy; the next heartbeat will do
        except OSError:
            self.stopping = True  # EPIPE: the master is gone

    # -- signals and retirement ------------------------------------------------------------------

    def _drain_signals(self, now: float) -> None:
        try:
            while os.read(self.wakeup_read, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        signals, self.signals = self.signals, []
        for signum in signals:
            if signum == signal.SIGTERM:
                self._begin_retirement(now)
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self.stopping = True
            elif signum == signal.SIGUSR1:
                self.error_log.reopen()  # logs its own failure
                if not self.access_log.reopen():
                    file = self.access_log.file
                    self.error_log.error(f"cannot reopen {file.target}: {file.problem}; "
                                         "still writing to the old file")
                self.error_log.info("worker reopened its logs")

    def _begin_retirement(self, now: float) -> None:
        if self.retiring:
            return
        self.retiring = self.services.retiring = True
        self.slot.set_state(scoreboard.RETIRING)
        self.retire_at = now + min(RETIRE_GRACE, self.timeouts.graceful)
        self.give_up_at = now + self.timeouts.graceful
        self.goodbye_at = self.give_up_at - min(GOODBYE_AHEAD, self.timeouts.graceful / 2)
        self._listen(False)
        self._close_listeners(now)
        self.accept_paused_until = 0.0
        for handler in self.router.handlers():
            quiesce = getattr(handler, "quiesce", None)
            if quiesce is not None:
                quiesce()  # e.g. fastcgi: kept connections to php-fpm are not kept any longer
        self.error_log.debug("worker retiring")

    def _close_listeners(self, now: float) -> None:
        """Take the connections already queued, then close this worker's copies of the listeners.

        Once every process has closed its copy (the master closes its own when it stops), the
        kernel refuses new connections at once: a client learns that nothing was sent, instead of
        waiting in a queue nobody reads and being reset, request sent, when the master exits.
        During a reload the new generation holds copies, so clients see no change.
        """
        for fd, listener in self.listeners.items():
            for _ in range(DRAIN_LIMIT):
                if self.accept_paused_until or not select.select([listener], [], [], 0)[0]:
                    break
                self._accept(listener, fd, now)  # answered with Connection: close (retiring)
            listener.close()
        self.listeners.clear()  # in place: the loop holds a reference to this dict

    def _retire_step(self, now: float) -> None:
        if now >= self.retire_at:
            for connection in [c for c in self.connections.values() if c.idle]:
                connection.close()
        if self.goodbye_at and now >= self.goodbye_at:
            self.goodbye_at = 0.0
            for connection in list(self.connections.values()):
                if isinstance(connection, Connection):  # not a PROXY header still arriving
                    connection.going_away(now)
        if not self.connections or now >= self.give_up_at:
            self.stopping = True

    def _shutdown(self) -> None:
        for connection in list(self.connections.values()):
            connection.abort("worker stopping")
        for handler in self.router.handlers():
            stop = getattr(handler, "shutdown", None)
            if stop is not None:
                stop()  # e.g. CGI: scripts still being stopped are killed and reaped now
        self.access_log.flush()
        self.reactor.close()
        failures = self.services.tls_failures.summary()  # each class was logged once: the counts
        if failures:
            self.error_log.info(f"TLS handshake failures in this worker: {failures}")

    # -- accepting -------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, fd: int, now: float) -> None:
        try:
            sock, address = _accept(listener, self.listener_info[fd][0])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._out_of_descriptors(listener, now)
            elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                self.error_log.error(f"accept failed: {exc}")
            return
        try:
            info = self._connection_info(sock, address, fd)
        except OSError:  # reset before we looked at it
            sock.close()
            return
        if len(self.connections) >= self.limits.connections and not self._close_oldest_idle():
            _refuse(sock)
            return
        context = self.tls_contexts.get(fd)
        if fd in self.proxy_fds:
            if not self.services.trusted.trusts(info.remote_addr):
                sock.close()  # a PROXY header is accepted from trusted_proxies only
                return
            prelude = ProxyPrelude(self.services, sock, info, now, partial(self._open, context))
            self.connections[prelude.fd] = prelude
        else:
            self._open(context, sock, info, now)
        self.epoll.register(sock.fileno(), EPOLLIN)
        if self.rotate_accepts and not (self.retiring or self.accept_paused_until):
            # EPOLLEXCLUSIVE wakes the first waiting epoll on the listener's wait queue, and
            # registration appends to it: without this the first worker would take nearly every
            # connection while the others idle. Re-registering moves us to the back of the queue,
            # so connections go round the workers (two epoll_ctl calls per accepted connection).
            self.epoll.unregister(fd)
            self.epoll.register(fd, EPOLLIN | EPOLLEXCLUSIVE)
            self._let_others_accept(now)

    def _open(self, context: ssl.SSLContext | None, sock: socket.socket, info: ConnectionInfo,
              now: float) -> Connection:
        """The connection for an accepted socket (after its PROXY header, if any), in the table."""
        if context is None:
            connection = Connection(self.services, sock, info, now)
        else:
            connection = TlsConnection(self.services, sock, info, now, context)
        self.connections[connection.fd] = connection
        return connection

    def _let_others_accept(self, now: float) -> None:
        """Yield the CPU after an accept, at most YIELD_RATE times a second.

        In a burst of new connections (a browser or a load tester opening many at once) this
        worker, already running, would otherwise win every accept race against a sibling that is
        still waking up, and keep every connection of the burst for their whole keep-alive life.
        Under a steady stream of short connections all workers are busy and share accepts anyway,
        so the yields are rationed rather than paid on every accept.
        """
        tokens = min(YIELD_BURST, self.yield_tokens + (now - self.yield_refilled) * YIELD_RATE)
        self.yield_refilled = now
        if tokens >= 1.0:
            tokens -= 1.0
            os.sched_yield()
        self.yield_tokens = tokens

    def _connection_info(self, sock: socket.socket, address: Any, fd: int) -> ConnectionInfo:
        sock.setblocking(False)
        family, server_addr, server_port, nodelay_inherited = self.listener_info[fd]
        if family == socket.AF_UNIX:
            return ConnectionInfo("", 0, "", 0, trusted_peer=self.services.trusted.unix)
        if not nodelay_inherited:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server_addr in ("0.0.0.0", "::"):  # a wildcard listener: which address was reached?
            server_addr, server_port = sock.getsockname()[:2]
        info = ConnectionInfo(address[0], address[1], server_addr, server_port)
        trusted = self.services.trusted
        if trusted and trusted.trusts(address[0]):
            info.trusted_peer = True  # its Forwarded / X-Forwarded-For may name the client
        return info

    def _close_oldest_idle(self) -> bool:
        """Close the idle connection waiting longest (the one whose keep-alive ends first)."""
        idle = [c for c in self.connections.values() if c.idle]
        if not idle:
            return False
        min(idle, key=lambda c: c.deadline).close()
        return True

    def _out_of_descriptors(self, listener: socket.socket, now: float) -> None:
        """EMFILE/ENFILE: answer the newcomer 503 using the reserve fd, then pause accepting."""
        self._close_oldest_idle()
        if self.reserve_fd >= 0:
            os.close(self.reserve_fd)
            self.reserve_fd = -1
            try:
                sock, _ = listener.accept()
                _refuse(sock)
            except OSError:
                pass
            try:
                self.reserve_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        if not self.accept_paused_until:
            self.error_log.warning("out of file descriptors: pausing accept")
            self.accept_paused_until = now + ACCEPT_PAUSE
            self._listen(False)

    # -- services for connections ----------------------------------------------------------------

    def forget(self, connection: Connection | ProxyPrelude) -> None:
        """Drop a connection whose socket is closed next.

        No epoll_ctl(DEL): closing the descriptor takes it out of the epoll set, because no other
        descriptor ever refers to a client socket (never duplicated; created close-on-exec, so a
        CGI script never holds one) — one system call less per connection.
        """
        self.connections.pop(connection.fd, None)

    def ask_retirement(self, why: str) -> None:
        """Have the master start a replacement, then retire this worker gracefully."""
        if not self.asked_retirement:
            self.asked_retirement = True
            self.error_log.warning(f"worker asks to be replaced: {why}")
            self._notify(WANTS_RETIREMENT)

    def request_done(self) -> None:
        self.served += 1
        if self.retire_after and self.served >= self.retire_after and not self.asked_retirement:
            self.asked_retirement = True
            self._notify(WANTS_RETIREMENT)


def _listener_facts(sock: socket.socket) -> tuple[int, str, int, bool]:
    """(family, address, port, whether accepted sockets inherit TCP_NODELAY from the listener).

    Linux copies a listener's TCP_NODELAY into every socket it accepts: set once here, it saves a
    setsockopt per connection. Should the listener refuse it, each connection gets it instead.
    """
    if sock.family == socket.AF_UNIX:
        return socket.AF_UNIX, "", 0, False
    address = sock.getsockname()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        inherited = True
    except OSError:
        inherited = False
    return sock.family, address[0], address[1], inherited


def _accept(listener: socket.socket, family: int) -> tuple[socket.socket, Any]:
    """listener.accept() without its per-call conversion of family and type to enums (~2.5 µs of a
    Connection: close request): the C-level accept, wrapped with the family known since boot."""
    fd, address = listener._accept()  # type: ignore[attr-defined]
    return socket.socket(family, socket.SOCK_STREAM, 0, fd), address


def _refuse(sock: socket.socket) -> None:
    """503 to a connection we cannot keep, best effort, without blocking."""
    try:
        sock.setblocking(False)
        sock.send(REFUSAL)
    except OSError:
        pass
    sock.close()
