"""The access line: one INFO line per observed request, the hot path of logging.

While our handlers are installed (:mod:`wsgi_observe.logs.setup`) and nobody customised the
``wsgi_observe.access`` logger, the line is built here as a typed struct (:class:`_Line`),
serialised once with msgspec and appended to those handlers' sinks (the same buffers, files
and rotation as every other line): no LogRecord, no formatter, no dict. (A dict of the
line's eleven fields, serialised by orjson, cost about 1,900 more machine instructions per
request: making, hashing, walking and freeing the dict was most of it.) With
``LOG_FORMAT=ecs`` the line is the ECS one (:func:`wsgi_observe.logs.ecs.access_event`).
Otherwise it goes through ``logging`` like any other line, so handlers of the application's
own receive it.
"""

from __future__ import annotations

import logging
import time
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Optional

import msgspec

from ..tracing import TRACE_KEY
from . import files
from . import setup as _setup
from .context import ID_KEY, logged_path, user_agent
from .ecs import access_event
from .formats import dumps_line, text_of

if TYPE_CHECKING:
    from .._wsgi import Exchange

__all__ = ["status_code", "write_access_line"]

_INFO = logging.INFO
_join = " ".join
_encode = msgspec.json.Encoder().encode
_access_log = logging.getLogger("wsgi_observe.access")
_parent_log = logging.getLogger("wsgi_observe")
_root = logging.getLogger()
# The access logger's own cache of isEnabledFor() answers, by level. logging empties it on
# every level change (setLevel, disable) and isEnabledFor() fills it again; reading it here
# spares that call per request. (Without it, on some future Python, the call is made.)
_enabled: dict[int, bool] = getattr(_access_log, "_cache", {})


class _Line(msgspec.Struct, gc=False, omit_defaults=True):
    """The access line's fields, in the order they are written; the trace fields only when
    the request has a trace (``omit_defaults``). Values are whatever the request gave: msgspec
    writes them by their type (a value it cannot write sends the line to the careful
    encoder), so the annotations document, they do not check."""

    timestamp: msgspec.Raw  # and "level" and "logger" (see _now)
    message: str
    method: str
    endpoint: str
    path: str
    status: int
    duration_ms: float
    bytes: int
    request_id: Optional[str]
    remote_addr: Optional[str]
    user_agent: Optional[str]
    trace_id: Optional[str] = None
    span_id: Optional[str] = None
    trace_flags: Optional[str] = None


_status_codes: dict[object, int] = {None: 500}
# A status line -> (its code, what the message shows: the line as the app sent it when it
# is one, else the code), for the direct write. Bounded like _status_codes.
_shown: dict[str, tuple[int, str]] = {}


def status_code(status: object) -> int:
    """The numeric status of a status line; 500 for anything that is not one (the server
    answers an invalid status with an error, so that is what the client got)."""
    code = _status_codes.get(status)
    if code is None:
        code = 500
        if isinstance(status, str):
            text = status[:3]
            if len(text) == 3 and text.isdigit() and "100" <= text <= "599":
                code = int(text)
        if len(_status_codes) < 256:
            try:
                _status_codes[status] = code
            except TypeError:  # an unhashable "status"
                pass
    return code


def _shown_status(status: object) -> tuple[int, str]:
    """``(code, shown)`` for the access line's ``status`` and message (cached for str)."""
    code = status_code(status)
    if type(status) is not str:
        return code, str(code)
    shown = (code, status if status[:3] == str(code) else str(code))
    if len(_shown) < 256:
        _shown[status] = shown
    return shown


# Wall-clock time of the access line from the exchange's own perf_counter_ns readings (no
# clock call per request); the flusher re-syncs the offset twice a second.
_clock_offset_ns = time.time_ns() - perf_counter_ns()
_stamp_second: tuple[int, str] = (-1, "")

#: ``.000Z`` to ``.999Z``: the millisecond tails of a timestamp, formatted once.
_MILLIS = tuple(f".{rest:03d}Z" for rest in range(1000))


# The millisecond the latest access line ended in: its first perf_counter_ns() reading,
# the first reading after it, its timestamp (``2025-10-06T12:00:00.000Z``), and the value
# of the line's "timestamp" serialised. msgspec writes a Raw value as it is, so that value
# also carries the constant "level" and "logger" members after it (the bytes of three dict
# entries for the cost of one; a timestamp has nothing to escape). Two integer comparisons
# per request tell whether a line ends in the same millisecond as the one before, where
# turning every end into milliseconds would divide a 64-bit integer.
_now: tuple[int, int, str, msgspec.Raw] = (0, 0, "", msgspec.Raw(b'""'))


