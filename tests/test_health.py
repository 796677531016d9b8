"""Readiness: ReadinessRunner and the middleware's /health, /health/live and /health/ready."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional
from wsgiref.validate import validator

import orjson
import pytest
import wsgi_client
from conftest import wait_until

from wsgi_observe import ObservabilityMiddleware
from wsgi_observe import health as health_module
from wsgi_observe.health import ReadinessRunner
from wsgi_observe.metrics import MetricsStore

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HUNG_CHECK_BOUND_S = 30.0  # a "hung" check blocks on an Event for at most this long


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An Event that hung checks wait on; set at teardown so no check thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


class Counted:
    """A check that counts its calls (thread-safe) and returns ``outcome``; with ``gate`` set
    it first waits for that Event (at most HUNG_CHECK_BOUND_S, then it reports unhealthy)."""

    def __init__(self, outcome: Any = True, *, gate: Optional[threading.Event] = None) -> None:
        self.outcome = outcome
        self.gate = gate
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        if self.gate is not None and not self.gate.wait(HUNG_CHECK_BOUND_S):
            return False
        return self.outcome


class Hung:
    """A check that blocks on ``release`` (at most HUNG_CHECK_BOUND_S) and counts its calls."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.calls = 0
        self.finished = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            self.calls += 1
        released = self.release.wait(HUNG_CHECK_BOUND_S)
        self.finished.set()
        return released


def raiser(error: BaseException) -> Callable[[], Any]:
    def check() -> Any:
        raise error

    return check


def returning(outcome: Any) -> Callable[[], Any]:
    return lambda: outcome


def inner_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def make_middleware(
    checks: Optional[dict[str, Any]] = None, **overrides: Any
) -> ObservabilityMiddleware:
    options: dict[str, Any] = {"readiness_timeout": 2.0, "readiness_cache_ttl": 0.0}
    options.update(overrides)
    return ObservabilityMiddleware(
        validator(inner_app), store=MetricsStore(), access_log=False, checks=checks, **options
    )


