"""UptimeRobotV3Client against a local fake of the UptimeRobot API v3."""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Iterator

import pytest
from fake_uptimerobot_v3 import VALID_API_KEY, FakeUptimeRobotV3

from wsgi_observe.uptimerobot import UptimeRobotError, UptimeRobotV3Client
from wsgi_observe.uptimerobot import schema_v3 as v3


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
def fake() -> Iterator[FakeUptimeRobotV3]:
    with FakeUptimeRobotV3() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(fake: FakeUptimeRobotV3, clock: FakeClock, **kwargs: object) -> UptimeRobotV3Client:
    options: dict[str, object] = {
        "base_url": fake.url,
        "timeout": 5.0,
        "max_total_time": 120.0,
        "backoff_base": 1.0,
        "sleep": clock.sleep,
        "clock": clock,
        "jitter": lambda: 1.0,
    }
    options.update(kwargs)
    return UptimeRobotV3Client(VALID_API_KEY, **options)  # type: ignore[arg-type]


@pytest.fixture
def client(fake: FakeUptimeRobotV3, clock: FakeClock) -> Iterator[UptimeRobotV3Client]:
    with make_client(fake, clock) as c:
        yield c


# Paging --------------------------------------------------------------------------------------


def test_get_monitors_follows_the_cursor_to_the_last_page(
    fake: FakeUptimeRobotV3, clock: FakeClock
) -> None:
    """Monitors are read page by page, each cursor the last id of the page before."""
    ids = [fake.seed_monitor(f"site {i}", f"https://site{i}.example.com/") for i in range(7)]
    with make_client(fake, clock, page_size=3) as c:
        monitors = c.get_monitors()
    assert [m["id"] for m in monitors] == ids
    pages = [(r.query.get("cursor"), r.query["limit"]) for r in fake.calls("GET", "/v3/monitors")]
    assert pages == [(None, "3"), (str(ids[2]), "3"), (str(ids[5]), "3")]


