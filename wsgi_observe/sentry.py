"""Sentry reporting (placeholder: being written)."""

from __future__ import annotations

from typing import Any


def instrument(middleware: Any) -> None:
    """Wrap ``middleware.app`` for Sentry when a Sentry client is active."""
