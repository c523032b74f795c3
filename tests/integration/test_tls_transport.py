"""forkd.tls contexts and forkd.transport over real sockets, with certificates made by trustme.

The server side is driven the way the worker drives it: a non-blocking socket, the transport's
calls, and a wait on whatever epoll event it asks for. The client is an ordinary blocking ssl
socket in a thread (or the parent process, when the servers are forked workers).
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from forkd import tls
from forkd.config import CertificatePair, TlsConfig
from forkd.transport import (
    EPOLLIN,
    EPOLLOUT,
    PLAIN_HTTP_REPLY,
    HandshakeFailed,
    PlainTransport,
    TlsTransport,
)

WAIT = 5.0  # seconds any single step may take before the test fails


@dataclass
class Pki:
    directory: Path
    ca: trustme.CA
    client_ca: trustme.CA
    pairs: dict[str, CertificatePair] = field(default_factory=dict)
    der: dict[str, bytes] = field(default_factory=dict)
    client: trustme.LeafCert | None = None
    stranger: trustme.LeafCert | None = None

    def issue(self, name: str, *identities: str, kind: trustme.KeyType) -> None:
        leaf = self.ca.issue_cert(*identities, key_type=kind)
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        self.pairs[name] = CertificatePair(cert, key)
        self.der[name] = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())

    def settings(self, *names: str, **options: Any) -> TlsConfig:
        return TlsConfig(certificates=tuple(self.pairs[n] for n in names), **options)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    pki = Pki(directory, trustme.CA(), trustme.CA(organization_name="Clients"))
    pki.issue("rsa", "example.com", "www.example.com", kind=trustme.KeyType.RSA)
    pki.issue("ecdsa", "example.com", "www.example.com", kind=trustme.KeyType.ECDSA)
    pki.issue("other", "other.test", kind=trustme.KeyType.ECDSA)
    pki.issue("wild", "*.wild.test", kind=trustme.KeyType.RSA)
    pki.client = pki.client_ca.issue_cert(
        "alice@example.com", common_name="Alice, Smith", organization_name="Staff"
    )
    pki.stranger = trustme.CA().issue_cert("mallory@example.com", common_name="Mallory")
    pki.client_ca.cert_pem.write_to_path(str(directory / "clients.pem"))
    return pki


def client_context(
    pki: Pki, maximum: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pki.ca.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old protocols
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def wait_for(fd: int, mask: int, deadline: float) -> None:
    readable, writable, _ = select.select(
        [fd] if mask & EPOLLIN else [],
        [fd] if mask & EPOLLOUT else [],
        [],
        max(0.0, deadline - time.monotonic()),
    )
    assert readable or writable, "the transport waited past the test's deadline"


def drive_handshake(transport: TlsTransport | PlainTransport) -> None:
    deadline = time.monotonic() + WAIT
    while mask := transport.handshake():
        wait_for(transport.fileno(), mask, deadline)


def retry(transport: TlsTransport, call: Callable[[], Any]) -> Any:
    """Call until it does not raise BlockingIOError, waiting for what the transport wants."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return call()
        except BlockingIOError:
            wait_for(transport.fileno(), transport.wants, deadline)


