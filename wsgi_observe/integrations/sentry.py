"""Sentry: :func:`init_sentry`, the sampler and scrubbing, and the reporter it installs.

Without a DSN nothing here runs per request and ``sentry_sdk`` is never imported (every
import of it is inside a function). With one, :func:`init_sentry` starts the SDK and puts
a :class:`~wsgi_observe.integrations.sentry_reporter.SentryReporter` into the middleware's
reporter slot (:mod:`wsgi_observe.reporting`), so every middleware of the process reports,
whether it was built before or after the call.

Our own ``/health*`` and ``/metrics`` never reach the reporter, and the ``traces_sampler``
that :func:`init_sentry` installs drops them (and ``exclude_paths``) even when a framework
integration of sentry-sdk sees them first.

Supported sentry-sdk: ``>=2.0,<3`` (pinned in ``setup.cfg``). Besides its public API the
reporter relies on a few SDK internals to keep an unsampled request cheap; the test suite
checks each of them (``tests/test_sentry_sdk_contract.py``) and fails loudly, naming the
one that changed, when a new sentry-sdk moves it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from .. import reporting
from .._guard import INTERNAL_LOGGER, guarded

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..config import Config

__all__ = [
    "PROBE_PATHS",
    "adopt_active_client",
    "init_sentry",
    "is_active",
    "make_traces_sampler",
    "scrub_breadcrumb",
    "scrub_event",
    "start_from_config",
]

#: Paths answered by the middleware itself: never traced.
PROBE_PATHS = frozenset(
    {"/health", "/health/live", "/health/ready", "/metrics", "/metrics/dashboard"}
)

_HOOKS = ("before_send", "before_send_transaction", "before_breadcrumb", "traces_sampler")
# Top-level event keys that hold no user data (and whose names would confuse the scrubber).
_NOT_SCRUBBED = frozenset(
    {
        "_meta",
        "debug_meta",
        "environment",
        "event_id",
        "level",
        "measurements",
        "modules",
        "platform",
        "release",
        "sdk",
        "server_name",
        "start_timestamp",
        "timestamp",
        "transaction_info",
        "type",
    }
)
_PLAIN_CONTEXTS = frozenset({"app", "device", "os", "runtime"})

_LAZY: dict[str, Any] = {}  # things built on first use (they need sentry_sdk or redact)


# Setup ------------------------------------------------------------------------------------


def init_sentry(
    dsn: Optional[str] = None,
    environment: Optional[str] = None,
    release: Optional[str] = None,
    traces_sample_rate: Optional[float] = None,
    *,
    config: Optional[Config] = None,
    **sentry_options: Any,
) -> bool:
    """Start Sentry from ``SENTRY_DSN``; return whether it is on.

    Parameters: ``dsn``, ``environment``, ``release`` and ``traces_sample_rate`` override
    ``config`` (default: :meth:`Config.from_env`), whose ``sentry_dsn``, ``environment``,
    ``version`` and ``traces_sample_rate`` they default to; the sample rate defaults to 1.0
    in development and 0.1 elsewhere. Other keywords go to ``sentry_sdk.init``; your own
    ``before_send``, ``before_send_transaction``, ``before_breadcrumb`` and
    ``traces_sampler`` run first, then ours (scrubbing; never sampling probes). Example::

        from wsgi_observe import init_sentry
        init_sentry()                      # in a gunicorn post_fork hook, or at start-up
        init_sentry(release="crm@1.4.2", traces_sample_rate=0.05)

    Every middleware of the process reports from then on, built before or after the call.
    Without a DSN it does nothing and returns False. Reads: ``SENTRY_DSN``, ``SENTRY_ENVIRONMENT``,
    ``SENTRY_TRACES_SAMPLE_RATE``, ``WSGI_OBSERVE_VERSION`` (and ``SENTRY_RELEASE``, via
    sentry-sdk, when no version is configured).
    """
    from ..config import Config

    cfg = config if config is not None else Config.from_env()
    given = {
        "sentry_dsn": dsn,
        "environment": environment,
        "version": release,
        "traces_sample_rate": traces_sample_rate,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    if changes:
        cfg = cfg.replace(**changes)
    if not cfg.sentry_dsn:
        return False

    import sentry_sdk

    if release is None and cfg.version == Config.version:
        # No version configured: let sentry-sdk find one (SENTRY_RELEASE, git, ...).
        release_value: Optional[str] = None
    else:
        release_value = cfg.version
    user_hooks = {name: sentry_options.pop(name, None) for name in _HOOKS}
    # PII stays off: neither ``send_default_pii`` nor ``data_collection`` is passed, which
    # sentry-sdk treats as ``send_default_pii=False`` (and newer releases warn when the
    # deprecated flag is passed at all). Yours, in ``sentry_options``, win.
    options: dict[str, Any] = {
        "dsn": cfg.sentry_dsn,
        "environment": cfg.environment,
        "release": release_value,
        "traces_sampler": make_traces_sampler(
            cfg.effective_traces_sample_rate,
            exclude_paths=cfg.exclude_paths,
            sampler=user_hooks["traces_sampler"],
        ),
        "before_send": _chain(user_hooks["before_send"], scrub_event),
        "before_send_transaction": _chain(user_hooks["before_send_transaction"], scrub_event),
        "before_breadcrumb": _chain(user_hooks["before_breadcrumb"], scrub_breadcrumb),
    }
    options.update(sentry_options)
    sentry_sdk.init(**options)

    _install_reporter()
    return True


def start_from_config(config: Config) -> None:
    """What a middleware whose configuration has a DSN does: start Sentry, once."""
    if not is_active():
        init_sentry(config=config)
    else:
        _install_reporter()


def adopt_active_client() -> bool:
    """Report through a client the application started itself (``sentry_sdk.init(...)``,
    perhaps with a framework integration); False when there is none."""
    if not is_active():
        return False
    _install_reporter()
    return True


def is_active() -> bool:
    """Whether a Sentry client is active in this process (never imports sentry_sdk)."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    return sentry_sdk is not None and bool(sentry_sdk.get_client().is_active())


