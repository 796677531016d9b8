"""PagerDuty straight from the in-process alerts, against a local Events API v2 stand-in."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import Gunicorn, wait_until
from fake_pagerduty import ROUTING_KEY, FakePagerDuty

from wsgi_observe.alerts import Alert, AlertMonitor, PagerDutyNotifier, error_rate_alert
from wsgi_observe.config import Config, ConfigError
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.middleware import ObservabilityMiddleware

# Every wait on the notifier or the stand-in is bounded by this.
DEADLINE_S = 20.0


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers 500 on paths containing "fail", 200 otherwise."""
    failed = "fail" in environ["PATH_INFO"]
    start_response("500 Internal Server Error" if failed else "200 OK", [])
    return [b"x"]


def send(middleware: ObservabilityMiddleware, path: str, times: int = 1) -> None:
    for _ in range(times):
        environ: dict[str, Any] = {"SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": ""}
        setup_testing_defaults(environ)
        body = middleware(environ, lambda status, headers, exc_info=None: None)
        try:
            list(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def alert(rule: str = "Error rate spike", *, resolved: bool = False, **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "metric": "application.requests.error_rate",
        "value": 0.5,
        "threshold": 0.05,
        "endpoint": None,
        "requests": 40,
        "window_s": 300.0,
        "severity": "critical",
    }
    values.update(fields)
    return Alert(rule, resolved=resolved, **values)


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        yield server


@pytest.fixture
def every_log() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger, whatever the logging configuration."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    pagerduty = logging.getLogger("wsgi_observe.alerts.pagerduty")
    old_pd_level = pagerduty.level
    pagerduty.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(old_level)
    pagerduty.setLevel(old_pd_level)


def notifier(fake: FakePagerDuty, **options: Any) -> PagerDutyNotifier:
    routing_key = options.pop("routing_key", ROUTING_KEY)
    defaults: dict[str, Any] = {
        "events_url": fake.url,
        "service": "crm",
        "environment": "production",
        "host": "web-1",
        "timeout_s": 2.0,
        "budget_s": 10.0,
        "backoff_base_s": 0.01,
        "jitter": lambda: 1.0,
    }
    defaults.update(options)
    return PagerDutyNotifier(routing_key, **defaults)


def messages(
    records: list[logging.LogRecord], name: str = "wsgi_observe.alerts.pagerduty"
) -> list[str]:
    return [r.getMessage() for r in records if r.name == name]


def test_crossing_triggers_and_going_back_under_resolves_with_the_same_dedup_key(
    fake: FakePagerDuty,
) -> None:
    """A routing key given as a keyword turns PagerDuty on: trigger, then resolve, one key."""
    middleware = ObservabilityMiddleware(
        app,
        store=MetricsStore(),
        access_log=False,
        service_name="crm",
        pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=fake.url,
    )
    monitor = AlertMonitor(middleware, [error_rate_alert()])
    try:
        send(middleware, "/api/fail", 10)
        send(middleware, "/api/ok", 10)
        assert len(monitor.check()) == 1
        (trigger,) = fake.wait_for(1, DEADLINE_S)
        send(middleware, "/api/ok", 500)
        assert monitor.check() == []
        trigger, resolve = fake.wait_for(2, DEADLINE_S)
    finally:
        monitor.stop()
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "wsgi_observe/crm/development/Error rate spike"
    payload = trigger["payload"]
    assert payload["summary"] == (
        "Alert: Error rate spike: application.requests.error_rate = 0.5 exceeds 0.05"
    )
    assert payload["source"].startswith("crm on ")
    assert payload["severity"] == "critical"
    details = payload["custom_details"]
    assert (details["metric"], details["value"], details["threshold"]) == (
        "application.requests.error_rate",
        0.5,
        0.05,
    )
    assert details["requests"] == 20
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }
    assert fake.incidents == {}  # the stand-in closed the incident it opened


def test_per_endpoint_alerts_have_a_dedup_key_each(fake: FakePagerDuty) -> None:
    """Two endpoints failing are two incidents, each with its endpoint in its key."""
    pagerduty = notifier(fake)
    pagerduty.notify(alert(endpoint="/api/a", metric="error_rate"))
    pagerduty.notify(alert(endpoint="/api/b", metric="error_rate"))
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert sorted(fake.incidents) == [
        "wsgi_observe/crm/production/Error rate spike on /api/a",
        "wsgi_observe/crm/production/Error rate spike on /api/b",
    ]
    assert {e["payload"]["component"] for e in fake.events()} == {"/api/a", "/api/b"}


