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

import contextlib
import errno
import fcntl
import itertools
import logging
import math
import os
import re
import sys
import threading
import time
import weakref
import zlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from operator import itemgetter, sub
from typing import Any, Optional

import orjson

from .endpoints import OVERFLOW
from .histograms import COUNTS_LEN
from .kpidata import (
    KIND_COUNTER,
    KIND_GAUGE,
    KpiFamily,
    KpiSeries,
    kpis_delta,
    parse_kpi_key,
)
from .metrics import SeriesData, Snapshot

__all__ = [
    "Windows",
    "WindowError",
    "parse_window",
    "subtract_space",
    "window_snapshot",
]

_log = logging.getLogger("wsgi_observe.windows")

#: Entries of the ring in the state directory: ``window-<milliseconds of the clock>``.
ENTRY_PREFIX = "window-"
_ENTRY_RE = re.compile(r"^window-([0-9]{1,16})$")
LOCK_FILE = "window.lock"
#: The Snapshot fields holding cumulative series (name -> SeriesData) that the ring keeps.
_SPACES = ("endpoints", "functions")
_FORMAT = 1
# Caps on what is read back from the state directory (the busiest real entry, 500
# endpoints x a few hundred buckets each, is a few hundred KB compressed).
_MAX_FILE_BYTES = 16 * 1024 * 1024
_MAX_RAW_BYTES = 64 * 1024 * 1024
_MAX_SERIES = 100_000
_MAX_KPIS = 10_000
_MAX_NAME = 1024
_MAX_LABEL = 64
_MAX_INT = 2**63 - 1
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


# Differences ------------------------------------------------------------------------------


# One dense row of HDR counts per thread, zero between uses (subtraction aligns buckets in C).
_dense = threading.local()


def _hist_minus(
    now: tuple[list[int], Sequence[int]], before: tuple[list[int], Sequence[int]]
) -> Optional[tuple[list[int], list[int]]]:
    """``now - before`` of two histograms in index order, the empty buckets left out; None
    when ``before`` has a bucket ``now`` lacks or a count went down (a reset)."""
    now_idx, now_counts = now
    old_idx, old_counts = before
    if not old_idx:
        return list(now_idx), list(now_counts)
    if now_idx == old_idx:
        aligned: Sequence[int] = old_counts
    else:
        row = getattr(_dense, "row", None)
        if row is None:
            row = _dense.row = [0] * COUNTS_LEN
        deque(map(row.__setitem__, old_idx, old_counts), maxlen=0)
        aligned = [row[i] for i in now_idx] if len(now_idx) < 2 else itemgetter(*now_idx)(row)
        deque(map(row.__setitem__, old_idx, itertools.repeat(0)), maxlen=0)
        if sum(aligned) != sum(old_counts):
            return None  # a bucket of before is not in now
    diffs = list(map(sub, now_counts, aligned))
    if diffs and min(diffs) < 0:
        return None
    return list(itertools.compress(now_idx, diffs)), [d for d in diffs if d]


def _minus(now: SeriesData, before: Optional[SeriesData]) -> SeriesData:
    """``now - before`` for one series; ``now`` itself when a counter went down (the series
    was reset: counted from zero again)."""
    if before is None:
        return now
    hist = _hist_minus(now.sorted_hist(), before.sorted_hist())
    old_by = before.by
    by = {k: v - old_by.get(k, 0) for k, v in now.by.items()}
    count, errors = now.count - before.count, now.errors - before.errors
    sum_ns = now.sum_ns - before.sum_ns
    if (
        hist is None
        or count < 0
        or errors < 0
        or sum_ns < 0
        or any(v < 0 for v in by.values())
        or any(k not in now.by for k in old_by)
    ):
        return now
    return SeriesData(
        count, errors, sum_ns, by={k: v for k, v in by.items() if v}, sorted_hist=hist
    )