def call(
    app: Callable[..., Any],
    path: str = "/health/ready",
    method: str = "GET",
    headers: Optional[dict[str, str]] = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request through ``wsgiref.validate.validator``; returns status, headers, body."""
    response = wsgi_client.call(app, path, method=method, headers=headers)
    return response.code, dict(response.headers), response.body


def ready_body(app: Callable[..., Any], **kwargs: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = call(app, **kwargs)
    return status, orjson.loads(body)


def single(outcome_check: Callable[[], Any], **runner_kwargs: Any) -> dict[str, Any]:
    """The result of one check run alone through a ReadinessRunner."""
    runner = ReadinessRunner({"only": outcome_check}, **runner_kwargs)
    return runner.result()["checks"]["only"]


# Check return conventions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "status", "message"),
    [
        pytest.param(returning(True), "healthy", None, id="true"),
        pytest.param(returning(None), "healthy", None, id="none"),
        pytest.param(returning(False), "unhealthy", None, id="false"),
        pytest.param(returning({"message": "all good"}), "healthy", "all good", id="dict-message"),
        pytest.param(
            returning({"status": "degraded", "message": "replica lag"}),
            "degraded",
            "replica lag",
            id="dict-degraded",
        ),
        pytest.param(
            returning({"status": "unhealthy", "message": "pool exhausted"}),
            "unhealthy",
            "pool exhausted",
            id="dict-unhealthy",
        ),
        pytest.param(
            returning({"status": "sideways"}), "unhealthy", "sideways", id="unknown-status"
        ),
        pytest.param(returning({"status": None}), "unhealthy", None, id="status-none"),
        pytest.param(returning("ok"), "unhealthy", None, id="unrecognised-return-type"),
        pytest.param(raiser(RuntimeError("db down")), "unhealthy", "db down", id="raises"),
        pytest.param(
            raiser(OSError(111, "Connection refused")),
            "unhealthy",
            "Connection refused",
            id="raises-oserror",
        ),
        pytest.param(
            raiser(ConnectionError()), "unhealthy", "ConnectionError", id="raises-no-message"
        ),
    ],
)
def test_check_return_value_maps_to_status(
    check: Callable[[], Any], status: str, message: Optional[str]
) -> None:
    """Each check return convention gives the documented status, a message and latency_ms."""
    result = single(check)
    assert result["status"] == status
    assert isinstance(result["message"], str) and result["message"]
    assert "\n" not in result["message"]
    if message is not None:
        assert message in result["message"]
    assert isinstance(result["latency_ms"], (int, float)) and result["latency_ms"] >= 0


def test_dict_result_keeps_extra_fields() -> None:
    """Keys a check returns beyond status and message are merged into its result."""
    result = single(returning({"message": "3 replicas", "replicas": 3}))
    assert result == {
        "status": "healthy",
        "message": "3 replicas",
        "replicas": 3,
        "latency_ms": result["latency_ms"],
    }


def test_multiline_exception_message_is_reduced_to_one_line() -> None:
    """A check raising with a multi-line message is reported with its first line only."""
    result = single(raiser(RuntimeError("connection failed\n\tIs the server running?")))
    assert result["status"] == "unhealthy"
    assert "connection failed" in result["message"]
    assert "Is the server running" not in result["message"]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(KeyboardInterrupt("interrupted"), id="keyboard-interrupt"),
        pytest.param(SystemExit(3), id="system-exit"),
    ],
)
def test_check_raising_base_exception_is_unhealthy_not_a_crash(error: BaseException) -> None:
    """A check raising KeyboardInterrupt or SystemExit is unhealthy; the probe still answers."""
    app = make_middleware({"database": returning(True), "bad": raiser(error)})
    try:
        status, body = ready_body(app)
    except BaseException as escaped:  # never let KeyboardInterrupt reach pytest itself
        raise AssertionError(f"the probe raised {escaped!r}") from None
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["status"] == "healthy"
    assert body["checks"]["bad"]["status"] == "unhealthy"
    assert type(error).__name__ in body["checks"]["bad"]["message"]


@pytest.mark.parametrize(
    "checks",
    [
        pytest.param({"database": "postgres://localhost"}, id="string"),
        pytest.param({"database": None}, id="none"),
        pytest.param({"external_services": {"sendgrid": 42}}, id="group-member"),
    ],
)
def test_non_callable_check_raises_type_error_at_construction(checks: dict[str, Any]) -> None:
    """A non-callable check is refused when the runner or middleware is built, not at probe time."""
    with pytest.raises(TypeError, match="not callable"):
        ReadinessRunner(checks)
    with pytest.raises(TypeError, match="not callable"):
        make_middleware(checks)


def test_group_members_have_available() -> None:
    """Each member of a group (a mapping value) carries ``available`` alongside its status."""
    runner = ReadinessRunner(
        {
            "external_services": {
                "sendgrid": returning(True),
                "twilio": returning(False),
                "pusher": returning({"status": "degraded", "message": "API key not configured"}),
                "callrail": returning({"status": "degraded", "available": True, "message": "slow"}),
            }
        }
    )
    group = runner.result()["checks"]["external_services"]
    assert {name: (r["status"], r["available"]) for name, r in group.items()} == {
        "sendgrid": ("healthy", True),
        "twilio": ("unhealthy", False),
        "pusher": ("degraded", False),
        "callrail": ("degraded", True),
    }
    for result in group.values():
        assert {"status", "available", "message", "latency_ms"} <= set(result)


# Overall status and the body's shape --------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "http_status", "overall"),
    [
        pytest.param([True, None, {"status": "healthy"}], 200, "healthy", id="all-healthy"),
        pytest.param([], 200, "healthy", id="no-checks"),
        pytest.param([True, False], 503, "unhealthy", id="one-unhealthy"),
        pytest.param([True, {"status": "degraded"}], 503, "degraded", id="one-degraded"),
        pytest.param(
            [{"status": "degraded"}, False], 503, "unhealthy", id="unhealthy-beats-degraded"
        ),
    ],
)
def test_overall_status_and_http_code(outcomes: list[Any], http_status: int, overall: str) -> None:
    """All healthy: 200 healthy; any unhealthy: 503 unhealthy; else any degraded: 503 degraded."""
    app = make_middleware({f"check{i}": returning(o) for i, o in enumerate(outcomes)})
    status, body = ready_body(app)
    assert (status, body["status"]) == (http_status, overall)


def test_degraded_group_member_makes_probe_degraded() -> None:
    """A degraded group member with the rest healthy gives 503 ``degraded``, as in the guide."""
    app = make_middleware(
        {
            "database": returning(True),
            "external_services": {
                "sendgrid": returning({"status": "degraded", "message": "API key not configured"}),
                "twilio": returning(True),
            },
        }
    )
    status, body = ready_body(app)
    assert (status, body["status"]) == (503, "degraded")


def test_ready_body_has_the_guide_shape() -> None:
    """The body is exactly ``status``, ``timestamp``, ``checks`` with the guide's nested fields."""
    app = make_middleware(
        {
            "database": returning({"message": "Database connection successful"}),
            "external_services": {"sendgrid": returning(True), "twilio": returning(True)},
        }
    )
    before = datetime.now(timezone.utc).replace(microsecond=0)
    status, headers, raw = call(app)
    after = datetime.now(timezone.utc)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    body = orjson.loads(raw)
    assert set(body) == {"status", "timestamp", "checks"}
    assert body["status"] == "healthy"
    assert TIMESTAMP_RE.match(body["timestamp"]), body["timestamp"]
    stamp = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc
    )
    assert before <= stamp <= after, "the timestamp is not the time of the probe"
    assert set(body["checks"]) == {"database", "external_services"}
    database = body["checks"]["database"]
    assert database["status"] == "healthy"
    assert database["message"] == "Database connection successful"
    assert isinstance(database["latency_ms"], (int, float))
    for name in ("sendgrid", "twilio"):
        member = body["checks"]["external_services"][name]
        assert member["status"] == "healthy"
        assert member["available"] is True
        assert isinstance(member["message"], str)


