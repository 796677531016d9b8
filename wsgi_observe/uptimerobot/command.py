"""``wsgi-observe uptimerobot setup [--dry-run]``: make the guide's monitors exist once.

Command line (the ``wsgi_observe`` CLI passes the words after ``uptimerobot``)::

    python -m wsgi_observe uptimerobot setup [--dry-run]

Exit codes: 0 done, 1 the API refused or could not be reached, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

from ..config import ConfigError
from .client import DEFAULT_BASE_URL, UptimeRobotClient, UptimeRobotError
from .plan import (
    DEFAULT_MONITORS,
    Action,
    AlertContactSpec,
    MonitorSpec,
    _norm_value,
    default_prefix,
    load_monitors,
    setup_monitors,
)

__all__ = ["SetupSettings", "main"]


def _http_url(variable: str, raw: str) -> str:
    value = raw.strip()
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{variable}={raw!r}: not a valid URL (bad port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ConfigError(f"{variable}={raw!r}: expected an http(s):// URL")
    if parts.username is not None or parts.password is not None:
        # Do not echo it: the credentials are the problem.
        raise ConfigError(f"{variable}: must not contain credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{variable}={raw!r}: expected no ?query or #fragment")
    return value.rstrip("/")


@dataclass(frozen=True)
class SetupSettings:
    """What ``uptimerobot setup`` needs, read and validated once from the environment.

    Parameters:
        api_key: UptimeRobot main API key (never shown in ``repr``).
        base_url: the application's public URL that UptimeRobot checks.
        api_url: the API root (default ``https://api.uptimerobot.com/v2``).
        prefix: put before every monitor name.
        monitors: the plan.
        alert_contacts: contacts to create if missing and attach.

    Example::

        settings = SetupSettings.from_env()
        with UptimeRobotClient(settings.api_key, settings.api_url) as client:
            setup_monitors(client, settings.base_url, settings.monitors, settings.prefix)

    Environment: ``UPTIMEROBOT_API_KEY`` and ``APP_BASE_URL`` (required);
    ``UPTIMEROBOT_API_URL``, ``UPTIMEROBOT_PREFIX``, ``WSGI_OBSERVE_SERVICE_NAME``,
    ``UPTIMEROBOT_MONITORS_FILE``, ``UPTIMEROBOT_ALERT_EMAIL``, ``UPTIMEROBOT_ALERT_SMS``,
    ``UPTIMEROBOT_ALERT_WEBHOOK`` (optional).
    """

    api_key: str = field(repr=False)
    base_url: str
    api_url: str = DEFAULT_BASE_URL
    prefix: str = ""
    monitors: tuple[MonitorSpec, ...] = DEFAULT_MONITORS
    alert_contacts: tuple[AlertContactSpec, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SetupSettings:
        """Read the variables; a bad or missing one raises ``ConfigError`` naming it."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return (env.get(name) or "").strip()

        api_key = get("UPTIMEROBOT_API_KEY")
        if not api_key:
            raise ConfigError(
                "UPTIMEROBOT_API_KEY is not set: expected your UptimeRobot main API key"
            )
        if not get("APP_BASE_URL"):
            raise ConfigError(
                "APP_BASE_URL is not set: expected the public http(s):// URL of the application"
            )
        base_url = _http_url("APP_BASE_URL", get("APP_BASE_URL"))
        api_url = _http_url("UPTIMEROBOT_API_URL", get("UPTIMEROBOT_API_URL") or DEFAULT_BASE_URL)
        prefix = (
            get("UPTIMEROBOT_PREFIX")
            or get("WSGI_OBSERVE_SERVICE_NAME")
            or default_prefix(base_url)
        )
        monitors = DEFAULT_MONITORS
        if get("UPTIMEROBOT_MONITORS_FILE"):
            monitors = load_monitors(get("UPTIMEROBOT_MONITORS_FILE"))
        contacts = []
        email = get("UPTIMEROBOT_ALERT_EMAIL")
        if email:
            if "@" not in email or " " in email:
                raise ConfigError(f"UPTIMEROBOT_ALERT_EMAIL={email!r}: expected an e-mail address")
            contacts.append(AlertContactSpec("email", email))
        sms = get("UPTIMEROBOT_ALERT_SMS")
        if sms:
            digits = _norm_value("sms", sms)
            if len(digits.lstrip("+")) < 6 or any(c.isalpha() for c in sms):
                # Do not echo a phone number into logs.
                raise ConfigError(
                    "UPTIMEROBOT_ALERT_SMS: expected a phone number like +15551234567"
                )
            contacts.append(AlertContactSpec("sms", sms))
        webhook = get("UPTIMEROBOT_ALERT_WEBHOOK")
        if webhook:
            parts = urlsplit(webhook)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Webhook URLs often embed a secret token: do not echo it.
                raise ConfigError("UPTIMEROBOT_ALERT_WEBHOOK: expected an http(s):// URL")
            contacts.append(AlertContactSpec("webhook", webhook))
        return cls(api_key, base_url, api_url, prefix, monitors, tuple(contacts))


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
        settings = SetupSettings.from_env()
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
