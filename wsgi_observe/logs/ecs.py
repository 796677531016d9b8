"""``LOG_FORMAT=ecs``: log lines in the Elastic Common Schema, as nested JSON objects.

Every line has ``@timestamp``, ``log.level`` (lowercase, as ECS loggers write it),
``log.logger``, ``log.origin``, ``message``, ``ecs.version``, ``service.name``,
``service.version``, ``service.environment`` and ``process.pid``. During a request:
``http.request.method``, ``http.request.id`` (our request id), ``url.path``, ``url.query``
(redacted), ``client.ip``, ``user_agent.original`` and, when the request has a trace,
``trace.id`` and ``span.id``. The access line adds ``http.response.status_code``,
``http.response.body.bytes``, ``event.duration`` (nanoseconds), ``event.outcome`` and the
route template as ``labels.endpoint``. An exception is ``error.type``, ``error.message``
and ``error.stack_trace``.

Your fields (``LogContext``, ``extra=``, the ``log_*`` helpers' numbers) go under
``labels``, which ECS keeps for custom key/value pairs, so they never collide with ECS
fields: keys with dots get ``_`` instead, a nested mapping is flattened with ``_``
(``data={"score": 85}`` is ``labels.data_score``), a list of plain values stays a list and
anything else becomes its JSON text. The same redaction applies as in the JSON lines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import orjson

from .._time import iso_utc
from ..redact import redact_query, redact_text
from ..tracing import TRACE_KEY, current_child
from .context import ID_KEY, current_fields, current_request, wsgi_text
from .formats import (
    RECORD_ATTRS,
    JsonFormatter,
    _exception_block,
    _message,
    _scrub,
    dumps_line,
    safe_str,
)

if TYPE_CHECKING:
    from .._wsgi import Exchange
    from ..config import Config

__all__ = ["ECS_VERSION", "EcsFormatter", "access_event"]

#: The ECS version the lines follow.
ECS_VERSION = "8.11.0"
_MAX_AGENT = 512
_MAX_DEPTH = 4
_SCALARS = (str, int, float, bool)
_ACCESS = "wsgi_observe.access"
# The access line's own fields, which ECS has names for (written from the request itself).
_ACCESS_FIELDS = frozenset(
    {
        "method",
        "path",
        "status",
        "duration_ms",
        "bytes",
        "request_id",
        "remote_addr",
        "user_agent",
        "endpoint",
    }
)

_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_pid)


def _label_key(key: Any) -> str:
    text = key if isinstance(key, str) else safe_str(key)
    return text.replace(".", "_") or "_"


def _flatten(labels: dict[str, Any], key: str, value: Any, depth: int = 0) -> None:
    """Put ``value`` into ``labels`` as ECS wants labels: flat key/value pairs."""
    if value is None or isinstance(value, _SCALARS):
        labels[key] = value
    elif isinstance(value, Mapping) and depth < _MAX_DEPTH:
        for inner, item in value.items():
            _flatten(labels, f"{key}_{_label_key(inner)}", item, depth + 1)
    elif isinstance(value, (list, tuple)) and all(
        item is None or isinstance(item, _SCALARS) for item in value
    ):
        labels[key] = list(value)
    else:
        labels[key] = dumps_line({"v": value})[5:-1].decode("utf-8", "replace")


def _add_labels(labels: dict[str, Any], fields: Mapping[Any, Any]) -> None:
    for key, value in fields.items():
        name = _label_key(key)
        _flatten(labels, name, _scrub(name, value))


def _request_fields(event: dict[str, Any], environ: Mapping[str, Any]) -> None:
    """The request's ECS fields: ``http``, ``url``, ``client``, ``user_agent``, ``trace``."""
    request: dict[str, Any] = {"method": environ.get("REQUEST_METHOD", "GET")}
    request_id = environ.get(ID_KEY)
    if request_id is not None:
        request["id"] = request_id
    event["http"] = {"request": request}
    path = environ.get("PATH_INFO", "")
    script = environ.get("SCRIPT_NAME")
    if script:
        path = script + path
    url: dict[str, Any] = {"path": path if path.isascii() else wsgi_text(path)}
    query = environ.get("QUERY_STRING")
    if query:
        url["query"] = redact_query(query if query.isascii() else wsgi_text(query))
    event["url"] = url
    address = environ.get("REMOTE_ADDR")
    if address:
        event["client"] = {"ip": address}
    agent = environ.get("HTTP_USER_AGENT")
    if agent is not None:
        event["user_agent"] = {"original": agent[:_MAX_AGENT]}
    trace = environ.get(TRACE_KEY)
    if trace is not None:
        event["trace"] = {"id": trace.trace_id}
        event["span"] = {"id": current_child() or trace.span_id}


