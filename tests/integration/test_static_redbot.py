"""REDbot, the HTTP linter, finds no problem in forkd's static responses.

REDbot (pip package `redbot`) fetches a URL and then makes its own follow-up requests: a ranged GET
(206), If-None-Match and If-Modified-Since revalidations (304) and a gzip negotiation. We run it on a
static file (which has a precompressed .gz sibling) and on a directory listing, collect the notes of
the main response and of every follow-up response, and require that none is a warning or worse.
The route sets Cache-Control: without an explicit lifetime REDbot rightly warns that caches will
guess one, which is the operator's choice, not a defect of the server.

Skipped, with the reason, when redbot cannot be imported (.ci/run installs it).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.static_site import TEXT, static_config
from tests.support.tools import need_module


@pytest.fixture(autouse=True)
def _redbot() -> None:
    need_module("redbot")  # pip install redbot (the test extra)


# Runs in a child process: REDbot drives its own event loop (thor) and global state.
CHECK = r"""
import json, sys
from configparser import ConfigParser
import thor
from redbot.resource import HttpResource

parser = ConfigParser()
parser.read_dict({"redbot": {"enable_local_access": "True"}})
resource = HttpResource(parser["redbot"], descend=False)
resource.set_request(sys.argv[1])
resource.on("check_done", thor.stop)
thor.schedule(20, thor.stop)
resource.check()
thor.run()
notes = []
def collect(where, response):
    for note in response.notes:
        for item in [note, *getattr(note, "subnotes", [])]:
            notes.append({"where": where, "level": item.level.value, "summary": item.summary})
collect(f"main {resource.response.status_code}", resource.response)
for name, sub in resource.subreqs.items():
    if sub.response is not None and sub.response.status_code:
        collect(f"{name} {sub.response.status_code}", sub.response)
print(json.dumps({"error": str(resource.fetch_error or ""), "status": resource.response.status_code,
                  "checks": {name: sub.response.status_code for name, sub in resource.subreqs.items()},
                  "notes": notes}))
"""


def redbot(url: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHECK, url], check=False, capture_output=True, text=True, timeout=40)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon], tmp_path: Path) -> Daemon:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "page.txt").write_bytes(TEXT)
    (root / "page.txt.gz").write_bytes(gzip.compress(TEXT, mtime=0))
    (root / "docs" / "a.txt").write_bytes(b"a\n")
    (root / "docs" / "b.html").write_bytes(b"<p>b</p>\n")
    return make_daemon(static_config(root, "/", autoindex=True, cache_control="max-age=600"))


def _problems(report: dict) -> list[str]:
    return [f"{n['where']}: [{n['level']}] {n['summary']}" for n in report["notes"]
            if n["level"] not in ("good", "info")]


def test_static_file_304_and_range_have_no_problems(daemon: Daemon) -> None:
    report = redbot(f"http://{daemon.host}:{daemon.port}/page.txt")
    assert report["error"] == "" and report["status"] == 200
    # The follow-up requests really produced a 206, two 304s and a gzip 200.
    assert report["checks"] == {"conneg": 200, "range": 206, "etag_validate": 304,
                                "lm_validate": 304}
    summaries = " ".join(n["summary"] for n in report["notes"])
    assert "ranged request returned the correct partial content" in summaries
    assert _problems(report) == []


def test_directory_listing_has_no_problems(daemon: Daemon) -> None:
    report = redbot(f"http://{daemon.host}:{daemon.port}/docs/")
    assert report["error"] == "" and report["status"] == 200
    assert _problems(report) == []
