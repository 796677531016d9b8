"""A small, careful client for the UptimeRobot API v2 (frozen by UptimeRobot; see client_v3).

Every API v2 call is ``POST {base_url}/{methodName}`` with an
``application/x-www-form-urlencoded`` body that carries ``api_key``, ``format=json`` and
the method's parameters. The answer is JSON: ``{"stat": "ok", ...}`` or
``{"stat": "fail", "error": {"type": ..., "parameter_name": ..., "message": ...}}``.

What this module adds on top of the wire format:

- list calls follow ``offset``/``limit`` paging (50 per page, the API's maximum) until
  ``pagination.total`` is reached, so ``get_monitors()`` returns every monitor;
- rate limits (HTTP 429, honouring ``Retry-After``), 5xx answers and connection errors
  are retried with exponential backoff and jitter, bounded both in attempts and in total
  time; then :class:`UptimeRobotError` is raised with the API's own message;
- calls that create something (``newMonitor``, ``newAlertContact``) are not retried
  when the request may already have reached the API (the connection dropped after it
  was sent, or the API answered 5xx), because a retry could create a duplicate; the error
  says so (a 429 is retried: the API did nothing);
- the API key never appears in a log line, an exception message or ``repr()``.

The HTTP stack is urllib3, set up by ``wsgi_observe._http`` like every outgoing request of
the package (timeouts, no redirects, no proxy from the environment) and imported when a
client is built, so importing ``wsgi_observe`` stays cheap.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from .. import _http
from ..config import DEFAULT_UPTIMEROBOT_API_URL
from ._wire import (
    Retryable,
    RetryPolicy,
    UptimeRobotError,
    call_with_retries,
    mask_key,
    parse_retry_after,
    scrub_key,
)

if TYPE_CHECKING:
    import urllib3

__all__ = [
    "ALERT_CONTACT_TYPES",
    "DEFAULT_BASE_URL",
    "HTTP_METHODS",
    "KEYWORD_ALERT_EXISTS",
    "KEYWORD_ALERT_NOT_EXISTS",
    "MONITOR_TYPE_HTTP",
    "MONITOR_TYPE_KEYWORD",
    "PAGE_LIMIT",
    "UptimeRobotClient",
    "UptimeRobotError",
    "format_alert_contacts",
]

logger = logging.getLogger("wsgi_observe.uptimerobot")

DEFAULT_BASE_URL = DEFAULT_UPTIMEROBOT_API_URL

#: ``http_method`` codes of API v2 (newMonitor / editMonitor).
HTTP_METHODS: Mapping[str, int] = {
    "HEAD": 1,
    "GET": 2,
    "POST": 3,
    "PUT": 4,
    "PATCH": 5,
    "DELETE": 6,
    "OPTIONS": 7,
}

#: Monitor ``type`` 1 is "HTTP(s)", 2 is "Keyword".
MONITOR_TYPE_HTTP = 1
MONITOR_TYPE_KEYWORD = 2

#: ``keyword_type`` of a keyword monitor: alert when the keyword exists (1) or when it does
#: not (2).
KEYWORD_ALERT_EXISTS = 1
KEYWORD_ALERT_NOT_EXISTS = 2

#: ``type`` codes of alert contacts accepted by ``newAlertContact``.
ALERT_CONTACT_TYPES: Mapping[str, int] = {
    "sms": 1,
    "email": 2,
    "twitter": 3,
    "webhook": 5,
    "pushbullet": 6,
    "pushover": 9,
}

#: getMonitors / getAlertContacts return at most 50 records per call.
PAGE_LIMIT = 50

# A retry of these could create a second monitor or contact if the first attempt reached
# the API; edits and deletes are safe to repeat.
_NOT_IDEMPOTENT = frozenset({"newMonitor", "newAlertContact", "newMWindow", "newPSP"})

# A safety net for paging: 10,000 pages of 50 is far beyond any account's monitor limit.
_MAX_PAGES = 10_000

Params = Mapping[str, Any]


def format_alert_contacts(contacts: Iterable[tuple[str | int, int, int]]) -> str:
    """Format ``(id, threshold, recurrence)`` triples as API v2's ``alert_contacts``.

    ``[("0123", 5, 0), ("0456", 5, 0)]`` becomes ``"0123_5_0-0456_5_0"``. Threshold and
    recurrence are minutes ("if down for x minutes, alert every y minutes"); UptimeRobot
    applies them on paid plans only and reports 0 on the free plan.
    """
    return "-".join(
        f"{cid}_{int(threshold)}_{int(recurrence)}" for cid, threshold, recurrence in contacts
    )


def http_method_code(method: str | int) -> int:
    """The API v2 ``http_method`` code for ``"GET"``, ``"head"``, ... or a code itself."""
    if isinstance(method, bool):
        raise ValueError(f"http_method={method!r}: expected one of {', '.join(HTTP_METHODS)}")
    if isinstance(method, int):
        if method in HTTP_METHODS.values():
            return method
    elif isinstance(method, str) and method.strip().upper() in HTTP_METHODS:
        return HTTP_METHODS[method.strip().upper()]
    raise ValueError(f"http_method={method!r}: expected one of {', '.join(HTTP_METHODS)}")


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "-".join(str(v) for v in value)
    return str(value)


class UptimeRobotClient:
    """Client for the UptimeRobot API v2 with paging, bounded retries and a hidden key.

    This is what ``wsgi_observe.UptimeRobotClient`` names, unchanged: the guide's code
    (``get_monitors()``, ``create_monitor(friendly_name=..., url=..., interval=...)``,
    ``update_monitor``, ``delete_monitor``) and its API v2 answers (``friendly_name``,
    ``http_method`` codes, ...) keep working. UptimeRobot keeps API v2 running but no longer
    updates it; :class:`~wsgi_observe.uptimerobot.UptimeRobotV3Client` speaks API v3 with
    the same method names.

    Parameters:
        api_key: the account's main API key (read-only keys can only list).
        base_url: the API root; point it at a local fake in tests.
        timeout: seconds allowed for each HTTP request (connect and read).
        max_retries: how many times one call is retried after a 429, a 5xx or a
            connection error (so at most ``max_retries + 1`` requests).
        max_total_time: seconds one call may take, all attempts and waits included;
            no wait is started that would end after it.
        backoff_base, backoff_max: the wait before retry *n* is
            ``min(backoff_max, backoff_base * 2 ** (n - 1))``, scaled by a random
            factor in [0.5, 1.0); a ``Retry-After`` header is honoured instead.
        sleep, clock, jitter: injectable ``time.sleep``, ``time.monotonic`` and
            ``random.random``, so tests need no real waiting.

    Example::

        with UptimeRobotClient(Config.from_env().uptimerobot_api_key) as client:
            monitor = client.create_monitor("API", "https://api.example.com/health")
            client.update_monitor(monitor["id"], interval=600)

    Environment: none. The client reads no variables; ``uptimerobot setup`` takes
    ``UPTIMEROBOT_API_KEY`` and ``UPTIMEROBOT_API_URL`` from :class:`wsgi_observe.Config`
    and passes them in.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        max_retries: int = 4,
        max_total_time: float = 60.0,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            # Never echo the value: it may be a real key with a typo.
            raise ValueError("api_key: expected a non-empty string")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url={base_url!r}: expected an http(s):// URL")
        if timeout <= 0 or max_total_time <= 0:
            raise ValueError("timeout and max_total_time must be greater than 0")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        import urllib3  # here, not at import time: importing wsgi_observe stays light

        self._urllib3 = urllib3
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_total_time = float(max_total_time)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._pool: urllib3.PoolManager = _http.new_pool(
            maxsize=2, headers={"User-Agent": "wsgi_observe-uptimerobot"}
        )

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close pooled connections; the client may not be used afterwards."""
        self._pool.clear()

    def __enter__(self) -> UptimeRobotClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UptimeRobotClient(base_url={self.base_url!r}, api_key={mask_key(self._api_key)!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy the key into wherever the pickle goes; refuse.
        raise TypeError("UptimeRobotClient cannot be pickled")

    # -- monitors ------------------------------------------------------------------------

    def get_monitors(self, **filters: Any) -> list[dict[str, Any]]:
        """Every monitor of the account (all pages), optionally filtered.

        ``filters`` are getMonitors parameters, e.g. ``monitors=[1, 2]``,
        ``search="api"``, ``alert_contacts=True``. Paging is handled here.
        """
        return self._get_all("getMonitors", "monitors", filters)

    def create_monitor(
        self,
        friendly_name: str,
        url: str,
        interval: int = 300,
        http_method: str | int = "GET",
        **extra: Any,
    ) -> dict[str, Any]:
        """Create an HTTP(s) monitor; returns the API's ``monitor`` object (``id``, ``status``).

        ``interval`` is in seconds. ``http_method`` is ``"HEAD"``, ``"GET"``, ``"POST"``,
        ``"PUT"``, ``"PATCH"``, ``"DELETE"``, ``"OPTIONS"`` or the API's code (1-7).
        ``extra`` holds further newMonitor parameters (``timeout``, ``alert_contacts``
        as a string or ``(id, threshold, recurrence)`` triples, ...).
        """
        params: dict[str, Any] = {
            "friendly_name": friendly_name,
            "url": url,
            "type": MONITOR_TYPE_HTTP,
            "interval": int(interval),
            "http_method": http_method_code(http_method),
        }
        params.update(self._monitor_fields(extra))
        payload = self.call("newMonitor", params)
        return dict(payload.get("monitor") or {})

    def update_monitor(self, monitor_id: int | str, **fields: Any) -> dict[str, Any]:
        """Change fields of a monitor (``interval=600``, ``url=...``, ``http_method="HEAD"``).

        Note that ``alert_contacts`` replaces the monitor's whole list of contacts.
        """
        if not fields:
            raise ValueError("update_monitor: give at least one field to change")
        params = {"id": monitor_id, **self._monitor_fields(fields)}
        payload = self.call("editMonitor", params)
        return dict(payload.get("monitor") or {"id": monitor_id})

    def delete_monitor(self, monitor_id: int | str) -> dict[str, Any]:
        """Delete a monitor; returns the API's ``monitor`` object (its ``id``)."""
        payload = self.call("deleteMonitor", {"id": monitor_id})
        return dict(payload.get("monitor") or {"id": monitor_id})

    # -- alert contacts ------------------------------------------------------------------

    def get_alert_contacts(self, **filters: Any) -> list[dict[str, Any]]:
        """Every alert contact of the account (all pages)."""
        return self._get_all("getAlertContacts", "alert_contacts", filters)

    def new_alert_contact(
        self,
        contact_type: str | int,
        value: str,
        friendly_name: str | None = None,
    ) -> dict[str, Any]:
        """Create an alert contact (``"email"``, ``"sms"``, ``"webhook"``, ... or a code).

        Returns the API's ``alertcontact`` object (``id``, ``status``). Email contacts
        stay "not activated" until the address owner confirms them.
        """
        if isinstance(contact_type, str):
            key = contact_type.strip().lower()
            if key not in ALERT_CONTACT_TYPES:
                raise ValueError(
                    f"contact_type={contact_type!r}: expected one of "
                    f"{', '.join(ALERT_CONTACT_TYPES)}"
                )
            code = ALERT_CONTACT_TYPES[key]
        else:
            code = int(contact_type)
        params: dict[str, Any] = {"type": code, "value": value}
        if friendly_name:
            params["friendly_name"] = friendly_name
        payload = self.call("newAlertContact", params)
        return dict(payload.get("alertcontact") or payload.get("alert_contact") or {})

    # -- the wire ------------------------------------------------------------------------

    def call(self, api_method: str, params: Params | None = None) -> dict[str, Any]:
        """Call one API v2 method and return the decoded ``stat: ok`` answer.

        Raises :class:`UptimeRobotError` when the API answers ``stat: fail``, or when
        retries run out (attempts or time).
        """
        fields = [("api_key", self._api_key), ("format", "json")]
        for name, value in (params or {}).items():
            if value is not None and name not in ("api_key", "format"):
                fields.append((name, _form_value(value)))
        body = urlencode(fields)
        idempotent = api_method not in _NOT_IDEMPOTENT
        return call_with_retries(
            lambda timeout, _attempt: self._attempt(api_method, body, timeout, idempotent),
            what=api_method,
            policy=self._policy,
            timeout=self.timeout,
            scrub=self._scrub,
        )

    def _attempt(
        self, api_method: str, body: str, timeout: float, idempotent: bool
    ) -> dict[str, Any]:
        u3 = self._urllib3
        url = f"{self.base_url}/{api_method}"
        logger.debug("UptimeRobot %s: POST %s", api_method, url)
        try:
            response = _http.request(
                self._pool,
                "POST",
                url,
                body=body.encode("utf-8"),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                    "Cache-Control": "no-cache",
                },
                timeout_s=timeout,
            )
        except u3.exceptions.SSLError as exc:
            # A certificate problem does not go away by asking again.
            raise UptimeRobotError(
                f"TLS error talking to {urlsplit(url).netloc}: {self._scrub(str(exc))}",
                api_method=api_method,
            ) from None
        except u3.exceptions.ConnectTimeoutError as exc:
            # Includes NewConnectionError: the request never left, so retrying is safe.
            raise Retryable(
                f"cannot connect to {urlsplit(url).netloc}: {_http.describe_error(exc)}"
            ) from None
        except u3.exceptions.HTTPError as exc:
            # Read timeout, connection reset mid-answer, ...: the API may have acted.
            message = f"no answer from {urlsplit(url).netloc}: {_http.describe_error(exc)}"
            if idempotent:
                raise Retryable(message) from None
            raise UptimeRobotError(
                message,
                api_method=api_method,
                detail="the request may have been applied, so it was not repeated; "
                "re-running setup is safe",
            ) from None
        status = response.status
        payload = _decode(response.data)
        error = payload.get("error") if isinstance(payload, dict) else None
        message, error_type, parameter_name = self._error_fields(error, status)
        if status == 429 or (status >= 500 and idempotent):
            # A 429 means the API did nothing, so even a create may be repeated.
            raise Retryable(
                message,
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After"))
                if status == 429
                else None,
                error_type=error_type,
                parameter_name=parameter_name,
            )
        if status >= 500:
            # A create that failed with a 5xx may still have been applied: not repeated.
            raise UptimeRobotError(
                message,
                status=status,
                error_type=error_type,
                parameter_name=parameter_name,
                api_method=api_method,
                detail=f"HTTP {status}; the request may have been applied, so it was not "
                "repeated; re-running setup is safe",
            )
        if not isinstance(payload, dict):
            raise UptimeRobotError(
                f"answered HTTP {status} with a body that is not JSON",
                status=status,
                api_method=api_method,
            )
        if payload.get("stat") == "ok" and 200 <= status < 300:
            return payload
        raise UptimeRobotError(
            message,
            status=status,
            error_type=error_type,
            parameter_name=parameter_name,
            api_method=api_method,
        )

    def _error_fields(self, error: Any, status: int) -> tuple[str, str | None, str | None]:
        if not isinstance(error, dict):
            return (f"HTTP {status}", None, None)
        error_type = error.get("type")
        parameter_name = error.get("parameter_name")
        message = error.get("message")
        if not message:
            parts = [str(error_type or "error")]
            if parameter_name:
                parts.append(f"parameter {parameter_name}")
            message = ": ".join(parts)
        return (
            self._scrub(str(message)),
            str(error_type) if error_type is not None else None,
            str(parameter_name) if parameter_name is not None else None,
        )

    def _scrub(self, text: str) -> str:
        # The API should never echo the key, but an error must not leak it if it does.
        return scrub_key(self._api_key, text)

    @property
    def _policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_retries,
            self.max_total_time,
            self.backoff_base,
            self.backoff_max,
            self._sleep,
            self._clock,
            self._jitter,
        )

    def _monitor_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(fields)
        if "http_method" in out and out["http_method"] is not None:
            out["http_method"] = http_method_code(out["http_method"])
        contacts = out.get("alert_contacts")
        if contacts is not None and not isinstance(contacts, str):
            out["alert_contacts"] = format_alert_contacts(contacts)
        return out

    def _get_all(self, api_method: str, key: str, filters: Params) -> list[dict[str, Any]]:
        if "offset" in filters or "limit" in filters:
            raise TypeError(f"{api_method}: offset and limit are handled by the client")
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        offset = 0
        for _ in range(_MAX_PAGES):
            payload = self.call(api_method, {**filters, "offset": offset, "limit": PAGE_LIMIT})
            page = payload.get(key) or []
            # getMonitors has a "pagination" block; getAlertContacts puts the same
            # numbers at the top level.
            pagination = payload.get("pagination") or payload
            try:
                total = int(pagination.get("total", 0))
            except (TypeError, ValueError):
                total = 0
            for item in page:
                ident = str(item.get("id"))
                # Offset paging can repeat a record if the account changes meanwhile.
                if ident not in seen:
                    seen.add(ident)
                    items.append(item)
            offset += len(page)
            if not page or offset >= total:
                break
        return items


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
