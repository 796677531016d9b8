"""Business KPIs as plain data: their keys in the slot table, and what a snapshot holds.

:mod:`wsgi_observe.kpis` records KPIs into the same slot table as the requests (one
int64 per number), under keys whose first item is ``"k"``; this module names those keys,
reads them back (:class:`KpiLayout`) and gives the plain structures a :class:`Snapshot
<wsgi_observe.metrics.Snapshot>` carries in ``kpis``. Keys (``labels`` is the tuple of
label values, in the order the KPI declared its label names):

- ``("k", "d", name, kind, unit, help, label_names, mode, buckets, max_series)``: the
  definition, so any process can show a KPI another one recorded (its slot stays 0);
- ``("k", "c", name, labels)``: a counter;
- ``("k", "h", name, labels, bucket)`` and ``("k", "s", name, labels)``: a distribution's
  HDR bucket count and its sum in thousandths of the unit;
- ``("k", "g", name, labels)``: a gauge part in thousandths, summed over every process,
  the dead ones too (``mode="sum"``); ``("k", "l", ...)`` the same over live processes
  only (``mode="livesum"``);
- ``("k", "m", name, labels, id)`` and ``("k", "t", name, labels, id)``: one process's
  last value (thousandths) and when it was set (ns since the epoch), ``mode="mostrecent"``:
  the latest one wins. ``id`` is unique per process table, so they never add up.

Counters and distributions only ever grow, so two snapshots subtract (:func:`kpis_delta`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .histograms import COUNTS_LEN

__all__ = [
    "KIND_COUNTER",
    "KIND_DISTRIBUTION",
    "KIND_GAUGE",
    "MODES",
    "OVERFLOW",
    "SCALE",
    "KpiFamily",
    "KpiLayout",
    "KpiSeries",
    "kpis_delta",
    "parse_kpi_key",
]

KIND_COUNTER = "counter"
KIND_GAUGE = "gauge"
KIND_DISTRIBUTION = "distribution"
_KINDS = (KIND_COUNTER, KIND_GAUGE, KIND_DISTRIBUTION)
#: How gauges combine across processes (prometheus_client's names for the same modes).
MODES = ("sum", "livesum", "mostrecent")
#: Gauges and sums are kept as whole thousandths of their unit.
SCALE = 1000
#: The label value every series past a KPI's cap shares.
OVERFLOW = "<overflow>"

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
UNIT = re.compile(r"[a-zA-Z0-9_]*\Z")
MAX_NAME = 200
MAX_HELP = 1024
MAX_LABELS = 16
MAX_VALUE = 128
MAX_BUCKETS = 64
MAX_SERIES = 100_000
#: The prefix of wsgi_observe's own families: no KPI may take it.
RESERVED = "wsgi_observe"
_MAX_ID = 32
_SERIES_KINDS = frozenset("chsglmt")


# Reading keys back (as untrusted input) ----------------------------------------------------


def _is_name(value: Any) -> bool:
    return (
        type(value) is str and 0 < len(value) <= MAX_NAME and METRIC_NAME.match(value) is not None
    )


def _labels(value: Any) -> Optional[tuple[str, ...]]:
    if type(value) not in (list, tuple) or len(value) > MAX_LABELS:
        return None
    for item in value:
        if type(item) is not str or len(item) > MAX_VALUE:
            return None
    return tuple(value)


def _definition(item: Sequence[Any]) -> Optional[tuple[Any, ...]]:
    if len(item) != 10:
        return None
    _, _, name, kind, unit, help_text, names, mode, buckets, max_series = item
    if type(max_series) is not int or not 1 <= max_series <= MAX_SERIES:
        return None
    if not _is_name(name) or kind not in _KINDS:
        return None
    if type(unit) is not str or len(unit) > MAX_NAME or UNIT.match(unit) is None:
        return None
    if type(help_text) is not str or len(help_text) > MAX_HELP:
        return None
    if name.lower().startswith(RESERVED):
        return None
    label_names = _labels(names)
    if label_names is None or len(set(label_names)) != len(label_names):
        return None
    reserved = ("le", "quantile") if kind == KIND_DISTRIBUTION else ()
    for label in label_names:
        if LABEL_NAME.match(label) is None or label.startswith("__") or label in reserved:
            return None
    if mode not in (*MODES, ""):
        return None
    if type(buckets) not in (list, tuple) or len(buckets) > MAX_BUCKETS:
        return None
    bounds = []
    for bound in buckets:
        if type(bound) not in (int, float) or not 0 <= bound < 1e18:
            return None
        bounds.append(bound)
    if bounds != sorted(set(bounds)):
        return None
    return ("k", "d", name, kind, unit, help_text, label_names, mode, tuple(bounds), max_series)


def parse_kpi_key(item: Sequence[Any]) -> Optional[tuple[Any, ...]]:
    """The KPI key in a list read back from a file, or None unless it has exactly a KPI
    key's shape (see the module's docstring)."""
    if len(item) < 4 or item[0] != "k":
        return None
    letter = item[1]
    if letter == "d":
        return _definition(item)
    if letter not in _SERIES_KINDS or not _is_name(item[2]):
        return None
    labels = _labels(item[3])
    if labels is None:
        return None
    if letter in ("c", "s", "g", "l"):
        return ("k", letter, item[2], labels) if len(item) == 4 else None
    if len(item) != 5:
        return None
    extra = item[4]
    if letter == "h":
        if type(extra) is int and 0 <= extra < COUNTS_LEN:
            return ("k", "h", item[2], labels, extra)
        return None
    if type(extra) is str and 0 < len(extra) <= _MAX_ID:  # "m", "t": a process's id
        return ("k", letter, item[2], labels, extra)
    return None


def quantile_name(name: str, unit: str) -> str:
    """The summary family of distribution ``name`` (which ends with ``_<unit>``)."""
    if unit and name.endswith("_" + unit):
        return f"{name[: -len(unit) - 1]}_quantile_{unit}"
    return f"{name}_quantile"


def sample_names(kind: str, name: str, unit: str) -> set[str]:
    """Every sample name a KPI's families may show (two KPIs must share none)."""
    if kind == KIND_COUNTER:
        return {name, name + "_total", name + "_created"}
    if kind == KIND_GAUGE:
        return {name}
    names = {name, quantile_name(name, unit)}
    for base in tuple(names):
        names.update(base + suffix for suffix in ("_bucket", "_sum", "_count", "_created"))
    return names


