"""TLS: the server contexts the master builds, facts about certificate files, and the CGI view.

Theory of operation
-------------------
The master calls `build_server_context` for a generation before it forks that generation's
workers. Everything secret is read there, with the master's privileges: a worker never opens a
private key, and the workers of one generation share the very same context. That sharing is what
makes session resumption work across workers: OpenSSL draws the session-ticket keys at random when
a context is created, so contexts inherited through fork encrypt and decrypt each other's tickets
(TLS 1.3 tickets and TLS 1.2 RFC 5077 tickets). A session-id cache, by contrast, lives in one
process's memory: a client that resumes by id only (no ticket) resumes on the worker that made it.
A reload builds new contexts, so sessions do not outlive their generation.

Certificates are grouped by the set of names they carry (subjectAltName DNS entries, or the
subject's commonName when there are none): an RSA and an ECDSA certificate for the same names share
one context, where OpenSSL picks the one the client's signature algorithms allow. Each group of
other names gets a context of its own, and the SNI callback of the default context (the group of
the first certificate) switches a connection to it: an exact name first, then a one-label wildcard
(`*.example.com` matches `a.example.com`, never `example.com` or `a.b.example.com`). No SNI, or a
name no certificate carries, keeps the default. All contexts are built identically apart from
their certificates, because OpenSSL keeps the protocol, cipher and verification settings of the
context a connection started on and takes only the certificate (and ALPN) from the switched one.

Profiles follow Mozilla's server-side TLS recommendations (version 5.7): `intermediate` (TLS 1.2
and 1.3, AEAD ciphers with forward secrecy, the client's preference), `modern` (TLS 1.3 only) and
`old` (TLS 1.0 and up, long cipher list, the server's preference; OpenSSL 3 refuses TLS 1.0/1.1
handshakes and SHA-1 signatures at its default security level 1+, so this profile lowers it to 0).
TLS 1.3 cipher suites are OpenSSL's defaults, which are Mozilla's. DHE suites use the RFC 7919
ffdhe2048 group. Client-initiated renegotiation is refused (a CPU-exhaustion vector).
"""

from __future__ import annotations

import _ssl
import base64
import os
import re
import ssl
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forkd.config import CertificatePair, TlsConfig

ALPN_PROTOCOLS = ["http/1.1"]

INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
OLD_CIPHERS = (
    INTERMEDIATE_CIPHERS + ":"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:"
    "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:"
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA:"
    "DES-CBC3-SHA:@SECLEVEL=0"
)


@dataclass(frozen=True)
class Profile:
    minimum: ssl.TLSVersion
    ciphers: str | None  # for TLS 1.2 and older; None: TLS 1.3 only, nothing to choose
    server_order: bool  # the server's cipher preference rather than the client's


PROFILES: Mapping[str, Profile] = {
    "modern": Profile(ssl.TLSVersion.TLSv1_3, None, False),
    "intermediate": Profile(ssl.TLSVersion.TLSv1_2, INTERMEDIATE_CIPHERS, False),
    "old": Profile(ssl.TLSVersion.TLSv1, OLD_CIPHERS, True),
}

# RFC 7919 ffdhe2048, the group Mozilla recommends for DHE suites.
FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

# DER encodings of the key-algorithm OIDs found in a PKCS#8 private key.
KEY_ALGORITHMS = {
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01": "rsa",  # rsaEncryption
    b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01": "ec",  # id-ecPublicKey
    b"\x06\x03\x2b\x65\x70": "ed25519",
    b"\x06\x03\x2b\x65\x71": "ed448",
}
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\s+(.*?)-----END \1-----", re.DOTALL)


class TlsError(Exception):
    """A context could not be built; the message names the file and the reason."""


class KeyMismatch(TlsError):
    """The private key is not the certificate's."""


class _EncryptedKey(Exception):
    pass


# -- facts about certificate files (config validation uses these) ---------------------------------


