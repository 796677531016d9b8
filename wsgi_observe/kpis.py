"""Business KPIs: counters, gauges and distributions next to the request metrics.

Define them once, at import time, and record from anywhere::

    from wsgi_observe import kpis

    leads_created = kpis.counter("leads_created", "Leads created, by source.", labels=("source",))
    lead_score = kpis.distribution("lead_score", "Score of new leads.", "points")
    open_customers = kpis.gauge("open_customers", "Customers with an open deal.",
                                multiprocess_mode="mostrecent")

    leads_created.labels(source="website").inc()
    lead_score.observe(87)
    open_customers.set(db.count_open_customers())

They are recorded into the same slot table as the requests (one int64 each, see
:mod:`wsgi_observe.kpidata`), so under gunicorn they are exact across workers, survive
worker recycling, and a counter never goes down. ``/metrics`` shows them under ``kpis``
(JSON) and as their own families in the Prometheus formats: a counter ``<name>_total``, a
gauge ``<name>``, a distribution ``<name>_<unit>`` as a histogram and
``<name>_quantile_<unit>`` as the summary of its exact p50/p95/p99.

Rules, checked when a KPI is defined or used (a clear ``ValueError`` otherwise):

- names follow Prometheus's rules (``[a-zA-Z_][a-zA-Z0-9_]*``, no ``wsgi_observe`` prefix,
  which is ours); a counter's ``_total`` is added (given, it is taken off first);
- label names likewise (not ``__...``; a distribution cannot use ``le`` or ``quantile``);
  ``.labels()`` takes exactly the declared names;
- a counter counts whole numbers ``>= 0``; a gauge takes any finite number; a distribution
  takes finite numbers ``>= 0``.

Label values come from anywhere (often from clients), so each KPI keeps at most
``max_series`` distinct label sets per process (100 by default); past that, they share one
series whose values are all ``<overflow>``, as does a value longer than 128 characters.

Distributions keep HDR counts with two significant figures like the request latencies:
whole units from 0 to 255 are kept exactly, larger values within 1 %, up to 3.6e9 (larger
values count as 3.6e9); fractions of a unit are dropped from the counts (pick the unit so
that one is fine enough: ``ms``, ``cents``), while the sum is exact to a thousandth.

Gauges across processes (``multiprocess_mode``, prometheus_client's names):

- ``"sum"`` (default): each process changes its own part and the gauge is the sum of all
  parts, those of exited workers included, so ``inc()`` in one worker and ``dec()`` in
  another balance out even across recycling. ``set(v)`` sets this process's part.
- ``"livesum"``: the same over live processes only (work in progress right now).
- ``"mostrecent"``: the value last ``set()`` by any process wins (``inc``/``dec`` change
  this process's last value); for a number read from a source of truth.

Gauges and sums are kept in thousandths of their unit (within +-9.2e15).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any, Generic, Optional, TypeVar

from .histograms import MAX_US
from .kpidata import (
    KIND_COUNTER,
    KIND_DISTRIBUTION,
    KIND_GAUGE,
    LABEL_NAME,
    MAX_BUCKETS,
    MAX_HELP,
    MAX_LABELS,
    MAX_NAME,
    MAX_VALUE,
    MODES,
    OVERFLOW,
    SCALE,
    UNIT,
)
from .metrics import MetricsStore, process_store

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "OVERFLOW",
    "Counter",
    "CounterSeries",
    "Distribution",
    "DistributionSeries",
    "Gauge",
    "GaugeSeries",
    "business_events",
    "counter",
    "distribution",
    "gauge",
]

DEFAULT_MAX_SERIES = 100
#: A distribution's histogram bounds for Prometheus, in its unit (1-2.5-5 steps).
DEFAULT_BUCKETS: tuple[float, ...] = tuple(
    step * 10**power for power in range(7) for step in (1, 2.5, 5)
)[:19]
_LIMIT = 2**63 - 1
_MAX_SCALED = _LIMIT // SCALE
_METRIC_NAME = LABEL_NAME  # Prometheus's rule without the colons of recording rules
_RESERVED = "wsgi_observe"


# Definitions --------------------------------------------------------------------------------


def _check_name(name: Any) -> str:
    if type(name) is not str or not _METRIC_NAME.match(name):
        raise ValueError(
            f"KPI name {name!r}: expected letters, digits and underscores, not starting "
            "with a digit (Prometheus's metric name rule)"
        )
    if name.lower().startswith(_RESERVED):
        raise ValueError(f"KPI name {name!r}: names starting with 'wsgi_observe' are reserved")
    if len(name) > MAX_NAME - 30:
        raise ValueError(f"KPI name {name[:40]!r}...: longer than {MAX_NAME - 30} characters")
    return name


def _check_labels(name: str, labels: Iterable[str], reserved: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise ValueError(
            f"KPI {name}: labels must be a sequence of names, not the string {labels!r}"
        )
    names = tuple(labels)
    if len(names) > MAX_LABELS:
        raise ValueError(f"KPI {name}: at most {MAX_LABELS} labels, got {len(names)}")
    for label in names:
        if type(label) is not str or not LABEL_NAME.match(label) or len(label) > MAX_VALUE:
            raise ValueError(
                f"KPI {name}: label name {label!r}: expected letters, digits and underscores,"
                " not starting with a digit"
            )
        if label.startswith("__") or label in reserved:
            raise ValueError(f"KPI {name}: label name {label!r} is reserved")
    if len(set(names)) != len(names):
        raise ValueError(f"KPI {name}: label names repeat: {names!r}")
    return names


def _check_help(name: str, description: Any) -> str:
    if type(description) is not str:
        raise ValueError(f"KPI {name}: description must be a string, got {description!r}")
    if len(description) > MAX_HELP:
        raise ValueError(f"KPI {name}: description longer than {MAX_HELP} characters")
    return description


def _check_max(name: str, max_series: Any) -> int:
    if type(max_series) is not int or not 1 <= max_series <= 100_000:
        raise ValueError(
            f"KPI {name}: max_series={max_series!r}: expected a whole number 1..100000"
        )
    return max_series


def _sample_names(kind: str, name: str, quantile_name: str) -> set[str]:
    if kind == KIND_COUNTER:
        return {name, name + "_total", name + "_created"}
    if kind == KIND_GAUGE:
        return {name}
    names = {name, quantile_name}
    for base in (name, quantile_name):
        names.update(base + suffix for suffix in ("_bucket", "_sum", "_count", "_created"))
    return names


M = TypeVar("M", bound="_Family[Any]")


def _register(store: MetricsStore, family: M) -> M:
    """``family``, or the same KPI defined before on ``store``; a clash raises."""
    with store.lock:
        known = store.kpi_families.get(family.name)
        if known is not None:
            if type(known) is type(family) and known.definition == family.definition:
                return known
            raise ValueError(f"KPI {family.name}: already defined differently ({known.describe()})")
        for other in store.kpi_families.values():
            if other.sample_names & family.sample_names:
                clash = sorted(other.sample_names & family.sample_names)[0]
                raise ValueError(
                    f"KPI {family.name}: its series {clash} clashes with KPI {other.name}"
                )
        store.kpi_families[family.name] = family
    return family


# Series -------------------------------------------------------------------------------------


class _Series:
    """One labelled series: its keys, and its slots in the store's current table."""

    __slots__ = ("_family", "_gen", "_labels", "_slot", "_store")

    def __init__(self, family: _Family[Any], labels: Optional[tuple[str, ...]]) -> None:
        self._family = family
        self._store = family.store
        self._labels = labels  # None: the family of a labelled KPI itself
        self._gen = -1
        self._slot = -1

    def _bind(self) -> None:
        labels = self._labels
        if labels is None:
            family = self._family
            raise ValueError(
                f"KPI {family.name} has labels {family.label_names!r}: record through "
                f".labels({', '.join(n + '=...' for n in family.label_names)})"
            )
        store = self._store
        gen = store.kpi_generation
        self._bind_slots(store, labels)
        self._gen = gen

    def _bind_slots(self, store: MetricsStore, labels: tuple[str, ...]) -> None:
        raise NotImplementedError


