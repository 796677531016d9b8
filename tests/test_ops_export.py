"""`wsgi-observe export`: the rules, dashboard and Alertmanager config, checked without servers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from wsgi_observe.cli import main
from wsgi_observe.exposition.families import FAMILIES
from wsgi_observe.ops import _yaml
from wsgi_observe.ops.alertmanager import alertmanager_config, render_alertmanager_config
from wsgi_observe.ops.dashboard import ROWS, grafana_dashboard, render_grafana_dashboard
from wsgi_observe.ops.promql import HISTOGRAMS, duration_seconds
from wsgi_observe.ops.rules import (
    ALERT_NAMES,
    DEFAULT_RUNBOOK_URL,
    RuleOptions,
    prometheus_rules,
    recording_names,
    render_prometheus_rules,
)

EXAMPLES = {
    "prometheus-rules.yml": lambda: render_prometheus_rules(),
    "prometheus-rules-native.yml": lambda: render_prometheus_rules(
        RuleOptions(histograms="native")
    ),
    "grafana-dashboard.json": lambda: render_grafana_dashboard(),
    "grafana-dashboard-native.json": lambda: render_grafana_dashboard(histograms="native"),
    "alertmanager.yml": lambda: render_alertmanager_config(),
}
_NAME = re.compile(r"(?<![\w:])(wsgi_observe_[a-z_]+|up)(?![\w:])")


def _exprs(rules: dict[str, Any]) -> list[str]:
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _served_names() -> set[str]:
    """Every sample name /metrics can serve (histograms with their suffixes)."""
    names = {"up"}
    for family in FAMILIES:
        names.add(family.sample)
        if family.kind == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_checked_in_examples_are_what_export_writes(name: str) -> None:
    """examples/ holds what the export command writes today; a stale copy is rewritten and
    the test fails, so the difference shows up in the commit."""
    path = ROOT / "examples" / name
    fresh = EXAMPLES[name]()
    if path.read_text(encoding="utf-8") != fresh:
        path.write_text(fresh, encoding="utf-8")
        pytest.fail(f"examples/{name} was stale and has been regenerated: commit it")


@pytest.mark.parametrize("histograms", HISTOGRAMS)
def test_every_series_queried_is_one_metrics_serves(histograms: str) -> None:
    """Rules and panels name only series that the exposition's families produce."""
    served = _served_names()
    rules = prometheus_rules(RuleOptions(histograms=histograms))
    dashboard = grafana_dashboard(histograms=histograms)
    queried = {name for expr in _exprs(rules) for name in _NAME.findall(expr)}
    queried |= {name for expr in _panel_exprs(dashboard) for name in _NAME.findall(expr)}
    assert queried - served == set()
    assert len(queried) >= 20  # the check did look at the queries


@pytest.mark.parametrize("histograms", HISTOGRAMS)
def test_recording_rules_feed_the_alerts_and_each_other(histograms: str) -> None:
    """Every recorded series used by a rule is recorded earlier in the same file."""
    options = RuleOptions(histograms=histograms)
    rules = prometheus_rules(options)
    recorded: list[str] = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            used = set(re.findall(r"\b[a-z_]+:[a-z_]+:[a-z_0-9]+\b", rule["expr"]))
            assert used <= set(recorded), rule
            if "record" in rule:
                recorded.append(rule["record"])
    assert set(recording_names(options).values()) == set(recorded)


def _latency_rule(rule: dict[str, Any]) -> bool:
    return "_bucket" in rule.get("record", "") or "quantile" in rule.get("labels", {})


def test_native_rules_differ_only_in_the_quantiles_which_read_native_histograms() -> None:
    """--histograms native: the same rules under the same names, but the p50/p95/p99 rules
    come from sum(rate()) of the native series per job and per endpoint, without the
    per-bucket rules; nothing reads a _bucket series."""
    options = RuleOptions(job="crm", window="10m")
    (classic,) = prometheus_rules(options)["groups"]
    (native,) = prometheus_rules(RuleOptions(job="crm", window="10m", histograms="native"))[
        "groups"
    ]
    assert native["name"] == classic["name"]
    assert [r for r in native["rules"] if not _latency_rule(r)] == [
        r for r in classic["rules"] if not _latency_rule(r)
    ]
    assert "_bucket" not in "\n".join(_exprs({"groups": [native]}))
    quantiles = [
        (r["record"], r["labels"]["quantile"], r["expr"])
        for r in native["rules"]
        if _latency_rule(r)
    ]
    series = 'wsgi_observe_request_duration_seconds{job="crm"}[10m]'
    assert quantiles == [
        (
            f"{level}:wsgi_observe_request_duration_seconds:quantile_rate10m",
            str(q),
            f"histogram_quantile({q}, sum by ({by}) (rate({series})))",
        )
        for level, by in (("job", "job"), ("job_endpoint", "job, endpoint"))
        for q in (0.5, 0.95, 0.99)
    ]
    assert [r["record"] for r in classic["rules"] if _latency_rule(r)] == [
        "job_le:wsgi_observe_request_duration_seconds_bucket:rate10m",
        *[quantiles[0][0]] * 3,
        "job_endpoint_le:wsgi_observe_request_duration_seconds_bucket:rate10m",
        *[quantiles[3][0]] * 3,
    ]


