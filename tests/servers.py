"""Real servers for the multi-process tests: uWSGI (the pyuwsgi wheel) and waitress, plus a
bounded load driver that checks every scrape while requests and scrapes run concurrently.

gunicorn has its own fixture in conftest.py; these follow the same rules: 127.0.0.1 only,
every process stopped by its pid, every loop bounded in count and time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import psutil
import pytest
from conftest import ROOT, free_port, http_get, wait_until

VENV_BIN = os.path.dirname(sys.executable)


class Server:
    """A server process on 127.0.0.1, stopped (with all its children) by pid."""

    def __init__(self, command: list[str], port: int, env: Optional[dict[str, str]] = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_dir: Optional[str] = None
        if "LOG_DIR" not in full_env:
            self.log_dir = full_env["LOG_DIR"] = tempfile.mkdtemp(prefix="wsgi_observe-logs-")
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=self.log, stderr=self.log
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early: {self.output()[-3000:]}")
            return http_get(self.url + "/health/live", timeout=1.0)[0] == 200

        wait_until(ready, timeout)

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, **kwargs)

    def children(self) -> list[int]:
        try:
            return sorted(c.pid for c in psutil.Process(self.process.pid).children())
        except psutil.Error:
            return []

    def stop(self, sig: int = signal.SIGINT) -> None:
        family = self.children()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for pid in family:  # never leave a worker behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        if self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def uwsgi_command(app: str, port: int, *args: str) -> list[str]:
    """uWSGI from the pyuwsgi wheel, speaking HTTP itself, with a master (always: without one,
    a worker is the parent of the others and stopping it orphans them)."""
    return [
        os.path.join(VENV_BIN, "uwsgi"),
        "--http-socket",
        f"127.0.0.1:{port}",
        "--master",
        "--module",
        app,
        "--need-app",
        "--die-on-term",
        "--disable-logging",
        "--min-worker-lifetime",
        "1",
        *args,
    ]


@pytest.fixture(name="servers")
def servers_fixture() -> Iterator[Callable[..., Server]]:
    """``servers(kind, app, *args, env=...)`` starts uWSGI, waitress or gunicorn (without our
    config module); every one is stopped at the end of the test."""
    started: list[Server] = []

    def start(kind: str, app: str, *args: str, env: Optional[dict[str, str]] = None) -> Server:
        port = free_port()
        if kind == "uwsgi":
            command = uwsgi_command(app, port, *args)
        elif kind == "waitress":
            command = [
                os.path.join(VENV_BIN, "waitress-serve"),
                f"--listen=127.0.0.1:{port}",
                *args,
                app,
            ]
        elif kind == "gunicorn":
            command = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", *args, app]
        else:  # pragma: no cover - a typo in a test
            raise ValueError(kind)
        server = Server(command, port, env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop(signal.SIGTERM if "gunicorn" in server.process.args[2:3] else signal.SIGINT)


@dataclass
class Scrape:
    started: float
    ended: float
    total: Optional[int]
    status: int
    body: bytes = b""


@dataclass
class Load:
    """What a load run saw: the app's answers and every scrape."""

    answered: int = 0
    failed: int = 0
    scrapes: list[Scrape] = field(default_factory=list)

    def scrape_errors(self) -> list[Scrape]:
        return [s for s in self.scrapes if s.status != 200 or s.total is None]

    def decreases(self) -> list[tuple[Scrape, Scrape]]:
        """Pairs (earlier, later) where ``later`` began after ``earlier`` had ended and
        showed a smaller total: a counter that went down."""
        done = [s for s in self.scrapes if s.total is not None]
        by_end = sorted(done, key=lambda s: s.ended)
        bad: list[tuple[Scrape, Scrape]] = []
        best: Optional[Scrape] = None
        position = 0
        for scrape in sorted(done, key=lambda s: s.started):
            while position < len(by_end) and by_end[position].ended < scrape.started:
                candidate = by_end[position]
                if best is None or (candidate.total or 0) > (best.total or 0):
                    best = candidate
                position += 1
            if best is not None and (scrape.total or 0) < (best.total or 0):
                bad.append((best, scrape))
        return bad


def total_of(body: bytes) -> int:
    return int(json.loads(body)["application"]["requests"]["total"])


def scrape(server: Server) -> Scrape:
    started = time.monotonic()
    try:
        status, _, body = server.get("/metrics", timeout=10.0)
    except OSError:
        return Scrape(started, time.monotonic(), None, 0)
    total = total_of(body) if status == 200 else None
    return Scrape(started, time.monotonic(), total, status, body if status != 200 else b"")


def drive(
    server: Server,
    paths: list[str],
    *,
    clients: int = 6,
    scrapers: int = 2,
    deadline_s: float = 120.0,
    min_scrapes: int = 3,
) -> Load:
    """Send ``paths`` (each once) from ``clients`` threads while ``scrapers`` threads scrape
    /metrics without pause (all start together; each scraper makes at least
    ``min_scrapes``); stops when every path was sent or the deadline passed."""
    load = Load()
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.monotonic() + deadline_s
    items = iter(paths)

    def client() -> None:
        start.wait(timeout=30)
        while time.monotonic() < deadline:
            with lock:
                path = next(items, None)
            if path is None:
                return
            try:
                status = server.get(path, timeout=10.0)[0]
            except OSError:
                status = 0
            with lock:
                if status == 200:
                    load.answered += 1
                else:
                    load.failed += 1

    start = threading.Barrier(clients + scrapers)

    def scraper() -> None:
        start.wait(timeout=30)
        made = 0
        # Until the requests are all sent, and at least a few times each whatever happens.
        while (not done.is_set() or made < min_scrapes) and time.monotonic() < deadline:
            result = scrape(server)
            made += 1
            with lock:
                load.scrapes.append(result)

    with ThreadPoolExecutor(clients + scrapers) as pool:
        watchers = [pool.submit(scraper) for _ in range(scrapers)]
        senders = [pool.submit(client) for _ in range(clients)]
        for future in senders:
            future.result()
        done.set()
        for future in watchers:
            future.result()
    return load


def settled_total(server: Server, expected: int, timeout: float = 20.0) -> int:
    """Scrape until the total equals ``expected`` (or the timeout): the last total seen."""
    seen: list[int] = []

    def reached() -> bool:
        result = scrape(server)
        if result.total is not None:
            seen.append(result.total)
        return result.total == expected

    try:
        wait_until(reached, timeout, interval=0.2)
    except AssertionError:
        pass
    return seen[-1] if seen else -1