def test_a_very_long_dedup_key_is_shortened_but_stays_distinct(fake: FakePagerDuty) -> None:
    """Endpoint names of any length still give keys PagerDuty accepts (255 at most)."""
    pagerduty = notifier(fake)
    first = pagerduty.dedup_key("Error rate spike", "/x" * 200)
    second = pagerduty.dedup_key("Error rate spike", "/x" * 199 + "/y")
    assert len(first) <= 255 and len(second) <= 255 and first != second
    assert pagerduty.dedup_key("Error rate spike", "/x" * 200) == first  # stable
    pagerduty.close()


def test_rate_limited_event_is_retried_with_backoff(
    fake: FakePagerDuty, every_log: list[logging.LogRecord]
) -> None:
    """429 answers are retried after a growing wait (or Retry-After), then delivered once."""
    fake.answer_with(429, times=2)
    fake.answer_with(429, times=1, retry_after="0.05")
    pagerduty = notifier(fake)
    pagerduty.notify(alert())
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert fake.statuses() == [429, 429, 429, 202]
    retries = [m for m in messages(every_log) if "retry" in m]
    assert [m.split("; ")[-1] for m in retries] == [
        "retry 1 in 0.01s",
        "retry 2 in 0.02s",
        "retry 3 in 0.05s",  # the stand-in's Retry-After
    ]
    assert "HTTP 429 (Rate limit exceeded)" in retries[0]


def test_server_errors_are_retried_until_delivered(fake: FakePagerDuty) -> None:
    """5xx answers are retried; the event arrives once."""
    fake.answer_with(500, times=1)
    fake.answer_with(503, times=2)
    pagerduty = notifier(fake)
    pagerduty.notify(alert())
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert fake.statuses() == [500, 503, 503, 202]
    assert len(fake.events()) == 1


def test_server_errors_without_end_give_up_inside_the_budget(
    fake: FakePagerDuty, every_log: list[logging.LogRecord]
) -> None:
    """Past the time budget the event is given up with one warning, and later ones still go."""
    fake.answer_with(503, times=400)
    pagerduty = notifier(fake, budget_s=0.3, backoff_base_s=0.02)
    pagerduty.notify(alert())
    assert pagerduty.flush(DEADLINE_S)
    warnings = [r for r in every_log if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        warnings[0]
        .getMessage()
        .startswith(
            "PagerDuty trigger of 'Error rate spike' not delivered: HTTP 503 (Internal error); "
            "gave up after "
        )
    )
    attempts = len(fake.statuses())
    assert 2 <= attempts < 400
    with fake._lock:
        fake._faults.clear()
    pagerduty.notify(alert(resolved=True))
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert [e["event_action"] for e in fake.events()] == ["resolve"]


def test_an_invalid_event_is_not_retried(
    fake: FakePagerDuty, every_log: list[logging.LogRecord]
) -> None:
    """A 400 from PagerDuty is logged with its reasons and not sent again."""
    pagerduty = notifier(fake, routing_key="not-a-key")
    pagerduty.notify(alert())
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert fake.statuses() == [400]
    assert messages(every_log) == [
        "PagerDuty refused the trigger of 'Error rate spike': HTTP 400 "
        "(Event object is invalid; 'routing_key' is invalid)"
    ]


def test_a_hung_endpoint_is_bounded_and_does_not_block_the_caller(
    fake: FakePagerDuty, every_log: list[logging.LogRecord]
) -> None:
    """notify() returns while PagerDuty does not answer; each attempt times out, the event
    is given up inside its budget, and the next event is delivered."""
    fake.hang(times=50)
    pagerduty = notifier(fake, timeout_s=0.2, budget_s=0.6)
    pagerduty.notify(alert())
    wait_until(lambda: fake.received, DEADLINE_S)
    pagerduty.notify(alert(resolved=True))  # returns though the first is still unanswered
    assert fake.received[0].status == 0
    assert pagerduty.flush(DEADLINE_S)
    gave_up = [m for m in messages(every_log) if "not delivered" in m]
    assert len(gave_up) == 2
    assert "Read timed out" in gave_up[0]
    with fake._lock:
        fake._hangs = 0
    pagerduty.notify(alert())
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert [e["event_action"] for e in fake.events()] == ["trigger"]


