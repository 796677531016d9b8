"""Structured logging: ``configure_logging``, ``LogContext``, the ``log_*`` helpers, JSON lines,
multi-process-safe rotating files, and the per-request context, request id and access log.

``configure_logging()`` sends every line to:

- the console (``stream``, default ``sys.stderr``): the guide's coloured text in development
  on a TTY, JSON lines otherwise and in production (``LOG_FORMAT`` overrides);
- ``LOG_DIR/application.log`` (every level) and ``LOG_DIR/errors.log`` (ERROR and above),
  JSON lines, rotated at 10 MB with 10 backups.

A JSON console and application.log take the same lines, so one handler with one buffer
writes both; errors.log has its own handler (and a text console its own).

Many processes (gunicorn workers) may write the same files. Each line is appended with
``O_APPEND`` as part of one ``write()`` holding whole lines only, so lines never split or
interleave; rotation happens under an ``flock`` on ``LOG_DIR/.<name>.lock`` and re-checks
the file's size and inode once the lock is held, so two workers never rotate twice; a worker
whose file was rotated by another notices the new inode before its next write and reopens.
A worker still holding the old file for a moment writes into ``application.log.1``: its lines
are kept, in the backup. Lines are buffered per process (at most ``buffer_bytes``, at most
``flush_interval_s``) like nginx's ``access_log ... buffer= flush=``; WARNING and above are
written at once, and the buffer is flushed before a fork and at exit.

The access log is the hot path: one line per request is built as a dict, serialised with
orjson and appended to the same sinks, without a ``LogRecord``, whenever the only handlers
on the way are the ones ``configure_logging`` installed. With other handlers around it goes
through ``logging`` like any other line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import stat as statmod
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import orjson

from ._time import iso_utc
from .config import Config, ConfigError
from .redact import REDACTED, is_secret_name, redact_query, redact_sql, redact_text, redact_value

try:  # POSIX; elsewhere rotation is only safe within one process
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from contextvars import Token

    from ._types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "LogContext",
    "configure_logging",
    "current_request_id",
    "flush",
    "get_logger",
    "instrument",
    "log_api_call",
    "log_business_event",
    "log_database_query",
    "log_external_service_call",
    "reset_logging",
]

MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 10
FLUSH_INTERVAL_S = 0.5
BUFFER_BYTES = 64 * 1024
#: Longest database query text kept in a log line.
MAX_QUERY_CHARS = 1000
_PIPE_BUF = 4096  # writes up to this size to a pipe are atomic (POSIX)
_DEVELOPMENT = ("development", "dev", "local")
_INFO = logging.INFO
_WARNING = logging.WARNING

_log = logging.getLogger("wsgi_observe")
_access_log = logging.getLogger("wsgi_observe.access")
_api_log = logging.getLogger("wsgi_observe.api")
_db_log = logging.getLogger("wsgi_observe.db")
_external_log = logging.getLogger("wsgi_observe.external")
_business_log = logging.getLogger("wsgi_observe.business")

# The request being served by this thread or task: its WSGI environ (fields are read lazily,
# only when a line is written). Set by the request wrapper, cleared by the finish hook.
_request: ContextVar[Optional[dict[str, Any]]] = ContextVar("wsgi_observe_request", default=None)
_EMPTY: Mapping[str, Any] = {}
_fields: ContextVar[Mapping[str, Any]] = ContextVar("wsgi_observe_log_fields", default=_EMPTY)
_BLOCK_KEY = "wsgi_observe.log_request"
_ID_KEY = "wsgi_observe.request_id"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
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
_DUMP_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_ACCESS_OPTIONS = orjson.OPT_APPEND_NEWLINE


# Request context and ids ----------------------------------------------------------------


def _reseed_request_ids() -> None:
    """A fresh random prefix per process (after a fork too), so ids never repeat across workers."""
    global _id_prefix, _id_batches
    _id_prefix = os.urandom(6).hex() + "-"
    _id_batches = itertools.count()
    _ids.clear()  # ids formatted with the parent's prefix must not be used here


# Request ids are "<12 random hex digits>-<counter in hex>", pre-formatted 256 at a time:
# one f-string per request costs more than a list.pop().
_ids: list[str] = []
_id_prefix = ""
_id_batches = itertools.count()
_reseed_request_ids()


def _take_id() -> str:
    while True:
        try:
            return _ids.pop()
        except IndexError:
            start = next(_id_batches) * 256
            prefix = _id_prefix
            _ids.extend([f"{prefix}{number:x}" for number in range(start + 256, start, -1)])


_is_sane_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


def new_request_id() -> str:
    """A request id unique across processes: a random per-process prefix and a counter."""
    return _take_id()


def current_request_id() -> Optional[str]:
    """The id of the request this thread is serving, or None outside a request."""
    environ = _request.get()
    if environ is None:
        return None
    value = environ.get(_ID_KEY)
    return value if isinstance(value, str) else None


def _request_block(environ: Mapping[str, Any]) -> dict[str, Any]:
    """The ``request`` block of a log line (built once per request, kept in the environ)."""
    block = environ.get(_BLOCK_KEY)
    if block is not None:
        return block  # type: ignore[no-any-return]
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not path.isascii():
        path = _wsgi_text(path)
    query = environ.get("QUERY_STRING")
    if query:
        path = f"{path}?{redact_query(query if query.isascii() else _wsgi_text(query))}"
    agent = environ.get("HTTP_USER_AGENT")
    if agent is not None and len(agent) > 512:
        agent = agent[:512]
    block = {
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": path,
        "remote_addr": environ.get("REMOTE_ADDR"),
        "user_agent": agent,
    }
    try:
        environ[_BLOCK_KEY] = block  # type: ignore[index]
    except TypeError:  # pragma: no cover - a read-only mapping
        pass
    return block


def _wsgi_text(text: str) -> str:
    """WSGI hands URL bytes over as latin-1 text; show them as the UTF-8 they usually are."""
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeError:
        return text


class LogContext:
    """Add fields to every log line written inside a ``with`` block (this thread or task only).

    Parameters: ``logger`` (accepted for the guide's call shape; the fields apply to every
    logger) and the fields as keywords. Blocks nest; leaving one restores the fields before.
    Example::

        with LogContext(logger, customer_id="12345", operation="create_lead"):
            logger.info("Processing lead")  # the line carries customer_id and operation

    Reads: nothing from the environment.
    """

    __slots__ = ("_tokens", "fields", "logger")

    def __init__(self, logger: Any = None, /, **fields: Any) -> None:
        self.logger = logger
        self.fields = fields
        self._tokens: list[Token[Mapping[str, Any]]] = []

    def __enter__(self) -> LogContext:
        current = _fields.get()
        self._tokens.append(
            _fields.set({**current, **self.fields} if current else dict(self.fields))
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        _fields.reset(self._tokens.pop())


# Turning records into JSON --------------------------------------------------------------


def _default(value: Any) -> Any:
    """orjson's fallback: anything JSON can't hold becomes a string (never an exception)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset)):
        return list(value)
    return _safe_str(value)


