"""A small, careful client for the UptimeRobot API v3.

API v3 is REST: ``GET``/``POST {base_url}/monitors``, ``GET``/``PATCH``/``DELETE
{base_url}/monitors/{id}``, JSON bodies, the key as ``Authorization: Bearer <key>``, and
lists paged by a cursor (``{"data": [...], "nextLink": ...}``). Field names and enum values
come from :mod:`wsgi_observe.uptimerobot.schema_v3`, which also records where UptimeRobot's
documentation and the clients that speak v3 disagree.

What this module adds on top of the wire format, with the v2 client's care:

- list calls follow the cursor until the last page, so ``get_monitors()`` returns every
  monitor; only the cursor is taken from ``nextLink`` (the key never goes to another host);
- rate limits (HTTP 429, honouring ``Retry-After``, else ``X-RateLimit-Reset``) are
  retried for every call, since the API did nothing; 5xx answers and connections that
  broke after the request was sent are retried only for idempotent calls (``GET``,
  ``PATCH`` with absolute values, ``DELETE``), never for a ``POST`` that may have reached
  the API; all within a number of attempts and a time budget;
- a 401 says that the key was refused, a 403 that the key may not do this; every other
  refusal carries the API's own message (a list of validation messages is joined);
- the key never appears in a log line, an exception message or ``repr()``.

The HTTP stack is urllib3, set up by ``wsgi_observe._http`` (timeouts, no redirects, no proxy
from the environment), imported when a client is built.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from .. import _http
from . import schema_v3 as v3
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

__all__ = ["DEFAULT_BASE_URL", "UptimeRobotV3Client"]

logger = logging.getLogger("wsgi_observe.uptimerobot")

DEFAULT_BASE_URL = v3.DEFAULT_BASE_URL

# Repeating these cannot do twice what was done once: GET reads, our PATCHes set absolute
# values, a DELETE of what is gone is answered 404 (taken as done after a retry).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})

# A safety net for paging: far beyond any account's monitor limit.
_MAX_PAGES = 10_000

# snake_case names the guide's calls use -> API v3 names.
_ALIASES: Mapping[str, str] = {
    "friendly_name": "friendlyName",
    "http_method": "httpMethodType",
    "alert_contacts": "assignedAlertContacts",
    "keyword_value": "keywordValue",
}

_MAX_MESSAGE = 300


class UptimeRobotV3Client:
    """Client for the UptimeRobot API v3 with cursor paging, bounded retries and a hidden key.

    The method names are the API v2 client's, so the guide's calls work with either;
    answers are API v3's objects (``friendlyName``, ``httpMethodType``, ...).

    Parameters:
        api_key: the account's main API key, sent as a Bearer token.
        base_url: the API root (``https://api.uptimerobot.com/v3``); a local fake in tests.
        timeout: seconds allowed for each HTTP request (connect and read).
        max_retries: how many times one call is retried (at most ``max_retries + 1``
            requests).
        max_total_time: seconds one call may take, all attempts and waits included.
        page_size: monitors asked for per page (1-200).
        backoff_base, backoff_max, sleep, clock, jitter: see
            :class:`~wsgi_observe.uptimerobot._wire.RetryPolicy`.

    Example::

        with UptimeRobotV3Client(Config.from_env().uptimerobot_api_key) as client:
            monitor = client.create_monitor("API", "https://api.example.com/health")
            client.update_monitor(monitor["id"], interval=600)

    Environment: none. ``uptimerobot setup`` takes ``UPTIMEROBOT_API_KEY``,
    ``UPTIMEROBOT_API_URL`` and ``UPTIMEROBOT_TIMEOUT`` from :class:`wsgi_observe.Config`.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        max_retries: int = 4,
        max_total_time: float = 60.0,
        *,
        page_size: int = v3.PAGE_SIZE,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key: expected a non-empty string")  # never echo a key
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in api_key.strip()):
            # A line break would inject a header; a key read from a file often ends in one.
            raise ValueError("api_key: must not contain control characters")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url={base_url!r}: expected an http(s):// URL")
        if timeout <= 0 or max_total_time <= 0:
            raise ValueError("timeout and max_total_time must be greater than 0")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if not 1 <= page_size <= v3.PAGE_SIZE:
            raise ValueError(f"page_size={page_size!r}: expected 1 to {v3.PAGE_SIZE}")
        import urllib3  # here, not at import time: importing wsgi_observe stays light

        self._urllib3 = urllib3
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.page_size = int(page_size)
        self._policy = RetryPolicy(
            int(max_retries),
            float(max_total_time),
            float(backoff_base),
            float(backoff_max),
            sleep,
            clock,
            jitter,
        )
        self._pool: urllib3.PoolManager = _http.new_pool(
            maxsize=2, headers={"User-Agent": "wsgi_observe-uptimerobot"}
        )

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close pooled connections; the client may not be used afterwards."""
        self._pool.clear()

    def __enter__(self) -> UptimeRobotV3Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        key = mask_key(self._api_key)
        return f"UptimeRobotV3Client(base_url={self.base_url!r}, api_key={key!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy the key into wherever the pickle goes; refuse.
        raise TypeError("UptimeRobotV3Client cannot be pickled")

    # -- monitors ------------------------------------------------------------------------

    def get_monitors(self, **filters: Any) -> list[dict[str, Any]]:
        """Every monitor of the account (all pages), optionally filtered.

        ``filters`` are ``GET /monitors`` query parameters: ``name``, ``url`` (partial,
        case-insensitive), ``status`` and ``tags`` (lists or comma-separated), ``groupId``.
        """
        if "cursor" in filters or "limit" in filters:
            raise TypeError("get_monitors: cursor and limit are handled by the client")
        query = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                 for k, v in filters.items() if v is not None}  # fmt: skip
        query["limit"] = self.page_size
        return self._get_all("/monitors", query)

    def get_monitor(self, monitor_id: int | str) -> dict[str, Any]:
        """One monitor by id."""
        return _object(self.request("GET", f"/monitors/{_ident(monitor_id)}"))

    def create_monitor(
        self,
        friendly_name: str,
        url: str,
        interval: int = 300,
        http_method: str = "GET",
        *,
        keyword: str | None = None,
        timeout: int = v3.DEFAULT_TIMEOUT_S,
        alert_contacts: Iterable[tuple[str | int, int, int]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create an HTTP monitor, or a keyword monitor when ``keyword`` is given.

        A keyword monitor alerts when ``keyword`` is missing from the answer (case
        sensitive). ``interval`` and ``timeout`` are seconds; ``alert_contacts`` are
        ``(id, threshold_minutes, recurrence_minutes)`` triples; ``extra`` holds further
        API v3 fields (``customHttpHeaders``, ``successHttpResponseCodes``, ...). Returns
        the API's monitor object (``id``, ``friendlyName``, ...).
        """
        body: dict[str, Any] = {
            "type": v3.MONITOR_TYPE_HTTP,
            "friendlyName": friendly_name,
            "url": url,
            "interval": int(interval),
            "timeout": int(timeout),
            "httpMethodType": _method(http_method),
        }
        if keyword is not None:
            body.update(_keyword_fields(keyword))
        if alert_contacts is not None:
            body["assignedAlertContacts"] = assigned_contacts(alert_contacts)
        body.update(self._fields(extra))
        return _object(self.request("POST", "/monitors", body=body))

    def update_monitor(self, monitor_id: int | str, **fields: Any) -> dict[str, Any]:
        """Change fields of a monitor (``interval=600``, ``url=...``, ``http_method="HEAD"``,
        ``keyword="healthy"``, ``alert_contacts=[(id, threshold, recurrence)]``, or API v3
        names). ``alert_contacts`` replaces the monitor's whole list of contacts."""
        if not fields:
            raise ValueError("update_monitor: give at least one field to change")
        body: dict[str, Any] = {}
        keyword = fields.pop("keyword", None)
        if keyword is not None:
            body.update(_keyword_fields(keyword))
        body.update(self._fields(fields))
        answer = self.request("PATCH", f"/monitors/{_ident(monitor_id)}", body=body)
        return _object(answer) or {"id": monitor_id}

    def delete_monitor(self, monitor_id: int | str) -> dict[str, Any]:
        """Delete a monitor; returns ``{"id": monitor_id}``."""
        self.request("DELETE", f"/monitors/{_ident(monitor_id)}")
        return {"id": monitor_id}

    # -- alert contacts and integrations -------------------------------------------------

    def get_alert_contacts(self) -> list[dict[str, Any]]:
        """Every personal alert contact (e-mail, SMS, voice, app push), all pages."""
        return self._get_all("/alert-contacts", {})

    def get_integrations(self) -> list[dict[str, Any]]:
        """Every integration (webhooks, Slack, ...), all pages. Monitors assign them by id,
        like personal contacts."""
        return self._get_all("/integrations", {})

    def new_alert_contact(
        self, contact_type: str, value: str, friendly_name: str | None = None
    ) -> dict[str, Any]:
        """Create an ``"email"`` contact or a ``"webhook"`` integration; returns its object.

        API v3 cannot create SMS contacts (the number is verified in UptimeRobot's
        dashboard), so ``"sms"`` raises ``ValueError``. E-mail contacts stay "not
        activated" until their owner confirms them.
        """
        kind = contact_type.strip().lower() if isinstance(contact_type, str) else ""
        if kind == "email":
            body: dict[str, Any] = {"type": v3.CONTACT_TYPE_EMAIL, "value": value}
            if friendly_name:
                body["friendlyName"] = friendly_name
            return _object(self.request("POST", "/alert-contacts", body=body))
        if kind == "webhook":
            data: dict[str, Any] = {
                "urlToNotify": value,
                "postValue": v3.WEBHOOK_POST_VALUE,
                "sendAsJSON": True,
                "enableNotificationsFor": v3.NOTIFY_UP_AND_DOWN,
            }
            if friendly_name:
                data["friendlyName"] = friendly_name[:60]  # the contract's limit
            body = {"type": v3.INTEGRATION_TYPE_WEBHOOK, "data": data}
            return _object(self.request("POST", "/integrations", body=body))
        if kind == "sms":
            raise ValueError(
                "API v3 cannot create SMS contacts: UptimeRobot verifies phone numbers in its "
                "dashboard"
            )
        raise ValueError(f"contact_type={contact_type!r}: expected email or webhook")

    # -- the wire ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One API v3 call: ``method`` and ``path`` below the root; returns decoded JSON
        (``{}`` for an empty answer). Raises :class:`UptimeRobotError` when the API refuses
        or when retries run out (attempts or time)."""
        method = method.upper()
        if not path.startswith("/") or "//" in path or "?" in path:
            raise ValueError(f"path={path!r}: expected an absolute path without a query")
        url = self.base_url + path
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items()})
        payload = None if body is None else json.dumps(body).encode("utf-8")
        idempotent = method in _IDEMPOTENT
        what = f"{method} {path}"
        return call_with_retries(
            lambda timeout, attempt: self._attempt(
                method, url, what, payload, timeout, idempotent, attempt
            ),
            what=what,
            policy=self._policy,
            timeout=self.timeout,
            scrub=self._scrub,
        )

    def _attempt(
        self,
        method: str,
        url: str,
        what: str,
        payload: bytes | None,
        timeout: float,
        idempotent: bool,
        attempt: int,
    ) -> Any:
        u3 = self._urllib3
        host = urlsplit(url).netloc
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        logger.debug("UptimeRobot %s (attempt %d)", what, attempt)
        try:
            response = _http.request(
                self._pool, method, url, body=payload, headers=headers, timeout_s=timeout
            )
        except u3.exceptions.SSLError as exc:
            # A certificate problem does not go away by asking again.
            raise UptimeRobotError(
                f"TLS error talking to {host}: {self._scrub(str(exc))}", api_method=what
            ) from None
        except u3.exceptions.ConnectTimeoutError as exc:
            # Includes NewConnectionError: the request never left, so retrying is safe.
            raise Retryable(f"cannot connect to {host}: {_http.describe_error(exc)}") from None
        except u3.exceptions.HTTPError as exc:
            # Read timeout, connection reset mid-answer, ...: the API may have acted.
            message = f"no answer from {host}: {_http.describe_error(exc)}"
            if idempotent:
                raise Retryable(message) from None
            raise UptimeRobotError(message, api_method=what, detail=_MAY_HAVE_APPLIED) from None
        status = response.status
        data = response.data
        if 200 <= status < 300:
            return self._decode_ok(data, status, what)
        if method == "DELETE" and status in (404, 410) and attempt > 1:
            return {}  # an earlier attempt deleted it and its answer was lost
        message, code = self._error_fields(data, status)
        if status == 429:
            raise Retryable(
                message, status=status, retry_after=_rate_limit_wait(response), error_type=code
            )
        if status >= 500:
            if idempotent:
                raise Retryable(message, status=status, error_type=code)
            raise UptimeRobotError(
                message,
                status=status,
                error_type=code,
                api_method=what,
                detail=f"HTTP {status}; {_MAY_HAVE_APPLIED}",
            )
        if status == 401:
            message = f"the API key was refused (HTTP 401: {message})"
        elif status == 403:
            message = f"this API key may not do that (HTTP 403: {message})"
        raise UptimeRobotError(message, status=status, error_type=code, api_method=what)

    def _decode_ok(self, data: bytes, status: int, what: str) -> Any:
        if not data.strip():
            return {}
        decoded = _decode(data)
        if decoded is None:
            raise UptimeRobotError(
                f"answered HTTP {status} with a body that is not JSON", status=status,
                api_method=what,
            )  # fmt: skip
        return decoded

    def _error_fields(self, data: bytes, status: int) -> tuple[str, str | None]:
        decoded = _decode(data)
        message: Any = None
        code: Any = None
        if isinstance(decoded, dict):
            # NestJS validation errors carry a list of messages.
            for name in ("message", "error", "detail"):
                value = decoded.get(name)
                if isinstance(value, list):
                    value = "; ".join(str(v).strip() for v in value if str(v).strip())
                if isinstance(value, str) and value.strip():
                    message = value.strip()
                    break
            code = decoded.get("code", decoded.get("error"))
        elif data.strip():
            text = data.decode("utf-8", "replace").strip()
            message = text if not text.startswith("<") else None  # not an HTML error page
        if not message:
            message = f"HTTP {status}"
        text = self._scrub(" ".join(str(message).split()))
        if len(text) > _MAX_MESSAGE:
            text = text[:_MAX_MESSAGE] + "…"
        return text, (str(code) if isinstance(code, (str, int)) and str(code) else None)

    def _scrub(self, text: str) -> str:
        # The API should never echo the key, but an error must not leak it if it does.
        return scrub_key(self._api_key, text)

    def _fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in fields.items():
            name = _ALIASES.get(name, name)
            if name == "httpMethodType" and value is not None:
                value = _method(value)
            elif name == "assignedAlertContacts" and value is not None:
                value = assigned_contacts(value)
            out[name] = value
        return out

    def _get_all(self, path: str, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen_ids: set[str] = set()
        seen_cursors: set[int] = set()
        cursor: int | None = None
        for _ in range(_MAX_PAGES):
            page_query = dict(query)
            if cursor is not None:
                page_query["cursor"] = cursor
            payload = self.request("GET", path, query=page_query)
            if isinstance(payload, list):  # an unpaged list (``/user/alert-contacts``)
                return [dict(item) for item in payload if isinstance(item, dict)]
            if not isinstance(payload, dict):
                raise UptimeRobotError(
                    "answered with something that is not a page", api_method=f"GET {path}"
                )
            page = payload.get("data")
            if page is None:
                page = payload.get("monitors")
            if not isinstance(page, list):
                raise UptimeRobotError("answered a page without data", api_method=f"GET {path}")
            for item in page:
                if not isinstance(item, dict):
                    continue
                ident = str(item.get("id"))
                if ident not in seen_ids:  # a page boundary can repeat a record
                    seen_ids.add(ident)
                    items.append(item)
            cursor = _next_cursor(payload, path)
            if cursor is None or not page:
                return items
            if cursor in seen_cursors:
                raise UptimeRobotError(
                    f"the API repeated the paging cursor {cursor}", api_method=f"GET {path}"
                )
            seen_cursors.add(cursor)
        raise UptimeRobotError(f"more than {_MAX_PAGES} pages", api_method=f"GET {path}")


_MAY_HAVE_APPLIED = (
    "the request may have been applied, so it was not repeated; re-running setup is safe"
)


def assigned_contacts(contacts: Iterable[Any]) -> list[dict[str, Any]]:
    """``assignedAlertContacts`` from ``(id, threshold, recurrence)`` triples (minutes) or
    from objects already in API v3's shape."""
    out = []
    for item in contacts:
        if isinstance(item, Mapping):
            out.append(dict(item))
            continue
        ident, threshold, recurrence = item
        out.append(
            {
                "alertContactId": int(ident),
                "threshold": int(threshold),
                "recurrence": int(recurrence),
            }
        )
    return out


