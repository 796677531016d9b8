"""A local stand-in for the UptimeRobot API v3, for tests, built from UptimeRobot's contract.

``FakeUptimeRobotV3`` is a stdlib ``http.server`` on 127.0.0.1 (random port) served from a
thread. It keeps monitors, personal alert contacts and integrations in memory and answers
what wsgi_observe uses, the way the OpenAPI contract behind https://uptimerobot.com/api/v3/
describes it:

- ``Authorization: Bearer <key>``; a missing or wrong key is ``401`` with NestJS's
  ``{"message": "Unauthorized", "statusCode": 401}``;
- ``GET /v3/monitors?limit=&cursor=`` (limit 1-200, default 50; ascending ids; the cursor
  is the last id of the previous page) answers ``{"data": [...], "nextLink": url|null}``;
  ``POST /v3/monitors`` (201), ``GET``/``PATCH``/``DELETE /v3/monitors/{id}``;
- ``GET``/``POST /v3/alert-contacts`` (e-mail only: SMS needs the dashboard) and
  ``GET``/``POST /v3/integrations`` (webhooks), both paged by cursor;
- JSON bodies; validation errors are ``400`` with a list of messages, unknown ids ``404``
  ``{"message": "Monitor not found", "code": "000-004"}``.

Faults can be injected: N rate-limited answers (429 with ``Retry-After`` or
``X-RateLimit-Reset``), N or every-k-th 5xx answers, dropped connections, "fail every write
after K writes" (an interrupted run), "apply the next create, then answer 500", and a
``nextLink`` pointing to another host. Every request is recorded for assertions.

It is bounded: at most ``max_requests`` requests, and it stops serving by itself after
``lifetime_s`` seconds; ``stop()`` (or leaving the ``with`` block) shuts it down.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["VALID_API_KEY", "FakeUptimeRobotV3", "RecordedRequest"]

#: The only key the fake accepts; obviously not a real one.
VALID_API_KEY = "ur0000-test-v3-key-not-real"

_DEFAULT_LIMIT = 50
_MAX_LIMIT = 200
_METHODS = {"HEAD", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY"}
_MAX_BODY = 256 * 1024
_MONITOR = re.compile(r"^/v3/monitors/(\d+)$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PATCH", "DELETE")


class _Fail(Exception):
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(str(payload.get("message")))
        self.status = status
        self.payload = payload


def _bad(*messages: str) -> _Fail:
    return _Fail(400, {"message": list(messages), "error": "Bad Request", "statusCode": 400})


def _not_found(what: str) -> _Fail:
    return _Fail(404, {"message": f"{what} not found", "code": "000-004"})


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeUptimeRobot/3"
    timeout = 5  # a stuck client cannot hold the single serving thread for long

    def do_GET(self) -> None:
        self.server.fake._handle(self)  # type: ignore[attr-defined]

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class FakeUptimeRobotV3:
    """In-memory UptimeRobot API v3 on 127.0.0.1; use as a context manager.

    Example::

        with FakeUptimeRobotV3() as fake:
            client = UptimeRobotV3Client(VALID_API_KEY, base_url=fake.url)
            fake.rate_limit(2, retry_after="1")
    """

    def __init__(
        self, api_key: str = VALID_API_KEY, *, max_requests: int = 3000, lifetime_s: float = 60.0
    ) -> None:
        self.api_key = api_key
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.requests: list[RecordedRequest] = []
        self.monitors: dict[int, dict[str, Any]] = {}
        self.alert_contacts: dict[int, dict[str, Any]] = {}
        self.integrations: dict[int, dict[str, Any]] = {}
        self.echo_key_in_errors = False
        self.next_link_host: str | None = None
        self._lock = threading.RLock()
        self._next_monitor_id = 800_000_001
        self._next_contact_id = 5001
        self._drop = 0
        self._rate_limited = 0
        self._rate_headers: dict[str, str] = {}
        self._server_errors = 0
        self._server_error_status = 503
        self._every: int | None = None
        self._fail_writes_after: int | None = None
        self._writes_ok = 0
        self._apply_then_fail = 0
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeUptimeRobotV3:
        server = HTTPServer(("127.0.0.1", 0), _Handler)
        server.timeout = 0.05
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="fake-uptimerobot-v3", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._server is not None
        deadline = time.monotonic() + self.lifetime_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._server.handle_request()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            self._server.server_close()

    def __enter__(self) -> FakeUptimeRobotV3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The API root to give the client, like ``https://api.uptimerobot.com/v3``."""
        return self.origin + "/v3"

    # -- fault injection -----------------------------------------------------------------

    def rate_limit(
        self, count: int, retry_after: str | None = "1", reset_in_s: float | None = None
    ) -> None:
        """Answer the next ``count`` requests with 429, ``Retry-After`` and/or
        ``X-RateLimit-Reset`` (epoch seconds ``reset_in_s`` from now)."""
        with self._lock:
            self._rate_limited = count
            headers = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"}
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            if reset_in_s is not None:
                headers["X-RateLimit-Reset"] = str(int(time.time() + reset_in_s))
            self._rate_headers = headers

    def server_errors(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status``."""
        with self._lock:
            self._server_errors = count
            self._server_error_status = status

    def intermittent_errors(self, every: int | None) -> None:
        """Answer every ``every``-th request (by arrival) with an HTML 502; None stops it."""
        with self._lock:
            self._every = every

    def drop_connections(self, count: int) -> None:
        """Read the next ``count`` requests, then close the connection without answering."""
        with self._lock:
            self._drop = count

    def fail_writes_after(self, count: int | None) -> None:
        """Refuse every write with 500 once ``count`` writes succeeded; None lifts it."""
        with self._lock:
            self._fail_writes_after = count
            self._writes_ok = 0

    def apply_then_fail(self, count: int = 1) -> None:
        """Carry out the next ``count`` writes, then answer them 500 anyway (the API acted,
        the client cannot know)."""
        with self._lock:
            self._apply_then_fail = count

    # -- seeding and inspection ----------------------------------------------------------

    def seed_monitor(self, friendly_name: str, url: str, **fields: Any) -> int:
        """Put a monitor into the account without an API call; returns its id.

        ``fields`` are API v3 fields (``interval``, ``httpMethodType``, ``type``,
        ``keywordValue``, ``assignedAlertContacts``, ...)."""
        with self._lock:
            body = {"friendlyName": friendly_name, "url": url, "type": "HTTP", "interval": 300,
                    "timeout": 30, "httpMethodType": "GET", **fields}  # fmt: skip
            return int(self._create_monitor(body, validate=False)["id"])

    def seed_alert_contact(self, type: str, value: str) -> int:
        """Put a personal alert contact (``Email``, ``ProSms``, ...) into the account."""
        with self._lock:
            return self._add_contact(self.alert_contacts, type, value, value)

    def seed_integration(self, type: str, value: str) -> int:
        """Put an integration (``Webhook``, ``Slack``, ...) into the account."""
        with self._lock:
            return self._add_contact(self.integrations, type, value, type)

    def calls(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally only those of one method and path."""
        with self._lock:
            return [
                r for r in self.requests if method in (None, r.method) and path in (None, r.path)
            ]

    def write_calls(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.is_write]

    def monitor_named(self, friendly_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self.monitors.values() if m["friendlyName"] == friendly_name]

    # -- request handling ----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        record = RecordedRequest(handler.command, parts.path, query, headers, body)
        with self._lock:
            self.requests.append(record)
            number = len(self.requests)
            if number > self.max_requests:
                return self._send(handler, 503, {"message": "Fake request budget exhausted."})
            if self._drop > 0:
                self._drop -= 1
                handler.close_connection = True
                return None
            if self._rate_limited > 0:
                self._rate_limited -= 1
                return self._send(
                    handler, 429, {"message": "Too Many Requests", "statusCode": 429},
                    self._rate_headers,
                )  # fmt: skip
            if self._server_errors > 0:
                self._server_errors -= 1
                return self._send(
                    handler, self._server_error_status, {"message": "Service Unavailable"}
                )
            if self._every and number % self._every == 0:
                return self._send_html(handler, 502)
            try:
                status, payload = self._dispatch(record, headers)
            except _Fail as fail:
                return self._send(handler, fail.status, fail.payload)
            if record.is_write and self._apply_then_fail > 0:
                self._apply_then_fail -= 1
                return self._send(handler, 500, {"message": "Internal server error"})
        return self._send(handler, status, payload)

    def _send_html(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        raw = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = b"" if payload is None else json.dumps(payload).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)

    def _dispatch(self, r: RecordedRequest, headers: dict[str, str]) -> tuple[int, Any]:
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            message = "Unauthorized"
            if self.echo_key_in_errors:
                message = f"Unauthorized: {auth.removeprefix('Bearer ')} is not a valid key"
            raise _Fail(401, {"message": message, "statusCode": 401})
        if r.method in ("POST", "PATCH"):
            if headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise _bad("Content-Type must be application/json")
            if not isinstance(r.body, dict):
                raise _bad("body must be a JSON object")
        if self._fail_writes_after is not None and r.is_write:
            if self._writes_ok >= self._fail_writes_after:
                raise _Fail(500, {"message": "Simulated outage: writes are failing."})
        found = _MONITOR.match(r.path)
        if r.path == "/v3/monitors" and r.method == "GET":
            return 200, self._page(r, self.monitors, limit=True)
        if r.path == "/v3/monitors" and r.method == "POST":
            answer = self._create_monitor(r.body, validate=True)
        elif found and r.method == "GET":
            return 200, dict(self._monitor(int(found.group(1))))
        elif found and r.method == "PATCH":
            answer = self._update_monitor(self._monitor(int(found.group(1))), r.body)
        elif found and r.method == "DELETE":
            self._monitor(int(found.group(1)))
            del self.monitors[int(found.group(1))]
            answer = None
        elif r.path == "/v3/alert-contacts" and r.method == "GET":
            return 200, self._page(r, self.alert_contacts)
        elif r.path == "/v3/alert-contacts" and r.method == "POST":
            answer = self._create_contact(r.body)
        elif r.path == "/v3/integrations" and r.method == "GET":
            return 200, self._page(r, self.integrations)
        elif r.path == "/v3/integrations" and r.method == "POST":
            answer = self._create_integration(r.body)
        else:
            raise _Fail(404, {"message": f"Cannot {r.method} {r.path}", "error": "Not Found",
                              "statusCode": 404})  # fmt: skip
        if r.is_write:
            self._writes_ok += 1
        return (201 if r.method == "POST" else 200), answer

    # -- pages ---------------------------------------------------------------------------

    def _page(
        self, r: RecordedRequest, items: dict[int, dict[str, Any]], limit: bool = False
    ) -> dict[str, Any]:
        size = _DEFAULT_LIMIT
        if limit and "limit" in r.query:
            try:
                size = int(r.query["limit"])
            except ValueError:
                raise _bad("limit must be a number") from None
            if not 1 <= size <= _MAX_LIMIT:
                raise _bad("Limit must be between 1 and 200")
        cursor = 0
        if "cursor" in r.query:
            try:
                cursor = int(r.query["cursor"])
            except ValueError:
                raise _bad("cursor must be a number") from None
        selected = [items[i] for i in sorted(items) if i > cursor]
        page = selected[:size]
        next_link = None
        if len(selected) > size:
            origin = f"http://{self.next_link_host}" if self.next_link_host else self.origin
            query = {k: v for k, v in r.query.items() if k != "cursor"}
            query["cursor"] = str(page[-1]["id"])
            next_link = f"{origin}{r.path}?{urlencode(query)}"
        return {"data": [dict(item) for item in page], "nextLink": next_link}

    # -- monitors ------------------------------------------------------------------------

    def _monitor(self, monitor_id: int) -> dict[str, Any]:
        monitor = self.monitors.get(monitor_id)
        if monitor is None:
            raise _not_found("Monitor")
        return monitor

    def _contact_ids(self) -> set[int]:
        return set(self.alert_contacts) | set(self.integrations)

    def _check_fields(self, body: dict[str, Any], *, creating: bool) -> list[str]:
        problems = []
        if "friendlyName" in body or creating:
            name = body.get("friendlyName")
            if not isinstance(name, str) or not name or len(name) > 250:
                problems.append("friendlyName must be a string of 1-250 characters")
        if "url" in body or creating:
            url = body.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                problems.append("url must be an URL address")
        if "interval" in body or creating:
            interval = body.get("interval")
            if (
                not isinstance(interval, int)
                or isinstance(interval, bool)
                or interval < (30 if creating else 15)
            ):
                problems.append(f"interval must not be less than {30 if creating else 15}")
        if "timeout" in body or creating:
            timeout = body.get("timeout")
            if not isinstance(timeout, int) or not 0 <= timeout <= 60:
                problems.append("timeout must not be greater than 60")
        if body.get("httpMethodType") not in (None, *_METHODS):
            problems.append("httpMethodType must be one of the following values: HEAD, GET, ...")
        kind = body.get("type")
        if kind is not None and kind not in ("HTTP", "KEYWORD"):
            problems.append("type is not supported by this fake")
        if "keywordType" in body and body["keywordType"] not in (
            "ALERT_EXISTS",
            "ALERT_NOT_EXISTS",
        ):
            problems.append(
                "keywordType must be one of the following values: ALERT_EXISTS, ALERT_NOT_EXISTS"
            )
        if "keywordCaseType" in body and body["keywordCaseType"] not in (
            0,
            1,
            "CaseSensitive",
            "CaseInsensitive",
        ):
            problems.append("keywordCaseType must be one of the following values: 0, 1")
        for contact in body.get("assignedAlertContacts") or []:
            if (
                not isinstance(contact, dict)
                or contact.get("alertContactId") not in self._contact_ids()
            ):
                problems.append("assignedAlertContacts: unknown alert contact")
            elif any(
                not isinstance(contact.get(k), int) or contact[k] < 0
                for k in ("threshold", "recurrence")
            ):
                problems.append("assignedAlertContacts: threshold and recurrence must be numbers")
        return problems

    def _create_monitor(self, body: dict[str, Any], *, validate: bool) -> dict[str, Any]:
        if validate:
            problems = self._check_fields(body, creating=True)
            if body.get("type") not in ("HTTP", "KEYWORD"):
                problems.append("type must be one of the following values: HTTP, KEYWORD, ...")
            if body.get("type") == "KEYWORD":
                for name in ("keywordType", "keywordValue", "keywordCaseType"):
                    if body.get(name) in (None, ""):
                        problems.append(f"{name} should not be empty")
            if problems:
                raise _bad(*problems)
        monitor_id = self._next_monitor_id
        self._next_monitor_id += 1
        monitor = {
            "id": monitor_id,
            "friendlyName": body["friendlyName"],
            "url": body["url"],
            "type": body.get("type", "HTTP"),
            "interval": body.get("interval", 300),
            "timeout": body.get("timeout", 30),
            "httpMethodType": body.get("httpMethodType"),
            "keywordType": None,
            "keywordValue": "",
            "keywordCaseType": 0,
            "status": "STARTED",
            "assignedAlertContacts": [],
            "apiKey": f"m{monitor_id}-monitor-specific-test-key",
            "createDateTime": "2026-01-01T00:00:00.000Z",
        }
        self._apply(monitor, body)
        self.monitors[monitor_id] = monitor
        return dict(monitor)

    def _update_monitor(self, monitor: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        problems = self._check_fields(body, creating=False)
        if problems:
            raise _bad(*problems)
        changed = dict(monitor)
        self._apply(changed, body)
        if changed["type"] == "KEYWORD" and not changed["keywordValue"]:
            raise _bad("keywordValue should not be empty")
        monitor.update(changed)
        return dict(monitor)

    def _apply(self, monitor: dict[str, Any], body: dict[str, Any]) -> None:
        for name in ("friendlyName", "url", "type", "interval", "timeout", "httpMethodType",
                     "keywordType", "keywordValue"):  # fmt: skip
            if name in body:
                monitor[name] = body[name]
        if "keywordCaseType" in body:
            case = body["keywordCaseType"]
            monitor["keywordCaseType"] = {"CaseSensitive": 0, "CaseInsensitive": 1}.get(case, case)
        if "assignedAlertContacts" in body:
            monitor["assignedAlertContacts"] = [
                dict(c) for c in body["assignedAlertContacts"] or []
            ]
        if monitor["type"] != "KEYWORD":
            monitor["keywordType"] = None

    # -- contacts ------------------------------------------------------------------------

    def _add_contact(
        self, into: dict[int, dict[str, Any]], type: str, value: str, name: str
    ) -> int:
        contact_id = self._next_contact_id
        self._next_contact_id += 1
        into[contact_id] = {
            "id": contact_id,
            "friendlyName": name,
            "type": type,
            "value": value,
            "status": "NotActivated" if type == "Email" else "Active",
        }
        return contact_id

    def _create_contact(self, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("type")
        if kind in ("ProSms", "Voice"):
            raise _Fail(400, {"message": f"{kind} alert contacts require phone verification "
                              "and cannot be created through the API"})  # fmt: skip
        if kind != "Email":
            raise _bad("type must be one of the following values: Email, ProSms, Voice, ...")
        value = body.get("value")
        if not isinstance(value, str) or "@" not in value:
            raise _bad("value must be an email")
        contact_id = self._add_contact(
            self.alert_contacts, "Email", value, str(body.get("friendlyName") or value)
        )
        return dict(self.alert_contacts[contact_id])

    def _create_integration(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("type") != "Webhook":
            raise _bad("this fake only creates Webhook integrations")
        data = body.get("data")
        if not isinstance(data, dict):
            raise _bad("data must be an object")
        url = data.get("urlToNotify")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _bad("urlToNotify must be an URL address")
        if not isinstance(data.get("postValue"), str):
            raise _bad("postValue must be a string")
        name = data.get("friendlyName") or "Webhook"
        if len(name) > 60:
            raise _bad("friendlyName must be shorter than or equal to 60 characters")
        contact_id = self._add_contact(self.integrations, "Webhook", url, name)
        return dict(self.integrations[contact_id])