def test_a_full_queue_drops_new_events_with_a_warning(
    fake: FakePagerDuty, every_log: list[logging.LogRecord]
) -> None:
    """Events waiting for a stuck endpoint are bounded: past max_queue they are dropped."""
    fake.hang(times=1)
    pagerduty = notifier(fake, timeout_s=5.0, budget_s=5.0, max_queue=1)
    pagerduty.notify(alert("first"))
    wait_until(lambda: fake.received, DEADLINE_S)  # the sender is stuck on "first"
    pagerduty.notify(alert("second"))  # waits in the queue
    pagerduty.notify(alert("third"))  # no room
    assert "PagerDuty queue full (1 events): trigger of 'third' dropped" in messages(every_log)
    fake.release()
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    # "first" got a 503 when released, was retried and delivered; "third" never was.
    assert [e["payload"]["class"] for e in fake.events()] == ["first", "second"]


def test_a_resolve_never_overtakes_its_trigger(fake: FakePagerDuty) -> None:
    """Events go out in order, even when the trigger needs retries."""
    fake.answer_with(429, times=2)
    pagerduty = notifier(fake)
    pagerduty.notify(alert())
    pagerduty.notify(alert(resolved=True))
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert [e["event_action"] for e in fake.events()] == ["trigger", "resolve"]


class _EchoingFake(FakePagerDuty):
    """A stand-in that quotes the routing key back in every error (PagerDuty does not)."""

    def _answer(
        self, handler: Any, record: Any, status: int, answer: dict[str, Any], retry_after: Any
    ) -> None:
        if status != 202:
            answer = {**answer, "message": f"bad key {ROUTING_KEY}?"}
        super()._answer(handler, record, status, answer, retry_after)