def decode_certificate(path: Path) -> dict[str, Any]:
    """The first certificate of a PEM file, decoded as `SSLSocket.getpeercert()` shows one.

    `_ssl._test_decode_cert` is CPython's own decoder (used by its test suite since 3.2); the
    public ssl API decodes only the peer's certificate of a live connection.
    """
    decoded: dict[str, Any] = _ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def certificate_names(decoded: Mapping[str, Any]) -> tuple[str, ...]:
    """The DNS names a certificate is valid for, lower-cased (commonName when no SAN names)."""
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [
            value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"
        ]
    return tuple(dict.fromkeys(name.lower().rstrip(".") for name in names))


def key_type(path: Path) -> str:
    """The key algorithm of a PEM private key: "rsa", "ec", "ed25519"... ("" when unknown)."""
    data = path.read_bytes()
    for label, body in PEM_BLOCK.findall(data):
        if label in (b"RSA PRIVATE KEY", b"EC PRIVATE KEY"):
            return label.split()[0].decode().lower()
        if label == b"PRIVATE KEY":
            der = base64.b64decode(b"".join(body.split()))
            for oid, name in KEY_ALGORITHMS.items():
                if oid in der[:40]:  # the AlgorithmIdentifier comes right after the version
                    return name
    return ""


def pair_problems(cert: Path, key: Path, cert_name: str) -> list[tuple[str, str]]:
    """What is wrong with a certificate and its key: ("cert" | "key", reason) pairs.

    cert_name is how a mismatch names the certificate (its config key path).
    """
    try:
        decoded = decode_certificate(cert)
    except (ssl.SSLError, OSError, ValueError):
        return [("cert", f"not a PEM certificate: {cert}")]
    problems = []
    expires = ssl.cert_time_to_seconds(decoded["notAfter"])
    if expires < time.time():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))
        problems.append(("cert", f"expired on {when}: {cert}"))
    try:
        _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)
    except KeyMismatch:
        problems.append(("key", f"does not match {cert_name} ({key} vs {cert})"))
    except TlsError as exc:
        problems.append(("key", str(exc)))
    return problems


def ca_problem(path: Path) -> str:
    """Why a CA file cannot verify client certificates, or "" when it can."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError):
        return f"no PEM certificate in {path}"
    return ""


def _load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(str(cert), str(key), password=_refuse_password)
    except _EncryptedKey:
        raise TlsError(f"encrypted private keys are not supported: {key}") from None
    except ssl.SSLError as exc:
        if exc.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):  # same / other type
            raise KeyMismatch(f"{key} does not match {cert}") from None
        raise TlsError(f"not a PEM private key matching {cert}: {key}") from None
    except OSError as exc:
        raise TlsError(f"cannot read {cert} or {key}: {exc.strerror}") from None


def _refuse_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKey()


# -- contexts -------------------------------------------------------------------------------------


@dataclass
class _Group:
    names: tuple[str, ...]
    key_types: set[str]
    context: ssl.SSLContext


def build_server_context(settings: TlsConfig) -> ssl.SSLContext:
    """The context a TLS listener serves with: raise TlsError naming the file on any problem."""
    groups: list[_Group] = []
    for pair in settings.certificates:
        names, kind = _certificate_facts(pair)
        group = next((g for g in groups if g.names == names and kind not in g.key_types), None)
        if group is None:
            group = _Group(names, set(), _profile_context(settings))
            groups.append(group)
        _load_pair(group.context, pair.cert, pair.key)
        group.key_types.add(kind)
    if not groups:
        raise TlsError("tls.certificates: no certificate")
    default = groups[0].context
    # Also with one group: the callback records the name, for the routing's 421 check.
    default.sni_callback = _SniSelector(groups)
    return default


def _certificate_facts(pair: CertificatePair) -> tuple[tuple[str, ...], str]:
    try:
        names = certificate_names(decode_certificate(pair.cert))
        kind = key_type(pair.key)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"not a PEM certificate: {pair.cert} ({exc})") from None
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return tuple(sorted(names)), kind


def _profile_context(settings: TlsConfig) -> ssl.SSLContext:
    profile = PROFILES[settings.profile]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0: the operator chose "old"
        context.minimum_version = profile.minimum
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    if profile.ciphers:
        context.set_ciphers(profile.ciphers)
        _load_dh_params(context)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if profile.server_order:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    if settings.client_certificates != "none":
        assert settings.client_ca is not None  # config validation requires it
        try:
            context.load_verify_locations(cafile=str(settings.client_ca))
        except (ssl.SSLError, OSError):
            raise TlsError(f"no PEM certificate in {settings.client_ca}") from None
        required = settings.client_certificates == "required"
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return context


def _load_dh_params(context: ssl.SSLContext) -> None:
    # load_dh_params reads a file: hand it the constant through a pipe rather than a temp file.
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, FFDHE2048)
        os.close(write_fd)
        write_fd = -1
        context.load_dh_params(f"/dev/fd/{read_fd}")
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


class _SniSelector:
    """The default context's SNI callback: switch the connection to the context for its name."""

    def __init__(self, groups: list[_Group]) -> None:
        self.by_name: dict[str, ssl.SSLContext] = {}
        for group in groups:
            for name in group.names:
                self.by_name.setdefault(name, group.context)  # the first certificate wins

    def lookup(self, name: str) -> ssl.SSLContext | None:
        name = name.lower().rstrip(".")
        found = self.by_name.get(name)
        if found is None and "." in name:
            found = self.by_name.get("*." + name.split(".", 1)[1])
        return found

    def __call__(self, sock: Any, server_name: str | None, initial: ssl.SSLContext) -> None:
        # The server side has no API to read the SNI name after the handshake: keep it on the
        # SSLSocket (the callback's `sock`), where sni_name() finds it.
        sock.forkd_sni = server_name or ""
        if server_name:
            chosen = self.lookup(server_name)
            if chosen is not None and chosen is not initial:
                sock.context = chosen


