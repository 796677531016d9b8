"""The request context of log lines: request ids, the current request, ``LogContext`` fields.

A request is entered when it comes in and ended when it finishes; between the two, every log
line written by this thread (or task, or a context copied from it) carries the request's
``request`` block and ``request_id``. The block is built lazily, only when a line is
actually written, and kept in the environ.

The context variable holds the request's WSGI environ, and the request is current while the
environ's request id (``environ[ID_KEY]``) is set. Ending a request sets that id to None:
one store in a dict, where setting the variable back would cost a second context-variable
write per request (a new context mapping); the next request replaces the environ. A context
copied during a request (a thread started with ``copy_context()``, asgiref's
``async_to_sync``) holds the same environ, so its lines carry the request while it runs and
stop carrying it once it has ended.

Request ids are ``<12 random hex digits>-<counter in hex>``: a fresh random prefix per
process (re-drawn after a fork), so ids never repeat across workers. A caller's
``X-Request-ID`` is kept when it looks like an id (letters, digits and ``._:-``, at most
128 characters); anything else is replaced, so a client cannot inject text into log lines.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Optional

from .._wsgi import native_path
from ..redact import redact_query
from ..tracing import TRACE_KEY, TraceContext, current_child

if TYPE_CHECKING:
    from contextvars import Token

__all__ = [
    "ID_KEY",
    "LogContext",
    "current_request",
    "current_request_id",
    "current_trace",
    "enter_request",
    "leave_request",
    "new_request_id",
    "request_block",
    "trace_headers",
    "wsgi_text",
]

#: Where the request id of a request is kept in its environ.
ID_KEY = "wsgi_observe.request_id"
_BLOCK_KEY = "wsgi_observe.log_request"
_MAX_AGENT = 512


# The request being served by this thread or task (see the module's docstring).
_request: ContextVar[Optional[dict[str, Any]]] = ContextVar("wsgi_observe_request", default=None)
_EMPTY: Mapping[str, Any] = {}
_fields: ContextVar[Mapping[str, Any]] = ContextVar("wsgi_observe_log_fields", default=_EMPTY)

#: ``set`` of the request variable, bound once (the middleware calls it per request).
enter = _request.set
_current = _request.get
current_fields = _fields.get


def current_request() -> Optional[dict[str, Any]]:
    """The WSGI environ of the request this thread or task is serving, or None."""
    environ = _current()
    if environ is None or environ.get(ID_KEY) is None:
        return None
    return environ


def _reseed() -> None:
    """A fresh random prefix per process (after a fork too), so ids never repeat."""
    global _prefix, _batches
    _prefix = os.urandom(6).hex() + "-"
    _batches = itertools.count()
    _ids.clear()  # ids formatted with the parent's prefix must not be used here


# Pre-formatted 256 at a time: one f-string per request costs more than a list.pop().
_ids: list[str] = []
_prefix = ""
_batches = itertools.count()
_reseed()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


#: The next pre-formatted id, or IndexError when a batch must be formatted (the middleware
#: calls this first, and :func:`new_request_id` only then).
pop_request_id = _ids.pop


def new_request_id() -> str:
    """A request id unique across processes: a random per-process prefix and a counter."""
    while True:
        try:
            return _ids.pop()
        except IndexError:
            _ids.extend(_batch(next(_batches)))


# The last two hex digits of the ids of a batch, in the order pop() takes them last.
_LOW = tuple(f"{low:02x}" for low in range(255, 0, -1))  # "ff" ... "01"
_LOW_FIRST = tuple(f"{low:x}" for low in range(255, 0, -1))  # batch 0: "ff" ... "1"


def _batch(batch: int) -> list[str]:
    """The ids of numbers ``256 * batch + 256`` down to ``256 * batch + 1``, that is
    ``f"{prefix}{number:x}"`` each: one shared head plus two precomputed hex digits, made by
    one join and one split (in C) instead of formatting or concatenating every id."""
    head = f"{_prefix}{batch:x}" if batch else _prefix
    tails = ("\n" + head).join(_LOW if batch else _LOW_FIRST)
    return f"{_prefix}{batch + 1:x}00\n{head}{tails}".split("\n")


is_sane_id = re.compile(r"[A-Za-z0-9._:\-]{1,128}").fullmatch


def enter_request(environ: dict[str, Any]) -> str:
    """Start the request context of ``environ``; returns its request id (kept in the environ)."""
    request_id = environ.get("HTTP_X_REQUEST_ID")
    if request_id is None or is_sane_id(request_id) is None:
        request_id = new_request_id()
    environ[ID_KEY] = request_id
    _request.set(environ)
    return request_id


def leave_request() -> None:
    """End the request context of this thread or task."""
    _request.set(None)


def current_request_id() -> Optional[str]:
    """The id of the request this thread is serving, or None outside a request."""
    environ = _current()
    if environ is None:
        return None
    value = environ.get(ID_KEY)
    return value if isinstance(value, str) else None


def current_trace() -> Optional[TraceContext]:
    """The trace of the request this thread or task is serving (a W3C ``traceparent``
    came in, or a tracer is on), or None."""
    environ = current_request()
    if environ is None:
        return None
    trace = environ.get(TRACE_KEY)
    return trace if isinstance(trace, TraceContext) else None


def trace_headers() -> dict[str, str]:
    """``{"traceparent": ..., "tracestate": ...}`` to send with a call to another service
    made while serving a request that has a trace (``{}`` otherwise): the callee continues
    this trace, as a child of this request's span (or of the span of the function timed
    by ``performance_tracking`` that makes the call). Example::

        response = http.request("GET", billing_url, headers=trace_headers())
    """
    trace = current_trace()
    if trace is None:
        return {}
    out = {"traceparent": trace.traceparent(current_child())}
    if trace.tracestate:
        out["tracestate"] = trace.tracestate
    return out


def wsgi_text(text: str) -> str:
    """WSGI hands URL bytes over as latin-1 text; show them as the UTF-8 they usually are."""
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeError:
        # Not latin-1 (a server broke PEP 3333): keep it, minus lone surrogates.
        return text.encode("utf-8", "replace").decode("utf-8")


def logged_path(environ: Mapping[str, Any]) -> str:
    """The path as the client asked for it, query string included and its secrets redacted."""
    block = environ.get(_BLOCK_KEY)
    if block is not None:
        return block["path"]  # type: ignore[no-any-return]
    path = environ.get("PATH_INFO", "")
    script = environ.get("SCRIPT_NAME")
    query = environ.get("QUERY_STRING")
    if type(path) is not str or (script and type(script) is not str):
        # A server that broke PEP 3333 (bytes, None): as the native strings they should be.
        path, script = native_path(path), native_path(script)
    if script:
        path = script + path
    if not path.isascii():
        path = wsgi_text(path)
    if query:
        if type(query) is not str:
            query = native_path(query)
        path = f"{path}?{redact_query(query if query.isascii() else wsgi_text(query))}"
    return path  # type: ignore[no-any-return]


def user_agent(environ: Mapping[str, Any]) -> Optional[str]:
    agent = environ.get("HTTP_USER_AGENT")
    if agent is not None and len(agent) > _MAX_AGENT:
        agent = agent[:_MAX_AGENT]
    return agent


def request_block(environ: Mapping[str, Any]) -> dict[str, Any]:
    """The ``request`` block of a log line (built once per request, kept in the environ)."""
    block = environ.get(_BLOCK_KEY)
    if block is not None:
        return block  # type: ignore[no-any-return]
    block = {
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": logged_path(environ),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "user_agent": user_agent(environ),
    }
    try:
        environ[_BLOCK_KEY] = block  # type: ignore[index]
    except TypeError:  # pragma: no cover - a read-only mapping
        pass
    return block


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