def test_native_dashboard_differs_only_in_the_latency_panels() -> None:
    """--histograms native: the same panels, but the quantiles come from sum(rate()) of the
    native series and the heatmap draws the native histogram itself (format time_series)."""
    classic = grafana_dashboard("crm")
    native = grafana_dashboard("crm", histograms="native")
    latency = {"p50 / p95 / p99", "p95 by endpoint", "Latency heatmap", "p95 by function"}

    def others(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in dashboard["panels"] if p["title"] not in latency]

    assert others(native) == others(classic)
    assert native["templating"] == classic["templating"]
    assert [p["gridPos"] for p in native["panels"]] == [p["gridPos"] for p in classic["panels"]]
    assert "_bucket" not in "\n".join(_panel_exprs(native))
    panels = {p["title"]: p for p in native["panels"]}
    selector = 'job="$job", instance=~"$instance"'
    series = f"wsgi_observe_request_duration_seconds{{{selector}}}[$__rate_interval]"
    assert [t["expr"] for t in panels["p50 / p95 / p99"]["targets"]] == [
        f"histogram_quantile({q}, sum(rate({series})))" for q in (0.5, 0.95, 0.99)
    ]
    (by_endpoint,) = panels["p95 by endpoint"]["targets"]
    assert by_endpoint["expr"].startswith("histogram_quantile(0.95, sum by (endpoint) (rate(")
    (by_function,) = panels["p95 by function"]["targets"]
    assert by_function["expr"] == (
        "histogram_quantile(0.95, sum by (function) "
        f"(rate(wsgi_observe_function_duration_seconds{{{selector}}}[$__rate_interval])))"
    )
    heatmap = panels["Latency heatmap"]
    assert heatmap["type"] == "heatmap" and heatmap["options"]["calculate"] is False
    (target,) = heatmap["targets"]
    assert target["format"] == "time_series"
    assert target["expr"] == (
        f"sum(increase(wsgi_observe_request_duration_seconds{{{selector}, "
        'endpoint=~"$endpoint"}[$__rate_interval]))'
    )


@pytest.mark.parametrize("target", ["prometheus-rules", "grafana-dashboard"])
def test_histograms_option_exports_the_native_form(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--histograms native prints the native examples; --histograms classic the default."""
    suffix = ".yml" if target == "prometheus-rules" else ".json"
    for form, name in (("native", f"{target}-native{suffix}"), ("classic", target + suffix)):
        assert main(["export", target, "--histograms", form]) == 0
        assert capsys.readouterr().out == EXAMPLES[name]()


def test_a_bad_histograms_value_raises_naming_it() -> None:
    """Anything but classic or native is refused by the functions as by the command."""
    with pytest.raises(ValueError, match=r"^histograms='Native': 'Native' is neither"):
        RuleOptions(histograms="Native")
    with pytest.raises(ValueError, match=r"^'' is neither classic nor native$"):
        grafana_dashboard(histograms="")


def test_alerts_have_severity_summary_description_and_a_runbook_in_the_readme() -> None:
    """Each of the five alerts has a severity and annotations; its runbook link points at a
    README heading that exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, flags=re.M)}
    (group,) = prometheus_rules(RuleOptions())["groups"]
    alerts = [rule for rule in group["rules"] if "alert" in rule]
    assert [a["alert"] for a in alerts] == list(ALERT_NAMES)
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}
        url, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert url == DEFAULT_RUNBOOK_URL
        assert anchor in anchors, f"README has no heading for #{anchor}"
    severities = {a["alert"]: a["labels"]["severity"] for a in alerts}
    assert {name for name, s in severities.items() if s == "critical"} == {
        "WsgiObserveErrorRateHigh",
        "WsgiObserveInstanceDown",
        "WsgiObserveNotReady",
    }


