"""Per-endpoint counters and HDR histograms, stored as integer slots.

Every number the middleware keeps is one integer slot in a flat table: request counts by
endpoint, method and status class, error counts, the sum of durations (ns) and one slot per
HDR bucket in use. Recording a request is a few dict lookups and slot increments under an
uncontended lock (threaded workers), nothing more.

The table is a Python list in a single process. Under gunicorn with
``wsgi_observe.gunicorn`` the table is a memory-mapped file per worker (see ``workers.py``),
so counts survive a worker's death, even by SIGKILL, and any worker can merge everyone's
counts at scrape time. The store does not care which: it only calls ``table.alloc(key)``.

Keys are tuples: ``("c", ns, name, label)`` count, ``("h", ns, name, bucket)`` histogram
bucket, ``("s", ns, name)`` sum of durations in ns, ``("e", ns, name)`` errors, and
``("g", "inflight")``. ``ns`` is ``"ep"`` for endpoints and ``"fn"`` for functions timed by
``performance_tracking``.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from .histograms import bucket_index

__all__ = [
    "INFLIGHT",
    "Layout",
    "MemoryTable",
    "MetricsStore",
    "SeriesData",
    "Snapshot",
    "Table",
    "process_store",
]

INFLIGHT = ("g", "inflight")
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Table(Protocol):
    """Where the slots live: ``values[slot]`` is an int; ``alloc`` makes a new slot."""

    values: Any
    keys: list[tuple[Any, ...]]

    def alloc(self, key: tuple[Any, ...]) -> int: ...


class MemoryTable:
    """Slots in a plain list: the single-process table. ``alloc`` runs under the store's lock."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.keys: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def alloc(self, key: tuple[Any, ...]) -> int:
        with self._lock:  # several stores may share one table
            self.keys.append(key)
            self.values.append(0)
            return len(self.keys) - 1


class _Series:
    """The slot numbers of one endpoint or function, cached so recording skips key tuples."""

    __slots__ = ("by", "errors", "hist", "name", "ns", "sum")

    def __init__(self, table: Table, ns: str, name: str) -> None:
        self.ns = ns
        self.name = name
        self.by: dict[str, int] = {}
        self.hist: dict[int, int] = {}
        self.sum = table.alloc(("s", ns, name))
        self.errors = table.alloc(("e", ns, name))


class SeriesData:
    """Merged numbers of one endpoint or function.

    ``hist`` maps HDR bucket index to count. A snapshot builds it lazily: it hands over the
    buckets already in index order (``sorted_hist()``), which is all percentiles need.
    """

    __slots__ = ("_hist", "_sorted", "by", "count", "errors", "sum_ns")

    def __init__(
        self,
        count: int = 0,
        errors: int = 0,
        sum_ns: int = 0,
        hist: Optional[dict[int, int]] = None,
        by: Optional[dict[tuple[str, str], int]] = None,
        *,
        sorted_hist: Optional[tuple[list[int], Sequence[int]]] = None,
    ) -> None:
        self.count = count
        self.errors = errors
        self.sum_ns = sum_ns
        self.by = {} if by is None else by
        self._hist = hist if hist is not None or sorted_hist is not None else {}
        self._sorted = sorted_hist

    @property
    def hist(self) -> dict[int, int]:
        if self._hist is None:
            indexes, counts = self._sorted  # type: ignore[misc]
            self._hist = dict(zip(indexes, counts))
        return self._hist

    @hist.setter
    def hist(self, value: dict[int, int]) -> None:
        self._hist = value
        self._sorted = None

    def sorted_hist(self) -> tuple[list[int], Sequence[int]]:
        """``(bucket indexes ascending, their counts)``."""
        if self._sorted is None:
            indexes = sorted(self._hist or ())
            hist = self._hist or {}
            self._sorted = (indexes, [hist[i] for i in indexes])
        return self._sorted

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeriesData):
            return NotImplemented
        return (self.count, self.errors, self.sum_ns, self.by, self.hist) == (
            other.count,
            other.errors,
            other.sum_ns,
            other.by,
            other.hist,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"SeriesData(count={self.count}, errors={self.errors}, sum_ns={self.sum_ns}, "
            f"hist={self.hist!r}, by={self.by!r})"
        )


