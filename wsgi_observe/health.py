"""Readiness checks: run concurrently, each under its own timeout, cached, shared by probes.

A check is any zero-argument callable. It returns ``True``/``None`` (healthy), ``False``
(unhealthy) or a dict merged into its result (which may set ``status`` and ``message``);
raising means unhealthy with the exception's message. A group (a mapping of name to check,
like the guide's ``external_services``) gives each member an ``available`` field too.

Overall: every check healthy gives ``healthy``; any ``unhealthy`` gives ``unhealthy``;
otherwise any ``degraded`` gives ``degraded``. A check marked optional (a callable whose
``required`` attribute is ``False``, as :func:`wsgi_observe.checks.optional` makes) is run and
shown like the others, with ``"required": false`` in its result, but it never blocks: when it
is not healthy it makes the overall status ``degraded``, never ``unhealthy``. The middleware
answers 200 when every required check is healthy (:func:`is_ready`), else 503 (the guide's
503 on ``degraded`` stays the rule for required checks).

Runs are bounded: a check that is still running from an earlier probe is not started again
(the new probe waits on the same run), so a hung dependency holds at most one thread per
check, and a probe storm within the cache TTL costs one run in all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Optional, Union

from ._time import iso_utc
from .redact import redact_mapping

__all__ = ["ReadinessRunner", "is_ready", "is_required", "overall_status"]

CheckFn = Callable[[], Any]
Checks = Mapping[str, Union[CheckFn, Mapping[str, CheckFn]]]
_STATUSES = ("healthy", "degraded", "unhealthy")


def overall_status(statuses: list[str]) -> str:
    """``unhealthy`` beats ``degraded`` beats ``healthy``."""
    if "unhealthy" in statuses:
        return "unhealthy"
    if "degraded" in statuses:
        return "degraded"
    return "healthy"


def is_required(check: Any) -> bool:
    """Whether ``check`` blocks readiness: every check does unless its ``required`` attribute
    is ``False`` (see :func:`wsgi_observe.checks.optional`)."""
    return getattr(check, "required", True) is not False


def is_ready(body: Mapping[str, Any]) -> bool:
    """Whether a readiness body means "ready" (``/health/ready`` answers 200): its status is
    ``healthy``, or ``degraded`` only because of optional checks (``"required": false``)."""
    status = body.get("status")
    if status == "healthy":
        return True
    if status != "degraded":
        return False
    checks = body.get("checks")
    if not isinstance(checks, Mapping):
        return False
    for result in _results(checks):
        if result.get("required", True) is not False and result.get("status") != "healthy":
            return False
    return True


def _results(checks: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every check result of a body's ``checks``, group members included."""
    found: list[Mapping[str, Any]] = []
    for value in checks.values():
        if not isinstance(value, Mapping):
            continue
        if isinstance(value.get("status"), str):
            found.append(value)
        else:  # a group, like the guide's external_services
            found.extend(r for r in value.values() if isinstance(r, Mapping))
    return found


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    return f"{name}: {text}"[:300] if text else name


