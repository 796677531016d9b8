"""Faults the multi-process state must survive: threads and recycling under concurrent
scrapes, a flood of distinct paths, a full disk, workers that drop privileges.

Every scrape answers, counters never go down, and the server never goes down with its
numbers."""

from __future__ import annotations

import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, wait_until
from servers import drive, scrape, settled_total

from wsgi_observe.metrics import MetricsStore

pytestmark = pytest.mark.slow

APP = "tests.apps.basic:app"


def _doc(server) -> dict:
    status, _, body = server.get("/metrics")
    assert status == 200, body[:500]
    return json.loads(body)


def test_gthread_workers_recycling_under_concurrent_scrapes_never_fail_or_go_down(gunicorn):
    """gthread workers, recycled every ~200 requests, with 4 scrapers running the whole
    time: every scrape 200, no counter ever lower than an earlier one, the total exact."""
    server = gunicorn(
        APP,
        "-w",
        "3",
        "-k",
        "gthread",
        "--threads",
        "8",
        "--max-requests",
        "200",
        "--max-requests-jitter",
        "50",
    )
    paths = [f"/api/leads/{i}" if i % 3 else f"/api/x{i % 7}/{i}" for i in range(3000)]
    load = drive(server, paths, clients=8, scrapers=4, deadline_s=180)
    assert load.failed == 0 and load.answered == 3000
    assert load.scrape_errors() == [], load.scrape_errors()[:2]
    assert load.decreases() == [], load.decreases()[:2]
    assert len(load.scrapes) >= 20
    assert settled_total(server, 3000) == 3000
    doc = _doc(server)
    assert doc["application"]["requests"]["in_flight"] == 0
    assert sum(e["requests"] for e in doc["endpoints"].values()) == 3000


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(12))


def test_the_endpoint_cap_holds_for_the_whole_server_across_recycling(gunicorn):
    """A unique path per request with workers recycled all the time: /metrics, the shared
    names and the archive stay within max_endpoints (0.1 grew to 24,485 names)."""
    server = gunicorn(
        APP, "-w", "2", "--max-requests", "80", env={"WSGI_OBSERVE_MAX_ENDPOINTS": "40"}
    )
    rng = random.Random(7)
    paths = [f"/p/{_word(rng)}" for _ in range(1500)]
    load = drive(server, paths, clients=6, scrapers=1, deadline_s=180)
    assert load.answered == 1500 and load.scrape_errors() == []
    assert settled_total(server, 1500) == 1500
    doc = _doc(server)
    names = set(doc["endpoints"])
    assert len(names - {"<overflow>"}) <= 40
    assert doc["endpoints"]["<overflow>"]["requests"] >= 1500 - 40
    state = Path(doc["multiprocess"]["state_dir"])
    assert len((state / "names").read_text().splitlines()) <= 40
    assert (state / "archive.json").stat().st_size < 200_000
    workers = [p for p in doc["processes"] if p["role"] == "worker"]
    assert all(p["rss_mb"] < 150 for p in workers)