def _added(parts: Sequence[SeriesData]) -> SeriesData:
    """The sum of ``parts`` (counts, labels and every HDR bucket)."""
    hist: dict[int, int] = {}
    by: dict[tuple[str, str], int] = {}
    for part in parts:
        for index, count in part.hist.items():
            hist[index] = hist.get(index, 0) + count
        for label, count in part.by.items():
            by[label] = by.get(label, 0) + count
    return SeriesData(
        count=sum(p.count for p in parts),
        errors=sum(p.errors for p in parts),
        sum_ns=sum(p.sum_ns for p in parts),
        hist=hist,
        by=by,
    )


def subtract_space(
    now: dict[str, SeriesData], before: dict[str, SeriesData]
) -> dict[str, SeriesData]:
    """Each series of ``now`` minus the same one of ``before``; series without any change
    are left out (an endpoint idle during the window does not show).

    With ``<overflow>`` in either: past ``max_endpoints`` the merged view of a server's
    processes keeps the busiest names and adds the rest into ``<overflow>`` (and the archive
    of exited workers folds its own), and which ones can change between snapshots. A name
    moved into ``<overflow>``, wholly or in part, would look reset (its whole history
    counted as the window's), one moved out would count its whole history under its name.
    So the names not in both, and those that went down, count as ``<overflow>`` on both
    sides: the window's totals and percentiles stay exact."""
    out = {}
    went_down = []
    for name, series in now.items():
        old = before.get(name)
        delta = _minus(series, old)
        if delta is series and old is not None:
            went_down.append(name)
        if delta.count:
            out[name] = delta
    if OVERFLOW not in now and OVERFLOW not in before:
        return out
    moved = (now.keys() ^ before.keys()).union(went_down)
    moved.discard(OVERFLOW)
    if not moved:
        return out
    for name in (*moved, OVERFLOW):
        out.pop(name, None)
    folded = [
        [space[name] for name in (*moved, OVERFLOW) if name in space] for space in (now, before)
    ]
    delta = _minus(_added(folded[0]), _added(folded[1]) if folded[1] else None)
    if delta.count:
        out[OVERFLOW] = delta
    return out


def window_snapshot(
    now: Snapshot, before: Optional[Snapshot], window_s: Optional[float] = None
) -> Snapshot:
    """What happened between ``before`` and ``now`` (everything, when ``before`` is None).

    Counters and histograms subtract; gauges (in-flight requests), the processes and the
    sharing state are ``now``'s; ``started_at`` stays the server's start (the uptime).
    ``window_s`` is the span covered (default: between the two snapshots' ``taken_at``).
    """
    if window_s is None:
        start = before.taken_at if before is not None else now.started_at
        window_s = max(now.taken_at - start, 0.0)
    if before is None:
        endpoints = {k: v for k, v in now.endpoints.items() if v.count}
        functions = {k: v for k, v in now.functions.items() if v.count}
    else:
        endpoints = subtract_space(now.endpoints, before.endpoints)
        functions = subtract_space(now.functions, before.functions)
    return Snapshot(
        endpoints=endpoints,
        functions=functions,
        inflight=now.inflight,
        started_at=now.started_at,
        taken_at=now.taken_at,
        processes=now.processes,
        state=now.state,
        # KPIs: counters and distributions subtract, gauges are now's.
        kpis=now.kpis if before is None else kpis_delta(now.kpis, before.kpis),
        window_s=window_s,
    )


# Entries: a cumulative snapshot as compact bytes, and back (checked like client input) ----


_MAGIC = b"WOR1"
_INDEXES = tuple(range(COUNTS_LEN))
_LITTLE = sys.byteorder == "little"


def _pack(header: dict[str, Any], gaps: array[int], counts: array[int]) -> bytes:
    """``WOR1``, the header's length (4 bytes), the header (JSON), every bucket's index gap
    (2 bytes each) and count (8 bytes each), little-endian; compressed."""
    if not _LITTLE:
        gaps, counts = array("H", gaps), array("q", counts)
        gaps.byteswap()
        counts.byteswap()
    head = orjson.dumps(header)
    body = b"".join(
        (_MAGIC, len(head).to_bytes(4, "little"), head, gaps.tobytes(), counts.tobytes())
    )
    return zlib.compress(body, 1)


