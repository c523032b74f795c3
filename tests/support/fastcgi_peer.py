"""A small scripted FastCGI responder on TCP, for the faults a real php-fpm will not commit on cue.

It listens on 127.0.0.1 port 0 (the port is read back, never guessed), answers each connection in
a thread, and behaves according to the basename of the SCRIPT_FILENAME param it receives:

  - params.php: the params it got, one `NAME=value` line each, sent in 1- to 7-byte STDOUT records
    with empty STDOUT records in between (an empty record must end nothing), then END_REQUEST;
  - stdin.php: reads the whole STDIN stream, answers its length and SHA-256;
  - overloaded.php: END_REQUEST with protocol status OVERLOADED;
  - garbage.php: an HTTP response instead of records;
  - dies.php: a header block and 200 KiB of body, then the connection closes, no END_REQUEST;
  - eof.php: waits up to a second for the end of its input (the web server's half-close, or its
    close), then answers "end of input" or "input open";
  - go.php: does what Go's net/http/fcgi does: the end of its input ends the connection, before
    any answer (it waits up to a second for that end, and answers "answered" when it does not come);
  - kept.php: answers "<connection number> <request number on it>" and, when the request asked
    for FCGI_KEEP_CONN, waits for the next request on the same connection; the third request on
    a connection is read and left unanswered, the connection closed (a php-fpm child that reached
    pm.max_requests just as the request came).

Records are built by hand here (struct), not with forkd's codec, so a codec bug cannot hide itself.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading

HEADER = struct.Struct(">BBHHBx")
BEGIN_REQUEST, STDIN, STDOUT, END_REQUEST, PARAMS = 1, 5, 6, 3, 4
KEEP_CONN = 1


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    padding = (8 - len(content) % 8) % 8
    return HEADER.pack(1, kind, request_id, len(content), padding) + content + bytes(padding)


def end_request(request_id: int, protocol_status: int = 0) -> bytes:
    return record(END_REQUEST, request_id, struct.pack(">IB3x", 0, protocol_status))


class FastCgiPeer:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.accepted = 0

    @property
    def connect(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FastCgiPeer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(conn, self.accepted), daemon=True).start()

    def _answer(self, conn: socket.socket, number: int) -> None:
        with conn:
            try:
                for served in range(3):
                    request_id, params, body, keep = self._read_request(conn)
                    script = os.path.basename(params.get(b"SCRIPT_FILENAME", b"").decode())
                    if script != "kept.php":
                        getattr(self, "_" + script.replace(".php", ""))(conn, request_id, params,
                                                                        body)
                        return
                    if served == 2 or not keep:
                        return
                    text = f"Content-Type: text/plain\r\n\r\n{number} {served + 1}".encode()
                    conn.sendall(record(STDOUT, request_id, text) + end_request(request_id))
            except (OSError, ValueError):
                pass

    def _read_request(self, conn: socket.socket) -> tuple[int, dict[bytes, bytes], bytes, bool]:
        buffer = b""
        params = b""
        body = b""
        request_id = 0
        keep = False
        done = set()
        while done != {PARAMS, STDIN}:
            while len(buffer) < 8:
                buffer += self._recv(conn)
            _version, kind, request_id, length, padding = HEADER.unpack_from(buffer)
            while len(buffer) < 8 + length + padding:
                buffer += self._recv(conn)
            content = buffer[8:8 + length]
            buffer = buffer[8 + length + padding:]
            if kind == BEGIN_REQUEST:
                keep = bool(content[2] & KEEP_CONN)
            elif kind == PARAMS:
                params += content
            elif kind == STDIN:
                body += content
            if kind in (PARAMS, STDIN) and not content:
                done.add(kind)
        return request_id, _pairs(params), body, keep

    @staticmethod
    def _input_ends(conn: socket.socket) -> bool:
        """Whether the web server ends its side (half-close or close) within a second."""
        conn.settimeout(1.0)
        try:
            return conn.recv(1) == b""
        except TimeoutError:
            return False
        finally:
            conn.settimeout(None)

    @staticmethod
    def _recv(conn: socket.socket) -> bytes:
        data = conn.recv(65536)
        if not data:
            raise ValueError("client closed")
        return data

    # -- behaviours ----------------------------------------------------------------------------
    def _params(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
                body: bytes) -> None:
        text = b"Content-Type: text/plain\r\n\r\n" + b"".join(
            name + b"=" + value + b"\n" for name, value in sorted(params.items()))
        out = bytearray()
        position, size = 0, 1
        while position < len(text):
            out += record(STDOUT, request_id, text[position:position + size])
            out += record(STDOUT, request_id)  # an empty record ends nothing
            position += size
            size = size % 7 + 1
        conn.sendall(bytes(out) + end_request(request_id))

    def _stdin(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
               body: bytes) -> None:
        text = f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode()
        conn.sendall(record(STDOUT, request_id, b"Content-Type: text/plain\r\n\r\n" + text)
                     + record(STDOUT, request_id) + end_request(request_id))

    def _overloaded(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
                    body: bytes) -> None:
        conn.sendall(end_request(request_id, protocol_status=2))

    def _eof(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
             body: bytes) -> None:
        text = b"end of input" if self._input_ends(conn) else b"input open"
        conn.sendall(record(STDOUT, request_id, b"Content-Type: text/plain\r\n\r\n" + text)
                     + end_request(request_id))

    def _go(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
            body: bytes) -> None:
        if self._input_ends(conn):
            return  # the connection closes, nothing answered
        conn.sendall(record(STDOUT, request_id, b"Content-Type: text/plain\r\n\r\nanswered")
                     + end_request(request_id))

    def _garbage(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
                 body: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    def _dies(self, conn: socket.socket, request_id: int, params: dict[bytes, bytes],
              body: bytes) -> None:
        conn.sendall(record(STDOUT, request_id, b"Content-Type: text/plain\r\n\r\n"))
        for _ in range(50):
            conn.sendall(record(STDOUT, request_id, b"x" * 4096))


def _pairs(data: bytes) -> dict[bytes, bytes]:
    pairs = {}
    position = 0
    while position < len(data):
        lengths = []
        for _ in range(2):
            if data[position] < 128:
                lengths.append(data[position])
                position += 1
            else:
                lengths.append(struct.unpack_from(">I", data, position)[0] & 0x7FFFFFFF)
                position += 4
        name = data[position:position + lengths[0]]
        value = data[position + lengths[0]:position + lengths[0] + lengths[1]]
        pairs[name] = value
        position += lengths[0] + lengths[1]
    return pairs