def is_signed(key: tuple[Any, ...]) -> bool:
    """Whether the slot of ``key`` may hold a negative number (gauges only)."""
    return key[0] == "k" and key[1] in ("g", "l", "m")


def is_archived(key: tuple[Any, ...], value: int) -> bool:
    """Whether a dead process's slot goes into the archive: not its live-only gauges."""
    letter = key[1]
    if letter == "l":
        return False
    if letter in ("d", "g", "m"):
        return True
    return value > 0


def latest_only(totals: dict[tuple[Any, ...], int]) -> dict[tuple[Any, ...], int]:
    """``totals`` with only the latest ``mostrecent`` value of each series (the archive
    keeps one per series, not one per dead process). A value no process ever stamped with
    a time (killed between making the two slots, or a hostile archive) goes too."""
    latest: dict[tuple[str, tuple[str, ...]], tuple[int, str]] = {}
    for key, value in totals.items():
        if key[0] == "k" and key[1] == "t" and value > 0:
            found = latest.get((key[2], key[3]))
            if found is None or (value, key[4]) > found:
                latest[(key[2], key[3])] = (value, key[4])
    out = {}
    for key, value in totals.items():
        if key[0] == "k" and key[1] in ("m", "t"):
            found = latest.get((key[2], key[3]))
            if found is None or found[1] != key[4]:
                continue
        out[key] = value
    return out


def _is_overflow(labels: tuple[str, ...]) -> bool:
    """Whether ``labels`` are the overflow series': every value ``<overflow>``. One such
    value among others (a client may send the text) is a label set like any other, and
    counts against the cap."""
    return bool(labels) and labels.count(OVERFLOW) == len(labels)