class CounterSeries(_Series):
    """A counter's series: ``inc(n=1)``."""

    __slots__ = ()

    def _bind_slots(self, store: MetricsStore, labels: tuple[str, ...]) -> None:
        family = self._family
        self._slot = store.kpi_slot(("k", "c", family.name, labels), family.definition)

    def inc(self, n: int = 1) -> None:
        """Add ``n`` (a whole number >= 0; counts never go down)."""
        if n.__class__ is not int or n < 0:
            n = _whole(self._family.name, n)
        store = self._store
        if self._gen != store.kpi_generation:
            self._bind()
        store.values[self._slot] += n


class GaugeSeries(_Series):
    """A gauge's series: ``set(v)``, ``inc(n=1)``, ``dec(n=1)``."""

    __slots__ = ("_time",)

    def __init__(self, family: _Family[Any], labels: Optional[tuple[str, ...]]) -> None:
        super().__init__(family, labels)
        self._time = -1

    def _bind_slots(self, store: MetricsStore, labels: tuple[str, ...]) -> None:
        family = self._family
        name, definition = family.name, family.definition
        mode = family.mode
        if mode == "mostrecent":
            ident = store.kpi_id
            self._slot = store.kpi_slot(("k", "m", name, labels, ident), definition)
            self._time = store.kpi_slot(("k", "t", name, labels, ident), definition)
        else:
            letter = "g" if mode == "sum" else "l"
            self._slot = store.kpi_slot(("k", letter, name, labels), definition)

    def set(self, value: float) -> None:
        """Set the gauge (its part in this process, unless ``mostrecent``) to ``value``."""
        scaled = _scaled(self._family.name, value)
        store = self._store
        if self._gen != store.kpi_generation:
            self._bind()
        values = store.values
        values[self._slot] = scaled
        if self._time >= 0:
            values[self._time] = time.time_ns()

    def inc(self, n: float = 1) -> None:
        """Add ``n`` (any finite number)."""
        scaled = n * SCALE if n.__class__ is int and -_MAX_SCALED <= n <= _MAX_SCALED else None
        if scaled is None:
            scaled = _scaled(self._family.name, n)
        store = self._store
        if self._gen != store.kpi_generation:
            self._bind()
        values = store.values
        try:
            values[self._slot] += scaled
        except (ValueError, OverflowError):
            raise ValueError(f"KPI {self._family.name}: the gauge would leave +-9.2e15") from None
        if self._time >= 0:
            values[self._time] = time.time_ns()

    def dec(self, n: float = 1) -> None:
        """Subtract ``n`` (any finite number)."""
        self.inc(-n)


