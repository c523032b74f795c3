"""The scoreboard (forkd.scoreboard) and its renderings (forkd.metrics), without processes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forkd import scoreboard as sb
from forkd.metrics import render_auto, render_html, render_json, render_prometheus, render_text
from forkd.scoreboard import Scoreboard


@pytest.fixture
def board() -> Scoreboard:
    return Scoreboard.create(None, 1234)


def serve(slot: sb.Slot, status: int, body: int = 100, seconds: float = 0.002) -> None:
    slot.busy(b"GET /x HTTP/1.1")
    slot.count(status, body, seconds)
    slot.idle()


def test_counters_sum_over_live_slots_and_survive_a_fold(board: Scoreboard) -> None:
    first, second = board.claim(1), board.claim(1)
    assert first is not None and second is not None and first.index != second.index
    for status in (200, 200, 304, 404, 503, 101):
        serve(first, status)
    serve(second, 200, seconds=3.0)
    before = board.snapshot()
    assert before.requests == 7
    assert before.by_class == {"1xx": 1, "2xx": 3, "3xx": 1, "4xx": 1, "5xx": 1}
    board.release(first)  # the worker died: its counters join the totals, its slot is free
    after = board.snapshot()
    assert after.counters == before.counters
    assert len(after.workers) == 1
    again = board.claim(2)
    assert again is not None and again.index == first.index and again.q[sb.S_GENERATION] == 2
    assert board.snapshot().requests == 7  # a reused slot starts from zero


def test_the_request_line_and_busy_state(board: Scoreboard) -> None:
    slot = board.claim(1)
    assert slot is not None
    slot.q[sb.S_PID] = 99
    slot.set_state(sb.READY)
    slot.busy(b"GET /slow?x=1 HTTP/1.1")
    slot.busy(b"POST /cgi HTTP/1.1")  # two requests in flight on one worker
    view = board.snapshot().workers[0]
    assert (view.pid, view.state, view.request) == (99, "busy", "POST /cgi HTTP/1.1")
    assert slot.read()[1] == "POST /cgi HTTP/1.1"
    slot.idle()
    assert board.snapshot().workers[0].state == "busy"  # one is still in flight
    slot.idle()
    view = board.snapshot().workers[0]
    assert (view.state, view.request, view.age) == ("idle", "", 0.0)
    slot.busy(b"G" * 5000)  # truncated to the slot, never past it
    assert len(slot.read()[1]) == sb.LINE_MAX


def test_histogram_buckets(board: Scoreboard) -> None:
    slot = board.claim(1)
    assert slot is not None
    for seconds in (0.001, 0.005, 0.3, 11.0):
        slot.count(200, 0, seconds)
    slot.count(404, 0, 0.3)
    snapshot = board.snapshot()
    assert snapshot.buckets[0] == 2 and snapshot.buckets[-1] == 1
    assert snapshot.buckets[sb.BOUNDS.index(0.5)] == 2
    assert snapshot.duration_sum == pytest.approx(11.606)
    board.release(slot)  # the double survives the fold
    assert board.snapshot().duration_sum == pytest.approx(11.606)


def test_prometheus_text_parses_with_the_contract_names(board: Scoreboard) -> None:
    slot = board.claim(1)
    assert slot is not None
    slot.set_state(sb.READY)
    serve(slot, 200, 1000, 0.02)
    serve(slot, 502, 10, 0.2)
    slot.tls_handshake(True)
    slot.tls_handshake(False)
    board.reload_done(False, 1, "configuration rejected:\nx")
    families = {f.name: f for f in text_string_to_metric_families(render_prometheus(
        board.snapshot()))}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("forkd_requests_total", (("class", "2xx"),))] == 1
    assert samples[("forkd_requests_total", (("class", "5xx"),))] == 1
    assert samples[("forkd_response_bytes_total", ())] == 1010
    assert families["forkd_request_duration_seconds"].type == "histogram"
    assert samples[("forkd_request_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("forkd_request_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("forkd_request_duration_seconds_count", ())] == 2
    assert samples[("forkd_request_duration_seconds_sum", ())] == pytest.approx(0.22)
    assert samples[("forkd_workers", (("state", "idle"),))] == 1
    assert samples[("forkd_reloads_total", (("outcome", "rejected"),))] == 1
    assert samples[("forkd_tls_handshakes_total", (("result", "failed"),))] == 1
    for name in ("forkd_connections", "forkd_cgi_processes", "forkd_worker_restarts_total"):
        assert any(key[0] == name for key in samples), name


def test_json_auto_html_and_text(board: Scoreboard) -> None:
    slot = board.claim(1)
    assert slot is not None
    slot.q[sb.S_PID] = 4321
    slot.set_state(sb.READY)
    serve(slot, 200, 2048)
    slot.busy(b"GET /<script> HTTP/1.1\x1b[2J")
    snapshot = board.snapshot()
    data = json.loads(render_json(snapshot))
    assert {"generation", "uptime", "workers", "counters"} <= set(data)
    assert data["workers"][0]["pid"] == 4321 and data["workers"][0]["state"] == "busy"
    assert data["counters"]["requests_by_class"]["2xx"] == 1
    auto = dict(line.split(": ", 1) for line in render_auto(snapshot).splitlines())
    assert auto["Total Accesses"] == "1" and auto["Total kBytes"] == "2"
    assert auto["BusyWorkers"] == "1" and auto["IdleWorkers"] == "0" and auto["Scoreboard"] == "W"
    page = render_html(snapshot)
    assert "&lt;script&gt;" in page and "<script>" not in page
    text = render_text(snapshot)
    assert "4321" in text and "\x1b" not in text and "\\x1b[2J" in text


def test_the_file_is_private_and_opened_by_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "forkd.pid.scoreboard"
    board = Scoreboard.create(path, 777)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    slot = board.claim(3)
    assert slot is not None
    serve(slot, 200)
    seen = Scoreboard.open(path)
    assert seen.q[sb.H_MASTER_PID] == 777 and seen.snapshot().requests == 1
    writer = Scoreboard.open(path, writable=True)
    writer.set(sb.H_DRAIN_WANTED, 1)
    assert board.q[sb.H_DRAIN_WANTED] == 1  # the same memory
    board.remove()
    assert not path.exists()
    path.write_bytes(b"not a board")
    with pytest.raises(ValueError):
        Scoreboard.open(path)


def test_a_link_planted_at_the_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "forkd.pid.scoreboard"
    path.symlink_to(victim)
    Scoreboard.create(path, 1)
    assert victim.read_text() == "keep" and not path.is_symlink()


def test_a_full_board_says_so(board: Scoreboard) -> None:
    slots = [board.claim(1) for _ in range(sb.SLOTS)]
    assert all(slots) and board.claim(1) is None
