"""UTC ISO 8601 timestamps with milliseconds and ``Z``, cheap enough for every request."""

from __future__ import annotations

import time

__all__ = ["iso_utc"]

_time = time.time
# (millisecond, text) and (second, "YYYY-MM-DDTHH:MM:SS"), each one tuple so that threads
# never pair a stale half.
_last: tuple[int, str] = (-1, "")
_second: tuple[int, str] = (-1, "")


def iso_utc(now: float | None = None) -> str:
    """``2025-10-06T12:00:00.000Z`` for ``now`` (default: the current time)."""
    global _last, _second
    millis = int((_time() if now is None else now) * 1000)
    last = _last
    if last[0] == millis:
        return last[1]  # probes and log lines within one millisecond share the text
    second, rest = divmod(millis, 1000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    text = f"{cached[1]}.{rest:03d}Z"
    _last = (millis, text)
    return text
