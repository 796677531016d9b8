"""One configuration object: keyword arguments over environment variables over defaults.

The environment is read only in :meth:`Config.from_env`, never at import time. Every value
is validated once, when the object is built; a bad value raises :class:`ConfigError` (a
``ValueError``) with one line that names the variable and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import SplitResult, urlsplit

__all__ = [
    "DEFAULT_PAGERDUTY_EVENTS_URL",
    "DEFAULT_UPTIMEROBOT_API_URL",
    "ENV_VARS",
    "UPTIMEROBOT_API_VERSIONS",
    "Config",
    "ConfigError",
    "check_log_dir",
]

#: The UptimeRobot API v2 root (``UPTIMEROBOT_API_URL`` points elsewhere, a local fake in tests).
DEFAULT_UPTIMEROBOT_API_URL = "https://api.uptimerobot.com/v2"
#: UptimeRobot API versions ``uptimerobot setup`` speaks; 3 is the default.
UPTIMEROBOT_API_VERSIONS = (2, 3)
#: PagerDuty's Events API v2 endpoint (``PAGERDUTY_EVENTS_URL``: the EU one, or a local fake).
DEFAULT_PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "console", "ecs")
#: OTEL_TRACES_SAMPLER values (the OpenTelemetry SDK's own names).
OTEL_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_DSN_RE = re.compile(r"^(https?)://[^@/\s]+@[^/\s]+/.*?\d+$")
# An Events API v2 integration key ("routing key") is 32 letters and digits.
_ROUTING_KEY_RE = re.compile(r"^[A-Za-z0-9]{32}$")


class ConfigError(ValueError):
    """A configuration value is not acceptable; the message is one line naming it."""


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false (1/0, yes/no, on/off)")


def _parse_float(name: str, raw: Any, *, minimum: float, maximum: float | None = None) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if (
        isinstance(raw, bool)
        or not math.isfinite(value)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{name}={raw!r}: expected a number at least {minimum:g}{upper}")
    return value


def _parse_int(name: str, raw: Any, *, minimum: int) -> int:
    problem = ConfigError(f"{name}={raw!r}: expected a whole number at least {minimum}")
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise problem
    try:
        value = int(raw.strip()) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError, OverflowError):
        raise problem from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: expected a whole number at least {minimum}")
    return value


def _parse_paths(name: str, raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    paths = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{name}={raw!r}: expected path prefixes starting with '/'")
        item = item.strip()
        if not item:
            continue
        if not item.startswith("/"):
            raise ConfigError(f"{name}={raw!r}: expected path prefixes starting with '/'")
        paths.append(item)
    return tuple(paths)


def is_valid_dsn(dsn: str) -> bool:
    """Whether ``dsn`` looks like a Sentry DSN: ``http(s)://key@host/project-id``."""
    return bool(_DSN_RE.match(dsn.strip()))


@dataclass(frozen=True)
class _Var:
    env: str
    parse: Callable[[str, Any], Any]
    doc: str


def _level(name: str, raw: Any) -> str:
    value = str(raw).strip().upper()
    if value not in LOG_LEVELS:
        raise ConfigError(f"{name}={raw!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _fmt(name: str, raw: Any) -> Optional[str]:
    if raw is None or str(raw).strip() == "":
        return None
    value = str(raw).strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"{name}={raw!r}: expected json, console or ecs")
    return value


