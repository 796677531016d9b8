"""Log line formats: the guide's JSON lines and its console text.

Both formatters never raise: a value JSON can't hold becomes a string, a message whose
arguments don't format is written with a note, and secrets are redacted in every field.
During a request (see :mod:`wsgi_observe.logs.context`) a line carries the request's
``request`` block and ``request_id`` (and its ``trace_id``, ``span_id`` and
``trace_flags`` when it has a trace); ``LogContext`` fields and ``extra=`` fields are added.

The console text escapes control characters in every field (a path holding ``\\n`` cannot
forge a second line, and ANSI escape codes never reach the terminal raw).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections import deque
from collections.abc import Mapping
from typing import Any, Optional

import orjson

from .._text import escape_control
from .._time import iso_utc
from ..redact import REDACTED, is_secret_key, redact_text, redact_value
from ..tracing import TRACE_KEY, current_child
from .context import ID_KEY, current_fields, current_request, request_block

__all__ = ["ConsoleFormatter", "JsonFormatter", "dumps_line", "safe_str", "text_of"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
RECORD_ATTRS = frozenset(
    set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
)
_CORE_KEYS = frozenset(
    {
        "timestamp",
        "level",
        "logger",
        "message",
        "module",
        "function",
        "line",
        "request",
        "request_id",
        "exception",
        "stack",
    }
)
_DUMP_OPTIONS = orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    """orjson's fallback: anything JSON can't hold becomes a string (never an exception),
    scrubbed like every other string (an object's ``str()`` may show a DSN)."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    return text_of(value)


def text_of(value: Any) -> str:
    """What a line shows for a value JSON can't hold: bytes decoded, anything else its
    ``str()``; redacted either way."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    return redact_text(safe_str(value))


def safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


def _plain(value: Any, depth: int = 8) -> Any:
    """A copy of ``value`` that orjson can always write (used when the fast attempt failed)."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth <= 0:
        return _plain(safe_str(value), 1)
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:
            return _plain(safe_str(value), 1)
        return {_plain_key(key): _plain(item, depth - 1) for key, item in items}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [_plain(item, depth - 1) for item in value]
    return _plain(_default(value), depth - 1)


def _plain_key(key: Any) -> str:
    return key.encode("utf-8", "replace").decode("utf-8") if isinstance(key, str) else safe_str(key)


def dumps_line(event: dict[str, Any]) -> bytes:
    """One JSON line for ``event``, without its newline (a sink adds it); falls back to ever
    plainer versions, never raises."""
    try:
        return orjson.dumps(event, default=_default, option=_DUMP_OPTIONS)
    except Exception:
        pass
    try:
        return orjson.dumps(_plain(event), option=_DUMP_OPTIONS)
    except Exception as error:  # pragma: no cover - _plain output is always serialisable
        return orjson.dumps(
            {
                "timestamp": iso_utc(),
                "level": "ERROR",
                "logger": "wsgi_observe",
                "message": f"unloggable record: {type(error).__name__}",
            },
            option=_DUMP_OPTIONS,
        )


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, or a best effort when the arguments can't be formatted."""
    try:
        return record.getMessage()
    except Exception as error:
        return (
            f"{safe_str(record.msg)} (log arguments could not be formatted: {type(error).__name__})"
        )


def _scrub(key: str, value: Any) -> Any:
    """A field value with secrets removed, by :func:`wsgi_observe.redact.redact_value` (a
    copy: the caller's ``extra=`` objects are never changed)."""
    if type(value) is str:  # the common case, without the walker's call
        return REDACTED if is_secret_key(key) else redact_text(value)
    try:
        return redact_value(value, key=key)
    except Exception:  # a mapping whose items() raises, ...: its text, scrubbed
        return redact_text(safe_str(value))


def _merge(event: dict[str, Any], fields: Mapping[Any, Any]) -> None:
    """Add user fields; one named like a core field (or one already set to something else)
    is kept as ``name_``; one repeating a value already there is dropped."""
    for key, value in fields.items():
        if not isinstance(key, str):
            key = safe_str(key)
        if key in event:
            current = event[key]
            if current is value or (type(value) in (str, int) and current == value):
                continue
            key = f"{key}_"
        elif key in _CORE_KEYS:
            key = f"{key}_"
        event[key] = _scrub(key, value)


def _exception_block(exc_info: Any) -> Optional[dict[str, Any]]:
    kind, error, tb = exc_info
    if kind is None:
        return None
    name = getattr(kind, "__qualname__", safe_str(kind))
    module = getattr(kind, "__module__", "builtins")
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    try:
        text = "".join(traceback.format_exception(kind, error, tb))
    except Exception:  # pragma: no cover - traceback copes with broken __str__ itself
        text = f"{name}: <traceback unavailable>"
    return {
        "type": name,
        "message": redact_text(safe_str(error)),
        "traceback": redact_text(text),
    }


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (the guide's fields), for any handler.

    Fields: ``timestamp`` (UTC, ms, ``Z``), ``level``, ``logger``, ``message``, ``module``,
    ``function``, ``line``; during a request ``request`` (method, path, remote_addr,
    user_agent) and ``request_id``, and ``trace_id``, ``span_id`` and ``trace_flags`` when
    it has a trace (see :mod:`wsgi_observe.tracing`); the ``LogContext`` fields; every
    ``extra=`` field; and ``exception`` (type, message, traceback) when there is one.
    Secrets are redacted.
    Example::

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.getLogger().addHandler(handler)

    Reads: nothing from the environment.
    """

    def __init__(self) -> None:
        super().__init__()
        # The last record and its line: the console and both files share one serialisation.
        self._last: tuple[Optional[logging.LogRecord], bytes] = (None, b"")

    def format(self, record: logging.LogRecord) -> str:
        return self.serialize(record).decode("utf-8")

    def serialize(self, record: logging.LogRecord) -> bytes:
        """The record as one JSON line (``bytes``, without its newline); never raises."""
        last = self._last
        if last[0] is record:
            return last[1]
        try:
            line = dumps_line(self.event(record))
        except Exception as error:  # pragma: no cover - event() guards every step
            line = dumps_line(
                {
                    "timestamp": iso_utc(),
                    "level": getattr(record, "levelname", "ERROR"),
                    "logger": getattr(record, "name", "?"),
                    "message": f"unloggable record: {type(error).__name__}",
                }
            )
        self._last = (record, line)
        return line

    def event(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as a dict (before serialisation)."""
        event: dict[str, Any] = {
            "timestamp": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(_message(record)),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
        }
        environ = current_request()
        if environ is not None:
            event["request"] = request_block(environ)
            request_id = environ.get(ID_KEY)
            if request_id is not None:
                event["request_id"] = request_id
            trace = environ.get(TRACE_KEY)
            if trace is not None:
                # OpenTelemetry's log data model, as JSON logs write it.
                event["trace_id"] = trace.trace_id
                event["span_id"] = current_child() or trace.span_id
                event["trace_flags"] = trace.flags
        context = current_fields()
        if context:
            _merge(event, context)
        extras = {k: v for k, v in record.__dict__.items() if k not in RECORD_ATTRS}
        if extras:
            _merge(event, extras)
        if record.exc_info:
            block = _exception_block(record.exc_info)
            if block is not None:
                event["exception"] = block
        elif record.exc_text:
            event["exception"] = {
                "type": None,
                "message": None,
                "traceback": redact_text(record.exc_text),
            }
        if record.stack_info:
            event["stack"] = redact_text(record.stack_info)
        return event


_COLORS = {
    "DEBUG": "\x1b[36m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_RESET = "\x1b[0m"


class ConsoleFormatter(logging.Formatter):
    """The guide's console line: ``2025-10-06 12:00:00 [INFO] app.routes.leads: Lead created
    successfully | POST /api/leads`` (the ``| METHOD path`` part only during a request).

    Parameters: ``color`` (colour the level; use it only for a terminal). Local time.
    Example::

        handler = logging.StreamHandler()
        handler.setFormatter(ConsoleFormatter(color=sys.stderr.isatty()))

    Reads: nothing from the environment.
    """

    def __init__(self, color: bool = False) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as error:  # never raise out of logging
            return f"{getattr(record, 'name', '?')}: unloggable record: {type(error).__name__}"

    def _format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        level = f"[{escape_control(record.levelname)}]"
        if self.color:
            level = f"{_COLORS.get(record.levelname, '')}{level}{_RESET}"
        name = escape_control(str(record.name))
        line = f"{stamp} {level} {name}: {escape_control(redact_text(_message(record)))}"
        environ = current_request()
        if environ is not None:
            block = request_block(environ)
            method = escape_control(str(block["method"]))
            line = f"{line} | {method} {escape_control(str(block['path']))}"
        if record.exc_info and record.exc_info[0] is not None:
            line = f"{line}\n{_block(self.formatException(record.exc_info))}"
        elif record.exc_text:
            line = f"{line}\n{_block(record.exc_text)}"
        if record.stack_info:
            line = f"{line}\n{_block(self.formatStack(record.stack_info))}"
        return line


# The lines of a traceback that start at the left margin; any other line there (text from
# an exception message) is indented, so that it can never pass for a log line of its own.
_MARGIN_LINE = re.compile(
    r"Traceback \(most recent call last\):|Stack \(most recent call last\):|"
    r"During handling of the above exception|The above exception was the direct cause|"
    r"[A-Za-z_][\w.]*(?::|$)"
).match


def _block(text: str) -> str:
    """A traceback for the console: redacted, control characters escaped, line breaks kept."""
    lines = escape_control(redact_text(text), keep_newlines=True).split("\n")
    for index in range(1, len(lines)):
        line = lines[index]
        if line and not line[0].isspace() and not _MARGIN_LINE(line):
            lines[index] = "  " + line
    return "\n".join(lines)