def _millisecond(end_ns: int) -> tuple[int, int, str, msgspec.Raw]:
    """The millisecond ``end_ns`` (a perf_counter_ns() reading) falls in (it becomes _now)."""
    global _now
    offset = _clock_offset_ns
    millis = (end_ns + offset) // 1_000_000
    first = millis * 1_000_000 - offset
    text = _stamp_text(millis)
    head = f'"{text}","level":"INFO","logger":"wsgi_observe.access"'
    _now = (first, first + 1_000_000, text, msgspec.Raw(head.encode()))
    return _now


def _resync_clock() -> None:
    global _clock_offset_ns, _now
    _clock_offset_ns = time.time_ns() - perf_counter_ns()
    _now = (0, 0, "", _now[3])  # the millisecond's readings moved with the offset


files.tick_hooks.append(_resync_clock)


def _stamp_text(millis: int) -> str:
    """``2025-10-06T12:00:00.000Z`` for a count of milliseconds since the epoch."""
    global _stamp_second
    second, rest = divmod(millis, 1000)
    cached = _stamp_second
    if cached[0] != second:
        cached = _stamp_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return cached[1] + _MILLIS[rest]


def _fields(exchange: Exchange, name: str, duration_ns: int) -> dict[str, Any]:
    """The access line's own fields (both ways of writing it write the same ones)."""
    environ = exchange.environ
    return {
        "method": environ.get("REQUEST_METHOD", "GET"),
        "endpoint": name,
        "path": logged_path(environ),
        "status": status_code(exchange.status),
        "duration_ms": duration_ns // 1000 / 1000,
        "bytes": exchange.body_bytes(),
        "request_id": environ.get(ID_KEY),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "user_agent": user_agent(environ),
    }


def _message(method: str, path: str, status: object, code: int) -> str:
    """``GET /api/leads?q=1 200 OK``: the status line as the app sent it, when it is one."""
    shown = status if type(status) is str and status[:3] == str(code) else code
    return f"{method} {path} {shown}"


def _plain_request(
    environ: Any, method: Any, addr: Any, agent: Any
) -> tuple[str, str, Optional[str], Optional[str]]:
    """The method, logged path, address and User-Agent of the access line when one is not a
    plain ``str`` (a server that broke PEP 3333's native strings) or the User-Agent is long:
    a subclass of ``str`` made a ``str``, bytes decoded and anything else its (redacted)
    ``str()``, as the careful encoder writes them; the User-Agent cut to 512 characters. The
    path is :func:`logged_path`'s, which reads odd path values as PEP 3333's native strings."""
    path = logged_path(environ)  # (it copes with values that are not a str)
    agent = _plain_text(agent)
    if agent is not None and len(agent) > 512:
        agent = agent[:512]
    return _plain_text(method) or "", path, _plain_text(addr), agent


def _plain_text(value: Any) -> Optional[str]:
    if value is None or type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return text_of(value)  # as the careful encoder writes it


def _fields_of(line: _Line, stamp: str) -> dict[str, Any]:
    """The access line as a dict, for the careful encoder and a text console."""
    fields = msgspec.structs.asdict(line)
    del fields["timestamp"]
    if line.trace_id is None:
        del fields["trace_id"], fields["span_id"], fields["trace_flags"]
    return {"timestamp": stamp, "level": "INFO", "logger": "wsgi_observe.access", **fields}


def _through_logging(exchange: Exchange, name: str, duration_ns: int) -> None:
    if not _access_log.isEnabledFor(_INFO):
        return
    fields = _fields(exchange, name, duration_ns)
    message = _message(fields["method"], fields["path"], exchange.status, fields["status"])
    _access_log.info("%s", message, extra=fields)


def _text_record(
    handlers: tuple[logging.Handler, ...], message: str, fields: dict[str, Any]
) -> None:
    """The access line as a record, for a text console (development only)."""
    record = _access_log.makeRecord(
        "wsgi_observe.access", _INFO, __file__, 0, message, (), None, "access", fields
    )
    for handler in handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


def _append(setup: _setup.Setup, line: bytes) -> None:
    """``line`` into the sinks that take INFO lines (Sink.write() without its checks)."""
    size = len(line) + 1  # and its newline (added at the flush)
    for sink in setup.info_sinks:
        sink.lines.append(line)
        pending = sink.pending = sink.pending + size
        if pending >= sink.limit:  # (a closed sink's limit is 0)
            sink.flush()
        elif pending == size and not files.is_flusher_running():
            files.start_flusher()


