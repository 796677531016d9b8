"""The reporters of the request pipeline: the error and trace reporters, filled by integrations.

The middleware runs every observed request through whatever is installed here at the
moment the request arrives, and lets it finish once the request has ended. There are two
slots, one per kind, like the SDK clients they stand for:

- ``"traces"``: the OpenTelemetry reporter (:mod:`wsgi_observe.integrations.otel`), one
  SERVER span per request;
- ``"errors"``: the Sentry reporter (:func:`wsgi_observe.init_sentry`), errors and
  Sentry's own transactions.

They run in that fixed order, after the request context (request id, logging context and
trace context) and before the app: the OpenTelemetry span encloses Sentry's scope, so a
trace's sampling decision, made once by the first of them, is what Sentry sees too. The
two are composed into one reporter (:data:`current`) when one is installed or removed, so
the middleware reads one attribute per request; with none installed that is all it costs.
Installing before or after middlewares are built gives the same result, and no module
keeps a list of middlewares to patch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from ._types import StartResponse, WSGIApplication, WSGIEnvironment
    from ._wsgi import Exchange
    from .endpoints import EndpointNames

__all__ = ["KINDS", "Finisher", "Reporter", "current", "install", "installed", "uninstall"]

#: The slots, outermost first.
KINDS = ("traces", "errors")


class Finisher(Protocol):
    """A reporter's state for one request, kept in ``exchange.reporter``."""

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """The request has ended (called once, after the metrics were recorded)."""
        ...


class Reporter(Protocol):
    """Runs an observed request inside its own error-reporting or tracing scope."""

    def run(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        exchange: Exchange,
        names: EndpointNames,
    ) -> Iterable[bytes]:
        """Call ``app(environ, exchange.start_response)``; report an exception it raises (or
        one raised while its body is iterated), then let it propagate unchanged. May keep
        per-request state, a :class:`Finisher`, in ``exchange.reporter`` (set it before
        calling the app: an app that raises is finished at once)."""
        ...

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """Nothing is required here: requests finish through their own state."""
        ...


#: The reporter every middleware uses (read per request): the installed ones, composed.
current: Optional[Reporter] = None
_slots: dict[str, Reporter] = {}


def install(reporter: Reporter, kind: str = "errors") -> None:
    """Make ``reporter`` the ``kind`` reporter (``"traces"`` or ``"errors"``) of every
    middleware of this process from now on, replacing the one of that kind."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    _slots[kind] = reporter
    _compose()


def uninstall(reporter: Optional[Reporter] = None, kind: Optional[str] = None) -> None:
    """Remove ``reporter`` (wherever it is), or the one of ``kind``, or every reporter."""
    for slot, installed_one in list(_slots.items()):
        if reporter is not None and installed_one is not reporter:
            continue
        if kind is not None and slot != kind:
            continue
        del _slots[slot]
    _compose()


def installed(kind: str) -> Optional[Reporter]:
    """The reporter of ``kind``, if one is installed."""
    return _slots.get(kind)


def _compose() -> None:
    global current
    chosen = [_slots[kind] for kind in KINDS if kind in _slots]
    if not chosen:
        current = None
        return
    composed = chosen[-1]
    for outer in reversed(chosen[:-1]):
        composed = _Nested(outer, composed)
    current = composed


class _Nested:
    """``outer`` runs the request around ``inner``, which runs the app; both may keep
    per-request state, and both are finished (inner first, as it was entered last)."""

    __slots__ = ("inner", "outer")

    def __init__(self, outer: Reporter, inner: Reporter) -> None:
        self.outer = outer
        self.inner = inner

    def run(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        exchange: Exchange,
        names: EndpointNames,
    ) -> Iterable[bytes]:
        inner = self.inner

        def through_inner(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
            outer_state = exchange.reporter
            exchange.reporter = None
            try:
                return inner.run(app, environ, exchange, names)
            finally:
                inner_state = exchange.reporter
                if outer_state is not None:
                    exchange.reporter = (
                        outer_state if inner_state is None else _Both(inner_state, outer_state)
                    )

        return self.outer.run(through_inner, environ, exchange, names)

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """Nothing to do: each request finishes through its own state."""


class _Both:
    """Two reporters' states for one request: ``first`` finished, then ``second``."""

    __slots__ = ("first", "second")

    def __init__(self, first: Finisher, second: Finisher) -> None:
        self.first = first
        self.second = second

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        try:
            self.first.finish(exchange, name, duration_ns)
        finally:
            self.second.finish(exchange, name, duration_ns)