# Concurrency, timeouts, cache, single flight ------------------------------------------


def test_checks_run_concurrently() -> None:
    """Three checks that each wait for the other two all pass, so they ran at the same time."""
    all_running = threading.Barrier(3, timeout=HUNG_CHECK_BOUND_S)

    def meets_the_others() -> bool:
        # Run one after another, the first check waits here alone until the barrier breaks.
        all_running.wait()
        return True

    app = make_middleware(
        {f"check{i}": meets_the_others for i in range(3)},
        readiness_timeout=HUNG_CHECK_BOUND_S + 5.0,
    )
    status, body = ready_body(app)
    assert status == 200, body
    assert not all_running.broken


def test_hung_check_times_out_and_is_not_started_twice(release: threading.Event) -> None:
    """A hung check is reported timed out in time, and a second probe reuses the hung run."""
    hung = Hung(release)
    fast = Counted()
    app = make_middleware(
        {"hung": hung, "fast": fast}, readiness_timeout=0.3, readiness_cache_ttl=0.0
    )
    for probe in (1, 2):
        status, body = ready_body(app)
        assert status == 503
        assert body["status"] == "unhealthy"
        assert body["checks"]["hung"]["status"] == "unhealthy"
        assert "timed out" in body["checks"]["hung"]["message"]
        assert body["checks"]["fast"]["status"] == "healthy"
        # The probe answered while the check was still blocked: it did not wait for it.
        assert not hung.finished.is_set(), f"probe {probe} waited for the hung check"
        assert fast.calls == probe  # the healthy check does run again
    assert hung.calls == 1, "a second copy of the hung check was started"


def test_check_is_run_again_once_the_hung_run_finishes(release: threading.Event) -> None:
    """After a timed-out run finally finishes, the next probe starts the check afresh."""
    hung = Hung(release)
    runner = ReadinessRunner({"hung": hung}, timeout_s=0.2, cache_ttl_s=0.0)
    assert runner.result()["checks"]["hung"]["status"] == "unhealthy"
    release.set()
    assert hung.finished.wait(5.0)
    assert runner.result()["checks"]["hung"]["status"] == "healthy"
    assert hung.calls == 2


