"""Calling a WSGI app in-process, as a server would: the tests' one way to make a request.

The environ comes from ``wsgiref.util.setup_testing_defaults`` plus ``QUERY_STRING`` (the
validator warns without it); the app runs inside ``wsgiref.validate.validator`` unless told
otherwise; the body is joined and then closed, always.

Example::

    response = call(app, "/health/ready", headers={"Accept": "text/plain"})
    assert response.code == 200 and response.header("Content-Type") == "text/plain"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

__all__ = ["Response", "call", "environ_for", "run"]


@dataclass
class Response:
    """What the app answered: the status line, its headers in order, and the whole body."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status[:3])

    def header(self, name: str) -> Optional[str]:
        """The first header called ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def environ_for(
    path: str = "/",
    method: str = "GET",
    *,
    query: str = "",
    headers: Optional[Mapping[str, str]] = None,
    **extra: Any,
) -> dict[str, Any]:
    """A complete environ for ``method path?query`` with ``headers`` as ``HTTP_*`` keys."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    environ.update(extra)
    return environ


def run(app: Callable[..., Any], environ: dict[str, Any], *, validate: bool = True) -> Response:
    """Call ``app`` with ``environ`` (inside the validator), join the body, then close it."""
    seen: dict[str, Any] = {}
    written: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        seen["status"], seen["headers"] = status, headers
        return written.append

    body = (validator(app) if validate else app)(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return Response(seen["status"], list(seen["headers"]), b"".join(written) + data)


def call(
    app: Callable[..., Any],
    path: str = "/",
    method: str = "GET",
    *,
    query: str = "",
    headers: Optional[Mapping[str, str]] = None,
    validate: bool = True,
) -> Response:
    """One request: :func:`environ_for` then :func:`run`."""
    environ = environ_for(path, method, query=query, headers=headers)
    return run(app, environ, validate=validate)
