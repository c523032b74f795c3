"""The master process: listeners, the worker table, signals, generations, shutdown.

Theory of operation
-------------------
The master binds the listeners (or adopts systemd's), forks the workers and then only supervises:
it never parses HTTP and never touches a client connection. Everything happens in one loop that
sleeps in a selector over (a) a self-pipe that `signal.set_wakeup_fd` writes to when any signal
arrives and (b) one notify pipe per worker. Signal handlers only append the signal number to a
queue; the loop drains the queue and dispatches each signal through the explicit
`self.signal_table`, so no logging, forking or reaping ever runs inside a handler.

Workers are grouped in *generations*. A generation is one config plus the listeners it serves. At
start and on every HUP a new generation is *pending*: its workers are forked and the master waits
until each one has written READY on its pipe. Only then is the generation *committed*: it becomes
the serving one and the previous generation's workers get TERM (retire gracefully: finish what they
hold, then exit). A pending generation whose worker dies before READY, or that is not ready within
BOOT_TIMEOUT, is killed and the old generation keeps serving; the reload is reported as failed.
Listeners whose address the new config still lists are the very same sockets, so nothing ever stops
listening; addresses that disappeared are closed once the last worker of the generation that used
them is gone.

The scoreboard (forkd.scoreboard) is created before the first fork: the master claims a slot for
each worker it forks, folds a dead worker's counters into the totals when it reaps it, and keeps
the header (generation, reloads and their verdicts, restarts, the drain flag) current. Draining:
SIGUSR2 applies what `forkd -s drain|undrain` wrote into the header; a TERM with timeouts.drain
first drains for that long (listeners open, health routes 503), then stops gracefully.

Liveness: each worker writes a heartbeat byte at least once a second, and its scoreboard Slot says
which request it is serving and since when. A worker silent for `timeouts.worker`, or busy with one
request for that long, is killed with SIGKILL and replaced; the error log names its pid and the
request. A worker that wants to retire (`limits.worker_requests`) first gets a replacement; only
when that one is READY does the old one get TERM, and at most one such recycle runs at a time, so
capacity never drops. A worker that dies before READY, or within CRASH_WINDOW of its start (unless
an outside SIGKILL ended it), is a crash: replacements are then delayed by a back-off that doubles
up to BACKOFF_MAX, so a broken deployment never becomes a fork storm. Every exit is logged with its
cause. The master is a child subreaper: scripts a killed worker left running become its children,
and their process groups are killed when the worker is reaped. When a stop begins the master
closes its listeners, so new connections are refused instead of queued for nobody. Its last log
line says that it is exiting, with which code and why (the stop signal, a start that failed, a
crash), so an error log always ends with the reason the server went away.

The master keeps the privileges it started with and only workers switch to `user`/`group` (after
fork, before they run any request code): a reload may bind a new privileged port, re-open
root-owned logs and re-read a config only root can read, exactly as nginx's and gunicorn's masters
do. The master runs no request-driven code, so keeping root there exposes little.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import resource
import selectors
import signal
import ssl
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NoReturn

from setproctitle import setproctitle

from forkd import listeners as listeners_module
from forkd import logs, pidfile, supervision, tls
from forkd import scoreboard as sb
from forkd.config import Config, ConfigError, load
from forkd.listeners import Listener, ListenError
from forkd.logs import LEVELS, ErrorLog
from forkd.scoreboard import Scoreboard, Slot
from forkd.systemd import Notifier, listen_fds

WorkerMain = Callable[[supervision.WorkerContext], int]  # a worker's entry point, given by cli
Preload = Callable[[Config], None]  # imports a config's application code before fork (cli's)

BOOT_TIMEOUT = 30.0  # seconds a new worker may take to report READY
CRASH_WINDOW = 1.0  # a worker dying this soon after its start counts as a crash
BACKOFF_FIRST = 0.1  # seconds before respawning after the first crash; doubles per crash
BACKOFF_MAX = 10.0
FAST_STOP_WAIT = 2.0  # INT/QUIT: seconds the workers get to exit before SIGKILL
BLOCKED_AFTER = 2.0  # seconds without a heartbeat (two beats) after which a worker is blocked
TICK = 0.25  # the loop wakes at least this often to check timers and stuck workers
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LIBC = ctypes.CDLL(None, use_errno=True)

SIGNAL_NAMES = {int(s): s.name for s in signal.Signals}


class StartupError(Exception):
    """The master could not start (a listener, the pidfile, the user, the first workers)."""


@dataclass
class Generation:
    number: int
    config: Config
    listeners: list[Listener]
    # The TLS listeners' contexts, keyed by listening socket fd: built by the master before the
    # generation's workers fork (they share its session-ticket keys and never read a key file).
    tls_contexts: dict[int, ssl.SSLContext] = field(default_factory=dict)
    proxy_fds: frozenset[int] = frozenset()  # listeners where a PROXY header comes first


@dataclass(eq=False)
class WorkerRecord:
    pid: int
    generation: Generation
    notify_fd: int
    slot: Slot
    started: float
    last_seen: float
    ready: bool = False
    retiring: float | None = None  # when TERM was sent
    killed: str = ""  # why forkd sent SIGKILL (or QUIT), "" when it did not
    wants_retirement: bool = False
    replaces: int | None = None  # pid this worker takes over from once it is READY
    boot_error: bytes | None = None  # why it could not boot, as it reported (supervision.BOOT_FAILED)

    @property
    def config(self) -> Config:
        return self.generation.config

    def describe(self) -> str:
        return f"worker {self.pid} (generation {self.generation.number})"


@dataclass
class PendingGeneration:
    generation: Generation
    started: float
    serial: int  # reload status serial; 0 for the first generation
    new_listeners: list[Listener] = field(default_factory=list)  # bound for it: closed if it fails
    dropped: list[Listener] = field(default_factory=list)  # no longer configured: closed after
    failure: str = ""


class Master:
    def __init__(
        self, config: Config, log: ErrorLog, notifier: Notifier, systemd_fds: list[int],
        worker_main: WorkerMain, preload: Preload,
    ) -> None:
        self.worker_main = worker_main
        self.preload = preload
        assert config.source is not None
        self.config_path = config.source
        self.log = log
        self.notifier = notifier
        self.systemd_fds = systemd_fds
        self.pid = os.getpid()
        self.first_config = config
        self.pidfile = config.pidfile
        self.generation: Generation | None = None  # the serving one
        self.pending: PendingGeneration | None = None
        self.reload_again = False
        self.workers: dict[int, WorkerRecord] = {}
        self.target = config.workers
        self.crashes = 0
        self.spawn_after = 0.0
        # Listeners no longer configured: (the last generation that used them, the listeners).
        self.closing: list[tuple[int, list[Listener]]] = []
        self.stop_deadline: float | None = None
        self.stop_started = 0.0
        self.stop_reason = ""  # why the master is stopping, for its last log line
        self.exit_code = 0
        self.signals: list[int] = []
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        self.signal_table: dict[int, Callable[[], None]] = {
            signal.SIGHUP: self.reload,
            signal.SIGTERM: partial(self.stop, graceful=True, why="SIGTERM"),
            signal.SIGINT: partial(self.stop, graceful=False, why="SIGINT"),
            signal.SIGQUIT: partial(self.stop, graceful=False, why="SIGQUIT"),
            signal.SIGTTIN: self.more_workers,
            signal.SIGTTOU: self.fewer_workers,
            signal.SIGUSR1: self.reopen_logs,
            signal.SIGUSR2: self.apply_drain_request,
            signal.SIGCHLD: self.reap,
        }
        self.board: Scoreboard | None = None  # created in start(), beside the pidfile if any
        self.drain_until: float | None = None  # TERM with timeouts.drain: when the stop begins
        self.drained_since = 0.0
        self.drained_for_stop = ""  # the signal that began a drain before stopping
        self.reloads = pidfile.ReloadRecorder(None, self.pid, 1)

    # -- start and stop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the exit code. StartupError when serving never began."""
        try:
            self.start()
            self.loop()
        except StartupError as exc:
            self.exit_code, self.stop_reason = 1, f"cannot start: {exc}"
            self.kill_all("startup failed")
            raise
        except Exception:  # noqa: BLE001 - whatever broke, the workers must not outlive us
            self.log.error(f"master crashed: {traceback.format_exc()}")
            self.kill_all("master crashed")
            self.exit_code, self.stop_reason = 1, "the master crashed (traceback above)"
        finally:
            self.cleanup()
            self.log_exit()
        return self.exit_code

    def log_exit(self) -> None:
        """The last line of the log: the exit code and why."""
        why = self.stop_reason or "stopped"
        if self.stop_started:
            why += f", done in {time.monotonic() - self.stop_started:.1f}s"
        level = self.log.info if self.exit_code == 0 else self.log.error
        level(f"exiting with code {self.exit_code}: {why}")

    def start(self) -> None:
        config = self.first_config
        raise_nofile_limit()
        # What a dead worker leaves running (CGI scripts, in their own sessions) becomes our child,
        # found and killed after the worker is reaped (kill_orphans).
        LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        check_user(config)
        own_logs(config)
        self.write_pidfile()
        self.create_board()
        listeners = self.adopt_or_bind(config)
        for listener in listeners:
            self.log.info(f"listening on {listener.real_address}")
        self.install_signals()
        self.set_title(1)
        try:
            self.preload(config)  # e.g. wsgi routes with preload: true
        except Exception:  # noqa: BLE001 - whatever the app's import raises
            raise StartupError(f"wsgi app could not be imported: {traceback.format_exc()}") from None
        self.reloads = pidfile.ReloadRecorder(self.pidfile, self.pid, 1)
        try:
            contexts = tls_contexts(config, listeners)
        except tls.TlsError as exc:
            raise StartupError(f"tls: {exc}") from None
        generation = Generation(1, config, listeners, contexts, proxy_listeners(config, listeners))
        self.pending = PendingGeneration(
            generation, time.monotonic(), 0, new_listeners=list(listeners)
        )
        for _ in range(config.workers):
            self.spawn(generation)

    def adopt_or_bind(self, config: Config) -> list[Listener]:
        if self.systemd_fds:
            try:
                adopted = listeners_module.from_fds(self.systemd_fds)
            except (ListenError, OSError) as exc:
                raise StartupError(f"socket activation: {exc}") from None
            self.log.info(
                f"socket activation: {len(adopted)} listener(s) from systemd; "
                "the listen setting is ignored"
            )
            return adopted
        bound: list[Listener] = []
        try:
            for address in config.listen:
                bound.append(listeners_module.bind(address, config.backlog, config.unix_mode))
        except ListenError as exc:
            for listener in bound:
                listener.close()
            raise StartupError(str(exc)) from None
        return bound

    def write_pidfile(self) -> None:
        if self.pidfile is None:
            return
        other = pidfile.read(self.pidfile)
        if other and other != self.pid and pidfile.is_forkd_master(other):
            raise StartupError(f"already running as pid {other} (pidfile {self.pidfile})")
        try:
            pidfile.write(self.pidfile, self.pid)
        except OSError as exc:
            raise StartupError(f"cannot write pidfile {self.pidfile}: {exc.strerror}") from None

    def create_board(self) -> None:
        path = sb.file_path(self.pidfile) if self.pidfile is not None else None
        try:
            self.board = Scoreboard.create(path, self.pid)
        except OSError as exc:
            raise StartupError(f"cannot create the scoreboard {path}: {exc.strerror}") from None
        self.board.set(sb.H_GENERATION, 1)
        self.board.set(sb.H_WORKERS, self.target)

    def install_signals(self) -> None:
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for signum in self.signal_table:
            signal.signal(signum, self.record_signal)

    def record_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)  # nothing else: the loop does the work

    def cleanup(self) -> None:
        signal.set_wakeup_fd(-1)
        for listener in self.all_listeners():
            listener.close()
        if self.pidfile is not None:
            pidfile.remove(self.pidfile, self.pid)
        self.reloads.remove()
        if self.board is not None:
            self.board.remove()

    def all_listeners(self) -> list[Listener]:
        seen: dict[int, Listener] = {}
        groups = [g.listeners for g in (self.generation,) if g]
        if self.pending:
            groups += [self.pending.generation.listeners, self.pending.new_listeners]
        groups += [dropped for _, dropped in self.closing]
        for group in groups:
            for listener in group:
                seen[id(listener)] = listener
        return list(seen.values())

    # -- the loop -------------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            self.wait(self.timeout())
            self.notifier.keepalive(time.monotonic())
            self.dispatch_signals()
            self.reap()
            if self.drain_until is not None and time.monotonic() >= self.drain_until:
                self.drain_until = None
                self.stop(graceful=True, why=self.drained_for_stop)
            if self.stop_deadline is not None:
                if not self.workers:
                    return
                self.enforce_stop_deadline()
                continue
            self.check_pending()
            self.check_workers()
            self.manage_workers()
            self.close_unused_listeners()
            self.update_status()

    def timeout(self) -> float:
        """Sleep until the next tick, or until a back-off ends if that comes first."""
        until_spawn = self.spawn_after - time.monotonic()
        return min(TICK, until_spawn) if until_spawn > 0 else TICK

    def wait(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                drain(self.wake_r)
            else:
                self.read_notify(key.data)

    def dispatch_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum != signal.SIGCHLD:
                self.log.info(f"received {SIGNAL_NAMES.get(signum, signum)}")
            self.signal_table[signum]()

    # -- worker processes -----------------------------------------------------------------------

    def spawn(self, generation: Generation, replaces: int | None = None) -> WorkerRecord | None:
        """Fork one worker; None (logged, counted as a crash) when the system refuses."""
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            self.log.error(f"cannot start a worker: {exc.strerror}")
            self.crashed()
            return None
        assert self.board is not None
        slot = self.board.claim(generation.number)
        if slot is None:
            os.close(read_fd)
            os.close(write_fd)
            self.log.error(f"cannot start a worker: all {sb.SLOTS} scoreboard slots are taken")
            self.crashed()
            return None
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self.board.release(slot)
            self.log.error(f"cannot start a worker: fork: {exc.strerror}")
            self.crashed()
            return None
        if pid == 0:
            os.close(read_fd)
            self.run_child(generation, write_fd, slot)
        os.close(write_fd)
        slot.q[sb.S_PID] = pid
        os.set_blocking(read_fd, False)
        now = time.monotonic()
        record = WorkerRecord(pid, generation, read_fd, slot, now, now, replaces=replaces)
        self.workers[pid] = record
        self.selector.register(read_fd, selectors.EVENT_READ, record)
        self.log.debug(f"spawned {record.describe()}")
        return record

    def run_child(self, generation: Generation, notify_fd: int, slot: Slot) -> NoReturn:
        """In the forked child: shed the master's state, become a worker, never return."""
        code = supervision.EXIT_BOOT_FAILED
        try:
            self.prepare_child(generation)
            code = 1
            context = supervision.WorkerContext(
                config=generation.config,
                listeners=[listener.sock for listener in generation.listeners],
                generation=generation.number,
                notify_fd=notify_fd,
                slot=slot,
                tls_contexts=generation.tls_contexts,
                proxy_fds=generation.proxy_fds,
            )
            code = self.worker_main(context)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the forked child must never return into the master
            message = f"worker {os.getpid()} crashed: {traceback.format_exc()}"
            try:
                ErrorLog(generation.config.error_log, "error").error(message)
            except OSError:
                os.write(2, f"forkd: {message}\n".encode("utf-8", "replace"))
            code = 1
        finally:
            os._exit(code)

    def prepare_child(self, generation: Generation) -> None:
        signal.set_wakeup_fd(-1)
        for signum in self.signal_table:
            signal.signal(signum, signal.SIG_DFL)
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        # The worker opens its own error log. The master's copy, left open, would keep a rotated
        # log file (and its disk space) held by every worker after USR1 until the worker exits.
        self.log.file.close()
        for record in self.workers.values():
            os.close(record.notify_fd)
        keep = {id(listener) for listener in generation.listeners}
        for listener in self.all_listeners():
            if id(listener) not in keep:
                listener.sock.close()  # not Listener.close: the file stays the master's
        drop_privileges(generation.config)
        # Set after the privilege drop, which clears it (prctl(2)); then make sure the master did
        # not die before it was set.
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self.pid:
            os._exit(1)

    def read_notify(self, record: WorkerRecord) -> None:
        try:
            data = os.read(record.notify_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(record.notify_fd)  # EOF: the worker is exiting
            return
        record.last_seen = time.monotonic()
        data = take_boot_error(record, data)
        if supervision.READY in data and not record.ready:
            self.on_ready(record)
        if supervision.WANTS_RETIREMENT in data and not record.wants_retirement:
            record.wants_retirement = True
            self.log.info(f"{record.describe()} asks to retire "
                          "(worker_requests reached, or a stuck app thread: see its log)")

    def on_ready(self, record: WorkerRecord) -> None:
        record.ready = True
        self.log.debug(f"{record.describe()} ready")
        if record.replaces is not None:
            old = self.workers.get(record.replaces)
            record.replaces = None
            if old is not None and old.retiring is None:
                self.retire(old, "recycled: its replacement is ready")

    def retire(self, record: WorkerRecord, why: str) -> None:
        """TERM: finish the requests in hand, then exit."""
        if record.retiring is None:
            record.retiring = time.monotonic()
            self.log.info(f"retiring {record.describe()}: {why}")
            self.send(record, signal.SIGTERM)

    def kill(self, record: WorkerRecord, why: str, signum: int = signal.SIGKILL) -> None:
        if not record.killed:
            record.killed = why
            self.send(record, signum)

    def kill_all(self, why: str) -> None:
        for record in list(self.workers.values()):
            self.kill(record, why)
        deadline = time.monotonic() + 2
        while self.workers and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)

    def send(self, record: WorkerRecord, signum: int) -> None:
        try:
            os.kill(record.pid, signum)
        except ProcessLookupError:
            pass  # already dead; the reap will tell why

    # -- reaping --------------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            record = self.workers.pop(pid, None)
            if record is not None:
                self.on_exit(record, status)
                self.kill_orphans()

    def kill_orphans(self) -> None:
        """Kill the process group of every child that is not a worker.

        Such a child can only be a script a dead worker left running (a worker killed by SIGKILL
        cannot stop its CGI scripts), reparented to us as the child subreaper; its group holds
        whatever it started. Scripts lead their own groups, so ours is never hit.
        """
        own_group = os.getpgrp()
        for pid in children(self.pid):
            if pid in self.workers:
                continue
            try:
                group = os.getpgid(pid)
                if group != own_group:
                    os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # gone meanwhile, or became another user

    def on_exit(self, record: WorkerRecord, status: int) -> None:
        if record.notify_fd in self.selector.get_map():
            self.selector.unregister(record.notify_fd)
        take_boot_error(record, drain(record.notify_fd))
        os.close(record.notify_fd)
        assert self.board is not None
        self.board.release(record.slot)  # its counters join the totals: nothing goes backwards
        if self.stop_deadline is None and record.retiring is None and (
            record.generation is self.generation
        ):
            self.board.add(sb.H_RESTARTS)  # it will be replaced
        lived = time.monotonic() - record.started
        cause = exit_cause(status, record)
        expected = bool(record.killed) or (record.retiring is not None and status == 0)
        level = "info" if expected else "error"
        self.log.log(level, f"{record.describe()} {cause} after {lived:.1f}s")
        for other in self.workers.values():
            if other.replaces == record.pid:
                other.replaces = None  # nothing left to replace: it becomes an ordinary worker
        if expected or self.stop_deadline is not None:
            return
        pending = self.pending
        if pending and record.generation is pending.generation and not record.ready:
            see = "" if record.boot_error else " (see the error log)"
            pending.failure = f"{record.describe()} {cause} before it was ready{see}"
            return
        # A ready worker killed by a SIGKILL forkd did not send (the OOM killer, an operator) says
        # nothing about the deployment: replace it at once. Were it a crash, a few such kills in a
        # row would grow the back-off to BACKOFF_MAX and leave the service without workers.
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if not record.ready or (lived < CRASH_WINDOW and not killed):
            self.crashed()

    def crashed(self) -> None:
        self.crashes += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.crashes - 1))
        self.spawn_after = time.monotonic() + delay
        self.log.warning(
            f"{self.crashes} worker crash(es) in a row: next worker starts in {delay:.1f}s"
        )

    # -- generations ----------------------------------------------------------------------------

    def reload(self) -> None:
        if self.stop_deadline is not None:
            return
        if self.pending is not None:
            self.reload_again = True  # it must read the config after this HUP: queue one more
            return
        serial = self.reloads.begin()  # before reading the config: see forkd.pidfile
        self.notifier.reloading()
        self.log.info(f"reloading {self.config_path}")
        try:
            config = load(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                self.log.error(f"reload rejected: {problem}")
            self.end_reload(serial, False, "\n".join(["configuration rejected:", *exc.problems]))
            return
        assert self.generation is not None
        try:
            self.preload(config)  # e.g. wsgi routes with preload: true
        except Exception as exc:  # noqa: BLE001 - whatever the app's import raises
            self.log.error(f"reload rejected: wsgi app could not be imported: "
                           f"{traceback.format_exc()}")
            self.end_reload(serial, False, f"wsgi app could not be imported: {exc!r}")
            return
        try:
            check_user(config)
            own_logs(config)
            listeners, new, dropped = self.plan_listeners(config)
        except (ListenError, StartupError, OSError) as exc:
            self.log.error(f"reload rejected: {exc}")
            self.end_reload(serial, False, str(exc))
            return
        try:
            contexts = tls_contexts(config, listeners)  # certificates and keys are read again
        except (StartupError, OSError, tls.TlsError) as exc:
            reason = f"tls: {exc}" if isinstance(exc, tls.TlsError) else str(exc)
            for listener in new:
                listener.close()
            self.log.error(f"reload rejected: {reason}")
            self.end_reload(serial, False, reason)
            return
        for listener in new:
            self.log.info(f"listening on {listener.real_address}")
        generation = Generation(self.generation.number + 1, config, listeners, contexts,
                                proxy_listeners(config, listeners))
        pending = PendingGeneration(generation, time.monotonic(), serial, new, dropped)
        self.pending = pending
        for _ in range(config.workers):
            if self.spawn(generation) is None:
                pending.failure = "could not fork the new workers"
                return

    def plan_listeners(
        self, config: Config
    ) -> tuple[list[Listener], list[Listener], list[Listener]]:
        """(the new generation's listeners, those bound for it, old ones it no longer uses)."""
        assert self.generation is not None
        current = self.generation.listeners
        if self.systemd_fds:
            return list(current), [], []
        by_address = {str(listener.address): listener for listener in current}
        chosen: list[Listener] = []
        new: list[Listener] = []
        try:
            for address in config.listen:
                listener = by_address.get(str(address))
                if listener is None:
                    listener = listeners_module.bind(address, config.backlog, config.unix_mode)
                    new.append(listener)
                chosen.append(listener)
        except ListenError:
            for listener in new:
                listener.close()
            raise
        dropped = [listener for listener in current if listener not in chosen]
        return chosen, new, dropped

    def check_pending(self) -> None:
        pending = self.pending
        if pending is None:
            return
        members = [w for w in self.workers.values() if w.generation is pending.generation]
        if pending.failure:
            self.abort_pending(pending.failure)
        elif len(members) == pending.generation.config.workers and all(w.ready for w in members):
            self.commit_pending(pending)
        elif time.monotonic() - pending.started > BOOT_TIMEOUT:
            self.abort_pending(f"new workers not ready within {BOOT_TIMEOUT:.0f}s")

    def commit_pending(self, pending: PendingGeneration) -> None:
        old = self.generation
        new = pending.generation
        self.generation = new
        self.pending = None
        self.target = new.config.workers
        self.crashes = 0
        if old is not None:
            for record in list(self.workers.values()):
                if record.generation is not new:
                    self.retire(record, f"generation {new.number} is ready")
            if pending.dropped:
                self.closing.append((old.number, pending.dropped))
            self.apply_master_settings(new.config)
        self.set_title(new.number)
        status = f"generation {new.number}, {len(self.current_workers())} workers"
        self.log.info(f"ready: {status}")
        self.notifier.ready(status)
        assert self.board is not None
        self.board.set(sb.H_GENERATION, new.number)
        if pending.serial:
            self.reloads.finish(pending.serial, True, new.number, f"ready: {status}")
            self.board.reload_done(True, new.number, f"ready: {status}")
        self.requeue_reload()

    def abort_pending(self, reason: str) -> None:
        pending = self.pending
        assert pending is not None
        self.pending = None
        for record in list(self.workers.values()):
            if record.generation is pending.generation:
                self.kill(record, "its generation failed to start")
        if self.generation is None:
            raise StartupError(f"workers could not start: {reason}")
        for listener in pending.new_listeners:
            listener.close()
        self.log.error(
            f"reload failed: {reason}; still serving generation {self.generation.number}"
        )
        self.end_reload(pending.serial, False, reason)

    def end_reload(self, serial: int, ok: bool, message: str) -> None:
        number = self.generation.number if self.generation else 0
        self.reloads.finish(serial, ok, number, message)
        if self.board is not None:
            self.board.reload_done(ok, number, message)
        self.notifier.ready(f"generation {number}, {len(self.current_workers())} workers")
        self.requeue_reload()

    def requeue_reload(self) -> None:
        if self.reload_again:
            self.reload_again = False
            self.reload()

    def apply_master_settings(self, config: Config) -> None:
        """Settings the master itself uses, taken from a newly committed config."""
        if config.error_log != self.log.file.target:
            try:
                log = ErrorLog(config.error_log, config.log_level)
            except OSError as exc:
                self.log.error(f"cannot open error_log {config.error_log}: {exc.strerror}")
            else:
                self.log.file.close()
                self.log = log
        self.log.threshold = LEVELS[config.log_level]
        if config.pidfile != self.pidfile:
            self.log.warning("a changed pidfile takes effect at the next restart")

    def close_unused_listeners(self) -> None:
        if not self.closing:
            return
        oldest = min((w.generation.number for w in self.workers.values()), default=None)
        remaining = []
        for last_user, dropped in self.closing:
            if oldest is None or oldest > last_user:
                for listener in dropped:
                    self.log.info(f"stopped listening on {listener.real_address}")
                    listener.close()
            else:
                remaining.append((last_user, dropped))
        self.closing = remaining

    # -- keeping the serving generation whole ---------------------------------------------------

    def current_workers(self) -> list[WorkerRecord]:
        """The serving generation's workers that are neither retiring nor being killed."""
        return [
            w
            for w in self.workers.values()
            if w.generation is self.generation and w.retiring is None and not w.killed
        ]

    def manage_workers(self) -> None:
        if self.generation is None:
            return
        active = self.current_workers()
        replacing = [w for w in active if w.replaces is not None]
        count = len(active) - len(replacing)
        now = time.monotonic()
        if count < self.target and now >= self.spawn_after:
            for _ in range(self.target - count):
                self.spawn(self.generation)
        elif count > self.target:
            surplus = [w for w in active if w.replaces is None]
            surplus.sort(key=lambda w: w.started)
            for record in surplus[: count - self.target]:
                self.retire(record, "fewer workers wanted")
        elif not replacing and self.pending is None and now >= self.spawn_after:
            self.recycle_one(active)

    def recycle_one(self, active: list[WorkerRecord]) -> None:
        """Start the replacement of the oldest worker that asked to retire; one at a time."""
        candidates = sorted(
            (w for w in active if w.wants_retirement and w.ready), key=lambda w: w.started
        )
        if candidates and self.generation is not None:
            self.spawn(self.generation, replaces=candidates[0].pid)

    def check_workers(self) -> None:
        """Kill stuck workers; kill retiring workers past timeouts.graceful.

        A worker multiplexes its connections, so a request in flight for a long time while the
        loop keeps turning (a big download to a slow client) is healthy: timeouts.send governs it.
        A worker is stuck when its loop stops turning: silent for timeouts.worker, or blocked right
        now (silent for BLOCKED_AFTER) inside a request that began more than timeouts.worker ago.
        """
        now = time.monotonic()
        for record in list(self.workers.values()):
            if record.killed:
                continue
            limit = record.config.timeouts.worker
            busy, request_line = record.slot.read()
            silent = now - record.last_seen
            if silent > limit or (busy > limit and silent > BLOCKED_AFTER):
                serving = f", busy for {busy:.1f}s serving {request_line!r}" if request_line else ""
                self.stuck(record, f"silent for {silent:.1f}s{serving}")
            elif (
                record.retiring is not None
                and now - record.retiring > record.config.timeouts.graceful
            ):
                self.kill(record, "still running after timeouts.graceful")
            elif record.ready and self.crashes and now - record.started > CRASH_WINDOW:
                self.crashes = 0  # a worker survived: the crash streak is over

    def stuck(self, record: WorkerRecord, what: str) -> None:
        self.log.error(f"{record.describe()} is stuck, {what}: killing it")
        self.kill(record, f"stuck, {what}")

    def more_workers(self) -> None:
        self.target += 1
        self.log.info(f"workers: {self.target}")

    def fewer_workers(self) -> None:
        if self.target > 1:
            self.target -= 1
        self.log.info(f"workers: {self.target}")

    def update_status(self) -> None:
        if self.generation is not None and self.pending is None:
            count = len(self.current_workers())
            self.notifier.update_status(f"generation {self.generation.number}, {count} workers")
        if self.board is not None:
            self.board.set(sb.H_WORKERS, self.target)

    # -- logs and stopping ----------------------------------------------------------------------

    def reopen_logs(self) -> None:
        config = self.generation.config if self.generation else self.first_config
        try:
            own_logs(config)
        except StartupError as exc:
            self.log.error(f"cannot prepare the log files for the workers: {exc}")
        self.log.reopen()
        self.log.info("log files reopened")
        for record in self.workers.values():
            self.send(record, signal.SIGUSR1)

    def apply_drain_request(self) -> None:
        """USR2 from `forkd -s drain|undrain`, which wrote the state it wants into the board."""
        assert self.board is not None
        self.set_draining(bool(self.board.q[sb.H_DRAIN_WANTED]), "on request")

    def set_draining(self, on: bool, why: str) -> None:
        """Health routes answer 503 while draining; everything else is served as usual."""
        assert self.board is not None
        if on == self.board.draining:
            return
        if on:
            self.drained_since = time.monotonic()
        self.board.set(sb.H_DRAINING, int(on))
        self.board.set(sb.H_DRAIN_WANTED, int(on))
        if on:
            self.log.info(f"draining ({why}): health routes answer 503")
        else:
            self.log.info(f"no longer draining ({why}): health routes answer 200")

    def begin_drain_before_stop(self, why: str) -> bool:
        """TERM with timeouts.drain: drain first (listeners stay open), stop when the time is up.

        A server already draining for that long (`forkd -s drain` earlier) stops at once.
        """
        config = self.generation.config if self.generation else self.first_config
        assert self.board is not None
        already = time.monotonic() - self.drained_since if self.board.draining else 0.0
        left = config.timeouts.drain - already
        if left <= 0 or self.generation is None:
            return False
        self.set_draining(True, f"graceful stop on {why} in {left:.1f}s")
        self.drain_until = time.monotonic() + left
        self.drained_for_stop = why
        self.notifier.stopping()
        return True

    def stop(self, graceful: bool, why: str) -> None:
        """TERM (graceful) or INT/QUIT (fast); a fast stop may cut a graceful one short."""
        config = self.generation.config if self.generation else self.first_config
        wait = config.timeouts.graceful if graceful else FAST_STOP_WAIT
        if graceful and self.stop_deadline is None:
            if self.drain_until is not None:
                return  # already draining before the stop
            if not self.drained_for_stop and self.begin_drain_before_stop(why):
                return
        self.drain_until = None
        if self.stop_deadline is None:
            self.stop_reason = f"{'graceful' if graceful else 'fast'} stop on {why}"
        elif not graceful and self.stop_reason.startswith("graceful"):
            self.stop_reason = f"fast stop on {why} during a {self.stop_reason}"
        if self.stop_deadline is None:
            self.stop_started = time.monotonic()
            self.notifier.stopping()
            self.log.info("stopping gracefully" if graceful else "stopping now")
            # New connections are refused from now on (the workers close their copies as they
            # retire), rather than queued for nobody and reset when the master exits.
            for listener in self.all_listeners():
                listener.close()
        elif graceful:
            return  # already stopping; a second TERM changes nothing
        self.stop_deadline = min(self.stop_deadline or float("inf"), time.monotonic() + wait)
        for record in self.workers.values():
            if graceful:
                self.retire(record, "shutting down")
            elif not record.killed:
                record.killed = "fast stop"
                self.send(record, signal.SIGQUIT)

    def enforce_stop_deadline(self) -> None:
        assert self.stop_deadline is not None
        if time.monotonic() < self.stop_deadline:
            return
        late = [r for r in self.workers.values() if r.killed != "did not stop in time"]
        for record in late:
            record.killed = ""
            self.kill(record, "did not stop in time")
        if late:
            self.stop_reason += f"; {len(late)} worker(s) killed after the stop timeout"

    def set_title(self, generation: int) -> None:
        setproctitle(f"forkd: master [gen {generation}] -c {self.config_path}")


# -- process set-up helpers -----------------------------------------------------------------------


def exit_cause(status: int, record: WorkerRecord) -> str:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        if signum == signal.SIGKILL and not record.killed:
            return f"killed by {name} not sent by forkd: out of memory?"
        why = f" ({record.killed})" if record.killed else ""
        return f"killed by {name}{why}"
    code = os.waitstatus_to_exitcode(status)
    if code == supervision.EXIT_BOOT_FAILED:
        why = f": {logs.escape(record.boot_error)}" if record.boot_error else ""
        return f"exited with code {code} (could not boot{why})"
    return f"exited with code {code}"


def take_boot_error(record: WorkerRecord, data: bytes) -> bytes:
    """Keep what follows supervision.BOOT_FAILED as the worker's reason; return the bytes before it."""
    if record.boot_error is not None:
        record.boot_error = (record.boot_error + data)[:500]
        return b""
    data, marker, reason = data.partition(supervision.BOOT_FAILED)
    if marker:
        record.boot_error = reason
    return data


def children(pid: int) -> list[int]:
    """The pids of a single-threaded process's children (Linux 3.5+ /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def drain(fd: int) -> bytes:
    """Everything readable on a non-blocking descriptor now."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except BlockingIOError:  # nothing more for now
        pass
    return b"".join(chunks)


def raise_nofile_limit() -> None:
    """Each connection is a descriptor: the usual soft limit (1024) is far too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def user_ids(config: Config) -> tuple[int | None, int | None]:
    uid = gid = None
    if config.user:
        entry = pwd.getpwnam(config.user)
        uid, gid = entry.pw_uid, entry.pw_gid
    if config.group:
        gid = grp.getgrnam(config.group).gr_gid
    return uid, gid


def check_user(config: Config) -> None:
    """Fail early when the master cannot switch to user/group (it is not root)."""
    try:
        uid, gid = user_ids(config)
    except KeyError as exc:
        raise StartupError(f"unknown user or group: {exc}") from None
    if os.geteuid() != 0 and (
        (uid is not None and uid != os.geteuid()) or (gid is not None and gid != os.getegid())
    ):
        raise StartupError("user/group set but forkd is not running as root")


def own_logs(config: Config) -> None:
    """Create the log files and give them to the workers' user: they write and reopen them.

    Raises StartupError naming the log; links are never followed (see forkd.logs.open_log).
    """
    uid, gid = user_ids(config)
    if uid is None and gid is None:
        return
    for key, target in (("access_log", config.access_log), ("error_log", config.error_log)):
        if target and target != "-":
            try:
                logs.hand_over(target, uid, gid)
            except OSError as exc:
                raise StartupError(f"cannot open {key} {target}: {exc.strerror}") from None


def drop_privileges(config: Config) -> None:
    """In a new worker: become user/group (check_user already refused what cannot work)."""
    if os.geteuid() != 0:
        return
    uid, gid = user_ids(config)
    if gid is not None:
        if config.user:
            os.initgroups(config.user, gid)  # the user's supplementary groups, as login would
        else:
            os.setgroups([gid])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def flagged(config: Config, listeners: list[Listener], option: str) -> list[Listener]:
    """The listeners whose `listen` entry sets option (tls, proxy_protocol).

    Listeners forkd bound come in the order of `listen`; one adopted from systemd has the option
    when its address is listed with it.
    """
    if all(listener.owned for listener in listeners):
        pairs = zip(config.listen, listeners, strict=True)
        return [listener for address, listener in pairs if getattr(address, option)]
    wanted = {str(address) for address in config.listen if getattr(address, option)}
    return [listener for listener in listeners if str(listener.real_address) in wanted]


def proxy_listeners(config: Config, listeners: list[Listener]) -> frozenset[int]:
    return frozenset(listener.sock.fileno() for listener in flagged(config, listeners,
                                                                    "proxy_protocol"))


def tls_contexts(config: Config, listeners: list[Listener]) -> dict[int, ssl.SSLContext]:
    """The context of each TLS listener, by fd; raise tls.TlsError naming the file at fault.

    All TLS listeners share one context (one certificate set).
    """
    settings = config.tls_settings()  # with the servers' certificates (virtual hosts)
    if settings is None or not any(address.tls for address in config.listen):
        return {}
    chosen = flagged(config, listeners, "tls")
    context = tls.build_server_context(settings)
    return {listener.sock.fileno(): context for listener in chosen}


def run(config: Config, log: ErrorLog, worker_main: WorkerMain, preload: Preload) -> int:
    """Start a master for a loaded config; raise StartupError when it cannot serve at all.

    `worker_main` runs in each forked worker and returns its exit code (forkd.worker.run_worker);
    `preload` imports what a config asks to load before fork, at start and on every reload.
    """
    systemd_fds = listen_fds(os.environ)  # also removes the variables: CGI must not see them
    notifier = Notifier.from_environment(os.environ)
    return Master(config, log, notifier, systemd_fds, worker_main, preload).run()
