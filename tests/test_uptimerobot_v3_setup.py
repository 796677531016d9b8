"""`uptimerobot setup` on API v3, its default: the plan exactly once, against a local fake."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fake_uptimerobot_v3 import VALID_API_KEY, FakeUptimeRobotV3

from wsgi_observe.uptimerobot import UptimeRobotV3Client, setup_monitors
from wsgi_observe.uptimerobot.command import main
from wsgi_observe.uptimerobot.plan import alert_threshold_minutes

BASE = "https://api.example.com"
PREFIX = "CRM"
# name -> (path, method, interval, keyword)
PLAN = {
    "Main Health Check": ("/health", "HEAD", 300, None),
    "Readiness Check": ("/health/ready", "GET", 300, "healthy"),
    "API Liveness": ("/health/live", "HEAD", 180, None),
    "Metrics Endpoint": ("/metrics", "GET", 600, None),
    "Main URL": ("/", "HEAD", 300, None),
}


@pytest.fixture
def fake() -> Iterator[FakeUptimeRobotV3]:
    with FakeUptimeRobotV3() as server:
        yield server


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeUptimeRobotV3) -> pytest.MonkeyPatch:
    """An environment pointing `main()` at the fake, with no API version set (v3)."""
    monkeypatch.setenv("UPTIMEROBOT_API_KEY", VALID_API_KEY)
    monkeypatch.setenv("APP_BASE_URL", BASE)
    monkeypatch.setenv("UPTIMEROBOT_API_URL", fake.url)
    monkeypatch.setenv("UPTIMEROBOT_PREFIX", PREFIX)
    return monkeypatch


@pytest.fixture
def client(fake: FakeUptimeRobotV3) -> Iterator[UptimeRobotV3Client]:
    with UptimeRobotV3Client(VALID_API_KEY, base_url=fake.url, backoff_base=0.001) as c:
        yield c


def ours(fake: FakeUptimeRobotV3) -> dict[str, dict[str, Any]]:
    """The fake's monitors carrying our prefix, by name without the prefix."""
    start = f"{PREFIX} - "
    return {
        m["friendlyName"][len(start) :]: m
        for m in fake.monitors.values()
        if m["friendlyName"].startswith(start)
    }


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v3"