def _install_reporter() -> None:
    from sentry_sdk.integrations.logging import ignore_logger

    from .sentry_reporter import SentryReporter

    # Our internal-error lines must never become events (their processing may fail again).
    ignore_logger(INTERNAL_LOGGER)
    _install_dedupe()
    if not isinstance(reporting.installed("errors"), SentryReporter):
        reporting.install(SentryReporter(), "errors")


def make_traces_sampler(
    rate: float,
    *,
    exclude_paths: Iterable[str] = (),
    sampler: Optional[Callable[[dict[str, Any]], Any]] = None,
) -> Callable[[dict[str, Any]], Any]:
    """A ``traces_sampler``: 0 for probes, ``/metrics`` and ``exclude_paths``; else ``sampler``
    if given, else the parent's decision when there is one, else ``rate``.

    It looks at ``wsgi_environ`` (any sentry WSGI integration passes it) or
    ``asgi_scope``, so probes are never sampled whichever integration sees them.
    """
    prefixes = tuple(exclude_paths)

    def traces_sampler(context: dict[str, Any]) -> Any:
        environ = context.get("wsgi_environ")
        if environ is not None:
            path = environ.get("PATH_INFO") or ""
        else:
            asgi_scope = context.get("asgi_scope")
            path = asgi_scope.get("path") or "" if isinstance(asgi_scope, dict) else ""
        if path in PROBE_PATHS or (prefixes and path.startswith(prefixes)):
            return 0.0
        if sampler is not None:
            return sampler(context)
        parent = context.get("parent_sampled")
        if parent is not None:
            return 1.0 if parent else 0.0
        return rate

    # For the wrapper: a caller's "not sampled" stands, and (without a user sampler) every
    # request it sees gets ``rate``, so it need not call us per request.
    traces_sampler.inherits_parent = sampler is None  # type: ignore[attr-defined]
    traces_sampler.constant_rate = rate if sampler is None else None  # type: ignore[attr-defined]
    return traces_sampler


