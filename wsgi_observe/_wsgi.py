"""PEP 3333 details of wrapping one request: the start_response shim and the body wrapper.

One :class:`Exchange` object per request is both: its bound ``start_response`` records the
status (which may arrive lazily, inside the first ``next()``), and it is the iterable the
server receives, so ``close()`` is where a request ends: it calls its owner's ``finish()``
exactly once. It is a class, not a generator: a generator wrapper using ``yield from``
closes the app's iterable twice when a client disconnects.

- A list or tuple body (the common case) is iterated by the server at C speed: ``__iter__``
  hands out the list's own iterator, and ``__len__`` is kept so servers that set
  Content-Length for one-item bodies (wsgiref, waitress) still do.
- A framework response whose body is already in memory (werkzeug/Flask's ``ClosingIterator``
  over a response that is not streamed, Django's ``HttpResponse``) is served the same way:
  its chunks, exactly the bytes its iteration would yield, go into the exchange, and the
  exchange's ``close()`` calls the response's ``close()`` once before the request ends.
  Such a body cannot fail mid-stream, so nothing is lost by not stepping through it; which
  types qualify is decided once per type (:func:`_adopter`), the checks that depend on the
  response (not streamed, bytes only, not started) per request.
- A ``wsgi.file_wrapper`` body is re-wrapped in a *new instance of that class* around a file
  proxy whose ``close()`` finishes the exchange, because gunicorn decides on sendfile by an
  ``isinstance`` check. The file sits at ``.filelike`` in gunicorn and wsgiref, but at
  ``.file`` in werkzeug's own wrapper; with neither, the body passes through as a stream.
- Anything else (a generator, a streamed response) is iterated through a generator that
  notes an exception mid-stream and counts the bytes; it never closes the app's iterable
  (a plain ``for``, not ``yield from``): only ``close()`` does, once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from itertools import product
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Optional, Protocol

_ENDPOINT_KEY = "wsgi_observe.endpoint"
#: Every spelling of X-Request-ID that ``str.lower()`` makes "x-request-id" (its ten letters
#: in either case; no other character lowers to one of them): one set lookup per response
#: header instead of a len() and a lower().
_REQUEST_ID_NAMES = frozenset(map("".join, product(*({c, c.upper()} for c in "x-request-id"))))

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from ._types import StartResponse, WSGIEnvironment

__all__ = ["Exchange", "Finisher", "native_path"]


def native_path(value: object) -> str:
    """A ``PATH_INFO`` that is not a ``str`` (a server that broke PEP 3333), as the native
    string it should have been: bytes decoded as latin-1 (as PEP 3333 would have), a ``str``
    subclass made a ``str``, anything else (None, a number) the empty path. Called only
    after a type check or a failed str method: where the exclusion check raised, when a new
    path is named, and by ``logs.context.logged_path`` (once per request that logs)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")
    return ""


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
        "inner",
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
        inner: Any  # an adopted body (its chunks are the exchange's): closed by close()
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
        exchange.inner = None
        exchange.started = perf_counter_ns()
        return exchange

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        environ = self.environ
        request = environ.get("werkzeug.request")
        if request is not None and _ENDPOINT_KEY not in environ:
            # Flask drops environ["werkzeug.request"] before close(); the matched rule is
            # only visible now, while the app answers. (capture_route(), inlined.)
            try:
                rule = request.url_rule  # None when no rule matched (a 404)
                if rule is not None:
                    rule = rule.rule
                    if type(rule) is str:
                        environ[_ENDPOINT_KEY] = rule
            except AttributeError:  # not Flask's request (werkzeug's own has no url_rule)
                pass
        request_id = self.request_id
        if request_id is not None:
            # X-Request-ID, unless the app sent one (its own is kept).
            try:
                for name, _value in headers:
                    if name in _REQUEST_ID_NAMES:
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
        return self.wrap_other(body, kind)

    def wrap_other(self, body: Iterable[bytes], kind: type) -> Iterable[bytes]:
        """:meth:`wrap` for a body of type ``kind`` that is neither a list nor a tuple."""
        try:
            adopt = _ADOPTERS[kind]
        except KeyError:
            adopt = _adopter(kind)
        if adopt is not None:
            try:
                chunks = adopt(body)
            except Exception:  # not the shape we know (or a framework changed): stream it
                chunks = None
            if chunks is not None:
                self.extend(chunks)
                self.inner = body
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
        # A list body has no close() of its own: only the exchange ends here; an adopted
        # body (``inner``) is closed first, once. ``owner`` is cleared once finished, which
        # is what makes close() idempotent.
        owner = self.owner
        if owner is None:
            return
        self.owner = None
        inner = self.inner
        if inner is None:
            owner.finish(self)
            return
        try:
            inner.close()  # the app's close(), exactly once
        except BaseException as error:
            self.fail(error)
            raise
        finally:
            owner.finish(self)  # finish even if the app's close() raised

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
    """Any other body: iterated through :meth:`_chunks`, which notes a mid-stream error."""

    __slots__ = ("body", "chunks", "exchange")

    def __init__(self, exchange: Exchange, body: Iterable[bytes]) -> None:
        self.exchange = exchange
        self.body = body
        self.chunks: Optional[Iterator[bytes]] = None

    def __iter__(self) -> Iterator[bytes]:
        # A generator, resumed at C speed: no Python call per chunk, and its end is a
        # return, not a StopIteration raised through our frames. A plain ``for`` never
        # closes the app's iterable when the generator is dropped: close() does, once.
        chunks = self.chunks
        if chunks is None:
            chunks = self.chunks = self._chunks(self.exchange, iter(self.body))
        return chunks

    @staticmethod
    def _chunks(exchange: Exchange, iterator: Iterator[bytes]) -> Iterator[bytes]:
        try:
            for chunk in iterator:
                try:
                    exchange.nbytes += len(chunk)
                except TypeError:
                    pass  # not bytes: the server will refuse it
                yield chunk
        except GeneratorExit:
            raise  # the server dropped our iterator: not the app's failure
        except BaseException as error:
            exchange.fail(error)
            raise

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