class DistributionSeries(_Series):
    """A distribution's series: ``observe(v)``."""

    __slots__ = ("_hist", "_key")

    def __init__(self, family: _Family[Any], labels: Optional[tuple[str, ...]]) -> None:
        super().__init__(family, labels)
        self._hist: dict[int, int] = {}
        self._key: tuple[Any, ...] = ()

    def _bind_slots(self, store: MetricsStore, labels: tuple[str, ...]) -> None:
        family = self._family
        self._hist = {}
        self._key = ("k", "h", family.name, labels)
        self._slot = store.kpi_slot(("k", "s", family.name, labels), family.definition)

    def observe(self, value: float) -> None:
        """Count ``value`` (a finite number >= 0, in the distribution's unit)."""
        if value.__class__ is int and 0 <= value <= MAX_US:
            whole = value
            milli = value * SCALE
        else:
            whole, milli = _observed(self._family.name, value)
        if whole > 255:  # histograms.bucket_index, inlined
            shift = whole.bit_length() - 8
            index = (shift << 7) + (whole >> shift)
        else:
            index = whole
        store = self._store
        if self._gen != store.kpi_generation:
            self._bind()
        slot = self._hist.get(index)
        if slot is None:
            slot = self._hist[index] = store.kpi_slot((*self._key, index), self._family.definition)
        values = store.values
        values[slot] += 1
        try:
            values[self._slot] += milli
        except (ValueError, OverflowError):  # the sum would leave int64: it stays at its top
            values[self._slot] = _LIMIT


def _whole(name: str, n: Any) -> int:
    if isinstance(n, float) and n.is_integer() and 0 <= n < 2**62:
        return int(n)
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return n
    raise ValueError(f"KPI {name}: a counter adds whole numbers >= 0, got {n!r}")


def _scaled(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"KPI {name}: a gauge takes a number, got {value!r}")
    if not math.isfinite(value) or abs(value) > _MAX_SCALED:
        raise ValueError(
            f"KPI {name}: a gauge takes a finite number within +-9.2e15, got {value!r}"
        )
    return round(value * SCALE)


