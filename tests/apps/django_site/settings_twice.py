"""The test project with wsgi_observe's middleware listed twice (bad input), first and last."""

from __future__ import annotations

from .settings import *  # noqa: F403
from .settings import MIDDLEWARE

MIDDLEWARE = [*MIDDLEWARE, "wsgi_observe.django.RouteTemplateMiddleware"]
