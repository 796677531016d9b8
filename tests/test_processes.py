"""Exact numbers under every pre-fork server, without server-specific configuration.

Real uWSGI (the pyuwsgi wheel, lazy and not, threads, recycling, SIGKILL), gunicorn without
our config module (lazy and --preload, sync and gthread), and waitress (threads, one
process), each under bounded load with concurrent scrapes: every scrape answers 200, totals
never go down, and they settle at exactly the number of requests that got a response.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, wait_until
from servers import drive, scrape, servers_fixture, settled_total

__all__ = ["servers_fixture"]  # the `servers` fixture, imported for this module's tests
pytestmark = pytest.mark.slow

APP = "tests.apps.basic:app"


def _paths(count: int, prefix: str = "/api/items") -> list[str]:
    return [f"{prefix}/{i}" for i in range(count)]


def _check(load, server, sent: int, total: int | None = None) -> dict:
    """Every request answered, every scrape 200, none lower than one before it, and the
    total settles at exactly ``total`` (default: ``sent``, this load's requests)."""
    total = sent if total is None else total
    assert load.failed == 0, f"{load.failed} requests got no answer"
    assert load.answered == sent
    assert load.scrape_errors() == [], (load.scrape_errors()[:3], server.output()[-4000:])
    assert load.decreases() == [], load.decreases()[:3]
    assert len(load.scrapes) >= 3  # the scrapers really ran alongside
    assert settled_total(server, total) == total
    return json.loads(server.get("/metrics")[2])


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param((), id="app-in-master"),
        pytest.param(("--lazy-apps",), id="lazy-apps"),
        pytest.param(("--lazy-apps", "--threads", "2"), id="lazy-threads"),
        pytest.param(("--threads", "3"), id="master-threads"),
    ],
)
def test_uwsgi_workers_report_exact_totals(servers, mode):
    """uWSGI with 3 processes, either way it loads the app: every scrape is the whole server."""
    server = servers("uwsgi", APP, "--processes", "3", *mode)
    load = drive(server, _paths(900), clients=6, scrapers=2)
    doc = _check(load, server, 900)
    assert doc["multiprocess"]["shared"] is True
    # Every worker that has served shows (one the load balancing passed over has no table
    # yet; the totals above are exact either way).
    workers = {p["pid"] for p in doc["processes"] if p["role"] == "worker"}
    assert 2 <= len(workers) <= 3 and workers <= set(server.children())
    assert [p["pid"] for p in doc["processes"] if p["role"] == "master"] == [server.process.pid]


@pytest.mark.parametrize(
    "mode",
    [pytest.param((), id="app-in-master"), pytest.param(("--lazy-apps",), id="lazy-apps")],
)
def test_uwsgi_recycled_and_killed_workers_are_folded_in_once(servers, mode):
    """--max-requests recycling and a SIGKILLed worker lose nothing and count nothing twice."""
    server = servers("uwsgi", APP, "--processes", "2", "--max-requests", "60", *mode)
    load = drive(server, _paths(500), clients=4, scrapers=2)
    _check(load, server, 500)
    victim = server.children()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.children() and len(server.children()) == 2)
    after = [scrape(server).total for _ in range(10)]
    assert after == [500] * 10
    load = drive(server, _paths(300, "/api/more"), clients=4, scrapers=2)
    doc = _check(load, server, 300, total=800)
    assert doc["endpoints"]["/api/more/<int>"]["requests"] == 300
    assert doc["application"]["requests"]["in_flight"] == 0


