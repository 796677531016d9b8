"""UTC ISO 8601 timestamps with milliseconds and ``Z``, cheap enough for every request."""

from __future__ import annotations

import time

__all__ = ["iso_utc", "iso_utc_bytes"]

_time = time.time
# (millisecond, text), (millisecond, bytes) and (second, "YYYY-MM-DDTHH:MM:SS"): each one
# tuple, so that threads never pair a stale half.
_last: tuple[int, str] = (-1, "")
_last_bytes: tuple[int, bytes] = (-1, b"")
_second: tuple[int, str] = (-1, "")


def _format(millis: int) -> str:
    global _second
    second, rest = divmod(millis, 1000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{rest:03d}Z"


def iso_utc(now: float | None = None) -> str:
    """``2025-10-06T12:00:00.000Z`` for ``now`` (default: the current time)."""
    global _last
    millis = int((_time() if now is None else now) * 1000)
    last = _last
    if last[0] == millis:
        return last[1]  # probes and log lines within one millisecond share the text
    text = _format(millis)
    _last = (millis, text)
    return text


def iso_utc_bytes() -> bytes:
    """The current time as :func:`iso_utc` gives it, as ASCII bytes (for the probes)."""
    global _last_bytes
    millis = int(_time() * 1000)
    last = _last_bytes
    if last[0] == millis:
        return last[1]
    text = _format(millis).encode()
    _last_bytes = (millis, text)
    return text