def _safe_str(value: Any) -> str:
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
        return _plain(_safe_str(value), 1)
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:
            return _plain(_safe_str(value), 1)
        return {_plain_key(key): _plain(item, depth - 1) for key, item in items}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [_plain(item, depth - 1) for item in value]
    return _plain(_default(value), depth - 1)


def _plain_key(key: Any) -> str:
    return (
        key.encode("utf-8", "replace").decode("utf-8") if isinstance(key, str) else _safe_str(key)
    )


def _dumps_line(event: dict[str, Any]) -> bytes:
    """One JSON line for ``event``; falls back to ever plainer versions, never raises."""
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
            f"{_safe_str(record.msg)} (log arguments could not be formatted: "
            f"{type(error).__name__})"
        )


def _scrub(key: str, value: Any) -> Any:
    """A field value with secrets removed: secret-named text fields, and secrets in text."""
    if isinstance(value, str):
        return REDACTED if is_secret_name(key) else redact_text(value)
    if isinstance(value, (Mapping, list, tuple)):
        try:
            return redact_value({key: value})[key]
        except Exception:
            return _safe_str(value)
    if isinstance(value, (bytes, bytearray)) and is_secret_name(key):
        return REDACTED
    return value


def _merge(event: dict[str, Any], fields: Mapping[Any, Any]) -> None:
    """Add user fields; one named like a core field (or one already set to something else)
    is kept as ``name_``; one repeating a value already there is dropped."""
    for key, value in fields.items():
        if not isinstance(key, str):
            key = _safe_str(key)
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
    name = getattr(kind, "__qualname__", _safe_str(kind))
    module = getattr(kind, "__module__", "builtins")
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    try:
        text = "".join(traceback.format_exception(kind, error, tb))
    except Exception:  # pragma: no cover - traceback copes with broken __str__ itself
        text = f"{name}: <traceback unavailable>"
    return {
        "type": name,
        "message": redact_text(_safe_str(error)),
        "traceback": redact_text(text),
    }


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (the guide's fields), for any handler.

    Fields: ``timestamp`` (UTC, ms, ``Z``), ``level``, ``logger``, ``message``, ``module``,
    ``function``, ``line``; during a request ``request`` (method, path, remote_addr,
    user_agent) and ``request_id``; the ``LogContext`` fields; every ``extra=`` field; and
    ``exception`` (type, message, traceback) when there is one. Secrets are redacted.
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
        return self.serialize(record)[:-1].decode("utf-8")

    def serialize(self, record: logging.LogRecord) -> bytes:
        """The record as one JSON line (``bytes`` ending in ``\\n``); never raises."""
        last = self._last
        if last[0] is record:
            return last[1]
        try:
            line = _dumps_line(self.event(record))
        except Exception as error:  # pragma: no cover - event() guards every step
            line = _dumps_line(
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
        environ = _request.get()
        if environ is not None:
            event["request"] = _request_block(environ)
            request_id = environ.get(_ID_KEY)
            if request_id is not None:
                event["request_id"] = request_id
        context = _fields.get()
        if context:
            _merge(event, context)
        extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
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
        level = f"[{record.levelname}]"
        if self.color:
            level = f"{_COLORS.get(record.levelname, '')}{level}{_RESET}"
        line = f"{stamp} {level} {record.name}: {redact_text(_message(record))}"
        environ = _request.get()
        if environ is not None:
            block = _request_block(environ)
            line = f"{line} | {block['method']} {block['path']}"
        if record.exc_info and record.exc_info[0] is not None:
            line = f"{line}\n{redact_text(self.formatException(record.exc_info))}"
        elif record.exc_text:
            line = f"{line}\n{redact_text(record.exc_text)}"
        if record.stack_info:
            line = f"{line}\n{redact_text(self.formatStack(record.stack_info))}"
        return line


# Sinks: buffered, whole-line, multi-process-safe writers ----------------------------------
#
# A sink is one buffer of JSON lines written to one or more targets (the console stream and
# application.log share a sink: each line is queued once and written to both at a flush).

_sinks: set[_Sink] = set()
_sinks_lock = threading.Lock()
_flusher: Optional[threading.Thread] = None
_flusher_running = False
_flush_interval_s = FLUSH_INTERVAL_S
_flusher_wake = threading.Event()


class _Target:
    """Where a sink's bytes go; ``write`` gets whole lines only."""

    name = "?"
    reported_at = -1e9

    def write(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release what the target holds (it may still be written to afterwards)."""

    def report(self, error: BaseException) -> None:
        """Tell stderr, at most once a minute, that this target can't be written."""
        now = time.monotonic()
        if now - self.reported_at < 60:
            return
        self.reported_at = now
        try:
            sys.stderr.write(f"wsgi_observe: cannot write log lines to {self.name}: {error}\n")
        except Exception:
            pass


class _Sink:
    """Whole JSON lines, buffered (up to ``buffer_bytes``), each flush one ``write()`` per
    target. ``write`` only appends to a deque (atomic), so the hot path takes no lock."""

    def __init__(self, targets: list[_Target], buffer_bytes: int) -> None:
        self.targets = targets
        self.lines: deque[bytes] = deque()
        self.pending = 0
        self.limit = buffer_bytes
        self.lock = threading.RLock()
        self.flushing = 0  # the thread inside flush(), so a line logged by a target waits
        self.closed = False
        with _sinks_lock:
            _sinks.add(self)

    def write(self, line: bytes, urgent: bool = False) -> None:
        self.lines.append(line)
        self.pending += len(line)
        if urgent or self.pending >= self.limit or self.closed:
            self.flush()
        elif not _flusher_running:
            _start_flusher()

    def flush(self) -> None:
        lines = self.lines
        if not lines:
            return
        me = threading.get_ident()
        if self.flushing == me:
            return  # a target logged while writing (stderr redirected to logging): later
        with self.lock:
            count = len(lines)
            if not count:
                return
            self.pending = 0
            pop = lines.popleft
            data = b"".join([pop() for _ in range(count)])
            self.flushing = me
            try:
                for target in self.targets:
                    try:
                        target.write(data)
                    except Exception as error:  # logging never raises: report and go on
                        target.report(error)
            finally:
                self.flushing = 0

    def close(self) -> None:
        self.flush()
        self.closed = True  # later writes are flushed at once (a file is reopened for them)
        with _sinks_lock:
            _sinks.discard(self)
        with self.lock:
            for target in self.targets:
                target.close()


class _StreamTarget(_Target):
    """A text or binary stream (stderr, a pipe): lines kept whole, PIPE_BUF at a time."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.name = str(getattr(stream, "name", "the console"))
        # Only pipes and sockets need PIPE_BUF-sized writes to keep lines whole; a file or a
        # terminal takes a whole buffer in one write.
        self.chunked = True
        with contextlib.suppress(Exception):
            mode = os.fstat(stream.fileno()).st_mode
            self.chunked = not (statmod.S_ISREG(mode) or statmod.S_ISCHR(mode))

    def write(self, data: bytes) -> None:
        stream = self.stream
        pieces = _chunks(data) if self.chunked else (data,)
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            stream.flush()  # whatever was printed before goes first
            for piece in pieces:
                binary.write(piece)
                binary.flush()
        else:
            for piece in pieces:
                stream.write(piece.decode("utf-8", "replace"))
                stream.flush()


def _chunks(data: bytes) -> Iterator[bytes]:
    """``data`` cut at line ends into pieces of at most PIPE_BUF (longer lines go alone), so
    lines from several processes sharing a pipe never interleave."""
    size = len(data)
    start = 0
    while size - start > _PIPE_BUF:
        cut = data.rfind(b"\n", start, start + _PIPE_BUF)
        if cut < 0:
            cut = data.find(b"\n", start + _PIPE_BUF)
            if cut < 0:
                break
        yield data[start : cut + 1]
        start = cut + 1
    if start < size:
        yield data[start:]


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    """An exclusive ``flock`` across processes; a fresh descriptor each time, so a forked
    child never shares its parent's lock."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    while written < len(data):  # only on a full disk or a signal; keep what is left
        data = data[written:]
        written = os.write(fd, data)


class _FileTarget(_Target):
    """``path`` opened ``O_APPEND``, rotated at ``max_bytes`` keeping ``backup_count`` files.

    Safe with many processes on one file (see the module docstring): every write is whole
    lines in one ``write()``; before it, one ``stat`` tells whether another process rotated
    (new inode: reopen) or whether this write would pass ``max_bytes`` (rotate under the
    ``flock``, after looking again).
    """

    def __init__(self, path: str, max_bytes: int, backup_count: int) -> None:
        self.path = path
        self.name = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        directory, base = os.path.split(path)
        self.lock_path = os.path.join(directory, f".{base}.lock")
        self.fd = -1
        self.inode: tuple[int, int] = (0, 0)
        self.open()  # fails here, at configure time, when the directory is not writable

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        old, self.fd, self.inode = self.fd, fd, (st.st_dev, st.st_ino)
        if old >= 0:
            os.close(old)

    def write(self, data: bytes) -> None:
        reopened = self.fd < 0
        if reopened:
            self.open()  # written to after close(): reopen rather than lose the lines
        try:
            st: Optional[os.stat_result] = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self.inode:
            self.open()  # rotated by another process (or moved away): follow the name
            st = os.fstat(self.fd)
        if (
            self.max_bytes > 0
            and self.backup_count > 0
            and st.st_size > 0
            and st.st_size + len(data) > self.max_bytes
        ):
            self.rotate(len(data))
        _write_all(self.fd, data)
        if reopened:
            self.close()

    def rotate(self, incoming: int) -> None:
        with _flock(self.lock_path):
            # Under the lock, look again: another process may have rotated already.
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self.open()
                return
            if (st.st_dev, st.st_ino) != self.inode:
                self.open()
                st = os.fstat(self.fd)
            if st.st_size == 0 or st.st_size + incoming <= self.max_bytes:
                return
            for index in range(self.backup_count - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
            self.open()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _flush_loop() -> None:
    while True:
        _flusher_wake.wait(_flush_interval_s)
        _flusher_wake.clear()
        _resync_clock()
        with _sinks_lock:
            sinks = list(_sinks)
        for sink in sinks:
            try:
                sink.flush()
            except Exception:  # pragma: no cover - flush() reports its own errors
                pass


def _start_flusher() -> None:
    global _flusher, _flusher_running
    with _sinks_lock:
        if _flusher_running:
            return
        _flusher_running = True
        _flusher = threading.Thread(target=_flush_loop, name="wsgi_observe-log-flush", daemon=True)
        _flusher.start()


def flush() -> None:
    """Write every buffered line now (it happens anyway within ``flush_interval_s``)."""
    with _sinks_lock:
        sinks = list(_sinks)
    for sink in sinks:
        sink.flush()


def _after_fork_in_child() -> None:
    # The flusher thread and any lock held by another thread did not come along; lines that
    # were still queued belong to the parent, which writes them (never write them twice).
    global _flusher, _flusher_running
    global _sinks_lock
    _sinks_lock = threading.Lock()
    _flusher = None
    _flusher_running = False
    for sink in list(_sinks):
        sink.lock = threading.RLock()
        sink.flushing = 0
        sink.lines.clear()
        sink.pending = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=flush, after_in_child=_reseed_request_ids)
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Handlers --------------------------------------------------------------------------------


class _JsonHandler(logging.Handler):
    """JSON lines into a sink (file or stream); WARNING and above are written at once."""

    def __init__(self, sink: _Sink, formatter: JsonFormatter, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.sink = sink
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatter = self.formatter
            if isinstance(formatter, JsonFormatter):
                line = formatter.serialize(record)
            else:
                line = (self.format(record) + "\n").encode("utf-8", "replace")
            self.sink.write(line, record.levelno >= _WARNING)
        except RecursionError:  # pragma: no cover - as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            super().close()


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The guide's text line on a console."""


class _Setup:
    """What ``configure_logging`` installed, and how the access log reaches it directly."""

    def __init__(self, handlers: list[logging.Handler], config: Config) -> None:
        self.handlers = handlers
        self.config = config
        # The direct access-log write applies while the root logger has exactly these.
        self.root_handlers = list(handlers)
        # Sinks that take INFO lines (not errors.log); levels are those set at configure time.
        self.info_sinks = tuple(
            handler.sink
            for handler in handlers
            if isinstance(handler, _JsonHandler) and handler.level <= _INFO
        )
        self.text = tuple(handler for handler in handlers if not isinstance(handler, _JsonHandler))


_setup: Optional[_Setup] = None
_configure_lock = threading.Lock()


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:
        return False


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r}: expected a whole number at least {minimum}")
    return value


def configure_logging(
    level: Optional[str] = None,
    log_dir: Union[str, os.PathLike[str], None] = None,
    fmt: Optional[str] = None,
    *,
    config: Optional[Config] = None,
    stream: Any = None,
    max_bytes: int = MAX_BYTES,
    backup_count: int = BACKUP_COUNT,
    flush_interval_s: float = FLUSH_INTERVAL_S,
    buffer_bytes: int = BUFFER_BYTES,
) -> logging.Logger:
    """Set up the root logger: console, ``LOG_DIR/application.log`` and ``LOG_DIR/errors.log``.

    Parameters: ``level``, ``log_dir`` and ``fmt`` (``"json"``/``"console"``) override
    ``LOG_LEVEL``, ``LOG_DIR`` and ``LOG_FORMAT`` (via :meth:`Config.from_env`, or over
    ``config`` when given); ``log_dir=""`` turns the files off. ``stream`` is the console
    (default ``sys.stderr``). Files rotate at ``max_bytes`` keeping ``backup_count``
    backups; up to ``buffer_bytes`` of INFO/DEBUG lines wait at most ``flush_interval_s``.
    Calling it again replaces what the previous call installed. Returns the root logger.
    Example::

        configure_logging()                       # LOG_LEVEL, LOG_DIR, LOG_FORMAT
        configure_logging("DEBUG", log_dir="/var/log/crm", fmt="json")
        logger = get_logger(__name__)

    Reads: ``LOG_LEVEL``, ``LOG_DIR``, ``LOG_FORMAT``, ``SENTRY_ENVIRONMENT``. A bad value
    raises :class:`ConfigError` naming it; so does a ``LOG_DIR`` that can't be written.
    """
    global _setup, _flush_interval_s
    overrides: dict[str, Any] = {}
    if level is not None:
        overrides["log_level"] = level
    if log_dir is not None:
        overrides["log_dir"] = os.fspath(log_dir)
    if fmt is not None:
        overrides["log_format"] = fmt
    if config is None:
        config = Config.from_env(**overrides)
    elif overrides:
        config = config.replace(**overrides)
    _whole("max_bytes", max_bytes, 0)
    _whole("backup_count", backup_count, 0)
    _whole("buffer_bytes", buffer_bytes, 0)
    if not isinstance(flush_interval_s, (int, float)) or not flush_interval_s > 0:
        raise ConfigError(
            f"flush_interval_s={flush_interval_s!r}: expected a number greater than 0"
        )
    if stream is None:
        stream = sys.stderr
    tty = _is_tty(stream)
    chosen = config.log_format
    if chosen is None:
        chosen = (
            "console"
            if tty and config.environment in _DEVELOPMENT and not config.is_production
            else "json"
        )

    formatter = JsonFormatter()
    handlers: list[logging.Handler] = []
    targets: list[_Target] = []
    try:
        if chosen == "console":
            console = _ConsoleHandler(stream)
            console.setFormatter(ConsoleFormatter(color=tty))
            handlers.append(console)
        else:
            targets.append(_StreamTarget(stream))
        errors: Optional[_FileTarget] = None
        if config.log_dir:
            try:
                os.makedirs(config.log_dir, exist_ok=True)
                targets.append(
                    _FileTarget(
                        os.path.join(config.log_dir, "application.log"), max_bytes, backup_count
                    )
                )
                errors = _FileTarget(
                    os.path.join(config.log_dir, "errors.log"), max_bytes, backup_count
                )
            except OSError as error:
                reason = error.strerror or str(error)
                raise ConfigError(
                    f"LOG_DIR={config.log_dir!r}: cannot write log files there ({reason})"
                ) from None
        # The JSON console and application.log take the same lines: one handler, one buffer.
        if targets:
            handlers.append(_JsonHandler(_Sink(targets, buffer_bytes), formatter))
        if errors is not None:
            handlers.append(_JsonHandler(_Sink([errors], buffer_bytes), formatter, logging.ERROR))
    except BaseException:
        for handler in handlers:
            handler.close()
        for target in targets:
            target.close()
        raise

    root = logging.getLogger()
    with _configure_lock:
        previous = _setup
        if previous is not None:
            for handler in previous.handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(config.log_level)
        for handler in handlers:
            root.addHandler(handler)
        _flush_interval_s = float(flush_interval_s)
        _flusher_wake.set()  # let a running flusher pick up the new interval
        _setup = _Setup(handlers, config)
    _instrument_existing()
    return root


def reset_logging() -> None:
    """Remove and close what :func:`configure_logging` installed (tests, reconfiguration)."""
    global _setup
    root = logging.getLogger()
    with _configure_lock:
        previous, _setup = _setup, None
        if previous is not None:
            for handler in previous.handlers:
                root.removeHandler(handler)
                handler.close()


def get_logger(name: Optional[str] = None) -> logging.Logger:
    """The logger called ``name`` (``get_logger(__name__)``); its lines follow the setup of
    :func:`configure_logging`, ``extra=`` fields included."""
    return logging.getLogger(name)


# The guide's helpers --------------------------------------------------------------------


def _extra(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` safe as ``extra=``: names a LogRecord already has get a trailing ``_``."""
    return {(f"{key}_" if key in _RECORD_ATTRS else key): value for key, value in fields.items()}


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
    text = redact_sql(" ".join(_safe_str(query).split()))
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
    """Log a business event at INFO: ``event``, ``entity_id`` and ``data`` (secrets redacted)."""
    _business_log.info(
        "Business event: %s",
        event,
        extra={"event": event, "entity_id": entity_id, "data": dict(data) if data else {}},
        stacklevel=2,
    )


# Per-request instrumentation ------------------------------------------------------------

_status_codes: dict[Optional[str], int] = {None: 500}


def _status_code(status: Optional[str]) -> int:
    code = _status_codes.get(status)
    if code is None:
        text = status[:3] if status else ""
        code = int(text) if text.isdigit() else 500
        if len(_status_codes) < 256:
            _status_codes[status] = code
    return code


def _logged_path(environ: Mapping[str, Any]) -> str:
    """The path as the client asked for it, query string included and its secrets redacted."""
    block = environ.get(_BLOCK_KEY)
    if block is not None:
        return block["path"]  # type: ignore[no-any-return]
    path = environ.get("PATH_INFO", "")
    script = environ.get("SCRIPT_NAME")
    if script:
        path = script + path
    if not path.isascii():
        path = _wsgi_text(path)
    query = environ.get("QUERY_STRING")
    if query:
        path = f"{path}?{redact_query(query if query.isascii() else _wsgi_text(query))}"
    return path  # type: ignore[no-any-return]


# Wall-clock time of the access line from the exchange's own perf_counter_ns readings (no
# clock call per request); the flusher re-syncs the offset twice a second.
_clock_offset_ns = time.time_ns() - perf_counter_ns()
_stamp: tuple[int, str] = (-1, "")
_stamp_second: tuple[int, str] = (-1, "")


def _resync_clock() -> None:
    global _clock_offset_ns
    _clock_offset_ns = time.time_ns() - perf_counter_ns()


def _stamp_text(millis: int) -> str:
    """``2025-10-06T12:00:00.000Z`` for a count of milliseconds since the epoch (cached)."""
    global _stamp, _stamp_second
    second, rest = divmod(millis, 1000)
    cached = _stamp_second
    if cached[0] != second:
        cached = _stamp_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    text = f"{cached[1]}.{rest:03d}Z"
    _stamp = (millis, text)
    return text


def _access_fields(exchange: Any, name: str, duration_ns: int) -> dict[str, Any]:
    """The access line's own fields (both paths write the same ones)."""
    environ = exchange.environ
    path = _logged_path(environ)
    agent = environ.get("HTTP_USER_AGENT")
    if agent is not None and len(agent) > 512:
        agent = agent[:512]
    return {
        "method": environ.get("REQUEST_METHOD", "GET"),
        "endpoint": name,
        "path": path,
        "status": _status_code(exchange.status),
        "duration_ms": duration_ns // 1000 / 1000,
        "bytes": _body_bytes(exchange),
        "request_id": environ.get(_ID_KEY),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "user_agent": agent,
    }


def _body_bytes(exchange: Any) -> int:
    """Bytes of the response body. An exchange holding a list body is that list: summing it
    here skips ``body_bytes()``'s AttributeError path (about 0.6 µs a request)."""
    if isinstance(exchange, list) and exchange:
        return sum(map(len, exchange))
    return exchange.body_bytes()  # type: ignore[no-any-return]


def _access_record(
    handlers: tuple[logging.Handler, ...], exchange: Any, name: str, duration_ns: int
) -> None:
    """The access line as a record, for the text console (development only)."""
    fields = _access_fields(exchange, name, duration_ns)
    message = f"{fields['method']} {fields['path']} {exchange.status or 500}"
    record = _access_log.makeRecord(
        "wsgi_observe.access", _INFO, __file__, 0, message, (), None, "access", fields
    )
    for handler in handlers:
        if handler.level <= _INFO:
            handler.handle(record)


def _access_logged(exchange: Any, name: str, duration_ns: int) -> None:
    """The access line through ``logging`` (handlers we don't know are installed)."""
    fields = _access_fields(exchange, name, duration_ns)
    _access_log.info(
        "%s %s %s", fields["method"], fields["path"], exchange.status or 500, extra=fields
    )


def _log_exception(exchange: Any, error: BaseException, name: str, duration_ns: int) -> None:
    block = _request_block(exchange.environ)
    _log.error(
        "Unhandled exception on %s %s",
        block["method"],
        block["path"],
        exc_info=(type(error), error, error.__traceback__),
        extra={
            "endpoint": name,
            "status": _status_code(exchange.status),
            "duration_ms": duration_ns // 1000 / 1000,
        },
    )


def _finish_hook(access_log: bool) -> Callable[[Any, str, int], None]:
    """The per-request finish hook: exception line, access line, end of the request context.

    The access line is the hot path. While the root logger holds exactly the handlers
    ``configure_logging`` installed, it is built here as a dict, serialised once with orjson
    and appended to those handlers' sinks (the same buffers, files and rotation as every
    other line): no LogRecord, no formatter. Otherwise it goes through ``logging``.
    """
    root = logging.getLogger()
    access = _access_log
    parent = _log
    clear = _request.set
    dumps = orjson.dumps
    option = _ACCESS_OPTIONS

    def finish(exchange: Any, name: str, duration_ns: int) -> None:
        try:
            if exchange.failed:
                error = exchange.exception()
                if isinstance(error, Exception):  # not SystemExit, KeyboardInterrupt
                    _log_exception(exchange, error, name, duration_ns)
            if not access_log or not access.isEnabledFor(_INFO):
                return
            setup = _setup
            if (
                setup is None
                or root.handlers != setup.root_handlers
                or access.handlers
                or parent.handlers
                or not access.propagate
                or not parent.propagate
                or access.filters
                or parent.filters
                or root.filters
            ):
                _access_logged(exchange, name, duration_ns)
                return
            # _access_fields() and _Sink.write(), inlined: this runs once per request.
            environ = exchange.environ
            status = exchange.status
            code = _status_codes.get(status)
            if code is None:
                code = _status_code(status)
            path = environ.get("PATH_INFO", "")
            if environ.get("QUERY_STRING") or environ.get("SCRIPT_NAME") or not path.isascii():
                path = _logged_path(environ)
            method = environ.get("REQUEST_METHOD", "GET")
            agent = environ.get("HTTP_USER_AGENT")
            if agent is not None and len(agent) > 512:
                agent = agent[:512]
            millis = (exchange.started + duration_ns + _clock_offset_ns) // 1_000_000
            stamp = _stamp
            fields = {
                "timestamp": stamp[1] if stamp[0] == millis else _stamp_text(millis),
                "level": "INFO",
                "logger": "wsgi_observe.access",
                "message": f"{method} {path} {status or 500}",
                "method": method,
                "endpoint": name,
                "path": path,
                "status": code,
                "duration_ms": duration_ns // 1000 / 1000,
                "bytes": sum(map(len, exchange))
                if isinstance(exchange, list) and exchange
                else exchange.body_bytes(),
                "request_id": environ.get(_ID_KEY),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": agent,
            }
            try:
                line = dumps(fields, option=option)
            except Exception:  # a server put something odd in the environ
                line = _dumps_line(fields)
            size = len(line)
            for sink in setup.info_sinks:
                sink.lines.append(line)
                sink.pending += size
                if sink.pending >= sink.limit or sink.closed:
                    sink.flush()
            if not _flusher_running:
                _start_flusher()
            if setup.text:
                _access_record(setup.text, exchange, name, duration_ns)
        finally:
            clear(None)

    return finish


def _with_request_context(app: WSGIApplication) -> WSGIApplication:
    """``app`` wrapped: request id (``X-Request-ID`` in and out) and the logging context."""
    set_request = _request.set
    is_sane = _is_sane_id
    pop = _ids.pop

    def observed(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if request_id is None or is_sane(request_id) is None:
            try:
                request_id = pop()
            except IndexError:
                request_id = _take_id()
        environ[_ID_KEY] = request_id
        set_request(environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [*headers, ("X-Request-ID", request_id)]  # never mutate the app's list
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        return app(environ, start)

    observed.__wrapped__ = app  # type: ignore[attr-defined]
    return observed


def instrument(middleware: Any) -> None:
    """Hook request context, request ids and the access log into ``middleware``.

    Applies when ``middleware.config.access_log`` is on (the default) or once
    :func:`configure_logging` has been called (before or after the middleware was built).
    With neither, it costs nothing per request, and the middleware itself logs the app's
    exceptions through ``logging``.
    """
    if getattr(middleware, "_logs_instrumented", False):
        return
    if not middleware.config.access_log and _setup is None:
        return
    middleware._logs_instrumented = True
    middleware.logs_errors = True  # our finish hook logs the app's exceptions from now on
    middleware.app = _with_request_context(middleware.app)
    middleware.add_finish_hook(_finish_hook(bool(middleware.config.access_log)))


def _instrument_existing() -> None:
    """After configure_logging(): hook the middlewares that were built before it."""
    from . import workers

    for middleware in list(workers._middlewares):
        instrument(middleware)
