"""WSGI type aliases (only imported under TYPE_CHECKING)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

if sys.version_info >= (3, 11):
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
else:  # pragma: no cover
    WSGIEnvironment = dict[str, Any]
    StartResponse = Callable[..., Callable[[bytes], object]]
    WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]

__all__ = ["StartResponse", "WSGIApplication", "WSGIEnvironment"]
