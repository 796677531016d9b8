"""A local stand-in for the UptimeRobot API v2, for tests.

``FakeUptimeRobot`` is a stdlib ``http.server`` on 127.0.0.1 (random port) served from a
thread. It keeps monitors and alert contacts in memory and answers the methods
wsgi_observe uses (getMonitors, newMonitor, editMonitor, deleteMonitor,
getAlertContacts, newAlertContact) the way API v2 does: POST only, form-encoded
parameters, ``api_key`` and ``format=json`` required, ``offset``/``limit`` paging
(default and maximum 50) with a ``pagination`` block, and ``{"stat": "fail", "error":
{...}}`` answers for a bad key or bad parameters.

Faults can be injected: N rate-limited answers (429 with ``Retry-After``), N or
every-k-th 5xx answers, dropped connections, and "fail every write after K writes" to
simulate an interrupted run. Every request is recorded for assertions.

It is bounded: it serves at most ``max_requests`` requests and stops serving by itself
after ``lifetime_s`` seconds; ``stop()`` (or leaving the ``with`` block) shuts it down.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["VALID_API_KEY", "WRITE_METHODS", "FakeUptimeRobot", "RecordedRequest"]

#: The only key the fake accepts; obviously not a real one.
VALID_API_KEY = "u0000-test-key-not-real"

PAGE_LIMIT = 50
WRITE_METHODS = frozenset(
    {"newMonitor", "editMonitor", "deleteMonitor", "newAlertContact", "editAlertContact"}
)
_MONITOR_TYPES = {1, 2, 3, 4, 5}
_CONTACT_TYPES = {1, 2, 3, 5, 6, 9}
_MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it."""

    api_method: str
    http_method: str
    content_type: str
    params: dict[str, str]
    body: bytes

    @property
    def is_write(self) -> bool:
        return self.api_method in WRITE_METHODS


class _Fail(Exception):
    def __init__(self, error: dict[str, Any], status: int = 200) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
        self.status = status


def _missing(name: str) -> _Fail:
    return _Fail(
        {
            "type": "missing_parameter",
            "parameter_name": name,
            "message": f"{name} parameter is missing.",
        }
    )


def _invalid(name: str, message: str | None = None) -> _Fail:
    return _Fail(
        {
            "type": "invalid_parameter",
            "parameter_name": name,
            "message": message or f"{name} parameter is invalid.",
        }
    )


