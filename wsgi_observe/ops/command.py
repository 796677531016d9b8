"""``wsgi-observe export prometheus-rules|grafana-dashboard|alertmanager [-o FILE] ...``

Prints the file (or writes it with ``-o FILE``). ``--histograms native`` makes the rules'
and the dashboard's latency queries read native histograms instead of the classic
``_bucket`` series. Bad input (an unknown target, an option that is not a number, a
duration or a histogram form, a path that cannot be written) gets one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn, Optional

from .alertmanager import AlertmanagerOptions, render_alertmanager_config
from .dashboard import render_grafana_dashboard
from .promql import check_duration, check_histograms
from .rules import DEFAULT_JOB, RuleOptions, render_prometheus_rules

__all__ = ["TARGETS", "main"]

PROG = "wsgi-observe export"
TARGETS = ("prometheus-rules", "grafana-dashboard", "alertmanager")


class _Usage(Exception):
    """A one-line complaint about the command line (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is below 0")
    return value


def _duration(text: str) -> str:
    try:
        return check_duration(text, zero=True)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _histograms(text: str) -> str:
    try:
        return check_histograms(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def _histograms_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--histograms",
        type=_histograms,
        default="classic",
        metavar="classic|native",
        help="latency from the _bucket series (classic, the default) or from native "
        "histograms (Prometheus with --enable-feature=native-histograms)",
    )


def _rule_options(parser: argparse.ArgumentParser) -> None:
    default = RuleOptions()
    add = parser.add_argument
    add("--window", type=_duration, default=default.window, help="rate window (5m)")
    add("--error-ratio", type=_number, default=default.error_ratio, help="error alert (0.05)")
    add("--latency-p95", type=_number, default=default.latency_p95_s, help="p95 alert, s (2)")
    add("--min-requests", type=_count, default=default.min_requests, help="in the window (20)")
    add("--spike-factor", type=_number, default=default.spike_factor, help="traffic spike (3)")
    add("--spike-offset", type=_duration, default=default.spike_offset, help="compared with (1d)")
    add("--spike-fallback", type=_duration, default=default.spike_fallback, help="else (1h)")
    add("--for", dest="pending", type=_duration, default=default.pending, help="pending (1m)")
    add("--scrape-interval", type=_duration, default=default.scrape_interval, help="(15s)")
    add("--not-ready-for", type=_duration, default=default.not_ready_for, help="(2m)")
    add("--evaluation-interval", type=_duration, default=None, help="of the rule groups")
    add("--runbook-url", default=default.runbook_url, help="base URL of the runbooks")


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Write Prometheus rules, a Grafana dashboard or an "
                     "Alertmanager config for wsgi_observe.")  # fmt: skip
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    rules = targets.add_parser("prometheus-rules", help="recording and alerting rules (YAML)")
    rules.add_argument("--job", default=DEFAULT_JOB, help=f"scrape job ({DEFAULT_JOB})")
    _common(rules)
    _histograms_option(rules)
    _rule_options(rules)
    dashboard = targets.add_parser("grafana-dashboard", help="the Grafana dashboard (JSON)")
    dashboard.add_argument("--job", default=DEFAULT_JOB, help=f"default job ({DEFAULT_JOB})")
    _common(dashboard)
    _histograms_option(dashboard)
    dashboard.add_argument("--error-ratio", type=_number, default=0.05, help="line at (0.05)")
    dashboard.add_argument("--latency-p95", type=_number, default=2.0, help="line at, s (2)")
    manager = targets.add_parser("alertmanager", help="routes critical alerts to PagerDuty (YAML)")
    _common(manager)
    default = AlertmanagerOptions()
    add = manager.add_argument
    add("--receiver", default=default.receiver, help="receiver of the other alerts (default)")
    add("--routing-key-file", default=default.routing_key_file, help="PagerDuty key's file")
    add("--pagerduty-url", default=default.pagerduty_url, help="Events API v2 endpoint")
    for name in ("group_wait", "group_interval", "repeat_interval", "resolve_timeout"):
        add(f"--{name.replace('_', '-')}", type=_duration, default=getattr(default, name))
    return parser


# Option fields -> the command-line option that sets them (for error messages).
_OPTION_OF = {
    "latency_p95_s": "--latency-p95",
    "pending": "--for",
}


def _render(args: argparse.Namespace) -> str:
    if args.target == "prometheus-rules":
        return render_prometheus_rules(
            _build(
                RuleOptions,
                job=args.job,
                window=args.window,
                error_ratio=args.error_ratio,
                latency_p95_s=args.latency_p95,
                min_requests=args.min_requests,
                spike_factor=args.spike_factor,
                spike_offset=args.spike_offset,
                spike_fallback=args.spike_fallback,
                pending=args.pending,
                scrape_interval=args.scrape_interval,
                not_ready_for=args.not_ready_for,
                evaluation_interval=args.evaluation_interval or "",
                runbook_url=args.runbook_url,
                histograms=args.histograms,
            )
        )
    if args.target == "grafana-dashboard":
        # The same checks as the rules' (a job name, a ratio between 0 and 1, ...).
        _build(
            RuleOptions, job=args.job, error_ratio=args.error_ratio, latency_p95_s=args.latency_p95
        )
        return render_grafana_dashboard(
            args.job,
            error_ratio=args.error_ratio,
            latency_p95_s=args.latency_p95,
            histograms=args.histograms,
        )
    return render_alertmanager_config(
        _build(
            AlertmanagerOptions,
            receiver=args.receiver,
            routing_key_file=args.routing_key_file,
            pagerduty_url=args.pagerduty_url,
            group_wait=args.group_wait,
            group_interval=args.group_interval,
            repeat_interval=args.repeat_interval,
            resolve_timeout=args.resolve_timeout,
        )
    )


def _build(kind: Callable[..., Any], **values: Any) -> Any:
    try:
        return kind(**values)
    except ValueError as error:
        text = str(error)
        field, sep, rest = text.partition("=")
        if not sep or " " in field:
            field, sep, rest = text.partition(":")
            sep = ":" if sep else ""
        option = _OPTION_OF.get(field, "--" + field.replace("_", "-"))
        raise _Usage(f"{option}{sep}{rest}" if sep else text) from None


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        raise _Usage(f"cannot write {path!r}: {error.strerror or error}") from None


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``wsgi-observe export``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in TARGETS:
            raise _Usage(
                f"unknown target {argv[0]!r}: expected prometheus-rules, grafana-dashboard "
                "or alertmanager"
            )
        args = _parser().parse_args(argv)
        text = _render(args)
        if args.output:
            _write(args.output, text)
            print(f"{PROG}: wrote {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(text)
    except _Usage as problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    except SystemExit as leaving:  # --help
        return leaving.code if isinstance(leaving.code, int) else 0
    return 0