def test_cache_reuses_result_within_ttl_and_reruns_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within readiness_cache_ttl a probe reuses the result; at the TTL the checks run again."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(
        health_module,
        "time",
        SimpleNamespace(monotonic=lambda: clock.now, perf_counter=time.perf_counter),
    )
    check = Counted()
    runner = ReadinessRunner({"db": check}, timeout_s=2.0, cache_ttl_s=1.0)
    first = runner.result()
    clock.now += 0.999
    assert runner.result() is first
    assert check.calls == 1
    clock.now += 0.001
    runner.result()
    assert check.calls == 2


@pytest.mark.parametrize(
    ("ttl", "calls"),
    [
        pytest.param(60.0, 1, id="within-ttl"),
        pytest.param(0.0, 3, id="ttl-zero"),
    ],
)
def test_middleware_probe_cache_follows_readiness_cache_ttl(ttl: float, calls: int) -> None:
    """Three probes run the checks once within the TTL, and every time with a TTL of 0."""
    check = Counted()
    app = make_middleware({"db": check}, readiness_cache_ttl=ttl)
    for _ in range(3):
        assert call(app)[0] == 200
    assert check.calls == calls


class _CountingCondition(threading.Condition):
    """A Condition that sets ``all_waiting`` once ``expected`` waits have begun on it."""

    def __init__(self, lock: Any, expected: int, all_waiting: threading.Event) -> None:
        super().__init__(lock)
        self.expected = expected
        self.waits = 0
        self.all_waiting = all_waiting

    def wait(self, timeout: Optional[float] = None) -> bool:
        self.waits += 1  # the lock is held here
        if self.waits >= self.expected:
            self.all_waiting.set()
        return super().wait(timeout)


def test_concurrent_probes_share_one_run() -> None:
    """Twenty simultaneous probes with an empty cache cause exactly one run of each check."""
    others_waiting = threading.Event()
    first = Counted(gate=others_waiting)
    second = Counted(gate=others_waiting)
    app = make_middleware(
        {"first": first, "second": second},
        readiness_cache_ttl=60.0,
        readiness_timeout=HUNG_CHECK_BOUND_S + 5.0,
    )
    # The checks finish only once the other 19 probes are waiting for their run.
    runner = app.readiness
    runner._done = _CountingCondition(runner._lock, 19, others_waiting)  # type: ignore[misc]
    barrier = threading.Barrier(20, timeout=10)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def probe() -> None:
        try:
            barrier.wait()
            statuses.append(call(app)[0])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=probe) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert statuses == [200] * 20
    assert (first.calls, second.calls) == (1, 1)


class _GatedLock:
    """A lock that, after the runner thread's release that ends its run, lets a waiter in first.

    It forces the interleaving a busy machine produces now and then: a probe waiting for the
    shared run wakes up between the runner clearing "running" and storing the result.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runner: Optional[threading.Thread] = None
        self.runner_releases = 0
        self.waiter_released = threading.Event()  # a waiter is blocked in wait_for
        self.waiter_reacquired = threading.Event()
        self.gate_open = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got and self.gate_open and threading.current_thread() is not self.runner:
            self.waiter_reacquired.set()
        return got

    def release(self) -> None:
        me = threading.current_thread()
        self._lock.release()
        if me is self.runner:
            self.runner_releases += 1
            if self.runner_releases == 2:  # the run is over and "running" was cleared
                self.gate_open = True
                self.waiter_reacquired.wait(5.0)
        elif self.runner is not None:
            self.waiter_released.set()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_probe_woken_at_end_of_shared_run_uses_its_result() -> None:
    """A probe that waited for the shared run gets that run's result even if it wakes up early."""
    check_may_finish = threading.Event()
    calls: list[int] = []

    def check() -> bool:
        calls.append(1)
        if len(calls) == 1:
            check_may_finish.wait(5.0)
        return True

    runner = ReadinessRunner({"db": check}, timeout_s=5.0, cache_ttl_s=60.0)
    gated = _GatedLock()
    runner._lock = gated  # type: ignore[assignment]
    runner._done = threading.Condition(gated)  # type: ignore[arg-type]
    results: list[dict[str, Any]] = []

    def first_probe() -> None:
        gated.runner = threading.current_thread()
        results.append(runner.result())

    first = threading.Thread(target=first_probe)
    second = threading.Thread(target=lambda: results.append(runner.result()))
    first.start()
    try:
        wait_until(lambda: calls, timeout=5.0)
        second.start()
        assert gated.waiter_released.wait(5.0), "the second probe never waited"
    finally:
        check_may_finish.set()
        first.join(10)
        if second.ident is not None:
            second.join(10)
    assert len(results) == 2
    assert len(calls) == 1, f"the check ran {len(calls)} times for two overlapping probes"


