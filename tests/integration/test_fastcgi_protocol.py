"""The FastCGI client against a scripted responder on TCP (tests/support/fastcgi_peer.py).

php-fpm speaks the protocol one way; these tests hold forkd to the specification where php-fpm
never goes: records of 1 to 7 bytes with empty STDOUT records between them, an OVERLOADED
status, a peer that is not FastCGI at all, a peer that dies mid-response, and a TCP `connect`.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.fastcgi_peer import FastCgiPeer

SCRIPTS = ("params.php", "stdin.php", "overloaded.php", "garbage.php", "dies.php", "eof.php",
           "go.php")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("fastcgi-peer")
    root = directory / "root"
    root.mkdir()
    for name in SCRIPTS:
        (root / name).write_text("<?php // answered by the scripted peer\n")
    peer = FastCgiPeer().start()
    (directory / "forkd").mkdir()
    server = Daemon(directory / "forkd", {"limits": {"body": 8 << 20}, "routes": [
        {"prefix": "/", "fastcgi": {"connect": peer.connect, "root": str(root), "timeout": 5}}]})
    try:
        server.start()
        yield server
    finally:
        server.stop()
        peer.stop()


def test_tiny_and_empty_records_make_one_response(daemon: Daemon) -> None:
    status, headers, body = daemon.get("/params.php/more?q=1")
    assert status == 200 and headers["content-type"] == "text/plain"
    lines = body.decode().splitlines()
    assert "SCRIPT_NAME=/params.php" in lines and "PATH_INFO=/more" in lines
    assert "QUERY_STRING=q=1" in lines and "GATEWAY_INTERFACE=CGI/1.1" in lines
    assert f"DOCUMENT_ROOT={daemon.dir.parent / 'root'}" in lines


def test_the_body_arrives_as_stdin_records(daemon: Daemon) -> None:
    payload = bytes(range(256)) * 20_000  # 5 MB: many STDIN records
    status, _, body = daemon.get("/stdin.php", method="POST", body=payload)
    assert status == 200
    assert body == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()


def test_overloaded_is_503_with_retry_after(daemon: Daemon) -> None:
    status, headers, _ = daemon.get("/overloaded.php")
    assert status == 503 and headers["retry-after"] == "1"


def test_a_peer_that_is_not_fastcgi_is_502(daemon: Daemon) -> None:
    assert daemon.get("/garbage.php")[0] == 502
    daemon.wait_for_log("not a FastCGI record")


def test_a_peer_that_dies_mid_response_never_looks_complete(daemon: Daemon) -> None:
    conn = daemon.connection()
    conn.request("GET", "/dies.php")
    response = conn.getresponse()
    if response.status == 200:  # already streaming when the peer died: the response is cut
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    else:
        assert response.status == 502
    conn.close()
    daemon.wait_for_log("php-fpm closed the connection")
    assert daemon.get("/params.php")[0] == 200  # the worker serves on


def test_a_connection_per_request_is_half_closed_once_the_request_is_sent(daemon: Daemon) -> None:
    # php-fpm reads until the end of its input before it takes its next connection: it comes
    # with the request, not with forkd's close after the answer. A body is sent whole first.
    assert daemon.get("/eof.php")[2] == b"end of input"
    status, _, body = daemon.get("/eof.php", method="POST", body=b"x" * 300_000)
    assert (status, body) == (200, b"end of input")


def test_a_responder_that_ends_with_its_input_is_502_with_a_hint(daemon: Daemon) -> None:
    assert daemon.get("/go.php")[0] == 502
    daemon.wait_for_log("try fastcgi.half_close: false")


def test_half_close_false_keeps_the_input_open_until_the_answer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "eof.php").write_text("<?php // answered by the scripted peer\n")
    (root / "go.php").write_text("<?php // answered by the scripted peer\n")
    peer = FastCgiPeer().start()
    (tmp_path / "forkd").mkdir()
    server = Daemon(tmp_path / "forkd", {"routes": [
        {"prefix": "/", "fastcgi": {"connect": peer.connect, "root": str(root),
                                    "half_close": False}}]})
    try:
        server.start()
        assert server.get("/eof.php")[2] == b"input open"
        assert server.get("/go.php")[2] == b"answered"
    finally:
        server.stop()
        peer.stop()


def test_a_kept_connection_closed_under_a_request_sends_it_again(tmp_path: Path) -> None:
    """The peer closes each kept connection after reading its third request, without an answer:
    the request goes again on a new connection, and the client never sees it."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "kept.php").write_text("<?php // answered by the scripted peer\n")
    peer = FastCgiPeer().start()
    (tmp_path / "forkd").mkdir()
    server = Daemon(tmp_path / "forkd", {"workers": 1, "routes": [
        {"prefix": "/", "fastcgi": {"connect": peer.connect, "root": str(root),
                                    "connections": 1}}]})
    try:
        server.start()
        answers = [server.get("/kept.php")[2] for _ in range(5)]
        assert answers == [b"1 1", b"1 2", b"2 1", b"2 2", b"3 1"]
        assert "closed the connection" not in server.log()
    finally:
        server.stop()
        peer.stop()
