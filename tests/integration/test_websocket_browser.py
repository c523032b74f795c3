"""The chat demo in a real browser: headless Chromium, driven over the DevTools protocol.

The demo page (conf/www/chat.html) and program (conf/websocket/chat.sh) are served as they are
shipped. The browser opens the page, whose script connects with the browser's own WebSocket (and
its Origin header); a second participant is a Python client. Each sees what the other says.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.daemon import ROOT, Daemon
from tests.support.tools import need_tool


class Page:
    """One browser tab, spoken to through the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=20))
            if message.get("id") == ident:
                assert "error" not in message, message
                return message["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not true within {timeout}s: {expression}")


def start_browser(profile: Path) -> tuple[subprocess.Popen[bytes], str]:
    chromium = need_tool("chromium")
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline, "Chromium did not start"
        assert browser.poll() is None, "Chromium exited"
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
        targets = json.load(answer)
    page = next(target for target in targets if target["type"] == "page")
    return browser, page["webSocketDebuggerUrl"]


def test_the_chat_demo_in_headless_chromium(make_daemon, tmp_path) -> None:
    need_tool("chromium")
    daemon: Daemon = make_daemon({
        "workers": 2,
        "routes": [
            {"prefix": "/chat", "websocket": {
                "command": [str(ROOT / "conf" / "websocket" / "chat.sh"), str(tmp_path / "room")],
                "max_message": 4096}},
            {"prefix": "/", "static": {"root": str(ROOT / "conf" / "www")}},
        ],
    })
    browser, devtools = start_browser(tmp_path / "profile")
    try:
        with connect(devtools, max_size=None) as socket:
            page = Page(socket)
            page.call("Page.navigate", url=f"http://127.0.0.1:{daemon.port}/chat.html")
            page.wait_for("document.getElementById('state').textContent === 'connected.'")
            with connect(f"ws://127.0.0.1:{daemon.port}/chat") as python:
                # chat.sh follows the room with tail -f, started in the background: say hello
                # until the browser shows it, which proves both programs are in the room.
                deadline = time.monotonic() + 20
                while not page.evaluate(
                        "document.getElementById('log').textContent.includes('bob: hello')"):
                    assert time.monotonic() < deadline, "the browser never saw bob"
                    python.send("bob: hello")
                    time.sleep(0.3)
                page.evaluate("""
                    document.getElementById('name').value = 'ann';
                    document.getElementById('text').value = 'hi <b>bob</b>';
                    document.getElementById('form').requestSubmit();
                """)
                while (line := python.recv(timeout=10)) != "ann: hi <b>bob</b>":
                    assert line == "bob: hello", line
                # Shown as text, never as markup.
                assert page.evaluate("document.querySelectorAll('#log b').length") == 0
                assert page.wait_for(
                    "document.getElementById('log').textContent.includes('ann: hi <b>bob</b>')")
    finally:
        os.killpg(browser.pid, signal.SIGTERM)  # the browser and its helper processes
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
