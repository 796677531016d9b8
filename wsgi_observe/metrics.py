"""Per-endpoint counters and HDR histograms, stored as integer slots.

Every number the middleware keeps is one integer slot in a flat table: request counts by
endpoint, method and status class, error counts, the sum of durations (ns) and one slot per
HDR bucket in use. Recording a request is a few dict lookups and slot increments under an
uncontended lock (threaded workers), nothing more.

The table is a Python list in a single process. When the app runs in several processes
(gunicorn, uWSGI, ...) the table is a memory-mapped file per process (see
:mod:`wsgi_observe.multiprocess`), so counts survive a worker's death, even by SIGKILL, and
any worker can merge everyone's counts at scrape time. The store does not care which: it
only calls ``table.alloc(key)``.

Keys are tuples: ``("c", ns, name, label)`` count, ``("h", ns, name, bucket)`` histogram
bucket, ``("s", ns, name)`` sum of durations in ns, ``("e", ns, name)`` errors, and
``("g", "inflight")``. ``ns`` is ``"ep"`` for endpoints and ``"fn"`` for functions timed by
``performance_tracking``.
"""

from __future__ import annotations

import operator
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol

from .histograms import MAX_US, bucket_index
from .kpidata import KpiFamily, KpiLayout

if TYPE_CHECKING:
    from ._wsgi import Exchange
    from .endpoints import EndpointNames

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
        self.pid = os.getpid()  # a forked child inherits a copy: its counts are the parent's
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
    #: how the numbers are shared across processes (``shared``, ``state_dir``, ``problem``)
    state: dict[str, Any] = field(default_factory=dict)
    #: business KPIs by family name (:mod:`wsgi_observe.kpis`): plain data, counters and
    #: distributions only grow (``kpidata.kpis_delta`` subtracts two snapshots)
    kpis: dict[str, KpiFamily] = field(default_factory=dict)
    #: gives every endpoint's histogram summed, ``(indexes ascending, counts)``, on demand
    #: (only the JSON document needs it, so a Prometheus scrape never pays for it)
    overall_fn: Optional[Callable[[], tuple[list[int], list[int]]]] = None
    #: the seconds it covers when it is a recent window (see :mod:`wsgi_observe.windows`);
    #: None: everything since the server started
    window_s: Optional[float] = None

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
        self.kpis = KpiLayout()

    def update(self, keys: list[tuple[Any, ...]], count: Optional[int] = None) -> None:
        """Parse the keys not seen yet, up to ``count`` (default: all of them)."""
        end = len(keys) if count is None else count
        for position in range(self.seen, end):
            key = keys[position]
            kind = key[0]
            if kind == "k":
                self.kpis.add(key, position)
                continue
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
        self.seen = max(self.seen, end)

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
        """All endpoints' histograms summed, as ``(indexes ascending, counts)``.

        ``values`` may be shorter than what the layout knows by now (a snapshot taken before
        another scrape parsed new keys): positions past its end are left out, and since
        positions only grow, those are exactly the keys that snapshot did not have.
        """
        overall = dict(self.overall)  # another thread may add buckets meanwhile
        order = self.overall_order
        if len(order) != len(overall):
            order = self.overall_order = sorted(overall)
        size = len(values)
        indexes: list[int] = []
        counts: list[int] = []
        for index in order:
            positions = overall.get(index)
            if not positions:
                continue
            if positions[-1] >= size:
                positions = [p for p in positions if p < size]
                if not positions:
                    continue
            indexes.append(index)
            counts.append(sum(_pick(values, positions)))
        return indexes, counts


