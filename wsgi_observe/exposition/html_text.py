"""Formatting for the dashboard page: every value as escaped HTML text."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from .._text import escape_control

# Bidirectional controls (LRE, RLO, isolates, marks): a name holding one could reorder what
# the page shows after it ("Trojan Source"); they are shown as escapes like controls are.
_BIDI = {
    code: f"\\u{code:04x}"
    for code in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}


def _text(value: Any) -> str:
    """Any value as escaped HTML text (control and bidirectional characters shown as
    escapes)."""
    text = escape_control(value if isinstance(value, str) else str(value))
    if not text.isprintable():  # bidirectional controls are not
        text = text.translate(_BIDI)
    return escape(text, quote=True)


def _seconds(value: Any) -> str:
    """A duration in seconds, as people read one: ``840 µs``, ``12.3 ms``, ``1.52 s``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def _count(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    if isinstance(value, int) or value.is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _rate(count: Any, seconds: float) -> str:
    if not isinstance(count, (int, float)) or seconds <= 0:
        return "—"
    per_s = count / seconds
    if per_s == 0:
        return "0"
    return f"{per_s:.3g}" if per_s < 1000 else f"{per_s:,.0f}"


def _percent(rate: Any) -> str:
    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        return "—"
    return f"{rate * 100:.2f} %"


def _error_class(rate: Any) -> str:
    if not isinstance(rate, (int, float)) or rate <= 0:
        return ""
    return ' class="bad"' if rate > 0.05 else ' class="warn"'


def _uptime(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "—"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


_STATUS_CLASS = {"healthy": "ok", "degraded": "warn", "unhealthy": "bad"}


def _status(value: Any) -> str:
    text = _text(value)
    cls = _STATUS_CLASS.get(value) if isinstance(value, str) else None
    return f'<span class="badge {cls}">{text}</span>' if cls else text


def _label(key: Any) -> str:
    return _text(str(key).replace("_", " "))


def _value(value: Any) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        return _count(round(value, 2))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _count(value)
    return _text(value)