def _observed(name: str, value: Any) -> tuple[int, int]:
    """``(whole units for the HDR counts, thousandths for the sum)`` of an observation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"KPI {name}: a distribution observes numbers, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"KPI {name}: a distribution observes finite numbers >= 0, got {value!r}")
    whole = min(int(value), MAX_US)
    return whole, min(round(value * SCALE), MAX_US * SCALE)


# Families -----------------------------------------------------------------------------------

S = TypeVar("S", bound=_Series)


class _Family(Generic[S]):
    """What every KPI has: its definition, its series by label values, and the cap."""

    kind = ""
    series_class: type[_Series] = _Series

    def __init__(
        self,
        name: str,
        description: str,
        label_names: tuple[str, ...],
        *,
        unit: str = "",
        mode: str = "",
        buckets: tuple[float, ...] = (),
        max_series: int,
        store: MetricsStore,
        quantile_name: str = "",
    ) -> None:
        self.name = name
        self.help = description
        self.unit = unit
        self.mode = mode
        self.buckets = buckets
        self.label_names = label_names
        self.max_series = max_series
        self.store = store
        self.quantile_name = quantile_name
        self.definition = (
            *("k", "d", name, self.kind, unit, description, label_names, mode, buckets),
            max_series,
        )
        self.sample_names = _sample_names(self.kind, name, quantile_name)
        self._children: dict[tuple[str, ...], S] = {}
        self._cache: dict[tuple[tuple[str, Any], ...], S] = {}
        self._overflow: Optional[S] = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        labels = f" with labels {self.label_names!r}" if self.label_names else ""
        unit = f" in {self.unit!r}" if self.unit else ""
        mode = f", multiprocess_mode={self.mode!r}" if self.mode else ""
        return f"a {self.kind}{unit}{labels}{mode}"

    def labels(self, **values: Any) -> S:
        """The series with these label values (exactly the declared label names)."""
        # Cached by the (name, value) pairs as given: one tuple and one dict lookup.
        try:
            child = self._cache.get(tuple(values.items()))
        except TypeError:  # an unhashable value: str() of it, the slow way
            child = None
        if child is None:
            child = self._lookup(values)
        return child

    def _lookup(self, values: dict[str, Any]) -> S:
        names = self.label_names
        if set(values) != set(names) or not names:
            raise ValueError(
                f"KPI {self.name}: labels() takes exactly {names!r}, got {tuple(values)!r}"
            )
        raw = tuple([values[name] for name in names])
        texts = tuple(value if type(value) is str else str(value) for value in raw)
        with self._lock:
            child = self._children.get(texts)
            if child is None and all(0 < len(text) <= MAX_VALUE for text in texts):
                if len(self._children) < self.max_series:
                    child = self._children[texts] = self._new(texts)
            if child is None:
                if self._overflow is None:
                    self._overflow = self._new((OVERFLOW,) * len(texts))
                return self._overflow  # not cached: the cache holds admitted series only
            if raw == texts and len(self._cache) < 4 * self.max_series:
                self._cache[tuple(values.items())] = child
            return child

    def _new(self, labels: tuple[str, ...]) -> S:
        return self.series_class(self, labels)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<KPI {self.name}: {self.describe()}>"


class Counter(CounterSeries, _Family[CounterSeries]):
    """A counter KPI (``<name>_total``): ``inc(n=1)``, or ``labels(...).inc(n)``.

    Made by :func:`counter`. Example::

        signups = kpis.counter("signups", "Accounts created.", labels=("plan",))
        signups.labels(plan="pro").inc()
    """

    kind = KIND_COUNTER
    series_class = CounterSeries
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Family.__init__(self, *args, **kwargs)
        CounterSeries.__init__(self, self, None if self.label_names else ())


class Gauge(GaugeSeries, _Family[GaugeSeries]):
    """A gauge KPI: ``set(v)``, ``inc(n)``, ``dec(n)``, or through ``labels(...)``.

    Made by :func:`gauge`. Example::

        queue = kpis.gauge("review_queue", "Leads to review.", multiprocess_mode="mostrecent")
        queue.set(17)
    """

    kind = KIND_GAUGE
    series_class = GaugeSeries
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Family.__init__(self, *args, **kwargs)
        GaugeSeries.__init__(self, self, None if self.label_names else ())


class Distribution(DistributionSeries, _Family[DistributionSeries]):
    """A distribution KPI: ``observe(v)``, or ``labels(...).observe(v)``; exact percentiles.

    Made by :func:`distribution`. Example::

        order_value = kpis.distribution("order_value", "Value of orders.", "cents")
        order_value.observe(4_999)
    """

    kind = KIND_DISTRIBUTION
    series_class = DistributionSeries
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Family.__init__(self, *args, **kwargs)
        DistributionSeries.__init__(self, self, None if self.label_names else ())


# The public functions -----------------------------------------------------------------------


def counter(
    name: str,
    description: str,
    labels: Iterable[str] = (),
    *,
    max_series: int = DEFAULT_MAX_SERIES,
    store: Optional[MetricsStore] = None,
) -> Counter:
    """A counter KPI, shown as ``<name>_total`` (a ``_total`` given in ``name`` is taken off).

    ``labels``: label names; ``max_series``: distinct label sets kept per process (the rest
    share ``<overflow>``); ``store``: where to record (default: the process-wide store the
    middleware shows). Defining the same KPI again returns it; another definition under the
    same name raises ``ValueError``.
    """
    _check_name(name)
    if name.endswith("_total") and len(name) > 6:
        name = name[:-6]
    family = Counter(
        name,
        _check_help(name, description),
        _check_labels(name, labels, ()),
        max_series=_check_max(name, max_series),
        store=store if store is not None else process_store(),
    )
    return _register(family.store, family)


def gauge(
    name: str,
    description: str,
    labels: Iterable[str] = (),
    *,
    multiprocess_mode: str = "sum",
    max_series: int = DEFAULT_MAX_SERIES,
    store: Optional[MetricsStore] = None,
) -> Gauge:
    """A gauge KPI. ``multiprocess_mode``: ``"sum"`` (default), ``"livesum"`` or
    ``"mostrecent"``, how processes combine (see the module's docstring)."""
    _check_name(name)
    if multiprocess_mode not in MODES:
        raise ValueError(
            f"KPI {name}: multiprocess_mode={multiprocess_mode!r}: expected one of {MODES!r}"
        )
    family = Gauge(
        name,
        _check_help(name, description),
        _check_labels(name, labels, ()),
        mode=multiprocess_mode,
        max_series=_check_max(name, max_series),
        store=store if store is not None else process_store(),
    )
    return _register(family.store, family)


def distribution(
    name: str,
    description: str,
    unit: str,
    labels: Iterable[str] = (),
    *,
    buckets: Iterable[float] = DEFAULT_BUCKETS,
    max_series: int = DEFAULT_MAX_SERIES,
    store: Optional[MetricsStore] = None,
) -> Distribution:
    """A distribution KPI of numbers >= 0 in ``unit`` (``""`` for none), with exact
    percentiles across workers. Shown as ``<name>_<unit>`` (the unit is added unless
    ``name`` ends with it): a histogram with ``buckets`` (bounds in the unit) and a summary
    ``<name>_quantile_<unit>`` of p50, p95 and p99."""
    _check_name(name)
    if type(unit) is not str or not UNIT.match(unit) or len(unit) > 40:
        raise ValueError(f"KPI {name}: unit {unit!r}: expected letters, digits and underscores")
    base = name
    if unit:
        if name.endswith("_" + unit):
            base = name[: -len(unit) - 1]
        else:
            name = f"{name}_{unit}"
    quantile_name = f"{base}_quantile_{unit}" if unit else f"{base}_quantile"
    bounds = _check_buckets(name, buckets)
    family = Distribution(
        name,
        _check_help(name, description),
        _check_labels(name, labels, ("le", "quantile")),
        unit=unit,
        buckets=bounds,
        max_series=_check_max(name, max_series),
        store=store if store is not None else process_store(),
        quantile_name=quantile_name,
    )
    return _register(family.store, family)


def _check_buckets(name: str, buckets: Iterable[float]) -> tuple[float, ...]:
    try:
        bounds = tuple(buckets)
    except TypeError:
        bounds = (None,)  # type: ignore[assignment]
    ok = 0 < len(bounds) <= MAX_BUCKETS and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1e18 for b in bounds
    )
    if not ok or list(bounds) != sorted(set(bounds)):
        raise ValueError(
            f"KPI {name}: buckets: expected 1 to {MAX_BUCKETS} increasing numbers >= 0"
        )
    return bounds


def business_events(store: Optional[MetricsStore] = None) -> Counter:
    """The counter ``log_business_event`` adds to: ``business_events_total{event=...}``."""
    known = (store if store is not None else process_store()).kpi_families.get("business_events")
    if type(known) is Counter:
        return known
    return counter(
        "business_events",
        "Business events logged by log_business_event, by event name.",
        labels=("event",),
        store=store,
    )
