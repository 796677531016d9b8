"""UptimeRobot API v3: field names and enum values, and every choice where sources disagree.

This module is the one place that says how API v3 spells things; the client and the
setup command take their names from here.

Sources, read side by side:

- UptimeRobot's documentation, https://uptimerobot.com/api/v3/, rendered from its OpenAPI
  contract (``https://cdn.uptimerobot.com/api/openapi.yaml``; the copy read is the one in
  UptimeRobot's own CLI, ``uptimerobot/uptimerobot-cli``, ``openapi/openapi.yaml``);
- UptimeRobot's Terraform provider, ``uptimerobot/terraform-provider-uptimerobot``
  (``internal/client``): a client written by UptimeRobot, not generated from the contract;
- ``GoSuccessHQ/uptimerobot-api``, an independent PHP client whose notes record what its
  authors checked against the live API.

Where they disagree, and what is done here:

1. ``keywordCaseType``. The contract's create schema says a string, ``CaseSensitive`` or
   ``CaseInsensitive``; its update schema and its monitor objects say a number, 0 or 1. Both
   clients send the number, 0 meaning case sensitive. We send the number
   (:data:`KEYWORD_CASE_SENSITIVE`) and read either form.
2. Listing alert contacts. The contract has ``GET /alert-contacts`` (paged by cursor) and
   ``GET /user/alert-contacts`` (one array); the Terraform provider reads the second, the
   PHP client offers both. We read ``GET /alert-contacts``, following every cursor.
3. Pages. The contract's list answers are ``{"data": [...], "nextLink": url or null}`` with
   a numeric ``cursor`` in the link; the Terraform provider also accepts ``monitors`` for
   ``data`` and a ``nextCursorId``. We accept all three and take only the cursor from
   ``nextLink``: the next page is asked of our own API root, so a link to another host
   never receives the key.
4. Values in answers. ``type``, ``keywordType``, ``httpMethodType`` and contact ``type``
   are strings in requests but undocumented (``{}``) in answers; the Terraform provider
   also decodes numbers, as API v2's codes. We read both.
5. The smallest interval: 30 s when creating, 15 s when updating. The plan never goes
   below 60 s, so both accept it.

What the contract says and the clients confirm: ``Authorization: Bearer <key>``; monitors at
``/monitors`` and ``/monitors/{id}`` (``GET``, ``POST``, ``PATCH``, ``DELETE``); ``interval``
and ``timeout`` in seconds, ``timeout`` required on create (0-60); ``httpMethodType``
defaults to ``HEAD`` when omitted; keyword monitors have ``type: KEYWORD``, ``keywordType``
``ALERT_EXISTS`` or ``ALERT_NOT_EXISTS`` and ``keywordValue``; ``assignedAlertContacts`` is a
list of ``{alertContactId, threshold, recurrence}`` with minutes, as in API v2; e-mail
contacts are created at ``POST /alert-contacts``, webhooks are integrations
(``POST /integrations``, ``{"type": "Webhook", "data": {"urlToNotify": ...}}``), and SMS
contacts cannot be created through the API (the number is verified in the dashboard).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CONTACT_TYPE_EMAIL",
    "DEFAULT_BASE_URL",
    "DEFAULT_HTTP_METHOD",
    "DEFAULT_TIMEOUT_S",
    "HTTP_METHODS",
    "INTEGRATION_TYPE_WEBHOOK",
    "KEYWORD_ALERT_EXISTS",
    "KEYWORD_ALERT_NOT_EXISTS",
    "KEYWORD_CASE_INSENSITIVE",
    "KEYWORD_CASE_SENSITIVE",
    "MONITOR_TYPE_HTTP",
    "MONITOR_TYPE_KEYWORD",
    "NOTIFY_UP_AND_DOWN",
    "PAGE_SIZE",
    "WEBHOOK_POST_VALUE",
    "contact_kind",
    "http_method",
    "keyword_alerts_when",
    "keyword_case_sensitive",
    "monitor_type",
]

#: The API v3 root.
DEFAULT_BASE_URL = "https://api.uptimerobot.com/v3"

#: Monitors asked for per page of ``GET /monitors`` (the contract allows 1-200).
PAGE_SIZE = 200

MONITOR_TYPE_HTTP = "HTTP"
MONITOR_TYPE_KEYWORD = "KEYWORD"
# API v2's type codes, which answers may still carry.
_MONITOR_TYPES_BY_CODE: Mapping[int, str] = {
    1: "HTTP",
    2: "KEYWORD",
    3: "PING",
    4: "PORT",
    5: "HEARTBEAT",
}

#: ``httpMethodType`` values (the contract adds QUERY to API v2's seven).
HTTP_METHODS: tuple[str, ...] = (
    "HEAD",
    "GET",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "QUERY",
)
#: What the API uses for HTTP and keyword monitors when ``httpMethodType`` is omitted.
DEFAULT_HTTP_METHOD = "HEAD"
_HTTP_METHODS_BY_CODE: Mapping[int, str] = {
    1: "HEAD",
    2: "GET",
    3: "POST",
    4: "PUT",
    5: "PATCH",
    6: "DELETE",
    7: "OPTIONS",
}

#: ``keywordType``: alert when the keyword is there, or when it is missing.
KEYWORD_ALERT_EXISTS = "ALERT_EXISTS"
KEYWORD_ALERT_NOT_EXISTS = "ALERT_NOT_EXISTS"
_KEYWORD_TYPES: Mapping[Any, str] = {
    KEYWORD_ALERT_EXISTS: "present",
    KEYWORD_ALERT_NOT_EXISTS: "missing",
    1: "present",
    2: "missing",
}

#: ``keywordCaseType`` as sent (disagreement 1 above): 0 case sensitive, 1 insensitive.
KEYWORD_CASE_SENSITIVE = 0
KEYWORD_CASE_INSENSITIVE = 1
_KEYWORD_CASES: Mapping[Any, bool] = {
    0: True,
    1: False,
    "CaseSensitive": True,
    "CaseInsensitive": False,
}

#: ``timeout`` (seconds) sent when creating a monitor: required by the contract; API v2's
#: default.
DEFAULT_TIMEOUT_S = 30

#: Personal alert contact type for e-mail (``POST /alert-contacts``).
CONTACT_TYPE_EMAIL = "Email"
#: Integration type for webhooks (``POST /integrations``).
INTEGRATION_TYPE_WEBHOOK = "Webhook"
#: ``enableNotificationsFor`` of a webhook: both when a monitor goes down and comes back.
NOTIFY_UP_AND_DOWN = "UpAndDown"
#: What a webhook POSTs, as JSON: a ``text`` field (what Slack's incoming webhooks read)
#: made of UptimeRobot's alert variables, plus the same variables one by one.
WEBHOOK_POST_VALUE = json.dumps(
    {
        "text": "*monitorFriendlyName* is *alertTypeFriendlyName*: *alertDetails* (*monitorURL*)",
        "monitor": "*monitorFriendlyName*",
        "url": "*monitorURL*",
        "alert": "*alertTypeFriendlyName*",
        "details": "*alertDetails*",
    }
)

# Contact and integration types, by name or API v2 code, as the plan's kinds.
_CONTACT_KINDS: Mapping[Any, str] = {
    "email": "email",
    "prosms": "sms",
    "emailtosms": "sms",
    "webhook": "webhook",
    2: "email",
    1: "sms",
    8: "sms",
    5: "webhook",
}


def _name_or_code(value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value.strip() if isinstance(value, str) else None


def monitor_type(value: Any) -> str | None:
    """``"HTTP"``, ``"KEYWORD"``, ... from a monitor's ``type`` (a name or a code)."""
    key = _name_or_code(value)
    if isinstance(key, int):
        return _MONITOR_TYPES_BY_CODE.get(key)
    return key.upper() if isinstance(key, str) and key else None


def http_method(value: Any) -> str:
    """The method a monitor uses, from its ``httpMethodType``: null means the default."""
    key = _name_or_code(value)
    if isinstance(key, int):
        return _HTTP_METHODS_BY_CODE.get(key, str(key))
    return key.upper() if isinstance(key, str) and key else DEFAULT_HTTP_METHOD


def keyword_alerts_when(value: Any) -> str | None:
    """``"missing"`` (``ALERT_NOT_EXISTS``), ``"present"`` (``ALERT_EXISTS``) or None."""
    key = _name_or_code(value)
    return _KEYWORD_TYPES.get(key.upper() if isinstance(key, str) else key)


def keyword_case_sensitive(value: Any) -> bool | None:
    """Whether a keyword match is case sensitive, from ``keywordCaseType``; None if unknown."""
    return _KEYWORD_CASES.get(_name_or_code(value))


def contact_kind(value: Any) -> str | None:
    """``"email"``, ``"sms"`` or ``"webhook"`` for a contact or integration ``type``."""
    key = _name_or_code(value)
    return _CONTACT_KINDS.get(key.lower() if isinstance(key, str) else key)
