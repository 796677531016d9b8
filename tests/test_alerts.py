"""Custom alerts: threshold rules over the middleware's metrics, fired once per crossing."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sentry_sdk
from conftest import wait_until
from wsgi_client import call

from wsgi_observe.alerts import (
    DEFAULT_RULES,
    AlertMonitor,
    ThresholdAlert,
    check_alerts,
    error_rate_alert,
    p95_alert,
)
from wsgi_observe.config import Config
from wsgi_observe.histograms import bucket_index
from wsgi_observe.metrics import MetricsStore, SeriesData, Snapshot
from wsgi_observe.middleware import ObservabilityMiddleware

if TYPE_CHECKING:
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)  # its fixtures: sentry_receiver, sentry_init


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers 500 on paths containing "fail", 200 otherwise."""
    failed = "fail" in environ["PATH_INFO"]
    start_response("500 Internal Server Error" if failed else "200 OK", [])
    return [b"x"]


def send(middleware: ObservabilityMiddleware, path: str, times: int = 1) -> None:
    for _ in range(times):
        call(middleware, path, validate=False)  # app() sends no Content-Type


def observed(**overrides: Any) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(app, store=MetricsStore(), access_log=False, **overrides)


@pytest.fixture
def alert_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the wsgi_observe.alerts logger, whatever the logging configuration."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("wsgi_observe.alerts")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def series(fast: int = 0, slow: int = 0, errors: int = 0) -> SeriesData:
    """Requests of 1 ms (fast) and 3 s (slow), as the store would merge them."""
    hist = {}
    if fast:
        hist[bucket_index(1_000)] = fast
    if slow:
        hist[bucket_index(3_000_000)] = slow
    return SeriesData(
        count=fast + slow,
        errors=errors,
        sum_ns=fast * 1_000_000 + slow * 3_000_000_000,
        hist=hist,
        by={("GET", "2xx"): fast + slow - errors, ("GET", "5xx"): errors},
    )


class FakeMiddleware:
    """Just what AlertMonitor reads: a config and a snapshot() the test sets."""

    def __init__(self) -> None:
        self.config = Config()
        self.endpoints: dict[str, SeriesData] = {}

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.endpoints), {}, 0, 0.0, time.time())


def test_error_rate_alert_fires_once_per_crossing_and_rearms(
    alert_log: list[logging.LogRecord],
) -> None:
    """Above 5% errors the alert fires once, stays quiet while firing, re-arms when healthy."""
    clock = Clock()
    middleware = observed()
    monitor = AlertMonitor(middleware, [error_rate_alert()], clock=clock)

    send(middleware, "/api/fail", 10)
    send(middleware, "/api/ok", 10)
    (alert,) = monitor.check()
    assert (alert.rule, alert.value, alert.requests) == ("Error rate spike", 0.5, 20)
    clock.now += 10
    assert monitor.check() == []  # still above: no second alert for one crossing

    clock.now += 400
    send(middleware, "/api/ok", 100)
    assert monitor.check() == []  # healthy window: re-armed
    send(middleware, "/api/fail", 10)
    send(middleware, "/api/ok", 10)
    clock.now += 10
    (again,) = monitor.check()
    assert again.value == pytest.approx(10 / 120, abs=1e-6)

    warnings = [r for r in alert_log if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "Alert: Error rate spike: application.requests.error_rate = 0.5 exceeds 0.05",
        "Alert: Error rate spike: application.requests.error_rate = 0.08333 exceeds 0.05",
    ]
    assert warnings[0].value == 0.5  # type: ignore[attr-defined]
    assert [r.getMessage() for r in alert_log if r.levelno == logging.INFO] == [
        "Alert resolved: Error rate spike: application.requests.error_rate = 0"
    ]


def test_error_rate_alert_waits_for_the_minimum_number_of_requests() -> None:
    """Ten failures out of ten requests are not yet an error-rate verdict; twenty requests are."""
    middleware = observed()
    monitor = AlertMonitor(middleware, [error_rate_alert(min_requests=20)])
    send(middleware, "/api/fail", 10)
    assert monitor.check() == []
    send(middleware, "/api/ok", 10)
    assert [alert.value for alert in monitor.check()] == [0.5]


def test_p95_alert_looks_at_the_recent_window_not_all_time() -> None:
    """A burst of 3 s requests fires the p95 alert though the all-time p95 is still fast."""
    clock = Clock()
    fake = FakeMiddleware()
    monitor = AlertMonitor(fake, [p95_alert()], clock=clock)  # type: ignore[arg-type]
    fake.endpoints = {"/api/leads": series(fast=1000)}
    assert monitor.check() == []

    clock.now += 400
    fake.endpoints = {"/api/leads": series(fast=1000, slow=40)}
    (alert,) = monitor.check()
    assert alert.metric == "application.response_times.p95"
    assert alert.value > 2.0
    assert alert.requests == 40  # only the window, not the 1040 since start


def test_per_endpoint_rules_fire_for_the_failing_endpoint_only(
    alert_log: list[logging.LogRecord],
) -> None:
    """With per_endpoint=True each endpoint has its own alert, named in the message."""
    middleware = observed()
    send(middleware, "/api/fail", 25)
    send(middleware, "/api/ok", 25)
    (alert,) = check_alerts(middleware, [error_rate_alert(per_endpoint=True)])
    assert (alert.endpoint, alert.value) == ("/api/fail", 1.0)
    assert (
        alert_log[-1].getMessage()
        == "Alert: Error rate spike on /api/fail: error_rate = 1 exceeds 0.05"
    )
    assert check_alerts(middleware, [error_rate_alert(per_endpoint=True)]) == []


