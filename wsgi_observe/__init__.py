"""wsgi_observe: production observability for any WSGI application.

Importing the package is cheap: it never imports sentry_sdk, gunicorn, opentelemetry or a
framework, and the names below are loaded on first use.

The layout: a flat core (``config``, ``middleware``, ``_wsgi``, ``endpoints``, ``health``,
``checks``, ``histograms``, ``metrics``, ``kpis``, ``kpidata``, ``redact``, ``system``,
``tracking``, ``tracing``, ``reporting``), and the layers in subpackages: ``logs/``,
``exposition/``, ``multiprocess/``, ``integrations/`` (Sentry, OpenTelemetry) and
``uptimerobot/``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from . import checks, kpis
    from .config import Config, ConfigError
    from .integrations.sentry import init_sentry
    from .logs import (
        LogContext,
        configure_logging,
        get_logger,
        log_api_call,
        log_business_event,
        log_database_query,
        log_external_service_call,
        trace_headers,
    )
    from .middleware import ObservabilityMiddleware, wrap
    from .tracking import performance_tracking
    from .uptimerobot import UptimeRobotClient, UptimeRobotError

__all__ = [
    "Config",
    "ConfigError",
    "LogContext",
    "ObservabilityMiddleware",
    "UptimeRobotClient",
    "UptimeRobotError",
    "__version__",
    "checks",
    "configure_logging",
    "get_logger",
    "init_sentry",
    "kpis",
    "log_api_call",
    "log_business_event",
    "log_database_query",
    "log_external_service_call",
    "performance_tracking",
    "trace_headers",
    "wrap",
]

_WHERE = {
    "Config": "config",
    "ConfigError": "config",
    "LogContext": "logs",
    "ObservabilityMiddleware": "middleware",
    "UptimeRobotClient": "uptimerobot",
    "UptimeRobotError": "uptimerobot",
    "checks": None,
    "configure_logging": "logs",
    "get_logger": "logs",
    "init_sentry": "integrations.sentry",
    "kpis": None,
    "log_api_call": "logs",
    "log_business_event": "logs",
    "log_database_query": "logs",
    "log_external_service_call": "logs",
    "performance_tracking": "tracking",
    "trace_headers": "logs",
    "wrap": "middleware",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'wsgi_observe' has no attribute {name!r}")
    module_name = _WHERE[name]
    if module_name is None:
        value: Any = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
