"""Endpoint names: route templates, not raw paths, and a cap on how many there are.

Order of preference for a request's name:

1. ``environ["wsgi_observe.endpoint"]``, set by an app or adapter;
2. the werkzeug/Flask rule that matched (``environ["werkzeug.request"].url_rule.rule``),
   so ``/api/leads/17`` and ``/api/leads/18`` are both ``/api/leads/<int:lead_id>``;
3. the path with numeric, uuid and long hex/token segments collapsed
   (``/api/leads/17`` -> ``/api/leads/<int>``).

A 404 with no template shares the bucket :data:`UNMATCHED`. Past ``max_endpoints``
distinct names, new names share :data:`OVERFLOW`. Both bounds keep memory flat whatever
paths clients send.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any, Optional, Protocol

from ._text import escape_control
from ._wsgi import native_path

__all__ = [
    "OVERFLOW",
    "UNMATCHED",
    "EndpointNames",
    "NameRegistry",
    "capture_route",
    "clean_name",
    "normalise_path",
]

UNMATCHED = "<unmatched>"
OVERFLOW = "<overflow>"
_MAX_NAME = 200
_NORMALISE_CACHE = 4096

_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
# Opaque tokens: long runs of letters and digits that contain at least one digit.
_TOKEN = re.compile(r"^(?=.*\d)[A-Za-z0-9_-]{20,}$")


def _segment(segment: str) -> str:
    if segment.isdigit():
        return "<int>"
    if _UUID.match(segment):
        return "<uuid>"
    if _HEX.match(segment):
        return "<hex>"
    if _TOKEN.match(segment):
        return "<token>"
    if len(segment) > 64:
        return "<long>"
    return segment


def normalise_path(path: str) -> str:
    """The path with ids collapsed, e.g. ``/api/leads/17/notes`` -> ``/api/leads/<int>/notes``."""
    if not path:
        return "/"
    name = "/".join(_segment(s) if s else s for s in path.split("/"))
    if len(name) > _MAX_NAME:
        name = name[:_MAX_NAME] + "..."
    return name


class NameRegistry(Protocol):
    """Names admitted by every process of a server (see ``multiprocess.names``)."""

    def admit(self, name: str) -> bool: ...


def clean_name(name: str) -> str:
    """``name`` safe to show anywhere: control characters escaped (``\\n``, ``\\x1b``) and
    lone surrogates (from a server that broke PEP 3333) replaced by U+FFFD, so JSON,
    Prometheus labels and log lines can always hold it."""
    return escape_control(name)


def capture_route(environ: MutableMapping[str, Any], request: Any) -> None:
    """Name the request after werkzeug's matched rule, unless an adapter named it already.

    Called while the app answers (from ``start_response``): Flask drops
    ``environ["werkzeug.request"]`` before the response is closed.
    """
    rule = getattr(request, "url_rule", None)
    text = getattr(rule, "rule", None)
    if isinstance(text, str) and "wsgi_observe.endpoint" not in environ:
        environ["wsgi_observe.endpoint"] = text


def _template(environ: MutableMapping[str, Any]) -> str | None:
    """The framework's route template for this request, if it has one."""
    request = environ.get("werkzeug.request")
    if request is not None:
        rule = getattr(request, "url_rule", None)
        if rule is not None:
            text = getattr(rule, "rule", None)
            if isinstance(text, str):
                return text
    return None


class EndpointNames:
    """Resolves a request's endpoint name and keeps at most ``max_endpoints`` of them.

    The per-request cost is a couple of dict lookups: normalised paths are cached (the
    cache is cleared when it fills, so a flood of distinct paths cannot grow it).
    """

    def __init__(self, max_endpoints: int) -> None:
        self.max_endpoints = max_endpoints
        self._known: set[str] = set()
        self._registry: Optional[NameRegistry] = None
        #: raw path -> admitted name, for paths the framework gave no template for.
        self.paths: dict[str, str] = {}

    def share(self, registry: Optional[NameRegistry]) -> None:
        """Admit new names through ``registry`` from now on: one cap for several processes
        (the names admitted so far are registered there too)."""
        self._registry = registry
        if registry is not None:
            for name in list(self._known):
                try:
                    registry.admit(name)
                except (OSError, ValueError):
                    break

    def resolve(self, environ: MutableMapping[str, Any], status: str | None) -> str:
        """The endpoint name of a finished request whose status line is ``status``."""
        name = environ.get("wsgi_observe.endpoint")
        if name is None:
            name = _template(environ)
            if name is None:
                if type(status) is str and status.startswith("404"):
                    return UNMATCHED
                path = environ.get("PATH_INFO") or "/"
                if type(path) is not str:  # a server that broke PEP 3333 (bytes, say)
                    path = native_path(path) or "/"
                name = self.paths.get(path)
                if name is None:
                    name = self._admit(normalise_path(path))
                    if len(self.paths) >= _NORMALISE_CACHE:
                        self.paths.clear()
                    self.paths[path] = name
                return name
        elif not isinstance(name, str):
            name = str(name)
        if name in self._known:
            return name
        return self._admit(name)

    def _admit(self, name: str) -> str:
        if name in self._known:
            return name
        name = clean_name(name)
        if name in self._known:
            return name
        if len(name) > _MAX_NAME:
            name = name[:_MAX_NAME] + "..."
            if name in self._known:
                return name
        registry = self._registry
        if registry is not None:
            try:
                allowed = registry.admit(name)
            except (OSError, ValueError):  # the shared list failed: our own cap holds
                allowed = len(self._known) < self.max_endpoints
        else:
            allowed = len(self._known) < self.max_endpoints
        if not allowed:
            return OVERFLOW
        self._known.add(name)
        return name
