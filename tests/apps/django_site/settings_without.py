"""The test project without wsgi_observe's middleware (bad input: it was forgotten)."""

from __future__ import annotations

from .settings import *  # noqa: F403
from .settings import MIDDLEWARE

MIDDLEWARE = [entry for entry in MIDDLEWARE if not entry.startswith("wsgi_observe.")]
