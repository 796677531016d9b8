"""`uptimerobot setup --api v2`: the plan, exactly once, against a local fake of API v2.

tests/test_uptimerobot_plan.py tests the plan's options (--monitor, --skip, the monitors
file, the API version); tests/test_uptimerobot_v3_setup.py runs the plan on API v3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_uptimerobot import VALID_API_KEY, FakeUptimeRobot, contacts_of, http_method_of

from wsgi_observe.config import Config
from wsgi_observe.uptimerobot import UptimeRobotClient
from wsgi_observe.uptimerobot.accounts import setup_monitors
from wsgi_observe.uptimerobot.command import SetupSettings, main
from wsgi_observe.uptimerobot.plan import (
    DEFAULT_MONITORS,
    AlertContactSpec,
    ExistingMonitor,
    MonitorSpec,
    alert_threshold_minutes,
    default_monitors,
    plan_monitors,
)

BASE = "https://api.example.com"
PREFIX = "CRM"
ENV_VARS = (
    "UPTIMEROBOT_API_KEY",
    "APP_BASE_URL",
    "UPTIMEROBOT_API_URL",
    "UPTIMEROBOT_PREFIX",
    "WSGI_OBSERVE_SERVICE_NAME",
    "UPTIMEROBOT_MONITORS_FILE",
    "UPTIMEROBOT_ALERT_EMAIL",
    "UPTIMEROBOT_ALERT_SMS",
    "UPTIMEROBOT_ALERT_WEBHOOK",
)
# name -> (path, method, interval, keyword): the guide's monitors for the user's own app.
GUIDE = {
    "Main Health Check": ("/health", "HEAD", 300, None),
    "Readiness Check": ("/health/ready", "GET", 300, "healthy"),
    "API Liveness": ("/health/live", "HEAD", 180, None),
    "Metrics Endpoint": ("/metrics", "GET", 600, None),
    "Main URL": ("/", "HEAD", 300, None),
}


@pytest.fixture
def fake() -> Iterator[FakeUptimeRobot]:
    with FakeUptimeRobot() as server:
        yield server


@pytest.fixture
def client(fake: FakeUptimeRobot) -> Iterator[UptimeRobotClient]:
    with UptimeRobotClient(VALID_API_KEY, base_url=fake.url, backoff_base=0.001) as c:
        yield c


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeUptimeRobot) -> pytest.MonkeyPatch:
    """A clean environment pointing `main()` at the fake."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UPTIMEROBOT_API_KEY", VALID_API_KEY)
    monkeypatch.setenv("APP_BASE_URL", BASE + "/")
    monkeypatch.setenv("UPTIMEROBOT_API_URL", fake.url)
    monkeypatch.setenv("UPTIMEROBOT_PREFIX", PREFIX)
    monkeypatch.setenv("UPTIMEROBOT_API_VERSION", "2")
    return monkeypatch


def ours(fake: FakeUptimeRobot) -> dict[str, dict[str, object]]:
    """The fake's monitors carrying our prefix, by name without the prefix."""
    start = f"{PREFIX} - "
    return {
        str(m["friendly_name"])[len(start) :]: m
        for m in fake.monitors.values()
        if str(m["friendly_name"]).startswith(start)
    }


def test_default_monitors_fit_the_users_app() -> None:
    """The defaults are the guide's probes, /metrics and the app's main URL; no demo route."""
    assert {m.name: (m.path, m.method, m.interval_s, m.keyword) for m in DEFAULT_MONITORS} == GUIDE
    assert not any(m.path.startswith("/api/") for m in DEFAULT_MONITORS)


def test_metrics_monitor_only_when_metrics_need_no_token() -> None:
    """default_monitors leaves /metrics out when a token guards it (UptimeRobot sends none)."""
    assert "/metrics" in {m.path for m in default_monitors(metrics_public=True)}
    paths = {m.path for m in default_monitors(metrics_public=False)}
    assert paths == {"/health", "/health/ready", "/health/live", "/"}