# HTTP behaviour of the probe endpoints ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/health/ready", id="ready"),
        pytest.param("/health", id="health"),
        pytest.param("/health/live", id="live"),
    ],
)
@pytest.mark.parametrize(
    "outcome",
    [pytest.param(True, id="healthy"), pytest.param(False, id="unhealthy")],
)
def test_head_gives_same_status_and_headers_without_body(path: str, outcome: bool) -> None:
    """HEAD answers with GET's status and headers and an empty body."""
    app = make_middleware({"db": returning(outcome)}, readiness_cache_ttl=60.0)
    get_status, get_headers, get_body = call(app, path)
    head_status, head_headers, head_body = call(app, path, method="HEAD")
    assert head_status == get_status
    assert head_body == b""
    assert get_body
    if path == "/health/ready":
        assert head_headers == get_headers  # the cached body: identical Content-Length
    else:
        assert set(head_headers) == set(get_headers)
        assert head_headers["Content-Length"] == get_headers["Content-Length"]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        pytest.param("/health/ready", "GET", id="ready-get"),
        pytest.param("/health/ready", "HEAD", id="ready-head"),
        pytest.param("/health", "GET", id="health-get"),
        pytest.param("/health/live", "GET", id="live-get"),
        pytest.param("/health/ready", "POST", id="ready-post"),
    ],
)
def test_probe_responses_are_not_cached_by_clients(path: str, method: str) -> None:
    """Every probe response carries ``Cache-Control: no-store``."""
    _, headers, _ = call(make_middleware({"db": returning(True)}), path, method=method)
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("POST", id="post"),
        pytest.param("PUT", id="put"),
        pytest.param("DELETE", id="delete"),
        pytest.param("OPTIONS", id="options"),
    ],
)
@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/health/ready", id="ready"),
        pytest.param("/health", id="health"),
        pytest.param("/health/live", id="live"),
    ],
)
def test_other_methods_get_405_with_allow(path: str, method: str) -> None:
    """Methods other than GET and HEAD get 405 with ``Allow: GET, HEAD`` and run no check."""
    check = Counted()
    status, headers, _ = call(make_middleware({"db": check}), path, method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert check.calls == 0


@pytest.mark.parametrize(
    "outcome",
    [pytest.param(True, id="healthy"), pytest.param(False, id="unhealthy")],
)
@pytest.mark.parametrize(
    ("authorization", "details"),
    [
        pytest.param(None, False, id="no-token"),
        pytest.param("Bearer wrong", False, id="wrong-token"),
        pytest.param("Basic s3cret", False, id="wrong-scheme"),
        pytest.param("Bearer s3cret", True, id="right-token"),
        pytest.param("bearer s3cret", True, id="scheme-case-insensitive"),
    ],
)
def test_ready_details_need_the_metrics_token(
    outcome: bool, authorization: Optional[str], details: bool
) -> None:
    """With a metrics token, /health/ready shows only status and timestamp unless it is sent."""
    app = make_middleware(
        {"db": returning(outcome)}, metrics_token="s3cret", readiness_cache_ttl=60.0
    )
    headers = {"Authorization": authorization} if authorization else None
    status, body = ready_body(app, headers=headers)
    assert status == (200 if outcome else 503)
    assert body["status"] == ("healthy" if outcome else "unhealthy")
    assert TIMESTAMP_RE.match(body["timestamp"])
    if details:
        assert body["checks"]["db"]["status"] == body["status"]
    else:
        assert set(body) == {"status", "timestamp"}


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        pytest.param("/health", {"status", "service", "timestamp", "version"}, id="health"),
        pytest.param("/health/live", {"status", "timestamp"}, id="live"),
    ],
)
def test_health_and_live_stay_open_with_a_token(path: str, keys: set[str]) -> None:
    """/health and /health/live answer 200 with their full body without the metrics token."""
    app = make_middleware(metrics_token="s3cret", service_name="CRM API", version="1.0.0")
    status, body = ready_body(app, path=path)
    assert status == 200
    assert set(body) == keys
    assert body["status"] == "healthy"
    assert TIMESTAMP_RE.match(body["timestamp"])
    if path == "/health":
        assert (body["service"], body["version"]) == ("CRM API", "1.0.0")


