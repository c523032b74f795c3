"""The command line: parse flags, load the config, hand off to the master or signal a running one.

    forkd -c FILE                      run in the foreground (what systemd expects)
    forkd -c FILE -t | --check         validate FILE and exit 0 (ok) or 1 (one line per problem)
    forkd -c FILE -T | --print-config  validate, then print the effective config as YAML
    forkd -c FILE -s reload            reload the running master and wait for the outcome
    forkd -c FILE -s stop | quit       graceful (TERM) or fast (QUIT) stop; waits for the exit
    forkd -c FILE -s reopen            reopen the log files (USR1)
    forkd -c FILE -s status            print the live scoreboard
    forkd -c FILE -s drain | undrain   health routes answer 503 (or 200 again); waits until they do
    forkd --version

The running master is found through the config's `pidfile`. `-s reload` is synchronous: it reads the
reload status file beside the pidfile, sends SIGHUP and waits until a reload that began after the
signal has ended, then exits 0 (the new generation serves) or 1 (printing why it was rejected). The
protocol and why it cannot confuse concurrent reloads are described in forkd/pidfile.py.

`-s status`, `-s drain` and `-s undrain` map the master's scoreboard file beside the pidfile
(`PIDFILE.scoreboard`, forkd/scoreboard.py): status renders it as the status route does; drain and
undrain write the wanted state into its header, send SIGUSR2 (the master applies and logs it) and
wait until the master's `draining` flag says so.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from forkd import __version__, pidfile, scoreboard
from forkd.config import ConfigError, dump, load
from forkd.logs import ErrorLog
from forkd.metrics import render_text

ACTIONS = {
    "reload": signal.SIGHUP,
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reopen": signal.SIGUSR1,
}
BOARD_ACTIONS = ("status", "drain", "undrain")  # through the scoreboard file, not only a signal
DRAIN_WAIT = 10.0
RELOAD_WAIT = 45.0  # seconds: above the master's boot timeout for a new generation
POLL = 0.02


HELP = """Serve static files, CGI, Python web apps (WSGI), PHP (FastCGI) and WebSockets over
HTTP/1.1 and HTTPS: a master process and prefork workers.

forkd runs in the foreground (as systemd expects); Ctrl-C stops it at once, SIGTERM gracefully.

\b
Examples:
  forkd -c /etc/forkd/site.yaml            serve the site (foreground)
  forkd -c /etc/forkd/site.yaml -t         check the config, list its problems
  forkd -c /etc/forkd/site.yaml -T         print the effective config
  forkd -c /etc/forkd/site.yaml -s reload  reload, wait; exit 1 if refused
  forkd -c /etc/forkd/site.yaml -s stop    graceful stop; waits for the exit
"""

EPILOG = """The configuration keys, signals, logs and the systemd set-up are described in the
operator's guide: README.md in the forkd sources (sections "Set-up" and "Operator's guide")."""


@click.command(
    help=HELP,
    epilog=EPILOG,
    short_help="A prefork HTTP/1.1 server for static files and CGI.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "-c",
    "--config",
    "config_file",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="The YAML configuration file (relative paths in it resolve against its directory).",
)
@click.option("-t", "--check", is_flag=True, help="Validate the configuration and exit.")
@click.option(
    "-T",
    "--print-config",
    is_flag=True,
    help="Validate, then print the effective configuration (every default, absolute paths).",
)
@click.option(
    "-s",
    "--signal",
    "action",
    type=click.Choice([*ACTIONS, *BOARD_ACTIONS]),
    help="Signal the running master found through FILE's pidfile: reload (and wait for the "
    "outcome), stop (graceful), quit (fast), reopen (the log files), status (print the "
    "scoreboard), drain or undrain (health routes answer 503, or 200 again).",
)
@click.version_option(__version__, "--version", prog_name="forkd", message="%(prog)s %(version)s")
def main(config_file: str, check: bool, print_config: bool, action: str | None) -> None:
    if (check or print_config) and action:
        raise click.UsageError("--check, -T and -s do not go together")
    if print_config:
        sys.exit(show_config(config_file))
    if check:
        sys.exit(check_config(config_file))
    if action:
        sys.exit(signal_master(config_file, action))
    sys.exit(serve(config_file))


