"""PEP 3333 details of wrapping one request: the start_response shim and the body wrapper.

One :class:`Exchange` object per request is both: its bound ``start_response`` records the
status (which may arrive lazily, inside the first ``next()``), and it is the iterable the
server receives, so ``close()`` is where a request ends and is recorded. It is a class, not
a generator: a generator wrapper using ``yield from`` closes the app's iterable twice when a
client disconnects.

- A list or tuple body (the common case) is iterated by the server at C speed: ``__iter__``
  hands out the list's own iterator, and ``__len__`` is kept so servers that set
  Content-Length for one-item bodies (wsgiref, waitress) still do.
- A ``wsgi.file_wrapper`` body is re-wrapped in a *new instance of that class* around a file
  proxy whose ``close()`` finishes the exchange, because gunicorn decides on sendfile by an
  ``isinstance`` check.
- Anything else is iterated through ``__next__``, which notes an exception mid-stream.
"""

from __future__ import annotations

import logging
import sys
import threading
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Callable, Optional

from .histograms import MAX_US

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._types import StartResponse, WSGIEnvironment

__all__ = ["Exchange", "guarded", "record"]

_new_list = list.__new__
_PATH_CACHE = 4096

_log = logging.getLogger("wsgi_observe")

#: Called with every exception the runtime guard swallows (tests re-raise them).
guard_hooks: list[Callable[[BaseException], None]] = []


def guarded(where: str, error: BaseException) -> None:
    """Log (never raise) an error in our own bookkeeping, so it never breaks the app."""
    try:
        _log.error("wsgi_observe internal error in %s: %r", where, error)
        for hook in guard_hooks:
            hook(error)
    except Exception:  # pragma: no cover - logging itself failed; nothing left to do
        pass


class Exchange(list):  # type: ignore[type-arg]
    """One request in flight: the start_response shim and, for a list body, the body itself.

    It subclasses ``list`` so that the common case, an app returning a list or tuple, is
    handed to the server as a list: iteration and ``len()`` run at C speed (wsgiref and
    waitress size one-item bodies with ``len``), and only ``close()`` is ours. Any other
    body is wrapped by :class:`_StreamBody` or re-wrapped as the server's file wrapper.
    ``record(exchange, owner)`` runs exactly once when the request ends; ``owner`` (the
    middleware) is then cleared, which makes every ``close()`` after the first a no-op.
    """

    __slots__ = (
        "environ",
        "error",
        "failed",
        "nbytes",
        "owner",
        "started",
        "status",
        "upstream",
    )

    if TYPE_CHECKING:
        owner: Any
        environ: WSGIEnvironment
        upstream: StartResponse
        status: Optional[str]
        failed: bool
        error: BaseException
        started: int
        nbytes: int

    @classmethod
    def begin(cls, owner: Any, environ: WSGIEnvironment, start_response: StartResponse) -> Exchange:
        """A new exchange, timed from now (the middleware inlines this on its hot path)."""
        exchange = _new_list(cls)
        exchange.owner = owner
        exchange.environ = environ
        exchange.upstream = start_response
        exchange.status = None
        exchange.failed = False
        exchange.started = perf_counter_ns()
        return exchange

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        request = self.environ.get("werkzeug.request")
        if request is not None:
            # Flask drops environ["werkzeug.request"] before close(); the matched rule is
            # only visible now, while the app answers.
            _capture_route(self.environ, request)
        if exc_info is None:
            return self.upstream(status, headers)
        return self.upstream(status, headers, exc_info)

    def wrap(self, body: Iterable[bytes]) -> Iterable[bytes]:
        """What to hand to the server in place of the app's ``body``."""
        kind = type(body)
        if kind is list or kind is tuple:
            self.extend(body)
            return self
        self.nbytes = 0
        file_wrapper = self.environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(file_wrapper, type):
            try:
                is_file = isinstance(body, file_wrapper)
            except Exception:
                is_file = False
            if is_file:
                rewrapped: Optional[Iterable[bytes]] = _rewrap_file(body, file_wrapper, self)
                if rewrapped is not None:
                    return rewrapped
        return _StreamBody(self, body)

    def close(self) -> None:
        # A list body has no close() of its own: only the exchange ends here. ``owner`` is
        # cleared once recorded, which is what makes close() idempotent.
        owner = self.owner
        if owner is None:
            return
        self.owner = None
        record(self, owner)

    def body_bytes(self) -> int:
        """Bytes of the response body (sent so far, for a streamed one)."""
        if self:  # a list body: the exchange holds its chunks
            return sum(map(len, self))
        return getattr(self, "nbytes", 0)

    def exception(self) -> Optional[BaseException]:
        """The exception that ended this request, if one did (set only on failure)."""
        return getattr(self, "error", None)

    # A list compares by value; an exchange is one request: compare and hash by identity.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]


class _StreamBody:
    """Any body but a list: iterated through ``__next__``, which notes a mid-stream error."""

    __slots__ = ("body", "exchange", "iterator")

    def __init__(self, exchange: Exchange, body: Iterable[bytes]) -> None:
        self.exchange = exchange
        self.body = body
        self.iterator: Optional[Iterator[bytes]] = None

    def __iter__(self) -> Iterator[bytes]:
        if self.iterator is None:
            self.iterator = iter(self.body)
        return self

    def __next__(self) -> bytes:
        iterator = self.iterator
        if iterator is None:
            iterator = self.iterator = iter(self.body)
        try:
            chunk = next(iterator)
        except StopIteration:
            raise
        except BaseException as error:
            self.exchange.failed = True
            self.exchange.error = error
            raise
        self.exchange.nbytes += len(chunk)
        return chunk

    def close(self) -> None:
        _close_and_record(self.exchange, self.body)


