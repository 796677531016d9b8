"""``/metrics?window=`` under real gunicorn: exact across workers, whichever one answers.

The app's windows run on a clock the test moves through a file (see apps/windows_app.py),
so minutes pass without waiting: traffic in two phases, a snapshot between them, and the
window of the second phase is exactly its requests, from any worker, even after a worker
was killed and replaced by one that has no history of its own.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

pytestmark = pytest.mark.slow

APP = "tests.apps.windows_app:app"


def _document(server: Any, query: str = "") -> dict[str, Any]:
    status, _, body = server.get("/metrics" + (f"?{query}" if query else ""))
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def _total(server: Any) -> int:
    return int(_document(server)["application"]["requests"]["total"])


def _send(server: Any, paths: list[str], total: int) -> None:
    """Send ``paths`` over 4 connections, then wait until /metrics counts ``total`` (a
    worker records a request when the body is closed, just after the client read it)."""
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda path: server.get(path)[0], paths))
    assert set(statuses) <= {200, 500}
    wait_until(lambda: _total(server) >= total)
    assert _total(server) == total


def _entries(state_dir: Path) -> list[float]:
    return sorted(int(p.name[len("window-") :]) / 1000 for p in state_dir.glob("window-*"))


def _move_clock(clock_file: Path, offset: float) -> float:
    """Move the servers' clock to ``offset`` seconds ahead of the wall clock; returns the
    server time it is now at least."""
    clock_file.write_text(str(offset))
    return time.time() + offset


def _comparable(document: dict[str, Any]) -> Any:
    """What every worker must agree on: requests, errors, percentiles, per endpoint, KPIs."""
    return (document["application"]["requests"], document["endpoints"], document["kpis"])


def _orders(document: dict[str, Any]) -> dict[str, int]:
    series = document["kpis"]["orders"]["series"]
    return {item["labels"]["path"]: item["value"] for item in series if item["value"]}


@pytest.mark.parametrize(
    "worker_args",
    [
        pytest.param(("-w", "2"), id="sync"),
        pytest.param(("-w", "2", "-k", "gthread", "--threads", "4"), id="gthread"),
    ],
)
def test_windows_are_exact_across_workers_and_worker_recycling(
    gunicorn: Any, tmp_path: Path, worker_args: tuple[str, ...]
) -> None:
    """Phase one, a snapshot, phase two, minutes later: ``?window=5m`` is exactly phase
    two (requests, percentiles, a KPI) and ``?window=15m`` both phases, the same from every
    worker, with a worker killed after phase two (its counts come from the archive, its
    successor has no history)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    clock_file = tmp_path / "clock"
    clock_file.write_text("0")
    server = gunicorn(
        APP,
        *worker_args,
        env={
            "WSGI_OBSERVE_STATE_DIR": str(state_dir),
            "WSGI_OBSERVE_WINDOW_INTERVAL": "60s",  # the ticker never adds one during the test
            "WSGI_OBSERVE_WINDOW_SPAN": "15m",
            "WINDOWS_TEST_CLOCK": str(clock_file),
        },
    )
    # Phase one: 30 requests, 5 of them failing.
    _send(server, ["/api/one"] * 25 + ["/api/fail"] * 5, total=30)
    # A minute later a scrape takes the snapshot that is due: it holds phase one.
    after_one = _move_clock(clock_file, 60)
    wait_until(lambda: _document(server) and _entries(state_dir)[-1] >= after_one - 0.01)

    # Phase two: 50 requests, none failing, on another mix of endpoints.
    _send(server, ["/api/two"] * 40 + ["/api/one"] * 10, total=80)
    victim = sorted(server.worker_pids())[0]
    os.kill(victim, signal.SIGKILL)  # the worker we started; gunicorn starts another
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    _move_clock(clock_file, 360)  # five minutes after the snapshot

    answers = [_document(server, "window=5m") for _ in range(12)]
    first = answers[0]
    assert first["application"]["requests"]["total"] == 50
    assert first["application"]["requests"]["errors"] == 0
    assert first["endpoints"]["/api/two"]["requests"] == 40
    assert first["endpoints"]["/api/one"]["requests"] == 10
    assert "/api/fail" not in first["endpoints"]
    assert _orders(first) == {"/api/two": 40, "/api/one": 10}  # the KPI over the window too
    assert 300 <= first["window_seconds"] < 330
    assert all(_comparable(answer) == _comparable(first) for answer in answers)

    everything = [_document(server, "window=15m") for _ in range(6)]
    assert {doc["application"]["requests"]["total"] for doc in everything} == {80}
    assert {doc["application"]["requests"]["errors"] for doc in everything} == {5}
    assert _orders(everything[0]) == {"/api/two": 40, "/api/one": 35, "/api/fail": 5}
    assert all(_comparable(doc) == _comparable(_document(server)) for doc in everything)

    status, _, body = server.get("/metrics?window=16m")
    assert status == 400 and b"longer than the 15m kept" in body
    status, _, body = server.get("/metrics?window=5m&format=prometheus")
    assert status == 400 and b"JSON format" in body
    assert len(_entries(state_dir)) <= 17  # 15 minutes every 60 s, plus 2


def test_windows_stay_exact_when_the_names_past_max_endpoints_change(
    gunicorn: Any, tmp_path: Path
) -> None:
    """Past ``max_endpoints`` the merged view keeps the busiest names and folds the rest
    into ``<overflow>``; the busiest change between two snapshots (``/c`` overtakes ``/b``)
    and a worker is killed (the archive folds its names): ``?window=5m`` still counts
    exactly the requests of those five minutes, in total and as status classes."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    clock_file = tmp_path / "clock"
    clock_file.write_text("0")
    server = gunicorn(
        APP,
        "-w",
        "2",
        env={
            "WSGI_OBSERVE_STATE_DIR": str(state_dir),
            "WSGI_OBSERVE_WINDOW_INTERVAL": "60s",
            "WSGI_OBSERVE_WINDOW_SPAN": "15m",
            "WSGI_OBSERVE_MAX_ENDPOINTS": "3",
            "WINDOWS_TEST_CLOCK": str(clock_file),
        },
    )
    _send(server, ["/a"] * 20 + ["/b"] * 12 + ["/c", "/d", "/e"] * 2, total=38)
    after_one = _move_clock(clock_file, 60)
    wait_until(lambda: _document(server) and _entries(state_dir)[-1] >= after_one - 0.01)

    _send(server, ["/c"] * 30 + ["/api/fail"] * 4, total=72)
    victim = sorted(server.worker_pids())[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    _move_clock(clock_file, 360)

    for _ in range(6):
        window = _document(server, "window=5m")
        requests = window["application"]["requests"]
        assert (requests["total"], requests["errors"]) == (34, 4), window["endpoints"]
        assert sum(e["requests"] for e in window["endpoints"].values()) == 34