def test_probes_never_reach_the_wrapped_app() -> None:
    """The probe endpoints are answered by the middleware; other paths go to the app."""
    hits: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        hits.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    middleware = ObservabilityMiddleware(
        validator(app), store=MetricsStore(), access_log=False, checks={"db": returning(True)}
    )
    for path in ("/health", "/health/live", "/health/ready"):
        assert call(middleware, path)[0] == 200
    assert call(middleware, "/api/leads")[2] == b"app"
    assert hits == ["/api/leads"]


def test_a_check_hung_before_a_fork_is_run_again_in_the_child() -> None:
    """A run left in flight by the parent (its thread is gone after fork) is not waited on."""
    import os
    from concurrent.futures import Future

    from wsgi_observe.health import ReadinessRunner

    calls = []
    runner = ReadinessRunner({"db": lambda: calls.append(1)}, timeout_s=1.0, cache_ttl_s=0.0)
    check = runner._checks[0]
    check.running = Future()  # as if a parent's thread were still running it
    check.running_pid = os.getpid() + 1  # ... in another process
    body = runner.result()
    assert body["checks"]["db"]["status"] == "healthy"
    assert calls == [1]


# Check messages are redacted (issue 9) --------------------------------------------------

LEAKED = "pw-s3cr3t-77"


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(
            returning({"status": "unhealthy", "message": f"no postgres://app:{LEAKED}@db/crm"}),
            id="returned-message",
        ),
        pytest.param(
            raiser(RuntimeError(f"connect to postgres://app:{LEAKED}@db/crm failed")),
            id="raised-message",
        ),
        pytest.param(
            returning(
                {
                    "status": "degraded",
                    "db_password": LEAKED,
                    "detail": {"url": f"redis://:{LEAKED}@cache:6379/0"},
                }
            ),
            id="extra-fields",
        ),
    ],
)
def test_check_secrets_never_reach_probes_metrics_or_logs(
    check: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A check's DSN password is redacted in /health/ready, both /metrics formats and logs."""
    caplog.set_level(logging.DEBUG)
    app = make_middleware({"database": check})
    status, body = ready_body(app)
    assert status == 503
    assert "[redacted]" in orjson.dumps(body).decode()
    _, _, metrics_json = call(app, "/metrics")
    _, _, metrics_text = call(app, "/metrics", headers={"Accept": "text/plain; version=0.0.4"})
    assert b"wsgi_observe_readiness_check_healthy" in metrics_text
    log_files = [p.read_text() for p in Path(os.environ["LOG_DIR"]).glob("*.log")]
    shown = [orjson.dumps(body).decode(), metrics_json.decode(), metrics_text.decode()]
    for text in [*shown, caplog.text, *log_files]:
        assert LEAKED not in text


def test_check_status_survives_redaction() -> None:
    """Redaction never touches the status a check reported, nor its ordinary message."""
    result = single(returning({"status": "degraded", "message": "replica lag 3s"}))
    assert (result["status"], result["message"]) == ("degraded", "replica lag 3s")