def test_the_routing_key_never_appears_in_logs_errors_or_repr(
    every_log: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through successes, 429s, 5xx, refusals and timeouts, the key shows up nowhere."""
    with _EchoingFake() as echoing:
        echoing.answer_with(429, times=1)
        echoing.answer_with(503, times=1)
        pagerduty = notifier(echoing, timeout_s=0.2, budget_s=1.0)
        pagerduty.notify(alert())  # a 429, a 503, then accepted
        assert pagerduty.flush(DEADLINE_S)
        echoing.answer_with(400, times=1)
        pagerduty.notify(alert("Other rule"))  # refused
        assert pagerduty.flush(DEADLINE_S)
        echoing.hang(times=20)
        pagerduty.notify(alert(resolved=True))  # timed out, given up
        assert pagerduty.flush(DEADLINE_S)
        pagerduty.close()
        assert echoing.statuses()[:4] == [429, 503, 202, 400]
        assert len(echoing.events()) == 1
    texts = [r.getMessage() for r in every_log]
    texts += [repr(getattr(r, name, "")) for r in every_log for name in vars(r)]
    assert any("bad key [redacted]?" in text for text in texts)  # the echo was scrubbed
    assert not [text for text in texts if ROUTING_KEY in text]
    assert ROUTING_KEY not in repr(pagerduty) and ROUTING_KEY not in str(pagerduty)
    with pytest.raises(TypeError):
        pickle.dumps(pagerduty)
    assert ROUTING_KEY not in repr(Config(pagerduty_routing_key=ROUTING_KEY))
    bad = ROUTING_KEY[:-1] + "!"
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", bad)
    with pytest.raises(ConfigError) as error:
        Config.from_env()
    assert str(error.value) == (
        "PAGERDUTY_ROUTING_KEY: expected a PagerDuty Events API v2 integration key "
        "(32 letters and digits)"
    )
    assert bad not in str(error.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param(
            "PAGERDUTY_EVENTS_URL",
            "ftp://events.example.com/v2/enqueue",
            "PAGERDUTY_EVENTS_URL='ftp://events.example.com/v2/enqueue': "
            "expected an http(s):// URL",
            id="events-url-scheme",
        ),
        pytest.param(
            "PAGERDUTY_EVENTS_URL",
            "https://user:pw@events.example.com/v2/enqueue",
            "PAGERDUTY_EVENTS_URL: must not contain credentials (user:password@)",
            id="events-url-credentials",
        ),
        pytest.param(
            "PAGERDUTY_ROUTING_KEY",
            "short",
            "PAGERDUTY_ROUTING_KEY: expected a PagerDuty Events API v2 integration key "
            "(32 letters and digits)",
            id="routing-key-short",
        ),
    ],
)
def test_bad_pagerduty_settings_fail_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """A malformed PagerDuty variable is refused at start-up with one line."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        Config.from_env()
    assert str(error.value) == message


def test_the_routing_key_from_the_environment_turns_pagerduty_on(
    monkeypatch: pytest.MonkeyPatch, fake: FakePagerDuty
) -> None:
    """PAGERDUTY_ROUTING_KEY and PAGERDUTY_EVENTS_URL, read by Config, turn PagerDuty on."""
    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    assert not [n for n in AlertMonitor(middleware).notifiers if isinstance(n, PagerDutyNotifier)]
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("PAGERDUTY_EVENTS_URL", fake.url)
    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    monitor = AlertMonitor(middleware)
    (pagerduty,) = [n for n in monitor.notifiers if isinstance(n, PagerDutyNotifier)]
    assert pagerduty.events_url == fake.url
    monitor.stop()


def test_a_failing_notifier_does_not_silence_the_others(
    fake: FakePagerDuty, _raise_guarded_errors: list[BaseException]
) -> None:
    """A notifier that raises is reported by the guard; PagerDuty still gets the alert."""

    class Broken:
        def notify(self, alert: Alert) -> None:
            raise RuntimeError("broken notifier")

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    pagerduty = notifier(fake)
    monitor = AlertMonitor(middleware, [error_rate_alert()], notifiers=[Broken(), pagerduty])
    send(middleware, "/api/fail", 25)
    assert len(monitor.check()) == 1
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert len(fake.events()) == 1
    assert [str(e) for e in _raise_guarded_errors] == ["broken notifier"]
    _raise_guarded_errors.clear()


@pytest.mark.slow
def test_gunicorn_workers_page_once_per_incident(fake: FakePagerDuty, tmp_path: Any) -> None:
    """Under gunicorn with 2 workers each running a monitor, an incident pages once and
    resolves once."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    server = Gunicorn(
        "tests.apps.pd_app:app",
        "-w",
        "2",
        env={
            "WSGI_OBSERVE_STATE_DIR": str(state),
            "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "PAGERDUTY_EVENTS_URL": fake.url,
        },
    )
    try:
        server.wait_ready()
        for _ in range(20):
            assert server.get("/api/boom")[0] == 500
        fake.wait_for(1, DEADLINE_S)
        for _ in range(600):  # dilute the errors under 5%: the alert ends
            assert server.get("/api/ok")[0] == 200
            if len(fake.events()) >= 2:
                break
        trigger, resolve = fake.wait_for(2, DEADLINE_S)
    finally:
        output = server.output()
        server.stop()
    assert [e["event_action"] for e in fake.events()] == ["trigger", "resolve"]
    assert (
        trigger["dedup_key"]
        == resolve["dedup_key"]
        == ("wsgi_observe/pd-test/development/Error rate spike")
    )
    assert "Alert: Error rate spike" in output  # the workers' log lines are there
    assert ROUTING_KEY not in output


def test_a_forked_child_sends_with_a_queue_and_thread_of_its_own(fake: FakePagerDuty) -> None:
    """A notifier made before a fork works in the child: the parent's busy sender, queue
    and lock stay the parent's."""
    fake.hang(times=1)
    pagerduty = notifier(fake, timeout_s=5.0, budget_s=5.0)
    pagerduty.notify(alert("parent"))
    wait_until(lambda: fake.received, DEADLINE_S)  # the parent's sender is stuck
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            if pagerduty.flush(0.5):  # nothing of the child's is queued or in flight
                pagerduty.notify(alert("child"))
                code = 0 if pagerduty.flush(DEADLINE_S) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fake.release()
    assert pagerduty.flush(DEADLINE_S)
    pagerduty.close()
    assert sorted(e["payload"]["class"] for e in fake.events()) == ["child", "parent"]


def test_a_stopped_monitor_pages_again_when_used_again(fake: FakePagerDuty) -> None:
    """stop() closes the notifier the monitor made; checking afterwards makes a new one."""
    middleware = ObservabilityMiddleware(
        app,
        store=MetricsStore(),
        access_log=False,
        pagerduty_routing_key=ROUTING_KEY,
        pagerduty_events_url=fake.url,
    )
    monitor = AlertMonitor(middleware, [error_rate_alert()])
    monitor.stop()
    send(middleware, "/api/fail", 25)
    assert len(monitor.check()) == 1
    fake.wait_for(1, DEADLINE_S)
    monitor.stop()
    assert [e["event_action"] for e in fake.events()] == ["trigger"]
