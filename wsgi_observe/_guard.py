"""The runtime guard: our own bookkeeping never breaks the app, and never floods the logs.

Every error in wsgi_observe's own work during a request (recording, the access line, the
error reporter) is caught and handed to :func:`guarded`, which writes at most one line a
second (and one per place a minute) on the ``wsgi_observe.internal`` logger, counting what
it left out. Sentry's logging integration is told to ignore that logger, so an internal
error can never turn into Sentry events (whose processing might fail again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["INTERNAL_LOGGER", "guard_hooks", "guarded"]

INTERNAL_LOGGER = "wsgi_observe.internal"
_log = logging.getLogger(INTERNAL_LOGGER)
_EVERY_S = 1.0
_PER_PLACE_S = 60.0

#: Called with every error the guard swallows (the test suite re-raises them).
guard_hooks: list[Callable[[BaseException], None]] = []

_lock = threading.Lock()
_last_line = -1e9
_last_by_place: dict[str, float] = {}
_left_out = 0


def _describe(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        text = ""
    text = " ".join(text.split())[:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def guarded(where: str, error: BaseException) -> None:
    """Report (never raise) an error in our own bookkeeping, so it never breaks the app."""
    global _last_line, _left_out
    try:
        for hook in guard_hooks:
            hook(error)
        now = time.monotonic()
        with _lock:
            last = _last_by_place.get(where)
            if now - _last_line < _EVERY_S or (last is not None and now - last < _PER_PLACE_S):
                _left_out += 1
                return
            _last_line = now
            if len(_last_by_place) > 256:
                _last_by_place.clear()
            _last_by_place[where] = now
            left_out, _left_out = _left_out, 0
        more = f" ({left_out} more internal errors were not logged)" if left_out else ""
        _log.error("wsgi_observe internal error in %s: %s%s", where, _describe(error), more)
    except Exception:  # pragma: no cover - logging itself failed; nothing left to do
        pass


def reset_rate_limit() -> None:
    """Forget what was logged (tests start each case with a fresh limit)."""
    global _last_line, _left_out
    with _lock:
        _last_line = -1e9
        _left_out = 0
        _last_by_place.clear()
