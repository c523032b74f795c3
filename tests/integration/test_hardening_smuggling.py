"""Request smuggling and parser abuse, end to end: one answer, a closed connection, no handler run.

Two sources of hostile requests, each sent over a raw socket to the real daemon and followed on the
same connection by a *canary*: a well-formed request for a counting CGI script
(/cgi-bin/count.sh?canary-NAME). If forkd ever read the hostile bytes as something other than one
bad request (a request plus a smuggled one, a body that ends early, ...), the canary or the smuggled
request would reach the script and leave a line in its counter file, or show in the access log.

1. ENGINE's unit corpus (tests/corpus/invalid/*.http, without the cases that need special limits;
   test_http.py's test_head_limits covers limits end to end): every case, whole.
2. Smuggling variants not in the corpus, aimed at the counting script itself: CL.TE and TE.CL with
   a smuggled request in the body, TE.TE with obfuscated Transfer-Encoding values (quoted, with
   parameters, NUL, non-ASCII, a near-miss name, unknown codings before chunked), signed and
   exponent Content-Length values, chunk-size overflow at exactly and beyond 16 hex digits,
   whitespace tricks (a blank-looking line holding a space, a tab before the request line),
   bare CR / LF in the body framing, and a bad request in the middle of a pipeline.

For each: exactly one response (or, for the pipeline, the good one first and then one error),
with the expected status and `Connection: close`; the connection then closes (EOF well before the
timeout); and at the end the counter file holds no line of any case, nor the access log a canary.
"""

from __future__ import annotations

import codecs
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hardening_support import counted, make_site, site_config

from tests.support.daemon import Daemon, poll

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "invalid"
CLOSE_WITHIN = 3.0  # seconds: forkd closes at once after a framing error; 5 s would mean a timeout


def canary(name: str) -> bytes:
    return f"GET /cgi-bin/count.sh?canary-{name} HTTP/1.1\r\nHost: a\r\n\r\n".encode()


def post(name: str, fields: str, body: bytes) -> bytes:
    """A POST to the counting script with raw header lines (CRLF-joined by the caller) and body."""
    return f"POST /cgi-bin/count.sh?front-{name} HTTP/1.1\r\nHost: a\r\n{fields}\r\n".encode() + body


SMUGGLED = b"GET /cgi-bin/count.sh?smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

