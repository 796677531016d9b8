"""Every process's numbers as one: live tables read in place, dead ones from the archive.

- A scrape reads every live process's mapping, then the archive, and drops any process the
  archive already holds: each count is seen exactly once even while a sweep runs.
- :func:`sweep` folds the files of dead processes (their ``flock`` can be taken) into
  ``archive.json`` under the state lock, exactly once (the archive lists the ids it holds),
  written by atomic rename, and only then deletes them; so files stay bounded by the live
  processes and counters never go down. The gunicorn master sweeps when a worker exits;
  any scrape sweeps too.
- Everything read back is input, not trusted data: files are opened only when they are
  regular files of a sane size, every key line and archive record is checked for its exact
  shape (kinds, types, bucket range, slot order), and what does not fit is skipped and
  logged once. A malformed file can degrade the numbers, never a scrape or the master.
- The archive keeps at most ``max_endpoints`` endpoint names (the ones it had, then the
  busiest); the others fold into ``<overflow>``, so recycling workers that each saw new
  names cannot grow it, and neither can the merged view.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import logging
import mmap
import operator
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import orjson

from ..endpoints import OVERFLOW
from ..histograms import COUNTS_LEN
from ..metrics import INFLIGHT, Layout, SeriesData, Snapshot
from ..system import process_info
from .statedir import locked, read_regular, write_atomic
from .table import CAPACITY, SLOT_BYTES

if TYPE_CHECKING:
    from ..metrics import MetricsStore

__all__ = ["ARCHIVE", "collect_snapshot", "parse_key", "sweep", "worker_ids"]

_log = logging.getLogger("wsgi_observe.multiprocess")

ARCHIVE = "archive.json"
_MERGED_KEEP = 10_000
_MAX_TEXT = 1024
_KEYS_MAX_BYTES = 512 * 1024 * 1024
_ARCHIVE_MAX_BYTES = 64 * 1024 * 1024
_ID_CHARS = frozenset("0123456789abcdef")
_SPACES = ("ep", "fn")
_LABEL_MAX = 64


# Shapes -----------------------------------------------------------------------------------


def _text(value: Any, limit: int = _MAX_TEXT) -> bool:
    return type(value) is str and 0 < len(value) <= limit


def parse_key(item: Any) -> Optional[tuple[Any, ...]]:
    """The key in a list read back from a file, or None unless it has exactly a key's shape.

    ``["c", ns, name, method, class]``, ``["h", ns, name, bucket]``, ``["s", ns, name]``,
    ``["e", ns, name]`` or ``["g", "inflight"]``, with ``ns`` ``"ep"`` or ``"fn"``.
    """
    if type(item) is not list or not item:
        return None
    kind = item[0]
    if kind == "g":
        return INFLIGHT if item == ["g", "inflight"] else None
    if len(item) < 3 or item[1] not in _SPACES or not _text(item[2]):
        return None
    if kind == "c":
        if len(item) == 5 and _text(item[3], _LABEL_MAX) and type(item[4]) is str:
            if len(item[4]) <= _LABEL_MAX:
                return tuple(item)
        return None
    if kind == "h":
        if len(item) == 4 and type(item[3]) is int and 0 <= item[3] < COUNTS_LEN:
            return tuple(item)
        return None
    if kind in ("s", "e") and len(item) == 3:
        return tuple(item)
    return None


def _is_worker_id(text: str) -> bool:
    return len(text) == 32 and _ID_CHARS.issuperset(text)


def worker_ids(state_dir: str) -> list[str]:
    """Ids of the process tables in ``state_dir`` (by file name; nothing is opened)."""
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return []
    ids = (n[2:-5] for n in names if n.startswith("w-") and n.endswith(".keys"))
    return sorted(i for i in ids if _is_worker_id(i))


def _is_dead(keys_path: str) -> bool:
    """Whether no live process holds the table's lock (it exited or was killed)."""
    try:
        fd = os.open(keys_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:
            return True  # a symlink is no process's table: absorb (skip) and remove it
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return True  # a FIFO or a device under a table's name: nobody's table
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)  # closing drops the probe lock we may have taken
    return True


# One process's files ----------------------------------------------------------------------