def test_setup_speaks_v3_by_default_and_creates_the_plan(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no version set, setup uses API v3 and creates the five monitors with v3 fields."""
    assert main(["setup"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"UptimeRobot API v3 ({fake.url})")
    assert out.splitlines()[-1] == "5 created, 0 updated, 0 unchanged, 0 duplicate"
    created = ours(fake)
    assert set(created) == set(PLAN)
    for name, (path, method, interval, keyword) in PLAN.items():
        monitor = created[name]
        assert (monitor["url"], monitor["httpMethodType"], monitor["interval"]) == (
            BASE + path,
            method,
            interval,
        )
        assert monitor["type"] == ("KEYWORD" if keyword else "HTTP")
    ready = created["Readiness Check"]
    assert (ready["keywordType"], ready["keywordValue"], ready["keywordCaseType"]) == (
        "ALERT_NOT_EXISTS",
        "healthy",
        0,
    )
    assert all(r.headers["authorization"] == f"Bearer {VALID_API_KEY}" for r in fake.requests)
    assert VALID_API_KEY not in out


def test_second_run_changes_nothing(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run, contacts included, sends no write and reports everything unchanged."""
    env.setenv("UPTIMEROBOT_ALERT_EMAIL", "ops@example.com")
    env.setenv("UPTIMEROBOT_ALERT_WEBHOOK", "https://hooks.example.com/services/T0/B0/test")
    assert main(["setup"]) == 0
    writes = len(fake.write_calls())
    capsys.readouterr()
    assert main(["setup"]) == 0
    out = capsys.readouterr().out
    assert len(fake.write_calls()) == writes
    assert out.splitlines()[-1] == "0 created, 0 updated, 5 unchanged, 0 duplicate"
    assert (len(fake.alert_contacts), len(fake.integrations), len(fake.monitors)) == (1, 1, 5)
    assert "services/T0" not in out  # the webhook's token is not printed


def test_contacts_are_attached_after_two_failures(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch
) -> None:
    """E-mail and webhook contacts are attached to every monitor with the 2-failure threshold."""
    env.setenv("UPTIMEROBOT_ALERT_EMAIL", "ops@example.com")
    env.setenv("UPTIMEROBOT_ALERT_WEBHOOK", "https://hooks.example.com/T0")
    assert main(["setup"]) == 0
    ids = set(fake.alert_contacts) | set(fake.integrations)
    for name, (_path, _method, interval, _keyword) in PLAN.items():
        attached = ours(fake)[name]["assignedAlertContacts"]
        assert {c["alertContactId"] for c in attached} == ids
        assert {c["threshold"] for c in attached} == {alert_threshold_minutes(interval)}


def test_drift_is_updated_in_place(fake: FakeUptimeRobotV3, client: UptimeRobotV3Client) -> None:
    """Changed URL, interval and method, and an HTTP readiness monitor, are PATCHed, same ids."""
    health = fake.seed_monitor(f"{PREFIX} - Main Health Check", "https://old.example.com/health",
                               interval=60, httpMethodType="GET")  # fmt: skip
    ready = fake.seed_monitor(f"{PREFIX} - Readiness Check", BASE + "/health/ready")
    actions = {a.name: a for a in setup_monitors(client, BASE, prefix=PREFIX)}
    assert set(actions[f"{PREFIX} - Main Health Check"].changes) == {
        "url",
        "interval",
        "http_method",
    }
    assert set(actions[f"{PREFIX} - Readiness Check"].changes) == {"type"}
    (patch,) = fake.calls("PATCH", f"/v3/monitors/{health}")
    assert patch.body == {"url": BASE + "/health", "interval": 300, "httpMethodType": "HEAD"}
    monitor = fake.monitors[ready]
    assert (monitor["type"], monitor["keywordValue"], monitor["keywordType"]) == (
        "KEYWORD",
        "healthy",
        "ALERT_NOT_EXISTS",
    )
    assert fake.calls("DELETE") == []
    writes = len(fake.write_calls())
    assert {a.kind for a in setup_monitors(client, BASE, prefix=PREFIX)} == {"unchanged"}
    assert len(fake.write_calls()) == writes


def test_keyword_rule_drift_is_updated(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """A readiness monitor alerting when 'healthy' exists, case-insensitively, is set right."""
    ready = fake.seed_monitor(
        f"{PREFIX} - Readiness Check", BASE + "/health/ready", type="KEYWORD",
        keywordType="ALERT_EXISTS", keywordValue="healthy", keywordCaseType=1,
    )  # fmt: skip
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    update = next(a for a in actions if a.kind == "update")
    assert set(update.changes) == {"keyword_alert", "keyword_case"}
    assert (fake.monitors[ready]["keywordType"], fake.monitors[ready]["keywordCaseType"]) == (
        "ALERT_NOT_EXISTS",
        0,
    )


def test_nothing_outside_our_prefix_is_touched(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """Monitors of other services, even with our names under another prefix, stay as they are."""
    foreign = [
        fake.seed_monitor("Billing - Main Health Check", "https://billing.example.com/health"),
        fake.seed_monitor("Main Health Check", "https://other.example.com/health"),
        fake.seed_monitor("CRM-staging - Main URL", "https://staging.example.com/"),
    ]
    snapshot = {i: dict(fake.monitors[i]) for i in foreign}
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    assert {i: fake.monitors[i] for i in foreign} == snapshot
    touched = {r.path for r in fake.write_calls()}
    assert not touched & {f"/v3/monitors/{i}" for i in foreign}
    assert not any(a.kind == "extra" for a in actions)
    assert len(fake.monitors) == 8


def test_listing_pages_through_a_large_account_under_rate_limits(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With 450 other monitors (3 pages) and two 429s on the way, setup still finds ours."""
    for i in range(450):
        fake.seed_monitor(f"Other {i}", f"https://other{i}.example.com/")
    fake.seed_monitor(f"{PREFIX} - Main URL", BASE + "/", httpMethodType="HEAD")
    fake.rate_limit(2, retry_after="0")
    assert main(["setup"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1] == "4 created, 0 updated, 1 unchanged, 0 duplicate"
    )
    assert len(fake.calls("GET", "/v3/monitors")) == 5  # 2 rate-limited + 3 pages
    assert len(fake.monitors) == 455


def test_existing_duplicates_are_reported_not_multiplied(
    fake: FakeUptimeRobotV3, client: UptimeRobotV3Client
) -> None:
    """Two monitors sharing one of our names are reported; none is added or changed."""
    name = f"{PREFIX} - Main URL"
    first = fake.seed_monitor(name, BASE + "/", httpMethodType="HEAD")
    second = fake.seed_monitor(name, BASE + "/", interval=60)
    duplicate = next(
        a for a in setup_monitors(client, BASE, prefix=PREFIX) if a.kind == "duplicate"
    )
    assert duplicate.monitor_ids == (first, second)
    assert fake.monitors[second]["interval"] == 60
    assert len(fake.monitor_named(name)) == 2


def test_interrupted_run_is_resumed_by_running_again(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an outage following 2 creates, a second run creates only the 3 missing monitors."""
    fake.fail_writes_after(2)
    assert main(["setup"]) == 1
    first = capsys.readouterr()
    assert len(fake.monitors) == 2
    assert "Simulated outage" in first.err and "2 changes made; run again to finish" in first.err
    assert first.err.count("\n") == 1
    fake.fail_writes_after(None)
    posts = len(fake.calls("POST", "/v3/monitors"))
    assert main(["setup"]) == 0
    assert len(fake.calls("POST", "/v3/monitors")) - posts == 3
    assert (
        capsys.readouterr().out.splitlines()[-1] == "3 created, 0 updated, 2 unchanged, 0 duplicate"
    )
    assert set(ours(fake)) == set(PLAN) and len(fake.monitors) == 5


def test_a_create_lost_in_a_5xx_is_not_duplicated_by_running_again(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A create answered 500 after it was made stops the run; the next run finds it."""
    fake.apply_then_fail(1)
    assert main(["setup"]) == 1
    assert "re-running setup is safe" in capsys.readouterr().err
    assert main(["setup"]) == 0
    assert len(fake.monitors) == 5
    assert all(len(fake.monitor_named(f"{PREFIX} - {name}")) == 1 for name in PLAN)


def test_a_refused_key_exits_1_with_a_clear_line(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """HTTP 401: one stderr line saying the key was refused and which variable to check."""
    env.setenv("UPTIMEROBOT_API_KEY", "ur0000-rejected-test-key")
    assert main(["setup"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "the API key was refused (HTTP 401: Unauthorized)" in captured.err
    assert "check UPTIMEROBOT_API_KEY" in captured.err
    assert "rejected-test-key" not in captured.out + captured.err
    assert fake.write_calls() == []


def test_dry_run_prints_the_plan_when_the_api_is_down(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing listening, --dry-run still prints every planned monitor and contact, says
    it could not compare, and exits 1."""
    env.setenv("UPTIMEROBOT_API_URL", closed_port_url())
    env.setenv("UPTIMEROBOT_TIMEOUT", "0.3")  # connection refused: give up without waiting long
    env.setenv("UPTIMEROBOT_ALERT_EMAIL", "ops@example.com")
    assert main(["setup", "--dry-run", "--monitor", "Orders=/api/orders"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()[1:]
    assert lines[0] == "planned      alert contact email o…@example.com"
    ready = f"{PREFIX} - Readiness Check: GET {BASE}/health/ready every 300s, keyword 'healthy'"
    assert f"planned      {ready}" in lines
    assert f"planned      {PREFIX} - Orders: GET {BASE}/api/orders every 300s" in lines
    assert len(lines) == 1 + 6
    assert "could not compare the plan with what exists" in captured.err
    assert "cannot connect" in captured.err and "nothing was changed" in captured.err
    assert captured.err.count("\n") == 1


def test_dry_run_with_a_refused_key_prints_the_plan(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused key in a dry run: the plan is printed, the key problem named, nothing sent."""
    env.setenv("UPTIMEROBOT_API_KEY", "ur0000-rejected-test-key")
    assert main(["setup", "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert sum(line.startswith("planned") for line in captured.out.splitlines()) == 5
    assert "HTTP 401" in captured.err and "check UPTIMEROBOT_API_KEY" in captured.err
    assert fake.write_calls() == []


def test_dry_run_against_the_api_compares_and_writes_nothing(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dry run that reaches the API shows what would change and sends no write."""
    fake.seed_monitor(f"{PREFIX} - Main URL", BASE + "/", interval=600, httpMethodType="HEAD")
    assert main(["setup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert fake.write_calls() == []
    assert f"would update {PREFIX} - Main URL: HEAD {BASE}/ every 300s (interval 600 -> 300)" in out
    assert out.splitlines()[-1] == (
        "dry run: 4 would create, 1 would update, 0 unchanged, 0 duplicate; nothing was changed"
    )


def test_server_error_while_listing_is_retried(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch
) -> None:
    """A 503 on the first listing is retried with backoff and the run completes."""
    fake.server_errors(1, status=503)
    assert main(["setup"]) == 0
    assert len(fake.monitors) == 5


def test_sms_contact_is_attached_when_it_exists_and_reported_when_it_cannot_be_made(
    fake: FakeUptimeRobotV3, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """API v3 cannot create SMS contacts: an existing one is attached, a missing one reported."""
    env.setenv("UPTIMEROBOT_ALERT_SMS", "+1 555 123 4567")
    env.setenv("UPTIMEROBOT_ALERT_EMAIL", "ops@example.com")
    assert main(["setup"]) == 0
    out = capsys.readouterr().out
    assert "not created  alert contact sms …567: API v3 cannot create SMS contacts" in out
    assert "+1 555" not in out
    assert fake.calls("POST", "/v3/alert-contacts")[0].body["type"] == "Email"  # no SMS attempt
    sms = fake.seed_alert_contact("ProSms", "+15551234567")
    assert main(["setup"]) == 0
    assert "unchanged    alert contact sms …567" in capsys.readouterr().out
    for monitor in ours(fake).values():
        assert sms in {c["alertContactId"] for c in monitor["assignedAlertContacts"]}