def _close_and_record(exchange: Exchange, inner: Any) -> None:
    """Close ``inner`` (the app's iterable or file) once, then record the exchange."""
    owner = exchange.owner
    if owner is None:
        return  # already ended: close() after close() does nothing
    exchange.owner = None
    try:
        inner_close = getattr(inner, "close", None)
        if inner_close is not None:
            inner_close()  # the app's close(), exactly once
    except BaseException as error:
        exchange.failed = True
        exchange.error = error
        raise
    finally:
        record(exchange, owner)  # record even if the app's close() raised


def _capture_route(environ: WSGIEnvironment, request: Any) -> None:
    """Name the request after werkzeug's matched rule, unless an adapter named it already."""
    rule = getattr(request, "url_rule", None)
    text = getattr(rule, "rule", None)
    if isinstance(text, str) and "wsgi_observe.endpoint" not in environ:
        environ["wsgi_observe.endpoint"] = text


def _series_for(owner: Any, store: Any, environ: WSGIEnvironment, status: Optional[str]) -> Any:
    """The slow path of ``record``: name the request, find or make its series, cache it."""
    name = owner.names.resolve(environ, status)
    series = store.endpoints.get(name)
    if series is None:
        series = store.new_series("ep", name)
    if (
        status is not None
        and status[0] != "4"
        and "wsgi_observe.endpoint" not in environ
        and "werkzeug.request" not in environ
    ):
        path = environ.get("PATH_INFO")
        if owner.names.paths.get(path) == name:  # only paths the name cache holds
            by_path = store.by_path
            if len(by_path) >= _PATH_CACHE:
                by_path.clear()
            by_path[path] = series
    return series


def record(exchange: Exchange, owner: Any) -> None:
    """Count one finished request: the per-request bookkeeping, once per exchange.

    Inlined on purpose (no helper calls on the common path): endpoint name from the path
    cache, then a handful of slot increments in the owner's metrics table. It never raises:
    an error in our bookkeeping is logged and swallowed so it cannot break the app.
    """
    try:
        duration_ns = perf_counter_ns() - exchange.started
        environ = exchange.environ
        status = exchange.status
        store = owner.store
        series = None
        named = environ.get("wsgi_observe.endpoint")
        if named is not None:
            series = store.endpoints.get(named)  # a name seen (and admitted) before
        elif status is not None and status[0] != "4":
            # A path seen before, not a 4xx, not named by the app. Only paths without a
            # framework template are ever cached (see _series_for).
            series = store.by_path.get(environ.get("PATH_INFO"))
        if series is None:
            series = _series_for(owner, store, environ, status)
        name = series.name
        method = environ.get("REQUEST_METHOD", "GET")
        label = method + status[0] if status else method + "5"
        slot = series.by.get(label)
        if slot is None:
            slot = store.new_count(series, label, method, status)
        values = store.values
        values[slot] += 1
        us = duration_ns // 1000
        if us > 255:  # histograms.bucket_index, inlined
            if us > MAX_US:
                us = MAX_US
            shift = us.bit_length() - 8
            index = (shift << 7) + (us >> shift)
        else:
            index = us if us > 0 else 0
        slot = series.hist.get(index)
        if slot is None:
            slot = store.new_bucket(series, index)
        values[slot] += 1
        values[series.sum] += duration_ns
        if exchange.failed or label[-1] == "5":
            values[series.errors] += 1
            if exchange.failed and not owner.logs_errors:
                owner.log_failure(exchange, name, duration_ns)
        values[store.inflight_slot] -= 1
        if duration_ns > owner.slow_ns:
            owner.slow(exchange, name, duration_ns)
        if owner.finish_hooks:
            for hook in owner.finish_hooks:
                hook(exchange, name, duration_ns)
    except Exception as error:
        guarded("request bookkeeping", error)


class _FileProxy:
    """Stands in for the file inside a ``wsgi.file_wrapper``; its close() ends the exchange."""

    def __init__(self, filelike: Any, exchange: Exchange) -> None:
        self._filelike = filelike
        self._exchange = exchange

    def __getattr__(self, name: str) -> Any:
        return getattr(self._filelike, name)

    def read(self, *args: Any) -> Any:
        data = self._filelike.read(*args)
        try:
            self._exchange.nbytes += len(data)
        except TypeError:
            pass
        return data

    def close(self) -> None:
        _close_and_record(self._exchange, self._filelike)


def _rewrap_file(body: Any, file_wrapper: type, exchange: Exchange) -> Any:
    """A new ``file_wrapper`` instance around a closing proxy of ``body``'s file, or None."""
    for attr, size_attr in (("filelike", "blksize"), ("file", "buffer_size")):
        filelike = getattr(body, attr, None)
        if filelike is None:
            continue
        size = getattr(body, size_attr, None)
        proxy = _FileProxy(filelike, exchange)
        try:
            return file_wrapper(proxy, size) if size is not None else file_wrapper(proxy)
        except Exception:
            return None
    return None


def _serialised(unlocked: Callable[[Exchange, Any], None]) -> Callable[[Exchange, Any], None]:
    lock = threading.Lock()

    def locked(exchange: Exchange, owner: Any) -> None:
        with lock:
            unlocked(exchange, owner)

    return locked


# record() updates slots with plain ``values[slot] += n``: under the GIL no thread switch can
# happen inside one of those statements (no Python-level call in it), so threaded workers
# need no lock there. A free-threaded build (PEP 703) has no such guarantee: serialise.
if not getattr(sys, "_is_gil_enabled", lambda: True)():  # pragma: no cover - 3.13t only
    record = _serialised(record)  # type: ignore[assignment]
