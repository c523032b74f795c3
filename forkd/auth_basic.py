"""HTTP Basic authentication (RFC 7617) against an htpasswd file, with a per-worker cache.

The users and their hashes come from the config (forkd.config reads the user file in the master,
so a HUP reads it again). A request is admitted when its `Authorization: Basic` credentials name
a listed user and the password matches that user's hash (forkd.htpasswd, constant-time).

bcrypt is slow on purpose (milliseconds at cost 5, far more at 12), and the worker's loop waits
for it, so every verdict is cached per worker, keyed by the credentials token as the client sent
it: a browser repeats the same header on every request and pays the hash once. Failures are
cached too, so replaying one wrong password costs nothing after the first time. The cache is
bounded in entries and bytes (a client chooses the tokens) and starts empty in each generation.
"""

from __future__ import annotations

from forkd import htpasswd
from forkd.config import AuthBasicConfig

VERDICTS = 1024  # credential tokens whose verdict is remembered...
VERDICT_BYTES = 1 << 18  # ...holding at most this many bytes of tokens
MAX_TOKEN = 4096  # longer credentials are refused without decoding them


class BasicAuth:
    def __init__(self, settings: AuthBasicConfig) -> None:
        self.users = settings.users
        realm = settings.realm.replace("\\", "\\\\").replace('"', '\\"')  # RFC 9110 §5.6.4
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self.verdicts: dict[str, str] = {}  # token -> user ("" when refused)
        self.verdict_bytes = 0

    def user(self, authorization: str | None) -> str | None:
        """The authenticated user for an Authorization header value, or None."""
        if not authorization or len(authorization) > MAX_TOKEN:
            return None
        verdict = self.verdicts.get(authorization)
        if verdict is None:
            verdict = self._verify(authorization)
            if len(self.verdicts) >= VERDICTS or self.verdict_bytes >= VERDICT_BYTES:
                self.verdicts.clear()
                self.verdict_bytes = 0
            self.verdicts[authorization] = verdict
            self.verdict_bytes += len(authorization)
        return verdict or None

    def _verify(self, authorization: str) -> str:
        credentials = htpasswd.basic_credentials(authorization)
        if credentials is None:
            return ""
        name, password = credentials
        hashed = self.users.get(name)
        if hashed is None or not htpasswd.verify(password, hashed):
            return ""
        return name
