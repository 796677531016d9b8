"""Recent windows: the numbers of the last minutes, from a bounded ring of snapshots.

``/metrics`` counts since the server started, so a bad last five minutes disappears into
months of good traffic. Every ``interval_s`` (default 10 s) one cumulative snapshot of all
numbers goes into a ring that keeps ``span_s`` (default 15 minutes); the numbers of the last
``W`` seconds are then *now minus the snapshot taken about ``W`` seconds ago*: counts,
errors, status classes and every HDR bucket subtract exactly, so the percentiles of the
window are exact too, across all gunicorn workers.

Where the ring lives. With one process, in memory (compressed entries). When the processes
of a server share their numbers (gunicorn, uWSGI, ...), in the server's private state
directory, one file per snapshot (``window-<ms>``), written by whichever process takes the
snapshot (an ``flock`` makes that one process per interval) and read back like any other
input: regular files only, size-capped, decompressed with a cap, every field checked. So a
worker started a second ago, or the one that replaced a recycled worker, answers a window
exactly like the others: the ring is the server's, not the worker's.

When snapshots are taken. Never on the request path: one daemon thread per process (started
by a middleware's first request; it holds the rings weakly) offers one every ``interval_s``,
and each ``/metrics`` scrape or alert check offers the snapshot it just took anyway;
whichever comes first when one is due writes it. The oldest entries are dropped as new ones
arrive, so the ring holds at most ``span_s / interval_s + 2`` entries. A process reading
windows keeps the last 3 entries it decoded, and the finished steps of :meth:`series`.

The baseline of a window of ``W`` seconds is the newest snapshot taken at or before
``now - W + interval_s / 2`` (so ``W`` within half an interval); before the oldest one, the
server's start, when every counter was zero (a server younger than ``W`` gets everything
since it started). The difference carries ``window_s``, the exact span it covers, which the
JSON document shows as ``window_seconds``.

API (what ``/metrics?window=``, the alert monitor and the dashboard use)::

    from wsgi_observe.windows import WindowError, parse_window
    seconds = parse_window("5m")                    # 300.0; WindowError (a ValueError) if bad
    windows = middleware.windows                    # the middleware's ring (a Windows)
    recent = windows.window_snapshot_for(seconds)   # a Snapshot of the last ~300 s
    recent.window_s                                 # the exact span it covers, in seconds
    for end, step in windows.series(step_s=60.0, span_s=900.0):
        ...                                         # per-minute Snapshots, oldest first

- :func:`parse_window` ``(text) -> float``: ``"1m"``, ``"5m"``, ``"15m"``, ``"90s"``, ``"1h"``
  or plain seconds (``"300"``, ``"2.5"``); anything else raises :class:`WindowError` with a
  one-line message (``/metrics`` answers it with ``400``).
- :meth:`Windows.window_snapshot_for` ``(seconds, now=None) -> Snapshot``: raises
  :class:`WindowError` when ``seconds`` is longer than the ring keeps, shorter than one
  interval, or the ring is off.
- :meth:`Windows.series` ``(step_s=60.0, span_s=900.0) -> list[tuple[float, Snapshot]]``:
  ``(end of step, what happened during that step)``, oldest first. Steps end on multiples of
  ``step_s`` (so a finished step is computed once and reused); the newest one runs on to now
  and is shorter: divide by each step's ``window_s`` for a rate. Steps the ring does not
  reach back to are left out (a young server has fewer).
- :func:`window_snapshot` ``(now, before) -> Snapshot``: the difference of two cumulative
  snapshots (counters subtract, gauges keep ``now``'s value).

Business KPIs (:mod:`wsgi_observe.kpis`) are windowed too: counters and distributions
subtract (:func:`wsgi_observe.kpidata.kpis_delta`), gauges show their value now, and the
ring keeps the counters and distributions of each snapshot. Extending the Snapshot further:
a space of cumulative series (``dict[str, SeriesData]``) subtracts with
:func:`subtract_space` in :func:`window_snapshot`, and goes into the ring by adding its
field name to ``_SPACES`` (encoded and checked like ``endpoints``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import Optional

from ..metrics import Snapshot
from .diff import subtract_space, window_snapshot
from .entries import decode, encode
from .rings import _Decoded, _FileRing, _MemoryRing

__all__ = [
    "Windows",
    "decode",
    "encode",
    "WindowError",
    "parse_window",
    "subtract_space",
    "window_snapshot",
]

_log = logging.getLogger("wsgi_observe.windows")

_WINDOW_RE = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,6})?)([smh]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


class WindowError(ValueError):
    """A window that can't be had (malformed, longer than kept); one line saying why."""


