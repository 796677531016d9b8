"""Which monitors should exist, and what to do so that each exists exactly once.

The plan is the monitoring guide's five monitors (``DEFAULT_MONITORS``), named
``"{prefix} - {name}"`` so that several services can share one UptimeRobot account.
:func:`setup_monitors` is idempotent:

- existing monitors are matched by friendly name, and only names of this plan (with
  this prefix) are ever touched; everything else in the account is left alone;
- a missing monitor is created; one whose URL, interval, HTTP method or alert contacts
  drifted is updated; one that matches is left unchanged;
- if the account already holds several monitors with one of our names, none is added,
  none is changed, and the duplicate is reported;
- so a second run makes no write call at all, and a run that was interrupted is
  finished by running it again.

Alert contacts are created once if missing and attached to every monitor, with the
guide's "alert after 2 consecutive failures". API v2 expresses that threshold in minutes
of downtime ("if down for x minutes"), so it is ``(failures - 1) * interval`` per monitor:
5 minutes for a 5-minute monitor. UptimeRobot applies thresholds on paid plans only (free
accounts report 0), so drift of alert contacts is judged by which contacts are attached,
not by their thresholds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..config import ConfigError
from .client import ALERT_CONTACT_TYPES, HTTP_METHODS, UptimeRobotClient

__all__ = [
    "ALERT_AFTER_FAILURES",
    "DEFAULT_MONITORS",
    "Action",
    "AlertContactSpec",
    "MonitorSpec",
    "alert_threshold_minutes",
    "default_prefix",
    "load_monitors",
    "monitor_name",
    "plan_monitors",
    "setup_monitors",
]

#: The guide's "Alert Threshold: 2 consecutive failures".
ALERT_AFTER_FAILURES = 2

# Thresholds API v2 accepts, in minutes.
_THRESHOLDS: tuple[int, ...] = (
    *range(16), 20, 30, 35, 40, 45, 50, 55, 60, 70, 80, 90, 100, 110, 120,
    150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600, 660, 720,
)  # fmt: skip

_SPEC_KEYS = ("name", "path", "method", "interval_s")


@dataclass(frozen=True)
class MonitorSpec:
    """One monitor of the plan: a name (without prefix), a path, a method, an interval.

    Parameters:
        name: shown in UptimeRobot as ``"{prefix} - {name}"``.
        path: appended to the base URL; starts with ``/``.
        method: ``HEAD``, ``GET``, ``POST``, ``PUT``, ``PATCH``, ``DELETE`` or ``OPTIONS``.
        interval_s: seconds between checks, at least 60 (the free plan allows 300+).

    Example::

        spec = MonitorSpec("Orders API", "/api/orders", "HEAD", 300)
        spec.url("https://api.example.com")   # 'https://api.example.com/api/orders'
        setup_monitors(client, "https://api.example.com", monitors=[spec])

    Environment: none (``UPTIMEROBOT_MONITORS_FILE`` holds a JSON list of these).
    """

    name: str
    path: str
    method: str = "GET"
    interval_s: int = 300

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name={self.name!r}: expected a non-empty string")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"path={self.path!r}: expected a path starting with '/'")
        method = self.method.strip().upper() if isinstance(self.method, str) else ""
        if method not in HTTP_METHODS:
            raise ValueError(f"method={self.method!r}: expected one of {', '.join(HTTP_METHODS)}")
        interval = self.interval_s
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 60:
            raise ValueError(f"interval_s={interval!r}: expected whole seconds, at least 60")
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "method", method)

    def url(self, base_url: str) -> str:
        """The full URL UptimeRobot checks."""
        return base_url.rstrip("/") + self.path


#: The monitoring guide's five monitors.
DEFAULT_MONITORS: tuple[MonitorSpec, ...] = (
    MonitorSpec("Main Health Check", "/health", "HEAD", 300),
    MonitorSpec("Readiness Check", "/health/ready", "GET", 300),
    MonitorSpec("API Liveness", "/health/live", "HEAD", 180),
    MonitorSpec("Lead API", "/api/leads", "HEAD", 600),
    MonitorSpec("Metrics Endpoint", "/metrics", "GET", 600),
)


@dataclass(frozen=True)
class AlertContactSpec:
    """An alert contact to make sure exists: ``kind`` is ``email``, ``sms`` or ``webhook``."""

    kind: str
    value: str

    @property
    def type_code(self) -> int:
        return ALERT_CONTACT_TYPES[self.kind]

    def matches(self, contact: Mapping[str, Any]) -> bool:
        """Whether an API alert contact is this one (same type and address)."""
        try:
            same_type = int(contact.get("type", -1)) == self.type_code
        except (TypeError, ValueError):
            return False
        return same_type and _norm_value(self.kind, str(contact.get("value", ""))) == _norm_value(
            self.kind, self.value
        )

    def describe(self) -> str:
        """Kind and a masked address: phone numbers and webhook URLs can be sensitive."""
        if self.kind == "webhook":
            parts = urlsplit(self.value)
            return f"webhook {parts.scheme}://{parts.hostname or ''}/…"
        if self.kind == "sms":
            return f"sms …{self.value[-3:]}"
        local, _, domain = self.value.partition("@")
        return f"email {local[:1]}…@{domain}"


def _norm_value(kind: str, value: str) -> str:
    value = value.strip()
    if kind == "email":
        return value.lower()
    if kind == "sms":
        return "".join(ch for ch in value if ch.isdigit() or ch == "+")
    return value


@dataclass
class Action:
    """One step of the plan and, after ``setup_monitors``, whether it was carried out.

    ``kind`` is ``create``, ``update``, ``unchanged`` or ``duplicate`` for monitors, and
    ``create_contact`` or ``contact_exists`` for alert contacts. ``changes`` maps a
    field to ``(old, new)`` for updates; ``monitor_ids`` lists the monitors involved.
    """

    kind: str
    name: str
    url: str = ""
    method: str = ""
    interval_s: int = 0
    monitor_ids: tuple[int, ...] = ()
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    done: bool = False

    @property
    def is_write(self) -> bool:
        return self.kind in ("create", "update", "create_contact")

    def describe(self, dry_run: bool = False) -> str:
        """One line for the terminal; never contains the API key."""
        verbs = {
            "create": "would create" if dry_run else "created",
            "update": "would update" if dry_run else "updated",
            "unchanged": "unchanged",
            "duplicate": "duplicate",
            "create_contact": "would create" if dry_run else "created",
            "contact_exists": "unchanged",
        }
        verb = verbs.get(self.kind, self.kind)
        if self.kind in ("create_contact", "contact_exists"):
            return f"{verb:<12} alert contact {self.name}"
        line = f"{verb:<12} {self.name}: {self.method} {self.url} every {self.interval_s}s"
        if self.kind == "update" and self.changes:
            diff = ", ".join(
                f"{key} {_show(old)} -> {_show(new)}" for key, (old, new) in self.changes.items()
            )
            line += f" ({diff})"
        if self.kind == "duplicate":
            ids = ", ".join(str(i) for i in self.monitor_ids)
            line += f" ({len(self.monitor_ids)} monitors share this name: ids {ids}; left as is)"
        return line


def _show(value: Any) -> str:
    if isinstance(value, (set, frozenset, list, tuple)):
        return "[" + ", ".join(sorted(str(v) for v in value)) + "]"
    return str(value)


def alert_threshold_minutes(interval_s: int, failures: int = ALERT_AFTER_FAILURES) -> int:
    """API v2 ``threshold`` (minutes of downtime) that means "after N consecutive failures".

    The first failed check marks the monitor down; the Nth consecutive one comes
    ``(N - 1) * interval`` later. Rounded up to a value the API accepts (max 720).
    """
    if failures <= 1:
        return 0
    minutes = math.ceil((failures - 1) * interval_s / 60)
    return next((t for t in _THRESHOLDS if t >= minutes), _THRESHOLDS[-1])


def monitor_name(prefix: str, spec: MonitorSpec) -> str:
    """The friendly name of ``spec`` in UptimeRobot."""
    return f"{prefix} - {spec.name}" if prefix else spec.name


def default_prefix(base_url: str) -> str:
    """The prefix used when none is configured: the base URL's host name."""
    return urlsplit(base_url).hostname or "wsgi_observe"


