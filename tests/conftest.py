"""Shared fixtures: fresh stores, the runtime-guard tripwire, and real gunicorn servers."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from wsgi_observe import _guard
from wsgi_observe.metrics import MetricsStore

ROOT = Path(__file__).resolve().parent.parent


# The suite checks itself (scripts/test passes these options) -----------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsgi_observe", "checks of the suite itself (scripts/test)")
    group.addoption(
        "--min-tests",
        type=int,
        default=0,
        metavar="N",
        help="fail unless the whole suite collects at least N tests (a test file that no "
        "longer collects is noticed); ignored when tests are selected by path, -k or -m",
    )
    group.addoption(
        "--fail-on-skip",
        action="store_true",
        help="fail the run if any test is skipped (CI installs every tool the tests use)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SuiteChecks(config), "wsgi_observe_suite_checks")


class _SuiteChecks:
    """``--min-tests`` and ``--fail-on-skip``: a run that tested less than it should fails."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.deselected = 0
        self.skipped: list[str] = []

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        minimum = self.config.getoption("--min-tests")
        whole_suite = (
            self.config.args_source is pytest.Config.ArgsSource.TESTPATHS and not self.deselected
        )
        if minimum and whole_suite and len(session.items) < minimum:
            raise pytest.UsageError(
                f"only {len(session.items)} tests collected, expected at least {minimum}: a "
                "test file or parametrisation no longer collects (if tests were removed on "
                "purpose, lower --min-tests in scripts/test)"
            )

    def _note(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped.append(f"{report.nodeid}: {reason}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.skipped and self.config.getoption("--fail-on-skip"):
            terminalreporter.section("skipped, but --fail-on-skip", red=True)
            for line in self.skipped:
                terminalreporter.line(line, red=True)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.skipped and self.config.getoption("--fail-on-skip") and not session.exitstatus:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect garbage after each test, so a file or socket it leaked in a reference cycle
    warns (and, under ``-W error::ResourceWarning``, fails) in that test, not a later one."""
    yield
    gc.collect()


# Variables a test must never inherit from the shell that runs the suite.
_OUR_VARIABLES = (
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_TRACES_SAMPLE_RATE",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "UPTIMEROBOT_API_KEY",
    "APP_BASE_URL",
)


@pytest.fixture(autouse=True)
def _clean_environment_and_logging(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test starts without our variables, with LOG_DIR in a temp folder and the working
    directory another (wrapping an app installs the guide's log handlers, and a Config built
    from defaults logs to ./logs), and ends with the root logger as it found it: our
    handlers removed, any other handler the test added removed and closed, its level back."""
    from wsgi_observe.config import ENV_VARS
    from wsgi_observe.logs import reset_logging

    for name in (*_OUR_VARIABLES, *(var.env for var in ENV_VARS.values())):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("WSGI_OBSERVE_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOG_DIR", str(tmp_path_factory.mktemp("logs")))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    reset_logging()
    _guard.reset_rate_limit()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    reset_logging()
    for handler in list(root.handlers):
        # pytest swaps its capture handlers per phase; those are its own to remove.
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _raise_guarded_errors() -> Iterator[list[BaseException]]:
    """Fail the test if the middleware swallowed an error in its own bookkeeping."""
    seen: list[BaseException] = []
    _guard.guard_hooks.append(seen.append)
    yield seen
    _guard.guard_hooks.remove(seen.append)
    if seen:
        raise AssertionError(f"wsgi_observe swallowed internal errors: {seen!r}")


@pytest.fixture
def store() -> MetricsStore:
    """A fresh metrics store, so tests never share counts."""
    return MetricsStore()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 15.0,
    interval: float = 0.05,
    explain: Optional[Callable[[], str]] = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` (a
    safety net, never the assertion itself), adding ``explain()`` to the failure if given."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    detail = f": {explain()}" if explain is not None else ""
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r}){detail}")


def stop_process(
    process: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    timeout: float = 15.0,
    *,
    group: bool = False,
) -> None:
    """Stop ``process`` by its pid (its whole process group with ``group``): ``sig`` first,
    SIGKILL if it is still there after ``timeout``, and reap it."""

    def send(signum: int) -> None:
        try:
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        except ProcessLookupError:
            pass

    if process.poll() is None or group:
        send(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=5)


def http_get(
    url: str, headers: Optional[dict[str, str]] = None, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


class Gunicorn:
    """A real gunicorn master on 127.0.0.1, stopped by pid when the test ends."""

    def __init__(
        self, app: str, *args: str, env: Optional[dict[str, str]] = None, config: bool = True
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "gunicorn"]
        if config:
            command += ["-c", "python:wsgi_observe.gunicorn"]
        command += ["-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5", *args, app]
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_dir: Optional[str] = None
        if "LOG_DIR" not in full_env:
            self.log_dir = full_env["LOG_DIR"] = tempfile.mkdtemp(prefix="wsgi_observe-logs-")
        # A file, not a pipe: a chatty master must never block on a full pipe.
        self.log = tempfile.TemporaryFile()  # closed in stop()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=self.log, stderr=self.log
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited early: {self.output()[-2000:]}")
            return http_get(self.url + "/health/live", timeout=1.0)[0] == 200

        wait_until(ready, timeout)

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, **kwargs)

    def worker_pids(self) -> set[int]:
        import psutil

        try:
            return {child.pid for child in psutil.Process(self.process.pid).children()}
        except psutil.Error:
            return set()

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
        if self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)


@pytest.fixture
def gunicorn() -> Iterator[Callable[..., Gunicorn]]:
    """Start real gunicorn servers; every one is stopped by pid at the end of the test."""
    started: list[Gunicorn] = []

    def start(
        app: str,
        *args: str,
        env: Optional[dict[str, str]] = None,
        config: bool = True,
        ready: bool = True,
    ) -> Gunicorn:
        server = Gunicorn(app, *args, env=env, config=config)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
