"""Business KPIs at their edges under real gunicorn (gthread, ``--preload``): values set
in the master before the fork, hostile label values from clients, a SIGKILLed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Gunicorn, wait_until

pytestmark = pytest.mark.slow

PROMTOOL = "/usr/bin/promtool"


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    """One gthread server with ``--preload`` for the module (stopped by pid at the end)."""
    started = Gunicorn(
        "tests.apps.kpi_edge_app:app", "-w", "2", "-k", "gthread", "--threads", "4", "--preload"
    )
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def _kpis(server: Gunicorn) -> dict:
    status, _, body = server.get("/metrics", timeout=10.0)
    assert status == 200, body[:300]
    return json.loads(body).get("kpis", {})


def _value(found: dict, name: str):
    series = found.get(name, {}).get("series", [])
    return series[0]["value"] if series else None


def _post(server: Gunicorn, path: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        server.url + path, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read()


def test_a_gauge_set_in_the_preloading_master_is_shown(server):
    """``--preload`` imports the app in the master, which has no table: its import-time
    ``customers.set(20)`` (mostrecent) was lost, the KPI missing from ``/metrics``. Its
    counter increment stays the master's (each worker would add it again)."""
    for _ in range(4):
        assert server.get("/")[0] == 200
    found = _kpis(server)
    assert _value(found, "customers") == 20
    assert _value(found, "imports") in (None, 0)


def test_a_lone_surrogate_from_a_client_is_no_error(server):
    """JSON's ``"\\ud800"`` is a lone surrogate in Python: recording it raised TypeError
    writing the key to the state file (a 500); now it is U+FFFD, and every format of
    ``/metrics`` answers, which promtool accepts."""
    for _ in range(3):
        status, body = _post(server, "/lead", b'{"source": "web\\ud800"}')
        assert status == 200, body[:300]
    assert _post(server, "/lead", b'{"source": "<overflow>"}')[0] == 200
    found = wait_until(
        lambda: (lambda k: k if "sources" in k and k["sources"]["total"] == 4 else None)(
            _kpis(server)
        ),
        20,
    )
    values = {s["labels"]["source"]: s["value"] for s in found["sources"]["series"]}
    assert values == {"web\ufffd": 3, "<overflow>": 1}
    for kind in ("prometheus", "openmetrics", "protobuf"):
        status, _, text = server.get(f"/metrics?format={kind}", timeout=10.0)
        assert status == 200, kind
    status, _, text = server.get("/metrics?format=prometheus", timeout=10.0)
    assert 'sources_total{source="web\ufffd"} 3\n'.encode() in text
    if Path(PROMTOOL).exists():
        result = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=60
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_gauges_across_a_sigkilled_worker_follow_their_mode(server):
    """A worker killed with SIGKILL: a ``sum`` gauge keeps its part, a ``livesum`` one
    drops it, a ``mostrecent`` one keeps the latest value set (run last: it kills one)."""
    by_pid: dict[int, int] = {}
    last = 0
    for _ in range(40):  # bounded: until both workers counted some
        status, _, body = server.get("/part")
        assert status == 200
        last = int(body)
        by_pid[last] = by_pid.get(last, 0) + 1
        if len(by_pid) == 2 and min(by_pid.values()) >= 2:
            break
    assert len(by_pid) == 2, by_pid
    victim, survivor = sorted(by_pid, key=by_pid.get)
    found = _kpis(server)
    total = sum(by_pid.values())
    assert (_value(found, "part_sum"), _value(found, "part_livesum")) == (total, total)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 20)
    found = wait_until(
        lambda: (lambda k: k if _value(k, "part_livesum") == by_pid[survivor] else None)(
            _kpis(server)
        ),
        20,
    )
    assert _value(found, "part_sum") == total
    assert _value(found, "part_mostrecent") == by_pid[last]  # whoever set it last
