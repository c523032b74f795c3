"""Transports: how a connection's bytes reach the client, plain or through TLS.

Theory of operation
-------------------
A Connection talks to its client only through a transport, whose methods mirror the non-blocking
socket calls: `recv(n)` (b"" at end of stream), `send(data)`, `sendfile(fd, offset, count)`, each
raising BlockingIOError when it cannot go on now, `handshake()` and `close()`. Nothing above this
module touches the socket, so TLS (and later a PROXY-header prelude) is a different transport,
not a different Connection.

`PlainTransport` is a thin shell over the socket: its calls are the socket's own (the hot path
stays a single system call). `TlsTransport` drives an `ssl.SSLSocket` the worker's loop never
blocks on. It differs from a socket in three ways the caller must honour:

- Direction. TLS may need to *write* to complete a read (a handshake message, a key update) or
  to *read* to complete a write. After a BlockingIOError, `wants` says which epoll event
  (EPOLLIN or EPOLLOUT) the transport waits for, whatever the caller was trying to do.
- Buffered plaintext. A record is decrypted whole: after `recv(n)` with n below the record size
  the rest waits inside OpenSSL, where epoll cannot see it. `pending()` is then non-zero and the
  caller must read again before waiting. With n >= 16 KiB (a record's maximum) this never happens.
- The end. `close_notify()` tells the client the stream ends (before the write side is shut for
  a lingering close, and in `close()`): a TLS client cannot otherwise tell a close-delimited answer
  from one cut short. `SSLSocket.shutdown` alone would drop the TLS state without it.
- Retried writes. OpenSSL encrypts a buffer before it knows whether the socket takes it, so after
  a BlockingIOError from `send(data)` the next `send` must start with the same bytes (it may carry
  more). The caller's natural "keep the unsent buffer and retry" does exactly that. `sendfile`
  keeps the chunk it read for the same reason.

The handshake starts with a peek at the first bytes: a TLS ClientHello begins with the record type
22 (0x16); a request line begins with an upper-case method. A plain-HTTP request on a TLS port is
answered with a short 400 (`answer_plain_http`), as nginx does, instead of an opaque TLS alert.
Every other handshake failure raises HandshakeFailed with a short class ("no shared cipher",
"unknown ca", "eof", ...) so the worker can count failures per class and log each class once
(`FailureLog`), never a line per attempt; the worker logs the counts when it exits.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Callable

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT

SENDFILE_CHUNK = 256 * 1024  # bytes read and encrypted per sendfile call over TLS
SEND_LIMIT = 256 * 1024  # at most this much plaintext per TLS send, so one call stays short
PEEK_BYTES = 8
DRAIN_LIMIT = 65536  # bytes of a plain-HTTP request read (and dropped) before answering it

TLS_HANDSHAKE_RECORD = 0x16
PLAIN_HTTP_REPLY = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 44\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"This port speaks HTTPS: use an https:// URL\n"
)

# OpenSSL reasons grouped into the classes operators count and read in the log.
FAILURE_CLASSES = {
    "NO_SHARED_CIPHER": "no shared cipher",
    "UNSUPPORTED_PROTOCOL": "unsupported protocol",
    "VERSION_TOO_LOW": "unsupported protocol",
    "NO_PROTOCOLS_AVAILABLE": "unsupported protocol",
    "WRONG_VERSION_NUMBER": "not tls",
    "HTTP_REQUEST": "http request",
    "HTTPS_PROXY_REQUEST": "http request",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown ca",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "bad certificate",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "CERTIFICATE_VERIFY_FAILED": "client certificate rejected",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no shared signature algorithm",
    "NO_APPLICATION_PROTOCOL": "no shared alpn protocol",
    "UNEXPECTED_EOF_WHILE_READING": "eof",
    "UNEXPECTED_MESSAGE": "malformed",
    "UNEXPECTED_RECORD": "malformed",
    "BAD_PACKET_LENGTH": "malformed",
    "LENGTH_MISMATCH": "malformed",
    "RECORD_LENGTH_MISMATCH": "malformed",
    "PACKET_LENGTH_TOO_LONG": "malformed",
    "DECODE_ERROR": "malformed",
}


class HandshakeFailed(Exception):
    """A TLS handshake that cannot complete; `kind` is its class for counting and logging."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def looks_like_plain_http(first_bytes: bytes) -> bool:
    """True when a connection's first bytes are an HTTP request line, not a TLS record."""
    return bool(first_bytes) and 0x41 <= first_bytes[0] <= 0x5A  # "A".."Z": a method name


