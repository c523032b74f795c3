"""Response body framing of streamed bodies (forkd.http.framing): chunked, length, close, raw."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forkd.http.framing import CHUNKED, CLOSE, LENGTH, RAW, BodyWriter, IteratorSource


def writer(iterator: Iterator[bytes], mode: int, length: int) -> BodyWriter:
    return BodyWriter(IteratorSource(iterator), mode, length)


def drain(pull: BodyWriter) -> list[bytes]:
    out = []
    while (chunk := pull.pull()) is not None:
        if chunk:
            out.append(chunk)
    return out


def test_chunked_frames_each_piece_and_ends_with_last_chunk() -> None:
    pull = writer(iter([b"hello", b"", b"x" * 300]), CHUNKED, 0)
    assert drain(pull) == [b"5\r\nhello\r\n", b"12c\r\n" + b"x" * 300 + b"\r\n", b"0\r\n\r\n"]
    assert not pull.short


def test_empty_pieces_never_end_a_chunked_body_early() -> None:
    assert drain(writer(iter([b"", b"", b"a"]), CHUNKED, 0)) == [b"1\r\na\r\n", b"0\r\n\r\n"]


def test_length_body_is_cut_at_the_declared_length() -> None:
    pull = writer(iter([b"abc", b"defgh", b"never pulled"]), LENGTH, 5)
    assert drain(pull) == [b"abc", b"de"]
    assert not pull.short


def test_short_length_body_is_flagged() -> None:
    pull = writer(iter([b"abc"]), LENGTH, 5)
    assert drain(pull) == [b"abc"]
    assert pull.short  # the connection must close: the client cannot tell the body ended


@pytest.mark.parametrize("mode", [CLOSE, RAW])
def test_close_delimited_and_raw_bodies_pass_through(mode: int) -> None:
    assert drain(writer(iter([b"HTTP/1.1 200 OK\r\n\r\n", b"data"]), mode, 0)) == [
        b"HTTP/1.1 200 OK\r\n\r\n", b"data"]


def test_producer_errors_propagate() -> None:
    def broken() -> Iterator[bytes]:
        yield b"a"
        raise OSError("producer broke")

    pull = writer(broken(), CHUNKED, 0)
    assert pull.pull() == b"1\r\na\r\n"
    with pytest.raises(OSError):
        pull.pull()


class Trickle:
    """A source that has nothing ready every other read, as a CGI pipe may."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.turn = 0

    def read(self) -> bytes | None:
        self.turn += 1
        if self.turn % 2:
            return b""
        return self.pieces.pop(0) if self.pieces else None


def test_a_source_with_nothing_ready_is_waited_for_not_ended() -> None:
    writer = BodyWriter(Trickle([b"ab", b"c"]), CHUNKED, 0)
    got = [writer.pull() for _ in range(6)]
    assert got == [b"", b"2\r\nab\r\n", b"", b"1\r\nc\r\n", b"", b"0\r\n\r\n"]
    assert writer.pull() is None


def test_zero_length_stream_reads_nothing() -> None:
    writer = BodyWriter(Trickle([b"never"]), LENGTH, 0)
    assert writer.pull() is None
    assert writer.source.turn == 0  # type: ignore[attr-defined]
