"""Exact numbers across real gunicorn workers: merged counts, SIGKILL, recycling, bad state dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

APP = "tests.apps.basic:app"


def _metrics(server) -> dict:
    status, _, body = server.get("/metrics")
    assert status == 200
    return json.loads(body)


def _workers(doc: dict) -> set[int]:
    return {p["pid"] for p in doc["processes"] if p["role"] == "worker"}


def _total(server) -> int:
    return _metrics(server)["application"]["requests"]["total"]


def _hammer(server, paths: list[str], *, total: int, threads: int = 8) -> None:
    """Send ``paths`` concurrently, then wait until /metrics counts ``total`` requests in all.

    A worker records a request when the body is closed, just after the client has read the
    response, so a request can still be in flight to the store when its answer arrives.
    """
    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(lambda p: server.get(p)[0], paths))
    assert all(s in (200, 404) for s in statuses), statuses
    wait_until(lambda: _total(server) >= total)
    assert _total(server) == total


def test_every_worker_reports_the_same_exact_totals(gunicorn, tmp_path):
    """After N requests spread over 4 workers, every worker's /metrics says N."""
    server = gunicorn(APP, "-w", "4", env={"WSGI_OBSERVE_STATE_DIR": str(tmp_path)})
    _hammer(server, [f"/api/leads/{i}" for i in range(600)], total=600)
    # A worker is listed once it has booted; on a busy machine the last may still be booting.
    wait_until(lambda: len(_workers(_metrics(server))) == 4)
    totals = set()
    for _ in range(40):
        doc = _metrics(server)
        totals.add(doc["application"]["requests"]["total"])
    assert totals == {600}
    assert doc["endpoints"]["/api/leads/<int>"]["requests"] == 600
    assert {p["role"] for p in doc["processes"]} == {"master", "worker"}
    assert len(_workers(doc)) == 4
    assert all(p["rss_mb"] > 0 for p in doc["processes"])


def test_percentiles_are_those_of_all_requests_merged(gunicorn, tmp_path):
    """p50 reflects every worker's requests: 50 ms sleeps dominate once they are the majority."""
    server = gunicorn(APP, "-w", "3", env={"WSGI_OBSERVE_STATE_DIR": str(tmp_path)})
    _hammer(server, ["/fast"] * 40 + ["/slow"] * 60, total=100, threads=6)
    for _ in range(10):
        doc = _metrics(server)
        assert doc["endpoints"]["/slow"]["requests"] == 60
        assert doc["endpoints"]["/slow"]["p50"] >= 0.05
        assert doc["application"]["response_times"]["p50"] >= 0.05


def test_sigkilled_worker_loses_no_counts_and_counters_never_go_down(gunicorn, tmp_path):
    """Counts of a worker killed with SIGKILL survive, and its state file is absorbed."""
    server = gunicorn(APP, "-w", "2", env={"WSGI_OBSERVE_STATE_DIR": str(tmp_path)})
    _hammer(server, [f"/api/x/{i}" for i in range(300)], total=300)
    assert _metrics(server)["application"]["requests"]["total"] == 300
    victims = server.worker_pids()
    victim = sorted(victims)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    seen = [_metrics(server)["application"]["requests"]["total"] for _ in range(20)]
    assert seen == [300] * 20
    _hammer(server, [f"/api/x/{i}" for i in range(50)], total=350)
    assert _metrics(server)["application"]["requests"]["total"] == 350
    # The dead worker's files were folded into the archive: what is left belongs to live
    # workers (the replacement has a table once it has served a request, which the 50 above
    # may all have missed).
    pids = [
        json.loads(p.read_bytes().split(b"\n", 1)[0])["pid"]
        for p in Path(tmp_path).glob("w-*.keys")
    ]
    assert victim not in pids
    assert set(pids) <= set(server.worker_pids())


def test_recycled_workers_keep_state_files_bounded(gunicorn, tmp_path):
    """With max_requests recycling workers all the time, files stay bounded by live workers."""
    server = gunicorn(
        APP,
        "-w",
        "2",
        "--max-requests",
        "25",
        env={"WSGI_OBSERVE_STATE_DIR": str(tmp_path)},
    )
    total = 0
    for round_ in range(8):
        total += 50
        _hammer(server, [f"/api/r/{round_}/{i}" for i in range(50)], total=total, threads=4)
        doc = _metrics(server)
        assert doc["application"]["requests"]["total"] == total
        # live workers (2), perhaps workers that exited this instant, not yet absorbed
        assert len(list(Path(tmp_path).glob("w-*.keys"))) <= 4
    # Our own /metrics calls count toward max_requests too: a replacement may be booting.
    wait_until(lambda: len(_workers(_metrics(server))) == 2)
    # Once things settle, exactly the live workers' files remain: history does not pile up.
    wait_until(lambda: len(list(Path(tmp_path).glob("w-*.keys"))) == 2)
    assert _metrics(server)["application"]["requests"]["total"] == total


