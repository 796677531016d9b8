"""Config: keyword arguments over environment variables over defaults, validated once."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wsgi_observe
from wsgi_observe import ObservabilityMiddleware
from wsgi_observe.config import ENV_VARS, Config, ConfigError
from wsgi_observe.metrics import MetricsStore

VALID_DSN = "https://abc123publickey@o0.ingest.sentry.example/42"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def middleware(**kwargs: Any) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(app, store=MetricsStore(), **kwargs)


def assert_one_line_naming(error: ConfigError, name: str, accepts: str) -> None:
    message = str(error)
    assert isinstance(error, ValueError)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(name), message
    assert accepts in message, message


# Defaults and precedence ------------------------------------------------------------------


def test_defaults() -> None:
    """Without keywords or variables, Config has the documented defaults."""
    cfg = Config.from_env(environ={})
    assert cfg == Config()
    assert cfg.service_name == "wsgi-app"
    assert cfg.version == "0.0.0"
    assert cfg.environment == "development"
    assert cfg.log_level == "INFO"
    assert cfg.slow_request_threshold == 1.0
    assert cfg.readiness_timeout == 2.0
    assert cfg.readiness_timeout < 3.0  # below the guide's readinessProbe timeoutSeconds
    assert cfg.readiness_cache_ttl == 1.0
    assert cfg.max_endpoints == 500
    assert cfg.access_log is True
    assert cfg.sentry_dsn is None
    assert cfg.metrics_token is None
    assert cfg.exclude_paths == ()


PRECEDENCE = [
    pytest.param("log_level", "LOG_LEVEL", "debug", "DEBUG", "warning", "WARNING", id="log-level"),
    pytest.param(
        "service_name",
        "WSGI_OBSERVE_SERVICE_NAME",
        "env-svc",
        "env-svc",
        "CRM API",
        "CRM API",
        id="service-name",
    ),
    pytest.param(
        "version", "WSGI_OBSERVE_VERSION", "2.0.0", "2.0.0", "1.0.0", "1.0.0", id="version"
    ),
    pytest.param(
        "environment",
        "SENTRY_ENVIRONMENT",
        "Production",
        "production",
        "staging",
        "staging",
        id="environment",
    ),
    pytest.param(
        "slow_request_threshold",
        "WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD",
        "2.5",
        2.5,
        0.25,
        0.25,
        id="slow-threshold",
    ),
    pytest.param(
        "readiness_timeout",
        "WSGI_OBSERVE_READINESS_TIMEOUT",
        "0.5",
        0.5,
        1.5,
        1.5,
        id="readiness-timeout",
    ),
    pytest.param(
        "readiness_cache_ttl",
        "WSGI_OBSERVE_READINESS_CACHE_TTL",
        "0",
        0.0,
        5,
        5.0,
        id="readiness-cache-ttl",
    ),
    pytest.param("max_endpoints", "WSGI_OBSERVE_MAX_ENDPOINTS", "50", 50, 7, 7, id="max-endpoints"),
    pytest.param(
        "access_log", "WSGI_OBSERVE_ACCESS_LOG", "off", False, True, True, id="access-log"
    ),
    pytest.param(
        "exclude_paths",
        "WSGI_OBSERVE_EXCLUDE_PATHS",
        "/static, /favicon.ico",
        ("/static", "/favicon.ico"),
        ["/assets"],
        ("/assets",),
        id="exclude-paths",
    ),
    pytest.param(
        "traces_sample_rate",
        "SENTRY_TRACES_SAMPLE_RATE",
        "0.25",
        0.25,
        0.5,
        0.5,
        id="traces-sample-rate",
    ),
    pytest.param(
        "app_base_url",
        "APP_BASE_URL",
        "https://crm.example.com/",
        "https://crm.example.com",
        "http://127.0.0.1:5000",
        "http://127.0.0.1:5000",
        id="app-base-url",
    ),
    pytest.param("sentry_dsn", "SENTRY_DSN", VALID_DSN, VALID_DSN, None, None, id="sentry-dsn"),
    pytest.param(
        "uptimerobot_api_url",
        "UPTIMEROBOT_API_URL",
        "http://127.0.0.1:8080/v2/",
        "http://127.0.0.1:8080/v2",
        "https://api.uptimerobot.com/v3",
        "https://api.uptimerobot.com/v3",
        id="uptimerobot-api-url",
    ),
    pytest.param(
        "uptimerobot_prefix", "UPTIMEROBOT_PREFIX", " CRM ", "CRM", "Leads", "Leads", id="prefix"
    ),
    pytest.param(
        "uptimerobot_monitors_file",
        "UPTIMEROBOT_MONITORS_FILE",
        "/etc/monitors.json",
        "/etc/monitors.json",
        "plan.json",
        "plan.json",
        id="monitors-file",
    ),
    pytest.param(
        "uptimerobot_alert_email",
        "UPTIMEROBOT_ALERT_EMAIL",
        "ops@example.com",
        "ops@example.com",
        "dev@example.com",
        "dev@example.com",
        id="alert-email",
    ),
    pytest.param(
        "uptimerobot_alert_sms",
        "UPTIMEROBOT_ALERT_SMS",
        "+1 555 123 4567",
        "+1 555 123 4567",
        "+15550000000",
        "+15550000000",
        id="alert-sms",
    ),
    pytest.param(
        "uptimerobot_alert_webhook",
        "UPTIMEROBOT_ALERT_WEBHOOK",
        "https://hooks.example.com/T0/B0",
        "https://hooks.example.com/T0/B0",
        "http://127.0.0.1:9000/hook",
        "http://127.0.0.1:9000/hook",
        id="alert-webhook",
    ),
]


@pytest.mark.parametrize(("field", "env", "raw", "parsed", "kwarg", "kw_parsed"), PRECEDENCE)
def test_environment_overrides_default(
    field: str, env: str, raw: str, parsed: Any, kwarg: Any, kw_parsed: Any
) -> None:
    """A variable in the given environ mapping replaces the default, parsed to the field's type."""
    assert getattr(Config.from_env(environ={env: raw}), field) == parsed