def sni_name(sock: ssl.SSLSocket | ssl.SSLObject) -> str:
    """The server name a client sent in its ClientHello ("" without SNI)."""
    return str(getattr(sock, "forkd_sni", ""))


# -- what CGI sees of a connection ----------------------------------------------------------------

# OpenSSL's short names, which mod_ssl's RFC 2253 distinguished names use.
SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "street",
    "domainComponent": "DC",
    "userId": "UID",
}


def connection_variables(sock: ssl.SSLSocket | ssl.SSLObject) -> dict[str, str]:
    """The CGI variables of an established TLS connection, in Apache mod_ssl's formats."""
    cipher = sock.cipher()
    variables = {
        "HTTPS": "on",
        "REQUEST_SCHEME": "https",
        "SSL_PROTOCOL": sock.version() or "",
        "SSL_CIPHER": cipher[0] if cipher else "",
        "SSL_CLIENT_VERIFY": "NONE",
    }
    if sock.getpeercert(binary_form=True) is None:
        return variables
    decoded = sock.getpeercert()
    if not decoded:  # presented but not verified (only when verification is off)
        variables["SSL_CLIENT_VERIFY"] = "FAILED"
        return variables
    variables["SSL_CLIENT_VERIFY"] = "SUCCESS"
    variables["SSL_CLIENT_S_DN"] = rfc2253(decoded.get("subject", ()))
    variables["SSL_CLIENT_I_DN"] = rfc2253(decoded.get("issuer", ()))
    variables["SSL_CLIENT_M_SERIAL"] = str(decoded.get("serialNumber", ""))
    return variables


def rfc2253(name: Any) -> str:
    """A decoded distinguished name as RFC 2253 text: last RDN first, "," between, "+" within."""
    rdns = [
        "+".join(f"{SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn)
        for rdn in name
    ]
    return ",".join(reversed(rdns))


def _escape(value: str) -> str:
    """RFC 2253 section 2.4, with bytes outside ASCII as \\XX as OpenSSL writes them."""
    out = []
    for i, char in enumerate(value):
        if (
            char in ',+"\\<>;'
            or (char == "#" and i == 0)
            or (char == " " and i in (0, len(value) - 1))
        ):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) > 0x7E:
            out.append("".join(f"\\{byte:02X}" for byte in char.encode("utf-8")))
        else:
            out.append(char)
    return "".join(out)