def _keyword_fields(keyword: str) -> dict[str, Any]:
    return {
        "type": v3.MONITOR_TYPE_KEYWORD,
        "keywordType": v3.KEYWORD_ALERT_NOT_EXISTS,
        "keywordValue": keyword,
        "keywordCaseType": v3.KEYWORD_CASE_SENSITIVE,
    }


def _method(method: Any) -> str:
    name = method.strip().upper() if isinstance(method, str) else ""
    if name not in v3.HTTP_METHODS:
        raise ValueError(f"http_method={method!r}: expected one of {', '.join(v3.HTTP_METHODS)}")
    return name


def _ident(monitor_id: int | str) -> str:
    text = str(monitor_id).strip()
    if not text.isdigit():
        raise ValueError(f"monitor_id={monitor_id!r}: expected a number")
    return quote(text)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _next_cursor(payload: Mapping[str, Any], path: str) -> int | None:
    raw = payload.get("nextCursorId")
    if raw is None:
        link = payload.get("nextLink")
        if not isinstance(link, str) or not link.strip():
            return None
        values = parse_qs(urlsplit(link).query).get("cursor")
        raw = values[0] if values else None
    text = str(raw).strip() if raw is not None else ""
    if isinstance(raw, bool) or not text.isdigit():
        raise UptimeRobotError(
            "answered a next page without a numeric cursor", api_method=f"GET {path}"
        )
    return int(text)


def _rate_limit_wait(response: Any) -> float | None:
    wait = parse_retry_after(response.headers.get("Retry-After"))
    if wait is not None:
        return wait
    reset = response.headers.get("X-RateLimit-Reset")
    try:
        seconds = float(reset) - time.time() if reset is not None else None
    except ValueError:
        return None
    # Epoch seconds when the window ends; ignore values that cannot be meant.
    return max(0.0, seconds) if seconds is not None and seconds <= 3600 else None


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