def test_a_corrupt_state_file_is_skipped_with_a_warning(gunicorn, tmp_path):
    """A truncated or garbage worker file never breaks /metrics."""
    server = gunicorn(APP, "-w", "2", env={"WSGI_OBSERVE_STATE_DIR": str(tmp_path)})
    _hammer(server, [f"/api/c/{i}" for i in range(40)], total=40)
    (tmp_path / "w-deadbeef.keys").write_bytes(
        b'{"id": "deadbeef", "pid": 1}\n[0, "c", "ep", "/x"\n\x00\xff'
    )
    (tmp_path / "w-deadbeef.vals").write_bytes(b"\x01\x02")
    (tmp_path / "w-cafe.keys").write_bytes(b"not json at all\n")
    for _ in range(6):
        doc = _metrics(server)
        assert doc["application"]["requests"]["total"] == 40


def test_single_process_writes_no_state_files(gunicorn, tmp_path):
    """Without the wsgi_observe gunicorn hooks, nothing is written anywhere."""
    server = gunicorn(APP, "-w", "1", env={"WSGI_OBSERVE_STATE_DIR": str(tmp_path)}, config=False)
    _hammer(server, ["/a"] * 10, total=10)
    assert _metrics(server)["application"]["requests"]["total"] == 10
    assert list(tmp_path.iterdir()) == []


def _shared_dir(parent: Path) -> Path:
    """A directory anyone may write to: refused whoever runs the server, root included."""
    path = parent / "shared"
    path.mkdir()
    path.chmod(0o777)
    return path


@pytest.mark.parametrize(
    ("make_dir", "message"),
    [
        pytest.param(lambda p: p / "missing", "directory does not exist", id="missing"),
        pytest.param(
            lambda p: (p / "file").write_text("x") and p / "file",
            "is a regular file, not a directory",
            id="a-file",
        ),
        pytest.param(
            lambda p: (p / "file").write_text("x") and p / "file" / "state",
            "cannot look at it (Not a directory)",
            id="under-a-file",
        ),
        pytest.param(_shared_dir, "writable by group or others", id="writable-by-others"),
    ],
)
def test_bad_state_dir_fails_at_start_with_one_clear_line(tmp_path, make_dir, message):
    """gunicorn refuses to start, naming the variable, when the state dir is unusable."""
    target = make_dir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WSGI_OBSERVE_STATE_DIR": str(target)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:wsgi_observe.gunicorn",
            "-b",
            f"127.0.0.1:{free_port()}",
            APP,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "WSGI_OBSERVE_STATE_DIR" in err and message in err
    assert "Traceback" not in err


def test_gunicorn_wraps_an_app_with_no_code_change(gunicorn, tmp_path):
    """gunicorn "wsgi_observe:wrap('module:app')": our endpoints, and JSON logs set up too."""
    server = gunicorn(
        "wsgi_observe:wrap('tests.apps.basic:_app')",
        "-w",
        "1",
        config=False,
        env={"LOG_DIR": str(tmp_path), "LOG_FORMAT": "json"},
    )
    status, headers, body = server.get("/api/leads/7", headers={"X-Request-ID": "req-123"})
    assert status == 200
    assert body == b"hello" and headers["X-Request-ID"] == "req-123"
    server.stop()  # flushes the buffered log lines
    lines = [json.loads(line) for line in (tmp_path / "application.log").read_text().splitlines()]
    access = [line for line in lines if line["logger"] == "wsgi_observe.access"]
    assert [(a["endpoint"], a["status"], a["request_id"]) for a in access] == [
        ("/api/leads/<int>", 200, "req-123")
    ]


def test_gunicorn_wrap_reports_the_requests(gunicorn, tmp_path):
    """The no-code path counts requests by endpoint template and answers /health."""
    server = gunicorn(
        "wsgi_observe:wrap('tests.apps.basic:_app')",
        "-w",
        "1",
        config=False,
        env={"LOG_DIR": str(tmp_path)},
    )
    assert server.get("/api/leads/7")[2] == b"hello"
    doc = _metrics(server)
    assert doc["endpoints"]["/api/leads/<int>"]["requests"] == 1
    assert json.loads(server.get("/health")[2])["status"] == "healthy"