def _github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_options_change_the_thresholds_windows_and_job() -> None:
    """Thresholds, windows and the job are options: they show up in the expressions."""
    options = RuleOptions(
        job="crm",
        window="10m",
        error_ratio=0.1,
        latency_p95_s=1.5,
        min_requests=50,
        spike_factor=4,
        pending="5m",
        scrape_interval="30s",
        not_ready_for="3m",
        evaluation_interval="30s",
    )
    rules = prometheus_rules(options)
    text = "\n".join(_exprs(rules))
    assert 'job="wsgi_observe"' not in text and 'job="crm"' in text
    assert "[10m]" in text and "[5m]" not in text
    by_name = {r["alert"]: r for r in rules["groups"][0]["rules"] if "alert" in r}
    assert "> 0.1\n" in by_name["WsgiObserveErrorRateHigh"]["expr"]
    assert "* 600 >= 50" in by_name["WsgiObserveErrorRateHigh"]["expr"]
    assert "> 1.5\n" in by_name["WsgiObserveLatencyP95High"]["expr"]
    assert "4 * sum by (job)" in by_name["WsgiObserveTrafficSpike"]["expr"]
    assert [by_name[n]["for"] for n in ALERT_NAMES] == ["5m", "5m", "5m", "30s", "3m"]
    assert [(g["name"], g["interval"]) for g in rules["groups"]] == [("wsgi_observe.crm", "30s")]


