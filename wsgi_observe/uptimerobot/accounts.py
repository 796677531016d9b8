"""An UptimeRobot account read and written through API v2 or API v3, and the plan carried out.

:func:`setup_monitors` is what ``uptimerobot setup`` does: make sure the alert contacts
exist, list the account's monitors, compare them with the plan
(:func:`~wsgi_observe.uptimerobot.plan.plan_monitors`, the same for both APIs) and write
only what differs. The two account classes translate between the plan's view of monitors
and contacts and each API's fields:

- :class:`V2Account` over :class:`~wsgi_observe.uptimerobot.UptimeRobotClient`;
- :class:`V3Account` over :class:`~wsgi_observe.uptimerobot.UptimeRobotV3Client`, with the
  names of :mod:`~wsgi_observe.uptimerobot.schema_v3`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from . import client_v2 as v2
from . import schema_v3 as v3
from ._wire import UptimeRobotError
from .client_v2 import UptimeRobotClient
from .client_v3 import UptimeRobotV3Client
from .plan import (
    DEFAULT_MONITORS,
    Action,
    AlertContactSpec,
    DesiredMonitor,
    ExistingContact,
    ExistingMonitor,
    MonitorSpec,
    check_unique,
    default_prefix,
    plan_monitors,
)

__all__ = ["Account", "V2Account", "V3Account", "account_for", "setup_monitors"]

_V2_METHOD_NAMES = {code: name for name, code in v2.HTTP_METHODS.items()}
_V2_CONTACT_KINDS = {code: kind for kind, code in v2.ALERT_CONTACT_TYPES.items()}
_V2_KEYWORD_WHEN = {v2.KEYWORD_ALERT_EXISTS: "present", v2.KEYWORD_ALERT_NOT_EXISTS: "missing"}


class Account(Protocol):
    """What the plan needs of an account, whatever the API."""

    api_version: int
    #: Whether an update can turn an HTTP monitor into a keyword monitor and back.
    can_change_type: bool

    def list_monitors(self) -> list[ExistingMonitor]: ...

    def list_contacts(self) -> list[ExistingContact]: ...

    def cannot_create(self, kind: str) -> str | None:
        """Why a contact of this kind cannot be created through this API, or None."""

    def create_contact(self, spec: AlertContactSpec, friendly_name: str) -> str: ...

    def create_monitor(self, desired: DesiredMonitor) -> int: ...

    def update_monitor(
        self, monitor_id: int, desired: DesiredMonitor, changes: Mapping[str, Any]
    ) -> None: ...

    def delete_monitor(self, monitor_id: int) -> None: ...


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _contacts(items: Any, id_key: str) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for contact in items or []:
        if not isinstance(contact, Mapping) or contact.get(id_key) in (None, ""):
            continue
        out[str(contact[id_key])] = (
            _int(contact.get("threshold")) or 0,
            _int(contact.get("recurrence")) or 0,
        )
    return out


class V2Account:
    """An account through API v2 (``getMonitors``, ``newMonitor``, ``editMonitor``, ...)."""

    api_version = 2
    can_change_type = False  # "The type of a monitor can not be edited."

    def __init__(self, client: UptimeRobotClient) -> None:
        self.client = client

    def list_monitors(self) -> list[ExistingMonitor]:
        out = []
        for m in self.client.get_monitors(alert_contacts=True):
            monitor_id = _int(m.get("id"))
            if monitor_id is None:
                continue
            code = _int(m.get("type"))
            kind = {v2.MONITOR_TYPE_HTTP: "http", v2.MONITOR_TYPE_KEYWORD: "keyword"}.get(
                code or 0, "other"
            )
            method = _int(m.get("http_method"))
            out.append(
                ExistingMonitor(
                    id=monitor_id,
                    name=str(m.get("friendly_name", "")),
                    url=str(m.get("url", "")),
                    kind=kind,
                    interval_s=_int(m.get("interval")),
                    # Older answers may lack http_method: nothing to compare then.
                    method=_V2_METHOD_NAMES.get(method, str(method)) if method else None,
                    keyword=str(m.get("keyword_value") or "") or None,
                    keyword_alerts_when=_V2_KEYWORD_WHEN.get(_int(m.get("keyword_type")) or 0),
                    contacts=_contacts(m.get("alert_contacts"), "id"),
                )
            )
        return out

    def list_contacts(self) -> list[ExistingContact]:
        return [
            ExistingContact(
                str(c.get("id")),
                _V2_CONTACT_KINDS.get(_int(c.get("type")) or 0),
                str(c.get("value") or ""),
            )
            for c in self.client.get_alert_contacts()
        ]

    def cannot_create(self, kind: str) -> str | None:
        return None

    def create_contact(self, spec: AlertContactSpec, friendly_name: str) -> str:
        return str(self.client.new_alert_contact(spec.kind, spec.value, friendly_name)["id"])

    def create_monitor(self, desired: DesiredMonitor) -> int:
        params: dict[str, Any] = {
            "friendly_name": desired.name,
            "url": desired.url,
            "interval": desired.interval_s,
            "http_method": desired.method,
            **self._type_fields(desired),
        }
        if desired.alert_contacts:
            params["alert_contacts"] = list(desired.alert_contacts)
        return int(self.client.create_monitor(**params)["id"])

    def update_monitor(
        self, monitor_id: int, desired: DesiredMonitor, changes: Mapping[str, Any]
    ) -> None:
        params: dict[str, Any] = {}
        if "url" in changes:
            params["url"] = desired.url
        if "interval" in changes:
            params["interval"] = desired.interval_s
        if "http_method" in changes:
            params["http_method"] = desired.method
        if {"keyword", "keyword_alert"} & set(changes):
            params.update(self._type_fields(desired))
            params.pop("type", None)  # editMonitor refuses a type
        if "alert_contacts" in changes and desired.alert_contacts is not None:
            params["alert_contacts"] = list(desired.alert_contacts)
        if params:
            self.client.update_monitor(monitor_id, **params)

    def delete_monitor(self, monitor_id: int) -> None:
        self.client.delete_monitor(monitor_id)

    @staticmethod
    def _type_fields(desired: DesiredMonitor) -> dict[str, Any]:
        if not desired.keyword:
            return {"type": v2.MONITOR_TYPE_HTTP}
        return {
            "type": v2.MONITOR_TYPE_KEYWORD,
            "keyword_type": v2.KEYWORD_ALERT_NOT_EXISTS,
            "keyword_value": desired.keyword,
        }


class V3Account:
    """An account through API v3 (``/monitors``, ``/alert-contacts``, ``/integrations``)."""

    api_version = 3
    can_change_type = True  # PATCH /monitors/{id} takes a type

    def __init__(self, client: UptimeRobotV3Client) -> None:
        self.client = client

    def list_monitors(self) -> list[ExistingMonitor]:
        out = []
        for m in self.client.get_monitors():
            monitor_id = _int(m.get("id"))
            if monitor_id is None:
                continue
            kind = {v3.MONITOR_TYPE_HTTP: "http", v3.MONITOR_TYPE_KEYWORD: "keyword"}.get(
                v3.monitor_type(m.get("type")) or "", "other"
            )
            out.append(
                ExistingMonitor(
                    id=monitor_id,
                    name=str(m.get("friendlyName", "")),
                    url=str(m.get("url", "")),
                    kind=kind,
                    interval_s=_int(m.get("interval")),
                    method=v3.http_method(m.get("httpMethodType")),
                    keyword=str(m.get("keywordValue") or "") or None,
                    keyword_alerts_when=v3.keyword_alerts_when(m.get("keywordType")),
                    keyword_case_sensitive=v3.keyword_case_sensitive(m.get("keywordCaseType")),
                    contacts=_contacts(m.get("assignedAlertContacts"), "alertContactId"),
                )
            )
        return out

    def list_contacts(self) -> list[ExistingContact]:
        found = [*self.client.get_alert_contacts(), *self.client.get_integrations()]
        return [
            ExistingContact(
                str(c.get("id")), v3.contact_kind(c.get("type")), str(c.get("value") or "")
            )
            for c in found
            if c.get("id") is not None
        ]

    def cannot_create(self, kind: str) -> str | None:
        if kind == "sms":
            return (
                "API v3 cannot create SMS contacts (UptimeRobot verifies the number in its "
                "dashboard): add it there and run setup again, or use --api v2"
            )
        return None

    def create_contact(self, spec: AlertContactSpec, friendly_name: str) -> str:
        return str(self.client.new_alert_contact(spec.kind, spec.value, friendly_name)["id"])

    def create_monitor(self, desired: DesiredMonitor) -> int:
        created = self.client.create_monitor(
            desired.name,
            desired.url,
            desired.interval_s,
            desired.method,
            keyword=desired.keyword,
            alert_contacts=desired.alert_contacts or None,
        )
        return int(created["id"])

    def update_monitor(
        self, monitor_id: int, desired: DesiredMonitor, changes: Mapping[str, Any]
    ) -> None:
        fields: dict[str, Any] = {}
        if "url" in changes:
            fields["url"] = desired.url
        if "interval" in changes:
            fields["interval"] = desired.interval_s
        if "http_method" in changes or "type" in changes:
            fields["http_method"] = desired.method
        if desired.keyword and {"type", "keyword", "keyword_alert", "keyword_case"} & set(changes):
            fields["keyword"] = desired.keyword  # type, keywordType, keywordValue, case
        elif "type" in changes:
            fields["type"] = v3.MONITOR_TYPE_HTTP
        if "alert_contacts" in changes and desired.alert_contacts is not None:
            fields["alert_contacts"] = list(desired.alert_contacts)
        if fields:
            self.client.update_monitor(monitor_id, **fields)

    def delete_monitor(self, monitor_id: int) -> None:
        self.client.delete_monitor(monitor_id)


def account_for(client: UptimeRobotClient | UptimeRobotV3Client | Account) -> Account:
    """The account behind a client of either API (an :class:`Account` is returned as is)."""
    if isinstance(client, UptimeRobotV3Client):
        return V3Account(client)
    if isinstance(client, UptimeRobotClient):
        return V2Account(client)
    return client


def setup_monitors(
    client: UptimeRobotClient | UptimeRobotV3Client | Account,
    base_url: str,
    monitors: Sequence[MonitorSpec] = DEFAULT_MONITORS,
    prefix: str | None = None,
    dry_run: bool = False,
    alert_contacts: Sequence[AlertContactSpec] = (),
    *,
    on_action: Callable[[Action], None] | None = None,
) -> list[Action]:
    """Make ``monitors`` exist exactly once under ``base_url``; returns what was done.

    ``client`` is an API v2 or an API v3 client. Alert contacts are created if missing (an
    SMS contact through API v3 is reported as ``contact_unavailable``: that API cannot
    create one), then monitors are created, updated or replaced, in plan order. ``on_action``
    is called after each action is carried out (or, with ``dry_run``, as it is planned), so
    a caller can report progress even if a later call fails with
    :class:`~wsgi_observe.uptimerobot.UptimeRobotError`. With ``dry_run`` nothing is
    written.
    """
    account = account_for(client)
    base_url = base_url.rstrip("/")
    check_unique(monitors)
    prefix = default_prefix(base_url) if prefix is None else prefix
    actions: list[Action] = []

    def report(action: Action) -> None:
        actions.append(action)
        if on_action is not None:
            on_action(action)

    contact_ids: list[str] | None = None
    if alert_contacts:
        contact_ids = []
        known = account.list_contacts()
        for spec in alert_contacts:
            match = next((c for c in known if spec.matches(c)), None)
            if match is not None:
                contact_ids.append(match.id)
                report(Action("contact_exists", spec.describe(), done=True))
                continue
            reason = account.cannot_create(spec.kind)
            if reason:
                report(Action("contact_unavailable", spec.describe(), reason=reason))
                continue
            action = Action("create_contact", spec.describe())
            if dry_run:
                contact_ids.append(f"<new {spec.kind}>")  # planned as if it existed
            else:
                new_id = account.create_contact(spec, f"{prefix or 'wsgi_observe'} - {spec.kind}")
                contact_ids.append(new_id)
                known.append(ExistingContact(new_id, spec.kind, spec.value))
                action.done = True
            report(action)

    existing = account.list_monitors()
    planned = plan_monitors(
        existing, base_url, monitors, prefix, contact_ids, can_change_type=account.can_change_type
    )
    for action in planned:
        if not dry_run:
            if action.desired is not None:
                _carry_out(account, action, action.desired)
            action.done = True
        report(action)
    return actions


def _carry_out(account: Account, action: Action, desired: DesiredMonitor) -> None:
    if action.kind == "create":
        action.monitor_ids = (account.create_monitor(desired),)
    elif action.kind == "update":
        account.update_monitor(action.monitor_ids[0], desired, action.changes)
    elif action.kind == "replace":
        old = action.monitor_ids[0]
        account.delete_monitor(old)
        try:
            action.monitor_ids = (account.create_monitor(desired),)
        except UptimeRobotError as exc:
            raise UptimeRobotError(
                exc.message,
                status=exc.status,
                error_type=exc.error_type,
                api_method=exc.api_method,
                attempts=exc.attempts,
                detail=f"monitor {old} was deleted to change its type; run setup again to "
                "create its replacement",
            ) from None
