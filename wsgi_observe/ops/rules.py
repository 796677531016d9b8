"""Prometheus recording and alerting rules for a wsgi_observe scrape job (pure functions).

Recording rules (``level:metric:operation``) give the request rate, the error ratio and
p50/p95/p99 from the latency histogram, per job and per job and endpoint, over one window
(default 5m). They share one group with the alerts, evaluated in order, so each alert reads
what was recorded in the same evaluation.

The quantiles come from the classic ``_bucket`` series (``histograms="classic"``, the
default: every Prometheus has them), or from the native histograms
(``histograms="native"``), which a Prometheus scraping with
``--enable-feature=native-histograms`` stores instead (2.40 to 2.44 store only those;
2.45 and later also the classic ones with ``scrape_classic_histograms: true``). The
native form adds instances together without the classic buckets' guesswork; it records
the quantiles straight from ``rate()`` of the native series (no per-bucket rule, so no
histogram is ever recorded and the file works from Prometheus 2.40). Everything else is
the same in both forms, and so are the recorded names the alerts and runbooks read.

The alerting rules are the monitoring guide's:

- ``WsgiObserveErrorRateHigh`` (critical): errors (5xx answers and exceptions) above 5 %
  of requests over the window, once the window holds ``min_requests`` requests;
- ``WsgiObserveLatencyP95High`` (warning): p95 above 2 s over the window, same minimum;
- ``WsgiObserveTrafficSpike`` (warning): the request rate above 3 times the same window a
  day earlier (the guide's "up 200 %"); when there was no traffic data a day ago, above 3
  times the average of the hour before the window, once the job has an hour of history;
- ``WsgiObserveInstanceDown`` (critical): the target down for two scrapes in a row (``up``
  at 0 for one scrape interval);
- ``WsgiObserveNotReady`` (critical): a readiness check reported degraded or unhealthy
  for 2 minutes, one alert per check. Readiness series reflect the last ``/health/ready``
  run of the process that answered the scrape, so the alert reads the last value seen in
  the window (a scrape answered by a gunicorn worker that has not been probed yet does not
  end it); Kubernetes' readiness probe keeps them fresh.

Each alert has a ``severity`` label and ``summary``, ``description`` and ``runbook_url``
annotations; the runbook links point at the README's "Dashboards and alerts" section.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from . import _yaml
from .promql import (
    BUCKETS,
    CHECK_STATUS_SERIES,
    ERRORS_TOTAL,
    HISTOGRAM,
    QUANTILES,
    REQUESTS_TOTAL,
    check_duration,
    check_histograms,
    duration_seconds,
    matchers,
)

__all__ = [
    "ALERT_NAMES",
    "DEFAULT_JOB",
    "DEFAULT_RUNBOOK_URL",
    "RuleOptions",
    "prometheus_rules",
    "recording_names",
    "render_prometheus_rules",
    "runbook_anchor",
]

#: The scrape job the files select unless told otherwise (the README's scrape config).
DEFAULT_JOB = "wsgi_observe"
#: Where ``runbook_url`` annotations point: the README, whose headings are the anchors.
DEFAULT_RUNBOOK_URL = "https://github.com/wsgi-observe/wsgi_observe/blob/main/README.md"
#: The alerts, in the order they are written.
ALERT_NAMES = (
    "WsgiObserveErrorRateHigh",
    "WsgiObserveLatencyP95High",
    "WsgiObserveTrafficSpike",
    "WsgiObserveInstanceDown",
    "WsgiObserveNotReady",
)


def runbook_anchor(alert: str) -> str:
    """The README heading an alert's runbook link points at (GitHub's anchor of it)."""
    return alert.lower()


@dataclass(frozen=True)
class RuleOptions:
    """Thresholds and windows of the rules; every field is an option of the export command.

    ``job`` (the scrape job selected), ``window`` (the rate window of rules and alerts),
    ``error_ratio``, ``latency_p95_s``, ``min_requests`` (requests the window must hold
    before the error, latency and spike alerts judge), ``spike_factor``, ``spike_offset``
    (the earlier window compared with), ``spike_fallback`` (the baseline without that
    history), ``pending`` (``for`` of the error, latency and spike alerts),
    ``scrape_interval`` (``for`` of the instance-down alert: two failed scrapes),
    ``not_ready_for``, ``evaluation_interval`` (of the group; empty: Prometheus's
    global one), ``runbook_url`` and ``histograms`` (``classic`` or ``native``: which
    form of the latency histogram the quantiles come from). A bad value raises
    ``ValueError`` naming the field.
    """

    job: str = DEFAULT_JOB
    window: str = "5m"
    error_ratio: float = 0.05
    latency_p95_s: float = 2.0
    min_requests: int = 20
    spike_factor: float = 3.0
    spike_offset: str = "1d"
    spike_fallback: str = "1h"
    pending: str = "1m"
    scrape_interval: str = "15s"
    not_ready_for: str = "2m"
    evaluation_interval: str = ""
    runbook_url: str = DEFAULT_RUNBOOK_URL
    histograms: str = "classic"

    def __post_init__(self) -> None:
        if not self.job or not self.job.isprintable():
            raise ValueError(f"job={self.job!r}: expected a non-empty name")
        _field("histograms", check_histograms, self.histograms)
        for name in ("window", "spike_offset", "spike_fallback", "scrape_interval"):
            _field(name, lambda value: check_duration(value), getattr(self, name))
        for name in ("pending", "not_ready_for"):
            _field(name, lambda value: check_duration(value, zero=True), getattr(self, name))
        if self.evaluation_interval:
            _field("evaluation_interval", check_duration, self.evaluation_interval)
        if not 0 < self.error_ratio < 1:
            raise ValueError(f"error_ratio={self.error_ratio!r}: expected a number between 0 and 1")
        if not self.latency_p95_s > 0:
            raise ValueError(f"latency_p95_s={self.latency_p95_s!r}: expected a number above 0")
        if not self.spike_factor > 1:
            raise ValueError(f"spike_factor={self.spike_factor!r}: expected a number above 1")
        if isinstance(self.min_requests, bool) or self.min_requests < 0:
            raise ValueError(f"min_requests={self.min_requests!r}: expected a whole number >= 0")
        if not self.runbook_url.startswith(("http://", "https://")) or "#" in self.runbook_url:
            raise ValueError(
                f"runbook_url={self.runbook_url!r}: expected an http(s):// URL without #fragment"
            )

    @property
    def window_s(self) -> float:
        return duration_seconds(self.window)


def _field(name: str, check: Any, value: Any) -> None:
    try:
        check(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}={value!r}: {error}") from None


def _number(value: float) -> str:
    """A threshold as PromQL and people write it: ``0.05``, ``2``, ``3``."""
    return f"{value:.10g}"


def recording_names(options: RuleOptions) -> dict[str, str]:
    """The recorded series, by role: ``rate``, ``errors``, ``ratio``, ``buckets`` (classic
    histograms only), ``quantiles``, each per job, and the same with an ``endpoint_``
    prefix per endpoint. The names do not depend on the histograms' form."""
    rate = f"rate{options.window}"
    names = {
        "rate": f"job:{REQUESTS_TOTAL.removesuffix('_total')}:{rate}",
        "errors": f"job:{ERRORS_TOTAL.removesuffix('_total')}:{rate}",
        "ratio": f"job:wsgi_observe_request_error_ratio:{rate}",
        "buckets": f"job_le:{BUCKETS}:{rate}",
        "quantiles": f"job:{BUCKETS.removesuffix('_bucket')}:quantile_{rate}",
    }
    per_endpoint = {}
    for role, name in names.items():
        level, rest = name.split(":", 1)
        level = "job_endpoint_le" if level == "job_le" else "job_endpoint"
        per_endpoint[f"endpoint_{role}"] = f"{level}:{rest}"
    names = {**names, **per_endpoint}
    if options.histograms == "native":
        del names["buckets"], names["endpoint_buckets"]
    return names


