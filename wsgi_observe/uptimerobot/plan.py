"""Which monitors should exist, and how the account's monitors differ from that: pure, no I/O.

The plan is the same for API v2 and API v3; :mod:`.accounts` reads and writes an account
through either API and carries the plan out.

The default monitors (:func:`default_monitors`) are the monitoring guide's, for the user's
own app: ``HEAD /health``, ``GET /health/ready`` (which must contain ``healthy``),
``HEAD /health/live``, ``GET /metrics`` (only when ``/metrics`` answers without a token) and
the app's main URL. An app-specific monitor is added only when the user names its path
(``--monitor``, or a monitors file). Monitors are named ``"{prefix} - {name}"``, so several
services can share one UptimeRobot account; only names of this plan, with this prefix, are
ever written.

:func:`plan_monitors` compares the account with the plan: a missing monitor is created, one
whose type, URL, interval, method, keyword or alert contacts drifted is updated in place
(replaced when the API cannot change its type: API v2), one that matches is left unchanged,
and several monitors sharing one of our names are reported, never multiplied. A second run
therefore writes nothing, and an interrupted run is finished by running it again.

Alert contacts are attached with the guide's "alert after 2 consecutive failures". Both APIs
express that threshold in minutes of downtime ("if down for x minutes"), so it is
``(failures - 1) * interval`` per monitor: 5 minutes for a 5-minute monitor. UptimeRobot
applies thresholds on paid plans only (free accounts report 0), so drift of alert contacts is
judged by which contacts are attached, not by their thresholds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..config import ConfigError

__all__ = [
    "ALERT_AFTER_FAILURES",
    "DEFAULT_MONITORS",
    "HEALTH",
    "HTTP_METHODS",
    "LIVENESS",
    "MAIN_URL",
    "METRICS",
    "MONITOR_OPTION_SYNTAX",
    "READINESS",
    "Action",
    "AlertContactSpec",
    "DesiredMonitor",
    "ExistingContact",
    "ExistingMonitor",
    "MonitorSpec",
    "alert_threshold_minutes",
    "check_unique",
    "default_monitors",
    "default_prefix",
    "load_monitors",
    "monitor_name",
    "parse_monitor_option",
    "plan_monitors",
    "planned_actions",
]

#: The guide's "Alert Threshold: 2 consecutive failures".
ALERT_AFTER_FAILURES = 2

#: Methods a monitor may use: those both APIs know.
HTTP_METHODS: tuple[str, ...] = ("HEAD", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Thresholds API v2 accepts, in minutes (API v3 documents none; these suit it too).
_THRESHOLDS: tuple[int, ...] = (
    *range(16), 20, 30, 35, 40, 45, 50, 55, 60, 70, 80, 90, 100, 110, 120,
    150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600, 660, 720,
)  # fmt: skip

_SPEC_KEYS = ("name", "path", "method", "interval_s", "keyword")
_MAX_KEYWORD = 500  # API v3's limit


@dataclass(frozen=True)
class MonitorSpec:
    """One monitor of the plan: a name (without prefix), a path, a method, an interval.

    Parameters:
        name: shown in UptimeRobot as ``"{prefix} - {name}"``.
        path: appended to the base URL; starts with ``/``.
        method: ``HEAD``, ``GET``, ``POST``, ``PUT``, ``PATCH``, ``DELETE`` or ``OPTIONS``.
        interval_s: seconds between checks, at least 60 (the free plan allows 300+).
        keyword: when set, a keyword monitor that alerts when the answer does not contain
            this text (case sensitive); the method must return a body (not ``HEAD``).

    Example::

        spec = MonitorSpec("Orders API", "/api/orders", "GET", 600)
        spec.url("https://api.example.com")   # 'https://api.example.com/api/orders'
        setup_monitors(client, "https://api.example.com", monitors=[*DEFAULT_MONITORS, spec])

    Environment: none (``UPTIMEROBOT_MONITORS_FILE`` holds a JSON list of these).
    """

    name: str
    path: str
    method: str = "GET"
    interval_s: int = 300
    keyword: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name={self.name!r}: expected a non-empty string")
        if not isinstance(self.path, str) or not self.path.startswith("/") or " " in self.path:
            raise ValueError(f"path={self.path!r}: expected a path starting with '/'")
        method = self.method.strip().upper() if isinstance(self.method, str) else ""
        if method not in HTTP_METHODS:
            raise ValueError(f"method={self.method!r}: expected one of {', '.join(HTTP_METHODS)}")
        interval = self.interval_s
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 60:
            raise ValueError(f"interval_s={interval!r}: expected whole seconds, at least 60")
        keyword = self.keyword
        if keyword is not None:
            if not isinstance(keyword, str) or not keyword.strip() or len(keyword) > _MAX_KEYWORD:
                raise ValueError(
                    f"keyword={keyword!r}: expected a non-empty text of at most "
                    f"{_MAX_KEYWORD} characters"
                )
            if method == "HEAD":
                raise ValueError(
                    f"keyword={keyword!r}: a HEAD answer has no body to search; use GET"
                )
            object.__setattr__(self, "keyword", keyword.strip())
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "method", method)

    @property
    def kind(self) -> str:
        """``"keyword"`` or ``"http"``."""
        return "keyword" if self.keyword else "http"

    def url(self, base_url: str) -> str:
        """The full URL UptimeRobot checks."""
        return base_url.rstrip("/") + self.path

    def describe(self) -> str:
        """``GET /health/ready every 300s, keyword 'healthy'``."""
        text = f"{self.method} {self.path} every {self.interval_s}s"
        return f"{text}, keyword {self.keyword!r}" if self.keyword else text


HEALTH = MonitorSpec("Main Health Check", "/health", "HEAD", 300)
READINESS = MonitorSpec("Readiness Check", "/health/ready", "GET", 300, keyword="healthy")
LIVENESS = MonitorSpec("API Liveness", "/health/live", "HEAD", 180)
METRICS = MonitorSpec("Metrics Endpoint", "/metrics", "GET", 600)
MAIN_URL = MonitorSpec("Main URL", "/", "HEAD", 300)

#: Every default monitor; :func:`default_monitors` leaves out ``/metrics`` behind a token.
DEFAULT_MONITORS: tuple[MonitorSpec, ...] = (HEALTH, READINESS, LIVENESS, METRICS, MAIN_URL)


def default_monitors(*, metrics_public: bool = True) -> tuple[MonitorSpec, ...]:
    """The guide's monitors for the user's own app.

    ``metrics_public`` is False when ``/metrics`` needs a token (``metrics_token`` is set):
    UptimeRobot sends none, so that monitor would only ever report 401.
    """
    return tuple(m for m in DEFAULT_MONITORS if metrics_public or m is not METRICS)


@dataclass(frozen=True)
class AlertContactSpec:
    """An alert contact to make sure exists: ``kind`` is ``email``, ``sms`` or ``webhook``."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in ("email", "sms", "webhook"):
            raise ValueError(f"kind={self.kind!r}: expected email, sms or webhook")

    def matches(self, contact: ExistingContact) -> bool:
        """Whether an account's contact is this one (same kind and address)."""
        return contact.kind == self.kind and _norm_value(self.kind, contact.value) == _norm_value(
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
        return "".join(ch for ch in value if ch.isdigit())
    return value


@dataclass(frozen=True)
class ExistingContact:
    """An alert contact (or API v3 integration) of the account, whatever the API."""

    id: str
    kind: str | None  # "email", "sms", "webhook", or None for any other type
    value: str


@dataclass(frozen=True)
class ExistingMonitor:
    """A monitor of the account, whatever the API. ``None`` means the API did not say.

    ``kind`` is ``"http"``, ``"keyword"`` or ``"other"``; ``keyword_alerts_when`` is
    ``"missing"`` or ``"present"``; ``contacts`` maps contact ids to ``(threshold,
    recurrence)``.
    """

    id: int
    name: str
    url: str
    kind: str
    interval_s: int | None = None
    method: str | None = None
    keyword: str | None = None
    keyword_alerts_when: str | None = None
    keyword_case_sensitive: bool | None = None
    contacts: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredMonitor:
    """What one monitor should be: what a create sends, and what an update sets.

    ``alert_contacts`` is the whole list of ``(id, threshold, recurrence)`` to attach (the
    contacts someone else attached included), or ``None`` to leave them as they are.
    """

    name: str
    url: str
    method: str
    interval_s: int
    keyword: str | None = None
    alert_contacts: tuple[tuple[str, int, int], ...] | None = None

    @property
    def kind(self) -> str:
        return "keyword" if self.keyword else "http"


@dataclass
class Action:
    """One step of the plan and, after ``setup_monitors``, whether it was carried out.

    ``kind`` for monitors: ``create``, ``update``, ``replace`` (API v2 cannot change a
    monitor's type, so it is deleted and created), ``unchanged``, ``duplicate``,
    ``extra`` (carries our prefix but is not in the plan: left alone), ``skipped`` (a
    default left out, with ``reason``) and ``planned`` (the API could not be asked). For
    alert contacts: ``create_contact``, ``contact_exists``, ``contact_unavailable``.
    ``changes`` maps a field to ``(old, new)``; ``monitor_ids`` lists the monitors
    involved; ``desired`` is what a create or update writes.
    """

    kind: str
    name: str
    url: str = ""
    method: str = ""
    interval_s: int = 0
    keyword: str | None = None
    monitor_ids: tuple[int, ...] = ()
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    desired: DesiredMonitor | None = field(default=None, repr=False)
    reason: str = ""
    done: bool = False

    @property
    def is_write(self) -> bool:
        return self.kind in ("create", "update", "replace", "create_contact")

    def describe(self, dry_run: bool = False) -> str:
        """One line for the terminal; never contains the API key."""
        verbs = {
            "create": "would create" if dry_run else "created",
            "update": "would update" if dry_run else "updated",
            "replace": "would replace" if dry_run else "replaced",
            "create_contact": "would create" if dry_run else "created",
            "contact_exists": "unchanged",
            "contact_unavailable": "not created",
            "extra": "left alone",
        }
        verb = verbs.get(self.kind, self.kind)
        if self.kind in ("create_contact", "contact_exists", "contact_unavailable", "planned"):
            if not self.url:
                line = f"{verb:<12} alert contact {self.name}"
                return f"{line}: {self.reason}" if self.reason else line
        if self.kind in ("extra", "skipped"):
            return f"{verb:<12} {self.name}: {self.reason}"
        line = f"{verb:<12} {self.name}: {self.method} {self.url} every {self.interval_s}s"
        if self.keyword:
            line += f", keyword {self.keyword!r}"
        if self.kind in ("update", "replace") and self.changes:
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
    if value is None or value == "":
        return "none"
    return str(value)


def alert_threshold_minutes(interval_s: int, failures: int = ALERT_AFTER_FAILURES) -> int:
    """The ``threshold`` (minutes of downtime) that means "after N consecutive failures".

    The first failed check marks the monitor down; the Nth consecutive one comes
    ``(N - 1) * interval`` later. Rounded up to a value API v2 accepts (max 720).
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


def _desired(
    spec: MonitorSpec, name: str, url: str, contacts: tuple[tuple[str, int, int], ...] | None
) -> DesiredMonitor:
    return DesiredMonitor(name, url, spec.method, spec.interval_s, spec.keyword, contacts)


def _action(kind: str, spec: MonitorSpec, name: str, url: str, **more: Any) -> Action:
    return Action(kind, name, url, spec.method, spec.interval_s, spec.keyword, **more)


def plan_monitors(
    existing: Sequence[ExistingMonitor],
    base_url: str,
    monitors: Sequence[MonitorSpec] = DEFAULT_MONITORS,
    prefix: str | None = None,
    alert_contact_ids: Sequence[str] | None = None,
    *,
    can_change_type: bool = True,
) -> list[Action]:
    """Compare the account's monitors with the plan; pure, no I/O.

    ``alert_contact_ids`` are the contacts every monitor must have; ``None`` leaves the
    monitors' contacts alone. ``can_change_type`` is False for API v2, whose monitors keep
    their type: a monitor that must become a keyword monitor (or stop being one) is then
    replaced. Monitors that carry our prefix but are not in the plan come last, as
    ``extra``.
    """
    check_unique(monitors)
    base_url = base_url.rstrip("/")
    prefix = default_prefix(base_url) if prefix is None else prefix
    by_name: dict[str, list[ExistingMonitor]] = {}
    for monitor in existing:
        by_name.setdefault(monitor.name, []).append(monitor)
    actions: list[Action] = []
    for spec in monitors:
        name = monitor_name(prefix, spec)
        url = spec.url(base_url)
        threshold = alert_threshold_minutes(spec.interval_s)
        found = by_name.get(name, [])
        if len(found) > 1:
            ids = tuple(m.id for m in found)
            actions.append(_action("duplicate", spec, name, url, monitor_ids=ids))
            continue
        if not found:
            contacts = None
            if alert_contact_ids:
                contacts = tuple((cid, threshold, 0) for cid in alert_contact_ids)
            desired = _desired(spec, name, url, contacts)
            actions.append(_action("create", spec, name, url, desired=desired))
            continue
        current = found[0]
        changes = _differences(current, spec, url)
        contacts = None
        if alert_contact_ids is not None:
            missing = [cid for cid in alert_contact_ids if cid not in current.contacts]
            if missing:
                # A write replaces the whole list: keep contacts someone else attached.
                keep = tuple((cid, t, r) for cid, (t, r) in current.contacts.items())
                contacts = keep + tuple((cid, threshold, 0) for cid in missing)
                changes["alert_contacts"] = (
                    set(current.contacts),
                    set(current.contacts) | set(missing),
                )
        kind = "update" if changes else "unchanged"
        if "type" in changes and not can_change_type:
            kind = "replace"
            if contacts is None:  # the new monitor keeps the old one's contacts
                contacts = tuple((cid, t, r) for cid, (t, r) in current.contacts.items())
        desired = _desired(spec, name, url, contacts)
        actions.append(
            _action(
                kind, spec, name, url, monitor_ids=(current.id,), changes=changes, desired=desired
            )
        )
    if prefix:
        ours = {monitor_name(prefix, spec) for spec in monitors}
        for monitor in existing:
            if monitor.name.startswith(f"{prefix} - ") and monitor.name not in ours:
                actions.append(
                    Action(
                        "extra",
                        monitor.name,
                        monitor.url,
                        monitor_ids=(monitor.id,),
                        reason=f"{monitor.url} is not in the plan (delete it in UptimeRobot "
                        "if it is no longer wanted)",
                    )
                )
    return actions


def _differences(
    current: ExistingMonitor, spec: MonitorSpec, url: str
) -> dict[str, tuple[Any, Any]]:
    changes: dict[str, tuple[Any, Any]] = {}
    if current.kind != spec.kind:
        changes["type"] = (current.kind, spec.kind)
    if current.url != url:
        changes["url"] = (current.url, url)
    if current.interval_s != spec.interval_s:
        changes["interval"] = (current.interval_s, spec.interval_s)
    # API v2 answers may lack http_method; then there is nothing to compare.
    if current.method is not None and current.method != spec.method:
        changes["http_method"] = (current.method, spec.method)
    if spec.keyword and current.kind == "keyword":
        if current.keyword != spec.keyword:
            changes["keyword"] = (current.keyword, spec.keyword)
        if current.keyword_alerts_when not in (None, "missing"):
            changes["keyword_alert"] = (f"when {current.keyword_alerts_when}", "when missing")
        if current.keyword_case_sensitive is False:
            changes["keyword_case"] = ("insensitive", "sensitive")
    return changes


def planned_actions(
    base_url: str,
    monitors: Sequence[MonitorSpec],
    prefix: str,
    alert_contacts: Sequence[AlertContactSpec] = (),
) -> list[Action]:
    """The plan as it is, without comparing it with an account (the API could not be
    asked): one ``planned`` action per contact and monitor."""
    base_url = base_url.rstrip("/")
    actions = [Action("planned", spec.describe()) for spec in alert_contacts]
    for spec in monitors:
        actions.append(_action("planned", spec, monitor_name(prefix, spec), spec.url(base_url)))
    return actions


def check_unique(monitors: Sequence[MonitorSpec]) -> None:
    """Raise ``ValueError`` if two monitors of a plan share a name."""
    names = [spec.name for spec in monitors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"monitor names must be unique; repeated: {', '.join(dupes)}")


# --monitor NAME=[METHOD:]/PATH[:INTERVAL] ---------------------------------------------------

_INTERVAL = re.compile(r"^(\d+)([smh]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
MONITOR_OPTION_SYNTAX = "NAME=[METHOD:]/PATH[:INTERVAL]"


def parse_monitor_option(text: str) -> MonitorSpec:
    """A monitor from ``--monitor``: ``NAME=[METHOD:]/PATH[:INTERVAL]``.

    ``METHOD`` defaults to GET; ``INTERVAL`` is seconds, or a number followed by ``s``,
    ``m`` or ``h`` (default 5 minutes). Examples: ``"Orders API=/api/orders"``,
    ``"Lead API=HEAD:/api/leads:10m"``. Raises ``ValueError`` with one line.
    """
    name, sep, rest = text.partition("=")
    problem = f"{text!r}: expected {MONITOR_OPTION_SYNTAX}, e.g. 'Orders API=GET:/api/orders:10m'"
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(problem)
    rest = rest.strip()
    method = "GET"
    head, colon, tail = rest.partition(":")
    if colon and head.strip().upper() in HTTP_METHODS and tail.startswith("/"):
        method, rest = head.strip().upper(), tail
    elif not rest.startswith("/"):
        raise ValueError(problem)
    interval = 300
    path, colon, last = rest.rpartition(":")
    if colon and path:
        found = _INTERVAL.match(last.strip().lower())
        if found is None:
            raise ValueError(f"{text!r}: interval {last!r}: expected seconds, or e.g. 90s, 10m, 1h")
        interval = int(found.group(1)) * _UNITS[found.group(2)]
        rest = path
    try:
        return MonitorSpec(name.strip(), rest, method, interval)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


# Monitors file -------------------------------------------------------------------------------


def load_monitors(
    path: str, variable: str = "UPTIMEROBOT_MONITORS_FILE", *, metrics_public: bool = True
) -> tuple[MonitorSpec, ...]:
    """Read the monitors file: a JSON list of ``{"name", "path", "method", "interval_s",
    "keyword"}`` objects, which replaces the default monitors, or an object
    ``{"monitors": [...], "defaults": true}``, whose monitors are added to the defaults
    (``"defaults": false``, the default, replaces them too).

    Any problem raises :class:`~wsgi_observe.config.ConfigError` with one line naming
    ``variable``.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{variable}={path!r}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{variable}={path!r}: not valid JSON ({exc})") from None
    keep_defaults = False
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"monitors", "defaults"})
        if unknown or "monitors" not in data or not isinstance(data.get("defaults", False), bool):
            raise ConfigError(
                f'{variable}={path!r}: expected a list, or {{"monitors": [...], "defaults": '
                "true or false}"
            )
        keep_defaults = bool(data.get("defaults", False))
        data = data["monitors"]
    if not isinstance(data, list) or (not data and not keep_defaults):
        raise ConfigError(f"{variable}={path!r}: expected a non-empty JSON list of monitors")
    specs = list(default_monitors(metrics_public=metrics_public)) if keep_defaults else []
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
            spec = MonitorSpec(**item)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{variable}={path!r}: item {index}: {exc}") from None
        # A file monitor with a default's name replaces that default.
        specs = [s for s in specs if s.name != spec.name or s not in DEFAULT_MONITORS]
        specs.append(spec)
    try:
        check_unique(specs)
    except ValueError as exc:
        raise ConfigError(f"{variable}={path!r}: {exc}") from None
    return tuple(specs)
