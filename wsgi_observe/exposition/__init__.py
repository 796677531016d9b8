"""Snapshot -> bytes, in the format the scraper asked for.

- :mod:`.json`: the guide's JSON document (the default: curl, jq, browsers);
- :mod:`.prometheus`: Prometheus text 0.0.4 and OpenMetrics 1.0.0.

:func:`negotiate` picks one from ``?format=`` or the ``Accept`` header the way RFC 9110 and
Prometheus expect: media ranges are matched case-insensitively, the most specific range
gives each format its quality, ``q=0`` refuses a format, and ties go to JSON, then
OpenMetrics, then the text format (so ``*/*`` gets JSON, and Prometheus, which ranks
OpenMetrics first, gets OpenMetrics).
"""

from __future__ import annotations

from typing import Optional

from .json import json_document, render_json

__all__ = [
    "FORMATS",
    "JSON_TYPE",
    "OPENMETRICS_TYPE",
    "PROMETHEUS_TYPE",
    "json_document",
    "negotiate",
    "render_json",
]

JSON_TYPE = "application/json"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: What ``?format=`` accepts, and the aliases it knows.
FORMATS = ("json", "prometheus", "openmetrics")
_ALIASES = {"json": "json", "prometheus": "prometheus", "text": "prometheus", "prom": "prometheus"}
_ALIASES["openmetrics"] = "openmetrics"

# Each format's media type, in the server's order of preference for ties.
_MEDIA = (
    ("json", "application", "json"),
    ("openmetrics", "application", "openmetrics-text"),
    ("prometheus", "text", "plain"),
)
_MAX_ACCEPT = 4096


def _quality(params: list[str]) -> Optional[float]:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def negotiate(query_format: Optional[str], accept: str) -> Optional[str]:
    """``"json"``, ``"prometheus"`` or ``"openmetrics"``; None for an unknown ``?format=``.

    Without ``?format=``, the ``Accept`` header decides; a header that accepts none of them
    (or cannot be read) gets JSON, the guide's default.
    """
    if query_format:
        return _ALIASES.get(query_format.strip().lower())
    if not accept:
        return "json"
    # (specificity, quality) of the best-matching range for each format
    best: dict[str, tuple[int, float]] = {}
    for item in accept[:_MAX_ACCEPT].split(","):
        media, *params = item.split(";")
        kind, _, sub = media.strip().lower().partition("/")
        kind, sub = kind.strip(), sub.strip()
        if not kind or not sub:
            continue
        quality = _quality(params)
        if quality is None:
            continue
        for name, want_kind, want_sub in _MEDIA:
            if kind == want_kind and sub == want_sub:
                specificity = 2
            elif kind == want_kind and sub == "*":
                specificity = 1
            elif kind == "*" and sub == "*":
                specificity = 0
            else:
                continue
            found = best.get(name)
            if found is None or specificity > found[0]:
                best[name] = (specificity, quality)
    chosen = "json"
    top = 0.0
    for name, _kind, _sub in _MEDIA:  # in the order of preference: ties keep the first
        found = best.get(name)
        if found is not None and found[1] > top:
            chosen, top = name, found[1]
    return chosen