def _int(
    params: dict[str, str],
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: set[int] | None = None,
) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise _missing(name)
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name) from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _invalid(name)
    if choices is not None and value not in choices:
        raise _invalid(name)
    return value


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeUptimeRobot/2"
    timeout = 5  # a stuck client cannot hold the single serving thread for long

    def do_POST(self) -> None:
        self.server.fake._handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class FakeUptimeRobot:
    """In-memory UptimeRobot API v2 on 127.0.0.1; use as a context manager.

    Example::

        with FakeUptimeRobot() as fake:
            client = UptimeRobotClient(VALID_API_KEY, base_url=fake.url)
            fake.rate_limit(2, retry_after="1")
    """

    def __init__(
        self,
        api_key: str = VALID_API_KEY,
        *,
        max_requests: int = 2000,
        lifetime_s: float = 60.0,
    ) -> None:
        self.api_key = api_key
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.requests: list[RecordedRequest] = []
        self.monitors: dict[int, dict[str, Any]] = {}
        self.alert_contacts: dict[str, dict[str, Any]] = {}
        self.echo_key_in_errors = False
        self._lock = threading.RLock()
        self._next_monitor_id = 780_000_001
        self._next_contact_id = 1001
        self._drop = 0
        self._rate_limited = 0
        self._retry_after: str | None = "1"
        self._server_errors = 0
        self._server_error_status = 503
        self._server_error_json = True
        self._every: int | None = None
        self._every_status = 502
        self._fail_writes_after: int | None = None
        self._fail_writes_status = 200
        self._writes_ok = 0
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeUptimeRobot:
        server = HTTPServer(("127.0.0.1", 0), _Handler)
        server.timeout = 0.05
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="fake-uptimerobot", daemon=True)
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

    def __enter__(self) -> FakeUptimeRobot:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API root to give the client, like ``https://api.uptimerobot.com/v2``."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2"

    # -- fault injection -----------------------------------------------------------------

    def rate_limit(self, count: int, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` requests with 429 and this ``Retry-After``."""
        with self._lock:
            self._rate_limited = count
            self._retry_after = retry_after

    def server_errors(self, count: int, status: int = 503, json_body: bool = True) -> None:
        """Answer the next ``count`` requests with ``status`` (JSON or an HTML page)."""
        with self._lock:
            self._server_errors = count
            self._server_error_status = status
            self._server_error_json = json_body

    def intermittent_errors(self, every: int | None, status: int = 502) -> None:
        """Answer every ``every``-th request (by arrival) with ``status``; None stops it."""
        with self._lock:
            self._every = every
            self._every_status = status

    def drop_connections(self, count: int) -> None:
        """Read the next ``count`` requests, then close the connection without answering."""
        with self._lock:
            self._drop = count

    def fail_writes_after(self, count: int | None, status: int = 200) -> None:
        """Refuse every write call once ``count`` writes succeeded; None lifts it."""
        with self._lock:
            self._fail_writes_after = count
            self._fail_writes_status = status
            self._writes_ok = 0

    # -- seeding and inspection ----------------------------------------------------------

    def seed_monitor(
        self,
        friendly_name: str,
        url: str,
        *,
        interval: int = 300,
        http_method: int = 2,
        type: int = 1,
        alert_contacts: tuple[tuple[str, int, int], ...] = (),
        keyword_type: int | None = None,
        keyword_value: str = "",
    ) -> int:
        """Put a monitor into the account without an API call; returns its id."""
        with self._lock:
            monitor_id = self._add_monitor(
                friendly_name, url, type, interval, http_method, list(alert_contacts)
            )
            self.monitors[monitor_id].update(keyword_type=keyword_type, keyword_value=keyword_value)
            return monitor_id

    def seed_alert_contact(self, type: int, value: str, friendly_name: str = "") -> str:
        """Put an alert contact into the account without an API call; returns its id."""
        with self._lock:
            return self._add_contact(type, value, friendly_name)

    def calls(self, api_method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally only those for one API method."""
        with self._lock:
            return [r for r in self.requests if api_method in (None, r.api_method)]

    def write_calls(self) -> list[RecordedRequest]:
        """Recorded requests that would change the account (whatever their outcome)."""
        with self._lock:
            return [r for r in self.requests if r.is_write]

    def monitor_named(self, friendly_name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self.monitors.values() if m["friendly_name"] == friendly_name]

    # -- request handling ----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        params: dict[str, str] = {}
        if content_type == "application/x-www-form-urlencoded":
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        api_method = urlsplit(handler.path).path.rstrip("/").rsplit("/", 1)[-1]
        record = RecordedRequest(api_method, handler.command, content_type, params, body)
        with self._lock:
            self.requests.append(record)
            number = len(self.requests)
            if number > self.max_requests:
                return self._send(
                    handler,
                    503,
                    {
                        "stat": "fail",
                        "error": {
                            "type": "internal_error",
                            "message": "Fake request budget exhausted.",
                        },
                    },
                )
            if self._drop > 0:
                self._drop -= 1
                handler.close_connection = True
                return None
            if self._rate_limited > 0:
                self._rate_limited -= 1
                headers = {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"}
                if self._retry_after is not None:
                    headers["Retry-After"] = self._retry_after
                return self._send(
                    handler,
                    429,
                    {
                        "stat": "fail",
                        "error": {"type": "rate_limit", "message": "Too many requests."},
                    },
                    headers,
                )
            if self._server_errors > 0:
                self._server_errors -= 1
                return self._send_server_error(
                    handler, self._server_error_status, self._server_error_json
                )
            if self._every and number % self._every == 0:
                return self._send_server_error(handler, self._every_status, json_body=False)
            if (
                record.is_write
                and self._fail_writes_after is not None
                and self._writes_ok >= self._fail_writes_after
            ):
                return self._send(
                    handler,
                    self._fail_writes_status,
                    {
                        "stat": "fail",
                        "error": {
                            "type": "internal_error",
                            "message": "Simulated outage: writes are failing.",
                        },
                    },
                )
            try:
                payload = self._dispatch(handler.command, content_type, api_method, params)
                status = 200
                if record.is_write:
                    self._writes_ok += 1
            except _Fail as fail:
                status, payload = fail.status, {"stat": "fail", "error": fail.error}
        return self._send(handler, status, payload)

    def _send_server_error(
        self, handler: BaseHTTPRequestHandler, status: int, json_body: bool
    ) -> None:
        if json_body:
            payload = {
                "stat": "fail",
                "error": {"type": "internal_error", "message": "Service temporarily unavailable."},
            }
            return self._send(handler, status, payload)
        raw = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)
        return None

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = json.dumps(payload).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(raw)
        return None

    def _dispatch(
        self, command: str, content_type: str, api_method: str, params: dict[str, str]
    ) -> dict[str, Any]:
        if command != "POST":
            raise _Fail({"type": "invalid_request", "message": "Only POST is accepted."}, 405)
        if content_type != "application/x-www-form-urlencoded":
            raise _Fail(
                {
                    "type": "invalid_request",
                    "message": "Content-Type must be application/x-www-form-urlencoded.",
                },
                400,
            )
        key = params.get("api_key")
        if not key:
            raise _missing("api_key")
        if key != self.api_key:
            message = f"api_key {key} is invalid." if self.echo_key_in_errors else None
            raise _invalid("api_key", message or "api_key is invalid.")
        if params.get("format") != "json":
            raise _invalid("format", "format must be json for this fake.")
        handlers = {
            "getMonitors": self._get_monitors,
            "newMonitor": self._new_monitor,
            "editMonitor": self._edit_monitor,
            "deleteMonitor": self._delete_monitor,
            "getAlertContacts": self._get_alert_contacts,
            "newAlertContact": self._new_alert_contact,
        }
        if api_method not in handlers:
            raise _Fail({"type": "not_found", "message": f"Method {api_method} not found."}, 404)
        return handlers[api_method](params)

    # -- state ---------------------------------------------------------------------------

    def _add_monitor(
        self,
        friendly_name: str,
        url: str,
        type: int,
        interval: int,
        http_method: int,
        alert_contacts: list[tuple[str, int, int]],
    ) -> int:
        monitor_id = self._next_monitor_id
        self._next_monitor_id += 1
        self.monitors[monitor_id] = {
            "id": monitor_id,
            "friendly_name": friendly_name,
            "url": url,
            "type": type,
            "sub_type": "",
            "keyword_type": None,
            "keyword_case_type": None,
            "keyword_value": "",
            "http_username": "",
            "http_password": "",
            "port": "",
            "interval": interval,
            "timeout": 30,
            "status": 1,
            "create_datetime": 1_700_000_000 + monitor_id % 1000,
            "http_method": http_method,
            "_alert_contacts": alert_contacts,
        }
        return monitor_id

    def _add_contact(self, type: int, value: str, friendly_name: str) -> str:
        contact_id = f"{self._next_contact_id:07d}"  # API v2 ids may have leading zeros
        self._next_contact_id += 1
        self.alert_contacts[contact_id] = {
            "id": contact_id,
            "friendly_name": friendly_name or value,
            "type": type,
            "status": 0 if type == 2 else 2,  # e-mail contacts wait for confirmation
            "value": value,
        }
        return contact_id

    def _parse_alert_contacts(self, raw: str) -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = []
        for item in filter(None, raw.split("-")):
            parts = item.split("_")
            if len(parts) != 3 or parts[0] not in self.alert_contacts:
                raise _invalid("alert_contacts")
            try:
                out.append((parts[0], int(parts[1]), int(parts[2])))
            except ValueError:
                raise _invalid("alert_contacts") from None
        return out

    def _page(self, params: dict[str, str]) -> tuple[int, int]:
        offset = _int(params, "offset", default=0, minimum=0)
        limit = _int(params, "limit", default=PAGE_LIMIT, minimum=1, maximum=PAGE_LIMIT)
        return offset, limit

    # -- methods -------------------------------------------------------------------------

    def _get_monitors(self, params: dict[str, str]) -> dict[str, Any]:
        offset, limit = self._page(params)
        selected = sorted(self.monitors.values(), key=lambda m: m["id"])
        if params.get("monitors"):
            try:
                wanted = {int(x) for x in params["monitors"].split("-") if x}
            except ValueError:
                raise _invalid("monitors") from None
            selected = [m for m in selected if m["id"] in wanted]
        search = params.get("search")
        if search:
            selected = [m for m in selected if search in m["friendly_name"] or search in m["url"]]
        with_contacts = params.get("alert_contacts") == "1"
        page = []
        for monitor in selected[offset : offset + limit]:
            shown = {k: v for k, v in monitor.items() if not k.startswith("_")}
            if with_contacts:
                shown["alert_contacts"] = [
                    {
                        "id": cid,
                        "value": self.alert_contacts.get(cid, {}).get("value", ""),
                        "type": self.alert_contacts.get(cid, {}).get("type", 0),
                        "threshold": threshold,
                        "recurrence": recurrence,
                    }
                    for cid, threshold, recurrence in monitor["_alert_contacts"]
                ]
            page.append(shown)
        return {
            "stat": "ok",
            "pagination": {"offset": offset, "limit": limit, "total": len(selected)},
            "monitors": page,
        }

    def _validate_url(self, url: str, type: int) -> None:
        if type in (1, 2) and not url.startswith(("http://", "https://")):
            raise _invalid("url", "url must start with http:// or https://.")

    def _new_monitor(self, params: dict[str, str]) -> dict[str, Any]:
        name = params.get("friendly_name")
        if not name:
            raise _missing("friendly_name")
        url = params.get("url")
        if not url:
            raise _missing("url")
        type = _int(params, "type", choices=_MONITOR_TYPES)
        self._validate_url(url, type)
        interval = _int(params, "interval", default=300, minimum=60, maximum=86400)
        http_method = _int(params, "http_method", default=1, minimum=1, maximum=7)
        contacts = self._parse_alert_contacts(params.get("alert_contacts", ""))
        keyword = self._keyword(params, required=type == 2)
        monitor_id = self._add_monitor(name, url, type, interval, http_method, contacts)
        self.monitors[monitor_id].update(keyword)
        return {"stat": "ok", "monitor": {"id": monitor_id, "status": 1}}

    def _keyword(self, params: dict[str, str], *, required: bool) -> dict[str, Any]:
        """keyword_type (1 alert when it exists, 2 when it does not) and keyword_value."""
        out: dict[str, Any] = {}
        if required or "keyword_type" in params:
            out["keyword_type"] = _int(params, "keyword_type", choices={1, 2})
        if required or "keyword_value" in params:
            value = params.get("keyword_value", "")
            if not value:
                raise _missing("keyword_value")
            out["keyword_value"] = value
        return out

    def _edit_monitor(self, params: dict[str, str]) -> dict[str, Any]:
        monitor_id = _int(params, "id")
        monitor = self.monitors.get(monitor_id)
        if monitor is None:
            raise _Fail(
                {"type": "not_found", "parameter_name": "id", "message": "Monitor not found."}
            )
        if "type" in params and _int(params, "type") != monitor["type"]:
            raise _invalid("type", "The type of a monitor can not be edited.")
        changes: dict[str, Any] = {}
        if "friendly_name" in params:
            if not params["friendly_name"]:
                raise _invalid("friendly_name")
            changes["friendly_name"] = params["friendly_name"]
        if "url" in params:
            self._validate_url(params["url"], monitor["type"])
            changes["url"] = params["url"]
        if "interval" in params:
            changes["interval"] = _int(params, "interval", minimum=60, maximum=86400)
        if "http_method" in params:
            changes["http_method"] = _int(params, "http_method", minimum=1, maximum=7)
        if "status" in params:
            changes["status"] = _int(params, "status", choices={0, 1})
        if "alert_contacts" in params:
            changes["_alert_contacts"] = self._parse_alert_contacts(params["alert_contacts"])
        changes.update(self._keyword(params, required=False))
        monitor.update(changes)
        return {"stat": "ok", "monitor": {"id": monitor_id}}

    def _delete_monitor(self, params: dict[str, str]) -> dict[str, Any]:
        monitor_id = _int(params, "id")
        if self.monitors.pop(monitor_id, None) is None:
            raise _Fail(
                {"type": "not_found", "parameter_name": "id", "message": "Monitor not found."}
            )
        return {"stat": "ok", "monitor": {"id": monitor_id}}

    def _get_alert_contacts(self, params: dict[str, str]) -> dict[str, Any]:
        offset, limit = self._page(params)
        selected = sorted(self.alert_contacts.values(), key=lambda c: c["id"])
        if params.get("alert_contacts"):
            wanted = set(params["alert_contacts"].split("-"))
            selected = [c for c in selected if c["id"] in wanted]
        # API v2 puts offset/limit/total at the top level for this method.
        return {
            "stat": "ok",
            "offset": offset,
            "limit": limit,
            "total": len(selected),
            "alert_contacts": [dict(c) for c in selected[offset : offset + limit]],
        }

    def _new_alert_contact(self, params: dict[str, str]) -> dict[str, Any]:
        type = _int(params, "type", choices=_CONTACT_TYPES)
        value = params.get("value")
        if not value:
            raise _missing("value")
        if type == 2 and "@" not in value:
            raise _invalid("value", "value must be an e-mail address.")
        if type == 5 and not value.startswith(("http://", "https://")):
            raise _invalid("value", "value must be a URL.")
        contact_id = self._add_contact(type, value, params.get("friendly_name", ""))
        return {
            "stat": "ok",
            "alertcontact": {"id": contact_id, "status": self.alert_contacts[contact_id]["status"]},
        }


def contacts_of(fake: FakeUptimeRobot, monitor_id: int) -> list[tuple[str, int, int]]:
    """The ``(id, threshold, recurrence)`` alert contacts attached to a monitor."""
    with fake._lock:
        return list(fake.monitors[monitor_id]["_alert_contacts"])


def http_method_of(code: int | str) -> str:
    names = {1: "HEAD", 2: "GET", 3: "POST", 4: "PUT", 5: "PATCH", 6: "DELETE", 7: "OPTIONS"}
    return names[int(code)]