def _weight(letter: str, value: int) -> int:
    return abs(value) if letter in ("c", "h", "g", "l") else 0


def cap_series(
    totals: dict[tuple[Any, ...], int], keep_first: set[tuple[str, tuple[str, ...]]]
) -> dict[tuple[Any, ...], int]:
    """``totals`` with at most ``max_series`` label sets per KPI besides ``<overflow>``: those
    in ``keep_first`` stay, then the busiest; the others are added into ``<overflow>`` (the
    last set values of ``mostrecent`` gauges among them are dropped). This keeps the archive
    bounded however many workers, each with its own cap, come and go."""
    limits: dict[str, int] = {}
    weights: dict[str, dict[tuple[str, ...], int]] = {}
    for key, value in totals.items():
        if key[0] != "k":
            continue
        if key[1] == "d":
            limits[key[2]] = key[9]
            continue
        per_name = weights.setdefault(key[2], {})
        per_name[key[3]] = per_name.get(key[3], 0) + _weight(key[1], value)
    dropped: dict[str, set[tuple[str, ...]]] = {}
    for name, per_labels in weights.items():
        limit = limits.get(name)
        if limit is None or len(per_labels) <= limit:
            continue
        ranked = sorted(
            (labels for labels in per_labels if not _is_overflow(labels)),
            key=lambda labels: ((name, labels) not in keep_first, -per_labels[labels], labels),
        )
        dropped[name] = set(ranked[limit:])
    if not dropped:
        return totals
    out: dict[tuple[Any, ...], int] = {}
    for key, value in totals.items():
        if key[0] == "k" and key[1] != "d" and key[3] in dropped.get(key[2], ()):
            if key[1] in ("m", "t"):
                continue
            key = (*key[:3], (OVERFLOW,) * len(key[3]), *key[4:])
        out[key] = out.get(key, 0) + value
    return out


def _capped(family: KpiFamily) -> dict[tuple[str, ...], KpiSeries]:
    """``family.series`` folded to ``family.max_series`` label sets (see :func:`cap_series`)."""
    series = family.series
    named = [labels for labels in series if not _is_overflow(labels)]
    if len(named) <= family.max_series:
        return series

    def weight(labels: tuple[str, ...]) -> float:
        one = series[labels]
        return one.count if one.hist else abs(one.value)

    ranked = sorted(named, key=lambda labels: (-weight(labels), labels))
    kept = {labels: series[labels] for labels in ranked[: family.max_series]}
    overflow = (OVERFLOW,) * len(family.labels)
    spill = [series[labels] for labels in ranked[family.max_series :]]
    if overflow in series:
        spill.append(series[overflow])
    if family.mode == "mostrecent":
        if overflow in series:
            kept[overflow] = series[overflow]
        return kept
    total = KpiSeries()
    for part in spill:
        total.value += part.value
        total.sum += part.sum
        for index, count in part.hist.items():
            total.hist[index] = total.hist.get(index, 0) + count
    kept[overflow] = total
    return kept


# What a snapshot holds ----------------------------------------------------------------------


@dataclass
class KpiSeries:
    """One labelled series of a KPI: a counter's or gauge's ``value``, or a distribution's
    ``hist`` (HDR bucket index -> count) and ``sum`` (exact, in the unit)."""

    value: Union[int, float] = 0
    hist: dict[int, int] = field(default_factory=dict)
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.hist.values())


@dataclass
class KpiFamily:
    """One KPI with all its series, keyed by their label values (in ``labels`` order).

    ``name`` is the family name (a counter's without ``_total``; a distribution's with its
    unit); ``mode`` is a gauge's multiprocess mode (``""`` for the others); ``buckets`` are
    a distribution's histogram bounds for Prometheus.
    """

    name: str
    kind: str
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()
    mode: str = ""
    buckets: tuple[float, ...] = ()
    series: dict[tuple[str, ...], KpiSeries] = field(default_factory=dict)
    #: label sets shown at most (the others are added into the ``<overflow>`` one)
    max_series: int = MAX_SERIES