def _text(name: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{name}={raw!r}: expected a non-empty string")
    return raw.strip()


def _opt_text(name: str, raw: Any) -> Optional[str]:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ConfigError(f"{name}={raw!r}: expected a string")
    return raw.strip() or None


def _dsn(name: str, raw: Any) -> Optional[str]:
    value = _opt_text(name, raw)
    if value is not None and not is_valid_dsn(value):
        # Never echo a DSN back: it carries the project's key.
        raise ConfigError(f"{name}: not a valid DSN; expected http(s)://<key>@<host>/<project-id>")
    return value


def _url(name: str, raw: Any) -> Optional[str]:
    """An http(s):// base URL: a host, a valid port, no credentials, no ?query or #fragment."""
    value = _opt_text(name, raw)
    if value is None:
        return None
    parts = _split(value)
    if parts is None:
        raise ConfigError(f"{name}: not a valid URL")  # unparsable: do not echo it
    if "@" in parts.netloc:
        # Do not echo it: the credentials are the problem.
        raise ConfigError(f"{name}: must not contain credentials (user:password@)")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not a valid URL (bad port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ConfigError(f"{name}={raw!r}: expected an http(s):// URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}={raw!r}: expected no ?query or #fragment")
    return value.rstrip("/")


def _split(value: str) -> Optional[SplitResult]:
    """``urlsplit(value)``, or None where it raises (``https://[::1`` is "Invalid IPv6 URL")."""
    try:
        return urlsplit(value)
    except ValueError:
        return None


def _email(name: str, raw: Any) -> Optional[str]:
    value = _opt_text(name, raw)
    if value is not None and ("@" not in value or " " in value):
        raise ConfigError(f"{name}={raw!r}: expected an e-mail address")
    return value


def _phone(name: str, raw: Any) -> Optional[str]:
    value = _opt_text(name, raw)
    if value is None:
        return None
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) < 6 or any(ch.isalpha() for ch in value):
        # Do not echo a phone number into logs.
        raise ConfigError(f"{name}: expected a phone number like +15551234567")
    return value


def _webhook(name: str, raw: Any) -> Optional[str]:
    value = _opt_text(name, raw)
    if value is None:
        return None
    parts = _split(value)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # Webhook URLs often embed a secret token: do not echo it.
        raise ConfigError(f"{name}: expected an http(s):// URL")
    return value


def _routing_key(name: str, raw: Any) -> Optional[str]:
    value = _opt_text(name, raw)
    if value is not None and not _ROUTING_KEY_RE.match(value):
        # Never echo it: a key with a typo is still most of a key.
        raise ConfigError(
            f"{name}: expected a PagerDuty Events API v2 integration key (32 letters and digits)"
        )
    return value


def _opt_bool(name: str, raw: Any) -> Optional[bool]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _bool(name, raw)


def _otlp_url(name: str, raw: Any) -> Optional[str]:
    """An OTLP/HTTP endpoint: an http(s):// URL with a host, a valid port, no credentials
    (they would be sent in clear in the URL: use OTEL_EXPORTER_OTLP_HEADERS)."""
    value = _opt_text(name, raw)
    if value is None:
        return None
    parts = _split(value)
    if parts is None or " " in value:
        raise ConfigError(f"{name}: not a valid URL")
    if "@" in parts.netloc:
        raise ConfigError(f"{name}: must not contain credentials; use OTEL_EXPORTER_OTLP_HEADERS")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: not a valid URL (bad port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={raw!r}: expected an http(s):// URL")
    return value


def _key_values(name: str, raw: Any, *, secret: bool = False) -> tuple[tuple[str, str], ...]:
    """``key1=value1,key2=value2`` (W3C Baggage style, values percent-decoded), as the
    OpenTelemetry variables write headers and resource attributes; or pairs already."""
    from urllib.parse import unquote

    shown = f"{name}: " if secret else f"{name}={raw!r}: "
    if isinstance(raw, Mapping):
        items: list[Any] = list(raw.items())
    elif isinstance(raw, str):
        items = [item.split("=", 1) for item in raw.split(",") if item.strip()]
    else:
        try:
            items = [tuple(item) for item in raw]
        except TypeError:
            raise ConfigError(f"{shown}expected key=value pairs separated by commas") from None
    pairs = []
    for item in items:
        if len(item) != 2 or not all(isinstance(part, str) for part in item):
            raise ConfigError(f"{shown}expected key=value pairs separated by commas")
        key, value = unquote(item[0].strip()), unquote(item[1].strip())
        if not key or any(ch in key for ch in "\r\n\x00") or any(ch in value for ch in "\r\n\x00"):
            raise ConfigError(f"{shown}expected key=value pairs separated by commas")
        pairs.append((key, value))
    return tuple(pairs)


def _headers(name: str, raw: Any) -> tuple[tuple[str, str], ...]:
    return _key_values(name, raw, secret=True)  # headers carry API keys: never echoed


def _sampler(name: str, raw: Any) -> Optional[str]:
    value = _opt_text(name, raw)
    if value is None:
        return None
    value = value.lower()
    if value not in OTEL_SAMPLERS:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(OTEL_SAMPLERS)}")
    return value


def _timeout_ms(name: str, raw: Any) -> Optional[float]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _positive(name, raw)


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    return _parse_bool(name, str(raw))


def _rate(name: str, raw: Any) -> Optional[float]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _parse_float(name, raw, minimum=0.0, maximum=1.0)


def _positive(name: str, raw: Any) -> float:
    try:
        value = _parse_float(name, raw, minimum=0.0)
    except ConfigError:
        value = 0.0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r}: expected a number greater than 0")
    return value