def test_uwsgi_honours_the_state_dir_variable(servers, tmp_path):
    """WSGI_OBSERVE_STATE_DIR is where uWSGI workers keep their tables (no hooks involved)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    server = servers("uwsgi", APP, "--processes", "2", env={"WSGI_OBSERVE_STATE_DIR": str(state)})
    load = drive(server, _paths(200), clients=4, scrapers=1)
    doc = _check(load, server, 200)
    assert doc["multiprocess"]["state_dir"] == str(state)
    assert 1 <= len(list(state.glob("w-*.keys"))) <= 2  # a table per worker that served
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_uwsgi_refuses_a_state_dir_others_can_write_and_says_why(servers, tmp_path):
    """A world-writable WSGI_OBSERVE_STATE_DIR is never used; /metrics says why."""
    state = tmp_path / "open"
    state.mkdir()
    state.chmod(0o777)
    server = servers("uwsgi", APP, "--processes", "2", env={"WSGI_OBSERVE_STATE_DIR": str(state)})
    assert server.get("/api/x")[0] == 200
    doc = json.loads(server.get("/metrics")[2])
    assert doc["multiprocess"]["shared"] is False
    assert "writable by group or others" in doc["multiprocess"]["problem"]
    assert list(state.iterdir()) == []
    assert "writable by group or others" in server.output()


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(("-w", "3"), id="sync"),
        pytest.param(("-w", "3", "--preload"), id="sync-preload"),
        pytest.param(("-w", "2", "-k", "gthread", "--threads", "4"), id="gthread"),
    ],
)
def test_gunicorn_without_our_config_module_is_exact(servers, mode):
    """Plain `gunicorn app` (no -c wsgi_observe.gunicorn): workers share exact numbers."""
    server = servers("gunicorn", APP, *mode, "--max-requests", "150")
    load = drive(server, _paths(800), clients=6, scrapers=2)
    doc = _check(load, server, 800)
    assert doc["multiprocess"]["shared"] is True
    assert doc["application"]["requests"]["in_flight"] == 0


def test_waitress_one_process_with_threads_is_exact_in_memory(servers):
    """waitress serves from one process: nothing is shared, numbers are exact in memory."""
    server = servers("waitress", APP, "--threads=6")
    load = drive(server, _paths(600), clients=6, scrapers=2)
    doc = _check(load, server, 600)
    assert "multiprocess" not in doc  # never needed, never written
    assert "processes" not in doc  # one process: no per-worker figures


def test_a_worker_forked_after_the_middleware_was_built_shares_its_numbers(tmp_path):
    """os.fork() after building the middleware (a pre-fork server's master): each child
    gets its own table, and a scrape in any child sees both."""
    script = tmp_path / "fork_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from wsgi_observe import ObservabilityMiddleware
            def app(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok"]
            mw = ObservabilityMiddleware(app, access_log=False, log_handlers=False)
            def call(path):
                body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""},
                          lambda status, headers, exc_info=None: None)
                data = b"".join(body)
                if hasattr(body, "close"):
                    body.close()
                return data
            read_end, write_end = os.pipe()
            pids = []
            for n in (3, 5):
                pid = os.fork()
                if pid == 0:
                    os.close(write_end)
                    for i in range(n):
                        call(f"/items/{i}")
                    os.write(1, f"child {os.getpid()}\\n".encode())  # one write: whole line
                    os.read(read_end, 1)  # until the parent closes the pipe
                    if n == 5:
                        doc = json.loads(call("/metrics"))
                        total = doc['application']['requests']['total']
                        os.write(1, f'total {total}\\n'.encode())
                    os._exit(0)
                pids.append(pid)
            sys.stdin.readline()
            os.close(write_end)
            for pid in pids:
                os.waitpid(pid, 0)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        lines = [process.stdout.readline().split() for _ in range(2)]
        assert sorted(line[0] for line in lines) == ["child", "child"]
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline().split() == ["total", "8"]
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def test_every_worker_shows_the_newest_readiness_probe(gunicorn):
    """A /health/ready probe answered by one worker is what every worker's /metrics shows
    (not a worker's own older probe, or none): alerts and dashboards see one readiness."""
    import threading

    server = gunicorn(APP, "-w", "2")
    assert server.get("/api/warm")[0] == 200
    assert server.get("/health/ready")[0] == 200
    seen: dict[int, str] = {}
    for _ in range(30):  # bounded: until a scrape of each worker was seen
        # One worker is kept busy with a slow request; the other answers both of these.
        busy = threading.Thread(target=server.get, args=("/slow?ms=400",))
        busy.start()
        wait_until(  # the slow request is in flight: one worker is busy with it
            lambda: json.loads(server.get("/metrics")[2])["application"]["requests"]["in_flight"]
        )
        pid = int(server.get("/pid")[2])
        text = server.get("/metrics?format=prometheus")[2].decode()
        busy.join(10)
        seen[pid] = text
        if len(seen) == 2:
            break
    assert len(seen) == 2, "the same worker answered every time"
    assert all("\nwsgi_observe_ready 1\n" in text for text in seen.values())
    stamps = {
        line.split()[-1]
        for text in seen.values()
        for line in text.splitlines()
        if line.startswith("wsgi_observe_readiness_last_run_timestamp_seconds ")
    }
    assert len(stamps) == 1  # one probe, the same everywhere