def _number(milli: int) -> Union[int, float]:
    """Thousandths back to the unit: an int when whole."""
    return milli // SCALE if milli % SCALE == 0 else milli / SCALE


class _Positions:
    __slots__ = ("hist", "recent", "slots")

    def __init__(self) -> None:
        self.slots: list[int] = []  # counter, sum or summed gauge: add them up
        self.hist: dict[int, list[int]] = {}
        self.recent: dict[str, list[int]] = {}  # id -> [value position, time position]


class KpiLayout:
    """Where each KPI's numbers sit in a flat list of values (keys parsed once, as
    :class:`wsgi_observe.metrics.Layout` does for the requests)."""

    def __init__(self) -> None:
        #: each name's definitions in the order they were first seen (processes running
        #: another version of the code may define a KPI differently)
        self.definitions: dict[str, dict[tuple[Any, ...], None]] = {}
        self.where: dict[tuple[str, str, tuple[str, ...]], _Positions] = {}

    def add(self, key: tuple[Any, ...], position: int) -> None:
        letter = key[1]
        if letter == "d":
            self.definitions.setdefault(key[2], {})[key] = None
            return
        kind = "s" if letter == "s" else "h" if letter == "h" else "v"
        spot = self.where.get((kind, key[2], key[3]))
        if spot is None:
            spot = self.where[(kind, key[2], key[3])] = _Positions()
        if letter == "h":
            spot.hist.setdefault(key[4], []).append(position)
        elif letter in ("m", "t"):
            pair = spot.recent.setdefault(key[4], [-1, -1])
            pair[0 if letter == "m" else 1] = position
        else:
            spot.slots.append(position)

    def chosen(
        self, prefer: Optional[Mapping[str, tuple[Any, ...]]] = None
    ) -> list[tuple[Any, ...]]:
        """One definition per name, by name: the one in ``prefer`` (this process's, whose
        code is the one answering), else the last one seen (a newer worker's, after a
        reload). A definition whose sample names clash with one kept before (a counter
        ``foo`` in old workers, a gauge ``foo_total`` in new ones) is left out: two families
        of one name would make Prometheus refuse the whole scrape."""
        prefer = prefer or {}
        picked: dict[str, tuple[Any, ...]] = {}
        for name, candidates in self.definitions.items():
            wanted = prefer.get(name)
            picked[name] = wanted if wanted in candidates else next(reversed(candidates))
        order = sorted(picked, key=lambda name: (picked[name] != prefer.get(name), name))
        taken: set[str] = set()
        kept = []
        for name in order:
            definition = picked[name]
            names = sample_names(definition[3], name, definition[4])
            if names & taken:
                continue
            taken |= names
            kept.append(definition)
        return sorted(kept, key=lambda definition: str(definition[2]))

    def build(
        self, values: Sequence[int], prefer: Optional[Mapping[str, tuple[Any, ...]]] = None
    ) -> dict[str, KpiFamily]:
        """Every defined KPI's series (one definition per name, see :meth:`chosen`);
        series that do not fit their definition (another kind, another number of labels) or
        have no definition are left out."""
        families: dict[str, KpiFamily] = {}
        for definition in self.chosen(prefer):
            _, name, kind, unit, help_text, names, mode, buckets, limit = definition[1:]
            families[name] = KpiFamily(
                name, kind, help_text, unit, names, mode, buckets, max_series=limit
            )
        size = len(values)
        for (kind, name, labels), spot in self.where.items():
            family = families.get(name)
            if family is None or len(labels) != len(family.labels):
                continue
            is_distribution = family.kind == KIND_DISTRIBUTION
            if is_distribution != (kind != "v"):
                continue
            series = family.series.get(labels)
            if series is None:
                series = family.series[labels] = KpiSeries()
            if kind == "h":
                for index, positions in spot.hist.items():
                    count = sum(values[p] for p in positions if p < size)
                    if count:
                        series.hist[index] = series.hist.get(index, 0) + count
            elif kind == "s":
                series.sum = sum(values[p] for p in spot.slots if p < size) / SCALE
            elif family.kind == KIND_COUNTER:
                series.value = sum(values[p] for p in spot.slots if p < size)
            elif family.mode == "mostrecent":
                best = (-1, "")
                value = 0
                for ident, (at_value, at_time) in spot.recent.items():
                    if 0 <= at_value < size and 0 <= at_time < size:
                        stamp = (values[at_time], ident)
                        if stamp > best:
                            best, value = stamp, values[at_value]
                series.value = _number(value)
            else:
                series.value = _number(sum(values[p] for p in spot.slots if p < size))
        for family in families.values():
            family.series = dict(sorted(_capped(family).items()))
        return families