@pytest.mark.parametrize(("field", "env", "raw", "parsed", "kwarg", "kw_parsed"), PRECEDENCE)
def test_keyword_overrides_environment(
    field: str, env: str, raw: str, parsed: Any, kwarg: Any, kw_parsed: Any
) -> None:
    """A keyword argument wins over the same setting in the environment."""
    cfg = Config.from_env(environ={env: raw}, **{field: kwarg})
    assert getattr(cfg, field) == kw_parsed


@pytest.mark.parametrize(("field", "env", "raw", "parsed", "kwarg", "kw_parsed"), PRECEDENCE)
def test_os_environ_is_read_by_from_env(
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    env: str,
    raw: str,
    parsed: Any,
    kwarg: Any,
    kw_parsed: Any,
) -> None:
    """``Config.from_env()`` reads os.environ, and keywords still win over it."""
    monkeypatch.setenv(env, raw)
    assert getattr(Config.from_env(), field) == parsed
    assert getattr(Config.from_env(**{field: kwarg}), field) == kw_parsed


def test_explicit_environ_mapping_ignores_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given an environ mapping, from_env does not look at os.environ."""
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert Config.from_env(environ={}).log_level == "INFO"


def test_environment_is_read_when_built_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable set after import is seen by the next Config and middleware."""
    monkeypatch.setenv("WSGI_OBSERVE_SERVICE_NAME", "late-service")
    assert Config.from_env().service_name == "late-service"
    assert middleware().config.service_name == "late-service"


def test_middleware_keywords_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The middleware's Config keywords win over the environment, which wins over defaults."""
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    monkeypatch.setenv("WSGI_OBSERVE_VERSION", "9.9.9")
    cfg = middleware(version="1.0.0", access_log=False).config
    assert (cfg.log_level, cfg.version, cfg.access_log) == ("ERROR", "1.0.0", False)


def test_middleware_keywords_override_a_given_config() -> None:
    """Keywords passed with an explicit config replace only those fields."""
    base = Config(service_name="CRM API", slow_request_threshold=0.5)
    cfg = ObservabilityMiddleware(
        app, base, store=MetricsStore(), slow_request_threshold=2.0
    ).config
    assert (cfg.service_name, cfg.slow_request_threshold) == ("CRM API", 2.0)


# Bad values -------------------------------------------------------------------------------