def _attached(monitor: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for contact in monitor.get("alert_contacts") or []:
        try:
            out[str(contact["id"])] = (
                int(contact.get("threshold") or 0),
                int(contact.get("recurrence") or 0),
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


def plan_monitors(
    existing: Sequence[Mapping[str, Any]],
    base_url: str,
    monitors: Sequence[MonitorSpec] = DEFAULT_MONITORS,
    prefix: str | None = None,
    alert_contact_ids: Sequence[str] | None = None,
) -> list[Action]:
    """Compare the account's monitors with the plan; pure, no I/O.

    ``existing`` is ``get_monitors(alert_contacts=True)``. ``alert_contact_ids`` are the
    contacts every monitor must have; ``None`` leaves the monitors' contacts alone.
    """
    _check_unique(monitors)
    prefix = default_prefix(base_url) if prefix is None else prefix
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for monitor in existing:
        by_name.setdefault(str(monitor.get("friendly_name", "")), []).append(monitor)
    actions: list[Action] = []
    for spec in monitors:
        name = monitor_name(prefix, spec)
        url = spec.url(base_url)
        code = HTTP_METHODS[spec.method]
        threshold = alert_threshold_minutes(spec.interval_s)
        found = by_name.get(name, [])
        if len(found) > 1:
            ids = tuple(int(m["id"]) for m in found)
            actions.append(_action("duplicate", spec, name, url, monitor_ids=ids))
            continue
        if not found:
            params: dict[str, Any] = {
                "friendly_name": name,
                "url": url,
                "interval": spec.interval_s,
                "http_method": code,
            }
            if alert_contact_ids:
                params["alert_contacts"] = [(cid, threshold, 0) for cid in alert_contact_ids]
            actions.append(_action("create", spec, name, url, params=params))
            continue
        current = found[0]
        changes: dict[str, tuple[Any, Any]] = {}
        params = {}
        if str(current.get("url", "")) != url:
            changes["url"] = (current.get("url"), url)
            params["url"] = url
        if _as_int(current.get("interval")) != spec.interval_s:
            changes["interval"] = (current.get("interval"), spec.interval_s)
            params["interval"] = spec.interval_s
        # Older answers may lack http_method; then there is nothing to compare.
        if (
            current.get("http_method") not in (None, "")
            and _as_int(current.get("http_method")) != code
        ):
            old = _as_int(current.get("http_method"))
            old_name = next((k for k, v in HTTP_METHODS.items() if v == old), str(old))
            changes["http_method"] = (old_name, spec.method)
            params["http_method"] = code
        if alert_contact_ids is not None:
            attached = _attached(current)
            missing = [cid for cid in alert_contact_ids if cid not in attached]
            if missing:
                # editMonitor replaces the whole list: keep contacts someone else attached.
                keep = [(cid, t, r) for cid, (t, r) in attached.items()]
                params["alert_contacts"] = keep + [(cid, threshold, 0) for cid in missing]
                changes["alert_contacts"] = (set(attached), set(attached) | set(missing))
        monitor_id = int(current["id"])
        kind = "update" if changes else "unchanged"
        actions.append(
            _action(
                kind, spec, name, url, monitor_ids=(monitor_id,), changes=changes, params=params
            )
        )
    return actions


def _action(kind: str, spec: MonitorSpec, name: str, url: str, **more: Any) -> Action:
    return Action(kind, name, url, spec.method, spec.interval_s, **more)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _check_unique(monitors: Sequence[MonitorSpec]) -> None:
    names = [spec.name for spec in monitors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"monitor names must be unique; repeated: {', '.join(dupes)}")


def setup_monitors(
    client: UptimeRobotClient,
    base_url: str,
    monitors: Sequence[MonitorSpec] = DEFAULT_MONITORS,
    prefix: str | None = None,
    dry_run: bool = False,
    alert_contacts: Sequence[AlertContactSpec] = (),
    *,
    on_action: Callable[[Action], None] | None = None,
) -> list[Action]:
    """Make ``monitors`` exist exactly once under ``base_url``; returns what was done.

    Alert contacts are created if missing, then monitors are created or updated, in
    plan order. ``on_action`` is called after each action is carried out (or, with
    ``dry_run``, as it is planned), so a caller can report progress even if a later
    call fails with :class:`UptimeRobotError`. With ``dry_run`` nothing is written.
    """
    base_url = base_url.rstrip("/")
    _check_unique(monitors)
    actions: list[Action] = []

    def report(action: Action) -> None:
        actions.append(action)
        if on_action is not None:
            on_action(action)

    contact_ids: list[str] | None = None
    if alert_contacts:
        contact_ids = []
        known = client.get_alert_contacts()
        for spec in alert_contacts:
            match = next((c for c in known if spec.matches(c)), None)
            if match is not None:
                contact_ids.append(str(match["id"]))
                report(Action("contact_exists", spec.describe(), done=True))
                continue
            action = Action("create_contact", spec.describe())
            if dry_run:
                # Not created yet: plan as if it were, with a placeholder id.
                contact_ids.append(f"<new {spec.kind}>")
            else:
                friendly = f"{prefix or default_prefix(base_url)} - {spec.kind}"
                created = client.new_alert_contact(spec.kind, spec.value, friendly)
                contact_ids.append(str(created["id"]))
                known.append({"id": created["id"], "type": spec.type_code, "value": spec.value})
                action.done = True
            report(action)

    existing = client.get_monitors(alert_contacts=True)
    for action in plan_monitors(existing, base_url, monitors, prefix, contact_ids):
        if not dry_run:
            if action.kind == "create":
                created = client.create_monitor(**action.params)
                action.monitor_ids = (int(created["id"]),)
            elif action.kind == "update":
                client.update_monitor(action.monitor_ids[0], **action.params)
            action.done = True
        report(action)
    return actions


def load_monitors(
    path: str, variable: str = "UPTIMEROBOT_MONITORS_FILE"
) -> tuple[MonitorSpec, ...]:
    """Read a JSON list of ``{"name", "path", "method", "interval_s"}`` objects.

    A ``{"monitors": [...]}`` object is accepted too. Any problem raises
    :class:`~wsgi_observe.config.ConfigError` with one line naming ``variable``.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{variable}={path!r}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{variable}={path!r}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "monitors" in data:
        data = data["monitors"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{variable}={path!r}: expected a non-empty JSON list of monitors")
    specs = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigError(f"{variable}={path!r}: item {index} is not an object")
        unknown = sorted(set(item) - set(_SPEC_KEYS))
        if unknown:
            raise ConfigError(
                f"{variable}={path!r}: item {index} has unknown key(s) {', '.join(unknown)};"
                f" expected {', '.join(_SPEC_KEYS)}"
            )
        try:
            specs.append(MonitorSpec(**item))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{variable}={path!r}: item {index}: {exc}") from None
    try:
        _check_unique(specs)
    except ValueError as exc:
        raise ConfigError(f"{variable}={path!r}: {exc}") from None
    return tuple(specs)