def test_dashboard_has_the_variables_rows_and_queries_grafana_needs() -> None:
    """Data source, job, instance and endpoint variables; the seven rows in order; every
    panel on the data source variable; every range is $__rate_interval."""
    dashboard = grafana_dashboard("crm")
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] == "wsgi-observe"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "endpoint"]
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    assert variables["job"]["current"]["value"] == "crm"
    assert variables["instance"]["includeAll"] and variables["endpoint"]["multi"]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert (
        rows
        == list(ROWS)
        == [
            "Traffic",
            "Latency",
            "Errors",
            "Readiness",
            "Processes",
            "System",
            "Timed functions",
        ]
    )
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {p["type"] for p in panels} == {"timeseries", "heatmap"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert re.findall(r"\[[^\]]*\]", target["expr"]) in (
                [],
                ["[$__rate_interval]"] * target["expr"].count("["),
            )
            assert 'job="$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"]
    heatmap = next(p for p in panels if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"
    assert "rate(" in "".join(_panel_exprs(dashboard))


def test_dashboard_panels_do_not_overlap() -> None:
    """Panels sit inside the 24-column grid and never on top of each other."""
    taken: set[tuple[int, int]] = set()
    for panel in grafana_dashboard()["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_alertmanager_routes_critical_to_pagerduty_and_the_rest_to_the_named_receiver() -> None:
    """Grouped by alert and job; critical goes to PagerDuty with resolves; the key is a file."""
    from wsgi_observe.ops.alertmanager import AlertmanagerOptions

    config = alertmanager_config(AlertmanagerOptions(receiver="team-mail"))
    route = config["route"]
    assert route["receiver"] == "team-mail"
    assert route["group_by"] == ["alertname", "job"]
    assert route["routes"] == [{"receiver": "pagerduty", "matchers": ['severity="critical"']}]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert set(receivers) == {"team-mail", "pagerduty"}
    (pagerduty,) = receivers["pagerduty"]["pagerduty_configs"]
    assert pagerduty["send_resolved"] is True
    assert pagerduty["routing_key_file"] == "/etc/alertmanager/pagerduty_routing_key"
    assert "routing_key" not in pagerduty and "service_key" not in pagerduty


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["export", "grafana"],
            "unknown target 'grafana': expected prometheus-rules, grafana-dashboard or "
            "alertmanager",
            id="unknown-target",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--error-ratio", "five"],
            "argument --error-ratio: 'five' is not a number",
            id="not-a-number",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--latency-p95", "nan"],
            "argument --latency-p95: 'nan' is not a finite number",
            id="nan",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--error-ratio", "5"],
            "--error-ratio=5.0: expected a number between 0 and 1",
            id="ratio-out-of-range",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--window", "5 minutes"],
            "argument --window: '5 minutes' is not a duration like 30s, 5m, 1h or 1d",
            id="not-a-duration",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--window", "0s"],
            "--window='0s': '0s' must be longer than 0",
            id="zero-window",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--min-requests", "-3"],
            "argument --min-requests: '-3' is below 0",
            id="negative-count",
        ),
        pytest.param(
            ["export", "grafana-dashboard", "--latency-p95", "-1"],
            "--latency-p95=-1.0: expected a number above 0",
            id="dashboard-threshold",
        ),
        pytest.param(
            ["export", "prometheus-rules", "--histograms", "sparse"],
            "argument --histograms: 'sparse' is neither classic nor native",
            id="histograms-rules",
        ),
        pytest.param(
            ["export", "grafana-dashboard", "--histograms", ""],
            "argument --histograms: '' is neither classic nor native",
            id="histograms-dashboard",
        ),
        pytest.param(
            ["export", "alertmanager", "--histograms", "native"],
            "unrecognized arguments: --histograms native",
            id="histograms-alertmanager",
        ),
        pytest.param(
            ["export", "alertmanager", "--receiver", "pagerduty"],
            "--receiver='pagerduty': expected a name of letters, digits, '_', '.' or '-' "
            "(not 'pagerduty')",
            id="receiver-name",
        ),
        pytest.param(
            ["export", "alertmanager", "--job", "x"],
            "unrecognized arguments: --job x",
            id="option-of-another-target",
        ),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown targets, non-numbers and bad durations: one line on stderr, exit code 2."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"wsgi-observe export: error: {message}\n"


def test_an_unwritable_output_path_gets_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-o under a regular file (unwritable even for root): one line, exit code 2."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "rules.yml"
    assert main(["export", "prometheus-rules", "-o", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"wsgi-observe export: error: cannot write '{target}': Not a directory\n"
    )


@pytest.mark.parametrize("target", ["prometheus-rules", "grafana-dashboard", "alertmanager"])
def test_export_prints_or_writes_the_same_file(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -o the file goes to stdout; with -o it is written, and stdout stays empty."""
    assert main(["export", target]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "out"
    assert main(["export", target, "-o", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"wsgi-observe export: wrote {path}\n"
    assert path.read_text(encoding="utf-8") == printed
    if target == "grafana-dashboard":
        assert json.loads(printed)["title"] == "wsgi_observe"


def test_job_option_reaches_rules_and_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    """--job NAME selects that job in every rule and is the dashboard's default job."""
    assert main(["export", "prometheus-rules", "--job", "crm-api"]) == 0
    rules = capsys.readouterr().out
    assert 'job="crm-api"' in rules and 'job="wsgi_observe"' not in rules
    assert main(["export", "grafana-dashboard", "--job", "crm-api"]) == 0
    dashboard = json.loads(capsys.readouterr().out)
    assert dashboard["templating"]["list"][1]["current"]["value"] == "crm-api"


def test_prometheus_durations_are_parsed_like_prometheus() -> None:
    """Durations: units in Prometheus's order, whole numbers, nothing else."""
    assert duration_seconds("1d") == 86400
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("500ms") == 0.5
    for bad in ("", "5", "1.5h", "-1m", "5 m", "m", "1m1h"):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_yaml_writer_quotes_whatever_could_be_read_as_something_else() -> None:
    """Plain only when unambiguous; YAML 1.1 booleans, numbers, indicators, quotes, control
    characters and line breaks come out quoted, escaped or as literal blocks."""
    data = {
        "plain": "wsgi_observe.alerts",
        "duration": "5m",
        "record": "job:wsgi_observe_requests:rate5m",
        "bool_word": "yes",
        "off": "Off",
        "null_word": "~",
        "number": "1.5",
        "sexagesimal": "1:20",
        "colon_space": "a: b",
        "trailing_colon": "key:",
        "comment": "#x",
        "quotes": 'it\'s "so"',
        "control": "bell\x07",
        "tab": "a\tb",
        "unicode": "café ✓",
        "empty": "",
        "block": 'sum(x{job="a"})\n/\nsum(y)',
        "leading_space_block": " a\nb",
        "trailing_space_block": "a \nb",
        "values": [1, 2.5, True, None],
        "nested": [{"a": 1, "b": [{"c": "d"}]}, {}],
        "empty_list": [],
        "empty_map": {},
    }
    assert _yaml.dump(data, header="made by a test") == (
        "# made by a test\n"
        "plain: wsgi_observe.alerts\n"
        "duration: 5m\n"
        "record: job:wsgi_observe_requests:rate5m\n"
        "bool_word: 'yes'\n"
        "'off': 'Off'\n"
        "null_word: '~'\n"
        "number: '1.5'\n"
        "sexagesimal: '1:20'\n"
        "colon_space: 'a: b'\n"
        "trailing_colon: 'key:'\n"
        "comment: '#x'\n"
        "quotes: 'it''s \"so\"'\n"
        'control: "bell\\x07"\n'
        'tab: "a\\tb"\n'
        "unicode: 'café ✓'\n"
        'empty: ""\n'
        "block: |-\n"
        '  sum(x{job="a"})\n'
        "  /\n"
        "  sum(y)\n"
        'leading_space_block: " a\\nb"\n'
        'trailing_space_block: "a \\nb"\n'
        "values:\n"
        "  - 1\n"
        "  - 2.5\n"
        "  - true\n"
        "  - null\n"
        "nested:\n"
        "  - a: 1\n"
        "    b:\n"
        "      - c: d\n"
        "  - {}\n"
        "empty_list: []\n"
        "empty_map: {}\n"
    )


def test_yaml_writer_refuses_what_it_cannot_write() -> None:
    """Non-string keys, infinities and objects raise instead of writing something wrong."""
    for bad in ({1: "a"}, {"a": float("inf")}, {"a": object()}):
        with pytest.raises((TypeError, ValueError)):
            _yaml.dump(bad)  # type: ignore[arg-type]
