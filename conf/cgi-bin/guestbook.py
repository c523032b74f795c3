#!/usr/bin/env python3
"""A small guestbook: GET shows the form and the latest entries, POST stores one and redirects.

POST/redirect/GET: a successful POST answers `303 See Other` back to the guestbook, so reloading the
page never posts twice. The entries live in SQLite: $GUESTBOOK_DB when set (give it through the route's
`cgi.env` in the config), else `.guestbook.sqlite3` beside this script. A name starting with "." is never
run or shown by forkd, so the database cannot be downloaded. The directory must be writable by the
user forkd's workers run as.
"""

import html
import os
import sqlite3
import sys
import time
from urllib.parse import parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
DB = os.environ.get("GUESTBOOK_DB") or os.path.join(HERE, ".guestbook.sqlite3")
MAX_BODY = 16384
MAX_NAME, MAX_MESSAGE = 80, 2000
SHOWN = 50


def connect() -> sqlite3.Connection:
    db = sqlite3.connect(DB, timeout=5)
    db.execute(
        "CREATE TABLE IF NOT EXISTS entries ("
        " id INTEGER PRIMARY KEY, posted REAL NOT NULL, name TEXT NOT NULL, message TEXT NOT NULL)"
    )
    return db


def respond(status: str, body: str, extra: tuple[str, ...] = ()) -> None:
    data = body.encode("utf-8")
    head = [f"Status: {status}", "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(data)}", "Cache-Control: no-store", *extra]
    sys.stdout.buffer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)


def page(entries: list[tuple[float, str, str]], problem: str = "") -> str:
    script = html.escape(os.environ.get("SCRIPT_NAME", ""), quote=True)
    items = "\n".join(
        f"<li><b>{html.escape(name)}</b> <small>{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(posted))}"
        f"</small><br>{html.escape(message)}</li>"
        for posted, name, message in entries
    ) or "<li>No entries yet. Be the first!</li>"
    warning = f'<p style="color:#b00">{html.escape(problem)}</p>' if problem else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forkd guestbook</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>Guestbook</h1>
{warning}
<form method="post" action="{script}">
<p><label>Name<br><input name="name" maxlength="{MAX_NAME}" required></label></p>
<p><label>Message<br><textarea name="message" rows="4" cols="50" maxlength="{MAX_MESSAGE}" required></textarea></label></p>
<p><button>Sign</button></p>
</form>
<ul>
{items}
</ul>
<p><a href="/">Back to the demo site</a></p>
</body></html>
"""


def latest(db: sqlite3.Connection) -> list[tuple[float, str, str]]:
    return db.execute(
        "SELECT posted, name, message FROM entries ORDER BY id DESC LIMIT ?", (SHOWN,)
    ).fetchall()


def read_form() -> dict[str, list[str]]:
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    if length > MAX_BODY:
        raise ValueError("That entry is too long.")
    raw = sys.stdin.buffer.read(length).decode("utf-8", "replace")
    return parse_qs(raw, max_num_fields=10)


def post(db: sqlite3.Connection) -> None:
    if "application/x-www-form-urlencoded" not in os.environ.get("CONTENT_TYPE", ""):
        respond("415 Unsupported Media Type", page(latest(db), "Please use the form."))
        return
    try:
        form = read_form()
    except ValueError as exc:
        respond("413 Content Too Large", page(latest(db), str(exc)))
        return
    name = form.get("name", [""])[0].strip()[:MAX_NAME]
    message = form.get("message", [""])[0].strip()[:MAX_MESSAGE]
    if not name or not message:
        respond("400 Bad Request", page(latest(db), "Both a name and a message, please."))
        return
    with db:
        db.execute("INSERT INTO entries (posted, name, message) VALUES (?, ?, ?)",
                   (time.time(), name, message))
    # A Location with a Status is sent to the browser (RFC 3875 §6.2.4), not followed internally.
    respond("303 See Other", "", (f"Location: {os.environ.get('SCRIPT_NAME', '/')}",))


def main() -> None:
    db = connect()
    method = os.environ.get("REQUEST_METHOD", "GET")
    if method == "POST":
        post(db)
    elif method in ("GET", "HEAD"):
        respond("200 OK", page(latest(db)))
    else:
        respond("405 Method Not Allowed", page(latest(db), "GET or POST only."), ("Allow: GET, HEAD, POST",))


if __name__ == "__main__":
    main()
