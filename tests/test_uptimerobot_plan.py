"""The plan of `uptimerobot setup`, whatever the API: default monitors that fit the user's
app, --monitor, --skip, the monitors file, the API version, --help; run against API v2's fake
(tests/test_uptimerobot_v3_setup.py runs the plan on API v3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_uptimerobot import VALID_API_KEY, FakeUptimeRobot

from wsgi_observe.config import Config
from wsgi_observe.uptimerobot import UptimeRobotError
from wsgi_observe.uptimerobot.command import SetupSettings, main
from wsgi_observe.uptimerobot.plan import parse_monitor_option

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
GUIDE = {"Main Health Check", "Readiness Check", "API Liveness", "Metrics Endpoint", "Main URL"}


@pytest.fixture
def fake() -> Iterator[FakeUptimeRobot]:
    with FakeUptimeRobot() as server:
        yield server


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeUptimeRobot) -> pytest.MonkeyPatch:
    """An environment pointing `main()` at the API v2 fake."""
    monkeypatch.setenv("UPTIMEROBOT_API_KEY", VALID_API_KEY)
    monkeypatch.setenv("APP_BASE_URL", BASE)
    monkeypatch.setenv("UPTIMEROBOT_API_URL", fake.url)
    monkeypatch.setenv("UPTIMEROBOT_PREFIX", PREFIX)
    monkeypatch.setenv("UPTIMEROBOT_API_VERSION", "2")
    return monkeypatch


def ours(fake: FakeUptimeRobot) -> dict[str, dict[str, Any]]:
    """The fake's monitors carrying our prefix, by name without the prefix."""
    start = f"{PREFIX} - "
    return {
        str(m["friendly_name"])[len(start) :]: m
        for m in fake.monitors.values()
        if str(m["friendly_name"]).startswith(start)
    }


# The plan fits the user's app --------------------------------------------------------------