def _chain(
    first: Optional[Callable[[Any, Any], Any]], last: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    """``first`` (the user's hook), then ``last`` (ours), so nothing secret leaves."""
    if first is None:
        return last

    def hook(item: Any, hint: Any) -> Any:
        item = first(item, hint)
        if item is None:
            return None
        return last(item, hint)

    return hook


# Scrubbing (runs only for what is actually sent) ---------------------------------------


def scrub_event(event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """``event`` with secrets replaced in place: secret-named keys (``Authorization``,
    ``HTTP_COOKIE``, ``api_key``, ...) and secrets inside strings (query values, DSNs and
    URL credentials, ``Bearer`` tokens), in request data, frame variables, breadcrumbs,
    extras, contexts, messages and span data alike. The walker is
    :func:`wsgi_observe.redact.redact_value`, the one the logs use, in its in-place mode.
    """
    try:
        redact = _redact_value()
        for key, value in event.items():
            if key in _NOT_SCRUBBED:
                continue
            if key == "contexts" and type(value) is dict:
                for name, context in value.items():
                    if name not in _PLAIN_CONTEXTS:
                        value[name] = redact(context, key=name, depth=10, in_place=True)
            else:
                event[key] = redact(value, key=key, depth=12, in_place=True)
    except Exception as error:  # a scrubbing bug must not lose the event
        guarded("sentry scrub_event", error)
    return event


def scrub_breadcrumb(crumb: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """A breadcrumb with secrets replaced (same rules as :func:`scrub_event`)."""
    try:
        redact = _redact_value()
        for key, value in crumb.items():
            if key != "timestamp":
                crumb[key] = redact(value, key=key, depth=6, in_place=True)
    except Exception as error:
        guarded("sentry scrub_breadcrumb", error)
    return crumb


def _redact_value() -> Callable[..., Any]:
    """:func:`wsgi_observe.redact.redact_value`, imported on first use (importing this
    module stays cheap for an app without a DSN)."""
    cached = _LAZY.get("redact_value")
    if cached is None:
        from ..redact import redact_value

        cached = _LAZY["redact_value"] = redact_value
    return cached


# Reporting an exception (once) ---------------------------------------------------------


def _capture(error: BaseException) -> None:
    """Send ``error`` as an unhandled exception, with the active scope's context."""
    if isinstance(error, (KeyboardInterrupt, GeneratorExit)):
        return
    if isinstance(error, SystemExit) and error.code in (0, None):
        return
    try:
        import sentry_sdk
        from sentry_sdk.utils import event_from_exception

        event, hint = event_from_exception(
            (type(error), error, error.__traceback__),
            client_options=sentry_sdk.get_client().options,
            mechanism={"type": "wsgi_observe", "handled": False},
        )
        sentry_sdk.capture_event(event, hint=hint)
        _mark_reported(error)
    except Exception as failure:
        guarded("sentry capture", failure)


# sentry-sdk's own deduplication remembers the last exception per context, but a
# mid-stream error is captured inside the request's context and then logged at ERROR (by
# wsgi_observe.logs, or a server) outside it, where the logging integration would report
# it a second time. So a reported exception carries a mark (an attribute: built-in
# exceptions cannot be weakly referenced, and a set would keep tracebacks alive).
_REPORTED_MARK = "_wsgi_observe_reported"


def _mark_reported(error: BaseException) -> None:
    try:
        setattr(error, _REPORTED_MARK, True)
    except (AttributeError, TypeError):  # pragma: no cover - an exception without __dict__
        pass


def _drop_reported(event: dict[str, Any], hint: Any) -> Optional[dict[str, Any]]:
    """Global event processor: an exception we reported already is not sent again."""
    if hint:
        exc_info = hint.get("exc_info")
        if exc_info and getattr(exc_info[1], _REPORTED_MARK, False):
            return None
    return event


def _install_dedupe() -> None:
    if "dedupe" not in _LAZY:
        from sentry_sdk.scope import add_global_event_processor

        add_global_event_processor(_drop_reported)  # type: ignore[arg-type]
        _LAZY["dedupe"] = True
