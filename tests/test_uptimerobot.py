"""UptimeRobotClient against a local fake of the UptimeRobot API v2."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
from conftest import free_port
from fake_uptimerobot import VALID_API_KEY, FakeUptimeRobot

from wsgi_observe.uptimerobot import _wire as client_module
from wsgi_observe.uptimerobot.client_v2 import (
    HTTP_METHODS,
    UptimeRobotClient,
    UptimeRobotError,
    format_alert_contacts,
)


class FakeClock:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeUptimeRobot]:
    with FakeUptimeRobot() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(fake: FakeUptimeRobot, clock: FakeClock) -> Iterator[UptimeRobotClient]:
    with UptimeRobotClient(
        VALID_API_KEY,
        base_url=fake.url,
        timeout=5.0,
        max_retries=4,
        max_total_time=120.0,
        backoff_base=1.0,
        sleep=clock.sleep,
        clock=clock,
        jitter=lambda: 1.0,
    ) as c:
        yield c


def make_client(fake: FakeUptimeRobot, clock: FakeClock, **kwargs: object) -> UptimeRobotClient:
    options: dict[str, object] = {
        "base_url": fake.url,
        "timeout": 5.0,
        "sleep": clock.sleep,
        "clock": clock,
        "jitter": lambda: 1.0,
    }
    options.update(kwargs)
    return UptimeRobotClient(VALID_API_KEY, **options)  # type: ignore[arg-type]


def test_get_monitors_follows_paging_and_returns_every_monitor(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """getMonitors is paged by 50 until pagination.total, so all 120 monitors come back."""
    for i in range(120):
        fake.seed_monitor(f"site {i}", f"https://site{i}.example.com/")
    monitors = client.get_monitors()
    assert len(monitors) == 120
    assert len({m["id"] for m in monitors}) == 120
    pages = [(r.params["offset"], r.params["limit"]) for r in fake.calls("getMonitors")]
    assert pages == [("0", "50"), ("50", "50"), ("100", "50")]


def test_get_monitors_with_no_monitors_makes_one_call(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """An empty account is one request and an empty list."""
    assert client.get_monitors() == []
    assert len(fake.calls("getMonitors")) == 1


def test_requests_are_form_encoded_posts_with_api_key_and_json_format(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """Every call is a POST to /v2/<method> with a form body holding api_key and format=json."""
    client.get_monitors(search="api", alert_contacts=True)
    (request,) = fake.calls("getMonitors")
    assert request.http_method == "POST"
    assert request.content_type == "application/x-www-form-urlencoded"
    body = dict(parse_qsl(request.body.decode()))
    assert body["api_key"] == VALID_API_KEY
    assert body["format"] == "json"
    assert body["search"] == "api"
    assert body["alert_contacts"] == "1"


@pytest.mark.parametrize(
    ("method", "code"),
    [pytest.param(name, code, id=name.lower()) for name, code in HTTP_METHODS.items()],
)
def test_create_monitor_sends_http_type_and_the_api_method_code(
    fake: FakeUptimeRobot, client: UptimeRobotClient, method: str, code: int
) -> None:
    """create_monitor makes a type-1 HTTP(s) monitor with the API's http_method code."""
    created = client.create_monitor("API", "https://api.example.com/health", 600, method)
    (request,) = fake.calls("newMonitor")
    assert request.params["type"] == "1"
    assert request.params["http_method"] == str(code)
    assert request.params["interval"] == "600"
    stored = fake.monitors[created["id"]]
    assert (stored["friendly_name"], stored["url"], stored["http_method"]) == (
        "API",
        "https://api.example.com/health",
        code,
    )


