"""mod_wsgi in daemon mode with several processes: exact numbers, nothing to configure.

Apache's daemons run as www-data and each imports the app itself (there is no fork after
the middleware is built); ``wsgi.multiprocess`` tells the middleware to share. The
environment (Debian's apache2, mod_wsgi built for Debian's python3) is prepared by
``scripts/mod-wsgi-env``, which the README's test command runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import free_port, wait_until
from servers import Server, drive, scrape, settled_total

pytestmark = pytest.mark.slow

MOD_WSGI = "/opt/wsgi_observe-modwsgi/bin/mod_wsgi-express"
WWW_DATA = "www-data"

APP = textwrap.dedent(
    """
    from wsgi_observe import ObservabilityMiddleware

    def _app(environ, start_response):
        body = b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    application = ObservabilityMiddleware(_app, service_name="mod-wsgi-test", access_log=False)
    """
)


def _daemons(server: Server) -> list[int]:
    """The mod_wsgi daemon processes (``(wsgi:...)``) under Apache's parent."""
    try:
        children = psutil.Process(server.process.pid).children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            if child.cmdline() and child.cmdline()[0].startswith("(wsgi:"):
                found.append(child.pid)
        except psutil.Error:
            continue
    return sorted(found)


@pytest.fixture
def mod_wsgi() -> Iterator[Callable[..., Server]]:
    """``mod_wsgi(*args)`` serves the wrapped app with mod_wsgi-express in daemon mode."""
    if not os.path.exists(MOD_WSGI):
        pytest.skip("run scripts/mod-wsgi-env first (the README's test command does)")
    root = Path(tempfile.mkdtemp(prefix="wsgi_observe-modwsgi-"))
    root.chmod(0o755)  # the daemons (www-data) read the app from here
    (root / "app.wsgi").write_text(APP)
    (root / "app.wsgi").chmod(0o644)
    logs = root / "logs"
    logs.mkdir()
    shutil.chown(logs, WWW_DATA, WWW_DATA)
    started: list[Server] = []

    def start(*args: str) -> Server:
        port = free_port()
        command = [
            MOD_WSGI,
            "start-server",
            str(root / "app.wsgi"),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--user",
            WWW_DATA,
            "--group",
            WWW_DATA,
            "--locale",
            "C.UTF-8",
            "--server-root",
            str(root / "server"),
            "--log-to-terminal",
            *args,
        ]
        server = Server(command, port, {"LOG_DIR": str(logs)})
        started.append(server)
        server.wait_ready(timeout=60)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGTERM)
    shutil.rmtree(root, ignore_errors=True)


def test_mod_wsgi_daemons_report_exact_totals(mod_wsgi):
    """Three daemon processes with two threads each: every scrape is the whole server."""
    server = mod_wsgi("--processes", "3", "--threads", "2")
    load = drive(server, [f"/api/leads/{i}" for i in range(600)], clients=6, scrapers=2)
    assert load.failed == 0 and load.answered == 600
    assert load.scrape_errors() == [] and load.decreases() == []
    assert settled_total(server, 600) == 600
    doc = json.loads(server.get("/metrics")[2])
    assert doc["multiprocess"]["shared"] is True
    assert doc["endpoints"]["/api/leads/<int>"]["requests"] == 600
    masters = [p["pid"] for p in doc["processes"] if p["role"] == "master"]
    assert masters == [server.process.pid]  # Apache's parent, which started the daemons


def test_mod_wsgi_recycled_and_killed_daemons_lose_nothing(mod_wsgi):
    """--maximum-requests recycling and a SIGKILLed daemon: totals never go down."""
    server = mod_wsgi("--processes", "2", "--threads", "2", "--maximum-requests", "80")
    load = drive(server, [f"/api/x/{i}" for i in range(400)], clients=4, scrapers=2)
    assert load.answered == 400 and load.scrape_errors() == [] and load.decreases() == []
    assert settled_total(server, 400) == 400
    wait_until(lambda: len(_daemons(server)) == 2)
    victim = _daemons(server)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in _daemons(server) and len(_daemons(server)) == 2)
    assert [scrape(server).total for _ in range(8)] == [400] * 8
    load = drive(server, [f"/api/y/{i}" for i in range(200)], clients=4, scrapers=2)
    assert load.answered == 200 and load.scrape_errors() == [] and load.decreases() == []
    assert settled_total(server, 600) == 600