def test_get_monitors_asks_for_the_largest_page_by_default(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """450 monitors come back in three requests of up to 200 (the contract's maximum)."""
    for i in range(450):
        fake.seed_monitor(f"site {i}", f"https://site{i}.example.com/")
    assert len({m["id"] for m in client.get_monitors()}) == 450
    assert [r.query["limit"] for r in fake.calls("GET", "/v3/monitors")] == ["200"] * 3


def test_next_link_to_another_host_never_receives_the_key(
    fake: FakeUptimeRobotV3, clock: FakeClock
) -> None:
    """Only the cursor is taken from nextLink: every page is asked of our own API root."""
    for i in range(5):
        fake.seed_monitor(f"site {i}", f"https://site{i}.example.com/")
    fake.next_link_host = "collector.invalid"
    with make_client(fake, clock, page_size=2) as c:
        assert len(c.get_monitors()) == 5
    assert len(fake.calls("GET", "/v3/monitors")) == 3  # all of them reached the fake


def test_filters_are_sent_as_query_parameters(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """get_monitors(name=..., tags=[...]) becomes GET /monitors?name=...&tags=a,b."""
    client.get_monitors(name="CRM", tags=["prod", "eu"])
    (request,) = fake.calls("GET", "/v3/monitors")
    assert (request.query["name"], request.query["tags"]) == ("CRM", "prod,eu")


def test_alert_contacts_and_integrations_are_paged_too(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """Personal contacts and integrations are both read to the last page (50 per page)."""
    for i in range(60):
        fake.seed_alert_contact("Email", f"person{i}@example.com")
    for i in range(51):
        fake.seed_integration("Webhook", f"https://hooks.example.com/{i}")
    assert len(client.get_alert_contacts()) == 60
    assert len(client.get_integrations()) == 51
    assert len(fake.calls("GET", "/v3/alert-contacts")) == 2


# The wire ------------------------------------------------------------------------------------


def test_requests_carry_a_bearer_key_and_json(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """The key goes in Authorization: Bearer, bodies are JSON, never the key in the URL."""
    client.create_monitor("API", "https://api.example.com/health", 600, "HEAD")
    (request,) = fake.calls("POST", "/v3/monitors")
    assert request.headers["authorization"] == f"Bearer {VALID_API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "type": "HTTP",
        "friendlyName": "API",
        "url": "https://api.example.com/health",
        "interval": 600,
        "timeout": v3.DEFAULT_TIMEOUT_S,
        "httpMethodType": "HEAD",
    }
    assert all(VALID_API_KEY not in r.path + str(r.query) for r in fake.requests)


def test_keyword_monitor_uses_the_chosen_enum_values(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A keyword monitor alerts when the keyword is missing, case sensitive (sent as 0)."""
    created = client.create_monitor(
        "Ready", "https://a.example.com/health/ready", keyword="healthy"
    )
    request = fake.calls("POST", "/v3/monitors")[0]
    assert request.body["type"] == "KEYWORD"
    assert request.body["keywordType"] == "ALERT_NOT_EXISTS"
    assert request.body["keywordValue"] == "healthy"
    assert request.body["keywordCaseType"] == 0
    assert fake.monitors[created["id"]]["keywordType"] == "ALERT_NOT_EXISTS"


def test_update_and_delete_a_monitor(fake: FakeUptimeRobotV3, client: UptimeRobotV3Client) -> None:
    """The guide's calls: update_monitor(id, interval=600) PATCHes, delete_monitor DELETEs."""
    created = client.create_monitor(
        friendly_name="My API", url="https://a.example.com/", interval=300
    )
    client.update_monitor(created["id"], interval=600, http_method="head")
    (patch,) = fake.calls("PATCH", f"/v3/monitors/{created['id']}")
    assert patch.body == {"interval": 600, "httpMethodType": "HEAD"}
    assert client.get_monitor(created["id"])["interval"] == 600
    assert client.delete_monitor(created["id"]) == {"id": created["id"]}
    assert fake.monitors == {}


def test_alert_contacts_are_sent_as_assigned_alert_contacts(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """(id, threshold, recurrence) triples become assignedAlertContacts objects."""
    contact = fake.seed_alert_contact("Email", "ops@example.com")
    client.create_monitor("API", "https://a.example.com/", alert_contacts=[(str(contact), 5, 0)])
    body = fake.calls("POST", "/v3/monitors")[0].body
    assert body["assignedAlertContacts"] == [
        {"alertContactId": contact, "threshold": 5, "recurrence": 0}
    ]


def test_new_alert_contact_makes_emails_and_webhook_integrations(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """E-mail goes to /alert-contacts, a webhook to /integrations; SMS is a ValueError."""
    email = client.new_alert_contact("email", "ops@example.com", "CRM - email")
    hook = client.new_alert_contact("webhook", "https://hooks.example.com/T0", "CRM - webhook")
    assert fake.alert_contacts[email["id"]]["type"] == "Email"
    assert fake.integrations[hook["id"]]["value"] == "https://hooks.example.com/T0"
    data = fake.calls("POST", "/v3/integrations")[0].body["data"]
    assert data["postValue"] == v3.WEBHOOK_POST_VALUE and data["sendAsJSON"] is True
    with pytest.raises(ValueError, match="phone"):
        client.new_alert_contact("sms", "+15551234567")
    assert len(fake.write_calls()) == 2


def test_unknown_http_method_is_refused_before_any_request(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A method API v3 does not know is a ValueError, and nothing is sent."""
    with pytest.raises(ValueError, match="TRACE"):
        client.create_monitor("API", "https://a.example.com/", http_method="TRACE")
    assert fake.requests == []


# Errors --------------------------------------------------------------------------------------


def test_a_refused_key_is_a_clear_401_without_retries(
    fake: FakeUptimeRobotV3, clock: FakeClock
) -> None:
    """HTTP 401 says the key was refused, once, with no key in the message."""
    with UptimeRobotV3Client("ur0000-wrong-test-key", base_url=fake.url, sleep=clock.sleep,
                             clock=clock) as c:  # fmt: skip
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
    assert info.value.status == 401
    assert str(info.value) == "GET /monitors: the API key was refused (HTTP 401: Unauthorized)"
    assert len(fake.requests) == 1 and clock.sleeps == []


def test_validation_errors_carry_the_api_messages(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client, clock: FakeClock
) -> None:
    """A 400 with a list of messages is raised once, the messages joined on one line."""
    with pytest.raises(UptimeRobotError) as info:
        client.create_monitor("API", "https://a.example.com/", interval=10, timeout=99)
    assert info.value.status == 400
    assert "interval must not be less than 30; timeout must not be greater than 60" in str(
        info.value
    )
    assert len(fake.requests) == 1 and clock.sleeps == []


def test_missing_monitor_is_a_404_with_the_api_code(client: UptimeRobotV3Client) -> None:
    """GET /monitors/{unknown} raises the API's message and code."""
    with pytest.raises(UptimeRobotError) as info:
        client.get_monitor(12345)
    assert (info.value.status, info.value.message, info.value.error_type) == (
        404,
        "Monitor not found",
        "000-004",
    )


# Retries -------------------------------------------------------------------------------------


def test_rate_limit_is_waited_out_for_retry_after_seconds(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client, clock: FakeClock
) -> None:
    """Two 429 answers are waited out for exactly Retry-After seconds, then the call succeeds."""
    fake.seed_monitor("API", "https://a.example.com/")
    fake.rate_limit(2, retry_after="7")
    assert len(client.get_monitors()) == 1
    assert clock.sleeps == [7.0, 7.0]


def test_rate_limit_without_retry_after_waits_for_the_reset(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client, clock: FakeClock
) -> None:
    """Without Retry-After, X-RateLimit-Reset (epoch seconds) says how long to wait."""
    fake.rate_limit(1, retry_after=None, reset_in_s=20)
    client.get_monitors()
    assert len(clock.sleeps) == 1 and 15.0 < clock.sleeps[0] <= 20.0


def test_rate_limited_create_is_retried(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A 429 means the API did nothing, so even a POST is safely repeated."""
    fake.rate_limit(1, retry_after="1")
    client.create_monitor("API", "https://a.example.com/")
    assert len(fake.monitors) == 1
    assert len(fake.calls("POST", "/v3/monitors")) == 2


def test_server_errors_are_retried_with_backoff_for_reads(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client, clock: FakeClock
) -> None:
    """Three 503 answers to a GET are retried after 1, 2 and 4 seconds (jitter pinned)."""
    fake.server_errors(3, status=503)
    assert client.get_monitors() == []
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_intermittent_html_502_while_paging_still_returns_every_monitor(
    fake: FakeUptimeRobotV3, clock: FakeClock
) -> None:
    """With every third request an HTML 502, paging completes without a lost page."""
    for i in range(9):
        fake.seed_monitor(f"site {i}", f"https://site{i}.example.com/")
    fake.intermittent_errors(every=3)
    with make_client(fake, clock, page_size=2) as c:
        assert len(c.get_monitors()) == 9


def test_a_create_that_may_have_reached_the_api_is_not_repeated(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client, clock: FakeClock
) -> None:
    """A POST answered 500 after the API made the monitor is reported, not repeated."""
    fake.apply_then_fail(1)
    with pytest.raises(UptimeRobotError, match="may have been applied") as info:
        client.create_monitor("API", "https://a.example.com/")
    assert info.value.status == 500
    assert len(fake.monitors) == 1  # made once, not twice
    assert len(fake.calls("POST", "/v3/monitors")) == 1 and clock.sleeps == []


def test_a_dropped_create_is_not_repeated_but_a_dropped_read_is(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A connection closed without an answer: a GET is retried, a POST is not."""
    fake.drop_connections(1)
    assert client.get_monitors() == []
    fake.drop_connections(1)
    with pytest.raises(UptimeRobotError, match="may have been applied"):
        client.create_monitor("API", "https://a.example.com/")
    assert len(fake.calls("POST", "/v3/monitors")) == 1


def test_a_patch_is_repeated_after_a_server_error(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A PATCH sets absolute values, so a 5xx answer is retried."""
    monitor_id = fake.seed_monitor("API", "https://a.example.com/")
    fake.server_errors(1, status=502)
    client.update_monitor(monitor_id, interval=900)
    assert fake.monitors[monitor_id]["interval"] == 900


def test_a_delete_whose_answer_was_lost_is_done_on_retry(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A DELETE carried out but answered 500 is retried; the 404 that follows means done."""
    monitor_id = fake.seed_monitor("API", "https://a.example.com/")
    fake.apply_then_fail(1)
    assert client.delete_monitor(monitor_id) == {"id": monitor_id}
    assert len(fake.calls("DELETE", f"/v3/monitors/{monitor_id}")) == 2
    assert fake.monitors == {}


def test_gives_up_after_max_retries_with_the_api_message(
    fake: FakeUptimeRobotV3, clock: FakeClock
) -> None:
    """When 5xx never stops, max_retries + 1 requests are made, then the message is raised."""
    fake.server_errors(1000, status=503)
    with make_client(fake, clock, max_retries=3) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
    assert len(fake.requests) == 4
    assert (info.value.status, info.value.attempts) == (503, 4)
    assert "Service Unavailable" in str(info.value) and "gave up after 4 attempts" in str(
        info.value
    )


def test_total_time_is_bounded_whatever_max_retries_says(
    fake: FakeUptimeRobotV3, clock: FakeClock
) -> None:
    """No wait is started that would end after max_total_time."""
    fake.server_errors(1000)
    with make_client(fake, clock, max_retries=1000, max_total_time=20.0) as c:
        with pytest.raises(UptimeRobotError, match="time budget"):
            c.get_monitors()
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]


def test_connection_refused_is_retried_then_reported(clock: FakeClock) -> None:
    """A port nobody listens on is retried (the request never left), then reported."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with UptimeRobotV3Client(VALID_API_KEY, base_url=f"http://127.0.0.1:{port}/v3", max_retries=2,
                             sleep=clock.sleep, clock=clock) as c:  # fmt: skip
        with pytest.raises(UptimeRobotError, match="cannot connect") as info:
            c.create_monitor("API", "https://a.example.com/")
    assert info.value.status is None
    assert len(clock.sleeps) == 2


# The key stays hidden ------------------------------------------------------------------------


def test_api_key_never_appears_in_errors_logs_or_repr(
    fake: FakeUptimeRobotV3, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Even when the API echoes the key, it is absent from str, repr, logs and the client."""
    key = "ur0000-leaky-test-key-xyz"
    fake.echo_key_in_errors = True
    fake.server_errors(2)
    caplog.set_level(logging.DEBUG, logger="wsgi_observe")
    with UptimeRobotV3Client(key, base_url=fake.url, sleep=clock.sleep, clock=clock) as c:
        with pytest.raises(UptimeRobotError) as info:
            c.get_monitors()
        shown = repr(c) + str(c)
    exc = info.value
    assert caplog.records, "retries should have been logged"
    assert "Unauthorized" in exc.message
    for text in (str(exc), repr(exc), exc.message, *map(str, exc.args), shown, caplog.text):
        assert key not in text
        assert "leaky" not in text


def test_client_masks_its_key_and_refuses_to_be_pickled(fake: FakeUptimeRobotV3) -> None:
    """repr() shows the root and a masked key; pickling (a copy of the key) is refused."""
    with UptimeRobotV3Client(VALID_API_KEY, base_url=fake.url) as c:
        assert VALID_API_KEY not in repr(c)
        assert "redacted" in repr(c) and fake.url in repr(c)
        with pytest.raises(TypeError):
            pickle.dumps(c)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"api_key": " "}, id="blank-key"),
        pytest.param({"api_key": "ur0000-key\r\nX-Evil: 1"}, id="header-injection"),
        pytest.param({"base_url": "ftp://example.com"}, id="not-http"),
        pytest.param({"timeout": 0}, id="zero-timeout"),
        pytest.param({"max_retries": -1}, id="negative-retries"),
        pytest.param({"page_size": 201}, id="page-too-big"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    """Bad constructor arguments raise ValueError without contacting anything."""
    options: dict[str, object] = {"api_key": VALID_API_KEY, **kwargs}
    with pytest.raises(ValueError):
        UptimeRobotV3Client(**options)  # type: ignore[arg-type]


# The mapping module --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "value", "expected"),
    [
        pytest.param(v3.monitor_type, "keyword", "KEYWORD", id="type-name"),
        pytest.param(v3.monitor_type, 2, "KEYWORD", id="type-code"),
        pytest.param(v3.http_method, None, "HEAD", id="method-default"),
        pytest.param(v3.http_method, 2, "GET", id="method-code"),
        pytest.param(v3.keyword_alerts_when, "ALERT_NOT_EXISTS", "missing", id="keyword-type"),
        pytest.param(v3.keyword_alerts_when, 1, "present", id="keyword-code"),
        pytest.param(v3.keyword_case_sensitive, 0, True, id="case-number"),
        pytest.param(v3.keyword_case_sensitive, "CaseInsensitive", False, id="case-name"),
        pytest.param(v3.contact_kind, "ProSms", "sms", id="contact-name"),
        pytest.param(v3.contact_kind, 5, "webhook", id="contact-code"),
        pytest.param(v3.contact_kind, "Slack", None, id="contact-other"),
    ],
)
def test_answers_are_read_in_either_spelling(
    function: object, value: object, expected: object
) -> None:
    """Enum values in answers are read as names or as API v2 codes (schema_v3's choice 4)."""
    assert function(value) == expected  # type: ignore[operator]
