"""Snapshot -> bytes, in the format the scraper asked for.

- :mod:`.json`: the guide's JSON document (the default: curl, jq, browsers);
- :mod:`.prometheus`: Prometheus text 0.0.4 and OpenMetrics 1.0.0;
- :mod:`.protobuf`: Prometheus's protobuf format, with native histograms;
- :mod:`.families`: the families all of them carry, and their numbers.

:func:`negotiate` picks one from ``?format=`` or the ``Accept`` header the way RFC 9110 and
Prometheus expect: media ranges are matched case-insensitively, the most specific range
gives each format its quality, ``q=0`` refuses a format, and ties go to JSON, then
protobuf, then OpenMetrics, then the text format (so ``*/*`` gets JSON, and Prometheus,
which ranks OpenMetrics first, gets OpenMetrics).

Protobuf is chosen only by its full media type, as client_golang's ``expfmt.Negotiate``
reads it: ``application/vnd.google.protobuf`` with ``proto=io.prometheus.client.MetricFamily``
and ``encoding=delimited`` (other parameters are ignored; no wildcard means protobuf). A
protobuf range with another ``proto`` or ``encoding``, or refused with ``q=0``, is a
Prometheus client asking for something else: when nothing else in the header is
acceptable it gets the text format, as client_golang answers, rather than JSON.
"""

from __future__ import annotations

from typing import Optional

from .json import json_document, render_json

__all__ = [
    "FORMATS",
    "JSON_TYPE",
    "OPENMETRICS_TYPE",
    "PROMETHEUS_TYPE",
    "PROTOBUF_TYPE",
    "json_document",
    "negotiate",
    "render_json",
]

JSON_TYPE = "application/json"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: client_golang's ``FmtProtoDelim``: length-delimited ``MetricFamily`` messages.
PROTOBUF_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)
#: What ``?format=`` accepts, and the aliases it knows.
FORMATS = ("json", "prometheus", "openmetrics", "protobuf")
_ALIASES = {"json": "json", "prometheus": "prometheus", "text": "prometheus", "prom": "prometheus"}
_ALIASES.update(openmetrics="openmetrics", protobuf="protobuf", proto="protobuf")

# Each format's media type, in the server's order of preference for ties. Protobuf is
# matched by _is_metric_family instead: only its full type with parameters selects it.
_MEDIA = (
    ("json", "application", "json"),
    ("protobuf", "application", "vnd.google.protobuf"),
    ("openmetrics", "application", "openmetrics-text"),
    ("prometheus", "text", "plain"),
)
_PROTO_MESSAGE = "io.prometheus.client.MetricFamily"  # a protobuf name: case matters
_MAX_ACCEPT = 4096


def _parameters(params: list[str]) -> tuple[Optional[float], dict[str, str]]:
    """``(quality, other parameters)`` of one media range; quality None if unreadable."""
    quality: Optional[float] = 1.0
    found: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]  # RFC 9110: a quoted string is the same value as a token
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                return None, found
            quality = q if 0.0 <= q <= 1.0 else None
        elif name:
            found[name] = value
    return quality, found


def _is_metric_family(params: dict[str, str]) -> bool:
    """Length-delimited ``MetricFamily`` messages, the one protobuf encoding we write."""
    encoding = params.get("encoding", "").lower()
    return params.get("proto") == _PROTO_MESSAGE and encoding == "delimited"


def negotiate(query_format: Optional[str], accept: str) -> Optional[str]:
    """``"json"``, ``"prometheus"``, ``"openmetrics"`` or ``"protobuf"``; None for an unknown
    ``?format=``.

    Without ``?format=``, the ``Accept`` header decides; a header that accepts none of them
    (or cannot be read) gets JSON, the guide's default, unless it asked for protobuf
    (see the module's docstring).
    """
    if query_format:
        return _ALIASES.get(query_format.strip().lower())
    if not accept:
        return "json"
    # (specificity, quality) of the best-matching range for each format
    best: dict[str, tuple[int, float]] = {}
    asked_protobuf = False
    for item in accept[:_MAX_ACCEPT].split(","):
        media, *params = item.split(";")
        kind, _, sub = media.strip().lower().partition("/")
        kind, sub = kind.strip(), sub.strip()
        if not kind or not sub:
            continue
        quality, parameters = _parameters(params)
        if kind == "application" and sub == "vnd.google.protobuf":
            asked_protobuf = True
            if quality is not None and _is_metric_family(parameters):
                best.setdefault("protobuf", (3, quality))
            continue
        if quality is None:
            continue
        for name, want_kind, want_sub in _MEDIA:
            if name == "protobuf":
                continue
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
    chosen = "prometheus" if asked_protobuf else "json"
    top = 0.0
    for name, _kind, _sub in _MEDIA:  # in the order of preference: ties keep the first
        found = best.get(name)
        if found is not None and found[1] > top:
            chosen, top = name, found[1]
    return chosen
