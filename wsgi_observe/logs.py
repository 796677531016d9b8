"""Structured logging (placeholder: being written)."""

from __future__ import annotations

from typing import Any


def instrument(middleware: Any) -> None:
    """Hook request context, request ids and the access log into ``middleware``."""
