"""Route options against the real daemon: `access` (address rules) and `auth_basic` (htpasswd)."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import subprocess
import time
from pathlib import Path

from tests.support.daemon import ROOT, Daemon
from tests.support.tools import need_tool

SCRIPTS = str(ROOT / "tests" / "cgi")


def www(tmp_path: Path) -> str:
    root = tmp_path / "www"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("inside")
    return str(root)


def status(daemon: Daemon, path: str, headers: dict[str, str] | None = None) -> int:
    return daemon.get(path, headers)[0]


# -- access ---------------------------------------------------------------------------------------

def test_access_rules_first_match_wins(make_daemon, tmp_path) -> None:
    root = www(tmp_path)
    daemon = make_daemon({"routes": [
        {"prefix": "/lan/", "static": {"root": root}, "access": {"allow": ["10.0.0.0/8"],
                                                                  "deny": ["all"]}},
        {"prefix": "/local/", "static": {"root": root}, "access": {"allow": ["127.0.0.0/8"],
                                                                    "deny": ["all"]}},
        {"prefix": "/blocked/", "static": {"root": root},
         "access": {"deny": ["127.0.0.1"], "allow": ["all"]}},  # deny written first: first
        {"prefix": "/denylist/", "static": {"root": root}, "access": {"deny": ["10.1.2.3"]}},
        {"prefix": "/allowlist/", "static": {"root": root}, "access": {"allow": ["10.1.2.3"]}},
        {"prefix": "/", "static": {"root": root}},
    ]})
    assert status(daemon, "/lan/index.html") == 403
    assert status(daemon, "/local/index.html") == 200
    assert status(daemon, "/blocked/index.html") == 403
    assert status(daemon, "/denylist/index.html") == 200  # only denies: the rest may pass
    assert status(daemon, "/allowlist/index.html") == 403  # only allows: the rest may not
    assert status(daemon, "/index.html") == 200
    # The refusal comes before the body is read: no 100 Continue for a refused upload.
    reply = daemon.raw(b"PUT /lan/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                       b"Expect: 100-continue\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 403")


def test_access_rules_for_ipv6(make_daemon, tmp_path) -> None:
    root = www(tmp_path)
    daemon = make_daemon({"listen": ["[::1]:0"], "routes": [
        {"prefix": "/v6/", "static": {"root": root}, "access": {"allow": ["::1/128"],
                                                                 "deny": ["all"]}},
        {"prefix": "/v4/", "static": {"root": root}, "access": {"allow": ["127.0.0.1"]}},
        {"prefix": "/", "static": {"root": root}},
    ]})
    conn = http.client.HTTPConnection("::1", daemon.port, timeout=10)
    for path, expected in (("/v6/index.html", 200), ("/v4/index.html", 403)):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == expected, path


# -- auth_basic -----------------------------------------------------------------------------------

def htpasswd_file(path: Path, users: list[tuple[str, str, str]]) -> Path:
    """Make an htpasswd file with Debian's htpasswd: (user, password, flag) each."""
    tool = need_tool("htpasswd")
    for i, (user, password, flag) in enumerate(users):
        create = ["-c"] if i == 0 and not path.exists() else []
        subprocess.run([tool, "-b", *create, flag, str(path), user, password], check=True,
                       capture_output=True, timeout=30)
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def auth_site(make_daemon, tmp_path: Path, users: Path) -> Daemon:
    root = www(tmp_path)
    guard = {"realm": 'staff "only" \\ here', "user_file": str(users)}
    return make_daemon({"workers": 1, "routes": [
        {"prefix": "/cgi/", "cgi": {"root": SCRIPTS}, "auth_basic": guard},
        {"prefix": "/open/", "cgi": {"root": SCRIPTS}},
        {"prefix": "/private/", "static": {"root": root}, "auth_basic": guard},
        {"prefix": "/", "static": {"root": root}},
    ]})


