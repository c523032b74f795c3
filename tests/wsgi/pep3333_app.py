"""A stdlib-only WSGI app for the WSGI route tests: each path exercises one part of PEP 3333.

`application` is the app wrapped in wsgiref.validate.validator (it asserts on any breach of the
protocol by the server or the app); `raw` is the same app unwrapped, for what the validator itself
forbids (read() without a size) and for apps that break the protocol on purpose. Every call of
an iterable's close() is appended to the file named by WSGI_TEST_CLOSE_LOG, so the tests can count.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)  # a validator warning fails the request too

DATA_FILE = os.environ.get("WSGI_TEST_FILE", "")


class Tracked:
    """An iterable that records close() (the test counts the lines)."""

    def __init__(self, name, chunks, pause=0.0):
        self.name = name
        self.chunks = chunks
        self.pause = pause

    def __iter__(self):
        for chunk in self.chunks:
            yield chunk
            if self.pause:
                time.sleep(self.pause)

    def close(self):
        path = os.environ.get("WSGI_TEST_CLOSE_LOG")
        if path:
            with open(path, "a") as log:
                log.write(self.name + "\n")


def text(start_response, body, status="200 OK", extra=()):
    data = body.encode() if isinstance(body, str) else body
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data))),
                            *extra])
    return [data]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/environ":
        shown = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        shown["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
        return text(start_response, json.dumps(shown))
    if path == "/echo":  # the body, read in the way the query names
        stream = environ["wsgi.input"]
        if query == "read":
            data = stream.read()
        elif query == "read-n":
            data = b""
            while part := stream.read(7):
                data += part
        elif query == "readline":
            data = b"".join(iter(stream.readline, b""))
        elif query == "readline-n":
            data = b"".join(iter(lambda: stream.readline(5), b""))
        elif query == "readlines":
            data = b"".join(stream.readlines())
        elif query == "iter":
            data = b"".join(line for line in stream)
        else:  # content-length: trust CONTENT_LENGTH, as most frameworks do
            data = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
        past = stream.read(10) + stream.readline()
        body = b"%d:%s:%s" % (len(data), past, data)
        return text(start_response, body)
    if path == "/stream":  # n chunks, `pause` seconds apart, close() recorded
        count, _, pause = query.partition(",")
        chunks = [b"chunk %d\n" % i for i in range(int(count or 3))]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked("stream", chunks, float(pause or 0))
    if path == "/big":  # 8 MiB in 64 KiB pieces: more than the buffer between thread and loop
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Tracked("big", [b"x" * 65536] * 128)
    if path == "/file":  # from the file's current position, through wsgi.file_wrapper
        handle = open(DATA_FILE, "rb")  # noqa: SIM115 - the server closes it (file_wrapper)
        handle.seek(int(query or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle, 4096)
    if path == "/write":  # the write() callable, then an iterable
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"twice ")
        return [b"and returned"]
    if path == "/exc-info":  # error caught before anything was sent: the headers are replaced
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"replaced"]
    if path == "/exc-info-late":  # after the body started, start_response re-raises
        def late():
            yield b"first"
            time.sleep(0.3)  # the loop has sent the head and "first" by now
            try:
                raise KeyError("late")
            except KeyError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            yield b"never"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return late()
    if path == "/raise":
        raise RuntimeError("the app failed on purpose")
    if path == "/raise-in-iter":
        def failing():
            raise RuntimeError("the iterable failed on purpose")
            yield b""
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked("raise-in-iter", failing())
    if path == "/hop":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [b"hop"]
    if path == "/bad-status":
        start_response("200", [("Content-Type", "text/plain")])
        return [b"bad"]
    if path == "/short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"short"]
    if path == "/sleep":
        time.sleep(float(query or 2))
        return text(start_response, "slept")
    if path == "/errors":
        environ["wsgi.errors"].write("line one\nline \x1b[31mtwo\n")
        environ["wsgi.errors"].flush()
        return text(start_response, "logged")
    if path == "/version":
        return text(start_response, os.environ.get("WSGI_TEST_VERSION", "-"))
    return text(start_response, "not found: " + path, "404 Not Found")


application = validator(app)
raw = app
