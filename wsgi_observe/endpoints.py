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
from typing import Any

__all__ = ["OVERFLOW", "UNMATCHED", "EndpointNames", "normalise_path"]

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
        #: raw path -> admitted name, for paths the framework gave no template for.
        self.paths: dict[str, str] = {}

    def resolve(self, environ: MutableMapping[str, Any], status: str | None) -> str:
        """The endpoint name of a finished request whose status line is ``status``."""
        name = environ.get("wsgi_observe.endpoint")
        if name is None:
            name = _template(environ)
            if name is None:
                if status is not None and status.startswith("404"):
                    return UNMATCHED
                path = environ.get("PATH_INFO") or "/"
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
        if len(name) > _MAX_NAME:
            name = name[:_MAX_NAME] + "..."
            if name in self._known:
                return name
        if len(self._known) >= self.max_endpoints:
            return OVERFLOW
        self._known.add(name)
        return name