# Bodies that are already in memory ---------------------------------------------------------

#: body type -> a function giving its chunks (None when it must be streamed), decided once
#: per type; bounded, so a flood of generated types cannot grow it.
_Adopt = Callable[[Any], Optional["Sequence[bytes]"]]
_ADOPTERS: dict[type, Optional[_Adopt]] = {}
_MAX_ADOPTERS = 256


def _adopter(kind: type) -> Optional[_Adopt]:
    """How to take the chunks of a ``kind`` body without iterating it, or None. Only the
    framework types whose iteration we know are adopted, and only if the framework is
    loaded already (this never imports one)."""
    adopt: Optional[_Adopt] = None
    module = getattr(kind, "__module__", "")
    if module == "werkzeug.wsgi" and kind.__name__ == "ClosingIterator":
        adopt = _werkzeug_adopter(kind)
    elif isinstance(module, str) and module.startswith("django.") and "django.http" in sys.modules:
        adopt = _django_adopter(kind)
    if len(_ADOPTERS) < _MAX_ADOPTERS:
        _ADOPTERS[kind] = adopt
    return adopt


def _werkzeug_adopter(kind: type) -> Optional[_Adopt]:
    """werkzeug's ``ClosingIterator`` around ``Response.iter_encoded()``: for a response
    that is not streamed, the list of bytes that generator would yield one by one.

    ``Response.get_app_iter`` builds ``ClosingIterator(self.iter_encoded(), self.close)``,
    so its callbacks are ``[generator.close, response.close]`` (a HEAD, 204 or 304 iterates
    ``()`` instead and has one callback: streamed). ``iter_encoded`` yields the items of
    ``response.response`` one by one, bytes as they are."""
    try:
        from werkzeug.wrappers import response as _response

        iter_encoded = _response.Response.iter_encoded
        code = _response._iter_encoded.__code__
        if kind is not sys.modules["werkzeug.wsgi"].ClosingIterator:
            return None
    except (ImportError, AttributeError, KeyError):
        return None

    def adopt(body: Any) -> Optional[Sequence[bytes]]:
        # Raises (AttributeError, ValueError) on anything else: the caller streams it then.
        close_generator, close_response = body._callbacks
        generator = close_generator.__self__
        if (
            generator.gi_code is not code  # not iter_encoded()'s generator
            or generator.gi_suspended  # started: some chunks were taken already
            or generator.gi_frame is None  # finished
        ):
            return None
        response = close_response.__self__
        if type(response).iter_encoded is not iter_encoded:
            return None  # a response class that encodes its own way
        data: Any = response.response
        if type(data) is not list and type(data) is not tuple:
            return None  # streamed: a generator or another iterable
        for chunk in data:
            if type(chunk) is not bytes:
                return None  # str (encoded while iterated) or worse
        return data

    return adopt


def _django_adopter(kind: type) -> Optional[_Adopt]:
    """Django's ``HttpResponse`` (not a streaming one): its ``__iter__`` is
    ``iter(self._container)``, a list of bytes."""
    try:
        from django.http import HttpResponse
    except ImportError:
        return None
    if not isinstance(kind, type) or not issubclass(kind, HttpResponse):
        return None
    if getattr(kind, "__iter__", None) is not HttpResponse.__iter__ or getattr(
        kind, "streaming", True
    ):
        return None

    def adopt(body: Any) -> Optional[Sequence[bytes]]:
        if body.streaming:
            return None
        data: Any = body._container
        if type(data) is not list:
            return None
        for chunk in data:
            if type(chunk) is not bytes:
                return None
        return data

    return adopt