BAD_ENV = [
    pytest.param("LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR or CRITICAL", id="log-level"),
    pytest.param("WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", "-1", "number", id="threshold-negative"),
    pytest.param("WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", "0", "greater than 0", id="threshold-zero"),
    pytest.param("WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", "fast", "number", id="threshold-text"),
    pytest.param("WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", "nan", "number", id="threshold-nan"),
    pytest.param("SENTRY_TRACES_SAMPLE_RATE", "1.5", "at most 1", id="sample-rate-above-1"),
    pytest.param("SENTRY_TRACES_SAMPLE_RATE", "-0.1", "at least 0", id="sample-rate-negative"),
    pytest.param("SENTRY_TRACES_SAMPLE_RATE", "10%", "number", id="sample-rate-percent"),
    pytest.param(
        "WSGI_OBSERVE_MAX_ENDPOINTS", "0", "whole number at least 1", id="max-endpoints-0"
    ),
    pytest.param("WSGI_OBSERVE_MAX_ENDPOINTS", "1.5", "whole number", id="max-endpoints-float"),
    pytest.param("WSGI_OBSERVE_MAX_ENDPOINTS", "lots", "whole number", id="max-endpoints-text"),
    pytest.param("WSGI_OBSERVE_ACCESS_LOG", "maybe", "true or false", id="access-log"),
    pytest.param("LOG_FORMAT", "xml", "json, console or ecs", id="log-format"),
    pytest.param("APP_BASE_URL", "ftp://x", "http(s)://", id="base-url-ftp"),
    pytest.param("APP_BASE_URL", "crm.example.com", "http(s)://", id="base-url-no-scheme"),
    pytest.param("APP_BASE_URL", "https://crm.example.com/?x=1", "no ?query", id="base-url-query"),
    pytest.param("APP_BASE_URL", "https://crm.example.com:http", "bad port", id="base-url-port"),
    pytest.param("UPTIMEROBOT_API_URL", "localhost:8080", "http(s)://", id="api-url"),
    pytest.param("UPTIMEROBOT_ALERT_EMAIL", "not-an-address", "e-mail address", id="alert-email"),
    pytest.param("WSGI_OBSERVE_EXCLUDE_PATHS", "/static,admin", "starting with '/'", id="exclude"),
    pytest.param("WSGI_OBSERVE_READINESS_TIMEOUT", "0", "greater than 0", id="readiness-timeout"),
    pytest.param("WSGI_OBSERVE_READINESS_CACHE_TTL", "-1", "at least 0", id="readiness-ttl"),
    pytest.param("SENTRY_ENVIRONMENT", "   ", "non-empty", id="environment-blank"),
    pytest.param("WSGI_OBSERVE_SERVICE_NAME", "", "non-empty", id="service-name-empty"),
]


@pytest.mark.parametrize(("env", "raw", "accepts"), BAD_ENV)
@pytest.mark.parametrize(
    "source",
    [
        pytest.param("environ-mapping", id="environ"),
        pytest.param("os-environ", id="os-environ"),
        pytest.param("middleware", id="middleware"),
    ],
)
def test_bad_environment_value_raises_one_line_config_error(
    monkeypatch: pytest.MonkeyPatch, source: str, env: str, raw: str, accepts: str
) -> None:
    """A bad variable fails at start-up with one line naming the variable and what it accepts."""
    with pytest.raises(ConfigError) as caught:
        if source == "environ-mapping":
            Config.from_env(environ={env: raw})
        else:
            monkeypatch.setenv(env, raw)
            Config.from_env() if source == "os-environ" else middleware()
    assert_one_line_naming(caught.value, env, accepts)


BAD_KWARGS = [
    pytest.param("log_level", "LOUD", "DEBUG, INFO, WARNING, ERROR or CRITICAL", id="log-level"),
    pytest.param("slow_request_threshold", -1, "number", id="threshold-negative"),
    pytest.param("slow_request_threshold", 0, "greater than 0", id="threshold-zero"),
    pytest.param("slow_request_threshold", "fast", "number", id="threshold-text"),
    pytest.param("traces_sample_rate", 1.5, "at most 1", id="sample-rate"),
    pytest.param("sentry_dsn", "not-a-dsn", "http(s)://<key>@<host>/<project-id>", id="dsn"),
    pytest.param("max_endpoints", 0, "whole number at least 1", id="max-endpoints"),
    pytest.param("access_log", "maybe", "true or false", id="access-log"),
    pytest.param("log_format", "xml", "json, console or ecs", id="log-format"),
    pytest.param("app_base_url", "ftp://x", "http(s)://", id="base-url"),
    pytest.param("uptimerobot_api_url", "ftp://x", "http(s)://", id="api-url"),
    pytest.param("uptimerobot_alert_email", "ops", "e-mail address", id="alert-email"),
    pytest.param("exclude_paths", ["static"], "starting with '/'", id="exclude-list"),
    pytest.param("exclude_paths", "/ok,admin", "starting with '/'", id="exclude-string"),
    pytest.param("readiness_timeout", 0, "greater than 0", id="readiness-timeout"),
    pytest.param("readiness_cache_ttl", -0.5, "at least 0", id="readiness-ttl"),
    pytest.param("service_name", "  ", "non-empty", id="service-name"),
]

