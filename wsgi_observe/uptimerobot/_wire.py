"""What the API v2 and API v3 clients share: the error, the retry loop, the hidden key.

- :class:`UptimeRobotError` is the one error both clients raise: one line, the API's own
  message, never the key.
- :func:`call_with_retries` repeats one call after a failure that may go away (a rate limit,
  a 5xx, a connection error), with exponential backoff and jitter, honouring
  ``Retry-After``, bounded both in attempts and in total time. Which failures are worth
  repeating is the caller's decision: an attempt raises :class:`Retryable` for those.
- :func:`mask_key` and :func:`scrub_key` keep the key out of ``repr()`` and messages.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, quote_plus

from ..redact import REDACTED, redact_value

__all__ = [
    "RetryPolicy",
    "Retryable",
    "UptimeRobotError",
    "call_with_retries",
    "mask_key",
    "parse_retry_after",
    "scrub_key",
]

logger = logging.getLogger("wsgi_observe.uptimerobot")

T = TypeVar("T")


class UptimeRobotError(Exception):
    """The UptimeRobot API refused a call, or could not be reached in the time allowed.

    Raised by both :class:`~wsgi_observe.uptimerobot.UptimeRobotClient` (API v2) and
    :class:`~wsgi_observe.uptimerobot.UptimeRobotV3Client`.

    Attributes:
        message: the API's own message (API v2 ``error.message``, API v3 ``message``), or a
            description of the HTTP or connection failure. It never contains the API key.
        status: the HTTP status of the last answer, or ``None`` if there was none.
        error_type: the API's error type or code (``"invalid_parameter"``, ``"000-004"``).
        parameter_name: the API v2 ``error.parameter_name``, if any.
        api_method: the call that failed (``"getMonitors"``, ``"POST /monitors"``).
        attempts: how many requests were made for this call.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        parameter_name: str | None = None,
        api_method: str | None = None,
        attempts: int = 1,
        detail: str = "",
    ) -> None:
        self.message = message
        self.status = status
        self.error_type = error_type
        self.parameter_name = parameter_name
        self.api_method = api_method
        self.attempts = attempts
        text = f"{api_method}: {message}" if api_method else message
        if detail:
            text = f"{text} ({detail})"
        super().__init__(" ".join(text.split()))  # always one line


class Retryable(Exception):
    """One attempt failed in a way that may succeed if repeated (raised by an attempt)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        parameter_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error_type = error_type
        self.parameter_name = parameter_name


@dataclass
class RetryPolicy:
    """How often and how long one call is repeated.

    The wait before retry *n* is ``min(backoff_max, backoff_base * 2 ** (n - 1))`` scaled by
    a random factor in [0.5, 1.0); a ``Retry-After`` the API sent is honoured instead. No
    wait is started that would end after ``max_total_time`` seconds from the first attempt.
    ``sleep``, ``clock`` and ``jitter`` are injectable so tests need no real waiting.
    """

    max_retries: int = 4
    max_total_time: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    jitter: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return retry_after
        scale = 0.5 + 0.5 * min(max(self.jitter(), 0.0), 1.0)
        exponential: float = self.backoff_base * 2.0 ** (attempt - 1)
        return min(self.backoff_max, exponential) * scale


def call_with_retries(
    once: Callable[[float, int], T],
    *,
    what: str,
    policy: RetryPolicy,
    timeout: float,
    scrub: Callable[[str], str],
) -> T:
    """Run ``once(timeout_s, attempt)`` until it returns, retrying on :class:`Retryable`.

    Each attempt gets ``timeout`` seconds, or what is left of the budget if that is less.
    An :class:`UptimeRobotError` from an attempt ends the call at once (its ``attempts`` is
    set); running out of retries or time raises one built from the last failure.
    """
    started = policy.clock()
    deadline = started + policy.max_total_time
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - policy.clock()
        try:
            return once(min(timeout, remaining), attempt)
        except Retryable as failure:
            last = failure
        except UptimeRobotError as exc:
            exc.attempts = attempt
            raise
        elapsed = policy.clock() - started
        if attempt > policy.max_retries:
            raise _give_up(what, last, attempt, elapsed, "no retries left")
        delay = policy.delay(attempt, last.retry_after)
        if policy.clock() + delay >= deadline:
            raise _give_up(what, last, attempt, elapsed, "time budget spent")
        logger.warning(
            "UptimeRobot %s failed (%s); retry %d of %d in %.2fs",
            what,
            scrub(last.message),
            attempt,
            policy.max_retries,
            delay,
        )
        policy.sleep(delay)


def _give_up(
    what: str, last: Retryable, attempts: int, elapsed: float, why: str
) -> UptimeRobotError:
    detail = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} in "
    detail += f"{elapsed:.1f}s: {why}"
    if last.status is not None:
        detail = f"HTTP {last.status}; {detail}"
    # Debug only: the caller gets the same text in the exception and decides.
    logger.debug("UptimeRobot %s: %s (%s)", what, last.message, detail)
    return UptimeRobotError(
        last.message,
        status=last.status,
        error_type=last.error_type,
        parameter_name=last.parameter_name,
        api_method=what,
        attempts=attempts,
        detail=detail,
    )


def parse_retry_after(raw: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def mask_key(api_key: str) -> str:
    """Enough of a key to tell two apart in a debugger, never enough to use one."""
    if len(api_key) >= 12:
        return f"{api_key[:3]}…(redacted)"
    return "***"


def scrub_key(api_key: str, text: str) -> str:
    """``text`` without ``api_key`` (as is, form- or URL-encoded), through the one redaction
    walker the logs and Sentry use (a DSN or a password in a message is a secret too)."""
    for form in {api_key, quote_plus(api_key), quote(api_key, safe="")}:
        if form:
            text = text.replace(form, REDACTED)
    return redact_value(text)  # type: ignore[no-any-return]
