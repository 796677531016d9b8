"""``@performance_tracking``: time any function into the same metrics as the requests.

Calls are counted and recorded into an HDR histogram per function name in the process-wide
metrics store, so they show up under ``functions`` in ``/metrics`` (and as
``wsgi_observe_function_duration_seconds`` in Prometheus). A call slower than the threshold
logs a WARNING like the guide's slow-request line. With a tracer on (OpenTelemetry), a call
made while a sampled request is served is a child span of that request's span, named like
the function (see :mod:`wsgi_observe.tracing`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, Optional, TypeVar, Union, overload

from . import tracing
from ._guard import guarded
from .metrics import MetricsStore, process_store

__all__ = ["performance_tracking"]

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("wsgi_observe.performance")


def _open_span(name: str) -> Optional[tuple[tracing.ChildSpans, Any]]:
    """A child span for one call, when a tracer is on and records the current span."""
    spans = tracing.child_spans
    if spans is None:
        return None
    try:
        handle = spans.start(name)
    except Exception as error:  # a tracer's problem never fails the call
        guarded("child span start", error)
        return None
    return None if handle is None else (spans, handle)


def _close_span(span: tuple[tracing.ChildSpans, Any], error: Optional[BaseException]) -> None:
    try:
        span[0].end(span[1], error)
    except Exception as failure:
        guarded("child span end", failure)


def _wrap(fn: F, name: str, slow_ns: int, store: Optional[MetricsStore]) -> F:
    target = store

    def finish(started: int, failed: bool) -> None:
        duration_ns = perf_counter_ns() - started
        (target or process_store()).record_call(name, duration_ns, failed)
        if duration_ns > slow_ns:
            _log.warning(
                "Slow operation detected: %s took %.2fs",
                name,
                duration_ns / 1e9,
                extra={"function": name, "duration_ms": round(duration_ns / 1e6, 3)},
            )

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            started = perf_counter_ns()
            span = _open_span(name) if tracing.child_spans is not None else None
            failed = True
            error: Optional[BaseException] = None
            try:
                result = await fn(*args, **kwargs)
                failed = False
                return result
            except BaseException as raised:
                error = raised
                raise
            finally:
                if span is not None:
                    _close_span(span, error)
                finish(started, failed)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter_ns()
        span = _open_span(name) if tracing.child_spans is not None else None
        failed = True
        error: Optional[BaseException] = None
        try:
            result = fn(*args, **kwargs)
            failed = False
            return result
        except BaseException as raised:
            error = raised
            raise
        finally:
            if span is not None:
                _close_span(span, error)
            finish(started, failed)

    return wrapper  # type: ignore[return-value]


@overload
def performance_tracking(fn: F) -> F: ...


@overload
def performance_tracking(
    fn: None = None,
    *,
    name: Optional[str] = None,
    slow_threshold: float = 1.0,
    store: Optional[MetricsStore] = None,
) -> Callable[[F], F]: ...


def performance_tracking(
    fn: Optional[F] = None,
    *,
    name: Optional[str] = None,
    slow_threshold: float = 1.0,
    store: Optional[MetricsStore] = None,
) -> Union[F, Callable[[F], F]]:
    """Time every call of the decorated function (sync or async).

    Use bare (``@performance_tracking``, named ``module.qualname``) or with options
    (``@performance_tracking(name="leads.list", slow_threshold=0.5)``). The wrapped
    function keeps its name, signature, docstring and return value; exceptions propagate
    unchanged and are counted as errors. Example::

        @performance_tracking
        def get_leads():
            return db.fetch_leads()
    """
    if slow_threshold <= 0:
        raise ValueError(f"slow_threshold={slow_threshold!r}: expected a number greater than 0")
    slow_ns = int(slow_threshold * 1e9)

    def decorate(target: F) -> F:
        label = name or f"{target.__module__}.{target.__qualname__}"
        return _wrap(target, label, slow_ns, store)

    if fn is not None:
        return decorate(fn)
    return decorate
