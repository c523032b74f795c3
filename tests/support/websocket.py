"""A raw WebSocket client for tests: frames built byte by byte, so a test can send what no library
would (unmasked frames, invalid UTF-8, reserved bits) and read exactly what the server answers."""

from __future__ import annotations

import base64
import os
import socket
import struct


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
          masked: bool = True, length: int | None = None) -> bytes:
    """A client frame: masked with a random key unless told otherwise."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    key = (mask * (len(payload) // 4 + 1))[: len(payload)]
    masked_payload = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        len(payload), "little")
    return head + mask + masked_payload


class RawClient:
    """One handshake, then frames in and out over a plain (or already wrapped) socket."""

    def __init__(self, sock: socket.socket, path: str = "/ws/",
                 headers: dict[str, str] | None = None) -> None:
        self.sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **(headers or {})}
        head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        sock.sendall(head.encode() + b"\r\n")
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        end = self.buffer.find(b"\r\n\r\n") + 4
        self.head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end:]
        self.status = int(self.head.split(" ", 2)[1]) if self.head else 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, count: int) -> bytes | None:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_frame(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next server frame; None when the server closed the socket."""
        head = self._need(2)
        if head is None:
            return None
        assert not head[1] & 0x80, "server frames are never masked"
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._need(2) or b"\0\0")[0]
        elif length == 127:
            length = struct.unpack("!Q", self._need(8) or b"\0" * 8)[0]
        payload = self._need(length) if length else b""
        return head[0] & 0x0F, payload or b""

    def read_close(self) -> int:
        """Skip frames up to the server's close frame; its code (1005 when it has none)."""
        while True:
            got = self.read_frame()
            assert got is not None, "the connection ended without a close frame"
            opcode, payload = got
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005

    def at_end(self) -> bool:
        """Whether the server closes the connection (reads and drops anything before the end)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True
