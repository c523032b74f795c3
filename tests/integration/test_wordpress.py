"""WordPress behind forkd: the walk of tests/soak/wordpress.py, run as it is (without apt).

It installs WordPress with its own MariaDB and php-fpm in a temporary directory and walks what a
new site owner does (install, login, permalinks, a post, uploads, the upload hole, REST, XML-RPC,
comments, wp-cron); see its docstring. Once with a connection per request, once with kept
connections (`fastcgi.connections: 2`, 2 workers, php-fpm's 4 children).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.soak.wordpress import PACKAGES
from tests.support.daemon import ROOT
from tests.support.tools import need_packages, need_root


@pytest.mark.parametrize("connections", [0, 2])
def test_wordpress_installs_and_walks(connections: int) -> None:
    need_root("mariadbd and php-fpm run as root in the walk's private directory")
    need_packages(PACKAGES)
    done = subprocess.run(
        [sys.executable, "-m", "tests.soak.wordpress", "--no-apt", "--show", "0",
         "--connections", str(connections)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-4000:]
    assert "FAIL" not in report, report[-4000:]
