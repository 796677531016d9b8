"""PEP 3333 details of wrapping one request: the start_response shim and the body wrapper.

One :class:`Exchange` object per request is both: its bound ``start_response`` records the
status (which may arrive lazily, inside the first ``next()``), and it is the iterable the
server receives, so ``close()`` is where a request ends: it calls its owner's ``finish()``
exactly once. It is a class, not a generator: a generator wrapper using ``yield from``
closes the app's iterable twice when a client disconnects.

- A list or tuple body (the common case) is iterated by the server at C speed: ``__iter__``
  hands out the list's own iterator, and ``__len__`` is kept so servers that set
  Content-Length for one-item bodies (wsgiref, waitress) still do.
- A ``wsgi.file_wrapper`` body is re-wrapped in a *new instance of that class* around a file
  proxy whose ``close()`` finishes the exchange, because gunicorn decides on sendfile by an
  ``isinstance`` check. The file sits at ``.filelike`` in gunicorn and wsgiref, but at
  ``.file`` in werkzeug's own wrapper; with neither, the body passes through as a stream.
- Anything else is iterated through ``__next__``, which notes an exception mid-stream.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Optional, Protocol

from .endpoints import capture_route

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._types import StartResponse, WSGIEnvironment

__all__ = ["Exchange", "Finisher"]


class Finisher(Protocol):
    """What owns an exchange: told once, when the request has ended."""

    def finish(self, exchange: Exchange) -> None: ...


class Exchange(list):  # type: ignore[type-arg]
    """One request in flight: the start_response shim and, for a list body, the body itself.

    It subclasses ``list`` so that the common case, an app returning a list or tuple, is
    handed to the server as a list: iteration and ``len()`` run at C speed, and only
    ``close()`` is ours. Any other body is wrapped by :class:`_StreamBody` or re-wrapped as
    the server's file wrapper. ``owner.finish(exchange)`` runs exactly once when the request
    ends; ``owner`` is then cleared, which makes every ``close()`` after the first a no-op.

    ``request_id``, when set, is sent back as ``X-Request-ID`` unless the app sent its own.
    ``reporter`` is the per-request state of the error reporter (Sentry), if one ran.
    """

    __slots__ = (
        "environ",
        "error",
        "failed",
        "nbytes",
        "owner",
        "reporter",
        "request_id",
        "started",
        "status",
        "upstream",
    )

    if TYPE_CHECKING:
        owner: Optional[Finisher]
        environ: WSGIEnvironment
        upstream: StartResponse
        status: Any  # the app's status line: a str, unless the app broke PEP 3333
        failed: bool
        error: BaseException
        started: int
        nbytes: int
        request_id: Optional[str]
        reporter: Any

    @classmethod
    def begin(
        cls, owner: Finisher, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Exchange:
        """A new exchange, timed from now (the middleware inlines this on its hot path)."""
        exchange = cls()  # an empty list (cheaper than list.__new__(cls))
        exchange.owner = owner
        exchange.environ = environ
        exchange.upstream = start_response
        exchange.status = None
        exchange.failed = False
        exchange.request_id = None
        exchange.reporter = None
        exchange.started = perf_counter_ns()
        return exchange

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        environ = self.environ
        request = environ.get("werkzeug.request")
        if request is not None:
            # Flask drops environ["werkzeug.request"] before close(); the matched rule is
            # only visible now, while the app answers.
            capture_route(environ, request)
        request_id = self.request_id
        if request_id is not None:
            # X-Request-ID, unless the app sent one (its own is kept).
            try:
                for name, _value in headers:
                    if len(name) == 12 and name.lower() == "x-request-id":
                        break  # the app sent its own: kept
                else:
                    headers = [*headers, ("X-Request-ID", request_id)]  # never mutate the app's
            except (TypeError, ValueError, AttributeError):
                pass  # not a list of pairs: the server will say so, not us
        if exc_info is None:
            return self.upstream(status, headers)
        return self.upstream(status, headers, exc_info)

    def fail(self, error: BaseException) -> None:
        """Note that ``error`` ended (or broke) this request."""
        self.failed = True
        self.error = error

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
        # cleared once finished, which is what makes close() idempotent.
        owner = self.owner
        if owner is None:
            return
        self.owner = None
        owner.finish(self)

    def body_bytes(self) -> int:
        """Bytes of the response body (sent so far, for a streamed one)."""
        if self:  # a list body: the exchange holds its chunks
            try:
                return sum(map(len, self))
            except TypeError:  # not bytes (an app broke PEP 3333)
                return 0
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
            self.exchange.fail(error)
            raise
        try:
            self.exchange.nbytes += len(chunk)
        except TypeError:
            pass  # not bytes: the server will refuse it
        return chunk

    def close(self) -> None:
        _close_and_finish(self.exchange, self.body)


def _close_and_finish(exchange: Exchange, inner: Any) -> None:
    """Close ``inner`` (the app's iterable or file) once, then finish the exchange."""
    owner = exchange.owner
    if owner is None:
        return  # already ended: close() after close() does nothing
    exchange.owner = None
    try:
        inner_close = getattr(inner, "close", None)
        if inner_close is not None:
            inner_close()  # the app's close(), exactly once
    except BaseException as error:
        exchange.fail(error)
        raise
    finally:
        owner.finish(exchange)  # finish even if the app's close() raised


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
        _close_and_finish(self._exchange, self._filelike)


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
