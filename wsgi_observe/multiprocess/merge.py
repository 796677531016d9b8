"""Every process's numbers as one: live tables read in place, dead ones from the archive.

A scrape reads every live process's mapping, then the archive, and drops any process the
archive already holds: each count is seen exactly once even while a sweep runs. Running
totals are kept between scrapes and updated by difference, so an unchanged process costs
one comparison pass. The merged view keeps at most ``max_endpoints`` names.
"""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from ..endpoints import OVERFLOW
from ..metrics import Layout, SeriesData, Snapshot
from ..system import process_info
from .archive import ARCHIVE, archive_names, read_archive, sweep
from .reader import Reader, worker_ids

if TYPE_CHECKING:
    from ..metrics import MetricsStore

__all__ = ["ARCHIVE", "Merge", "collect_snapshot", "sweep"]

_log = logging.getLogger("wsgi_observe.multiprocess")


def _getter(positions: list[int]) -> Callable[[Any], Any]:
    """``operator.itemgetter`` that always returns a tuple, whatever the count."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        only = positions[0]
        return lambda values: (values[only],)
    return lambda values: ()


# Running totals ---------------------------------------------------------------------------


class _Source:
    """What one source (a live process, this process, the archive) last added to the totals."""

    __slots__ = ("_getter", "_getter_for", "previous", "targets")

    def __init__(self) -> None:
        self.targets: list[int] = []  # merged index of each of the source's values, in order
        self.previous: list[int] = []  # the values added last time, aligned with targets
        self._getter: Callable[[Any], Any] = _getter([])
        self._getter_for = 0

    def pick_all(self, count: int) -> Callable[[Any], Any]:
        """A getter of ``totals`` at the first ``count`` targets (cached until it grows)."""
        if self._getter_for != count:
            self._getter = _getter(self.targets[:count])
            self._getter_for = count
        return self._getter


class Merge:
    """Running totals of every source's slots by key, updated by difference.

    Each key gets one merged index, reused across scrapes. A scrape compares each source's
    values with what it added last time (a C-level ``map``) and adds only the differences,
    so an unchanged process costs one comparison pass; a source that is gone (absorbed into
    the archive) has its last values taken back out.
    """

    def __init__(self) -> None:
        self.keys: list[tuple[Any, ...]] = []
        self._index: dict[tuple[Any, ...], int] = {}
        self.totals: list[int] = []
        self.layout = Layout()
        self.sources: dict[str, _Source] = {}
        self.archive: Any = None  # the parsed archive last added

    def index(self, key: tuple[Any, ...]) -> int:
        found = self._index.get(key)
        if found is None:
            found = self._index[key] = len(self.keys)
            self.keys.append(key)
            self.totals.append(0)
        return found

    def _source(self, name: str) -> _Source:
        source = self.sources.get(name)
        if source is None:
            source = self.sources[name] = _Source()
        return source

    def update(self, name: str, targets: list[int], values: Sequence[int]) -> None:
        """Source ``name`` now holds ``values`` at merged indexes ``targets``."""
        source = self._source(name)
        if source.targets is not targets and source.targets != targets:
            self._take_back(source)  # its layout changed (a new reader): start again
            source.targets = targets
        previous = source.previous
        fresh = not previous
        if len(previous) < len(values):
            previous.extend([0] * (len(values) - len(previous)))
        changed = (
            []
            if fresh
            else list(itertools.compress(range(len(values)), map(operator.ne, values, previous)))
        )
        totals = self.totals
        if fresh or len(changed) * 3 > len(values):
            # Most values moved: one pass over all of them beats picking the changed ones.
            where: Sequence[int] = targets
            current = source.pick_all(len(values))(totals)
            deltas: Any = map(operator.sub, values, previous)
        elif changed:
            picks = _getter(changed)
            where = picks(targets)
            current = _getter(list(where))(totals)
            deltas = map(operator.sub, picks(values), picks(previous))
        else:
            where = ()
        if where:
            # totals[t] += delta for every (t, delta), as C-level loops (zip stops at the
            # shortest, so the extra targets of a full pass are never touched).
            collections.deque(
                map(totals.__setitem__, where, map(operator.add, current, deltas)), maxlen=0
            )
        # Callers hand over a list built for this call (tolist(), a slice, a comprehension).
        source.previous = values if isinstance(values, list) else list(values)

    def update_keys(self, name: str, keys: list[tuple[Any, ...]], values: Sequence[int]) -> None:
        """Like :meth:`update` for an append-only key list (this process's own table)."""
        targets = self._source(name).targets
        if len(targets) < len(keys):
            targets.extend([self.index(key) for key in keys[len(targets) :]])
        self.update(name, targets, values)

    def update_pairs(self, name: str, pairs: list[tuple[tuple[Any, ...], int]]) -> None:
        """Like :meth:`update` for ``(key, value)`` pairs (the archive)."""
        targets = [self.index(key) for key, _ in pairs]
        self.update(name, targets, [value for _, value in pairs])

    def drop_except(self, keep: set[str]) -> None:
        """Take out every source not in ``keep`` (absorbed into the archive, or gone)."""
        for name in [n for n in self.sources if n not in keep]:
            self._take_back(self.sources.pop(name))

    def _take_back(self, source: _Source) -> None:
        totals = self.totals
        for target, value in zip(source.targets, source.previous):
            totals[target] -= value
        source.previous = []

    def live_keys(self) -> int:
        return sum(len(source.targets) for source in self.sources.values())

    def build(self) -> tuple[dict[str, SeriesData], dict[str, SeriesData], int]:
        self.layout.update(self.keys)
        return self.layout.build(self.totals)


# Scrapes ----------------------------------------------------------------------------------


class _View:
    """What this process keeps between scrapes of one state directory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readers: dict[str, Reader] = {}
        self.merge = Merge()


class _Views:
    """The views of the state directories this process scraped (usually one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[str, _View] = {}

    def get(self, state_dir: str) -> _View:
        with self._lock:
            view = self._views.get(state_dir)
            if view is None:
                if len(self._views) >= 16:  # tests use many; servers one
                    self._views.clear()
                view = self._views[state_dir] = _View()
            return view

    def forget(self, state_dir: str, ids: Sequence[str]) -> None:
        with self._lock:
            view = self._views.get(state_dir)
        if view is None:
            return
        with view.lock:  # a scrape in another thread may be reading them right now
            for worker_id in ids:
                reader = view.readers.pop(worker_id, None)
                if reader is not None:
                    reader.close()

    def reset(self) -> None:
        """After a fork: the parent's mappings and locks are not ours."""
        self._lock = threading.Lock()
        for view in self._views.values():
            for reader in view.readers.values():
                reader.close()
        self._views = {}


_views = _Views()


def collect_snapshot(
    state_dir: str,
    own: Optional[MetricsStore] = None,
    *,
    own_id: Optional[str] = None,
    max_endpoints: Optional[int] = None,
    master_pid: Optional[int] = None,
) -> Snapshot:
    """Every process's numbers merged: live tables, plus the archive of the dead.

    ``own`` is this process's store (read from memory, not its file, whose id is
    ``own_id``); ``max_endpoints`` caps the names shown (the rest fold into ``<overflow>``).
    """
    try:
        sweep(state_dir, own_id=own_id, absorbed_ids=partial(_views.forget, state_dir))
    except OSError as error:
        _log.warning("wsgi_observe: sweep of %s failed: %s", state_dir, error)
    view = _views.get(state_dir)
    with view.lock:  # the running totals are shared by every thread that scrapes
        merge = view.merge
        if len(merge.keys) > 2 * merge.live_keys() + 100_000:
            # Keys of processes long gone pile up in the index: start afresh.
            merge = view.merge = Merge()  # readers notice and map their keys again
        readers = view.readers
        live: list[Reader] = []
        for worker_id in worker_ids(state_dir):
            if worker_id == own_id:
                continue
            reader = readers.get(worker_id)
            if reader is None:
                reader = readers[worker_id] = Reader(state_dir, worker_id)
            try:
                reader.refresh()
                if not reader.header:
                    continue  # a table being created right now: nothing counted in it yet
                reader.values()
                live.append(reader)
            except FileNotFoundError:
                readers.pop(worker_id, None)
                reader.close()
            except (OSError, ValueError) as error:
                reader.warn(f"an unreadable file ({error})")
        archive = read_archive(state_dir)
        processes: list[dict[str, Any]] = []
        current = {"archive"}
        if merge.archive is not archive:  # the same parsed archive as last time: nothing new
            merge.update_pairs("archive", archive.pairs)
            merge.archive = archive
        for reader in live:
            if reader.id in archive.merged:
                continue  # absorbed while we read: the archive we just read holds it
            reader.fold(merge)
            current.add("w-" + reader.id)
            if master_pid is None:
                master_pid = reader.header.get("master")
            info = process_info(int(reader.header["pid"]), "worker")
            if info is not None:
                processes.append(info)
        for worker_id in list(readers):
            if worker_id in archive.merged:
                readers.pop(worker_id).close()
        started_at = time.time()
        if own is not None:
            with own.lock:
                keys = own.table.keys
                values = own.values[: len(keys)]
            merge.update_keys(
                "own", keys, values.tolist() if isinstance(values, memoryview) else values
            )
            current.add("own")
            started_at = own.started_at
            info = process_info(os.getpid(), "worker")
            if info is not None:
                processes.append(info)
        merge.drop_except(current)
        if master_pid is not None:
            info = process_info(master_pid, "master")
            if info is not None:
                processes.append(info)
        endpoints, functions, inflight = merge.build()
        totals = list(merge.totals)  # a copy: the next scrape updates the running totals
        layout = merge.layout
        kpis = layout.kpis.build(totals)
    if max_endpoints is not None and len(endpoints) > max_endpoints:
        endpoints = _fold_view(endpoints, set(archive_names(archive)), max_endpoints)
        overall = None
    else:
        overall = (layout, totals)
    processes.sort(key=lambda p: (p["role"] != "master", p["pid"]))
    masters = [p["started_at"] for p in processes if p["role"] == "master"]
    started_at = min([started_at, *masters])
    snapshot = Snapshot(
        endpoints, functions, max(inflight, 0), started_at, time.time(), processes, kpis=kpis
    )
    if overall is not None:

        def overall_fn() -> tuple[list[int], list[int]]:
            with view.lock:  # positions past ``totals`` (added since) are left out
                return layout.overall_hist(totals)

        snapshot.overall_fn = overall_fn
    return snapshot


def _fold_view(
    endpoints: dict[str, SeriesData], keep_first: set[str], max_endpoints: int
) -> dict[str, SeriesData]:
    """The merged view capped at ``max_endpoints`` names (the archive's first, then the
    busiest); the others are added into ``<overflow>``."""
    names = sorted(
        endpoints, key=lambda n: (n not in keep_first and n != OVERFLOW, -endpoints[n].count, n)
    )
    kept = {name: endpoints[name] for name in names[:max_endpoints]}
    spill = [endpoints[name] for name in names[max_endpoints:]]
    if not spill:
        return kept
    overflow = kept.pop(OVERFLOW, None)
    parts = ([overflow] if overflow is not None else []) + spill
    hist: dict[int, int] = {}
    by: dict[tuple[str, str], int] = {}
    for part in parts:
        for index, count in part.hist.items():
            hist[index] = hist.get(index, 0) + count
        for label, count in part.by.items():
            by[label] = by.get(label, 0) + count
    kept[OVERFLOW] = SeriesData(
        count=sum(p.count for p in parts),
        errors=sum(p.errors for p in parts),
        sum_ns=sum(p.sum_ns for p in parts),
        hist=hist,
        by=by,
    )
    return kept
