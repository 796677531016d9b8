"""@performance_tracking: timed into the same metrics, slow calls logged, functions unchanged."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from webtest import TestApp

from wsgi_observe import ObservabilityMiddleware, performance_tracking, tracking
from wsgi_observe.metrics import MetricsStore


def test_bare_decorator_keeps_name_signature_and_return_value(store):
    """The wrapped function is the same to its callers: name, docstring, signature, result."""

    def get_leads(status: str, limit: int = 10) -> list[str]:
        """Leads by status."""
        return [status] * limit

    original = inspect.signature(get_leads)
    get_leads = performance_tracking(store=store)(get_leads)
    assert get_leads("new", limit=2) == ["new", "new"]
    assert get_leads.__name__ == "get_leads"
    assert get_leads.__doc__ == "Leads by status."
    assert inspect.signature(get_leads) == original
    series = store.snapshot().functions[
        f"{__name__}.test_bare_decorator_keeps_name_signature_and_return_value.<locals>.get_leads"
    ]
    assert series.count == 1 and series.errors == 0


def test_plain_decorator_records_into_the_process_store():
    """@performance_tracking with no arguments uses the store /metrics shows by default."""
    from wsgi_observe.metrics import process_store

    @performance_tracking
    def compute() -> int:
        return 42

    before = process_store().snapshot().functions
    name = f"{__name__}.test_plain_decorator_records_into_the_process_store.<locals>.compute"
    had = before[name].count if name in before else 0
    assert compute() == 42
    assert process_store().snapshot().functions[name].count == had + 1


def test_named_calls_appear_in_metrics(store):
    """A name given to the decorator is the key under `functions` in /metrics."""

    @performance_tracking(name="reports.build", store=store)
    def build() -> str:
        return "ok"

    for _ in range(3):
        build()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x"]

    doc = TestApp(ObservabilityMiddleware(app, store=store, access_log=False)).get("/metrics").json
    assert doc["functions"]["reports.build"]["calls"] == 3
    assert doc["functions"]["reports.build"]["p99"] >= 0


def test_exceptions_propagate_and_count_as_errors(store):
    """The same exception reaches the caller and the call is counted as an error."""
    boom = ValueError("bad lead")

    @performance_tracking(name="leads.create", store=store)
    def create() -> None:
        raise boom

    with pytest.raises(ValueError) as caught:
        create()
    assert caught.value is boom
    series = store.snapshot().functions["leads.create"]
    assert (series.count, series.errors) == (1, 1)


def test_slow_calls_log_a_warning(store, caplog, monkeypatch):
    """A call over the threshold logs the guide-style slow WARNING with the duration."""
    clock = {"ns": 10_000_000_000}
    monkeypatch.setattr(tracking, "perf_counter_ns", lambda: clock["ns"])

    @performance_tracking(name="slow.op", slow_threshold=0.001, store=store)
    def slow() -> None:
        clock["ns"] += 5_000_000  # the call takes 5 ms by the tracker's clock

    @performance_tracking(name="quick.op", slow_threshold=0.001, store=store)
    def quick() -> None:
        clock["ns"] += 1_000_000  # exactly the threshold: not slow

    with caplog.at_level("WARNING", logger="wsgi_observe.performance"):
        quick()
        slow()
    [record] = [r for r in caplog.records if r.name == "wsgi_observe.performance"]
    assert record.getMessage().startswith("Slow operation detected: slow.op took")
    assert record.duration_ms == 5


def test_async_functions_are_timed(store):
    """Coroutine functions stay coroutine functions and are timed when awaited."""

    @performance_tracking(name="async.fetch", store=store)
    async def fetch(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(21)) == 42
    assert store.snapshot().functions["async.fetch"].count == 1


def test_bad_threshold_is_refused():
    """A non-positive slow threshold is a clear error at decoration time."""
    with pytest.raises(ValueError, match="slow_threshold"):
        performance_tracking(slow_threshold=0)


def test_store_fixture_is_fresh(store):
    """Each test gets its own store (nothing leaks between tests)."""
    assert isinstance(store, MetricsStore)
    assert store.snapshot().functions == {}


def test_each_middleware_counts_its_own_requests_and_shows_timed_functions():
    """A new middleware starts from zero; functions timed process-wide appear in its /metrics."""

    @performance_tracking(name="shared.function")
    def shared() -> None:
        return None

    shared()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x"]

    first = TestApp(ObservabilityMiddleware(app, access_log=False))
    first.get("/a")
    first.get("/a")
    second = TestApp(ObservabilityMiddleware(app, access_log=False))
    second.get("/a")
    doc = second.get("/metrics").json
    assert doc["application"]["requests"]["total"] == 1
    assert doc["functions"]["shared.function"]["calls"] >= 1
    assert first.get("/metrics").json["application"]["requests"]["total"] == 2