def _recording(options: RuleOptions) -> list[dict[str, Any]]:
    names = recording_names(options)
    job = matchers(job=options.job)
    window = options.window
    rules: list[dict[str, Any]] = []
    for prefix, by in (("", "job"), ("endpoint_", "job, endpoint")):
        rules += [
            {
                "record": names[prefix + "rate"],
                "expr": f"sum by ({by}) (rate({REQUESTS_TOTAL}{job}[{window}]))",
            },
            {
                "record": names[prefix + "errors"],
                "expr": f"sum by ({by}) (rate({ERRORS_TOTAL}{job}[{window}]))",
            },
            {
                "record": names[prefix + "ratio"],
                "expr": f"{names[prefix + 'errors']}{job}\n/\n{names[prefix + 'rate']}{job}",
            },
        ]
        if options.histograms == "classic":
            rules.append(
                {
                    "record": names[prefix + "buckets"],
                    "expr": f"sum by ({by}, le) (rate({BUCKETS}{job}[{window}]))",
                }
            )
            source = f"{names[prefix + 'buckets']}{job}"
        else:  # sum() adds the instances' native histograms bucket by bucket
            source = f"sum by ({by}) (rate({HISTOGRAM}{job}[{window}]))"
        for quantile in QUANTILES:
            rules.append(
                {
                    "record": names[prefix + "quantiles"],
                    "expr": f"histogram_quantile({quantile}, {source})",
                    "labels": {"quantile": str(quantile)},
                }
            )
    return rules