BUILDERS = [
    pytest.param(lambda **kw: Config(**kw), id="Config"),
    pytest.param(lambda **kw: Config.from_env(environ={}, **kw), id="from_env"),
    pytest.param(lambda **kw: Config().replace(**kw), id="replace"),
    pytest.param(lambda **kw: middleware(**kw), id="middleware"),
    pytest.param(lambda **kw: ObservabilityMiddleware(app, Config(), **kw), id="middleware-config"),
]


@pytest.mark.parametrize(("field", "value", "accepts"), BAD_KWARGS)
@pytest.mark.parametrize("build", BUILDERS)
def test_bad_keyword_raises_one_line_config_error_naming_it(
    build: Callable[..., Any], field: str, value: Any, accepts: str
) -> None:
    """A bad keyword value raises a one-line ConfigError naming the keyword and what it accepts."""
    with pytest.raises(ConfigError) as caught:
        build(**{field: value})
    assert_one_line_naming(caught.value, field, accepts)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("-1", id="negative"),
        pytest.param("fast", id="text"),
        pytest.param("0", id="zero"),
    ],
)
@pytest.mark.parametrize(
    "env",
    [
        pytest.param("WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", id="slow-threshold"),
        pytest.param("WSGI_OBSERVE_READINESS_TIMEOUT", id="readiness-timeout"),
    ],
)
def test_positive_number_error_says_what_is_accepted(
    request: pytest.FixtureRequest, env: str, value: str
) -> None:
    """Every refused value of a must-be-positive setting gets the same "greater than 0" message."""
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ={env: value})
    assert_one_line_naming(caught.value, env, "greater than 0")
    assert "at least 0" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        pytest.param(
            "WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", "slow_request_threshold", id="slow-threshold"
        ),
        pytest.param("WSGI_OBSERVE_READINESS_TIMEOUT", "readiness_timeout", id="readiness-timeout"),
    ],
)
def test_infinite_number_is_refused(env: str, field: str) -> None:
    """``inf`` is refused with a ConfigError rather than failing deep inside later."""
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ={env: "inf"})
    assert_one_line_naming(caught.value, env, "number")
    with pytest.raises(ConfigError):
        middleware(**{field: math.inf})


@pytest.mark.parametrize("value", [pytest.param(2.5, id="float"), pytest.param(True, id="bool")])
def test_max_endpoints_keyword_must_be_a_whole_number(value: Any) -> None:
    """A keyword max_endpoints that is not a whole number is refused, not truncated."""
    with pytest.raises(ConfigError) as caught:
        Config(max_endpoints=value)
    assert_one_line_naming(caught.value, "max_endpoints", "whole number")


