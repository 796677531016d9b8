"""Structured logging: the guide's JSON lines, console text, rotating files and helpers.

- :func:`configure_logging` sets the root logger up (wrapping an app does it too, unless
  ``log_handlers`` is off); :func:`reset_logging` takes it down again.
- :func:`get_logger`, :class:`LogContext` and the guide's ``log_*`` helpers.
- :class:`JsonFormatter` and :class:`ConsoleFormatter` for handlers of your own.

The modules: ``context`` (request ids, the current request, ``LogContext``), ``formats``,
``files`` (sinks and rotation), ``setup``, ``helpers`` and ``access`` (the access line).
"""

from __future__ import annotations

from .context import LogContext, current_request_id, current_trace, new_request_id, trace_headers
from .files import BACKUP_COUNT, BUFFER_BYTES, FLUSH_INTERVAL_S, MAX_BYTES, flush
from .formats import ConsoleFormatter, JsonFormatter
from .helpers import (
    MAX_QUERY_CHARS,
    get_logger,
    log_api_call,
    log_business_event,
    log_database_query,
    log_external_service_call,
)
from .setup import configure_logging, reset_logging

__all__ = [
    "BACKUP_COUNT",
    "BUFFER_BYTES",
    "FLUSH_INTERVAL_S",
    "MAX_BYTES",
    "MAX_QUERY_CHARS",
    "ConsoleFormatter",
    "JsonFormatter",
    "LogContext",
    "configure_logging",
    "current_request_id",
    "current_trace",
    "flush",
    "get_logger",
    "log_api_call",
    "log_business_event",
    "log_database_query",
    "log_external_service_call",
    "new_request_id",
    "reset_logging",
    "trace_headers",
]