class MetricsStore:
    """Counts and latency histograms per endpoint and per tracked function.

    The middleware records each finished request with :meth:`record_request`;
    ``record_call`` times functions; ``snapshot`` gives plain data. Example::

        store = MetricsStore()
        store.record_call("reports.build", 1_250_000, failed=False)
        store.snapshot().functions["reports.build"].count  # 1
    """

    def __init__(self, table: Table | None = None) -> None:
        self.lock = threading.Lock()
        # One snapshot at a time parses keys into the layout and reads it: a scrape in one
        # thread must never see positions another scrape added for values it did not copy.
        self._snapshot_lock = threading.Lock()
        self.started_at = time.time()
        #: KPIs defined on this store by name (wsgi_observe.kpis), kept across tables
        self.kpi_families: dict[str, Any] = {}
        self.use_table(table if table is not None else MemoryTable())

    def use_table(self, table: Table) -> None:
        """Start recording into ``table`` (a fresh one: used when the app starts to run in
        several processes, before its first request is counted)."""
        with self._snapshot_lock, self.lock:
            self.table = table
            self.values = table.values
            self.endpoints: dict[str, _Series] = {}
            self.functions: dict[str, _Series] = {}
            #: raw path -> series, filled by the slow path of record_request (bounded there)
            self.by_path: dict[str, _Series] = {}
            self.inflight_slot = table.alloc(INFLIGHT)
            self._layout = Layout()
            # KPI slots of this table (wsgi_observe.kpis): a KPI bound to an older table
            # sees the generation change and asks for its slots again.
            self.kpi_slots: dict[tuple[Any, ...], int] = {}
            self._kpi_scanned = 0
            self.kpi_id = uuid.uuid4().hex
            self.kpi_generation = getattr(self, "kpi_generation", 0) + 1

    def kpi_slot(self, key: tuple[Any, ...], definition: tuple[Any, ...]) -> int:
        """The slot of KPI ``key`` in this store's table (made on first use, after the
        KPI's ``definition`` key). A key the table already holds (carried over from memory
        when the process started to share its numbers) keeps its slot."""
        with self.lock:
            slots = self.kpi_slots
            keys = self.table.keys
            if len(keys) > self._kpi_scanned:
                for position in range(self._kpi_scanned, len(keys)):
                    if keys[position][0] == "k":
                        slots.setdefault(keys[position], position)
                self._kpi_scanned = len(keys)
            if definition not in slots:
                slots[definition] = self.table.alloc(definition)
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = self.table.alloc(key)
            self._kpi_scanned = len(self.table.keys)
            self.values = self.table.values
        return slot

    def new_series(self, ns: str, name: str) -> _Series:
        space = self.endpoints if ns == "ep" else self.functions
        with self.lock:
            series = space.get(name)
            if series is None:
                series = space[name] = _Series(self.table, ns, name)
                self.values = self.table.values  # a table may move its values (full disk)
        return series

    def new_label(self, series: _Series, label: str) -> int:
        with self.lock:
            slot = series.by.get(label)
            if slot is None:
                slot = series.by[label] = self.table.alloc(("c", series.ns, series.name, label, ""))
                self.values = self.table.values
        return slot

    def new_bucket(self, series: _Series, index: int) -> int:
        with self.lock:
            slot = series.hist.get(index)
            if slot is None:
                slot = series.hist[index] = self.table.alloc(("h", series.ns, series.name, index))
                self.values = self.table.values
        return slot

    def new_count(self, series: _Series, label: str, method: str, cls: str) -> int:
        known = method in KNOWN_METHODS
        if not known:
            method = "OTHER"
        with self.lock:
            slot = series.by.get(method + cls)
            if slot is None:
                slot = self.table.alloc(("c", series.ns, series.name, method, cls + "xx"))
                series.by[method + cls] = slot
                self.values = self.table.values
            if known:
                # Unknown methods are not cached under their own label: a client sending
                # random methods must not grow this dict.
                series.by[label] = slot
        return slot

    def record_request(self, exchange: Exchange, duration_ns: int, names: EndpointNames) -> str:
        """Count one finished request and return its endpoint name.

        Inlined on purpose (no helper calls on the common path): the series from the path
        cache, then a handful of slot increments. A status that is not a status line
        (``""``, ``b"200 OK"``, ``200``) counts as 5xx: the server answers it with an error.
        The in-flight count is the caller's (it must drop even if this raises).
        """
        environ = exchange.environ
        status = exchange.status
        try:
            cls = _CLASS_OF[status[0]]
        except (KeyError, TypeError, IndexError):
            cls = "5"
            status = None
        series = None
        named = environ.get("wsgi_observe.endpoint")
        if named is not None:
            series = self.endpoints.get(named)  # a name seen (and admitted) before
        elif cls != "4":
            # A path seen before, not a 4xx, not named by the app. Only paths without a
            # framework template are ever cached (see _series_for).
            series = self.by_path.get(environ.get("PATH_INFO", ""))
        if series is None:
            series = self._series_for(environ, status, cls, names)
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            label = method + cls
        except TypeError:  # not a str (a server that broke PEP 3333): counted as OTHER
            method = "OTHER"
            label = method + cls
        slot = series.by.get(label)
        if slot is None:
            slot = self.new_count(series, label, method, cls)
        values = self.values
        values[slot] += 1
        us = duration_ns // 1000
        if us > 255:  # histograms.bucket_index, inlined
            if us > MAX_US:
                us = MAX_US
            shift = us.bit_length() - 8
            index = (shift << 7) + (us >> shift)
        else:
            index = us if us > 0 else 0
        slot = series.hist.get(index)
        if slot is None:
            slot = self.new_bucket(series, index)
            values = self.values
        values[slot] += 1
        values[series.sum] += duration_ns
        if cls == "5" or exchange.failed:
            values[series.errors] += 1
        return series.name

    def _series_for(
        self, environ: Any, status: Optional[str], cls: str, names: EndpointNames
    ) -> _Series:
        """The slow path of ``record_request``: name the request, find or make its series."""
        name = names.resolve(environ, status)
        series = self.endpoints.get(name)
        if series is None:
            series = self.new_series("ep", name)
        if (
            cls != "4"
            and "wsgi_observe.endpoint" not in environ
            and "werkzeug.request" not in environ
        ):
            path = environ.get("PATH_INFO")
            if type(path) is str and names.paths.get(path) == name:  # only paths it holds
                by_path = self.by_path
                if len(by_path) >= _PATH_CACHE:
                    by_path.clear()
                by_path[path] = series
        return series

    def record_call(self, name: str, duration_ns: int, failed: bool) -> None:
        """Count one call of a function timed by ``performance_tracking``."""
        label = "error" if failed else "ok"
        index = bucket_index(duration_ns // 1000)
        series = self.functions.get(name)
        if series is None:
            series = self.new_series("fn", name)
        slot = series.by.get(label)
        if slot is None:
            slot = self.new_label(series, label)
        hist_slot = series.hist.get(index)
        if hist_slot is None:
            hist_slot = self.new_bucket(series, index)
        values = self.values
        values[slot] += 1
        values[hist_slot] += 1
        values[series.sum] += duration_ns
        if failed:
            values[series.errors] += 1

    def snapshot(self) -> Snapshot:
        """This process's numbers as plain data (safe from any number of threads at once)."""
        with self._snapshot_lock:
            with self.lock:
                keys = self.table.keys
                count = len(keys)
                values = self.values[:count]
                layout = self._layout
            if isinstance(values, memoryview):
                values = values.tolist()  # a list slice is a copy already
            layout.update(keys, count)
            endpoints, functions, inflight = layout.build(values)
            kpis = layout.kpis.build(values)
        snapshot = Snapshot(endpoints, functions, inflight, self.started_at, time.time(), kpis=kpis)

        def overall() -> tuple[list[int], list[int]]:
            with self._snapshot_lock:
                return layout.overall_hist(values)

        snapshot.overall_fn = overall
        return snapshot


_CLASS_OF = {"1": "1", "2": "2", "3": "3", "4": "4", "5": "5"}
_PATH_CACHE = 4096


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
