"""A local stand-in for PagerDuty's Events API v2 (``POST /v2/enqueue``), for tests.

``FakePagerDuty`` is a stdlib threading HTTP server on 127.0.0.1 (random port). It checks
each event the way the Events API v2 documents it: a JSON object with a 32-character
``routing_key``, ``event_action`` of ``trigger``, ``acknowledge`` or ``resolve``, a
``dedup_key`` of at most 255 characters (required to acknowledge or resolve), and for a
trigger a ``payload`` with ``summary``, ``source`` and a ``severity`` of ``critical``,
``error``, ``warning`` or ``info``. A good event gets ``202`` and ``{"status": "success",
"message": "Event processed", "dedup_key": ...}``; a bad one ``400`` and ``{"status":
"invalid event", "message": "Event object is invalid", "errors": [...]}``. It keeps the
open incidents by ``dedup_key`` (a trigger opens one, a resolve closes it).

Faults can be injected: the next N answers as 429 (optionally with ``Retry-After``) or
5xx, and hung requests (read, then no answer until released or the fake stops). Every
request is recorded, accepted or not. It is bounded: at most ``max_requests`` requests,
and a hung request is held at most ``hang_limit_s`` seconds.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

__all__ = ["ROUTING_KEY", "FakePagerDuty", "Received"]

#: A well-formed routing key (32 letters and digits), obviously not a real one.
ROUTING_KEY = "R0TESTKEY0NOTREAL0000000000000PD"

_SEVERITIES = {"critical", "error", "warning", "info"}
_ACTIONS = {"trigger", "acknowledge", "resolve"}
_MAX_BODY = 512 * 1024


@dataclass
class Received:
    """One request as the fake received it, and what it answered."""

    path: str
    body: bytes
    status: int = 0
    event: Optional[dict[str, Any]] = None
    errors: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakePagerDuty/2"
    timeout = 10  # a stuck client cannot hold a serving thread for long

    def do_POST(self) -> None:
        self.server.fake._handle(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


def _validate(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32 or not key.isalnum():
        errors.append("'routing_key' is invalid")
    action = event.get("event_action")
    if action not in _ACTIONS:
        errors.append("'event_action' is invalid")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' is invalid")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is missing")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or invalid")
        else:
            for name in ("summary", "source"):
                value = payload.get(name)
                if not isinstance(value, str) or not value or len(value) > 1024:
                    errors.append(f"'payload.{name}' is missing or invalid")
            if payload.get("severity") not in _SEVERITIES:
                errors.append("'payload.severity' is invalid")
    return errors


class FakePagerDuty:
    """PagerDuty's Events API v2 on 127.0.0.1; use as a context manager.

    Example::

        with FakePagerDuty() as fake:
            notifier = PagerDutyNotifier(ROUTING_KEY, events_url=fake.url)
            fake.answer_with(429, times=2)
    """

    def __init__(self, *, max_requests: int = 500, hang_limit_s: float = 30.0) -> None:
        self.max_requests = max_requests
        self.hang_limit_s = hang_limit_s
        self.received: list[Received] = []
        self.incidents: dict[str, dict[str, Any]] = {}  # open, by dedup_key
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: deque[tuple[int, Optional[str]]] = deque()
        self._hangs = 0
        self._release = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakePagerDuty:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hung requests go
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakePagerDuty:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The events endpoint, like ``https://events.pagerduty.com/v2/enqueue``."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2/enqueue"

    # -- fault injection -----------------------------------------------------------------

    def answer_with(self, status: int, times: int = 1, retry_after: Optional[str] = None) -> None:
        """Answer the next ``times`` requests with ``status`` (429 or 5xx) instead."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * times)

    def hang(self, times: int = 1) -> None:
        """Read the next ``times`` requests and never answer them (until :meth:`release`)."""
        with self._lock:
            self._hangs += times

    def release(self) -> None:
        """Let every hung request go (its client has long given up)."""
        self._release.set()

    # -- inspection ----------------------------------------------------------------------

    def events(self, status: int = 202) -> list[dict[str, Any]]:
        """The events answered with ``status`` (default: accepted), in arrival order."""
        with self._lock:
            return [r.event for r in self.received if r.status == status and r.event]

    def wait_for(
        self, count: int, timeout_s: float = 20.0, status: int = 202
    ) -> list[dict[str, Any]]:
        """Wait (bounded) until ``count`` events were answered with ``status``."""
        with self._changed:
            self._changed.wait_for(
                lambda: sum(1 for r in self.received if r.status == status) >= count, timeout_s
            )
        found = self.events(status)
        assert len(found) >= count, f"{len(found)} of {count} events within {timeout_s}s"
        return found

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.received]

    # -- request handling ----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
        record = Received(handler.path, body)
        with self._lock:
            self.received.append(record)
            hang = self._hangs > 0
            if hang:
                self._hangs -= 1
            fault = self._faults.popleft() if self._faults and not hang else None
            over = len(self.received) > self.max_requests
        if hang:
            self._release.wait(self.hang_limit_s)
            self._answer(handler, record, 503, {"status": "error", "message": "hung"}, None)
            return
        if over:
            self._answer(handler, record, 503, {"status": "error", "message": "budget"}, None)
            return
        if fault is not None:
            status, retry_after = fault
            message = "Rate limit exceeded" if status == 429 else "Internal error"
            self._answer(
                handler, record, status, {"status": "error", "message": message}, retry_after
            )
            return
        if handler.path.split("?")[0] != "/v2/enqueue":
            self._answer(handler, record, 404, {"status": "error", "message": "Not found"}, None)
            return
        try:
            event = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            event = None
        record.event = event if isinstance(event, dict) else None
        errors = _validate(event)
        if errors:
            record.errors = errors
            answer = {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            }
            self._answer(handler, record, 400, answer, None)
            return
        assert isinstance(event, dict)
        dedup_key = event.get("dedup_key") or f"generated-{len(self.received)}"
        event["dedup_key"] = dedup_key
        with self._lock:
            if event["event_action"] == "trigger":
                self.incidents.setdefault(dedup_key, event)
            elif event["event_action"] == "resolve":
                self.incidents.pop(dedup_key, None)
        answer = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        self._answer(handler, record, 202, answer, None)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Received,
        status: int,
        answer: dict[str, Any],
        retry_after: Optional[str],
    ) -> None:
        data = json.dumps(answer).encode("utf-8")
        # Recorded before the answer leaves: a client that has its answer must find it here.
        with self._changed:
            record.status = status
            self._changed.notify_all()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                handler.send_header("Retry-After", retry_after)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (a hung request): nothing to answer
