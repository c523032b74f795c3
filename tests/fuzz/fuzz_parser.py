"""Coverage-guided fuzzing (atheris/libFuzzer) of the request parser and body readers.

Not part of the test suite (pytest does not collect this directory: see tests/fuzz/README.md for
the command and the results of the last run). Each input is split in two by its first byte: a
cut point, so that the same bytes also arrive in two segments. The properties are those of
tests/unit/test_properties_parser.py:
  - only HTTPError escapes, with a status a parser may give, and it closes the connection;
  - the outcome (requests parsed, their bodies, whether the rest was rejected) is the same whole
    and in two pieces. (Only the status of a rejection may depend on where the bytes were cut: a
    head with several faults is judged on the first one seen; see the property tests.)
Any crash it finds becomes a corpus case (tests/corpus/) or a property-test @example.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from forkd.config import Limits
    from tests.support.parse_driver import drive as drive_with
LIMITS = Limits(request_line=512, header_bytes=2048, headers=16, body=8192)


def drive(chunks: list[bytes]) -> tuple[list, int]:
    """The worker's parsing steps; a bad error raises AssertionError (a crash for libFuzzer)."""
    return drive_with(chunks, LIMITS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    cut, payload = data[0] * len(data) // 256, data[1:]
    whole, whole_status = drive([payload])
    split, split_status = drive([payload[:cut], payload[cut:]])
    if (whole, bool(whole_status)) != (split, bool(split_status)):
        raise AssertionError(f"segmentation changes the outcome: {whole!r} {whole_status} != "
                             f"{split!r} {split_status}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