class _Reader:
    """A parsed, cached view of one process's files (keys are append-only: parse the tail)."""

    def __init__(self, state_dir: str, worker_id: str) -> None:
        base = os.path.join(state_dir, f"w-{worker_id}")
        self.id = worker_id
        self.keys_path = base + ".keys"
        self.vals_path = base + ".vals"
        self.offset = 0
        self.pending = b""
        self.header: dict[str, Any] = {}
        self.next_slot = 0
        self.broken = False  # a line out of shape: nothing after it is trusted
        self.slots: list[tuple[int, tuple[Any, ...]]] = []
        self.targets: list[int] = []  # merged index of each slot read so far
        self._merge: Optional[_Merge] = None
        self.warned = False
        self._map: Optional[mmap.mmap] = None
        self._view: Optional[memoryview] = None

    def warn(self, what: str) -> None:
        if not self.warned:
            self.warned = True
            _log.warning("wsgi_observe: skipping %s in state file %s", what, self.keys_path)

    def refresh(self) -> None:
        """Parse the key lines added since the last call (raises OSError, ValueError)."""
        if self.broken:
            return
        data = read_regular(self.keys_path, _KEYS_MAX_BYTES, self.offset)
        self.offset += len(data)
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        for line in data[:cut].splitlines():
            if not self._take(line):
                self.broken = True
                self.warn("a line that is not a key line (the rest is ignored)")
                return

    def _take(self, line: bytes) -> bool:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        if not self.header:
            return self._take_header(item)
        if type(item) is not list or len(item) < 2 or type(item[0]) is not int:
            return False
        # Slots are handed out in order: 0, 1, 2, ... A line that skips or repeats one is
        # not ours, and two keys on one slot would count it twice.
        if item[0] != self.next_slot or item[0] >= CAPACITY:
            return False
        key = parse_key(item[1:])
        if key is None:
            return False
        self.slots.append((item[0], key))
        self.next_slot += 1
        return True

    def _take_header(self, item: Any) -> bool:
        if (
            type(item) is not dict
            or item.get("id") != self.id
            or type(item.get("pid")) is not int
            or item["pid"] <= 0
        ):
            return False
        master = item.get("master")
        limit = item.get("max_endpoints")
        self.header = {
            "pid": item["pid"],
            "master": master if type(master) is int and master > 0 else None,
            "max_endpoints": limit if type(limit) is int and limit > 0 else None,
        }
        return True

    def values(self) -> memoryview:
        if self._view is None:
            fd = os.open(self.vals_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError("the values file is not a regular file")
                size = min(st.st_size, CAPACITY * SLOT_BYTES)
                size -= size % SLOT_BYTES
                if size == 0:
                    return memoryview(b"").cast("q")
                self._map = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self._view = memoryview(self._map).cast("q")
        return self._view

    def pairs(self) -> list[tuple[tuple[Any, ...], int]]:
        values = self.values()
        limit = len(values)
        out = []
        for slot, key in self.slots:
            if slot >= limit:
                self.warn("key lines past the end of the values file")
                break
            out.append((key, values[slot]))
        return out

    def fold(self, merged: _Merge) -> None:
        """Bring ``merged`` up to date with this process's values (merged indexes cached).

        Slots are checked to come in order 0, 1, 2, ..., so the values in use are one
        slice of the mapping, taken at C speed.
        """
        if self._merge is not merged:  # indexes are those of one merge: start again
            self._merge = merged
            self.targets = []
        values = self.values()
        limit = len(values)
        slots = self.slots
        if len(slots) != len(self.targets):
            for slot, key in slots[len(self.targets) :]:
                if slot >= limit:
                    self.warn("key lines past the end of the values file")
                    break
                self.targets.append(merged.index(key))
        merged.update("w-" + self.id, self.targets, values[: len(self.targets)].tolist())

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None


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


class _Merge:
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


# The archive ------------------------------------------------------------------------------


class _Archive:
    """A parsed ``archive.json``: absorbed ids and ``(key, value)`` pairs (never mutated)."""

    __slots__ = ("max_endpoints", "merged", "pairs", "raw")

    def __init__(
        self,
        raw: bytes,
        merged: frozenset[str],
        pairs: list[tuple[tuple[Any, ...], int]],
        max_endpoints: Optional[int],
    ) -> None:
        self.raw = raw
        self.merged = merged
        self.pairs = pairs
        self.max_endpoints = max_endpoints


_EMPTY_ARCHIVE = _Archive(b"", frozenset(), [], None)
_archive_cache: dict[str, _Archive] = {}
_archive_lock = threading.Lock()


def _parse_archive(raw: bytes) -> _Archive:
    data = orjson.loads(raw)
    if type(data) is not dict:
        raise ValueError("not a JSON object")
    merged = frozenset(i for i in data.get("merged", ()) if type(i) is str and _is_worker_id(i))
    pairs: list[tuple[tuple[Any, ...], int]] = []
    bad = 0
    raw_pairs = data.get("pairs", ())
    if type(raw_pairs) is not list:
        raise ValueError("pairs is not a list")
    for item in raw_pairs:
        if type(item) is list and len(item) == 2 and type(item[1]) is int:
            key = parse_key(item[0])
            if key is not None and key[0] != "g" and 0 <= item[1] < 2**63:
                pairs.append((key, item[1]))
                continue
        bad += 1
    if bad:
        _log.warning("wsgi_observe: skipped %d malformed records of the archive", bad)
    limit = data.get("max_endpoints")
    return _Archive(raw, merged, pairs, limit if type(limit) is int and limit > 0 else None)


def read_archive(state_dir: str) -> _Archive:
    """The archive, parsed again only when its bytes changed (compared by content: file
    times are coarse and inodes are reused, so two quick sweeps can look the same)."""
    path = os.path.join(state_dir, ARCHIVE)
    try:
        raw = read_regular(path, _ARCHIVE_MAX_BYTES)
    except FileNotFoundError:
        return _EMPTY_ARCHIVE
    except (OSError, ValueError) as error:
        _log.warning("wsgi_observe: unreadable archive in %s: %s", state_dir, error)
        return _EMPTY_ARCHIVE
    with _archive_lock:
        cached = _archive_cache.get(path)
        if cached is not None and cached.raw == raw:
            return cached
    try:
        archive = _parse_archive(raw)
    except (ValueError, TypeError) as error:
        _log.warning("wsgi_observe: unreadable archive in %s: %s", state_dir, error)
        return _EMPTY_ARCHIVE
    with _archive_lock:
        _archive_cache[path] = archive
    return archive


def _cap_endpoints(
    totals: dict[tuple[Any, ...], int], keep_first: set[str], max_endpoints: int
) -> dict[tuple[Any, ...], int]:
    """``totals`` with endpoint names past ``max_endpoints`` folded into ``<overflow>``:
    names in ``keep_first`` stay, then the busiest of the rest."""
    counts: dict[str, int] = {}
    for key, value in totals.items():
        if key[1] == "ep":
            name = key[2]
            counts[name] = counts.get(name, 0) + (value if key[0] == "c" else 0)
    if len(counts) <= max_endpoints:
        return totals
    kept = [n for n in counts if n in keep_first or n == OVERFLOW][:max_endpoints]
    rest = sorted((n for n in counts if n not in kept), key=lambda n: (-counts[n], n))
    allowed = set(kept) | set(rest[: max(max_endpoints - len(kept), 0)])
    out: dict[tuple[Any, ...], int] = {}
    for key, value in totals.items():
        if key[1] == "ep" and key[2] not in allowed:
            key = (key[0], key[1], OVERFLOW, *key[3:])
        out[key] = out.get(key, 0) + value
    return out


_LEFTOVER_AGE_S = 60.0


def _remove_leftovers(state_dir: str, ids: set[str]) -> None:
    """Files a process left half made when it died while creating its table (a values file
    without keys, a keys file not yet renamed into place), once they are a minute old."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.startswith("w-") and name.endswith(".vals"):
            if name[2:-5] in ids:
                continue
        elif not (name.startswith(".tmp-") and name.endswith(".keys")):
            continue
        path = os.path.join(state_dir, name)
        with contextlib.suppress(OSError):
            if now - os.lstat(path).st_mtime > _LEFTOVER_AGE_S:
                os.unlink(path)


def sweep(state_dir: str, *, own_id: Optional[str] = None) -> int:
    """Fold every dead process's counts into the archive and delete its files.

    Exactly once per process, even with several processes sweeping at the same time (the
    state lock serialises them; the archive lists the ids it holds). Returns how many were
    absorbed. Raises ``OSError`` only when the directory itself fails.
    """
    ids = worker_ids(state_dir)
    dead = [i for i in ids if i != own_id and _is_dead(os.path.join(state_dir, f"w-{i}.keys"))]
    _remove_leftovers(state_dir, set(ids))
    if not dead:
        return 0
    absorbed = 0
    with locked(state_dir):
        archive = read_archive(state_dir)
        merged = set(archive.merged)  # a copy: scrapes may hold the cached one
        totals: dict[tuple[Any, ...], int] = {}
        for key, value in archive.pairs:
            totals[key] = totals.get(key, 0) + value
        limit = archive.max_endpoints
        done = []
        for worker_id in dead:
            reader = _Reader(state_dir, worker_id)
            if worker_id not in merged:
                try:
                    reader.refresh()
                    for key, value in reader.pairs():
                        if key[0] == "g" or value <= 0:
                            continue  # gauges of a dead process (in-flight) mean nothing
                        totals[key] = totals.get(key, 0) + value
                    limit = reader.header.get("max_endpoints") or limit
                except FileNotFoundError:
                    continue  # another sweeper absorbed and removed it just now
                except (OSError, ValueError) as error:
                    _log.warning("wsgi_observe: unreadable state file w-%s: %s", worker_id, error)
                finally:
                    reader.close()
                merged.add(worker_id)
                absorbed += 1
            done.append(worker_id)
        names = {key[2] for key, _ in archive.pairs if key[1] == "ep"}
        if limit:
            totals = _cap_endpoints(totals, names, limit)
        document = {
            "merged": list(merged)[-_MERGED_KEEP:],
            "max_endpoints": limit,
            "pairs": [[list(k), v] for k, v in totals.items()],
        }
        write_atomic(state_dir, ARCHIVE, orjson.dumps(document))
        # Only now, with the archive holding them, do the files go.
        for worker_id in done:
            for suffix in (".keys", ".vals"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(state_dir, f"w-{worker_id}{suffix}"))
    _views.forget(state_dir, done)
    return absorbed


# Scrapes ----------------------------------------------------------------------------------


class _View:
    """What this process keeps between scrapes of one state directory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readers: dict[str, _Reader] = {}
        self.merge = _Merge()


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
        sweep(state_dir, own_id=own_id)
    except OSError as error:
        _log.warning("wsgi_observe: sweep of %s failed: %s", state_dir, error)
    view = _views.get(state_dir)
    with view.lock:  # the running totals are shared by every thread that scrapes
        merge = view.merge
        if len(merge.keys) > 2 * merge.live_keys() + 100_000:
            # Keys of processes long gone pile up in the index: start afresh.
            merge = view.merge = _Merge()  # readers notice and map their keys again
        readers = view.readers
        live: list[_Reader] = []
        for worker_id in worker_ids(state_dir):
            if worker_id == own_id:
                continue
            reader = readers.get(worker_id)
            if reader is None:
                reader = readers[worker_id] = _Reader(state_dir, worker_id)
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
    if max_endpoints is not None and len(endpoints) > max_endpoints:
        endpoints = _fold_view(endpoints, set(archive_names(archive)), max_endpoints)
        overall = None
    else:
        overall = (layout, totals)
    processes.sort(key=lambda p: (p["role"] != "master", p["pid"]))
    masters = [p["started_at"] for p in processes if p["role"] == "master"]
    started_at = min([started_at, *masters])
    snapshot = Snapshot(endpoints, functions, max(inflight, 0), started_at, time.time(), processes)
    if overall is not None:

        def overall_fn() -> tuple[list[int], list[int]]:
            with view.lock:  # positions past ``totals`` (added since) are left out
                return layout.overall_hist(totals)

        snapshot.overall_fn = overall_fn
    return snapshot


def archive_names(archive: _Archive) -> list[str]:
    return [key[2] for key, _ in archive.pairs if key[1] == "ep" and key[0] == "s"]


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
