"""git's smart HTTP protocol through forkd and `git http-backend`: clone, fetch, push, and a push over 50 MiB.

git http-backend is a demanding CGI program: it reads PATH_INFO, QUERY_STRING, CONTENT_TYPE,
CONTENT_LENGTH and HTTP_GIT_PROTOCOL, streams large bodies both ways, and answers with Status headers.
A push bigger than http.postBuffer (1 MiB) is sent by git with `Transfer-Encoding: chunked`, so the
large push also proves that de-chunked bodies reach the script with the right CONTENT_LENGTH.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon
from tests.support.tools import need_tool


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, dict[str, str]]]:
    need_tool("git")
    base = tmp_path_factory.mktemp("git")
    repos = base / "repos"
    repos.mkdir()
    env = {
        "PATH": os.environ["PATH"], "HOME": str(base), "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
    }
    git(env, "init", "--bare", "--initial-branch=main", str(repos / "project.git"))
    git(env, "-C", str(repos / "project.git"), "config", "http.receivepack", "true")
    config = {
        "workers": 2,
        "limits": {"body": 96 * 1024 * 1024},
        "routes": [{"prefix": "/git/", "cgi": {
            "root": str(ROOT / "tests" / "cgi"), "timeout": 60,
            "env": {"GIT_PROJECT_ROOT": str(repos), "GIT_HTTP_EXPORT_ALL": "1"},
        }}],
    }
    (base / "daemon").mkdir()
    daemon = Daemon(base / "daemon", config)
    try:
        daemon.start()
        yield daemon, base, env
    finally:
        daemon.stop()


def git(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def test_push_clone_fetch_and_big_push(served: tuple[Daemon, Path, dict[str, str]]) -> None:
    daemon, base, env = served
    url = f"http://{daemon.host}:{daemon.port}/git/git.sh/project.git"

    # push: a first commit into the empty bare repository
    work = base / "work"
    git(env, "init", "--initial-branch=main", str(work))
    git(env, "config", "core.compression", "0", cwd=work)  # random data does not compress: save the time
    (work / "README").write_text("hello over CGI\n")
    git(env, "add", "README", cwd=work)
    git(env, "commit", "-m", "first", cwd=work)
    git(env, "push", url, "main", cwd=work)

    # clone
    clone = base / "clone"
    git(env, "clone", url, str(clone))
    assert (clone / "README").read_text() == "hello over CGI\n"

    # fetch a second commit
    (work / "second.txt").write_text("second\n")
    git(env, "add", "second.txt", cwd=work)
    git(env, "commit", "-m", "second", cwd=work)
    git(env, "push", url, "main", cwd=work)
    git(env, "fetch", "origin", cwd=clone)
    assert git(env, "rev-parse", "origin/main", cwd=clone) == git(env, "rev-parse", "HEAD", cwd=work)

    # a push over 50 MiB of incompressible data: git sends it chunked
    (work / "big.bin").write_bytes(os.urandom(52 * 1024 * 1024))
    git(env, "add", "big.bin", cwd=work)
    git(env, "commit", "-m", "big", cwd=work)
    trace = base / "curl-trace"
    git({**env, "GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"}, "push", url, "main", cwd=work)
    assert "Transfer-Encoding: chunked" in trace.read_text(errors="replace")
    bare = base / "repos" / "project.git"
    assert git(env, "rev-parse", "main", cwd=bare) == git(env, "rev-parse", "HEAD", cwd=work)
    assert git(env, "cat-file", "-s", "main:big.bin", cwd=bare).strip() == str(52 * 1024 * 1024)