@dataclass
class Snapshot:
    """Plain data for exposition: what every format renders from."""

    endpoints: dict[str, SeriesData]
    functions: dict[str, SeriesData]
    inflight: int
    started_at: float
    taken_at: float
    processes: list[dict[str, Any]] = field(default_factory=list)
    #: gives every endpoint's histogram summed, ``(indexes ascending, counts)``, on demand
    #: (only the JSON document needs it, so a Prometheus scrape never pays for it)
    overall_fn: Optional[Callable[[], tuple[list[int], list[int]]]] = None

    @property
    def overall(self) -> Optional[tuple[list[int], list[int]]]:
        return self.overall_fn() if self.overall_fn is not None else None


def _pick(values: Any, positions: list[int]) -> tuple[int, ...]:
    """``values`` at ``positions``, at C speed."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)(values)  # type: ignore[no-any-return]
    if positions:
        return (values[positions[0]],)
    return ()


class _Positions:
    """Where one series' numbers sit in a flat list of values."""

    __slots__ = (
        "count_pos",
        "errors_pos",
        "hist_idx",
        "hist_pos",
        "labels",
        "sorted_idx",
        "sorted_pos",
        "sum_pos",
        "unique",
    )

    def __init__(self) -> None:
        self.hist_idx: list[int] = []
        self.hist_pos: list[int] = []
        # The same buckets in index order, rebuilt only when a bucket is added.
        self.sorted_idx: list[int] = []
        self.sorted_pos: list[int] = []
        self.unique = True
        self.labels: list[tuple[str, str]] = []
        self.count_pos: list[int] = []
        self.sum_pos: list[int] = []
        self.errors_pos: list[int] = []


class Layout:
    """Turns a flat list of values plus their keys into series, with O(series) Python work.

    The keys are parsed once (``update`` only reads keys it has not seen); each snapshot
    then picks values with ``operator.itemgetter`` and builds dicts with ``zip``, so a
    scrape of hundreds of endpoints stays in the low milliseconds.
    """

    def __init__(self) -> None:
        self.seen = 0
        self.series: dict[tuple[str, str], _Positions] = {}
        self.inflight: list[int] = []
        # Every endpoint's positions of each HDR bucket: the overall histogram, summed in C.
        self.overall: dict[int, list[int]] = {}
        self.overall_order: list[int] = []

    def update(self, keys: list[tuple[Any, ...]]) -> None:
        for position in range(self.seen, len(keys)):
            key = keys[position]
            kind = key[0]
            if kind == "g":
                if key == INFLIGHT:
                    self.inflight.append(position)
                continue
            where = self.series.get((key[1], key[2]))
            if where is None:
                where = self.series[(key[1], key[2])] = _Positions()
            if kind == "h":
                where.hist_idx.append(key[3])
                where.hist_pos.append(position)
                if key[1] == "ep":
                    self.overall.setdefault(key[3], []).append(position)
            elif kind == "c":
                where.labels.append((key[3], key[4]))
                where.count_pos.append(position)
            elif kind == "s":
                where.sum_pos.append(position)
            elif kind == "e":
                where.errors_pos.append(position)
        self.seen = len(keys)

    def build(self, values: Any) -> tuple[dict[str, SeriesData], dict[str, SeriesData], int]:
        spaces: dict[str, dict[str, SeriesData]] = {"ep": {}, "fn": {}}
        for (space, name), where in self.series.items():
            target = spaces.get(space)
            if target is None:
                continue
            counts = _pick(values, where.count_pos)
            by: dict[tuple[str, str], int] = {}
            if len(set(where.labels)) == len(where.labels):
                by = dict(zip(where.labels, counts))
            else:  # the same label twice (merged from several sources): add them up
                for label, value in zip(where.labels, counts):
                    by[label] = by.get(label, 0) + value
            if len(where.sorted_idx) != len(where.hist_idx):
                order = sorted(zip(where.hist_idx, where.hist_pos))
                where.sorted_idx = [index for index, _ in order]
                where.sorted_pos = [position for _, position in order]
                where.unique = len(set(where.sorted_idx)) == len(where.sorted_idx)
            if where.unique:
                hist: Optional[dict[int, int]] = None
                ordered = (where.sorted_idx, _pick(values, where.sorted_pos))
            else:  # the same bucket twice (merged from several sources): add them up
                hist = {}
                for index, value in zip(where.hist_idx, _pick(values, where.hist_pos)):
                    hist[index] = hist.get(index, 0) + value
                ordered = None
            target[name] = SeriesData(
                count=sum(counts),
                errors=sum(_pick(values, where.errors_pos)),
                sum_ns=sum(_pick(values, where.sum_pos)),
                hist=hist,
                by=by,
                sorted_hist=ordered,
            )
        inflight = sum(_pick(values, self.inflight))
        return spaces["ep"], spaces["fn"], inflight

    def overall_hist(self, values: Any) -> tuple[list[int], list[int]]:
        """All endpoints' histograms summed, as ``(indexes ascending, counts)``."""
        if len(self.overall_order) != len(self.overall):
            self.overall_order = sorted(self.overall)
        overall = self.overall
        return self.overall_order, [sum(_pick(values, overall[i])) for i in self.overall_order]