def _alert(
    options: RuleOptions,
    name: str,
    expr: str,
    pending: str,
    severity: str,
    summary: str,
    description: str,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration_seconds(pending) > 0:
        rule["for"] = pending
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{options.runbook_url}#{runbook_anchor(name)}",
    }
    return rule


def _alerting(options: RuleOptions) -> list[dict[str, Any]]:
    names = recording_names(options)
    job = matchers(job=options.job)
    window = options.window
    enough = f"{names['rate']}{job} * {_number(options.window_s)} >= {options.min_requests}"
    ratio = _number(options.error_ratio)
    percent = f"{options.error_ratio * 100:.10g}%"
    p95 = matchers(job=options.job, quantile="0.95")
    factor = _number(options.spike_factor)
    day = options.spike_offset
    fallback = options.spike_fallback
    ago = f"sum by (job) (rate({REQUESTS_TOTAL}{job}[{window}] offset {day}))"
    hour = f"sum by (job) (rate({REQUESTS_TOTAL}{job}[{fallback}] offset {window}))"
    history = f"count by (job) ({REQUESTS_TOTAL}{job} offset {fallback})"
    not_ok = matchers(job=options.job, status="!=healthy")
    by_check = "job, instance, check, group, status"
    return [
        _alert(
            options,
            "WsgiObserveErrorRateHigh",
            f"{names['ratio']}{job} > {ratio}\nand on (job)\n{enough}",
            options.pending,
            "critical",
            f"{{{{ $labels.job }}}}: {{{{ $value | humanizePercentage }}}} of requests "
            f"failed over {window}",
            f"More than {percent} of the requests to {{{{ $labels.job }}}} failed (a 5xx "
            f"answer or an exception) over the last {window}, with at least "
            f"{options.min_requests} requests in it. {names['endpoint_ratio']} names the "
            "endpoints.",
        ),
        _alert(
            options,
            "WsgiObserveLatencyP95High",
            f"{names['quantiles']}{p95} > {_number(options.latency_p95_s)}\nand on (job)\n{enough}",
            options.pending,
            "warning",
            f"{{{{ $labels.job }}}}: p95 latency {{{{ $value | humanizeDuration }}}} over {window}",
            f"The 95th percentile of request durations of {{{{ $labels.job }}}} was above "
            f"{_number(options.latency_p95_s)}s over the last {window}, with at least "
            f"{options.min_requests} requests in it. {names['endpoint_quantiles']} names "
            "the slow endpoints.",
        ),
        _alert(
            options,
            "WsgiObserveTrafficSpike",
            "(\n"
            f"  {names['rate']}{job} > on (job) {factor} * {ago}\n"
            "  or\n"
            "  (\n"
            f"    {names['rate']}{job} > on (job) {factor} * {hour}\n"
            f"    unless on (job) {ago}\n"
            f"    and on (job) {history}\n"
            "  )\n"
            ")\n"
            f"and on (job)\n{enough}",
            options.pending,
            "warning",
            f"{{{{ $labels.job }}}}: {{{{ $value | humanize }}}} requests/s, over {factor} "
            "times the usual",
            f"The request rate of {{{{ $labels.job }}}} over the last {window} is more than "
            f"{factor} times the rate of the same window {day} earlier (without data from "
            f"then: of the {fallback} before). Check for a traffic surge, a retry storm or "
            "a crawler.",
        ),
        _alert(
            options,
            "WsgiObserveInstanceDown",
            f"up{job} == 0",
            options.scrape_interval,
            "critical",
            "{{ $labels.instance }} of {{ $labels.job }} is down",
            "Prometheus could not scrape /metrics of {{ $labels.instance }} two times in a "
            "row: the process is down, hung, or unreachable.",
        ),
        _alert(
            options,
            "WsgiObserveNotReady",
            f"max by ({by_check}) (\n"
            f"  last_over_time({CHECK_STATUS_SERIES}{not_ok}[{window}])\n"
            ") == 1",
            options.not_ready_for,
            "critical",
            "{{ $labels.instance }}: readiness check {{ $labels.check }} is {{ $labels.status }}",
            "/health/ready of {{ $labels.instance }} has reported the check "
            "{{ $labels.check }}{{ if $labels.group }} (in {{ $labels.group }}){{ end }} as "
            f"{{{{ $labels.status }}}} for {options.not_ready_for}, so it answers 503 and "
            "gets no traffic. Readiness series reflect the last /health/ready run.",
        ),
    ]