class Client(threading.Thread):
    """A blocking TLS client in a thread: connects, then runs `then(tls_socket)`."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        name: str | None = "example.com",
        then: Callable[[ssl.SSLSocket], Any] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.sock, self.context, self.name, self.then = sock, context, name, then
        self.tls: ssl.SSLSocket | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        self.sock.settimeout(WAIT)
        try:
            self.tls = self.context.wrap_socket(self.sock, server_hostname=self.name)
            if self.then is not None:
                self.result = self.then(self.tls)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)
    yield server, client
    server.close()
    client.close()


def connect(
    pair: tuple[socket.socket, socket.socket],
    server_context: ssl.SSLContext,
    client: ssl.SSLContext,
    name: str | None = "example.com",
    then: Callable[[ssl.SSLSocket], Any] | None = None,
) -> tuple[TlsTransport, Client]:
    transport = TlsTransport(pair[0], server_context)
    peer = Client(pair[1], client, name, then)
    drive_handshake(transport)
    return transport, peer


# -- the transport --------------------------------------------------------------------------------


def test_handshake_then_recv_and_send_without_blocking(pki: Pki, pair: Any) -> None:
    context = tls.build_server_context(pki.settings("ecdsa"))
    ready = threading.Event()

    def exchange(sock: ssl.SSLSocket) -> bytes:
        ready.wait(WAIT)
        sock.sendall(b"ping")
        answer = sock.recv(100)
        assert sock.recv(100) == b""  # close_notify: a clean end of stream
        return answer

    transport, client = connect(pair, context, client_context(pki), then=exchange)
    assert transport.tls is not None and transport.tls.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(BlockingIOError):
        transport.recv(65536)  # nothing sent yet
    assert transport.wants == EPOLLIN
    ready.set()
    assert retry(transport, lambda: transport.recv(65536)) == b"ping"
    assert transport.pending() == 0
    assert retry(transport, lambda: transport.send(b"pong", socket.MSG_MORE)) == 4
    transport.close()
    assert client.finish() == b"pong"


def test_recv_returns_the_whole_record_when_asked_for_less(pki: Pki, pair: Any) -> None:
    context = tls.build_server_context(pki.settings("ecdsa"))
    transport, client = connect(
        pair, context, client_context(pki), then=lambda s: s.sendall(b"x" * 100)
    )
    client.finish()
    first = retry(transport, lambda: transport.recv(10))
    assert first == b"x" * 10 and transport.pending() == 90  # invisible to epoll: read again
    assert transport.recv(1000) == b"x" * 90
    transport.close()


def test_sendfile_of_5_mb_through_a_slow_reader(pki: Pki, pair: Any, tmp_path: Path) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 123)
    (tmp_path / "big").write_bytes(payload)
    context = tls.build_server_context(pki.settings("rsa"))

    def read_all(sock: ssl.SSLSocket) -> str:
        digest = hashlib.sha256()
        got = 0
        while got < len(payload):
            time.sleep(0.001 if got % 1048576 < 65536 else 0)  # a reader that lags now and then
            data = sock.recv(65536)
            assert data
            digest.update(data)
            got += len(data)
        return digest.hexdigest()

    transport, client = connect(pair, context, client_context(pki), then=read_all)
    blocked = 0
    deadline = time.monotonic() + 30
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        offset = 0
        while offset < len(payload):
            try:
                sent = transport.sendfile(fd, offset, len(payload) - offset)
            except BlockingIOError:
                blocked += 1
                wait_for(transport.fileno(), transport.wants, deadline)
                continue
            assert 0 < sent <= 256 * 1024
            offset += sent
    finally:
        os.close(fd)
    assert client.finish() == hashlib.sha256(payload).hexdigest()
    assert blocked > 0  # the socket buffer filled: retries with the kept chunk did happen
    transport.close()


def test_plain_http_on_a_tls_port_gets_a_400(pki: Pki, pair: Any) -> None:
    server, client = pair
    transport = TlsTransport(server, tls.build_server_context(pki.settings("ecdsa")))
    assert transport.handshake() == EPOLLIN  # nothing arrived yet
    client.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    with pytest.raises(HandshakeFailed) as failed:
        transport.handshake()
    assert failed.value.kind == "http request"
    transport.answer_plain_http()
    transport.close()
    client.settimeout(WAIT)
    reply = b""
    while chunk := client.recv(4096):
        reply += chunk
    assert reply == PLAIN_HTTP_REPLY
    head, _, body = reply.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head


@pytest.mark.parametrize(
    ("first_bytes", "kind"),
    [
        (b"", "eof"),
        (b"\x00\x00garbage", "not tls"),
        (b"\x80\x2e\x01\x00\x02", "not tls"),  # an SSLv2 hello
        (b"\x16\x03\x01\x00\x05", "eof"),  # a record header, then nothing
        (b"\x16\x03\x01\x00\x05hello", "malformed"),
    ],
)
def test_a_bad_start_is_classified(pki: Pki, pair: Any, first_bytes: bytes, kind: str) -> None:
    server, client = pair
    transport = TlsTransport(server, tls.build_server_context(pki.settings("ecdsa")))
    client.sendall(first_bytes)
    client.shutdown(socket.SHUT_WR)
    with pytest.raises(HandshakeFailed) as failed:
        drive_handshake(transport)
    assert failed.value.kind == kind
    transport.close()


def test_plain_transport_is_the_socket(pair: Any, tmp_path: Path) -> None:
    server, client = pair
    transport = PlainTransport(server)
    assert transport.tls is None and transport.handshake() == 0
    with pytest.raises(BlockingIOError):
        transport.recv(10)
    (tmp_path / "f").write_bytes(b"0123456789")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    assert transport.sendfile(fd, 2, 5) == 5
    os.close(fd)
    assert transport.send(b"!") == 1
    client.settimeout(WAIT)
    assert client.recv(10) == b"23456!"
    transport.close()
    assert client.recv(10) == b""


# -- certificates chosen by SNI and key type ------------------------------------------------------


def served_certificate(pki: Pki, pair: Any, names: tuple[str, ...], **client: Any) -> bytes:
    context = tls.build_server_context(pki.settings(*names))
    client_side = client_context(pki, **client)
    client_side.check_hostname = False
    transport, peer = connect(pair, context, client_side)
    peer.finish()
    assert peer.tls is not None
    der = peer.tls.getpeercert(binary_form=True)
    transport.close()
    assert der is not None
    return der


@pytest.mark.parametrize(
    ("ciphers", "expected"),
    [("ECDHE-RSA-AES128-GCM-SHA256", "rsa"), ("ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa")],
)
def test_rsa_and_ecdsa_for_one_name(pki: Pki, pair: Any, ciphers: str, expected: str) -> None:
    der = served_certificate(
        pki, pair, ("rsa", "ecdsa", "other"), maximum=ssl.TLSVersion.TLSv1_2, ciphers=ciphers
    )
    assert der == pki.der[expected]


@pytest.mark.parametrize(
    ("sni", "expected"),
    [
        ("other.test", "other"),
        ("OTHER.test.", "other"),
        ("a.wild.test", "wild"),
        ("a.b.wild.test", "ecdsa"),  # a wildcard covers one label: the default answers
        ("wild.test", "ecdsa"),
        ("www.example.com", "ecdsa"),
        (None, "ecdsa"),  # no SNI: the first certificate
    ],
)
def test_sni_picks_the_certificate(pki: Pki, sni: str | None, expected: str) -> None:
    context = tls.build_server_context(pki.settings("ecdsa", "other", "wild"))
    client_side = client_context(pki)
    client_side.check_hostname = False
    server, client = socket.socketpair()
    server.setblocking(False)
    try:
        transport, peer = connect((server, client), context, client_side, name=sni)
        peer.finish()
        assert peer.tls is not None and peer.tls.getpeercert(binary_form=True) == pki.der[expected]
        transport.close()
    finally:
        client.close()


# -- client certificates --------------------------------------------------------------------------


def client_cert_context(pki: Pki, mode: str) -> ssl.SSLContext:
    return tls.build_server_context(
        pki.settings("ecdsa", client_certificates=mode, client_ca=pki.directory / "clients.pem")
    )


def test_required_client_certificate_is_verified_and_described(pki: Pki, pair: Any) -> None:
    client_side = client_context(pki)
    assert pki.client is not None
    pki.client.configure_cert(client_side)
    transport, peer = connect(pair, client_cert_context(pki, "required"), client_side)
    peer.finish()
    assert transport.tls is not None
    variables = tls.connection_variables(transport.tls)
    # What mod_ssl shows is what OpenSSL prints in RFC 2253 form.
    pem = pki.directory / "alice.pem"
    pki.client.cert_chain_pems[0].write_to_path(str(pem))
    printed = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-subject", "-issuer", "-serial"]
        + ["-nameopt", "RFC2253"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    subject, issuer, serial = (line.split("=", 1)[1] for line in printed)
    assert subject.startswith("CN=Alice\\, Smith,") and issuer.endswith(",O=Clients")
    assert variables == {
        "HTTPS": "on",
        "REQUEST_SCHEME": "https",
        "SSL_PROTOCOL": "TLSv1.3",
        "SSL_CIPHER": transport.tls.cipher()[0],  # type: ignore[index]
        "SSL_CLIENT_VERIFY": "SUCCESS",
        "SSL_CLIENT_S_DN": subject,
        "SSL_CLIENT_I_DN": issuer,
        "SSL_CLIENT_M_SERIAL": serial,
    }
    transport.close()


@pytest.mark.parametrize(
    ("certificate", "kind"),
    [("none", "no client certificate"), ("stranger", "client certificate rejected")],
)
def test_required_client_certificate_refuses(
    pki: Pki, pair: Any, certificate: str, kind: str
) -> None:
    client_side = client_context(pki)
    if certificate == "stranger":
        assert pki.stranger is not None
        pki.stranger.configure_cert(client_side)
    transport = TlsTransport(pair[0], client_cert_context(pki, "required"))
    peer = Client(pair[1], client_side, then=lambda s: s.recv(10))  # TLS 1.3: refused after
    with pytest.raises(HandshakeFailed) as failed:
        drive_handshake(transport)
    assert failed.value.kind == kind
    transport.close()
    with pytest.raises(ssl.SSLError):
        peer.finish()


def test_optional_client_certificate(pki: Pki, pair: Any) -> None:
    transport, peer = connect(pair, client_cert_context(pki, "optional"), client_context(pki))
    peer.finish()
    assert transport.tls is not None
    variables = tls.connection_variables(transport.tls)
    assert variables["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in variables
    transport.close()


# -- profiles -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "client_maximum", "accepted"),
    [
        ("intermediate", ssl.TLSVersion.TLSv1_1, None),
        ("intermediate", ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        ("intermediate", ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
        ("modern", ssl.TLSVersion.TLSv1_2, None),
        ("modern", ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
        ("old", ssl.TLSVersion.TLSv1, "TLSv1"),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_profile_protocols(
    pki: Pki, pair: Any, profile: str, client_maximum: ssl.TLSVersion, accepted: str | None
) -> None:
    context = tls.build_server_context(pki.settings("rsa", profile=profile))
    transport = TlsTransport(pair[0], context)
    peer = Client(pair[1], client_context(pki, maximum=client_maximum))
    if accepted is None:
        with pytest.raises(HandshakeFailed) as failed:
            drive_handshake(transport)
        assert failed.value.kind == "unsupported protocol"
        with pytest.raises(ssl.SSLError):
            peer.finish()
    else:
        drive_handshake(transport)
        peer.finish()
        assert transport.tls is not None and transport.tls.version() == accepted
        if accepted != "TLSv1.3":
            cipher = transport.tls.cipher()
            assert cipher is not None
            assert cipher[0] in tls.PROFILES[profile].ciphers.split(":")  # type: ignore[union-attr]
    transport.close()


def test_a_mismatched_pair_names_the_files(pki: Pki) -> None:
    broken = CertificatePair(pki.pairs["rsa"].cert, pki.pairs["other"].key)
    with pytest.raises(tls.TlsError) as caught:
        tls.build_server_context(TlsConfig(certificates=(broken,)))
    assert str(caught.value) == f"{broken.key} does not match {broken.cert}"


# -- session resumption across forked workers -----------------------------------------------------


def serve_once_in_a_child(listener: socket.socket, context: ssl.SSLContext, reply: bytes) -> int:
    """Fork a 'worker' that accepts one connection on the shared listener and answers `reply`."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        select.select([listener], [], [], WAIT)
        sock, _ = listener.accept()
        sock.setblocking(False)
        transport = TlsTransport(sock, context)
        drive_handshake(transport)
        retry(transport, lambda: transport.send(reply))
        retry(transport, lambda: transport.recv(10))  # until the client closes
        transport.close()
        code = 0
    finally:
        os._exit(code)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_a_session_made_by_one_worker_resumes_on_another(pki: Pki, version: ssl.TLSVersion) -> None:
    context = tls.build_server_context(pki.settings("ecdsa"))  # in the "master", before fork
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    client_side = client_context(pki)
    client_side.maximum_version = version
    session = None
    served = []
    try:
        for expected in (b"first worker", b"second worker"):
            pid = serve_once_in_a_child(listener, context, expected)
            raw = socket.create_connection(listener.getsockname(), timeout=WAIT)
            with client_side.wrap_socket(
                raw, server_hostname="example.com", session=session
            ) as sock:
                served.append((sock.recv(100), sock.session_reused, pid))
                session = sock.session
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        listener.close()
    (first, reused_first, pid_a), (second, reused_second, pid_b) = served
    assert (first, second) == (b"first worker", b"second worker") and pid_a != pid_b
    assert not reused_first and reused_second