def parse_window(text: str) -> float:
    """Seconds of ``"1m"``, ``"5m"``, ``"15m"``, ``"90s"``, ``"1h"`` or ``"300"`` (seconds).

    Raises :class:`WindowError` for anything else (empty, negative, zero, ``inf``, ...).
    """
    match = _WINDOW_RE.match(text.strip()) if isinstance(text, str) else None
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if not seconds > 0:
        shown = repr(text[:40] if isinstance(text, str) else text)
        raise WindowError(
            f"window must be a duration like 1m, 5m, 15m, 90s or a number of seconds, got {shown}"
        )
    return seconds


def _describe(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"  # "1h", as it was asked for (not "60m")
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"




# The ring ---------------------------------------------------------------------------------


class Windows:
    """A bounded ring of cumulative snapshots, and the windows and series it gives.

    Parameters: ``snapshot`` (gives the cumulative numbers now, e.g. a middleware's
    ``snapshot``); ``interval_s`` (seconds between snapshots, default 10); ``span_s``
    (seconds kept, default 900; 0 turns windows off); ``clock`` (wall-clock seconds, shared
    by the processes of a server; injectable for tests); ``directory`` (gives the state
    directory while this process shares its numbers, else None: the ring is in memory).
    Example::

        windows = Windows(middleware.snapshot, interval_s=10, span_s=900).start()
        windows.window_snapshot_for(300).endpoints["/api/leads"].count
        windows.stop()

    Reads: nothing from the environment (the middleware passes ``WSGI_OBSERVE_WINDOW_INTERVAL``
    and ``WSGI_OBSERVE_WINDOW_SPAN`` through its config).
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        interval_s: float = 10.0,
        span_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        directory: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        if not interval_s > 0 or not span_s >= 0 or (span_s and span_s < interval_s):
            raise ValueError("Windows needs interval_s > 0 and span_s 0 or at least interval_s")
        self.snapshot = snapshot
        self.interval_s = float(interval_s)
        self.span_s = float(span_s)
        self.clock = clock
        self._directory = directory or (lambda: None)
        self._memory = _MemoryRing()
        self._lock = threading.Lock()
        # (clock, time.time()) when first used: turns a snapshot's started_at (wall time)
        # into this clock's time, so an injected clock that jumps keeps the start in place.
        self._origin: Optional[tuple[float, float]] = None
        self.due_at = 0.0  # (monotonic) when the ticker offers the next snapshot
        self._decoded = _Decoded()
        self.failed = False  # the ticker warned once about this ring
        self._steps: dict[tuple[str, float, float], Snapshot] = {}  # series' finished steps
        _every.add(self)  # a forked child gets a fresh lock (see _after_fork)

    @property
    def enabled(self) -> bool:
        return self.span_s > 0

    @property
    def max_entries(self) -> int:
        """The most entries the ring holds."""
        return int(self.span_s / self.interval_s) + 2 if self.enabled else 0

    def _ring(self) -> _MemoryRing | _FileRing:
        directory = self._directory()
        if directory is None:
            return self._memory
        if self._memory.entries:
            self._memory = _MemoryRing()  # this process's own numbers from before sharing
        return _FileRing(directory)

    def _start_in_clock(self, now: Snapshot, at: float) -> float:
        """The server's start (``now.started_at``, wall time) on this ring's clock."""
        origin = self._origin
        if origin is None:
            origin = self._origin = (at, time.time())
        return origin[0] + (now.started_at - origin[1])

    def _zero(self, now: Snapshot, at: float, times: list[float]) -> float:
        """When every counter was zero: the server's start, or the oldest entry if that is
        older (the first process to tick made it when the server started; a process that
        joined later may place the start a bit later on an injected clock)."""
        start = self._start_in_clock(now, at)
        return min(start, times[0]) if times else start

    # Taking snapshots --------------------------------------------------------------------

    def tick(self, snapshot: Optional[Snapshot] = None) -> bool:
        """Put a snapshot in the ring if one is due (``snapshot``, or a fresh one); True if
        this call did. Old entries are dropped. Safe from any thread or process."""
        if not self.enabled:
            return False
        with self._lock:
            ring = self._ring()
            now = self.clock()
            if not self._due(ring.times(), now):
                return False
            with ring.writing() as mine:
                if not mine:
                    return False
                times = ring.times()  # another process may have written one meanwhile
                if not self._due(times, now):
                    return False
                taken = snapshot if snapshot is not None else self.snapshot()
                self._start_in_clock(taken, now)
                ring.add(now, encode(taken, now))
                # Kept: the entries of the last span (plus the newest one before it, the
                # baseline of the longest window after a gap); dropped: older ones, and any
                # from the future (the clock stepped back).
                horizon = now - self.span_s - self.interval_s
                older = [t for t in times if t < horizon]
                kept = older[-1:] + [t for t in times if horizon <= t <= now + 1]
                for t in times:
                    if t not in kept:
                        ring.drop(t)
                for t in kept[: max(len(kept) + 1 - self.max_entries, 0)]:
                    ring.drop(t)
            return True

    def _due(self, times: list[float], now: float) -> bool:
        """Whether a snapshot is due at ``now``: the newest entry that is not from the future
        is an interval old (entries from the future, after the clock stepped back, are
        dropped by the next write; one that can't be dropped, such as a directory planted
        under an entry's name, must not make every offer write)."""
        past = [t for t in times if t <= now + 1]
        return not past or now - past[-1] >= self.interval_s * 0.95

    def start(self) -> Windows:
        """Offer a snapshot every ``interval_s`` from this process's one ticker thread (a
        daemon; a forked child starts its own). The ring is held weakly: a middleware that
        is dropped stops being ticked."""
        if self.enabled:
            _ticker.add(self)
        return self

    def stop(self) -> None:
        """No more snapshots from the ticker thread (scrapes may still offer them)."""
        _ticker.discard(self)

    # Reading windows ---------------------------------------------------------------------

    def check(self, seconds: float) -> None:
        """Raise :class:`WindowError` unless a window of ``seconds`` can be given."""
        if not self.enabled:
            raise WindowError("recent windows are off (WSGI_OBSERVE_WINDOW_SPAN=0)")
        if seconds > self.span_s + 1e-9:
            raise WindowError(
                f"window {_describe(seconds)} is longer than the {_describe(self.span_s)} kept "
                "(WSGI_OBSERVE_WINDOW_SPAN)"
            )
        if seconds < self.interval_s - 1e-9:
            raise WindowError(
                f"window {_describe(seconds)} is shorter than the {_describe(self.interval_s)} "
                "between snapshots (WSGI_OBSERVE_WINDOW_INTERVAL)"
            )

    def _baseline(
        self,
        ring: _MemoryRing | _FileRing,
        times: list[float],
        target: float,
        start: float,
        loaded: dict[float, Optional[Snapshot]],
    ) -> tuple[float, Optional[Snapshot]]:
        """``(time, snapshot)`` of the newest entry at or before ``target`` (half an interval
        of slack); the server's start (None: every counter zero) when there is none.
        ``loaded`` caches the entries read so far."""
        slack = self.interval_s / 2
        for t in reversed(times):
            if t <= target + slack:
                if t not in loaded:
                    loaded[t] = ring.load(t, self._decoded)
                if loaded[t] is not None:
                    return t, loaded[t]
        return start, None

    def window_snapshot_for(self, seconds: float, now: Optional[Snapshot] = None) -> Snapshot:
        """What happened in the last ``seconds`` (about: ``window_s`` says exactly), as a
        Snapshot; ``now`` is the cumulative snapshot to end at (default: a fresh one)."""
        self.check(seconds)
        if now is None:
            now = self.snapshot()
        with self._lock:
            ring = self._ring()
            at = self.clock()
            times = ring.times()
            start = self._zero(now, at, times)
            t, before = self._baseline(ring, times, at - seconds, start, {})
        return window_snapshot(now, before, window_s=max(at - t, 0.0))

    def series(
        self, step_s: float = 60.0, span_s: float = 900.0, now: Optional[Snapshot] = None
    ) -> list[tuple[float, Snapshot]]:
        """``(end, snapshot of that step)`` over the last ``span_s`` seconds, oldest first
        (sparklines). Steps end on multiples of ``step_s`` (clock time), so a step, once
        over, is computed once and reused; the newest one runs from the last multiple to now
        and is shorter. Each step's ``window_s`` is its exact length: divide by it for a
        rate. Steps the ring does not reach back to are left out."""
        if not step_s > 0 or not span_s >= step_s:
            raise WindowError("series needs step_s > 0 and span_s at least step_s")
        self.check(span_s)
        if step_s < self.interval_s - 1e-9:
            raise WindowError(
                f"step {_describe(step_s)} is shorter than the {_describe(self.interval_s)} "
                "between snapshots"
            )
        if now is None:
            now = self.snapshot()
        with self._lock:
            ring = self._ring()
            at = self.clock()
            times = ring.times()
            start = self._zero(now, at, times)
            slack = self.interval_s / 2
            aligned = math.floor(at / step_s) * step_s
            # The entries nearest the step ends, from the last multiple of step_s back to
            # span_s ago (None: the server's start); the newest step runs on to now.
            picked: list[Optional[float]] = []
            for k in range(int(span_s / step_s) + 1):
                end = aligned - k * step_s
                if end < at - span_s - 1e-6 or (k and end + step_s <= start):
                    break  # older than asked, or a step that ended before the server started
                t = next((t for t in reversed(times) if t <= end + slack), None)
                picked.append(t)
                if t is None:
                    break  # the server's start: nothing older
            where = getattr(ring, "directory", "memory")
            cached, self._steps = self._steps, {}
            out: list[tuple[float, Snapshot]] = []
            newer_t: float = at
            newer: Optional[Snapshot] = now
            steps: list[tuple[float, Snapshot]] = []
            for older_t in picked:
                t0 = start if older_t is None else older_t
                if t0 >= newer_t:
                    continue  # the same entry again (a gap in the ring): no step
                key = (where, t0, newer_t)
                step = cached.get(key) if newer is not now else None
                if step is None:
                    older = None if older_t is None else ring.load(older_t, self._decoded)
                    if newer is None:
                        newer = ring.load(newer_t, self._decoded)
                    if newer is None or (older_t is not None and older is None):
                        break  # an unreadable entry (logged): nothing older is shown
                    step = window_snapshot(newer, older, window_s=newer_t - t0)
                if newer is not now:
                    self._steps[key] = step  # both ends are ring entries: it never changes
                steps.append((newer_t, step))
                newer_t, newer = t0, None
            out = steps[::-1]
        return out

    def size_bytes(self) -> int:
        """Bytes the ring's entries take (memory, or files in the state directory)."""
        with self._lock:
            return self._ring().size()


class _Ticker:
    """One daemon thread per process that offers every started ring a snapshot when due
    (however many middlewares a process builds: tests build thousands)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rings: weakref.WeakSet[Windows] = weakref.WeakSet()
        self.wake = threading.Event()
        self.pid = 0

    def add(self, windows: Windows) -> None:
        with self.lock:
            # The first offer one interval after the start: until then a window starts at
            # the server's start anyway (every counter zero), and scrapes offer theirs.
            windows.due_at = time.monotonic() + windows.interval_s
            self.rings.add(windows)
            if self.pid != os.getpid():  # none yet, or the parent's (not running here)
                self.pid = os.getpid()
                self.wake = threading.Event()
                thread = threading.Thread(
                    target=self.run, args=(self.wake,), name="wsgi_observe-windows", daemon=True
                )
                thread.start()
        self.wake.set()

    def discard(self, windows: Windows) -> None:
        with self.lock:
            self.rings.discard(windows)

    def run(self, wake: threading.Event) -> None:
        pid = os.getpid()
        while self.pid == pid:
            wait = 60.0
            with self.lock:
                rings = list(self.rings)
            windows = None
            for windows in rings:
                now = time.monotonic()
                if windows.due_at <= now:
                    windows.due_at = now + windows.interval_s
                    try:
                        windows.tick()
                    except Exception as error:  # numbers, never a dead thread
                        # Logged, not guarded: this thread serves every ring of the process,
                        # and an error here belongs to no request. Once per ring, then quiet.
                        level = logging.DEBUG if windows.failed else logging.WARNING
                        windows.failed = True
                        _log.log(level, "wsgi_observe: recent windows: no snapshot: %r", error)
                wait = min(wait, windows.due_at - time.monotonic())
            del rings, windows  # no strong reference while waiting
            wake.wait(max(wait, 0.01))
            wake.clear()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread is not running here, its lock may be held."""
        self.lock = threading.Lock()
        self.pid = 0


_ticker = _Ticker()
#: Every ring of this process, weakly.
_every: weakref.WeakSet[Windows] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child: the parent's ticker is not running here, and a ring's lock may
    have been held by a thread of the parent (the ticker or an alert monitor mid-snapshot,
    in a gunicorn master with ``--preload``): held for ever in the child, every window and
    dashboard there would hang."""
    _ticker.after_fork()
    for windows in list(_every):
        windows._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
