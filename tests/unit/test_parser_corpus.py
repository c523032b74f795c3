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
from forkd.http.errors import HTTPError
from forkd.http.parser import HeadParser
from tests.support.parse_driver import Driver

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def load(path: Path) -> tuple[bytes, dict[str, Any]]:
    text = path.read_bytes().replace(b"\r", b"").replace(b"\n", b"")
    raw = codecs.escape_decode(text)[0]
    return raw, json.loads(path.with_suffix(".expect").read_text())


def cases(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).glob("*.http"))


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


def run(chunks: list[bytes], limits: Limits, parser: HeadParser) -> Driver:
    driver = Driver(limits, parser)
    for chunk in chunks:
        driver.feed(chunk)
    return driver


@pytest.mark.parametrize("path", cases("valid"), ids=lambda p: p.stem)
def test_valid(path: Path) -> None:
    raw, expect = load(path)
    parser = HeadParser(Limits())  # shared, as in a worker: after "whole", heads come from its cache
    for how, chunks in splits(raw, zlib.crc32(path.stem.encode())):
        driver = run(chunks, Limits(), parser)
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
    parser = HeadParser(limits)
    for how, chunks in splits(raw, len(raw)):
        with pytest.raises(HTTPError) as caught:
            run(chunks, limits, parser)
        assert caught.value.status == expect["status"], (how, caught.value)


def test_corpus_is_not_empty_and_paired() -> None:
    for kind in ("valid", "invalid"):
        found = cases(kind)
        assert len(found) >= 25
        for path in found:
            assert path.with_suffix(".expect").exists(), path
