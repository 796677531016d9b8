"""``wsgi-observe uptimerobot setup``: make this app's monitors exist once in UptimeRobot.

Command line (the ``wsgi_observe`` CLI passes the words after ``uptimerobot``)::

    wsgi-observe uptimerobot setup [--dry-run] [--api v3|v2]
        [--monitor NAME=[METHOD:]/PATH[:INTERVAL]]... [--skip NAME]... [--monitors-file PATH]

API v3 by default; API v2 with ``--api v2`` or ``UPTIMEROBOT_API_VERSION=2``. Exit codes: 0
done, 1 the API refused or could not be reached (``--dry-run`` still prints the plan then),
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

from ..config import DEFAULT_UPTIMEROBOT_API_URL, ENV_VARS, Config, ConfigError
from . import schema_v3
from ._wire import UptimeRobotError
from .accounts import setup_monitors
from .client_v2 import UptimeRobotClient
from .client_v3 import UptimeRobotV3Client
from .plan import (
    DEFAULT_MONITORS,
    METRICS,
    MONITOR_OPTION_SYNTAX,
    Action,
    AlertContactSpec,
    MonitorSpec,
    check_unique,
    default_monitors,
    default_prefix,
    load_monitors,
    parse_monitor_option,
    planned_actions,
)

__all__ = ["API_ROOTS", "SetupSettings", "main", "make_client"]

_DEFAULT_SERVICE_NAME = Config.service_name  # the dataclass default: "wsgi-app"

#: The default API root of each version.
API_ROOTS = {2: DEFAULT_UPTIMEROBOT_API_URL, 3: schema_v3.DEFAULT_BASE_URL}

# Every Config field setup uses, with what it does here: --help lists them.
_READS = {
    "uptimerobot_api_key": "main API key of the account (required; never printed)",
    "app_base_url": "public URL of the app that UptimeRobot checks (required)",
    "uptimerobot_api_version": "3 (default) or 2; --api overrides it",
    "uptimerobot_api_url": "API root (default: https://api.uptimerobot.com/v3, or /v2)",
    "uptimerobot_timeout": "seconds one API call may take, retries included (default 60)",
    "uptimerobot_prefix": "put before monitor names (default: service name, else the host)",
    "service_name": "the service name the prefix defaults to",
    "uptimerobot_monitors_file": "JSON monitors file (like --monitors-file)",
    "uptimerobot_alert_email": "e-mail alert contact to create and attach",
    "uptimerobot_alert_sms": "SMS alert contact to attach (API v3 cannot create one)",
    "uptimerobot_alert_webhook": "webhook alert contact to create and attach",
    "metrics_token": "when set, /metrics needs a token: no /metrics monitor",
}


@dataclass(frozen=True)
class SetupSettings:
    """What ``uptimerobot setup`` needs: a view of :class:`~wsgi_observe.Config`, which is
    where every variable is read and validated, plus the command line's monitors.

    Parameters:
        api_key: UptimeRobot main API key (never shown in ``repr``).
        base_url: the application's public URL that UptimeRobot checks.
        api_version: 3 or 2.
        api_url: the API root (default: the version's, ``https://api.uptimerobot.com/v3``).
        timeout_s: seconds one API call may take, retries included.
        prefix: put before every monitor name.
        monitors: the plan.
        alert_contacts: contacts to create if missing and attach.
        skipped: ``(name, reason)`` of default monitors left out of the plan.

    Example::

        settings = SetupSettings.from_config(Config.from_env())
        with make_client(settings) as client:
            setup_monitors(client, settings.base_url, settings.monitors, settings.prefix)

    Reads nothing itself. From the :class:`~wsgi_observe.Config`: ``UPTIMEROBOT_API_KEY``
    and ``APP_BASE_URL`` (required here); ``UPTIMEROBOT_API_VERSION``,
    ``UPTIMEROBOT_API_URL``, ``UPTIMEROBOT_TIMEOUT``, ``UPTIMEROBOT_PREFIX``,
    ``WSGI_OBSERVE_SERVICE_NAME``, ``UPTIMEROBOT_MONITORS_FILE``,
    ``UPTIMEROBOT_ALERT_EMAIL``, ``UPTIMEROBOT_ALERT_SMS``, ``UPTIMEROBOT_ALERT_WEBHOOK``
    and ``WSGI_OBSERVE_METRICS_TOKEN`` (optional).
    """

    api_key: str = field(repr=False)
    base_url: str
    api_version: int = 3
    api_url: str = schema_v3.DEFAULT_BASE_URL
    timeout_s: float = 60.0
    prefix: str = ""
    monitors: tuple[MonitorSpec, ...] = DEFAULT_MONITORS
    alert_contacts: tuple[AlertContactSpec, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        monitors_file: str | None = None,
        extra_monitors: Sequence[MonitorSpec] = (),
        skip: Sequence[str] = (),
    ) -> SetupSettings:
        """The settings ``config`` gives, with the command line's ``--monitors-file``,
        ``--monitor`` and ``--skip``. A missing key or base URL, an API root of the other
        version, or monitors that cannot be used raise ``ConfigError`` naming the variable
        or option."""
        api_key = config.uptimerobot_api_key
        if not api_key:
            raise ConfigError(
                "UPTIMEROBOT_API_KEY is not set: expected your UptimeRobot main API key"
            )
        base_url = config.app_base_url
        if not base_url:
            raise ConfigError(
                "APP_BASE_URL is not set: expected the public http(s):// URL of the application"
            )
        version = config.uptimerobot_api_version
        api_url = config.uptimerobot_api_url or API_ROOTS[version]
        other = urlsplit(api_url).path.rstrip("/").rsplit("/", 1)[-1].lower()
        if other in ("v2", "v3") and other != f"v{version}":
            raise ConfigError(
                f"UPTIMEROBOT_API_URL={api_url!r} is an API {other} root, but the API version "
                f"is {version}: set UPTIMEROBOT_API_VERSION (or --api) to match, or unset "
                "UPTIMEROBOT_API_URL"
            )
        # A service that named itself (WSGI_OBSERVE_SERVICE_NAME) gives the prefix; one that
        # did not is told apart by its host name.
        named = config.service_name != _DEFAULT_SERVICE_NAME
        prefix = config.uptimerobot_prefix or (
            config.service_name if named else default_prefix(base_url)
        )
        metrics_public = not config.metrics_token
        skipped: list[tuple[str, str]] = []
        path = monitors_file or config.uptimerobot_monitors_file
        if path:
            variable = "--monitors-file" if monitors_file else "UPTIMEROBOT_MONITORS_FILE"
            monitors = list(load_monitors(path, variable, metrics_public=metrics_public))
        else:
            monitors = list(default_monitors(metrics_public=metrics_public))
        uses_defaults = not path or any(m in DEFAULT_MONITORS for m in monitors)
        if not metrics_public and uses_defaults and METRICS.name not in {m.name for m in monitors}:
            reason = (
                "/metrics needs the WSGI_OBSERVE_METRICS_TOKEN token, which UptimeRobot cannot send"
            )
            skipped.append((METRICS.name, reason))
        for name in skip:
            match = [m for m in monitors if m.name.lower() == name.strip().lower()]
            if not match:
                names = ", ".join(repr(m.name) for m in monitors)
                raise ConfigError(
                    f"--skip {name!r}: no monitor of that name (the plan has {names})"
                )
            monitors.remove(match[0])
            skipped.append((match[0].name, "left out with --skip"))
        for spec in extra_monitors:  # --monitor with a plan's name replaces that monitor
            monitors = [m for m in monitors if m.name != spec.name] + [spec]
        try:
            check_unique(monitors)
        except ValueError as exc:
            raise ConfigError(f"--monitor: {exc}") from None
        contacts = []
        if config.uptimerobot_alert_email:
            contacts.append(AlertContactSpec("email", config.uptimerobot_alert_email))
        if config.uptimerobot_alert_sms:
            contacts.append(AlertContactSpec("sms", config.uptimerobot_alert_sms))
        if config.uptimerobot_alert_webhook:
            contacts.append(AlertContactSpec("webhook", config.uptimerobot_alert_webhook))
        return cls(
            api_key,
            base_url,
            version,
            api_url,
            config.uptimerobot_timeout,
            prefix,
            tuple(monitors),
            tuple(contacts),
            tuple(skipped),
        )


def make_client(settings: SetupSettings) -> UptimeRobotClient | UptimeRobotV3Client:
    """The client of ``settings.api_version``, with its root and time budget."""
    cls = UptimeRobotV3Client if settings.api_version == 3 else UptimeRobotClient
    return cls(
        settings.api_key,
        base_url=settings.api_url,
        timeout=min(10.0, settings.timeout_s),
        max_total_time=settings.timeout_s,
    )


def _summary(actions: Sequence[Action], dry_run: bool) -> str:
    counts = {
        kind: 0 for kind in ("create", "update", "replace", "unchanged", "duplicate", "extra")
    }
    for action in actions:
        if action.kind in counts:
            counts[action.kind] += 1
    would = "would " if dry_run else ""
    text = (
        f"{counts['create']} {'would create' if dry_run else 'created'}, {counts['update']} "
        f"{'would update' if dry_run else 'updated'}, {counts['unchanged']} unchanged, "
        f"{counts['duplicate']} duplicate"
    )
    if counts["replace"]:
        text += f", {counts['replace']} {would}{'replace' if dry_run else 'replaced'}"
    if counts["extra"]:
        text += f", {counts['extra']} left alone"
    return f"dry run: {text}; nothing was changed" if dry_run else text


def _variables_help() -> str:
    lines = ["environment (read through wsgi_observe.Config, which also validates the rest):"]
    for name, meaning in _READS.items():
        lines.append(f"  {ENV_VARS[name].env:<28} {meaning}")
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    epilog = _variables_help()
    parser = argparse.ArgumentParser(
        prog="wsgi-observe uptimerobot",
        description="Manage the UptimeRobot monitors of this app.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    setup = commands.add_parser(
        "setup",
        help="create or update the monitors so each exists exactly once",
        description="Create the missing monitors, update drifted ones, never duplicate, never "
        "touch a monitor without this app's prefix. Default monitors: HEAD /health, GET "
        "/health/ready (keyword 'healthy'), HEAD /health/live, GET /metrics (unless it needs "
        "a token) and the app's main URL.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    setup.add_argument(
        "--api",
        choices=("v3", "v2", "3", "2"),
        help="UptimeRobot API to speak (default v3, or UPTIMEROBOT_API_VERSION)",
    )
    setup.add_argument(
        "--monitor",
        action="append",
        default=[],
        metavar=MONITOR_OPTION_SYNTAX,
        help="add a monitor of your app, e.g. 'Orders API=GET:/api/orders:10m' (METHOD "
        "defaults to GET, INTERVAL to 5m; seconds or s/m/h); a default's name replaces it",
    )
    setup.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a monitor of the plan out, e.g. 'Main URL' for an app with no page at /",
    )
    setup.add_argument(
        "--monitors-file",
        metavar="PATH",
        help='JSON list of monitors replacing the defaults, or {"monitors": [...], '
        '"defaults": true} to add to them (like UPTIMEROBOT_MONITORS_FILE)',
    )
    return parser


def _hint(exc: UptimeRobotError) -> str:
    if exc.status == 401 or exc.parameter_name == "api_key":
        return "; check UPTIMEROBOT_API_KEY (the account's main API key)"
    if exc.status == 403:
        return "; read-only and monitor-specific keys cannot change monitors"
    return ""


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``uptimerobot setup ...``; returns 0 done, 1 API refused or unreachable, 2 bad
    configuration or usage."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        extra = [parse_monitor_option(text) for text in args.monitor]
        overrides = {"uptimerobot_api_version": args.api} if args.api else {}
        settings = SetupSettings.from_config(
            Config.from_env(**overrides),
            monitors_file=args.monitors_file,
            extra_monitors=extra,
            skip=args.skip,
        )
    except ValueError as exc:  # ConfigError, or a --monitor that cannot be parsed
        text = str(exc) if isinstance(exc, ConfigError) else f"--monitor {exc}"
        print(f"uptimerobot setup: {text}", file=err)
        return 2
    dry_run = bool(args.dry_run)
    prefix = settings.prefix
    print(
        f"UptimeRobot API v{settings.api_version} ({settings.api_url}); monitors of "
        f"{settings.base_url} named '{prefix} - ...'",
        file=out,
    )
    for name, reason in settings.skipped:
        print(f"{'skipped':<12} {f'{prefix} - {name}' if prefix else name}: {reason}", file=out)
    actions: list[Action] = []

    def show(action: Action) -> None:
        actions.append(action)
        print(action.describe(dry_run), file=out, flush=True)

    try:
        with make_client(settings) as client:
            setup_monitors(
                client,
                settings.base_url,
                settings.monitors,
                prefix,
                dry_run=dry_run,
                alert_contacts=settings.alert_contacts,
                on_action=show,
            )
    except UptimeRobotError as exc:
        if dry_run:
            return _plan_without_account(settings, actions, exc, out, err)
        done = sum(1 for a in actions if a.done and a.is_write)
        progress = f" ({done} change{'s' if done != 1 else ''} made; run again to finish)"
        message = f"uptimerobot setup: UptimeRobot API: {exc}{_hint(exc)}"
        print(message + (progress if done else ""), file=err)
        return 1
    print(_summary(actions, dry_run), file=out)
    return 0


def _plan_without_account(
    settings: SetupSettings,
    shown: Sequence[Action],
    exc: UptimeRobotError,
    out: TextIO,
    err: TextIO,
) -> int:
    """A dry run whose API could not be asked: print the plan as it is, say so, exit 1."""
    contacts_shown = any(a.kind.startswith("contact") or a.kind == "create_contact" for a in shown)
    for action in planned_actions(
        settings.base_url,
        settings.monitors,
        settings.prefix,
        () if contacts_shown else settings.alert_contacts,
    ):
        print(action.describe(dry_run=True), file=out)
    print(
        f"uptimerobot setup: could not compare the plan with what exists in UptimeRobot "
        f"(UptimeRobot API: {exc}{_hint(exc)}); above is what should exist; nothing was changed",
        file=err,
    )
    return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