@pytest.mark.parametrize(
    "field",
    [
        pytest.param("slow_request_threshold", id="slow-threshold"),
        pytest.param("readiness_timeout", id="readiness-timeout"),
        pytest.param("max_endpoints", id="max-endpoints"),
        pytest.param("log_level", id="log-level"),
        pytest.param("service_name", id="service-name"),
    ],
)
def test_none_for_a_required_setting_is_refused_or_defaulted(field: str) -> None:
    """None for a setting that has no "off" value is refused by name or means the default."""
    for build in (lambda: Config(**{field: None}), lambda: middleware(**{field: None}).config):
        try:
            cfg = build()
        except ConfigError as error:
            assert str(error).startswith(field)
        else:
            assert getattr(cfg, field) == getattr(Config(), field)


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param("not-a-dsn-hunter2", id="no-url"),
        pytest.param("https://o0.ingest.sentry.example/42", id="no-key"),
        pytest.param("ftp://hunter2key@o0.ingest.sentry.example/42", id="ftp"),
        pytest.param("https://hunter2key@o4505.ingest.sentry.io/project", id="no-project-id"),
        pytest.param("https://hunter2key@/4505123", id="no-host"),
    ],
)
@pytest.mark.parametrize(
    "source", [pytest.param("env", id="env"), pytest.param("keyword", id="keyword")]
)
def test_malformed_dsn_is_refused_without_echoing_it(source: str, dsn: str) -> None:
    """A malformed SENTRY_DSN raises ConfigError whose message does not contain the DSN."""
    with pytest.raises(ConfigError) as caught:
        if source == "env":
            Config.from_env(environ={"SENTRY_DSN": dsn})
        else:
            Config(sentry_dsn=dsn)
    name = "SENTRY_DSN" if source == "env" else "sentry_dsn"
    assert_one_line_naming(caught.value, name, "DSN")
    message = str(caught.value)
    assert "hunter2" not in message
    assert "o4505" not in message
    assert "4505123" not in message


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param(VALID_DSN, id="hosted"),
        pytest.param("http://key@127.0.0.1:9000/1", id="self-hosted"),
        pytest.param("https://key@sentry.example.com/prefix/42", id="path-prefix"),
    ],
)
def test_valid_dsn_is_accepted(dsn: str) -> None:
    """A well-formed DSN (hosted, self-hosted, with a path prefix) is accepted as is."""
    assert Config.from_env(environ={"SENTRY_DSN": dsn}).sentry_dsn == dsn


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: Config(bogus=1), id="Config"),
        pytest.param(lambda: Config.from_env(environ={}, bogus=1), id="from_env"),
        pytest.param(lambda: middleware(bogus=1), id="middleware"),
        pytest.param(lambda: ObservabilityMiddleware(app, Config(), bogus=1), id="with-config"),
    ],
)
def test_unknown_keyword_raises_type_error(build: Callable[[], Any]) -> None:
    """An unknown configuration keyword raises TypeError naming it, not ConfigError."""
    with pytest.raises(TypeError, match="bogus") as caught:
        build()
    assert not isinstance(caught.value, ConfigError)


def test_config_error_is_public_and_a_value_error() -> None:
    """ConfigError is importable from the package and is a ValueError."""
    assert wsgi_observe.ConfigError is ConfigError
    assert issubclass(ConfigError, ValueError)


# Secrets and derived values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "raw", "secret", "accepts"),
    [
        pytest.param(
            "APP_BASE_URL",
            "https://admin:s3cret-pw@crm.example.com",
            "s3cret-pw",
            "credentials",
            id="base-url-credentials",
        ),
        pytest.param(
            "APP_BASE_URL",
            "ftp://admin:s3cret-pw@crm.example.com",
            "s3cret-pw",
            "credentials",
            id="base-url-credentials-bad-scheme",
        ),
        pytest.param(
            "UPTIMEROBOT_API_URL",
            "https://u:s3cret-pw@api.example.com:bad/v2",
            "s3cret-pw",
            "credentials",
            id="api-url-credentials-bad-port",
        ),
        pytest.param("UPTIMEROBOT_ALERT_SMS", "call 4449876543x", "4449876543", "phone", id="sms"),
        pytest.param("UPTIMEROBOT_ALERT_SMS", "+1 55", "+1 55", "phone", id="sms-short"),
        pytest.param(
            "UPTIMEROBOT_ALERT_WEBHOOK",
            "ftp://hooks.example.com/T0/s3cret-hook-token",
            "s3cret-hook-token",
            "http(s)://",
            id="webhook",
        ),
        pytest.param(
            "APP_BASE_URL",
            "https://u:s3cret-pw@[::1/x",
            "s3cret-pw",
            "not a valid URL",
            id="base-url-unparsable",
        ),
        pytest.param(
            "UPTIMEROBOT_ALERT_WEBHOOK",
            "https://[::1/s3cret-hook-token",
            "s3cret-hook-token",
            "http(s)://",
            id="webhook-unparsable",
        ),
    ],
)
def test_bad_secret_values_are_refused_without_echoing_them(
    env: str, raw: str, secret: str, accepts: str
) -> None:
    """Credentials, phone numbers and webhook URLs are never echoed in the one-line error."""
    with pytest.raises(ConfigError) as caught:
        Config.from_env(environ={env: raw})
    assert_one_line_naming(caught.value, env, accepts)
    assert secret not in str(caught.value)


def test_repr_hides_alert_phone_numbers_and_webhooks() -> None:
    """A phone number and a webhook URL (which often holds a token) are not shown by repr."""
    cfg = Config(
        uptimerobot_alert_sms="+15551234567",
        uptimerobot_alert_webhook="https://hooks.example.com/T0/s3cret-hook-token",
        uptimerobot_alert_email="ops@example.com",
    )
    assert "5551234567" not in repr(cfg)
    assert "s3cret-hook-token" not in repr(cfg)
    assert "ops@example.com" in repr(cfg)


