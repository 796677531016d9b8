"""Entries of the ring: a cumulative snapshot as compact bytes, and back (checked like
client input)."""

from __future__ import annotations

import itertools
import math
import sys
import zlib
from array import array
from operator import sub
from typing import Any

import orjson

from ..histograms import COUNTS_LEN
from ..kpidata import (
    KIND_COUNTER,
    KIND_GAUGE,
    KpiFamily,
    KpiSeries,
    parse_kpi_key,
)
from ..metrics import SeriesData, Snapshot
from .diff import _SPACES

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


