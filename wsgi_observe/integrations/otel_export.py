"""Spans off the request path: a bounded batch queue and an OTLP/HTTP exporter on urllib3.

:class:`BatchExport` is the span processor of the TracerProvider that
:func:`wsgi_observe.integrations.otel.init_otel` builds. A request only appends its
finished span to a bounded queue (a ``deque`` append); a thread of its own, started on
the first span of each process (so also in each forked worker), sends the queue every
``delay_s`` seconds, or sooner once a batch is full, and at exit (the TracerProvider's
``shutdown``, run by ``atexit`` in every worker: gunicorn ends its workers through
``sys.exit``).

:class:`OtlpHttpExporter` POSTs each batch as an OTLP ``ExportTraceServiceRequest``
(protobuf, encoded by OpenTelemetry's own encoder) through the one HTTP client stack
(:mod:`wsgi_observe._http`: urllib3, timeouts, no proxy from the environment, no
redirects). A collector that refuses, fails or hangs costs requests nothing, and is
logged once, not per request or per batch: after a failure the exporter drops batches at
once for a growing pause (1 s, doubling up to 30 s) before it tries again, and says so
once when it succeeds again. A full queue drops spans and is logged once too. So a
worker's exit never waits for more than one export's timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import _http

if TYPE_CHECKING:
    import urllib3

__all__ = ["BatchExport", "OtlpHttpExporter"]

_log = logging.getLogger("wsgi_observe.otel")
_FIRST_PAUSE_S = 1.0
_MAX_PAUSE_S = 30.0


class OtlpHttpExporter(SpanExporter):
    """OTLP/HTTP (protobuf) to ``url``: ``headers`` with every export, ``timeout_s`` each.

    Example::

        exporter = OtlpHttpExporter("http://otel-collector:4318/v1/traces", {}, 10.0)

    Reads: nothing from the environment (:class:`~wsgi_observe.Config` did).
    """

    def __init__(self, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.url = url
        self.headers = {**headers, "Content-Type": "application/x-protobuf"}
        self.timeout_s = timeout_s
        self.exported = 0
        self.dropped = 0
        self._pool: Optional[urllib3.PoolManager] = None
        self._down = False
        self._pause_s = _FIRST_PAUSE_S
        self._retry_at = 0.0
        self._closed = False
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def forget_pool() -> None:  # a parent's connections are not the child's
                exporter = ref()
                if exporter is not None:
                    exporter._pool = None

            os.register_at_fork(after_in_child=forget_pool)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed or (self._down and time.monotonic() < self._retry_at):
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            body = encode_spans(spans).SerializeToString()
        except Exception as error:  # a span the encoder refuses: drop the batch, say why
            self.dropped += len(spans)
            _log.warning("OpenTelemetry: could not encode %d spans: %r", len(spans), error)
            return SpanExportResult.FAILURE
        pool = self._pool
        if pool is None:
            pool = self._pool = _http.new_pool(num_pools=1, maxsize=1)
        try:
            response = _http.request(
                pool, "POST", self.url, body=body, headers=self.headers, timeout_s=self.timeout_s
            )
            status = response.status
        except Exception as error:
            self._failed(len(spans), _http.describe_error(error))
            return SpanExportResult.FAILURE
        if 200 <= status < 300:
            self.exported += len(spans)
            if self._down:
                self._down = False
                self._pause_s = _FIRST_PAUSE_S
                _log.info(
                    "OpenTelemetry: exporting spans to %s again (%d dropped meanwhile)",
                    self.url,
                    self.dropped,
                )
            return SpanExportResult.SUCCESS
        self._failed(len(spans), f"HTTP {status}")
        return SpanExportResult.FAILURE

    def _failed(self, count: int, reason: str) -> None:
        self.dropped += count
        if not self._down:
            self._down = True
            _log.warning(
                "OpenTelemetry: could not export spans to %s (%s); dropping spans until it "
                "answers again, retried after a pause (logged once)",
                self.url,
                reason,
            )
        else:
            self._pause_s = min(self._pause_s * 2, _MAX_PAUSE_S)
        self._retry_at = time.monotonic() + self._pause_s

    def shutdown(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class BatchExport(SpanProcessor):
    """Sampled spans into a bounded queue, exported in batches by a thread of its own.

    Parameters: ``exporter``; ``max_queue`` (spans waiting at most; more are dropped and
    that is logged once), ``batch`` (spans per export; a full batch wakes the thread) and
    ``delay_s`` (the longest a span waits). Example::

        provider.add_span_processor(BatchExport(OtlpHttpExporter(url, {}, 10.0)))
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue: int = 2048,
        batch: int = 512,
        delay_s: float = 5.0,
    ) -> None:
        self.exporter = exporter
        self.max_queue = max_queue
        self.batch = batch
        self.delay_s = delay_s
        self.dropped = 0
        self._queue: deque[ReadableSpan] = deque()
        self._warned = False
        self._stopped = False
        self._begin()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def fresh_in_child() -> None:
                processor = ref()
                if processor is not None:
                    processor._begin()

            os.register_at_fork(after_in_child=fresh_in_child)

    def _begin(self) -> None:
        """This process's own thread, locks and queue (the parent's spans are its own)."""
        self._queue.clear()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled or self._stopped:
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                _log.warning(
                    "OpenTelemetry: %d spans are waiting to be exported; dropping new ones "
                    "until the exporter catches up (logged once)",
                    len(queue),
                )
            return
        queue.append(span)
        if self._thread is None:
            self._start()
        if len(queue) >= self.batch:
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="wsgi_observe-otel-export", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        wake = self._wake
        while not self._stopped:
            wake.wait(self.delay_s)
            wake.clear()
            self._export_all()

    def _export_all(self) -> None:
        """Send everything queued now, a batch at a time (never raises)."""
        with self._export_lock:
            queue = self._queue
            while queue:
                count = min(self.batch, len(queue))
                spans = [queue.popleft() for _ in range(count)]
                try:
                    self.exporter.export(spans)
                except Exception as error:  # an exporter's bug must not end the thread
                    _log.warning("OpenTelemetry: exporting %d spans failed: %r", count, error)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._export_all()
        return True

    def shutdown(self) -> None:
        """Export what is queued (bounded: the exporter drops at once while its collector
        is down, so at most one export's timeout is spent), then stop."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=max(getattr(self.exporter, "timeout_s", 10.0), 1.0) + 1.0)
        self._export_all()
        self.exporter.shutdown()
