"""Multi-worker state: per-worker slot files, merged on scrape.

In a single process nothing here is active and nothing is written.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .metrics import MetricsStore, Snapshot
    from .middleware import ObservabilityMiddleware

__all__ = ["attach", "snapshot"]

_middlewares: weakref.WeakSet[ObservabilityMiddleware] = weakref.WeakSet()


def attach(middleware: ObservabilityMiddleware) -> None:
    """Remember ``middleware`` so a gunicorn fork can move its store to shared state."""
    _middlewares.add(middleware)


def snapshot(store: MetricsStore) -> Snapshot:
    return store.snapshot()
