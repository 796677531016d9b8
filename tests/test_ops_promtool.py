"""The exported files against the real tools: promtool (check and unit tests) and amtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from wsgi_observe.ops.alertmanager import AlertmanagerOptions, render_alertmanager_config
from wsgi_observe.ops.rules import RuleOptions, render_prometheus_rules

PROMTOOL = "/usr/bin/promtool"
AMTOOL = "/usr/bin/amtool"
UNIT_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.yml"))


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def promtool() -> str:
    if not os.path.exists(PROMTOOL):
        pytest.skip("promtool is not installed (Debian package 'prometheus')")
    return PROMTOOL


@pytest.fixture
def amtool() -> str:
    if not os.path.exists(AMTOOL):
        pytest.skip("amtool is not installed (Debian package 'prometheus-alertmanager')")
    return AMTOOL


_EVERY_RULE_OPTION: dict[str, Any] = dict(
    job='odd "job" \\ name',
    window="90s",
    error_ratio=0.125,
    latency_p95_s=0.75,
    min_requests=0,
    spike_factor=2.5,
    spike_offset="1w",
    spike_fallback="30m",
    pending="0s",
    scrape_interval="1m",
    not_ready_for="5m",
    evaluation_interval="30s",
    runbook_url="https://runbooks.example.com/wsgi",
)


@pytest.mark.parametrize(
    ("options", "count"),
    [
        pytest.param(RuleOptions(), 19, id="defaults"),
        pytest.param(RuleOptions(**_EVERY_RULE_OPTION), 19, id="every-option"),
        pytest.param(RuleOptions(histograms="native"), 17, id="native"),
        pytest.param(
            RuleOptions(**_EVERY_RULE_OPTION, histograms="native"), 17, id="native-every-option"
        ),
    ],
)
def test_promtool_check_rules_passes(
    promtool: str, tmp_path: Path, options: RuleOptions, count: int
) -> None:
    """promtool finds all the rules (19, or 17 in the native form without the per-bucket
    rules) valid and lint-clean, whatever the options."""
    path = tmp_path / "rules.yml"
    path.write_text(render_prometheus_rules(options), encoding="utf-8")
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """The unit tests in tests/promtool/ pass against examples/prometheus-rules.yml: each
    alert fires when it should and stays silent when it should not."""
    assert {path.name for path in UNIT_TESTS} == {
        "errors_and_latency.yml",
        "instance_down.yml",
        "not_ready.yml",
        "traffic_spike.yml",
    }
    result = _run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS)


@pytest.mark.parametrize(
    ("unit_test", "options"),
    [
        pytest.param("errors_and_latency.yml", RuleOptions(error_ratio=0.2), id="error-ratio"),
        pytest.param("errors_and_latency.yml", RuleOptions(latency_p95_s=5), id="latency"),
        pytest.param("errors_and_latency.yml", RuleOptions(min_requests=0), id="min-requests"),
        pytest.param("traffic_spike.yml", RuleOptions(spike_factor=5), id="spike-factor"),
        pytest.param("traffic_spike.yml", RuleOptions(spike_fallback="3h"), id="spike-fallback"),
        pytest.param("instance_down.yml", RuleOptions(scrape_interval="1m"), id="instance-down"),
        pytest.param("not_ready.yml", RuleOptions(not_ready_for="5m"), id="not-ready-for"),
    ],
)
def test_promtool_unit_tests_fail_against_other_rules(
    promtool: str, tmp_path: Path, unit_test: str, options: RuleOptions
) -> None:
    """The unit tests can fail: against rules with another threshold or window they do."""
    rules = tmp_path / "examples" / "prometheus-rules.yml"
    rules.parent.mkdir()
    rules.write_text(render_prometheus_rules(options), encoding="utf-8")
    (tmp_path / "tests" / "promtool").mkdir(parents=True)
    copy = tmp_path / "tests" / "promtool" / unit_test
    shutil.copy(ROOT / "tests" / "promtool" / unit_test, copy)
    result = _run(promtool, "test", "rules", str(copy))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_example_prometheus_config_is_valid_and_loads_the_rules(promtool: str) -> None:
    """examples/prometheus.yml (job wsgi_observe) loads examples/prometheus-rules.yml."""
    result = _run(promtool, "check", "config", "examples/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 19 rules found" in result.stdout
    assert "job_name: 'wsgi_observe'" in (ROOT / "examples" / "prometheus.yml").read_text()


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(AlertmanagerOptions(), id="defaults"),
        pytest.param(
            AlertmanagerOptions(
                receiver="team.mail-1",
                routing_key_file="/run/secrets/pagerduty key",
                pagerduty_url="http://127.0.0.1:9/v2/enqueue",
                group_wait="1s",
                group_interval="2s",
                repeat_interval="1h",
                resolve_timeout="1m",
            ),
            id="every-option",
        ),
    ],
)
def test_amtool_check_config_is_clean(
    amtool: str, tmp_path: Path, options: AlertmanagerOptions
) -> None:
    """amtool accepts the generated config: two receivers, one route to PagerDuty."""
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config(options), encoding="utf-8")
    result = _run(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "2 receivers" in result.stdout
