"""The FastCGI exchange without sockets: what it costs the worker besides its I/O."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from forkd.config import Limits
from forkd.handlers import fastcgi_records as fcgi
from forkd.handlers.cgi_env import Script
from forkd.handlers.fastcgi import HEADER, REQUEST_ID, FastCgiExchange
from forkd.http.parser import HeadParser


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def error(self, message: str) -> None:
        self.lines.append(message)


@pytest.fixture
def no_collector() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_an_exchange_is_freed_at_once_when_closed(no_collector: None) -> None:
    # One exchange per PHP request: a reference cycle would leave each one (request, params,
    # buffers: a dozen objects) to the garbage collector instead of freeing it when it closes.
    log = Log()
    handler = SimpleNamespace(settings=SimpleNamespace(timeout=60.0), log=log, pool=None)
    request = HeadParser(Limits()).parse(b"GET /x.php HTTP/1.1\r\nHost: h\r\n\r\n")
    exchange = FastCgiExchange(handler, request, Script("/srv/x.php", "/x.php", "", ()))  # type: ignore[arg-type]
    exchange.phase = HEADER
    exchange._records(fcgi.record(fcgi.STDERR, REQUEST_ID, b"a warning\n"), 0.0)
    exchange.close()
    assert log.lines == ["fastcgi /srv/x.php: a warning"]
    alive = weakref.ref(exchange)
    del exchange
    assert alive() is None