def classify(error: BaseException) -> str:
    """The failure class of an exception raised by a TLS handshake."""
    if isinstance(error, ssl.SSLError):
        if isinstance(error, ssl.SSLEOFError):
            return "eof"
        reason = error.reason or ""
        known = FAILURE_CLASSES.get(reason)
        if known:
            return known
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")):
            return "alert " + reason.split("_ALERT_", 1)[1].lower().replace("_", " ")
        return reason.lower().replace("_", " ") or "tls error"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "eof"
    return type(error).__name__


class FailureLog:
    """Handshake failures counted per class; `record` says when a class is new (log it once)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def record(self, kind: str) -> bool:
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        return count == 0

    def summary(self) -> str:
        """The counts as `class N, ...` (most frequent first), "" when there were none."""
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{kind} {count}" for kind, count in ranked)


class PlainTransport:
    """A connected, non-blocking socket as it is."""

    __slots__ = ("fileno", "recv", "send", "sock")

    tls: None = None
    wants = EPOLLIN

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # Bound methods of the socket itself: no extra Python frame on the hot path.
        self.recv = sock.recv
        self.send = sock.send
        self.fileno = sock.fileno

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        return os.sendfile(self.sock.fileno(), fd, offset, count)

    def handshake(self) -> int:
        return 0

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        self.sock.close()


class TlsTransport:
    """A non-blocking TLS server connection over an accepted socket."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.raw = sock  # until the first bytes are seen, then the SSLSocket owns the descriptor
        self.fd = sock.fileno()  # the same descriptor throughout (wrapping detaches `raw`)
        self.context = context
        self.tls: ssl.SSLSocket | None = None  # set once the handshake is complete
        self.sock: ssl.SSLSocket | None = None
        self.wants = EPOLLIN
        self._chunk: tuple[int, int, bytes] | None = None  # (fd, offset, data) awaiting a retry
        self._notified = False  # close_notify tried (it is sent at most once)
        # The calls of the data path, bound once the handshake is done (see _bind).
        self._read: Callable[[int], bytes] = _no_data
        self._write: Callable[[bytes | memoryview], int] = _no_room
        # Plaintext bytes decrypted but not yet returned by recv (invisible to epoll): a bound C
        # call, no Python frame, as the connection asks after every read.
        self.pending: Callable[[], int] = _none_pending

    def fileno(self) -> int:
        return self.fd

    # -- handshake ------------------------------------------------------------------------------

    def handshake(self) -> int:
        """Advance the handshake: 0 when complete, else the epoll event it waits for.

        Raises HandshakeFailed; its kind "http request" means: call answer_plain_http, then close.
        """
        if self.sock is None:
            try:
                first = self.raw.recv(PEEK_BYTES, socket.MSG_PEEK)
            except BlockingIOError:
                return EPOLLIN
            except OSError as exc:
                raise HandshakeFailed("eof", str(exc)) from None
            if not first:
                raise HandshakeFailed("eof")
            if looks_like_plain_http(first):
                raise HandshakeFailed("http request")
            if first[0] != TLS_HANDSHAKE_RECORD:
                raise HandshakeFailed("not tls")
            self.sock = self.context.wrap_socket(
                self.raw, server_side=True, do_handshake_on_connect=False
            )
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.wants = EPOLLIN
            return EPOLLIN
        except ssl.SSLWantWriteError:
            self.wants = EPOLLOUT
            return EPOLLOUT
        except (ssl.SSLError, OSError) as exc:
            raise HandshakeFailed(classify(exc), str(exc)) from None
        self.tls = self.sock
        self.wants = EPOLLIN
        self._bind(self.sock)
        return 0

    def _bind(self, sock: ssl.SSLSocket) -> None:
        """Bind the data path to the C object under the SSLSocket when there is one (CPython's
        `_sslobj`): its read, write and pending are what SSLSocket's own recv, send and pending
        end in, after two Python frames each that check what is already known here (the socket
        is open, no flags). An HTTPS request costs about five such calls."""
        target = getattr(sock, "_sslobj", None) or sock
        self._read, self._write, self.pending = target.read, target.write, target.pending

    def answer_plain_http(self) -> None:
        """Answer a plain-HTTP request with PLAIN_HTTP_REPLY; the caller closes afterwards.

        The request is read first (up to DRAIN_LIMIT): closing with unread input makes the kernel
        send a reset, which can destroy the answer before the client reads it.
        """
        try:
            drained = 0
            while drained < DRAIN_LIMIT:
                data = self.raw.recv(DRAIN_LIMIT)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass
        try:
            self.raw.send(PLAIN_HTTP_REPLY)
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # -- data -----------------------------------------------------------------------------------

    def recv(self, size: int) -> bytes:
        """Up to size bytes of plaintext; b"" at the end of the stream; BlockingIOError if none."""
        try:
            # One record at most (SSL_read): with size >= 16 KiB nothing of it stays pending.
            return self._read(size)
        except ssl.SSLWantReadError:
            self.wants = EPOLLIN
            raise BlockingIOError() from None
        except ssl.SSLWantWriteError:
            self.wants = EPOLLOUT
            raise BlockingIOError() from None
        except ssl.SSLEOFError:
            return b""  # the peer closed without close_notify: an end, as SSLSocket says it
        except ssl.SSLError as exc:
            raise ConnectionResetError(str(exc)) from None

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        """Send a prefix of data (flags such as MSG_MORE mean nothing above TLS: ignored)."""
        if len(data) > SEND_LIMIT:
            data = memoryview(data)[:SEND_LIMIT]
        try:
            return self._write(data)
        except ssl.SSLWantWriteError:
            self.wants = EPOLLOUT
            raise BlockingIOError() from None
        except ssl.SSLWantReadError:
            self.wants = EPOLLIN
            raise BlockingIOError() from None
        except ssl.SSLError as exc:
            raise ConnectionResetError(str(exc)) from None

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send up to SENDFILE_CHUNK bytes of a file range; no sendfile through userspace TLS."""
        chunk = self._chunk
        if chunk is None or chunk[0] != fd or chunk[1] != offset:
            data = os.pread(fd, min(count, SENDFILE_CHUNK), offset)
            if not data:
                return 0  # the file shrank: the caller sees no progress, as with os.sendfile
            chunk = self._chunk = (fd, offset, data)
        sent = self.send(chunk[2])  # a BlockingIOError keeps the chunk for the retry
        self._chunk = None if sent == len(chunk[2]) else (fd, offset + sent, chunk[2][sent:])
        return sent

    def close_notify(self) -> None:
        """Send close_notify if the socket takes it now; never wait for the peer's.

        It tells the client that the stream ends here: without it, a close-delimited answer cut
        short looks complete. Call it before shutting down the write side (SSLSocket.shutdown
        drops the TLS state silently); reads that follow see the raw bytes, to be discarded.
        """
        if self.tls is None or self._notified:
            return
        self._notified = True
        tls = self.tls
        # From here on the SSLSocket's own calls: after unwrap they fall back to the raw socket.
        self._read, self._write, self.pending = tls.recv, tls.send, tls.pending
        tls.settimeout(0.0)
        try:
            tls.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass  # the peer's close_notify is not awaited; a full buffer skips ours

    def close(self) -> None:
        """close_notify (when not sent yet), then close the descriptor."""
        self.close_notify()
        (self.sock or self.raw).close()
        self._chunk = None
        self._read, self._write, self.pending = _no_data, _no_room, _none_pending


def _no_data(size: int) -> bytes:
    raise BlockingIOError()  # no handshake yet, or closed: nothing to read


def _no_room(data: bytes | memoryview) -> int:
    raise BlockingIOError()


def _none_pending() -> int:
    return 0
