"""The request corpus (tests/corpus/README.md) through the parser, in every way bytes can arrive."""

from __future__ import annotations

import codecs
import dataclasses
import json
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forkd.config import Limits
from forkd.http.body import ChunkedDecoder, LengthReader
from forkd.http.errors import HTTPError
from forkd.http.parser import find_head, parse_head, skip_empty_lines
from forkd.http.request import Request

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def load(path: Path) -> tuple[bytes, dict[str, Any]]:
    text = path.read_bytes().replace(b"\r", b"").replace(b"\n", b"")
    raw = codecs.escape_decode(text)[0]
    return raw, json.loads(path.with_suffix(".expect").read_text())


def cases(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).glob("*.http"))


class Driver:
    """Bytes in, (Request, body) pairs out: the worker's parsing steps without the sockets."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buffer = bytearray()
        self.done: list[tuple[Request, bytes]] = []
        self.request: Request | None = None
        self.reader: LengthReader | ChunkedDecoder | None = None
        self.body: list[bytes] = []
        self.scanned = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.step():
            pass

    def step(self) -> bool:
        if self.request is None:
            if self.buffer[:1] == b"\r":
                skip_empty_lines(self.buffer)
                self.scanned = 0
            end = find_head(self.buffer, self.limits, self.scanned)
            if end < 0:
                self.scanned = len(self.buffer)
                return False
            self.scanned = 0
            head = bytes(self.buffer[:end])
            del self.buffer[:end]
            self.request = parse_head(head, self.limits)
            if self.request.chunked:
                self.reader = ChunkedDecoder(self.limits.body)
            else:
                self.reader = LengthReader(self.request.content_length or 0)
        assert self.reader is not None
        data, self.buffer = bytes(self.buffer), bytearray()
        self.body.append(self.reader.feed(data))
        if not self.reader.done:
            return False
        self.buffer = bytearray(self.reader.rest)
        self.done.append((self.request, b"".join(self.body)))
        self.request, self.reader, self.body = None, None, []
        return bool(self.buffer)


def splits(raw: bytes, seed: int) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [raw]
    yield "lines", [line for line in raw.splitlines(keepends=True)]
    yield "bytes", [raw[i : i + 1] for i in range(len(raw))]
    rng = random.Random(seed)
    for round_ in range(3):
        chunks, i = [], 0
        while i < len(raw):
            size = rng.randint(1, 17)
            chunks.append(raw[i : i + size])
            i += size
        yield f"random{round_}", chunks


def run(chunks: list[bytes], limits: Limits) -> Driver:
    driver = Driver(limits)
    for chunk in chunks:
        driver.feed(chunk)
    return driver


@pytest.mark.parametrize("path", cases("valid"), ids=lambda p: p.stem)
def test_valid(path: Path) -> None:
    raw, expect = load(path)
    for how, chunks in splits(raw, zlib.crc32(path.stem.encode())):
        driver = run(chunks, Limits())
        assert driver.request is None and not driver.buffer, f"{how}: incomplete request left over"
        assert len(driver.done) == len(expect["requests"]), how
        for (request, body), wanted in zip(driver.done, expect["requests"]):
            for key, value in wanted.items():
                if key == "body":
                    assert body == value.encode("latin-1"), how
                elif key == "headers":
                    for name, text in value.items():
                        assert request.headers.get(name) == text, (how, name)
                else:
                    assert getattr(request, key) == value, (how, key)


@pytest.mark.parametrize("path", cases("invalid"), ids=lambda p: p.stem)
def test_invalid(path: Path) -> None:
    raw, expect = load(path)
    limits = dataclasses.replace(Limits(), **expect.get("limits", {}))
    for how, chunks in splits(raw, len(raw)):
        with pytest.raises(HTTPError) as caught:
            run(chunks, limits)
        assert caught.value.status == expect["status"], (how, caught.value)


def test_corpus_is_not_empty_and_paired() -> None:
    for kind in ("valid", "invalid"):
        found = cases(kind)
        assert len(found) >= 25
        for path in found:
            assert path.with_suffix(".expect").exists(), path