def check_config(config_file: str) -> int:
    try:
        load(config_file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        return 1
    click.echo(f"forkd: configuration {config_file} is ok")
    return 0


def show_config(config_file: str) -> int:
    """-T: the config as forkd will run it, on stdout; the same problem lines as --check."""
    try:
        config = load(config_file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        return 1
    click.echo(dump(config), nl=False)
    return 0


def serve(config_file: str) -> int:
    # Only a server needs the master and the worker's HTTP stack. Both are imported here, before
    # the fork, with every route type's module, so a new worker starts without importing anything.
    from forkd import master, worker
    from forkd.handlers.registry import preload
    from forkd.handlers.wsgi_environ import preload_apps

    try:
        config = load(config_file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"forkd: {problem}", err=True)
        count = len(exc.problems)
        return fail(f"not started: {count} problem{'s' if count > 1 else ''} in {config_file}")
    try:
        log = ErrorLog(config.error_log, config.log_level)
    except OSError as exc:
        return fail(f"not started: cannot open error_log {config.error_log}: {exc.strerror}")
    try:
        preload()
        return master.run(config, log, worker.run_worker,
                          lambda loaded: preload_apps(loaded.routes))
    except master.StartupError as exc:
        # The master's last log line says why; the terminal gets it too, wherever the log goes.
        return fail(f"not started: {exc}")


# -- signalling a running master ------------------------------------------------------------------


def signal_master(config_file: str, action: str) -> int:
    try:
        pid_path, graceful = pidfile_of(config_file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        return fail(f"-s {action} needs the pidfile set in {config_file}, which cannot be read")
    if pid_path is None:
        return fail(f"{config_file} sets no pidfile: -s needs one to find the master")
    pid = pidfile.read(pid_path)
    if pid is None or not pidfile.is_forkd_master(pid):
        return fail(f"forkd is not running (no live master in pidfile {pid_path})")
    if action == "reload":
        return reload(pid, pid_path)
    if action in BOARD_ACTIONS:
        return board_action(pid, pid_path, action)
    os.kill(pid, ACTIONS[action])
    if action in ("stop", "quit"):
        return wait_for_exit(pid, graceful + 10.0)
    return 0


def reload(pid: int, pid_path: Path) -> int:
    status_file = pidfile.status_path(pid_path)
    before = pidfile.ReloadStatus.load(status_file)
    if before is None or before.pid != pid:
        return fail(f"no reload status from master {pid} in {status_file}")
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        status = pidfile.ReloadStatus.load(status_file)
        if status is not None and status.pid == pid and status.finished > before.started:
            if status.ok:
                click.echo(f"forkd: reloaded, generation {status.generation} is serving")
                return 0
            return fail(
                f"reload failed, generation {status.generation} still serving: {status.message}"
            )
        if not pidfile.is_forkd_master(pid):
            return fail(f"the master (pid {pid}) exited during the reload")
        time.sleep(POLL)
    return fail(f"no reload outcome from master {pid} within {RELOAD_WAIT:.0f}s")


def board_action(pid: int, pid_path: Path, action: str) -> int:
    """status: print the scoreboard; drain / undrain: set the state, wait until the master has."""
    path = scoreboard.file_path(pid_path)
    try:
        board = scoreboard.Scoreboard.open(path, writable=action != "status")
    except (OSError, ValueError) as exc:
        return fail(f"cannot read the scoreboard {path}: {getattr(exc, 'strerror', None) or exc}")
    if board.q[scoreboard.H_MASTER_PID] != pid:
        return fail(f"{path} is not the scoreboard of master {pid}")
    if action == "status":
        click.echo(render_text(board.snapshot()), nl=False)
        return 0
    wanted = action == "drain"
    board.set(scoreboard.H_DRAIN_WANTED, int(wanted))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + DRAIN_WAIT
    while board.draining != wanted:
        if time.monotonic() > deadline or not pidfile.is_forkd_master(pid):
            return fail(f"master {pid} did not {action} within {DRAIN_WAIT:.0f}s")
        time.sleep(POLL)
    click.echo("forkd: draining: health routes answer 503" if wanted
               else "forkd: not draining: health routes answer 200")
    return 0


def wait_for_exit(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while pidfile.is_forkd_master(pid):
        if time.monotonic() > deadline:
            return fail(f"master {pid} still running after {timeout:.0f}s")
        time.sleep(POLL)
    return 0


def pidfile_of(config_file: str) -> tuple[Path | None, float]:
    """The pidfile and graceful timeout of a config, even an invalid one: stopping must still work.

    Raises ConfigError (the file cannot be read, or is not YAML) when the pidfile cannot be known.
    """
    try:
        config = load(config_file)
        return config.pidfile, config.timeouts.graceful + config.timeouts.drain
    except ConfigError as exc:
        problems = exc
    try:
        data: Any = yaml.safe_load(Path(config_file).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise problems from None  # the unreadable file or the YAML error, with line and column
    value = data.get("pidfile") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        return None, 30.0
    return Path(config_file).absolute().parent / value, 30.0


def fail(message: str) -> int:
    click.echo(f"forkd: {message}", err=True)
    return 1