def test_custom_threshold_alert_with_a_metric_function() -> None:
    """A ThresholdAlert may compute its value, with hysteresis before it re-arms."""
    depth = {"value": 150.0}
    rule = ThresholdAlert("Queue depth", lambda doc: depth["value"], 100, clear_below=50)
    monitor = AlertMonitor(observed(), [rule])
    assert [a.value for a in monitor.check()] == [150.0]
    depth["value"] = 80.0  # under the threshold, above clear_below: still firing
    assert monitor.check() == []
    depth["value"] = 120.0
    assert monitor.check() == []
    depth["value"] = 40.0
    assert monitor.check() == []
    depth["value"] = 130.0
    assert [a.value for a in monitor.check()] == [130.0]


def test_alert_is_sent_to_sentry_as_a_warning_message(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """With Sentry on, a firing alert becomes a warning message carrying metric and value."""
    sentry_init(environment="production", release="3.1.0")
    middleware = observed()
    send(middleware, "/api/fail", 30)
    check_alerts(middleware)
    (event,) = sentry_receiver.wait_for("event")
    assert event["level"] == "warning"
    text = event.get("logentry", {}).get("formatted") or event.get("message")
    assert text == "Alert: Error rate spike: application.requests.error_rate = 1 exceeds 0.05"
    assert event["extra"]["metric"] == "application.requests.error_rate"
    assert event["extra"]["value"] == 1.0
    assert event["contexts"]["alert"]["threshold"] == 0.05
    assert event["tags"]["alert"] == "Error rate spike"
    assert event["fingerprint"] == ["wsgi_observe.alert", "Error rate spike", "*"]


def test_alerts_only_log_when_sentry_is_off(alert_log: list[logging.LogRecord]) -> None:
    """Without a Sentry client the alert is a log line, and nothing fails."""
    assert not sentry_sdk.get_client().is_active()
    middleware = observed()
    send(middleware, "/api/fail", 30)
    assert [a.rule for a in check_alerts(middleware, DEFAULT_RULES)] == ["Error rate spike"]
    assert alert_log[-1].levelno == logging.WARNING


def test_background_timer_checks_until_stopped(alert_log: list[logging.LogRecord]) -> None:
    """start() evaluates on a timer off the request path; stop() ends the thread."""
    middleware = observed()
    monitor = AlertMonitor(middleware).start(interval_s=0.01)
    try:
        send(middleware, "/api/fail", 25)
        wait_until(lambda: monitor.firing, timeout=10.0)
    finally:
        monitor.stop()
    assert not any(t.name == "wsgi_observe-alerts" for t in threading.enumerate())
    assert [r.levelno for r in alert_log] == [logging.WARNING]


def test_evaluate_on_scrape_checks_after_each_metrics_request() -> None:
    """With evaluate_on_scrape(), a /metrics request evaluates the rules."""
    middleware = observed()
    monitor = AlertMonitor(middleware).evaluate_on_scrape()
    send(middleware, "/api/fail", 25)
    assert not monitor.firing
    send(middleware, "/metrics")
    assert monitor.firing == {("Error rate spike", None)}


def test_only_one_process_evaluates_with_shared_worker_state(
    tmp_path: Any, alert_log: list[logging.LogRecord]
) -> None:
    """Monitors sharing a state directory elect one evaluator, so an incident alerts once,
    and the one that takes over resolves it instead of firing it again."""
    first, second = observed(state_dir=str(tmp_path)), observed(state_dir=str(tmp_path))
    for middleware in (first, second):
        send(middleware, "/api/fail", 25)
    leader, other = AlertMonitor(first), AlertMonitor(second)
    try:
        assert len(leader.check()) == 1
        assert other.check() == []
        leader.stop()  # gives the lock up (a recycled worker): the other one takes over
        assert other.check() == []  # it knows the alert is firing: no second alert
        send(second, "/api/ok", 1000)
        assert other.check() == []
    finally:
        leader.stop()
        other.stop()
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in alert_log] == [
        ("WARNING", "Alert"),
        ("INFO", "Alert resolved"),
    ]


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda path: path.write_text("{not json"), id="garbage"),
        pytest.param(lambda path: path.write_text('{"firing": [[1, 2], "x"]}'), id="wrong-shape"),
        pytest.param(lambda path: os.mkfifo(path), id="fifo"),
        pytest.param(lambda path: path.symlink_to("/etc/passwd"), id="symlink"),
    ],
)
def test_a_hostile_firing_file_is_ignored(tmp_path: Any, plant: Callable[[Any], None]) -> None:
    """What the state directory says is firing is input: anything but the exact shape is
    ignored (never followed, never blocking), and the alert fires as if nothing was there."""
    plant(tmp_path / "alerts.firing.json")
    middleware = observed(state_dir=str(tmp_path))
    send(middleware, "/api/fail", 25)
    monitor = AlertMonitor(middleware)
    try:
        assert [alert.rule for alert in monitor.check()] == ["Error rate spike"]
    finally:
        monitor.stop()
    assert (tmp_path / "alerts.firing.json").read_text() == (
        '{"firing": [["Error rate spike", null]]}'
    )
