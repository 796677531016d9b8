"""``python -m wsgi_observe demo`` stops its gunicorn when it is stopped (issue 9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, free_port, http_get, wait_until


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGTERM, id="TERM"),
        pytest.param(signal.SIGINT, id="INT"),
        pytest.param(signal.SIGHUP, id="HUP"),
    ],
)
def test_a_signal_to_the_demo_stops_its_gunicorn_and_workers(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A signal sent to the demo's process alone (as ``kill -TERM <pid>`` or a supervisor
    does) ends the demo, its gunicorn master and every worker: nothing keeps the port."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEMO_DB": str(tmp_path / "demo.sqlite3")}
    started: set[int] = set()
    with tempfile.TemporaryFile() as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "wsgi_observe", "demo", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # nothing but our own signal reaches it
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_get(base + "/health/live", timeout=1)[0] == 200, timeout=30)
            children = wait_until(
                lambda: (
                    len(psutil.Process(demo.pid).children(recursive=True)) >= 3
                    and psutil.Process(demo.pid).children(recursive=True)
                ),
                timeout=30,
            )
            started = {child.pid for child in children}  # gunicorn's master and 2 workers

            os.kill(demo.pid, signum)

            demo.wait(timeout=30)
            wait_until(lambda: not any(_alive(pid) for pid in started), timeout=30)
        finally:
            for pid in [demo.pid, *started]:  # whatever is left, by pid
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if demo.poll() is None:
                demo.wait(timeout=10)
        with pytest.raises(OSError):
            http_get(f"http://127.0.0.1:{port}/health/live", timeout=1)


def test_the_demo_module_removes_the_private_database_folder_it_made(tmp_path):
    """Imported without DEMO_DB (gunicorn wsgi_observe.demo:app), the demo keeps its
    database in a private folder of its own, gone when the process exits."""
    env = {k: v for k, v in os.environ.items() if k != "DEMO_DB"}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    code = "import os, wsgi_observe.demo as d; print(os.path.dirname(d.DB_PATH))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=60, check=True
    )
    folder = Path(out.stdout.decode().strip())
    assert folder.parent == tmp_path and folder.name.startswith("wsgi_observe-demo-")
    assert not folder.exists()