def _redacted(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with secrets replaced (its ``status`` is one of ours and stays as it is)."""
    try:
        scrubbed = redact_mapping(result)
    except Exception:  # a value that cannot be read: say so, without its text
        scrubbed = {"message": "check returned a value that could not be read"}
    scrubbed["status"] = result["status"]
    return scrubbed


def _interpret(outcome: Any) -> dict[str, Any]:
    """Turn what a check returned into ``{"status", "message", ...}``."""
    if outcome is None or outcome is True:
        return {"status": "healthy", "message": "OK"}
    if outcome is False:
        return {"status": "unhealthy", "message": "Check failed"}
    if isinstance(outcome, Mapping):
        result: dict[str, Any] = {"status": "healthy", "message": "OK"}
        result.update(outcome)
        if result["status"] not in _STATUSES:
            result["status"] = "unhealthy"
            result["message"] = f"check returned an unknown status {outcome.get('status')!r}"
        return result
    return {"status": "unhealthy", "message": f"check returned {type(outcome).__name__}"}


class _Check:
    """One named check and the run of it currently in flight, if any."""

    def __init__(self, name: str, fn: CheckFn, group: Optional[str]) -> None:
        self.name = name
        self.fn = fn
        self.group = group
        self.required = is_required(fn)
        self.running: Optional[Future[dict[str, Any]]] = None
        self.running_pid = 0  # a run started before a fork has no thread in the child

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = _interpret(self.fn())
        except BaseException as error:  # even SystemExit: it runs in its own thread
            result = {"status": "unhealthy", "message": _describe(error)}
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        # What a check says goes to /health/ready, /metrics and logs: a driver's message
        # can carry the DSN it failed on (postgres://u:pw@db), so scrub it here, once.
        result = _redacted(result)
        result["latency_ms"] = latency_ms
        return result


class ReadinessRunner:
    """Runs the readiness checks with a timeout each, a TTL cache and one shared run.

    Example::

        runner = ReadinessRunner({"database": checks.database(connect)}, timeout_s=2.0)
        body = runner.result()
        body["checks"]["database"]["status"]  # "healthy"
    """

    def __init__(
        self, checks: Optional[Checks] = None, *, timeout_s: float = 2.0, cache_ttl_s: float = 1.0
    ) -> None:
        self.timeout_s = timeout_s
        self.cache_ttl_s = cache_ttl_s
        self._checks: list[_Check] = []
        for name, value in (checks or {}).items():
            if isinstance(value, Mapping):
                for member, fn in value.items():
                    self._checks.append(
                        _Check(str(member), _callable(f"{name}.{member}", fn), name)
                    )
            else:
                self._checks.append(_Check(str(name), _callable(name, value), None))
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._running = False
        self._cached: Optional[tuple[float, dict[str, Any]]] = None
        #: Called with each fresh result (not cached ones), e.g. to share it with the
        #: other processes of a server; an error there never fails the probe.
        self.result_hooks: list[Callable[[dict[str, Any]], None]] = []

    @property
    def check_names(self) -> list[tuple[Optional[str], str]]:
        return [(c.group, c.name) for c in self._checks]

    def result(self) -> dict[str, Any]:
        """The latest readiness body (``status``, ``timestamp``, ``checks``), cached for the TTL."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached
            if cached is not None and now - cached[0] < self.cache_ttl_s:
                return cached[1]
            if self._running:
                # Another probe is running the checks: share its result.
                self._done.wait_for(lambda: not self._running, timeout=self.timeout_s + 1.0)
                if self._cached is not None:
                    return self._cached[1]
            self._running = True
        body: Optional[dict[str, Any]] = None
        try:
            body = self._run()
        finally:
            with self._lock:
                # Cache before waking the waiters, so none of them runs the checks again.
                if body is not None:
                    self._cached = (time.monotonic(), body)
                self._running = False
                self._done.notify_all()
        for hook in self.result_hooks:
            try:
                hook(body)
            except Exception as error:
                from ._guard import guarded

                guarded("readiness result hook", error)
        return body

    def last_result(self) -> Optional[dict[str, Any]]:
        """The most recent result, however old (for /metrics), without running anything."""
        cached = self._cached
        return cached[1] if cached is not None else None

    def _run(self) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        if self._checks:
            futures = []
            for check in self._checks:
                running = check.running
                if running is None or running.done() or check.running_pid != os.getpid():
                    running = check.running = _start(check)
                    check.running_pid = os.getpid()
                futures.append(running)
            deadline = time.monotonic() + self.timeout_s
            for future in futures:
                remaining = max(deadline - time.monotonic(), 0.0)
                try:
                    results.append(future.result(timeout=remaining))
                except FutureTimeout:
                    results.append(
                        {
                            "status": "unhealthy",
                            "message": f"Check timed out after {self.timeout_s:g}s",
                            "latency_ms": round(self.timeout_s * 1000, 2),
                        }
                    )
                except Exception as error:  # pragma: no cover - run() catches everything
                    results.append(_redacted({"status": "unhealthy", "message": _describe(error)}))
        checks: dict[str, Any] = {}
        statuses: list[str] = []
        for check, result in zip(self._checks, results):
            if check.group is not None:
                available = bool(result.get("available", result["status"] == "healthy"))
                result = {"status": result["status"], "available": available, **result}
                result["available"] = available
            # "required" is ours to say: a check cannot make itself optional by returning it.
            result.pop("required", None)
            if check.required:
                statuses.append(result["status"])
            else:
                result["required"] = False
                statuses.append("healthy" if result["status"] == "healthy" else "degraded")
            if check.group is None:
                checks[check.name] = result
            else:
                checks.setdefault(check.group, {})[check.name] = result
        return {"status": overall_status(statuses), "timestamp": iso_utc(), "checks": checks}


def _start(check: _Check) -> Future[dict[str, Any]]:
    """Run ``check`` in a daemon thread: a hung check must never block process exit."""
    future: Future[dict[str, Any]] = Future()

    def target() -> None:
        try:
            future.set_result(check.run())
        except BaseException as error:  # pragma: no cover - run() catches Exception
            future.set_exception(error)

    threading.Thread(target=target, name=f"wsgi_observe-check-{check.name}", daemon=True).start()
    return future


def _callable(name: str, fn: Any) -> CheckFn:
    if not callable(fn):
        raise TypeError(f"readiness check {name!r} is not callable: {fn!r}")
    return fn  # type: ignore[no-any-return]