def _api_version(name: str, raw: Any) -> int:
    text = "" if isinstance(raw, bool) else str(raw).strip().lower()
    text = text[1:] if text.startswith("v") else text
    if text not in {str(v) for v in UPTIMEROBOT_API_VERSIONS}:
        raise ConfigError(f"{name}={raw!r}: expected 3 or 2 (or v3, v2)")
    return int(text)


def _duration(name: str, raw: Any, *, zero: bool) -> float:
    """Seconds of ``"15m"``, ``"10s"``, ``"1h"`` or a number of seconds."""
    from .windows import parse_window

    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw_text = repr(raw)
    else:
        raw_text = str(raw)
    if zero and re.fullmatch(r"0{1,9}(?:\.0{1,6})?[smh]?", raw_text.strip()):
        return 0.0  # any spelling of zero ("0", "0.00", "0m"): off
    try:
        return parse_window(raw_text)
    except ValueError:
        least = "0 or more" if zero else "more than 0"
        raise ConfigError(
            f"{name}={raw!r}: expected a duration like 10s, 15m, 1h or seconds ({least})"
        ) from None


def _max_endpoints(name: str, raw: Any) -> int:
    return _parse_int(name, raw, minimum=1)


def _environment(name: str, raw: Any) -> str:
    return _text(name, raw).lower()