def test_basic_auth_with_every_htpasswd_format(make_daemon, tmp_path) -> None:
    users = htpasswd_file(tmp_path / "users", [("bea", "b-secret", "-B"),
                                              ("mia", "m-secret", "-m"),
                                              ("sam", "s-secret", "-s")])
    daemon = auth_site(make_daemon, tmp_path, users)
    code, headers, _ = daemon.get("/private/index.html")
    assert code == 401
    challenge = 'Basic realm="staff \\"only\\" \\\\ here", charset="UTF-8"'
    assert headers["www-authenticate"] == challenge
    for user in ("bea", "mia", "sam"):
        assert status(daemon, "/private/index.html", basic(user, user[0] + "-secret")) == 200
        assert status(daemon, "/private/index.html", basic(user, "wrong")) == 401
    assert status(daemon, "/private/index.html", basic("nobody", "b-secret")) == 401
    assert status(daemon, "/index.html") == 200  # other routes need nothing


def test_malformed_credentials_are_401_never_500(make_daemon, tmp_path) -> None:
    users = htpasswd_file(tmp_path / "users", [("mia", "m-secret", "-m")])
    daemon = auth_site(make_daemon, tmp_path, users)
    token = base64.b64encode(b"mia").decode()  # no colon
    for value in ("Basic", "Basic !!!!", f"Basic {token}", "Bearer abc", "basic " + "A" * 9000,
                  "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic =", "Digest x=y"):
        code, headers, _ = daemon.get("/private/index.html", {"Authorization": value})
        assert code == 401 and "www-authenticate" in headers, value
    lowercase = {"Authorization": basic("mia", "m-secret")["Authorization"].replace("Basic",
                                                                                    "bAsIc")}
    assert status(daemon, "/private/index.html", lowercase) == 200  # the scheme is caseless


def test_cgi_sees_the_user_but_not_the_password(make_daemon, tmp_path) -> None:
    users = htpasswd_file(tmp_path / "users", [("mia", "m-secret", "-m")])
    daemon = auth_site(make_daemon, tmp_path, users)
    code, _, body = daemon.get("/cgi/env.py", basic("mia", "m-secret"))
    env = json.loads(body)["env"]
    assert (code, env["AUTH_TYPE"], env["REMOTE_USER"]) == (200, "Basic", "mia")
    assert "HTTP_AUTHORIZATION" not in env
    _, _, body = daemon.get("/open/env.py", basic("mia", "m-secret"))  # an unguarded route
    env = json.loads(body)["env"]
    assert env["AUTH_TYPE"] == "" and "REMOTE_USER" not in env
    assert env["HTTP_AUTHORIZATION"].startswith("Basic ")


def test_the_user_file_is_read_again_on_hup(make_daemon, tmp_path) -> None:
    users = htpasswd_file(tmp_path / "users", [("mia", "m-secret", "-m")])
    daemon = auth_site(make_daemon, tmp_path, users)
    assert status(daemon, "/private/index.html", basic("zoe", "z-secret")) == 401
    htpasswd_file(users, [("zoe", "z-secret", "-B")])
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("ready: generation 2")
    daemon.wait_for_log("(generation 1) exited")  # no worker of generation 1 answers any more
    assert status(daemon, "/private/index.html", basic("zoe", "z-secret")) == 200
    # A line forkd cannot read rejects the reload, naming it; the old generation serves on.
    with users.open("a") as out:
        out.write("eve:plaintext\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log("line 3: unknown password format for eve")
    assert status(daemon, "/private/index.html", basic("zoe", "z-secret")) == 200


def test_bcrypt_is_paid_once_per_credential(make_daemon, tmp_path) -> None:
    tool = need_tool("htpasswd")
    users = tmp_path / "users"
    subprocess.run([tool, "-b", "-c", "-B", "-C", "12", str(users), "slow", "pw"], check=True,
                   capture_output=True, timeout=60)
    daemon = auth_site(make_daemon, tmp_path, users)
    conn = daemon.connection(timeout=30)  # one connection, so one worker and its cache

    def timed() -> float:
        started = time.monotonic()
        conn.request("GET", "/private/index.html", headers=basic("slow", "pw"))
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        return time.monotonic() - started

    first = timed()
    cached = sum(timed() for _ in range(5))
    assert cached < first, (first, cached)  # five cached answers cost less than one bcrypt