def test_setup_creates_the_default_monitors(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """On an empty account, setup creates the five monitors; readiness is a keyword monitor."""
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    assert [a.kind for a in actions] == ["create"] * 5
    assert all(a.done for a in actions)
    created = ours(fake)
    assert set(created) == set(GUIDE)
    for name, (path, method, interval, keyword) in GUIDE.items():
        monitor = created[name]
        assert monitor["url"] == BASE + path
        assert http_method_of(monitor["http_method"]) == method  # type: ignore[arg-type]
        assert monitor["interval"] == interval
        assert monitor["type"] == (2 if keyword else 1)
    ready = created["Readiness Check"]
    assert (ready["keyword_type"], ready["keyword_value"]) == (2, "healthy")  # alert if missing


def test_second_run_makes_no_write_calls(fake: FakeUptimeRobot, client: UptimeRobotClient) -> None:
    """Running setup again changes nothing: every monitor is unchanged and no write is sent."""
    setup_monitors(client, BASE, prefix=PREFIX)
    writes_before = len(fake.write_calls())
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    assert [a.kind for a in actions] == ["unchanged"] * 5
    assert len(fake.write_calls()) == writes_before
    assert len(fake.monitors) == 5


def test_drifted_monitor_is_updated(fake: FakeUptimeRobot, client: UptimeRobotClient) -> None:
    """A monitor whose interval, method and URL drifted is edited back, keeping its id."""
    monitor_id = fake.seed_monitor(
        f"{PREFIX} - Main Health Check", "https://old.example.com/health", interval=60,
        http_method=2,
    )  # fmt: skip
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    update = next(a for a in actions if a.kind == "update")
    assert update.monitor_ids == (monitor_id,)
    assert set(update.changes) == {"url", "interval", "http_method"}
    monitor = fake.monitors[monitor_id]
    assert (monitor["url"], monitor["interval"], monitor["http_method"]) == (
        BASE + "/health",
        300,
        1,
    )
    assert len(fake.calls("editMonitor")) == 1
    assert len(fake.calls("newMonitor")) == 4


def test_foreign_monitors_are_left_alone(fake: FakeUptimeRobot, client: UptimeRobotClient) -> None:
    """Monitors of other services, even with our names under another prefix, are not touched."""
    foreign = [
        fake.seed_monitor("Billing - Main Health Check", "https://billing.example.com/health"),
        fake.seed_monitor("Main Health Check", "https://other.example.com/health"),
        fake.seed_monitor("Company website", "https://www.example.com/", interval=60),
    ]
    snapshot = {i: dict(fake.monitors[i]) for i in foreign}
    setup_monitors(client, BASE, prefix=PREFIX)
    assert {i: fake.monitors[i] for i in foreign} == snapshot
    touched = {r.params.get("id") for r in fake.write_calls()}
    assert not touched & {str(i) for i in foreign}
    assert len(fake.monitors) == 8


def test_existing_duplicates_are_reported_not_multiplied(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """Two monitors already sharing one of our names are reported; none is added or changed."""
    name = f"{PREFIX} - Main URL"
    first = fake.seed_monitor(name, BASE + "/", interval=300, http_method=1)
    second = fake.seed_monitor(name, BASE + "/", interval=60, http_method=1)
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    duplicate = next(a for a in actions if a.kind == "duplicate")
    assert duplicate.monitor_ids == (first, second)
    assert "2 monitors share this name" in duplicate.describe()
    assert len(fake.monitor_named(name)) == 2
    assert fake.monitors[second]["interval"] == 60
    assert len(fake.calls("newMonitor")) == 4


def test_interrupted_run_is_finished_by_running_again(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a failure following 2 creates, a second run creates only the 3 missing monitors."""
    fake.fail_writes_after(2)
    assert main(["setup"]) == 1
    first = capsys.readouterr()
    assert len(fake.monitors) == 2
    assert [line.split()[0] for line in first.out.splitlines()[1:]] == ["created", "created"]
    assert "Simulated outage" in first.err
    assert "2 changes made; run again to finish" in first.err

    fake.fail_writes_after(None)
    calls_before = len(fake.calls("newMonitor"))
    assert main(["setup"]) == 0
    second = capsys.readouterr()
    assert len(fake.calls("newMonitor")) - calls_before == 3
    verbs = [line.split()[0] for line in second.out.splitlines()[1:-1]]
    assert verbs == ["unchanged"] * 2 + ["created"] * 3
    assert set(ours(fake)) == set(GUIDE)
    assert len(fake.monitors) == 5


def test_dry_run_prints_the_plan_and_writes_nothing(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run lists what would be created and sends no write call."""
    assert main(["setup", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert fake.write_calls() == []
    assert sum(line.startswith("would create") for line in out.splitlines()) == 5
    assert f"{PREFIX} - Main Health Check: HEAD {BASE}/health every 300s" in out
    assert "nothing was changed" in out


def test_main_prints_one_line_per_action_and_exits_0(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A successful run prints each monitor with its URL, a summary, never the key."""
    assert main(["setup"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 7
    assert lines[0].startswith(f"UptimeRobot API v2 ({fake.url})")
    assert lines[-1] == "5 created, 0 updated, 0 unchanged, 0 duplicate"
    for name, (path, _method, _interval, _keyword) in GUIDE.items():
        assert any(f"{PREFIX} - {name}" in line and BASE + path in line for line in lines)
    assert VALID_API_KEY not in captured.out + captured.err
    assert captured.err == ""


def test_main_exits_1_with_the_api_message_when_the_key_is_refused(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused key exits 1 with the API's message on one stderr line and no key."""
    env.setenv("UPTIMEROBOT_API_KEY", "u0000-rejected-test-key")
    assert main(["setup"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "api_key is invalid." in captured.err
    assert "u0000-rejected-test-key" not in captured.out + captured.err
    assert fake.write_calls() == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("UPTIMEROBOT_API_KEY", None, id="missing-key"),
        pytest.param("APP_BASE_URL", None, id="missing-base-url"),
        pytest.param("APP_BASE_URL", "api.example.com", id="base-url-without-scheme"),
        pytest.param("APP_BASE_URL", "https://api.example.com/?x=1", id="base-url-with-query"),
        pytest.param("UPTIMEROBOT_API_URL", "localhost:8080", id="bad-api-url"),
        pytest.param("UPTIMEROBOT_ALERT_EMAIL", "not-an-address", id="bad-alert-email"),
    ],
)
def test_main_exits_2_naming_the_bad_variable(
    fake: FakeUptimeRobot,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str | None,
) -> None:
    """Missing or malformed configuration exits 2 with one stderr line naming the variable."""
    if value is None:
        env.delenv(variable)
    else:
        env.setenv(variable, value)
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert variable in err
    assert fake.requests == []


def test_base_url_with_credentials_is_refused_without_echoing_them(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base URL carrying user:password is a configuration error that does not print them."""
    env.setenv("APP_BASE_URL", "https://admin:s3cret-test@api.example.com")
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert "APP_BASE_URL" in err
    assert "s3cret-test" not in err


def test_main_exits_2_on_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """No command or an unknown option is a usage error, exit code 2."""
    assert main([]) == 2
    assert main(["setup", "--wat"]) == 2
    assert "usage" in capsys.readouterr().err


def test_monitors_file_overrides_the_plan(
    fake: FakeUptimeRobot,
    env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """UPTIMEROBOT_MONITORS_FILE replaces the default monitors with the file's monitors."""
    plan = [
        {"name": "Orders", "path": "/api/orders", "method": "GET", "interval_s": 120},
        {"name": "Home", "path": "/", "method": "HEAD", "interval_s": 300},
    ]
    path = tmp_path / "monitors.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    env.setenv("UPTIMEROBOT_MONITORS_FILE", str(path))
    assert main(["setup"]) == 0
    capsys.readouterr()
    created = ours(fake)
    assert set(created) == {"Orders", "Home"}
    assert created["Orders"]["url"] == BASE + "/api/orders"
    assert created["Orders"]["interval"] == 120
    assert created["Home"]["http_method"] == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="invalid-json"),
        pytest.param("[]", id="empty-list"),
        pytest.param('[{"name": "X", "path": "x"}]', id="path-without-slash"),
        pytest.param('[{"name": "X", "path": "/", "timeout": 5}]', id="unknown-key"),
        pytest.param('[{"name": "X", "path": "/", "interval_s": 10}]', id="interval-too-short"),
        pytest.param('[{"name": "X", "path": "/"}, {"name": "X", "path": "/a"}]', id="same-name"),
    ],
)
def test_malformed_monitors_file_exits_2(
    fake: FakeUptimeRobot,
    env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
) -> None:
    """A monitors file that cannot be used is a configuration error naming the variable."""
    path = tmp_path / "monitors.json"
    path.write_text(content, encoding="utf-8")
    env.setenv("UPTIMEROBOT_MONITORS_FILE", str(path))
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert "UPTIMEROBOT_MONITORS_FILE" in err
    assert err.count("\n") == 1
    assert fake.requests == []


def test_alert_contacts_from_env_are_created_once_and_attached(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Email and webhook contacts are created once and attached with a 2-failure threshold."""
    env.setenv("UPTIMEROBOT_ALERT_EMAIL", "ops@example.com")
    env.setenv("UPTIMEROBOT_ALERT_WEBHOOK", "https://hooks.example.com/services/T0/B0/test")
    assert main(["setup"]) == 0
    assert len(fake.alert_contacts) == 2
    ids = set(fake.alert_contacts)
    for name, (_path, _method, interval, _keyword) in GUIDE.items():
        attached = contacts_of(fake, int(ours(fake)[name]["id"]))  # type: ignore[call-overload]
        assert {cid for cid, _, _ in attached} == ids
        assert {t for _, t, _ in attached} == {alert_threshold_minutes(interval)}
    out = capsys.readouterr().out
    assert "hooks.example.com/services" not in out  # webhook tokens are not printed

    writes = len(fake.write_calls())
    assert main(["setup"]) == 0
    assert len(fake.write_calls()) == writes
    assert len(fake.alert_contacts) == 2


def test_existing_alert_contact_is_reused_and_added_to_existing_monitors(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """A contact already in the account is reused; monitors missing it get it, keeping others."""
    contact = fake.seed_alert_contact(2, "OPS@example.com")
    other = fake.seed_alert_contact(1, "+15550000000")
    monitor_id = fake.seed_monitor(
        f"{PREFIX} - Metrics Endpoint", BASE + "/metrics", interval=600, http_method=2,
        alert_contacts=((other, 0, 0),),
    )  # fmt: skip
    actions = setup_monitors(
        client, BASE, prefix=PREFIX, alert_contacts=[AlertContactSpec("email", "ops@example.com")]
    )
    assert actions[0].kind == "contact_exists"
    assert len(fake.alert_contacts) == 2
    assert {cid for cid, _, _ in contacts_of(fake, monitor_id)} == {contact, other}
    update = next(a for a in actions if a.kind == "update")
    assert set(update.changes) == {"alert_contacts"}


def test_dry_run_with_new_alert_contact_creates_nothing(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """In a dry run, a missing contact is planned, not created, and monitors are not written."""
    actions = setup_monitors(
        client,
        BASE,
        prefix=PREFIX,
        dry_run=True,
        alert_contacts=[AlertContactSpec("sms", "+15551234567")],
    )
    assert [a.kind for a in actions] == ["create_contact"] + ["create"] * 5
    assert not any(a.done for a in actions)
    assert fake.write_calls() == []
    assert "would create" in actions[0].describe(dry_run=True)
    assert "567" in actions[0].describe()
    assert "+1555123" not in actions[0].describe()


@pytest.mark.parametrize(
    ("interval_s", "minutes"),
    [
        pytest.param(300, 5, id="5-min"),
        pytest.param(180, 3, id="3-min"),
        pytest.param(600, 10, id="10-min"),
        pytest.param(90, 2, id="rounded-up"),
        pytest.param(1020, 20, id="next-allowed-value"),
    ],
)
def test_alert_threshold_means_two_consecutive_failures(interval_s: int, minutes: int) -> None:
    """The API's threshold (minutes down) is one interval: the second failed check alerts."""
    assert alert_threshold_minutes(interval_s) == minutes


def test_prefix_defaults_to_service_name_then_host(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without UPTIMEROBOT_PREFIX the service name is used, and without that the host name."""
    env.delenv("UPTIMEROBOT_PREFIX")
    env.setenv("WSGI_OBSERVE_SERVICE_NAME", "Lead Service")
    assert main(["setup", "--dry-run"]) == 0
    assert "Lead Service - Main Health Check" in capsys.readouterr().out
    env.delenv("WSGI_OBSERVE_SERVICE_NAME")
    assert main(["setup", "--dry-run"]) == 0
    assert "api.example.com - Main Health Check" in capsys.readouterr().out


def test_two_services_share_an_account_without_touching_each_other(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """Two prefixes give two sets of five monitors; re-running either changes nothing."""
    setup_monitors(client, BASE, prefix="Service A")
    setup_monitors(client, "https://b.example.com", prefix="Service B")
    writes = len(fake.write_calls())
    setup_monitors(client, BASE, prefix="Service A")
    assert len(fake.monitors) == 10
    assert len(fake.write_calls()) == writes


def test_plan_is_pure_and_reports_changes() -> None:
    """plan_monitors compares data only: one existing match is unchanged, the rest created."""
    existing = [ExistingMonitor(7, "X - Home", BASE + "/", "http", 300, "HEAD")]
    specs = [MonitorSpec("Home", "/", "HEAD", 300), MonitorSpec("Api", "/api", "GET", 600)]
    actions = plan_monitors(existing, BASE, specs, prefix="X")
    assert [(a.kind, a.name) for a in actions] == [("unchanged", "X - Home"), ("create", "X - Api")]
    assert actions[1].desired is not None
    assert (actions[1].desired.method, actions[1].desired.interval_s) == ("GET", 600)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"path": "health"}, id="relative-path"),
        pytest.param({"method": "TRACE"}, id="unknown-method"),
        pytest.param({"interval_s": 30}, id="interval-too-short"),
        pytest.param({"name": " "}, id="blank-name"),
    ],
)
def test_monitor_spec_validates_its_fields(kwargs: dict[str, object]) -> None:
    """MonitorSpec refuses values UptimeRobot would refuse."""
    fields: dict[str, object] = {"name": "Home", "path": "/", "method": "GET", "interval_s": 300}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        MonitorSpec(**fields)  # type: ignore[arg-type]


# Configuration comes from Config -----------------------------------------------------------


def test_settings_are_a_view_of_config_and_read_no_environment(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SetupSettings.from_config uses the Config it is given, whatever the environment says."""
    plan = tmp_path / "plan.json"
    plan.write_text('[{"name": "Home", "path": "/", "method": "HEAD"}]', encoding="utf-8")
    config = Config(
        uptimerobot_api_key="u111-config-key",
        app_base_url="https://from-config.example.com/",
        uptimerobot_api_url="http://127.0.0.1:9/v2",
        uptimerobot_api_version=2,
        uptimerobot_monitors_file=str(plan),
        uptimerobot_alert_sms="+15551234567",
        uptimerobot_alert_webhook="https://hooks.example.com/T0",
    )
    settings = SetupSettings.from_config(config)
    assert settings.api_key == "u111-config-key"
    assert settings.base_url == "https://from-config.example.com"
    assert settings.api_url == "http://127.0.0.1:9/v2"
    assert settings.prefix == "from-config.example.com"  # no prefix, no service name: the host
    assert [m.name for m in settings.monitors] == ["Home"]
    assert [c.kind for c in settings.alert_contacts] == ["sms", "webhook"]
    assert "u111-config-key" not in repr(settings)


def test_main_validates_the_whole_config_first(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings come from Config.from_env(), so any bad variable stops setup with code 2."""
    env.setenv("LOG_LEVEL", "LOUD")
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "LOG_LEVEL" in err
    assert fake.requests == []


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        pytest.param("UPTIMEROBOT_ALERT_SMS", "call me 4449876543x", "4449876543", id="sms"),
        pytest.param(
            "UPTIMEROBOT_ALERT_WEBHOOK",
            "hooks.example.com/T0/s3cret-hook",
            "s3cret-hook",
            id="hook",
        ),
        pytest.param(
            "UPTIMEROBOT_API_URL", "https://u:s3cret-pw@api.example.com", "s3cret-pw", id="api-url"
        ),
    ],
)
def test_bad_contacts_exit_2_without_echoing_them(
    fake: FakeUptimeRobot,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    secret: str,
) -> None:
    """A malformed phone number, webhook or API URL exits 2 with one line that hides the value."""
    env.setenv(variable, value)
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert variable in err
    assert secret not in err
    assert fake.requests == []


# API v2 cannot change a monitor's type ---------------------------------------------------


def test_v2_replaces_a_monitor_whose_type_must_change(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """API v2 cannot edit a monitor's type: an HTTP readiness monitor is replaced, keeping
    its alert contacts, and a second run changes nothing."""
    contact = fake.seed_alert_contact(2, "ops@example.com")
    old = fake.seed_monitor(
        f"{PREFIX} - Readiness Check", BASE + "/health/ready", interval=300, http_method=2,
        alert_contacts=((contact, 5, 0),),
    )  # fmt: skip
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    replaced = next(a for a in actions if a.kind == "replace")
    assert replaced.changes["type"] == ("http", "keyword")
    assert old not in fake.monitors
    (new,) = fake.monitor_named(f"{PREFIX} - Readiness Check")
    assert (new["type"], new["keyword_type"], new["keyword_value"]) == (2, 2, "healthy")
    assert contacts_of(fake, new["id"]) == [(contact, 5, 0)]
    assert len(fake.calls("editMonitor")) == 0
    writes = len(fake.write_calls())
    assert [a.kind for a in setup_monitors(client, BASE, prefix=PREFIX)] == ["unchanged"] * 5
    assert len(fake.write_calls()) == writes


def test_v2_keyword_drift_is_edited_in_place(
    fake: FakeUptimeRobot, client: UptimeRobotClient
) -> None:
    """A keyword monitor with another keyword, alerting when it exists, is edited back."""
    monitor_id = fake.seed_monitor(
        f"{PREFIX} - Readiness Check", BASE + "/health/ready", http_method=2, type=2,
        keyword_type=1, keyword_value="error",
    )  # fmt: skip
    actions = setup_monitors(client, BASE, prefix=PREFIX)
    update = next(a for a in actions if a.kind == "update")
    assert set(update.changes) == {"keyword", "keyword_alert"}
    monitor = fake.monitors[monitor_id]
    assert (monitor["keyword_type"], monitor["keyword_value"]) == (2, "healthy")
    assert "type" not in fake.calls("editMonitor")[0].params  # editMonitor refuses a type
