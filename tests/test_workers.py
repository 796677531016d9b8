"""Process state files without a server: dead processes are absorbed exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import ROOT, wait_until

from wsgi_observe import metrics, multiprocess
from wsgi_observe.config import Config
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.multiprocess import statedir

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from wsgi_observe.multiprocess import WorkerTable
    from wsgi_observe.metrics import MetricsStore
    from wsgi_observe import ObservabilityMiddleware
    state_dir, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store = MetricsStore(WorkerTable(state_dir))
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    mw = ObservabilityMiddleware(app, store=store, access_log=False, log_handlers=False)
    for i in range(count):
        body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": f"/items/{i}"}, lambda s, h, e=None: None)
        list(body); body.close()
    print("ready", flush=True)
    if mode == "hang":
        sys.stdin.read()   # alive until the test closes stdin or kills us
    elif mode == "serve":  # each line from the test: record that many more requests
        for line in sys.stdin:
            for i in range(int(line)):
                body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": f"/more/{i}"},
                          lambda s, h, e=None: None)
                list(body); body.close()
            print("done", flush=True)
    """
)


def child(state_dir: Path, count: int, mode: str = "exit") -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state_dir), str(count), mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process


def finish(process: subprocess.Popen) -> None:
    if process.stdin is not None:
        process.stdin.close()
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def total(state_dir: Path) -> int:
    snapshot = multiprocess.collect_snapshot(str(state_dir))
    return sum(series.count for series in snapshot.endpoints.values())


def test_live_and_dead_workers_are_summed_exactly(tmp_path):
    """Two live workers and one that exited: the merge counts every request once."""
    live = [child(tmp_path, 100, "hang"), child(tmp_path, 50, "hang")]
    finish(child(tmp_path, 25, "exit"))
    try:
        assert total(tmp_path) == 175
        assert total(tmp_path) == 175
        assert len(list(tmp_path.glob("w-*.keys"))) == 2  # the dead one was absorbed
        snapshot = multiprocess.collect_snapshot(str(tmp_path))
        assert snapshot.endpoints["/items/<int>"].count == 175
        assert len([p for p in snapshot.processes if p["role"] == "worker"]) == 2
    finally:
        for process in live:
            finish(process)


def test_sigkilled_worker_keeps_its_counts(tmp_path):
    """A worker killed with SIGKILL right after recording loses nothing."""
    process = child(tmp_path, 77, "hang")
    os.kill(process.pid, signal.SIGKILL)
    finish(process)
    assert total(tmp_path) == 77
    assert list(tmp_path.glob("w-*")) == []
    assert (tmp_path / "archive.json").exists()


def test_concurrent_sweeps_absorb_each_worker_once(tmp_path):
    """Many threads sweeping and scraping at once never double count or go down."""
    for count in (10, 20, 30, 40):
        finish(child(tmp_path, count, "exit"))
    seen: list[int] = []
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            for _ in range(5):
                seen.append(total(tmp_path))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=scrape) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert set(seen) == {100}
    assert total(tmp_path) == 100


def test_sweep_in_another_process_while_scraping_is_exact(tmp_path):
    """A scrape racing another process's sweep sees each count exactly once."""
    for count in (5, 6, 7):
        finish(child(tmp_path, count, "exit"))
    sweeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from wsgi_observe import multiprocess; multiprocess.sweep({str(tmp_path)!r})",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    values = [total(tmp_path) for _ in range(10)]
    sweeper.wait(timeout=30)
    assert set(values) == {18}


def test_corrupt_files_are_skipped_with_a_warning(tmp_path, caplog):
    """Garbage or truncated state never breaks the merge."""
    process = child(tmp_path, 12, "hang")
    try:
        bad = "0123456789abcdef" * 2
        (tmp_path / f"w-{bad}.keys").write_bytes(b"\x00\xffgarbage\n[1, 2\n")
        (tmp_path / f"w-{bad}.vals").write_bytes(b"\x01")
        (tmp_path / "archive.json").write_bytes(b"{not json")
        with caplog.at_level("WARNING", logger="wsgi_observe.multiprocess"):
            assert total(tmp_path) == 12
        assert any("wsgi_observe" in record.getMessage() for record in caplog.records)
    finally:
        finish(process)


def test_a_multiprocess_request_moves_the_stores_onto_a_state_file(tmp_path, monkeypatch):
    """A request saying wsgi.multiprocess moves this process onto a state file; /metrics merges."""
    monkeypatch.setattr(multiprocess, "_process", multiprocess._Process())
    monkeypatch.setattr(metrics, "_process_store", MetricsStore())
    store = MetricsStore()
    from wsgi_observe import ObservabilityMiddleware

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = ObservabilityMiddleware(
        app, store=store, access_log=False, log_handlers=False, state_dir=str(tmp_path)
    )
    try:
        for _ in range(3):
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "wsgi.multiprocess": True}
            body = middleware(environ, lambda s, h, e=None: None)
            list(body)
            body.close()
        assert isinstance(store.table, multiprocess.WorkerTable)
        assert metrics.process_store().table is store.table
        finish(child(tmp_path, 4, "exit"))
        snapshot = middleware.snapshot()
        assert snapshot.endpoints["/x"].count == 3
        assert snapshot.endpoints["/items/<int>"].count == 4
        assert snapshot.state["shared"] is True
    finally:
        store.table.close()


def test_state_dir_errors_name_the_variable(tmp_path):
    """A missing directory gives one line naming WSGI_OBSERVE_STATE_DIR."""
    with pytest.raises(statedir.StateDirError, match=r"WSGI_OBSERVE_STATE_DIR=.*does not exist"):
        statedir.check_private(str(tmp_path / "nope"), variable=statedir.ENV_STATE_DIR)
    statedir.check_private(str(tmp_path), variable=statedir.ENV_STATE_DIR)
    assert Config.from_env({}, state_dir=str(tmp_path)).state_dir == str(tmp_path)


def test_wait_until_helper_is_bounded():
    """The polling helper gives up with a clear error instead of hanging."""
    with pytest.raises(AssertionError, match="not met"):
        wait_until(lambda: False, timeout=0.2)


def test_running_totals_follow_changes_between_scrapes(tmp_path):
    """Workers that keep recording, and one that dies, are merged exactly at every scrape."""
    first = child(tmp_path, 10, "serve")
    second = child(tmp_path, 20, "serve")
    try:
        assert total(tmp_path) == 30

        def more(process: subprocess.Popen, count: int) -> None:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(f"{count}\n".encode())
            process.stdin.flush()
            assert process.stdout.readline().strip() == b"done"

        more(first, 5)
        more(second, 7)
        assert total(tmp_path) == 42
        assert multiprocess.collect_snapshot(str(tmp_path)).endpoints["/more/<int>"].count == 12
        more(first, 3)
        finish(first)  # exits: absorbed into the archive at the next scrape
        assert total(tmp_path) == 45
        more(second, 1)
        assert total(tmp_path) == 46
        assert total(tmp_path) == 46
    finally:
        finish(second)
        if first.poll() is None:
            finish(first)
