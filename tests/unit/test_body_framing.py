"""Response body framing of iterator bodies (forkd.connection._Pull): chunked, length, close, raw."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forkd.connection import CHUNKED, CLOSE, LENGTH, RAW, _Pull


def drain(pull: _Pull) -> list[bytes]:
    out = []
    while (chunk := pull.pull()) is not None:
        if chunk:
            out.append(chunk)
    return out


def test_chunked_frames_each_piece_and_ends_with_last_chunk() -> None:
    pull = _Pull(iter([b"hello", b"", b"x" * 300]), CHUNKED, 0)
    assert drain(pull) == [b"5\r\nhello\r\n", b"12c\r\n" + b"x" * 300 + b"\r\n", b"0\r\n\r\n"]
    assert not pull.short


def test_empty_pieces_never_end_a_chunked_body_early() -> None:
    assert drain(_Pull(iter([b"", b"", b"a"]), CHUNKED, 0)) == [b"1\r\na\r\n", b"0\r\n\r\n"]


def test_length_body_is_cut_at_the_declared_length() -> None:
    pull = _Pull(iter([b"abc", b"defgh", b"never pulled"]), LENGTH, 5)
    assert drain(pull) == [b"abc", b"de"]
    assert not pull.short


def test_short_length_body_is_flagged() -> None:
    pull = _Pull(iter([b"abc"]), LENGTH, 5)
    assert drain(pull) == [b"abc"]
    assert pull.short  # the connection must close: the client cannot tell the body ended


@pytest.mark.parametrize("mode", [CLOSE, RAW])
def test_close_delimited_and_raw_bodies_pass_through(mode: int) -> None:
    assert drain(_Pull(iter([b"HTTP/1.1 200 OK\r\n\r\n", b"data"]), mode, 0)) == [
        b"HTTP/1.1 200 OK\r\n\r\n", b"data"]


def test_producer_errors_propagate() -> None:
    def broken() -> Iterator[bytes]:
        yield b"a"
        raise OSError("producer broke")

    pull = _Pull(broken(), CHUNKED, 0)
    assert pull.pull() == b"1\r\na\r\n"
    with pytest.raises(OSError):
        pull.pull()