# name -> (bytes, expected status). Each is followed by the canary on the same connection.
VARIANTS: dict[str, tuple[bytes, int]] = {
    # CL.TE: a front end using Content-Length forwards it all; one using chunked sees a 2nd request.
    "cl_te": (post("cl_te", f"Content-Length: {5 + len(SMUGGLED)}\r\nTransfer-Encoding: chunked\r\n",
                   b"0\r\n\r\n" + SMUGGLED), 400),
    # TE.CL: the chunk holds the smuggled request; a Content-Length reader stops after "4f\r\n".
    "te_cl": (post("te_cl", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                   b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)), 400),
    # TE.TE: obfuscated Transfer-Encoding values that some parsers read as chunked and some not.
    "te_quoted": (post("te_quoted", 'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n" + SMUGGLED), 400),
    "te_parameter": (post("te_parameter", "Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"), 400),
    "te_nul": (post("te_nul", "Transfer-Encoding: chunked\x00\r\n", b"0\r\n\r\n"), 400),
    "te_non_ascii": (post("te_non_ascii", "Transfer-Encoding: chunk\xe9d\r\n", b"0\r\n\r\n"), 400),
    "te_near_miss": (post("te_near_miss", "Transfer-Encoding: chunk\r\n", b"0\r\n\r\n"), 501),
    "te_identity_chunked": (post("te_identity_chunked", "Transfer-Encoding: identity, chunked\r\n",
                                 b"0\r\n\r\n"), 501),
    "te_then_garbage": (post("te_then_garbage", "Transfer-Encoding: chunked\r\n"
                             "Transfer-Encoding: cow\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    "te_split_by_fold": (post("te_split_by_fold", "X-A: b\r\n\tTransfer-Encoding: chunked\r\n",
                              b"0\r\n\r\n"), 400),
    "te_tab_before_colon": (post("te_tab_before_colon", "Transfer-Encoding\t: chunked\r\n",
                                 b"0\r\n\r\n"), 400),
    # Content-Length: duplicates that disagree, signs, exponents, a list with a sign.
    "cl_duplicate_smuggle": (post("cl_duplicate_smuggle", "Content-Length: 0\r\nContent-Length: "
                                  f"{len(SMUGGLED)}\r\n", SMUGGLED), 400),
    "cl_minus_zero": (post("cl_minus_zero", "Content-Length: -0\r\n", b""), 400),
    "cl_exponent": (post("cl_exponent", "Content-Length: 1e1\r\n", b"x" * 10), 400),
    "cl_list_signed": (post("cl_list_signed", "Content-Length: 5, +5\r\n", b"hello"), 400),
    "cl_trailing_garbage": (post("cl_trailing_garbage", "Content-Length: 5;\r\n", b"hello"), 400),
    # Chunk sizes: 16 hex digits parse (and exceed the body limit: 413), 17 are an overflow (400).
    "chunk_size_16_digits": (post("chunk_size_16_digits", "Transfer-Encoding: chunked\r\n",
                                  b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 413),
    "chunk_size_wraps_to_5": (post("chunk_size_wraps_to_5", "Transfer-Encoding: chunked\r\n",
                                   b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED), 400),
    "chunk_size_leading_zeros": (post("chunk_size_leading_zeros", "Transfer-Encoding: chunked\r\n",
                                      b"00000000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_size_nul": (post("chunk_size_nul", "Transfer-Encoding: chunked\r\n",
                            b"5\x00\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_ext_empty_name": (post("chunk_ext_empty_name", "Transfer-Encoding: chunked\r\n",
                                  b"5;\r\nhello\r\n0\r\n\r\n"), 400),
    # Bare LF / CR inside the chunked framing, with a smuggled request after a "short" body.
    "chunk_bare_lf_smuggle": (post("chunk_bare_lf_smuggle", "Transfer-Encoding: chunked\r\n",
                                   b"0\n\n" + SMUGGLED + b"0\r\n\r\n"), 400),
    "chunk_bare_cr_smuggle": (post("chunk_bare_cr_smuggle", "Transfer-Encoding: chunked\r\n",
                                   b"0\r\r\n" + SMUGGLED), 400),
    "head_bare_cr_splits_field": (post("head_bare_cr_splits_field",
                                       "X-A: b\rTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    # Whitespace: a line holding one space looks blank to some parsers (and ends their head).
    "space_only_line": (b"GET /cgi-bin/count.sh?front-space_only_line HTTP/1.1\r\nHost: a\r\n \r\n"
                        + SMUGGLED, 400),
    "tab_before_request_line": (b"\tGET /cgi-bin/count.sh?front-tab HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "space_in_target": (b"GET /cgi-bin/count.sh?front-space HTTP/1.1 HTTP/1.1\r\nHost: a\r\n\r\n",
                        400),
    "lf_ended_head_after_crlf_line": (b"GET /cgi-bin/count.sh?front-lf HTTP/1.1\r\nHost: a\n\n"
                                      + SMUGGLED, 400),
    # HTTP/0.9 and HTTP/2 at the counting script.
    "http09_at_script": (b"GET /cgi-bin/count.sh?front-http09\r\n", 400),
    "http2_preface_then_request": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED, 505),
}


def load_case(path: Path) -> tuple[bytes, dict[str, object]]:
    """A corpus case (see tests/corpus/README.md for the escape format)."""
    text = path.read_bytes().replace(b"\r", b"").replace(b"\n", b"")
    expect = json.loads(path.with_suffix(".expect").read_text())
    return codecs.escape_decode(text)[0], expect


CORPUS_CASES = [p for p in sorted(CORPUS.glob("*.http")) if "limits" not in load_case(p)[1]]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site(tmp_path_factory.mktemp("smuggling"))


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[Daemon]:
    directory = site / "daemon"
    directory.mkdir()
    daemon = Daemon(directory, site_config(site, workers=2, limits={"body": 100000})).start()
    yield daemon
    daemon.stop()


def exchange(daemon: Daemon, data: bytes) -> tuple[bytes, float]:
    """Send data, read until the server closes; (everything received, seconds until EOF)."""
    started = time.monotonic()
    with socket.create_connection((daemon.host, daemon.port), timeout=CLOSE_WITHIN + 2) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before it has read everything: that is fine
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"connection still open after {CLOSE_WITHIN + 2}s") from None
    return b"".join(chunks), time.monotonic() - started


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split what the server sent into responses (Content-Length or chunked framing)."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), f"not a response: {data[:200]!r}"
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.lower()] = value.strip()
        if fields.get("transfer-encoding") == "chunked":
            body, data = _dechunk(rest)
        else:
            length = int(fields.get("content-length", "0"))
            body, data = rest[:length], rest[length:]
        found.append((int(lines[0].split()[1]), fields, body))
    return found


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    """(the decoded chunked body, what follows it); trailers are not expected from forkd."""
    body = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            assert data.startswith(b"\r\n"), data[:40]
            return body, data[2:]
        body, data = body + data[:size], data[size + 2:]


def check_rejected(daemon: Daemon, name: str, data: bytes, status: int) -> None:
    received, seconds = exchange(daemon, data + canary(name))
    answers = responses(received)
    assert len(answers) == 1, f"{name}: {len(answers)} responses: {received[:300]!r}"
    got, fields, _ = answers[0]
    assert got == status, f"{name}: status {got}, expected {status}"
    assert fields.get("connection") == "close", name
    assert seconds < CLOSE_WITHIN, f"{name}: closed only after {seconds:.1f}s"


@pytest.mark.parametrize("case", CORPUS_CASES, ids=lambda p: p.stem)
def test_corpus_case_end_to_end(server: Daemon, site: Path, case: Path) -> None:
    data, expect = load_case(case)
    # Bodies go to the counting script (the static route refuses POST before reading a body).
    if data.startswith(b"POST / "):
        data = b"POST /cgi-bin/count.sh?front-%b " % case.stem.encode() + data[len(b"POST / "):]
    check_rejected(server, case.stem, data, int(expect["status"]))  # type: ignore[call-overload]
    assert not [line for line in counted(site) if case.stem in line]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_smuggling_variant_is_one_rejected_request(server: Daemon, site: Path, name: str) -> None:
    data, status = VARIANTS[name]
    check_rejected(server, name, data, status)
    assert counted(site) == [], "a hostile request (or what followed it) reached the script"


def test_bad_request_inside_a_pipeline_stops_it(server: Daemon, site: Path) -> None:
    good = b"GET /cgi-bin/count.sh?pipeline-first HTTP/1.1\r\nHost: a\r\n\r\n"
    bad = post("pipeline", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")
    received, seconds = exchange(server, good + bad + SMUGGLED + canary("pipeline"))
    lines = counted(site)
    (site / "counter").write_text("")
    statuses = [answer[0] for answer in responses(received)]
    assert statuses == [200, 400]
    assert seconds < CLOSE_WITHIN
    assert lines == ["GET pipeline-first"]


def test_no_canary_or_smuggled_request_in_the_access_log(server: Daemon, site: Path) -> None:
    """Runs last in this module: the access log of everything above names no canary."""
    before = _access_log(server).count("front-cl_te")
    check_rejected(server, "last", VARIANTS["cl_te"][0], 400)
    # The access log is flushed when the worker goes idle.
    poll(lambda: _access_log(server).count("front-cl_te") > before, 5, "the rejection logged")
    log = _access_log(server)
    assert log.count("front-cl_te") > before, "the rejected request was not logged"
    served = [line for line in log.splitlines() if '" 200 ' in line]
    assert not [line for line in served if "canary-" in line or "smuggled" in line], served
    assert counted(site) == []


def _access_log(daemon: Daemon) -> str:
    return daemon.access_log.read_text(errors="replace") if daemon.access_log.exists() else ""
