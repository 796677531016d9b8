"""``wsgi-observe uptimerobot setup [--dry-run]``: make the guide's monitors exist once.

Command line (the ``wsgi_observe`` CLI passes the words after ``uptimerobot``)::

    python -m wsgi_observe uptimerobot setup [--dry-run]

Exit codes: 0 done, 1 the API refused or could not be reached, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from ..config import Config, ConfigError
from .client import DEFAULT_BASE_URL, UptimeRobotClient, UptimeRobotError
from .plan import (
    DEFAULT_MONITORS,
    Action,
    AlertContactSpec,
    MonitorSpec,
    default_prefix,
    load_monitors,
    setup_monitors,
)

__all__ = ["SetupSettings", "main"]

_DEFAULT_SERVICE_NAME = Config.service_name  # the dataclass default: "wsgi-app"


@dataclass(frozen=True)
class SetupSettings:
    """What ``uptimerobot setup`` needs: a view of :class:`~wsgi_observe.Config`, which is
    where every variable is read and validated.

    Parameters:
        api_key: UptimeRobot main API key (never shown in ``repr``).
        base_url: the application's public URL that UptimeRobot checks.
        api_url: the API root (default ``https://api.uptimerobot.com/v2``).
        prefix: put before every monitor name.
        monitors: the plan.
        alert_contacts: contacts to create if missing and attach.

    Example::

        settings = SetupSettings.from_config(Config.from_env())
        with UptimeRobotClient(settings.api_key, settings.api_url) as client:
            setup_monitors(client, settings.base_url, settings.monitors, settings.prefix)

    Reads nothing itself. From the :class:`~wsgi_observe.Config`: ``UPTIMEROBOT_API_KEY``
    and ``APP_BASE_URL`` (required here); ``UPTIMEROBOT_API_URL``, ``UPTIMEROBOT_PREFIX``,
    ``WSGI_OBSERVE_SERVICE_NAME``, ``UPTIMEROBOT_MONITORS_FILE``, ``UPTIMEROBOT_ALERT_EMAIL``,
    ``UPTIMEROBOT_ALERT_SMS``, ``UPTIMEROBOT_ALERT_WEBHOOK`` (optional).
    """

    api_key: str = field(repr=False)
    base_url: str
    api_url: str = DEFAULT_BASE_URL
    prefix: str = ""
    monitors: tuple[MonitorSpec, ...] = DEFAULT_MONITORS
    alert_contacts: tuple[AlertContactSpec, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> SetupSettings:
        """The settings ``config`` gives; a missing key or base URL, or a monitors file that
        cannot be used, raises ``ConfigError`` naming the variable."""
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
        # A service that named itself (WSGI_OBSERVE_SERVICE_NAME) gives the prefix; one that
        # did not is told apart by its host name.
        named = config.service_name != _DEFAULT_SERVICE_NAME
        prefix = config.uptimerobot_prefix or (
            config.service_name if named else default_prefix(base_url)
        )
        monitors = DEFAULT_MONITORS
        if config.uptimerobot_monitors_file:
            monitors = load_monitors(config.uptimerobot_monitors_file)
        contacts = []
        if config.uptimerobot_alert_email:
            contacts.append(AlertContactSpec("email", config.uptimerobot_alert_email))
        if config.uptimerobot_alert_sms:
            contacts.append(AlertContactSpec("sms", config.uptimerobot_alert_sms))
        if config.uptimerobot_alert_webhook:
            contacts.append(AlertContactSpec("webhook", config.uptimerobot_alert_webhook))
        return cls(api_key, base_url, config.uptimerobot_api_url, prefix, monitors, tuple(contacts))


def _summary(actions: Sequence[Action], dry_run: bool) -> str:
    counts = {kind: 0 for kind in ("create", "update", "unchanged", "duplicate")}
    for action in actions:
        if action.kind in counts:
            counts[action.kind] += 1
    words = "would create" if dry_run else "created"
    text = (
        f"{counts['create']} {words}, {counts['update']} "
        f"{'would update' if dry_run else 'updated'}, {counts['unchanged']} unchanged, "
        f"{counts['duplicate']} duplicate"
    )
    return f"dry run: {text}; nothing was changed" if dry_run else text


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsgi-observe uptimerobot",
        description="Manage the UptimeRobot monitors of this service.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    setup = commands.add_parser(
        "setup",
        help="create or update the monitors so each exists exactly once",
        description="Create the missing monitors, update drifted ones, never duplicate. "
        "Reads UPTIMEROBOT_API_KEY and APP_BASE_URL.",
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    return parser


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``uptimerobot setup [--dry-run]``; returns 0 done, 1 API refused, 2 bad configuration."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = SetupSettings.from_config(Config.from_env())
    except ConfigError as exc:
        print(f"uptimerobot setup: {exc}", file=err)
        return 2
    dry_run = bool(args.dry_run)
    actions: list[Action] = []

    def show(action: Action) -> None:
        actions.append(action)
        print(action.describe(dry_run), file=out, flush=True)

    try:
        with UptimeRobotClient(settings.api_key, base_url=settings.api_url) as client:
            setup_monitors(
                client,
                settings.base_url,
                settings.monitors,
                settings.prefix,
                dry_run=dry_run,
                alert_contacts=settings.alert_contacts,
                on_action=show,
            )
    except UptimeRobotError as exc:
        done = sum(1 for a in actions if a.done and a.is_write)
        progress = f" ({done} change{'s' if done != 1 else ''} made; run again to finish)"
        print(f"uptimerobot setup: UptimeRobot API: {exc}{progress if done else ''}", file=err)
        return 1
    print(_summary(actions, dry_run), file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
