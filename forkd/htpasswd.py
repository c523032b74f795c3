"""Apache htpasswd files: reading them and checking a password against their hashes.

Three formats, the ones Debian's `htpasswd` writes without -d or -p: bcrypt (`$2y$`, `-B`),
Apache's MD5 (`$apr1$`, the default) and `{SHA}` (unsalted SHA-1, `-s`, kept for old files).
Anything else (crypt(3) DES, plain text, `$5$`/`$6$`) is refused when the file is read, so a
typo'd or foreign line is a config error naming its line, never a user who silently cannot log in.

`$apr1$` is Poul-Henning Kamp's MD5-crypt with the magic string `$apr1$` instead of `$1$`,
implemented here with hashlib (the algorithm as the FreeBSD and APR sources document it). Every
comparison of a computed hash with the stored one is constant-time (hmac.compare_digest).

Pure functions: the file is read by forkd.config (in the master, so a HUP reads it again and
workers need no permission on it); forkd.auth_basic verifies and caches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib.util
import re

BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
APR1 = re.compile(r"\$apr1\$([./A-Za-z0-9]{1,8})\$[./A-Za-z0-9]{22}")
SHA = re.compile(r"\{SHA\}[A-Za-z0-9+/]{27}=")
ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SUPPORTED = "bcrypt ($2y$), $apr1$ or {SHA}"


def parse(text: str) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """(user → hash, [(line number, problem)]) of an htpasswd file's text."""
    users: dict[str, str] = {}
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            problems.append((number, 'expected "user:hash"'))
        elif not known_format(hashed):
            problems.append((number, f"unknown password format for {user} (use {SUPPORTED})"))
        elif user in users:
            problems.append((number, f"user {user} is listed twice"))
        elif BCRYPT.fullmatch(hashed) and importlib.util.find_spec("bcrypt") is None:
            problems.append((number, "bcrypt hashes need the Python package bcrypt"))
        else:
            users[user] = hashed
    return users, problems


def known_format(hashed: str) -> bool:
    return any(pattern.fullmatch(hashed) for pattern in (BCRYPT, APR1, SHA))


def verify(password: bytes, hashed: str) -> bool:
    """Whether password matches a stored hash (of a format `parse` accepted)."""
    if hashed.startswith("$2"):
        import bcrypt  # only sites with bcrypt hashes need the package loaded

        try:
            return bool(bcrypt.checkpw(password, hashed.encode("ascii")))
        except ValueError:  # bcrypt >= 5 refuses passwords over 72 bytes: none can match
            return False
    if hashed.startswith("$apr1$"):
        salt = hashed[6:].split("$", 1)[0]
        computed = apr1(password, salt.encode("ascii"))
    elif hashed.startswith("{SHA}"):
        computed = "{SHA}" + base64.b64encode(hashlib.sha1(password).digest()).decode("ascii")
    else:
        return False
    return hmac.compare_digest(computed.encode("ascii"), hashed.encode("ascii"))


def apr1(password: bytes, salt: bytes) -> str:
    """Apache's `$apr1$` hash of password with salt (at most 8 characters used)."""
    magic = b"$apr1$"
    salt = salt[:8]
    alternate = hashlib.md5(password + salt + password).digest()
    context = hashlib.md5(password + magic + salt)
    for start in range(0, len(password), 16):
        context.update(alternate[: min(16, len(password) - start)])
    length = len(password)
    while length:
        context.update(b"\0" if length & 1 else password[:1])
        length >>= 1
    final = context.digest()
    for i in range(1000):  # the deliberate slowness of MD5-crypt
        round_ = hashlib.md5(password if i & 1 else final)
        if i % 3:
            round_.update(salt)
        if i % 7:
            round_.update(password)
        round_.update(final if i & 1 else password)
        final = round_.digest()
    encoded = "".join(
        _to64((final[a] << 16) | (final[b] << 8) | final[c], 4)
        for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    ) + _to64(final[11], 2)
    return f"$apr1${salt.decode('ascii')}${encoded}"


def _to64(value: int, count: int) -> str:
    out = []
    for _ in range(count):
        out.append(ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def basic_credentials(header: str) -> tuple[str, bytes] | None:
    """(user, password) from an `Authorization: Basic ...` value (RFC 7617); None if malformed."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        name = user.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name, password
