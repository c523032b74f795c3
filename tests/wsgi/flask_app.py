"""A Flask 3 app for the wsgi route tests: links built with url_for, a form that redirects, a
session, a file upload and a streamed response. Mounted under a prefix, it must build its URLs
from SCRIPT_NAME."""

from __future__ import annotations

import hashlib
import time

from flask import Flask, Response, redirect, request, session, stream_with_context, url_for

app = Flask(__name__)
app.secret_key = "forkd tests only"


@app.get("/")
def index() -> str:
    return f'<a href="{url_for("hello", name="world")}">hello</a>'


@app.get("/hello/<name>")
def hello(name: str) -> str:
    return f"hello {name}"


@app.route("/form", methods=["GET", "POST"])
def form() -> object:
    if request.method == "POST":
        session["name"] = request.form["name"]
        return redirect(url_for("done"))
    return f'<form method="post" action="{url_for("form")}"><input name="name"></form>'


@app.get("/done")
def done() -> str:
    return f"thanks {session.get('name', 'nobody')}"


@app.post("/upload")
def upload() -> dict[str, object]:
    sent = request.files["file"]
    data = sent.read()
    return {"name": sent.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/stream")
def stream() -> Response:
    def parts():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"part {i}\n"
            time.sleep(0.2)
    return Response(stream_with_context(parts()), mimetype="text/plain")


@app.get("/hi")
def hi() -> str:
    return "Hello, World!"