def prometheus_rules(options: RuleOptions = RuleOptions()) -> dict[str, Any]:
    """The rule file (``groups``) for ``options``, as a mapping.

    One group: its rules are evaluated in order, so each alert reads the recording rules
    of the same evaluation. (Alerts in a group of their own would read values up to one
    evaluation interval old, and which one would depend on which group ran first.)
    """
    name = "wsgi_observe"
    if options.job != DEFAULT_JOB:
        name += f".{options.job}"  # rules for several jobs can be loaded side by side
    group: dict[str, Any] = {"name": name}
    if options.evaluation_interval:
        group["interval"] = options.evaluation_interval
    group["rules"] = _recording(options) + _alerting(options)
    return {"groups": [group]}


def render_prometheus_rules(options: RuleOptions = RuleOptions()) -> str:
    """The rule file as YAML, with a comment saying what made it and with which options."""
    changed = [
        f"{f.name}={getattr(options, f.name)!r}"
        for f in fields(options)
        if getattr(options, f.name) != f.default
    ]
    header = (
        "Prometheus rules for wsgi_observe, made by: wsgi-observe export prometheus-rules\n"
        f"Options: {', '.join(changed) if changed else 'the defaults'}\n"
        "Load: add this file to rule_files in prometheus.yml; check it with\n"
        "promtool check rules <file>."
    )
    if options.histograms == "native":
        header += (
            "\nLatency quantiles from native histograms: for a Prometheus (2.40 or newer)\n"
            "started with --enable-feature=native-histograms (3.8 and later:\n"
            "scrape_native_histograms: true)."
        )
    return _yaml.dump(prometheus_rules(options), header=header)
