"""A local Sentry ingest endpoint for tests: the real sentry-sdk sends envelopes here.

:class:`SentryReceiver` is an HTTP server on 127.0.0.1 (random port, one thread) that
accepts ``POST /api/<project>/envelope/`` and ``/api/<project>/store/``, undoes
``Content-Encoding: gzip`` or ``deflate``, parses each envelope into its items and keeps
the raw (decoded) bytes too, so a test can assert a secret appears *nowhere*. Tests wait
for items with :meth:`SentryReceiver.wait_for` (a deadline, never a fixed sleep).

The fixtures ``sentry_receiver`` and ``sentry_init`` are loaded into a test module with
``pytest_plugins = ("sentry_receiver",)``; ``sentry_init`` closes the client and detaches
it from the scopes at teardown, so no test leaks Sentry into the next.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import pytest

__all__ = ["Envelope", "Item", "SentryReceiver", "parse_envelope"]

_PATH_RE = re.compile(r"^/api/(\d+)/(envelope|store)/?$")


@dataclass
class Item:
    """One envelope item: its header and payload (parsed JSON when the payload is JSON)."""

    type: str
    headers: dict[str, Any]
    raw: bytes
    payload: Any


@dataclass
class Envelope:
    """One request the SDK sent: envelope header, items and the decoded body bytes."""

    project: str
    headers: dict[str, Any]
    items: list[Item] = field(default_factory=list)
    raw: bytes = b""
    request_headers: dict[str, str] = field(default_factory=dict)


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[Item]]:
    """Split an envelope into its header and items (length-prefixed or newline-ended)."""
    header_line, _, rest = body.partition(b"\n")
    headers = json.loads(header_line) if header_line.strip() else {}
    items: list[Item] = []
    while rest:
        if not rest.strip():
            break
        item_line, _, rest = rest.partition(b"\n")
        item_headers = json.loads(item_line)
        length = item_headers.get("length")
        if length is not None:
            payload, rest = rest[:length], rest[length:]
            if rest.startswith(b"\n"):
                rest = rest[1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            parsed: Any = json.loads(payload)
        except ValueError:
            parsed = None
        items.append(Item(item_headers.get("type", ""), item_headers, payload, parsed))
    return headers, items


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, no zlib header
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class SentryReceiver:
    """Collects what sentry-sdk sends; use as a context manager.

    Example::

        with SentryReceiver() as receiver:
            sentry_sdk.init(dsn=receiver.dsn)
            receiver.wait_for("event")
    """

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.rejected: list[str] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm
            # and the client's delayed ACK stall every answer for ~40 ms.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                match = _PATH_RE.match(self.path.split("?", 1)[0])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if match is None:
                    self._answer(404, b'{"detail":"not found"}')
                    return
                try:
                    raw = _decode(body, self.headers.get("Content-Encoding", ""))
                    if match.group(2) == "store":
                        # The legacy endpoint takes one bare event.
                        payload = json.loads(raw)
                        headers: dict[str, Any] = {"event_id": payload.get("event_id")}
                        items = [Item("event", {"type": "event"}, raw, payload)]
                    else:
                        headers, items = parse_envelope(raw)
                except Exception as error:
                    receiver._reject(f"{type(error).__name__}: {error}")
                    self._answer(400, b'{"detail":"bad envelope"}')
                    return
                receiver._add(
                    Envelope(match.group(1), headers, items, raw, dict(self.headers.items()))
                )
                self._answer(200, b"{}")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/1"
        self._thread: Optional[threading.Thread] = None

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> SentryReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SentryReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # What arrived ------------------------------------------------------------------------

    def _add(self, envelope: Envelope) -> None:
        with self._changed:
            self.envelopes.append(envelope)
            self._changed.notify_all()

    def _reject(self, reason: str) -> None:
        with self._changed:
            self.rejected.append(reason)
            self._changed.notify_all()

    def items(self, kind: Optional[str] = None) -> list[Item]:
        """All items received so far, optionally only those of one type ("event", ...)."""
        with self._changed:
            return [
                item
                for envelope in self.envelopes
                for item in envelope.items
                if kind is None or item.type == kind
            ]

    def payloads(self, kind: str) -> list[Any]:
        """The parsed payloads of one item type: ``payloads("transaction")``."""
        return [item.payload for item in self.items(kind)]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.payloads("event")

    @property
    def transactions(self) -> list[dict[str, Any]]:
        return self.payloads("transaction")

    def raw_bytes(self) -> bytes:
        """Every decoded body received, concatenated: for "this secret is nowhere" checks."""
        with self._changed:
            return b"\n".join(envelope.raw for envelope in self.envelopes)

    def clear(self) -> None:
        with self._changed:
            self.envelopes.clear()
            self.rejected.clear()

    def wait_for(
        self,
        kind: str,
        count: int = 1,
        *,
        timeout_s: float = 10.0,
        where: Optional[Callable[[Any], bool]] = None,
    ) -> list[Any]:
        """Wait until ``count`` payloads of ``kind`` (matching ``where``) arrived; return them.

        Raises ``AssertionError`` at the deadline, naming what did arrive.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [
                    item.payload
                    for envelope in self.envelopes
                    for item in envelope.items
                    if item.type == kind and (where is None or where(item.payload))
                ]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [item.type for env in self.envelopes for item in env.items]
                    raise AssertionError(
                        f"waited {timeout_s}s for {count} {kind!r} item(s), got {len(found)}; "
                        f"received {kinds}, rejected {self.rejected}"
                    )
                self._changed.wait(remaining)


def close_sentry() -> None:
    """Flush and close the active client, then detach it from every scope."""
    import sentry_sdk

    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=5)
    from wsgi_observe import reporting

    reporting.uninstall(kind="errors")
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_isolation_scope().set_client(None)
    sentry_sdk.get_current_scope().set_client(None)


@pytest.fixture
def sentry_receiver() -> Iterator[SentryReceiver]:
    """A running receiver; its ``dsn`` is ``http://publickey@127.0.0.1:PORT/1``."""
    with SentryReceiver() as receiver:
        yield receiver


@pytest.fixture
def sentry_init(sentry_receiver: SentryReceiver) -> Iterator[Callable[..., bool]]:
    """``sentry_init(**kwargs)`` calls ``init_sentry`` with the receiver's DSN; closed after."""
    from wsgi_observe.integrations.sentry import init_sentry

    def init(**kwargs: Any) -> bool:
        close_sentry()  # a second init in one test must not leak the first client
        kwargs.setdefault("dsn", sentry_receiver.dsn)
        return init_sentry(**kwargs)

    try:
        yield init
    finally:
        close_sentry()
