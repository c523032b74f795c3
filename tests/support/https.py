"""HTTPS helpers for daemon tests: certificate files made with trustme, trusting clients.

Certificates are made in the test (trustme), written as forkd reads them: `NAME.pem` holds the
leaf and its chain, `NAME.key` the unencrypted private key.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from pathlib import Path

import trustme
from cryptography import x509


def write_pair(leaf: trustme.LeafCert, directory: Path, name: str) -> dict[str, str]:
    """Write leaf as NAME.pem and NAME.key, each replaced atomically (as certbot's files change)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    for path, data in ((cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems)),
                       (key, leaf.private_key_pem.bytes())):
        temporary = path.with_name(path.name + ".new")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return {"cert": str(cert), "key": str(key)}


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def https_connection(host: str, port: int, ca: trustme.CA,
                     timeout: float = 10.0) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(host, port, context=client_context(ca), timeout=timeout)


def served_serial(host: str, port: int, ca: trustme.CA, server_name: str = "localhost") -> int:
    """The serial number of the certificate a new TLS connection is served."""
    raw = socket.create_connection((host, port), timeout=10)
    with client_context(ca).wrap_socket(raw, server_hostname=server_name) as sock:
        return int(str(sock.getpeercert()["serialNumber"]), 16)


def serial_of(leaf: trustme.LeafCert) -> int:
    """The serial number of a trustme leaf certificate."""
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