def encode(snapshot: Snapshot, t: float) -> bytes:
    """``snapshot`` taken at clock time ``t`` as compact bytes: a JSON header with, per
    series, ``[name, count, errors, sum_ns, [[label, label, n], ...], buckets]``, then the
    buckets of every series as binary arrays (decoding them is C work, not JSON's)."""
    header: dict[str, Any] = {"v": _FORMAT, "t": t, "started_at": snapshot.started_at}
    gaps: array[int] = array("H")
    counts: array[int] = array("q")
    for space in _SPACES:
        rows = []
        for name, series in getattr(snapshot, space).items():
            indexes, hist = series.sorted_hist()
            gaps.extend(map(sub, indexes, itertools.chain((0,), indexes)))
            counts.extend(hist)
            labels = [[a, b, n] for (a, b), n in series.by.items()]
            rows.append([name, series.count, series.errors, series.sum_ns, labels, len(indexes)])
        header[space] = rows
    header["kpis"] = _encode_kpis(snapshot.kpis)
    return _pack(header, gaps, counts)


def _int64(value: Any) -> Any:
    """An integer within int64, as the ring's JSON header can hold it: a counter summed
    over many processes may pass 2**63 and stays at the top, as it does in ``/metrics``."""
    if isinstance(value, int):
        return min(max(value, -(2**63)), 2**63 - 1)
    return value


def _encode_kpis(kpis: dict[str, KpiFamily]) -> list[Any]:
    """Counters and distributions (gauges need no past: a window shows their value now):
    ``[name, kind, unit, help, label names, mode, buckets, max series, [[label values,
    value, [[bucket, count], ...], sum], ...]]``."""
    out = []
    for family in kpis.values():
        if family.kind == KIND_GAUGE:
            continue
        series = [
            [
                list(labels),
                _int64(one.value),
                [[i, _int64(c)] for i, c in sorted(one.hist.items())],
                _int64(one.sum),
            ]
            for labels, one in family.series.items()
        ]
        out.append(
            [
                family.name,
                family.kind,
                family.unit,
                family.help,
                list(family.labels),
                family.mode,
                list(family.buckets),
                family.max_series,
                series,
            ]
        )
    return out


def _decode_kpis(items: Any) -> dict[str, KpiFamily]:
    """The KPIs of an entry, checked like :func:`parse_kpi_key` checks the state files."""
    if type(items) is not list or len(items) > _MAX_KPIS:
        raise ValueError("kpis is not a sane list")
    out: dict[str, KpiFamily] = {}
    total = 0
    for item in items:
        if type(item) is not list or len(item) != 9 or type(item[8]) is not list:
            raise ValueError("a KPI is not a list of nine")
        definition = parse_kpi_key(["k", "d", *item[:8]])
        if definition is None or definition[3] == KIND_GAUGE:
            raise ValueError("a KPI's definition is not sane")
        _, _, name, kind, unit, help_text, names, mode, buckets, max_series = definition
        total += len(item[8])
        if total > _MAX_SERIES:
            raise ValueError("too many KPI series")
        family = KpiFamily(name, kind, help_text, unit, names, mode, buckets, {}, max_series)
        for row in item[8]:
            if type(row) is not list or len(row) != 4:
                raise ValueError("a KPI series is not a list of four")
            key = parse_kpi_key(["k", "c", name, row[0]])
            if key is None or len(key[3]) != len(names):
                raise ValueError("a KPI series has no sane labels")
            value, pairs, total_sum = row[1], row[2], row[3]
            if kind == KIND_COUNTER:
                family.series[key[3]] = KpiSeries(value=_count(value))
                continue
            if type(pairs) is not list or len(pairs) > COUNTS_LEN:
                raise ValueError("a KPI distribution has no sane buckets")
            hist = {}
            for pair in pairs:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("a KPI bucket is not [index, count]")
                index, count = _count(pair[0]), _count(pair[1])
                if index >= COUNTS_LEN:
                    raise ValueError("a KPI bucket index is out of range")
                hist[index] = count
            if type(total_sum) not in (int, float) or not 0 <= total_sum < 1e300:
                raise ValueError("a KPI distribution's sum is not sane")
            family.series[key[3]] = KpiSeries(hist=hist, sum=float(total_sum))
        out[name] = family
    return out