# field name -> (environment variable, parser, one-line doc). The README's table mirrors this.
ENV_VARS: Mapping[str, _Var] = {
    "service_name": _Var("WSGI_OBSERVE_SERVICE_NAME", _text, "Service name shown by /health"),
    "version": _Var("WSGI_OBSERVE_VERSION", _text, "Version shown by /health; Sentry release"),
    "environment": _Var(
        "SENTRY_ENVIRONMENT", _environment, "development, staging, production, ..."
    ),
    "log_level": _Var("LOG_LEVEL", _level, "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    "log_dir": _Var("LOG_DIR", _opt_text, "Directory for application.log and errors.log"),
    "log_format": _Var("LOG_FORMAT", _fmt, "json, console or ecs (default: auto)"),
    "access_log": _Var("WSGI_OBSERVE_ACCESS_LOG", _bool, "One INFO line per request"),
    "log_handlers": _Var(
        "WSGI_OBSERVE_LOG_HANDLERS",
        _bool,
        "Install our log handlers when wrapping (console, files)",
    ),
    "sentry_dsn": _Var("SENTRY_DSN", _dsn, "Sentry DSN; unset means Sentry is off"),
    "traces_sample_rate": _Var(
        "SENTRY_TRACES_SAMPLE_RATE", _rate, "0.0-1.0 (default 1.0 in development, else 0.1)"
    ),
    "slow_request_threshold": _Var(
        "WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", _positive, "Seconds before a WARNING"
    ),
    "metrics_token": _Var("WSGI_OBSERVE_METRICS_TOKEN", _opt_text, "Bearer token for /metrics"),
    "metrics_token_in_query": _Var(
        "WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY",
        _bool,
        "Also accept the token as ?token= on /metrics/dashboard (for a browser)",
    ),
    "state_dir": _Var(
        "WSGI_OBSERVE_STATE_DIR", _opt_text, "Multi-worker state directory (gunicorn)"
    ),
    "readiness_timeout": _Var(
        "WSGI_OBSERVE_READINESS_TIMEOUT", _positive, "Seconds each readiness check may take"
    ),
    "readiness_cache_ttl": _Var(
        "WSGI_OBSERVE_READINESS_CACHE_TTL",
        lambda n, r: _parse_float(n, r, minimum=0.0),
        "Seconds a readiness result is reused",
    ),
    "max_endpoints": _Var(
        "WSGI_OBSERVE_MAX_ENDPOINTS", _max_endpoints, "Distinct endpoint names kept"
    ),
    "exclude_paths": _Var(
        "WSGI_OBSERVE_EXCLUDE_PATHS", _parse_paths, "Comma-separated path prefixes not observed"
    ),
    "window_interval": _Var(
        "WSGI_OBSERVE_WINDOW_INTERVAL",
        lambda n, r: _duration(n, r, zero=False),
        "Seconds between the snapshots of recent windows (10s)",
    ),
    "window_span": _Var(
        "WSGI_OBSERVE_WINDOW_SPAN",
        lambda n, r: _duration(n, r, zero=True),
        "How long recent windows reach back (15m; 0 turns them off)",
    ),
    "uptimerobot_api_key": _Var("UPTIMEROBOT_API_KEY", _opt_text, "UptimeRobot main API key"),
    "app_base_url": _Var("APP_BASE_URL", _url, "Public base URL that UptimeRobot checks"),
    "uptimerobot_api_url": _Var(
        "UPTIMEROBOT_API_URL", _url, "UptimeRobot API root (default: the API version's)"
    ),
    "uptimerobot_prefix": _Var(
        "UPTIMEROBOT_PREFIX",
        _opt_text,
        "Put before monitor names (default: service name, else the host)",
    ),
    "uptimerobot_monitors_file": _Var(
        "UPTIMEROBOT_MONITORS_FILE", _opt_text, "JSON list of monitors replacing the defaults"
    ),
    "uptimerobot_alert_email": _Var(
        "UPTIMEROBOT_ALERT_EMAIL", _email, "E-mail alert contact to create and attach"
    ),
    "uptimerobot_alert_sms": _Var(
        "UPTIMEROBOT_ALERT_SMS", _phone, "SMS alert contact (+15551234567) to create and attach"
    ),
    "uptimerobot_alert_webhook": _Var(
        "UPTIMEROBOT_ALERT_WEBHOOK", _webhook, "Webhook alert contact to create and attach"
    ),
    "uptimerobot_api_version": _Var(
        "UPTIMEROBOT_API_VERSION", _api_version, "UptimeRobot API that setup speaks: 3 or 2"
    ),
    "uptimerobot_timeout": _Var(
        "UPTIMEROBOT_TIMEOUT",
        _positive,
        "Seconds one UptimeRobot API call may take, retries included",
    ),
    "pagerduty_routing_key": _Var(
        "PAGERDUTY_ROUTING_KEY",
        _routing_key,
        "PagerDuty Events API v2 integration key: the in-process alerts page",
    ),
    "pagerduty_events_url": _Var("PAGERDUTY_EVENTS_URL", _url, "PagerDuty Events API v2 endpoint"),
    "otel": _Var(
        "WSGI_OBSERVE_OTEL",
        _opt_bool,
        "Trace with OpenTelemetry (default: on when an OTLP endpoint is set)",
    ),
    "otel_sdk_disabled": _Var("OTEL_SDK_DISABLED", _bool, "true turns OpenTelemetry off"),
    "otel_exporter_otlp_endpoint": _Var(
        "OTEL_EXPORTER_OTLP_ENDPOINT", _otlp_url, "OTLP/HTTP base URL (spans to /v1/traces)"
    ),
    "otel_exporter_otlp_traces_endpoint": _Var(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _otlp_url, "OTLP/HTTP URL for spans, used as is"
    ),
    "otel_exporter_otlp_headers": _Var(
        "OTEL_EXPORTER_OTLP_HEADERS", _headers, "key=value,... sent with every export"
    ),
    "otel_exporter_otlp_timeout": _Var(
        "OTEL_EXPORTER_OTLP_TIMEOUT", _timeout_ms, "Milliseconds one export may take"
    ),
    "otel_service_name": _Var("OTEL_SERVICE_NAME", _opt_text, "service.name of the spans"),
    "otel_resource_attributes": _Var(
        "OTEL_RESOURCE_ATTRIBUTES", _key_values, "key=value,... added to the spans' resource"
    ),
    "otel_traces_sampler": _Var(
        "OTEL_TRACES_SAMPLER", _sampler, "parentbased_traceidratio (default), always_on, ..."
    ),
    "otel_traces_sampler_arg": _Var(
        "OTEL_TRACES_SAMPLER_ARG", _rate, "The ratio of the *traceidratio samplers"
    ),
}

#: Fields whose values are secrets (or personal data): never shown by ``repr``.
_HIDDEN = frozenset(
    (
        "sentry_dsn",
        "metrics_token",
        "uptimerobot_api_key",
        "uptimerobot_alert_sms",
        "uptimerobot_alert_webhook",
        "pagerduty_routing_key",
        "otel_exporter_otlp_headers",
    )
)


#: Fields that must have a value (the others accept None, meaning "not set").
_REQUIRED = frozenset(
    (
        "service_name",
        "version",
        "environment",
        "log_level",
        "access_log",
        "log_handlers",
        "slow_request_threshold",
        "metrics_token_in_query",
        "readiness_timeout",
        "readiness_cache_ttl",
        "max_endpoints",
        "exclude_paths",
        "window_interval",
        "window_span",
        "uptimerobot_api_version",
        "uptimerobot_timeout",
        "pagerduty_events_url",
        "otel_sdk_disabled",
        "otel_exporter_otlp_headers",
        "otel_resource_attributes",
    )
)


@dataclass(frozen=True)
class Config:
    """Everything wsgi_observe can be told, validated once.

    Parameters are the fields below; each has an environment variable (see ``ENV_VARS``
    and the README's table). Keyword arguments win over the environment, which wins
    over the defaults. Example::

        cfg = Config.from_env(service_name="CRM API", slow_request_threshold=0.5)
        app = ObservabilityMiddleware(app, config=cfg)
        cfg.is_production  # False unless SENTRY_ENVIRONMENT=production

    Reads: every variable named in ``ENV_VARS``.
    """

    service_name: str = "wsgi-app"
    version: str = "0.0.0"
    environment: str = "development"
    log_level: str = "INFO"
    log_dir: Optional[str] = "logs"
    log_format: Optional[str] = None
    access_log: bool = True
    log_handlers: bool = True
    sentry_dsn: Optional[str] = None
    traces_sample_rate: Optional[float] = None
    slow_request_threshold: float = 1.0
    metrics_token: Optional[str] = None
    metrics_token_in_query: bool = False
    state_dir: Optional[str] = None
    readiness_timeout: float = 2.0
    readiness_cache_ttl: float = 1.0
    max_endpoints: int = 500
    exclude_paths: tuple[str, ...] = ()
    window_interval: float = 10.0
    window_span: float = 900.0
    uptimerobot_api_key: Optional[str] = field(default=None, repr=False)
    app_base_url: Optional[str] = None
    uptimerobot_api_url: Optional[str] = None
    uptimerobot_prefix: Optional[str] = None
    uptimerobot_monitors_file: Optional[str] = None
    uptimerobot_alert_email: Optional[str] = None
    uptimerobot_alert_sms: Optional[str] = field(default=None, repr=False)
    uptimerobot_alert_webhook: Optional[str] = field(default=None, repr=False)
    uptimerobot_api_version: int = 3
    uptimerobot_timeout: float = 60.0
    pagerduty_routing_key: Optional[str] = field(default=None, repr=False)
    pagerduty_events_url: str = DEFAULT_PAGERDUTY_EVENTS_URL
    otel: Optional[bool] = None
    otel_sdk_disabled: bool = False
    otel_exporter_otlp_endpoint: Optional[str] = None
    otel_exporter_otlp_traces_endpoint: Optional[str] = None
    otel_exporter_otlp_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    otel_exporter_otlp_timeout: Optional[float] = None
    otel_service_name: Optional[str] = None
    otel_resource_attributes: tuple[tuple[str, str], ...] = ()
    otel_traces_sampler: Optional[str] = None
    otel_traces_sampler_arg: Optional[float] = None

    def __post_init__(self) -> None:
        # Validate values given directly to the constructor the same way as env values.
        for name, var in ENV_VARS.items():
            raw = getattr(self, name)
            if raw is None:
                if name in _REQUIRED:
                    default = type(self).__dataclass_fields__[name].default
                    raise ConfigError(f"{name}=None: expected a value (default {default!r})")
                continue
            object.__setattr__(self, name, var.parse(name, raw))
        span, interval = self.window_span, self.window_interval
        if span and not interval <= span <= interval * 10_000:
            # Name both: either may be the one set (the default span with a tiny interval).
            raise ConfigError(
                f"WSGI_OBSERVE_WINDOW_SPAN={span:g}s with WSGI_OBSERVE_WINDOW_INTERVAL="
                f"{interval:g}s: expected a span of 0 (off) or from the interval to 10000 "
                "times it"
            )

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _HIDDEN and value:
                value = "<redacted>"
            shown.append(f"{f.name}={value!r}")
        return f"Config({', '.join(shown)})"

    @classmethod
    def from_env(
        cls,
        environ: Optional[Mapping[str, str]] = None,
        *,
        defaults: Optional[Mapping[str, Any]] = None,
        **overrides: Any,
    ) -> Config:
        """Build a Config from ``overrides`` over ``environ`` (default ``os.environ``) over
        ``defaults`` (field name -> value, for an application whose defaults differ from
        ours, like the demo's service name) over the built-in defaults."""
        env = os.environ if environ is None else environ
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((set(overrides) | set(defaults or ())) - known)
        if unknown:
            raise TypeError(f"unknown configuration option(s): {', '.join(unknown)}")
        values: dict[str, Any] = dict(defaults or {})  # validated by __post_init__
        for name, var in ENV_VARS.items():
            if name in overrides:
                continue
            raw = env.get(var.env)
            if raw is None:
                continue
            values[name] = var.parse(var.env, raw)
        for name, raw in overrides.items():
            if raw is None:
                values[name] = None
                continue
            known_var = ENV_VARS.get(name)
            values[name] = known_var.parse(name, raw) if known_var is not None else raw
        return cls(**values)

    def replace(self, **overrides: Any) -> Config:
        """A copy with some fields changed (validated like the constructor)."""
        return dataclasses.replace(self, **overrides)

    @property
    def is_production(self) -> bool:
        return self.environment in ("production", "prod")

    @property
    def is_otel_on(self) -> bool:
        """Whether wrapping starts OpenTelemetry tracing: ``otel`` when set, else whether
        an OTLP endpoint is configured; never with ``OTEL_SDK_DISABLED=true``."""
        if self.otel_sdk_disabled:
            return False
        if self.otel is not None:
            return self.otel
        return bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint)

    @property
    def otlp_traces_url(self) -> str:
        """Where spans go: the traces endpoint as is, else ``<endpoint>/v1/traces``, else
        the OpenTelemetry default ``http://localhost:4318/v1/traces``."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint or "http://localhost:4318"
        return f"{base.rstrip('/')}/v1/traces"

    @property
    def effective_traces_sample_rate(self) -> float:
        """The guide's default: 100% of transactions in development, 10% elsewhere."""
        if self.traces_sample_rate is not None:
            return self.traces_sample_rate
        return 1.0 if self.environment in ("development", "dev", "local") else 0.1


def check_log_dir(config: Config, *, owner: Optional[tuple[int, int]] = None) -> None:
    """Raise :class:`ConfigError` (one line) unless ``config.log_dir`` can take log files.

    Creates the directory if needed (given to ``owner``, a uid and gid, when it is made
    here), writes nothing else: a gunicorn master calls this before forking, so that a bad
    ``LOG_DIR`` stops the server once, not every worker.
    """
    path = config.log_dir
    if not path:
        return
    try:
        existed = os.path.isdir(path)
        os.makedirs(path, exist_ok=True)
        if owner is not None and not existed:
            os.chown(path, *owner)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"LOG_DIR={path!r}: cannot create it ({reason})") from None
    if not os.path.isdir(path):
        raise ConfigError(f"LOG_DIR={path!r}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"LOG_DIR={path!r}: directory is not writable")