def _error(exc_info: Any) -> Optional[dict[str, Any]]:
    """The JSON line's exception block under ECS's names (``error.stack_trace``)."""
    block = _exception_block(exc_info)
    if block is not None:
        block["stack_trace"] = block.pop("traceback")
    return block


class EcsFormatter(JsonFormatter):
    """Formats a record as one Elastic Common Schema line (nested objects), for any handler.

    Parameters: ``config`` (its ``service_name``, ``version`` and ``environment`` become
    ``service.*``; default: :meth:`Config.from_env`). The fields are listed in
    :mod:`wsgi_observe.logs.ecs`. Example::

        handler = logging.FileHandler("/var/log/crm/ecs.json")
        handler.setFormatter(EcsFormatter(Config.from_env(service_name="crm-api")))

    Reads: nothing from the environment itself.
    """

    def __init__(self, config: Optional[Config] = None) -> None:
        super().__init__()
        if config is None:
            from ..config import Config

            config = Config.from_env()
        self.service = {
            "name": config.service_name,
            "version": config.version,
            "environment": config.environment,
        }

    def event(self, record: logging.LogRecord) -> dict[str, Any]:
        event: dict[str, Any] = {
            "@timestamp": iso_utc(record.created),
            "log": {
                "level": record.levelname.lower(),
                "logger": record.name,
                "origin": {
                    "file": {"name": record.filename, "line": record.lineno},
                    "function": record.funcName,
                },
            },
            "message": redact_text(_message(record)),
            "ecs": {"version": ECS_VERSION},
            "service": self.service,
            "process": {"pid": record.process, "thread": {"name": record.threadName}},
        }
        labels: dict[str, Any] = {}
        environ = current_request()
        if environ is not None:
            _request_fields(event, environ)
        context = current_fields()
        if context:
            _add_labels(labels, context)
        extras = {k: v for k, v in record.__dict__.items() if k not in RECORD_ATTRS}
        if extras:
            if record.name == _ACCESS:
                _access_extras(event, labels, extras)
                extras = {k: v for k, v in extras.items() if k not in _ACCESS_FIELDS}
            _add_labels(labels, extras)
        if record.exc_info:
            error = _error(record.exc_info)
            if error is not None:
                event["error"] = error
        elif record.exc_text:
            event["error"] = {"stack_trace": redact_text(record.exc_text)}
        if record.stack_info:
            labels["stack_info"] = redact_text(record.stack_info)
        if labels:
            event["labels"] = labels
        return event


def _access_extras(
    event: dict[str, Any], labels: dict[str, Any], fields: Mapping[str, Any]
) -> None:
    """The access line written through logging: its numbers as ECS fields."""
    http = event.setdefault("http", {})
    response: dict[str, Any] = {}
    status = fields.get("status")
    if isinstance(status, int):
        response["status_code"] = status
    size = fields.get("bytes")
    if isinstance(size, int):
        response["body"] = {"bytes": size}
    http["response"] = response
    duration_ms = fields.get("duration_ms")
    if isinstance(duration_ms, (int, float)):
        event["event"] = {
            "duration": int(duration_ms * 1_000_000),
            "outcome": "failure" if isinstance(status, int) and status >= 500 else "success",
        }
    endpoint = fields.get("endpoint")
    if endpoint is not None:
        labels["endpoint"] = endpoint


def access_event(
    exchange: Exchange,
    name: str,
    duration_ns: int,
    stamp: str,
    code: int,
    message: str,
    nbytes: int,
    service: Mapping[str, Any],
) -> bytes:
    """The access line of a finished request as one ECS line (the access line's direct
    write: no LogRecord, no formatter), ending in a newline."""
    environ = exchange.environ
    event: dict[str, Any] = {
        "@timestamp": stamp,
        "log": {"level": "info", "logger": _ACCESS},
        "message": message,
        "ecs": {"version": ECS_VERSION},
        "service": service,
        "process": {"pid": _pid},
    }
    _request_fields(event, environ)
    event["http"]["response"] = {"status_code": code, "body": {"bytes": nbytes}}
    event["event"] = {
        "duration": duration_ns,
        "outcome": "failure" if code >= 500 else "success",
    }
    event["labels"] = {"endpoint": name}
    try:
        return orjson.dumps(event)
    except Exception:  # a server put something odd in the environ
        return dumps_line(event)