def _count(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise ValueError("a count is not a non-negative integer")
    return value


def _text(value: Any, limit: int) -> str:
    if type(value) is not str or len(value) > limit:
        raise ValueError("a name is not a string of sane length")
    return value


def _series(
    item: Any, gaps: array[int], counts: array[int], start: int
) -> tuple[str, SeriesData, int]:
    """``(name, series, where the next series' buckets start)`` of one header row."""
    if type(item) is not list or len(item) != 6:
        raise ValueError("a series is not a list of six")
    name = _text(item[0], _MAX_NAME)
    count, errors, sum_ns = _count(item[1]), _count(item[2]), _count(item[3])
    labels, buckets = item[4], item[5]
    if type(labels) is not list or len(labels) > 1000:
        raise ValueError("a series has no sane list of labels")
    if type(buckets) is not int or not 0 <= buckets <= COUNTS_LEN:
        raise ValueError("a series has no sane number of buckets")
    by: dict[tuple[str, str], int] = {}
    for label in labels:
        if type(label) is not list or len(label) != 3:
            raise ValueError("a label is not [name, name, count]")
        by[(_text(label[0], _MAX_LABEL), _text(label[1], _MAX_LABEL))] = _count(label[2])
    end = start + buckets
    if end > len(gaps):
        raise ValueError("fewer buckets than the header says")
    indexes: list[int] = []
    if buckets:
        own = gaps[start:end]
        # Ascending: every gap after the first at least 1; in range.
        if buckets > 1 and min(own[1:]) < 1:
            raise ValueError("bucket indexes are not ascending")
        last = sum(own)
        if last >= COUNTS_LEN:
            raise ValueError("a bucket index is out of range")
        # The same int objects for every entry's indexes (most are above the small ints
        # Python shares): a decoded entry takes half the memory.
        indexes = list(map(_INDEXES.__getitem__, itertools.accumulate(own)))
    return (
        name,
        SeriesData(count, errors, sum_ns, by=by, sorted_hist=(indexes, counts[start:end].tolist())),
        end,
    )


def decode(data: bytes) -> tuple[float, Snapshot]:
    """``(t, snapshot)`` of an entry; ``ValueError`` unless it has exactly the shape
    :func:`encode` writes (a planted file is refused, never trusted)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, _MAX_RAW_BYTES)
    except zlib.error as error:
        raise ValueError(f"not compressed data ({error})") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("too large or truncated")
    if raw[:4] != _MAGIC or len(raw) < 8:
        raise ValueError("not a ring entry")
    size = int.from_bytes(raw[4:8], "little")
    header = orjson.loads(raw[8 : 8 + size])
    if type(header) is not dict or header.get("v") != _FORMAT:
        raise ValueError("not a ring entry of this version")
    t: Any = header.get("t")
    started_at: Any = header.get("started_at")
    if type(t) not in (int, float) or type(started_at) not in (int, float):
        raise ValueError("no time")
    if not (math.isfinite(t) and math.isfinite(started_at)):
        raise ValueError("no finite time")
    rows: list[Any] = [header.get(space) for space in _SPACES]
    if any(type(row) is not list for row in rows) or sum(len(row) for row in rows) > _MAX_SERIES:
        raise ValueError("no sane lists of series")
    body = raw[8 + size :]
    if len(body) % 10:
        raise ValueError("the buckets are not whole")
    total = len(body) // 10
    gaps, counts = array("H"), array("q")
    gaps.frombytes(body[: 2 * total])
    counts.frombytes(body[2 * total :])
    if not _LITTLE:
        gaps.byteswap()
        counts.byteswap()
    if total and min(counts) < 0:
        raise ValueError("a bucket count is negative")
    spaces: list[dict[str, SeriesData]] = []
    start = 0
    for items in rows:
        space: dict[str, SeriesData] = {}
        for item in items:
            name, series, start = _series(item, gaps, counts, start)
            space[name] = series
        spaces.append(space)
    if start != total:
        raise ValueError("more buckets than the header says")
    snapshot = Snapshot(
        endpoints=spaces[0],
        functions=spaces[1],
        inflight=0,
        started_at=float(started_at),
        taken_at=float(t),
        kpis=_decode_kpis(header.get("kpis", [])),
    )
    return float(t), snapshot


# Where the ring is kept --------------------------------------------------------------------


class _Decoded:
    """The last few entries decoded (the baselines of the 1, 5 and 15-minute windows a
    dashboard asks for again and again), so each is read and checked once."""

    def __init__(self, size: int = 3) -> None:
        self.size = size
        self.items: OrderedDict[Any, Snapshot] = OrderedDict()

    def get(self, key: Any) -> Optional[Snapshot]:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
        return found

    def put(self, key: Any, snapshot: Snapshot) -> Snapshot:
        self.items[key] = snapshot
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return snapshot


class _MemoryRing:
    """Entries in this process's memory: a single process, or numbers not shared."""

    def __init__(self) -> None:
        self.entries: deque[tuple[float, bytes]] = deque()

    def times(self) -> list[float]:
        return [t for t, _ in self.entries]

    def load(self, t: float, cache: _Decoded) -> Optional[Snapshot]:
        key = ("memory", t)
        found = cache.get(key)
        if found is not None:
            return found
        for when, data in self.entries:
            if when == t:
                return cache.put(key, decode(data)[1])
        return None

    @contextlib.contextmanager
    def writing(self) -> Any:
        yield True  # the caller holds the Windows lock

    def add(self, t: float, data: bytes) -> None:
        self.entries.append((t, data))

    def drop(self, t: float) -> None:
        self.entries = deque((when, data) for when, data in self.entries if when != t)

    def size(self) -> int:
        return sum(len(data) for _, data in self.entries)


class _FileRing:
    """Entries as files in the server's private state directory (see statedir.py)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.listed: Optional[list[str]] = None  # the directory's names, as last listed

    def _names(self) -> dict[float, str]:
        found: dict[float, str] = {}
        try:
            names = os.listdir(self.directory)
        except OSError:
            return found
        self.listed = names
        for name in names:
            match = _ENTRY_RE.match(name)
            if match:
                found[int(match.group(1)) / 1000] = name
        return found

    def times(self) -> list[float]:
        return sorted(self._names())

    def load(self, t: float, cache: _Decoded) -> Optional[Snapshot]:
        from .multiprocess.statedir import read_regular

        name = f"{ENTRY_PREFIX}{round(t * 1000)}"
        path = os.path.join(self.directory, name)
        try:
            st = os.lstat(path)
            key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
            found = cache.get(key)
            if found is not None:
                return found
            when, snapshot = decode(read_regular(path, _MAX_FILE_BYTES))
        except FileNotFoundError:
            return None  # dropped meanwhile
        except (OSError, ValueError) as error:
            _log.warning("wsgi_observe: ignoring the ring entry %s: %s", name, error)
            return None
        if round(when * 1000) != round(t * 1000):
            _log.warning("wsgi_observe: ignoring the ring entry %s: its time is not its name", name)
            return None
        return cache.put(key, snapshot)

    @contextlib.contextmanager
    def writing(self) -> Any:
        """True while this process holds the ring's lock (False: another one writes now)."""
        path = os.path.join(self.directory, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as error:
            _log.debug("wsgi_observe: no ring lock: %s", error)
            yield False
            return
        from .multiprocess.statedir import hand_over

        try:
            import stat

            if not stat.S_ISREG(os.fstat(fd).st_mode):
                yield False
                return
            # Root (a gunicorn master that drops privileges) makes it the workers' too, or
            # they could never take the lock and write an entry.
            with contextlib.suppress(OSError):
                hand_over(fd, self.directory)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    _log.debug("wsgi_observe: ring lock: %s", error)
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def add(self, t: float, data: bytes) -> None:
        from .multiprocess.statedir import remove_stale_temps, write_atomic

        write_atomic(self.directory, f"{ENTRY_PREFIX}{round(t * 1000)}", data)
        # A writer SIGKILLed between creating its temporary file and renaming it left one.
        remove_stale_temps(self.directory, self.listed)

    def drop(self, t: float) -> None:
        name = self._names().get(t)
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, name))

    def size(self) -> int:
        total = 0
        for name in self._names().values():
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(self.directory, name)).st_size
        return total


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