def test_application_defaults_sit_below_the_environment_and_keywords() -> None:
    """``defaults=`` replaces our defaults; a variable beats it, a keyword beats both."""
    defaults = {"service_name": "Demo API", "version": "1.0.0"}
    cfg = Config.from_env(environ={}, defaults=defaults)
    assert (cfg.service_name, cfg.version) == ("Demo API", "1.0.0")
    cfg = Config.from_env(environ={"WSGI_OBSERVE_VERSION": "2.0.0"}, defaults=defaults)
    assert (cfg.service_name, cfg.version) == ("Demo API", "2.0.0")
    cfg = Config.from_env(
        environ={"WSGI_OBSERVE_VERSION": "2.0.0"}, defaults=defaults, version="3.0.0"
    )
    assert cfg.version == "3.0.0"


def test_application_defaults_are_validated_and_must_be_fields() -> None:
    """A bad default fails like any value; an unknown one is a TypeError."""
    with pytest.raises(ConfigError):
        Config.from_env(environ={}, defaults={"log_level": "LOUD"})
    with pytest.raises(TypeError, match="colour"):
        Config.from_env(environ={}, defaults={"colour": "blue"})


def test_readme_configuration_table_lists_every_variable_once() -> None:
    """The README's one configuration table has a row per Config field, with its variable."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", readme, flags=re.MULTILINE)
    assert sorted(rows) == sorted((name, var.env) for name, var in ENV_VARS.items())
    assert readme.count("| Keyword | Variable |") == 1


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: Config(
                sentry_dsn=VALID_DSN, metrics_token="tok-s3cret", uptimerobot_api_key="u999-KEY"
            ),
            id="Config",
        ),
        pytest.param(
            lambda: Config.from_env(
                environ={
                    "SENTRY_DSN": VALID_DSN,
                    "WSGI_OBSERVE_METRICS_TOKEN": "tok-s3cret",
                    "UPTIMEROBOT_API_KEY": "u999-KEY",
                }
            ),
            id="from_env",
        ),
        pytest.param(
            # No DSN here: with one, the middleware would initialise the real Sentry SDK.
            lambda: middleware(metrics_token="tok-s3cret", uptimerobot_api_key="u999-KEY").config,
            id="middleware",
        ),
    ],
)
def test_repr_never_shows_secrets(build: Callable[[], Config]) -> None:
    """repr and str of a Config hide the DSN, the metrics token and the UptimeRobot key."""
    cfg = build()
    assert cfg.metrics_token == "tok-s3cret"  # kept, only hidden from repr
    for text in (repr(cfg), str(cfg), f"{cfg!r}", repr([cfg])):
        assert "abc123publickey" not in text
        assert "ingest.sentry.example" not in text
        assert "tok-s3cret" not in text
        assert "u999-KEY" not in text
        assert "service_name='wsgi-app'" in text


@pytest.mark.parametrize(
    ("environ", "kwargs", "rate"),
    [
        pytest.param({}, {}, 1.0, id="development-default"),
        pytest.param({"SENTRY_ENVIRONMENT": "production"}, {}, 0.1, id="production-default"),
        pytest.param({"SENTRY_ENVIRONMENT": "Production"}, {}, 0.1, id="production-any-case"),
        pytest.param({"SENTRY_ENVIRONMENT": "staging"}, {}, 0.1, id="staging-default"),
        pytest.param({}, {"environment": "production"}, 0.1, id="production-keyword"),
        pytest.param(
            {"SENTRY_ENVIRONMENT": "production", "SENTRY_TRACES_SAMPLE_RATE": "0.5"},
            {},
            0.5,
            id="production-set",
        ),
        pytest.param({"SENTRY_TRACES_SAMPLE_RATE": "0"}, {}, 0.0, id="development-set-zero"),
        pytest.param(
            {"SENTRY_ENVIRONMENT": "production"},
            {"traces_sample_rate": 1.0},
            1.0,
            id="production-keyword-rate",
        ),
    ],
)
def test_effective_traces_sample_rate(
    environ: dict[str, str], kwargs: dict[str, Any], rate: float
) -> None:
    """Traces are sampled 100% in development and 10% in production unless a rate is set."""
    assert Config.from_env(environ=environ, **kwargs).effective_traces_sample_rate == rate