def test_create_monitor_rejects_an_unknown_http_method_before_any_request(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """A method the API has no code for is a ValueError, and nothing is sent."""
    with pytest.raises(ValueError, match="TRACE"):
        client.create_monitor("API", "https://api.example.com/", http_method="TRACE")
    assert fake.requests == []


def test_update_monitor_changes_only_the_given_fields(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """update_monitor sends editMonitor with the id and the changed fields."""
    monitor_id = fake.seed_monitor("API", "https://api.example.com/health", interval=300)
    client.update_monitor(monitor_id, interval=600, http_method="HEAD")
    (request,) = fake.calls("editMonitor")
    assert request.params["id"] == str(monitor_id)
    assert "url" not in request.params
    assert fake.monitors[monitor_id]["interval"] == 600
    assert fake.monitors[monitor_id]["http_method"] == 1


def test_delete_monitor_removes_it(fake: FakeUptimeRobot, client: UptimeRobotClient) -> None:
    """delete_monitor removes the monitor and returns its id."""
    monitor_id = fake.seed_monitor("API", "https://api.example.com/health")
    assert client.delete_monitor(monitor_id)["id"] == monitor_id
    assert monitor_id not in fake.monitors


def test_deleting_a_missing_monitor_raises_the_api_message(client: UptimeRobotClient) -> None:
    """An API refusal is not retried and carries the API's message and type."""
    with pytest.raises(UptimeRobotError) as info:
        client.delete_monitor(12345)
    assert info.value.message == "Monitor not found."
    assert info.value.error_type == "not_found"
    assert info.value.attempts == 1


def test_alert_contacts_are_created_and_listed_with_paging(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """new_alert_contact creates a contact; get_alert_contacts pages through all of them."""
    for i in range(60):
        fake.seed_alert_contact(2, f"person{i}@example.com")
    created = client.new_alert_contact("webhook", "https://hooks.example.com/x", "ops hook")
    contacts = client.get_alert_contacts()
    assert len(contacts) == 61
    assert any(c["id"] == created["id"] and c["type"] == 5 for c in contacts)
    assert [r.params["offset"] for r in fake.calls("getAlertContacts")] == ["0", "50"]


def test_alert_contacts_are_formatted_as_id_threshold_recurrence() -> None:
    """API v2 wants alert_contacts as id_threshold_recurrence joined by dashes."""
    assert format_alert_contacts([("0001001", 5, 0), (42, 10, 30)]) == "0001001_5_0-42_10_30"


def test_create_monitor_accepts_alert_contact_triples(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """alert_contacts given as triples reach the API in its string format."""
    contact = fake.seed_alert_contact(2, "ops@example.com")
    client.create_monitor("API", "https://api.example.com/", alert_contacts=[(contact, 5, 0)])
    assert fake.calls("newMonitor")[0].params["alert_contacts"] == f"{contact}_5_0"


def test_rate_limit_is_retried_honouring_retry_after(
    fake: FakeUptimeRobot, client: UptimeRobotClient, clock: FakeClock
) -> None:
    """Two 429 answers are waited out for exactly Retry-After seconds, then the call succeeds."""
    fake.seed_monitor("API", "https://api.example.com/")
    fake.rate_limit(2, retry_after="7")
    assert len(client.get_monitors()) == 1
    assert clock.sleeps == [7.0, 7.0]
    assert len(fake.calls("getMonitors")) == 3


def test_retry_after_as_an_http_date_is_honoured(
    fake: FakeUptimeRobot,
    client: UptimeRobotClient,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Retry-After given as an HTTP date is turned into the seconds left until then."""
    now = 1_800_000_000.0  # the wall clock, pinned for the client
    monkeypatch.setattr(client_module, "time", SimpleNamespace(time=lambda: now))
    fake.rate_limit(1, retry_after=email.utils.formatdate(now + 30, usegmt=True))
    client.get_monitors()
    assert clock.sleeps == [30.0]


def test_server_errors_are_retried_with_exponential_backoff(
    fake: FakeUptimeRobot, client: UptimeRobotClient, clock: FakeClock
) -> None:
    """Three 503 answers are retried after 1, 2 and 4 seconds (jitter pinned), then succeed."""
    fake.server_errors(3, status=503)
    assert client.get_monitors() == []
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_backoff_is_jittered_between_half_and_full_delay(
    fake: FakeUptimeRobot, clock: FakeClock
) -> None:
    """The random factor scales each wait into [0.5, 1.0] of the exponential delay."""
    fake.server_errors(2)
    with make_client(fake, clock, backoff_base=2.0, jitter=lambda: 0.0) as c:
        c.get_monitors()
    assert clock.sleeps == [1.0, 2.0]


def test_intermittent_5xx_while_paging_still_returns_every_monitor(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """With every second request failing with an HTML 502, paging still completes."""
    for i in range(120):
        fake.seed_monitor(f"site {i}", f"https://site{i}.example.com/")
    fake.intermittent_errors(every=2, status=502)
    assert len(client.get_monitors()) == 120


def test_dropped_connections_are_retried_for_reads(
    fake: FakeUptimeRobot, client: UptimeRobotClient, clock: FakeClock
) -> None:
    """A connection closed without an answer is retried for a read."""
    fake.drop_connections(2)
    assert client.get_monitors() == []
    assert len(clock.sleeps) == 2


def test_create_is_not_repeated_when_the_request_may_have_been_applied(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """A dropped connection after newMonitor was sent is reported, not retried: no duplicate."""
    fake.drop_connections(1)
    with pytest.raises(UptimeRobotError, match="may have been applied"):
        client.create_monitor("API", "https://api.example.com/")
    assert len(fake.calls("newMonitor")) == 1


def test_create_is_retried_after_a_rate_limit(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """A 429 means the API did nothing, so even a create is safely retried."""
    fake.rate_limit(1, retry_after="1")
    client.create_monitor("API", "https://api.example.com/")
    assert len(fake.monitors) == 1


def test_gives_up_after_max_retries_with_the_api_message(
    fake: FakeUptimeRobot, clock: FakeClock
) -> None:
    """When 5xx never stops, max_retries + 1 requests are made, then the API's message is raised."""
    fake.server_errors(1000, status=503)
    with make_client(fake, clock, max_retries=3, backoff_base=0.5) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
    assert len(fake.requests) == 4
    assert info.value.message == "Service temporarily unavailable."
    assert info.value.status == 503
    assert info.value.attempts == 4
    assert "Service temporarily unavailable." in str(info.value)
    assert "gave up after 4 attempts" in str(info.value)


def test_rate_limit_that_never_ends_is_reported_as_such(
    fake: FakeUptimeRobot, clock: FakeClock
) -> None:
    """An endless 429 ends in an UptimeRobotError with status 429 and the API's message."""
    fake.rate_limit(1000, retry_after="2")
    with make_client(fake, clock, max_retries=2) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
    assert info.value.status == 429
    assert info.value.message == "Too many requests."


def test_total_time_is_bounded_whatever_max_retries_says(
    fake: FakeUptimeRobot, clock: FakeClock
) -> None:
    """With many retries allowed, no wait is started that would end after max_total_time."""
    fake.server_errors(1000)
    with make_client(fake, clock, max_retries=1000, max_total_time=20.0, backoff_base=1.0) as c:
        with pytest.raises(UptimeRobotError, match="time budget"):
            c.get_monitors()
    assert sum(clock.sleeps) < 20.0
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]


def test_retry_after_longer_than_the_budget_gives_up_without_waiting(
    fake: FakeUptimeRobot, clock: FakeClock
) -> None:
    """A Retry-After beyond max_total_time is not slept through."""
    fake.rate_limit(1, retry_after="3600")
    with make_client(fake, clock, max_total_time=30.0) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
    assert clock.sleeps == []
    assert info.value.status == 429


def test_real_waits_are_short_when_backoff_is_small(fake: FakeUptimeRobot) -> None:
    """With the real clock and sleep, a tiny backoff retries a 503 and succeeds."""
    fake.server_errors(2)
    with UptimeRobotClient(VALID_API_KEY, base_url=fake.url, backoff_base=0.001) as c:
        assert c.get_monitors() == []
    assert len(fake.requests) == 3


def test_connection_refused_is_retried_then_reported(clock: FakeClock) -> None:
    """A port nobody listens on is retried, then reported as a connection failure."""
    base = f"http://127.0.0.1:{free_port()}/v2"
    with UptimeRobotClient(
        VALID_API_KEY, base_url=base, max_retries=2, sleep=clock.sleep, clock=clock
    ) as c:
        with pytest.raises(UptimeRobotError, match="cannot connect") as info:
            c.get_monitors()
    assert info.value.status is None
    assert len(clock.sleeps) == 2


def test_bad_parameter_is_not_retried_and_names_the_parameter(
    fake: FakeUptimeRobot, client: UptimeRobotClient, clock: FakeClock
) -> None:
    """An invalid interval is refused once, with the API's type and parameter name."""
    with pytest.raises(UptimeRobotError) as info:
        client.create_monitor("API", "https://api.example.com/", interval=10)
    assert info.value.error_type == "invalid_parameter"
    assert info.value.parameter_name == "interval"
    assert len(fake.requests) == 1
    assert clock.sleeps == []


def test_invalid_api_key_is_reported_with_the_api_message(fake: FakeUptimeRobot) -> None:
    """A wrong key gives the API's 'api_key is invalid.' without retrying."""
    with UptimeRobotClient("u0000-wrong-test-key", base_url=fake.url) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
    assert info.value.message == "api_key is invalid."
    assert info.value.parameter_name == "api_key"
    assert len(fake.requests) == 1


def test_api_key_never_appears_in_errors_logs_or_output(
    fake: FakeUptimeRobot,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Even when the API echoes the key, it is absent from str, repr, args, logs and output."""
    key = "u0000-leaky-test-key-xyz"
    fake.echo_key_in_errors = True
    fake.server_errors(2)
    caplog.set_level(logging.DEBUG, logger="wsgi_observe")
    with UptimeRobotClient(key, base_url=fake.url, sleep=clock.sleep, clock=clock) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
        shown = repr(c) + str(c)
    exc = info.value
    texts = [str(exc), repr(exc), exc.message, *map(str, exc.args), shown, caplog.text]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert caplog.records, "retries should have been logged"
    assert "is invalid" in exc.message
    for text in texts:
        assert key not in text
        assert "leaky" not in text


def test_repr_masks_the_api_key(fake: FakeUptimeRobot) -> None:
    """repr() shows the base URL and a masked key only."""
    with UptimeRobotClient(VALID_API_KEY, base_url=fake.url) as c:
        text = repr(c)
    assert VALID_API_KEY not in text
    assert "redacted" in text
    assert fake.url in text


def test_client_refuses_to_be_pickled(fake: FakeUptimeRobot) -> None:
    """Pickling would copy the key elsewhere, so it is refused."""
    import pickle

    with UptimeRobotClient(VALID_API_KEY, base_url=fake.url) as c:
        with pytest.raises(TypeError):
            pickle.dumps(c)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"api_key": ""}, id="empty-key"),
        pytest.param({"base_url": "ftp://example.com"}, id="not-http"),
        pytest.param({"timeout": 0}, id="zero-timeout"),
        pytest.param({"max_retries": -1}, id="negative-retries"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    """Bad constructor arguments raise ValueError without contacting anything."""
    options: dict[str, object] = {"api_key": VALID_API_KEY, **kwargs}
    with pytest.raises(ValueError):
        UptimeRobotClient(**options)  # type: ignore[arg-type]


def test_create_is_not_repeated_after_a_server_error(
    fake: FakeUptimeRobot, client: UptimeRobotClient, clock: FakeClock
) -> None:
    """A 5xx answer to newMonitor may hide a monitor that was made: reported, not repeated."""
    fake.server_errors(1, status=502)
    with pytest.raises(UptimeRobotError, match="may have been applied") as info:
        client.create_monitor("API", "https://api.example.com/")
    assert info.value.status == 502
    assert len(fake.calls("newMonitor")) == 1
    assert clock.sleeps == []


def test_v2_client_is_the_top_level_uptimerobot_client() -> None:
    """wsgi_observe.UptimeRobotClient is still the API v2 client the guide's code uses."""
    import wsgi_observe
    from wsgi_observe.uptimerobot import UptimeRobotV2Client

    assert wsgi_observe.UptimeRobotClient is UptimeRobotClient is UptimeRobotV2Client
    assert wsgi_observe.UptimeRobotError is UptimeRobotError


def test_guide_calls_work_with_keywords(fake: FakeUptimeRobot, client: UptimeRobotClient) -> None:
    """The guide's create_monitor(friendly_name=, url=, interval=), update and delete work."""
    created = client.create_monitor(
        friendly_name="My API", url="https://api.example.com/health", interval=300
    )
    client.update_monitor(created["id"], interval=600)
    assert [m["interval"] for m in client.get_monitors()] == [600]
    client.delete_monitor(created["id"])
    assert client.get_monitors() == []