def _write_ecs(exchange: Exchange, name: str, duration_ns: int, setup: _setup.Setup) -> None:
    """The access line as an ECS line (``LOG_FORMAT=ecs``), written directly like JSON."""
    environ = exchange.environ
    status = exchange.status
    try:
        code, shown = _shown[status]
    except (KeyError, TypeError):
        code, shown = _shown_status(status)
    end = exchange.started + duration_ns
    first, after, stamp, _ = _now
    if not first <= end < after:
        stamp = _millisecond(end)[2]
    ecs = setup.ecs
    assert ecs is not None
    line = access_event(
        exchange,
        name,
        duration_ns,
        stamp,
        code,
        f"{environ.get('REQUEST_METHOD', 'GET')} {logged_path(environ)} {shown}",
        exchange.body_bytes(),
        ecs.service,
    )
    _append(setup, line)


def write_access_line(exchange: Exchange, name: str, duration_ns: int) -> None:
    """Write the access line of a finished request (never raises into the request)."""
    setup = _setup.active
    access, parent = _access_log, _parent_log
    if (
        setup is None
        or setup.level > _INFO
        # isEnabledFor(INFO), from logging's own cache when it holds the answer:
        or (_enabled.get(_INFO) is not True and not access.isEnabledFor(_INFO))
        or access.disabled
        or _root.handlers != setup.root_handlers  # the application's handlers listen too
        # ... or the access logger (or its parent) was customised:
        or access.handlers
        or parent.handlers
        or not access.propagate
        or not parent.propagate
        or access.filters
        or parent.filters
    ):
        _through_logging(exchange, name, duration_ns)
        return
    if setup.ecs is not None:
        _write_ecs(exchange, name, duration_ns, setup)
        return
    # _fields(), _message() and Sink.write(), inlined: this runs once per request.
    environ = exchange.environ
    status = exchange.status
    try:
        code, shown = _shown[status]
    except (KeyError, TypeError):  # not seen yet, or not a status line
        code, shown = _shown_status(status)
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")
    addr = environ.get("REMOTE_ADDR")
    agent = environ.get("HTTP_USER_AGENT")
    try:
        if environ.get("QUERY_STRING") or environ.get("SCRIPT_NAME") or not path.isascii():
            path = logged_path(environ)
        # str.join takes nothing but a str, and the type checks catch the rest: the values
        # of a server that broke PEP 3333's native strings (bytes, say) and a long
        # User-Agent take the slow path (None, a missing header, does not).
        message = _join((method, path, shown))
        if type(agent) is str:
            if len(agent) > 512:
                raise TypeError
        elif agent is not None:
            raise TypeError
        if type(addr) is not str and addr is not None:
            raise TypeError
    except (TypeError, AttributeError):
        method, path, addr, agent = _plain_request(environ, method, addr, agent)
        message = f"{method} {path} {shown}"
    end = exchange.started + duration_ns
    first, after, stamp, head = _now
    if not first <= end < after:
        first, after, stamp, head = _millisecond(end)
    if len(exchange) == 1:  # a one-chunk list body, the common case
        nbytes = len(exchange[0])
    else:
        nbytes = sum(map(len, exchange)) if exchange else exchange.body_bytes()
    line = _Line(
        head,
        message,
        method,
        name,
        path,
        code,
        duration_ns // 1000 / 1000,
        nbytes,
        # The id sent back as X-Request-ID (the request context is on with our handlers).
        exchange.request_id,
        addr,
        agent,
    )
    trace = environ.get(TRACE_KEY)
    if trace is not None:
        line.trace_id = trace.trace_id
        line.span_id = trace.span_id
        line.trace_flags = trace.flags
    try:
        data = _encode(line)
    except Exception:  # a value msgspec can't write (an odd server's): the careful encoder
        data = dumps_line(_fields_of(line, stamp))
    size = len(data) + 1  # and its newline (added at the flush)
    for sink in setup.info_sinks:
        sink.lines.append(data)
        pending = sink.pending = sink.pending + size
        if pending >= sink.limit:  # (a closed sink's limit is 0)
            sink.flush()
        elif pending == size and not files.is_flusher_running():
            # The first line in an empty buffer: the flusher must be there to write it.
            files.start_flusher()
    if setup.text:
        fields = _fields_of(line, stamp)
        del fields["timestamp"], fields["level"], fields["logger"]  # the record has its own
        _text_record(setup.text, line.message, fields)
