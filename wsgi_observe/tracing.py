"""W3C trace context: the trace a request belongs to, and the headers that carry it on.

A request has a trace when a valid ``traceparent`` header came in (the caller's trace is
continued: same trace id and sampled flag, a new span id of ours whose parent is the
caller's), or when a tracer is on (Sentry, OpenTelemetry), which then starts a new trace.
A caller instrumented with Sentry alone sends ``sentry-trace`` instead, which continues
its trace the same way while a tracer is on. The trace is kept in the request's environ
(:data:`TRACE_KEY`), so every log line written during the request carries ``trace_id``,
``span_id`` and ``trace_flags``, the Sentry event and the OpenTelemetry span carry the
same ids, and :func:`wsgi_observe.trace_headers` gives what to send to the next service::

    import urllib3
    from wsgi_observe import trace_headers

    urllib3.request("GET", "http://billing/api/invoices", headers=trace_headers())

Parsing follows the W3C Trace Context recommendation to the letter: version ``00`` is
exactly ``00-<32 hex>-<16 hex>-<2 hex>``, lowercase, with non-zero ids and nothing after
the flags; a later version is read for its first four fields (and must separate anything
more with ``-``); version ``ff`` is invalid. An invalid header is ignored, as if it were
absent, and never fails a request. ``tracestate`` is kept only with a valid
``traceparent``, member by member, and bounded (at most 32 members and 512 characters; a
member that is malformed or longer than 128 characters is dropped first).

This module is part of the core: it imports no tracer and no log code (the request's
trace is found through the logging context, :mod:`wsgi_observe.logs.context`). A tracer
plugs in through :mod:`wsgi_observe.reporting` (the request) and
:func:`install_child_spans` (functions timed by ``performance_tracking``).
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from random import getrandbits
from typing import TYPE_CHECKING, Any, Optional, Protocol

from . import reporting

if TYPE_CHECKING:
    from contextvars import Token

    from ._types import WSGIEnvironment

__all__ = [
    "TRACE_KEY",
    "ChildSpans",
    "TraceContext",
    "begin",
    "current_child",
    "enter_child",
    "install_child_spans",
    "leave_child",
    "parse_sentry_trace",
    "parse_traceparent",
]

#: Where the trace of a request is kept in its environ.
TRACE_KEY = "wsgi_observe.trace"

#: Bounds on a kept ``tracestate`` (the W3C limits: 32 members; 512 characters is what
#: every vendor must propagate; longer members are the first to go).
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512
_MAX_MEMBER_CHARS = 128
# More than this is never read: a hostile megabyte of tracestate costs nothing.
_TRACESTATE_READ = 4096

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.S)
_SENTRY_TRACE = re.compile(r"([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# One list-member of tracestate: a key (simple, or tenant@system) = a value of printable
# ASCII without "," and "=", not ending in a space.
_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


class TraceContext:
    """The trace of one request: ids as lowercase hex, as W3C and the logs write them.

    ``trace_id`` (32 hex), ``span_id`` (16 hex: this request's span), ``parent_id`` (the
    caller's span, or None for a trace that started here), ``sampled`` (the caller's flag;
    for a new trace, what the first tracer decided; None while nobody decided, which
    reads as not sampled) and ``tracestate`` (the caller's, bounded, or None). A tracer
    may replace ``span_id`` by its own span's id before the app runs.
    """

    __slots__ = ("parent_id", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: Optional[str] = None,
        sampled: Optional[bool] = None,
        tracestate: Optional[str] = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.tracestate = tracestate

    @property
    def flags(self) -> str:
        """``"01"`` when sampled, else ``"00"`` (the log field ``trace_flags``)."""
        return "01" if self.sampled else "00"

    def traceparent(self, span_id: Optional[str] = None) -> str:
        """The ``traceparent`` to send downstream: version 00, this span (or ``span_id``)."""
        return f"00-{self.trace_id}-{span_id or self.span_id}-{self.flags}"

    def __repr__(self) -> str:
        return (
            f"TraceContext(trace_id={self.trace_id!r}, span_id={self.span_id!r}, "
            f"parent_id={self.parent_id!r}, sampled={self.sampled!r})"
        )


def new_trace_id() -> str:
    """32 random lowercase hex digits (never all zero)."""
    return f"{getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """16 random lowercase hex digits (never all zero)."""
    return f"{getrandbits(64) or 1:016x}"


def parse_traceparent(header: str, tracestate: Optional[str] = None) -> Optional[TraceContext]:
    """The caller's trace continued by a new span of ours, or None if ``header`` is not a
    valid W3C ``traceparent`` (see the module docstring for what is valid)."""
    if not isinstance(header, str):
        return None
    match = _TRACEPARENT.fullmatch(header.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(
        trace_id,
        new_span_id(),
        parent_id,
        bool(int(flags, 16) & 1),
        bound_tracestate(tracestate) if tracestate else None,
    )


def parse_sentry_trace(header: str) -> Optional[TraceContext]:
    """The trace of a Sentry caller's ``sentry-trace`` (``<trace>-<span>[-<0|1>]``),
    continued by a new span of ours; None if it is not one. Without the flag, the
    sampling decision is left to this service (``sampled`` None)."""
    if not isinstance(header, str):
        return None
    match = _SENTRY_TRACE.fullmatch(header.strip(" \t"))
    if match is None:
        return None
    trace_id, parent_id, flag = match.groups()
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, new_span_id(), parent_id, None if flag is None else flag == "1")


def bound_tracestate(raw: Any) -> Optional[str]:
    """``raw`` as a valid, bounded ``tracestate``, or None when nothing valid is left.

    Malformed members are dropped; so are the members past 32 and, while the whole is
    over 512 characters, the members over 128 characters and then the last ones."""
    if not isinstance(raw, str):
        return None
    cut = len(raw) > _TRACESTATE_READ
    pieces = raw[:_TRACESTATE_READ].split(",")
    if cut:
        pieces.pop()  # the member the cut went through
    members = []
    for piece in pieces:
        piece = piece.strip(" \t")
        if piece and _MEMBER.fullmatch(piece) is not None:
            members.append(piece)
    if not members:
        return None
    del members[MAX_TRACESTATE_MEMBERS:]
    text = ",".join(members)
    if len(text) > MAX_TRACESTATE_CHARS:
        members = [member for member in members if len(member) <= _MAX_MEMBER_CHARS]
        while members and len(text := ",".join(members)) > MAX_TRACESTATE_CHARS:
            members.pop()
        if not members:
            return None
    return text


def begin(environ: WSGIEnvironment) -> Optional[TraceContext]:
    """The trace of a request that has one (called by the middleware when a
    ``traceparent`` came in or a tracer is on): the caller's, continued, else a new one
    when a tracer is on. Kept in ``environ[TRACE_KEY]``; None when there is none."""
    trace = None
    header = environ.get("HTTP_TRACEPARENT")
    if header is not None:
        trace = parse_traceparent(header, environ.get("HTTP_TRACESTATE"))
    if trace is None:
        if reporting.current is None:
            return None  # an invalid traceparent, and nobody traces: no trace
        # A caller instrumented with Sentry alone sends only its own header.
        sentry_trace = environ.get("HTTP_SENTRY_TRACE")
        if sentry_trace is not None:
            trace = parse_sentry_trace(sentry_trace)
        if trace is None:
            trace = TraceContext(new_trace_id(), new_span_id())
    environ[TRACE_KEY] = trace
    return trace


# The span id of the innermost child span a tracer opened in this thread or task (a
# function timed by performance_tracking), which log lines and trace headers name instead
# of the request's span.
_child: ContextVar[Optional[str]] = ContextVar("wsgi_observe_child_span", default=None)
current_child = _child.get


def enter_child(span_id: str) -> Token[Optional[str]]:
    """A tracer opened a child span: lines and headers name it until :func:`leave_child`."""
    return _child.set(span_id)


def leave_child(token: Token[Optional[str]]) -> None:
    _child.reset(token)


class ChildSpans(Protocol):
    """A tracer's child spans for functions timed by ``performance_tracking``."""

    def start(self, name: str) -> Any:
        """Open a child span of the current one; return a handle, or None for no span."""
        ...

    def end(self, handle: Any, error: Optional[BaseException]) -> None:
        """Close the span ``start`` returned (``error``: the exception the call raised)."""
        ...


#: The installed child-span provider (read per timed call by ``performance_tracking``).
child_spans: Optional[ChildSpans] = None


def install_child_spans(provider: Optional[ChildSpans]) -> None:
    """Make ``provider`` open a span for every timed call (None: no spans)."""
    global child_spans
    child_spans = provider
