"""Listening sockets: bound from the config, or inherited from systemd socket activation.

The master owns every listener. It binds them once, before any worker exists, and keeps them open
for its whole life, so a reload never closes a socket that clients are connecting to; workers
inherit them across fork. All listeners are non-blocking (workers multiplex accept with their other
connections) and close-on-exec (CGI children must never hold them: a script left running would keep
the port).

A Listener we bound ourselves is `owned`: when it is closed at exit, its unix socket path is
unlinked, but only if the file there is still the one we created (a newer forkd may have replaced
it). Sockets passed by systemd are never re-bound and never unlinked: systemd owns them.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from forkd.config import ListenAddress


class ListenError(Exception):
    """A listener could not be set up; the message names the address and the reason."""


@dataclass(eq=False)
class Listener:
    address: ListenAddress  # as configured (port 0 stays 0); the key that reloads compare
    sock: socket.socket
    owned: bool = True  # bound by us (False: passed by systemd, never unlinked)
    inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the unix socket file we created

    @property
    def real_address(self) -> ListenAddress:
        """The address actually bound: the kernel's choice of port when 0 was configured."""
        return address_of(self.sock)

    def close(self) -> None:
        self.sock.close()
        if self.owned and self.inode is not None and self.address.family == "unix":
            try:
                info = os.lstat(self.address.path)
            except OSError:
                return
            if (info.st_dev, info.st_ino) == self.inode:
                os.unlink(self.address.path)


def bind(address: ListenAddress, backlog: int, unix_mode: int) -> Listener:
    """Bind and listen on one configured address; raise ListenError with the reason."""
    try:
        if address.family == "unix":
            return _bind_unix(address, backlog, unix_mode)
        return _bind_inet(address, backlog)
    except OSError as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from None


def _bind_inet(address: ListenAddress, backlog: int) -> Listener:
    family = socket.AF_INET6 if address.family == "inet6" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # TIME_WAIT connections of a previous run must not block a restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]:80" means IPv6 only; "0.0.0.0:80" can then be listed beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return Listener(address, sock)


def _bind_unix(address: ListenAddress, backlog: int, unix_mode: int) -> Listener:
    _remove_stale_socket(address.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind() creates the file with mode 0777 & ~umask: with this umask it is born with exactly
    # unix_mode, so no chmod by path (which a swapped name could redirect) is ever needed. The
    # master is single-threaded, so the process-wide umask change affects nothing else.
    old_umask = os.umask(0o777 & ~unix_mode)
    try:
        sock.bind(address.path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    try:
        info = os.lstat(address.path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        os.unlink(address.path)
        raise
    return Listener(address, sock, inode=(info.st_dev, info.st_ino))


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file left by a dead server; refuse to touch a live one or a non-socket."""
    try:
        info = os.lstat(path)  # a link is "not a socket": never followed, never removed
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: stale
        return
    except OSError:
        return  # e.g. permission denied: let bind() report it
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another server is listening on it")


def from_fds(fds: list[int]) -> list[Listener]:
    """Adopt listening sockets passed by systemd (socket activation)."""
    listeners = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            raise ListenError(f"file descriptor {fd} from systemd is not a stream socket")
        sock.setblocking(False)
        sock.set_inheritable(
            False
        )  # systemd passes them inheritable; CGI children must not get them
        listeners.append(Listener(address_of(sock), sock, owned=False))
    return listeners


def address_of(sock: socket.socket) -> ListenAddress:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract namespace
            return ListenAddress("unix", path="@" + name[1:].decode("utf-8", "replace"))
        return ListenAddress("unix", path=name)
    if sock.family == socket.AF_INET6:
        return ListenAddress("inet6", name[0], name[1])
    return ListenAddress("inet", name[0], name[1])