def test_concurrent_snapshots_while_new_endpoints_arrive_never_fail():
    """Scrapes from many threads while requests add endpoints and buckets: never an error
    (0.1 raised IndexError when a scrape read a layout another had just grown)."""
    store = MetricsStore()
    stop = threading.Event()
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def record() -> None:
        start.wait()
        for i in range(20_000):
            store.record_call(f"fn{i % 900}", (i * 7919) % 5_000_000, failed=False)
        stop.set()

    def scrape_store() -> None:
        start.wait()
        while not stop.is_set():
            try:
                snapshot = store.snapshot()
                snapshot.overall  # noqa: B018 - the lazily summed histogram, too
                assert all(s.count >= 0 for s in snapshot.functions.values())
            except BaseException as error:  # reported below
                errors.append(error)
                return

    threads = [threading.Thread(target=record)] + [
        threading.Thread(target=scrape_store) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert sum(s.count for s in store.snapshot().functions.values()) == 20_000


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A private tmpfs of 640 KiB: room for one process's table, not two."""
    mount_point = Path(tempfile.mkdtemp(prefix="wsgi_observe-tmpfs-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=640k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"cannot mount a tmpfs here: {result.stderr}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        shutil.rmtree(mount_point, ignore_errors=True)


def test_a_full_disk_never_kills_a_process_that_counts(tiny_disk):
    """A table that cannot grow on a full disk moves its counts to memory (no SIGBUS on a
    page the disk could not back): every call counted, the reason reported once."""
    code = textwrap.dedent(
        """
        import os, sys
        from wsgi_observe.metrics import MetricsStore
        from wsgi_observe.multiprocess.table import WorkerTable
        state = sys.argv[1]
        table = WorkerTable(state, chunk=512)
        store = MetricsStore(table)
        with open(os.path.join(state, "filler"), "wb") as filler:  # fill the disk
            try:
                while True:
                    filler.write(b"x" * 65536)
                    filler.flush()
            except OSError:
                pass
        for i in range(20000):
            store.record_call(f"fn{i % 4000}", 1000 + i, failed=False)
        total = sum(s.count for s in store.snapshot().functions.values())
        print(total, table.degraded is not None, flush=True)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_disk)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # -7 is SIGBUS
    assert result.stdout.split() == ["20000", "True"]
    assert result.stderr.count("cannot grow") == 1


def test_a_full_state_disk_degrades_the_numbers_never_the_server(gunicorn, tiny_disk):
    """On a state disk with room for one worker's table, the other worker serves unshared
    (and says why in /metrics), in_flight returns to 0, and a killed worker is replaced."""
    state = tiny_disk / "state"
    state.mkdir(mode=0o700)
    server = gunicorn(APP, "-w", "2", env={"WSGI_OBSERVE_STATE_DIR": str(state)})
    load = drive(server, [f"/api/x/{i}" for i in range(600)], clients=4, scrapers=1)
    assert load.failed == 0 and load.answered == 600
    assert load.scrape_errors() == []
    # Two scrapes at a time: a sync worker answers one request at a time, so both answer.
    with ThreadPoolExecutor(2) as pool:
        docs = [doc for _ in range(10) for doc in pool.map(lambda _: _doc(server), range(2))]
    assert all(d["application"]["requests"]["in_flight"] == 0 for d in docs)
    problems = {d["multiprocess"].get("problem") for d in docs}
    assert any(p and "No space left on device" in p for p in problems), problems
    victim = server.worker_pids().pop()
    os.kill(victim, 9)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    assert server.process.poll() is None  # 0.1's master shut down here
    assert server.get("/api/after")[0] == 200


def test_workers_that_drop_privileges_share_numbers(gunicorn):
    """gunicorn --user nobody: the master (root) hands the state directory and the log
    directory to the worker user, so workers can read each other's tables (0.1 answered
    every scrape with nobody's empty view)."""
    parent = Path(tempfile.mkdtemp(prefix="wsgi_observe-user-"))
    parent.chmod(0o755)
    try:
        log_dir = parent / "logs"
        server = gunicorn(
            APP,
            "-w",
            "2",
            "--preload",
            "--user",
            "nobody",
            "--group",
            "nogroup",
            env={"LOG_DIR": str(log_dir)},
        )
        load = drive(server, [f"/api/leads/{i}" for i in range(400)], clients=4, scrapers=2)
        assert load.failed == 0 and load.scrape_errors() == [] and load.decreases() == []
        assert settled_total(server, 400) == 400
        doc = _doc(server)
        state = Path(doc["multiprocess"]["state_dir"])
        assert state.stat().st_uid == 65534 and log_dir.stat().st_uid == 65534
        worker_pids = {p["pid"] for p in doc["processes"] if p["role"] == "worker"}
        assert len(worker_pids) == 2
        assert scrape(server).total == 400
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_a_table_being_created_is_never_taken_for_a_dead_one(tmp_path, monkeypatch):
    """A sweep that runs while a process creates its table (between creating the file and
    locking it) must leave it alone: its keys file appears only once locked. (Under
    recycling, scrapes swept new workers' files away and their counts vanished.)"""
    from wsgi_observe.multiprocess import merge, table

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    real_flock = table.fcntl.flock
    swept: list[int] = []

    def flock_after_a_sweep(fd: int, operation: int) -> None:
        swept.append(merge.sweep(str(state)))  # another process's scrape, right now
        real_flock(fd, operation)

    monkeypatch.setattr(table.fcntl, "flock", flock_after_a_sweep)
    created = table.WorkerTable(str(state))
    monkeypatch.setattr(table.fcntl, "flock", real_flock)
    try:
        assert swept == [0]
        store = MetricsStore(created)
        store.record_call("fn", 1000, failed=False)
        assert merge.sweep(str(state)) == 0
        snapshot = merge.collect_snapshot(str(state))
        assert snapshot.functions["fn"].count == 1
    finally:
        created.close()