class MetricsStore:
    """Counts and latency histograms per endpoint and per tracked function.

    The middleware records requests straight into the slots (``_wsgi.record``);
    ``record_call`` times functions; ``snapshot`` gives plain data. Example::

        store = MetricsStore()
        store.record_call("reports.build", 1_250_000, failed=False)
        store.snapshot().functions["reports.build"].count  # 1
    """

    def __init__(self, table: Table | None = None) -> None:
        self.lock = threading.Lock()
        self.started_at = time.time()
        self.use_table(table if table is not None else MemoryTable())

    def use_table(self, table: Table) -> None:
        """Start recording into ``table`` (a fresh one: used after a gunicorn fork)."""
        with self.lock:
            self.table = table
            self.values = table.values
            self.endpoints: dict[str, _Series] = {}
            self.functions: dict[str, _Series] = {}
            #: raw path -> series, filled by the middleware's slow path (bounded there)
            self.by_path: dict[str, _Series] = {}
            self.inflight_slot = table.alloc(INFLIGHT)
            self._layout = Layout()

    def new_series(self, ns: str, name: str) -> _Series:
        space = self.endpoints if ns == "ep" else self.functions
        with self.lock:
            series = space.get(name)
            if series is None:
                series = space[name] = _Series(self.table, ns, name)
        return series

    def new_label(self, series: _Series, label: str) -> int:
        with self.lock:
            slot = series.by.get(label)
            if slot is None:
                slot = series.by[label] = self.table.alloc(("c", series.ns, series.name, label, ""))
        return slot

    def new_bucket(self, series: _Series, index: int) -> int:
        with self.lock:
            slot = series.hist.get(index)
            if slot is None:
                slot = series.hist[index] = self.table.alloc(("h", series.ns, series.name, index))
        return slot

    def request_started(self) -> None:
        self.values[self.inflight_slot] += 1

    def new_count(self, series: _Series, label: str, method: str, status: str | None) -> int:
        cls = status[0] if status else "5"
        if cls not in "12345" or not cls:
            cls = "5"
        known = method in KNOWN_METHODS
        if not known:
            method = "OTHER"
        with self.lock:
            slot = series.by.get(method + cls)
            if slot is None:
                slot = self.table.alloc(("c", series.ns, series.name, method, cls + "xx"))
                series.by[method + cls] = slot
            if known:
                # Unknown methods are not cached under their own label: a client sending
                # random methods must not grow this dict.
                series.by[label] = slot
        return slot

    def record_call(self, name: str, duration_ns: int, failed: bool) -> None:
        """Count one call of a function timed by ``performance_tracking``."""
        label = "error" if failed else "ok"
        index = bucket_index(duration_ns // 1000)
        values = self.values
        series = self.functions.get(name)
        if series is None:
            series = self.new_series("fn", name)
        slot = series.by.get(label)
        if slot is None:
            slot = self.new_label(series, label)
        values[slot] += 1
        slot = series.hist.get(index)
        if slot is None:
            slot = self.new_bucket(series, index)
        values[slot] += 1
        values[series.sum] += duration_ns
        if failed:
            values[series.errors] += 1

    def snapshot(self) -> Snapshot:
        """This process's numbers as plain data."""
        with self.lock:
            keys = self.table.keys
            layout = self._layout
            layout.update(keys)
            values = self.values[: len(keys)]
            values = values.tolist() if isinstance(values, memoryview) else values
        endpoints, functions, inflight = layout.build(values)
        snapshot = Snapshot(endpoints, functions, inflight, self.started_at, time.time())
        snapshot.overall_fn = lambda: layout.overall_hist(values)
        return snapshot


_process_store: MetricsStore | None = None
_process_lock = threading.Lock()


def process_store() -> MetricsStore:
    """The process-wide store: the middleware's default, and where functions are timed.

    One per process, like prometheus_client's default registry; under gunicorn each worker
    process moves it onto its own state file after the fork.
    """
    global _process_store
    if _process_store is None:
        with _process_lock:
            if _process_store is None:
                _process_store = MetricsStore()
    return _process_store