def test_metrics_token_leaves_the_metrics_monitor_out(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With WSGI_OBSERVE_METRICS_TOKEN set, /metrics gets no monitor and the output says why."""
    env.setenv("WSGI_OBSERVE_METRICS_TOKEN", "tok-test-not-real")
    assert main(["setup"]) == 0
    out = capsys.readouterr().out
    assert set(ours(fake)) == GUIDE - {"Metrics Endpoint"}
    assert f"skipped      {PREFIX} - Metrics Endpoint: /metrics needs the" in out
    assert "tok-test-not-real" not in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Orders API=/api/orders", ("Orders API", "/api/orders", "GET", 300), id="path"
        ),
        pytest.param(
            "Lead API=HEAD:/api/leads:10m", ("Lead API", "/api/leads", "HEAD", 600), id="full"
        ),
        pytest.param("Ping=get:/ping:90", ("Ping", "/ping", "GET", 90), id="seconds"),
        pytest.param("Ping=/ping:2h", ("Ping", "/ping", "GET", 7200), id="hours"),
        pytest.param("Odd=/a:b/c:120s", ("Odd", "/a:b/c", "GET", 120), id="colon-in-path"),
    ],
)
def test_monitor_option_syntax(text: str, expected: tuple[str, str, str, int]) -> None:
    """--monitor takes NAME=[METHOD:]/PATH[:INTERVAL], GET and 5 minutes by default."""
    spec = parse_monitor_option(text)
    assert (spec.name, spec.path, spec.method, spec.interval_s) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("/api/orders", id="no-name"),
        pytest.param("Orders=api/orders", id="relative"),
        pytest.param("Orders=TRACE:/api", id="unknown-method"),
        pytest.param("Orders=/api:soon", id="bad-interval"),
        pytest.param("Orders=/api:30", id="too-short"),
    ],
)
def test_bad_monitor_option_exits_2(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """An unusable --monitor is a usage error: one stderr line naming the option, no request."""
    assert main(["setup", "--monitor", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--monitor" in err
    assert fake.requests == []


def test_monitor_option_adds_an_app_monitor_once(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--monitor adds the app's own API monitor to the defaults; a second run writes nothing."""
    argv = ["setup", "--monitor", "Orders API=GET:/api/orders:10m"]
    assert main(argv) == 0
    created = ours(fake)
    assert set(created) == GUIDE | {"Orders API"}
    assert (created["Orders API"]["url"], created["Orders API"]["interval"]) == (
        BASE + "/api/orders",
        600,
    )
    writes = len(fake.write_calls())
    assert main(argv) == 0
    assert len(fake.write_calls()) == writes
    assert "6 unchanged" in capsys.readouterr().out


def test_monitor_option_with_a_default_name_replaces_that_default(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch
) -> None:
    """--monitor 'API Liveness=...' changes that default instead of adding a second one."""
    assert main(["setup", "--monitor", "API Liveness=HEAD:/health/live:5m"]) == 0
    assert len(ours(fake)) == 5
    assert ours(fake)["API Liveness"]["interval"] == 300


def test_skip_option_leaves_a_default_out(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--skip 'main url' (any case) drops that monitor; an unknown name exits 2."""
    assert main(["setup", "--skip", "main url"]) == 0
    assert set(ours(fake)) == GUIDE - {"Main URL"}
    assert f"skipped      {PREFIX} - Main URL: left out with --skip" in capsys.readouterr().out
    assert main(["setup", "--skip", "Lead API"]) == 2
    assert "--skip 'Lead API': no monitor of that name" in capsys.readouterr().err


def test_monitors_file_can_add_to_the_defaults(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A {"monitors": [...], "defaults": true} file keeps the defaults and adds its monitors."""
    path = tmp_path / "monitors.json"
    extra = {"name": "Orders", "path": "/api/orders", "method": "GET", "keyword": '"items"'}
    path.write_text(json.dumps({"monitors": [extra], "defaults": True}), encoding="utf-8")
    assert main(["setup", "--monitors-file", str(path)]) == 0
    created = ours(fake)
    assert set(created) == GUIDE | {"Orders"}
    assert (created["Orders"]["type"], created["Orders"]["keyword_value"]) == (2, '"items"')


def test_a_monitor_no_longer_planned_is_reported_and_left_alone(
    fake: FakeUptimeRobot, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An earlier default (the demo's 'Lead API') keeps its monitor; the output says so."""
    old = fake.seed_monitor(f"{PREFIX} - Lead API", BASE + "/api/leads", interval=600)
    snapshot = dict(fake.monitors[old])
    assert main(["setup"]) == 0
    out = capsys.readouterr().out
    assert fake.monitors[old] == snapshot
    assert f"left alone   {PREFIX} - Lead API: {BASE}/api/leads is not in the plan" in out
    assert out.splitlines()[-1].endswith(", 1 left alone")


# Help, API version and configuration --------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["setup", "--help"]], ids=["command", "setup"])
def test_help_lists_every_variable_setup_reads(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`uptimerobot --help` and `setup --help` name every variable setup reads."""
    assert main(argv) == 0
    out = capsys.readouterr().out
    for variable in (
        *ENV_VARS,
        "UPTIMEROBOT_API_VERSION",
        "UPTIMEROBOT_TIMEOUT",
        "WSGI_OBSERVE_METRICS_TOKEN",
    ):
        assert variable in out
    if argv[0] == "setup":
        assert "--api" in out and "--monitor" in out and "--skip" in out


@pytest.mark.parametrize(
    ("environ", "argv", "version", "root"),
    [
        pytest.param({}, [], 3, "https://api.uptimerobot.com/v3", id="default-v3"),
        pytest.param({"UPTIMEROBOT_API_VERSION": "2"}, [], 2, "https://api.uptimerobot.com/v2",
                     id="env-v2"),
        pytest.param({"UPTIMEROBOT_API_VERSION": "2"}, ["--api", "v3"], 3,
                     "https://api.uptimerobot.com/v3", id="option-beats-env"),
        pytest.param({}, ["--api", "v2"], 2, "https://api.uptimerobot.com/v2", id="option-v2"),
    ],
)  # fmt: skip
def test_api_version_comes_from_the_option_over_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environ: dict[str, str],
    argv: list[str],
    version: int,
    root: str,
) -> None:
    """API v3 by default; UPTIMEROBOT_API_VERSION=2 or --api v2 choose v2; --api wins."""
    monkeypatch.setenv("UPTIMEROBOT_API_KEY", VALID_API_KEY)
    monkeypatch.setenv("APP_BASE_URL", BASE)
    monkeypatch.setenv("UPTIMEROBOT_TIMEOUT", "0.2")
    monkeypatch.setenv("UPTIMEROBOT_API_URL", "")  # unset: the version's default root
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    seen: list[SetupSettings] = []
    monkeypatch.setattr(
        "wsgi_observe.uptimerobot.command.make_client",
        lambda settings: seen.append(settings) or _refuse(),
    )
    main(["setup", *argv, "--dry-run"])
    assert (seen[0].api_version, seen[0].api_url) == (version, root)
    assert capsys.readouterr().out.startswith(f"UptimeRobot API v{version} ({root})")


def _refuse() -> Any:
    raise UptimeRobotError("not contacted in this test")


@pytest.mark.parametrize(
    ("version", "url"),
    [
        pytest.param("3", "http://127.0.0.1:9/v2", id="v2-root-for-v3"),
        pytest.param("2", "https://api.uptimerobot.com/v3/", id="v3-root-for-v2"),
    ],
)
def test_api_root_of_the_other_version_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], version: str, url: str
) -> None:
    """UPTIMEROBOT_API_URL ending in the other version's path is refused in one line."""
    monkeypatch.setenv("UPTIMEROBOT_API_KEY", VALID_API_KEY)
    monkeypatch.setenv("APP_BASE_URL", BASE)
    monkeypatch.setenv("UPTIMEROBOT_API_VERSION", version)
    monkeypatch.setenv("UPTIMEROBOT_API_URL", url)
    assert main(["setup", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "UPTIMEROBOT_API_URL" in err and "UPTIMEROBOT_API_VERSION" in err


@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [
        pytest.param("UPTIMEROBOT_API_VERSION", "4", "3 or 2", id="version"),
        pytest.param("UPTIMEROBOT_API_VERSION", "latest", "3 or 2", id="version-word"),
        pytest.param("UPTIMEROBOT_TIMEOUT", "0", "greater than 0", id="timeout"),
    ],
)
def test_bad_api_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    accepts: str,
) -> None:
    """A bad API version or time budget is refused by Config in one line naming it."""
    monkeypatch.setenv("UPTIMEROBOT_API_KEY", VALID_API_KEY)
    monkeypatch.setenv("APP_BASE_URL", BASE)
    monkeypatch.setenv(variable, value)
    assert main(["setup"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert variable in err and accepts in err


def test_config_parses_the_api_version() -> None:
    """uptimerobot_api_version accepts 2, 3, 'v2', 'V3'; the default is 3."""
    assert Config().uptimerobot_api_version == 3
    assert Config(uptimerobot_api_version="V2").uptimerobot_api_version == 2
    assert Config.from_env(environ={"UPTIMEROBOT_API_VERSION": "v3"}).uptimerobot_api_version == 3
    assert Config(uptimerobot_api_version=2).uptimerobot_api_version == 2