def _went_down(now: KpiSeries, then: KpiSeries) -> bool:
    if now.value < then.value or now.sum < then.sum:
        return True
    return any(now.hist.get(index, 0) < count for index, count in then.hist.items())


def _same_labels(
    family: KpiFamily, before: KpiFamily
) -> tuple[dict[tuple[str, ...], KpiSeries], dict[tuple[str, ...], KpiSeries]]:
    """The series of ``family`` and ``before`` over the same label sets when ``<overflow>``
    is in either: the merged view of a server's processes keeps the busiest label sets past
    ``max_series`` (and the archive folds its own), and which ones can change between two
    snapshots. The label sets not in both, and those that went down (moved into
    ``<overflow>``, wholly or in part), are added into ``<overflow>`` on both sides, so a
    window counts what happened rather than a label set's whole history."""
    now_series, old_series = family.series, before.series
    overflow = (OVERFLOW,) * len(family.labels)
    if not family.labels or (overflow not in now_series and overflow not in old_series):
        return now_series, old_series
    moved = set(now_series.keys() ^ old_series.keys())
    moved.update(
        labels
        for labels, now in now_series.items()
        if labels in old_series and _went_down(now, old_series[labels])
    )
    moved.discard(overflow)
    if not moved:
        return now_series, old_series

    def folded(space: Mapping[tuple[str, ...], KpiSeries]) -> dict[tuple[str, ...], KpiSeries]:
        out = {labels: one for labels, one in space.items() if labels not in moved}
        parts = [space[labels] for labels in (*moved, overflow) if labels in space]
        if parts:
            total = KpiSeries()
            for part in parts:
                total.value += part.value
                total.sum += part.sum
                for index, count in part.hist.items():
                    total.hist[index] = total.hist.get(index, 0) + count
            out[overflow] = total
        return out

    return folded(now_series), folded(old_series)


def kpis_delta(
    newer: Mapping[str, KpiFamily], older: Mapping[str, KpiFamily]
) -> dict[str, KpiFamily]:
    """What happened between two snapshots: counters and distributions subtracted (a series
    missing from ``older`` counts from zero), gauges as they are in ``newer``."""
    out: dict[str, KpiFamily] = {}
    for name, family in newer.items():
        before = older.get(name)
        if family.kind == KIND_GAUGE or before is None or before.kind != family.kind:
            out[name] = family
            continue
        series: dict[tuple[str, ...], KpiSeries] = {}
        now_series, old_series = _same_labels(family, before)
        for labels, now in now_series.items():
            then = old_series.get(labels)
            if then is None:
                series[labels] = now
            elif family.kind == KIND_COUNTER:
                series[labels] = KpiSeries(value=max(now.value - then.value, 0))
            else:
                hist = {i: c - then.hist.get(i, 0) for i, c in now.hist.items()}
                series[labels] = KpiSeries(
                    hist={i: c for i, c in hist.items() if c > 0},
                    sum=max(now.sum - then.sum, 0.0),
                )
        out[name] = KpiFamily(
            family.name,
            family.kind,
            family.help,
            family.unit,
            family.labels,
            family.mode,
            family.buckets,
            series,
            family.max_series,
        )
    return out
