"""The guide's logging helpers: ``get_logger`` and ``log_api_call`` & co.

Each writes one line through ``logging`` (so any handler sees it) with its numbers as JSON
fields; secrets in the text are redacted by the formatter like everywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from .._guard import guarded
from ..kpis import business_events
from ..redact import redact_sql
from .formats import RECORD_ATTRS, safe_str

__all__ = [
    "MAX_QUERY_CHARS",
    "get_logger",
    "log_api_call",
    "log_business_event",
    "log_database_query",
    "log_external_service_call",
]

#: Longest database query text kept in a log line.
MAX_QUERY_CHARS = 1000
_INFO = logging.INFO
_WARNING = logging.WARNING

_api_log = logging.getLogger("wsgi_observe.api")
_db_log = logging.getLogger("wsgi_observe.db")
_external_log = logging.getLogger("wsgi_observe.external")
_business_log = logging.getLogger("wsgi_observe.business")


def get_logger(name: Optional[str] = None) -> logging.Logger:
    """The logger called ``name`` (``get_logger(__name__)``); its lines follow the setup of
    :func:`configure_logging`, ``extra=`` fields included."""
    return logging.getLogger(name)


def _extra(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` safe as ``extra=``: names a LogRecord already has get a trailing ``_``."""
    return {(f"{key}_" if key in RECORD_ATTRS else key): value for key, value in fields.items()}


def log_api_call(
    endpoint: str, method: str, status: int, duration_ms: float, **fields: Any
) -> None:
    """Log an API call at INFO: ``POST /api/leads 201 145.50ms`` with ``endpoint``,
    ``method``, ``status``, ``duration_ms`` and any other ``fields`` as JSON fields."""
    _api_log.info(
        "%s %s %s %.2fms",
        method,
        endpoint,
        status,
        duration_ms,
        extra=_extra(
            {
                "endpoint": endpoint,
                "method": method,
                "status": status,
                "duration_ms": duration_ms,
                **fields,
            }
        ),
        stacklevel=2,
    )


def log_database_query(query: str, duration_ms: float, rows: Optional[int] = None) -> None:
    """Log a database query at DEBUG (``LOG_LEVEL=DEBUG`` shows them): the query text on one
    line, secrets redacted, cut at ``MAX_QUERY_CHARS``, with ``duration_ms`` and ``rows``."""
    if not _db_log.isEnabledFor(logging.DEBUG):
        return
    # Redact the whole text before cutting it: a cut could split a secret from its name.
    text = redact_sql(" ".join(safe_str(query).split()))
    if len(text) > MAX_QUERY_CHARS:
        text = text[:MAX_QUERY_CHARS] + "…"
    _db_log.debug(
        "Database query took %.2fms (%s rows)",
        duration_ms,
        rows,
        extra={"query": text, "duration_ms": duration_ms, "rows": rows},
        stacklevel=2,
    )


def log_external_service_call(
    service: str, operation: str, success: bool, duration_ms: float, **fields: Any
) -> None:
    """Log a call to another service: INFO when it succeeded, WARNING when it failed."""
    _external_log.log(
        _INFO if success else _WARNING,
        "External service %s.%s %s in %.2fms",
        service,
        operation,
        "succeeded" if success else "failed",
        duration_ms,
        extra=_extra(
            {
                "service": service,
                "operation": operation,
                "success": bool(success),
                "duration_ms": duration_ms,
                **fields,
            }
        ),
        stacklevel=2,
    )


def log_business_event(
    event: str, entity_id: Any = None, data: Optional[Mapping[str, Any]] = None
) -> None:
    """Log a business event at INFO: ``event``, ``entity_id`` and ``data`` (secrets redacted).

    Also counts it in the KPI ``business_events_total{event=...}`` (:mod:`wsgi_observe.kpis`;
    distinct event names capped like any KPI's label values).
    """
    try:
        business_events().labels(event=event).inc()
    except Exception as error:  # counting never breaks the caller
        guarded("counting a business event", error)
    _business_log.info(
        "Business event: %s",
        event,
        extra={"event": event, "entity_id": entity_id, "data": dict(data) if data else {}},
        stacklevel=2,
    )
