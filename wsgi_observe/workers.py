"""Multi-worker state: one memory-mapped slot file per gunicorn worker, merged on scrape.

Design (a few lines in the README say the same):

- Each worker owns ``w-<id>.keys`` (append-only JSON lines: ``[slot, *key]``) and
  ``w-<id>.vals`` (a sparse file of int64 slots, memory-mapped). The metrics store writes
  its slots straight into the mapping, so the page cache holds every finished request even
  if the worker is killed with SIGKILL: nothing to flush, nothing lost.
- The id is a random uuid, not the pid, so pid reuse cannot mix two workers' counts. A
  live worker holds an exclusive ``flock`` on its keys file; the kernel drops it when the
  process dies, however it dies. A file whose lock can be taken belongs to a dead worker.
- Any process that scrapes (and the gunicorn master when a child exits) folds dead
  workers' files into ``archive.json`` (under ``archive.lock``, written by atomic rename,
  listing the ids it has absorbed) and deletes them. So files stay bounded by the live
  workers and counters never go down.
- A scrape reads every live worker's mapping, then the archive, and drops any worker the
  archive already holds: each count is seen exactly once even while a sweep runs.

In a single process none of this is active and nothing is written.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import itertools
import logging
import mmap
import operator
import os
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

import orjson

from .metrics import Layout, MetricsStore, SeriesData, Snapshot, process_store
from .system import process_info

if TYPE_CHECKING:
    from .middleware import ObservabilityMiddleware

__all__ = [
    "ENV_STATE_DIR",
    "WorkerTable",
    "activate",
    "attach",
    "collect_snapshot",
    "default_state_dir",
    "is_active",
    "prepare_state_dir",
    "snapshot",
    "sweep",
]

_log = logging.getLogger("wsgi_observe.workers")

ENV_STATE_DIR = "WSGI_OBSERVE_STATE_DIR"
#: Set by the gunicorn master for its workers: the directory this server run uses.
ENV_ACTIVE_DIR = "WSGI_OBSERVE_ACTIVE_STATE_DIR"
#: 4 Mi slots (32 MiB of address space, a sparse file: only touched pages cost memory).
CAPACITY = 4 * 1024 * 1024
_SLOT = 8
_ARCHIVE = "archive.json"
_ARCHIVE_LOCK = "archive.lock"
_MERGED_KEEP = 10_000

_middlewares: weakref.WeakSet[ObservabilityMiddleware] = weakref.WeakSet()
_state: dict[str, Any] = {
    "dir": None,
    "table": None,
    "readers": {},
    "master_pid": None,
    "merges": {},  # state dir -> running totals (one dir per server; tests use several)
}
_state_lock = threading.Lock()
_merge_lock = threading.Lock()


class StateDirError(RuntimeError):
    """The multi-worker state directory is missing or not writable."""


def default_state_dir(master_pid: Optional[int] = None) -> str:
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"wsgi_observe-{master_pid or os.getpid()}")


def prepare_state_dir(path: Optional[str], *, master_pid: Optional[int] = None) -> str:
    """Check (or create, for the default) the state directory; raise a one-line error."""
    if path:
        if not os.path.isdir(path):
            raise StateDirError(f"{ENV_STATE_DIR}={path!r}: directory does not exist")
    else:
        path = default_state_dir(master_pid)
        os.makedirs(path, mode=0o700, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(f"{ENV_STATE_DIR}={path!r}: directory is not writable")
    probe = os.path.join(path, f".probe-{os.getpid()}")
    try:
        with open(probe, "wb") as handle:
            handle.write(b"ok")
        os.unlink(probe)
    except OSError as error:
        raise StateDirError(
            f"{ENV_STATE_DIR}={path!r}: cannot write there ({error.strerror})"
        ) from None
    return path


def clear_state_dir(path: str) -> None:
    """Remove the files of an earlier server run (called by the master at start)."""
    for name in os.listdir(path):
        if (
            name.startswith("w-")
            or name in (_ARCHIVE, _ARCHIVE_LOCK)
            or name.startswith(".archive")
        ):
            try:
                os.unlink(os.path.join(path, name))
            except OSError:
                pass


# One worker's table -----------------------------------------------------------------------


class WorkerTable:
    """The slots of one worker process, in a memory-mapped file under ``state_dir``.

    Example::

        table = WorkerTable("/tmp/state")
        process_store().use_table(table)   # what the gunicorn post_fork hook does
        collect_snapshot("/tmp/state")      # any process: everyone's numbers

    Reads nothing from the environment.
    """

    def __init__(self, state_dir: str, *, role: str = "worker", capacity: int = CAPACITY) -> None:
        self.state_dir = state_dir
        self.id = uuid.uuid4().hex
        self.capacity = capacity
        base = os.path.join(state_dir, f"w-{self.id}")
        self.keys_path = base + ".keys"
        self.vals_path = base + ".vals"
        self.keys_fd = os.open(self.keys_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.keys_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while we live
        vals_fd = os.open(self.vals_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(vals_fd, capacity * _SLOT)
            self._map = mmap.mmap(vals_fd, capacity * _SLOT)
        finally:
            os.close(vals_fd)
        self.values = memoryview(self._map).cast("q")
        self.keys: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        header = {"id": self.id, "pid": os.getpid(), "role": role, "started_at": time.time()}
        os.write(self.keys_fd, orjson.dumps(header) + b"\n")
        self._full_warned = False

    def alloc(self, key: tuple[Any, ...]) -> int:
        with self._lock:  # the process store and the middleware's share this table
            slot = len(self.keys)
            if slot >= self.capacity:
                if not self._full_warned:
                    self._full_warned = True
                    _log.warning("wsgi_observe state file is full (%d slots)", self.capacity)
                raise MemoryError("wsgi_observe worker state is full")
            # The key line is on disk (page cache) before the slot is ever incremented.
            os.write(self.keys_fd, orjson.dumps([slot, *key]) + b"\n")
            self.keys.append(key)
            return slot

    def close(self) -> None:
        """Release the mapping and the lock (the files stay for the sweep to absorb)."""
        try:
            self.values.release()
            self._map.close()
        except (BufferError, ValueError):
            pass
        try:
            os.close(self.keys_fd)
        except OSError:
            pass


# Reading other workers --------------------------------------------------------------------


def _tuple_key(item: list[Any]) -> tuple[Any, ...]:
    return tuple(item)


class _Reader:
    """A parsed, cached view of one worker's files (keys are append-only: parse the tail)."""

    def __init__(self, state_dir: str, worker_id: str) -> None:
        base = os.path.join(state_dir, f"w-{worker_id}")
        self.id = worker_id
        self.keys_path = base + ".keys"
        self.vals_path = base + ".vals"
        self.offset = 0
        self.pending = b""
        self.header: dict[str, Any] = {}
        self.slots: list[tuple[int, tuple[Any, ...]]] = []
        self.targets: list[int] = []  # merged index of each slot read so far
        self.sources: list[int] = []  # and the slot it comes from
        self._merge: Optional[_Merge] = None
        self._cached_for = -1
        self._used = 0
        self._contiguous = False
        self._pick_sources: Callable[[Any], Any] = _getter([])
        self.corrupt = False
        self._map: Optional[mmap.mmap] = None
        self._view: Optional[memoryview] = None

    def refresh(self) -> None:
        with open(self.keys_path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        for line in data[:cut].splitlines():
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                self._warn("unparsable line")
                continue
            if isinstance(item, dict):
                self.header = item
            elif isinstance(item, list) and len(item) >= 2 and isinstance(item[0], int):
                self.slots.append((item[0], _tuple_key(item[1:])))
            else:
                self._warn("unexpected line")

    def _warn(self, what: str) -> None:
        if not self.corrupt:
            self.corrupt = True
            _log.warning("wsgi_observe: skipping %s in worker state %s", what, self.keys_path)

    def values(self) -> memoryview:
        if self._view is None:
            with open(self.vals_path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                size -= size % _SLOT
                if size == 0:
                    return memoryview(b"").cast("q")
                self._map = mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ)
            self._view = memoryview(self._map).cast("q")
        return self._view

    def pairs(self) -> list[tuple[tuple[Any, ...], int]]:
        values = self.values()
        limit = len(values)
        out = []
        for slot, key in self.slots:
            if slot < limit:
                out.append((key, values[slot]))
            else:
                self._warn("truncated values file")
        return out

    def fold(self, merged: _Merge) -> None:
        """Bring ``merged`` up to date with this worker's values (index lists cached)."""
        if self._merge is not merged:  # indexes are those of one merge: start again
            self._merge = merged
            self.targets, self.sources = [], []  # self.slots still holds every parsed key
            self._cached_for = -1
        values = self.values()
        limit = len(values)
        if len(self.slots) != len(self.targets):
            for slot, key in self.slots[len(self.targets) :]:
                if slot >= limit:
                    self._warn("truncated values file")
                    break
                self.targets.append(merged.index(key))
                self.sources.append(slot)
            del self.slots[len(self.targets) :]
        sources = self.sources
        if self._cached_for != len(sources):
            # Getters are rebuilt only when the worker added keys since the last scrape.
            self._cached_for = len(sources)
            self._used = max(sources) + 1 if sources else 0
            self._contiguous = sources == list(range(len(sources)))
            self._pick_sources = _getter(sources)
        used = values[: self._used].tolist()  # the slots in use, at C speed
        picked = used if self._contiguous else self._pick_sources(used)
        merged.update("w-" + self.id, self.targets, picked)

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


class _Source:
    """What one source (a live worker, this process, the archive) last added to the totals."""

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
    so an unchanged worker costs one comparison pass; a source that is gone (its worker was
    absorbed into the archive) has its last values taken back out.
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
        """Like :meth:`update` for ``(key, value)`` pairs (the archive, a list table)."""
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

    def build(self) -> tuple[dict[str, SeriesData], dict[str, SeriesData], int]:
        self.layout.update(self.keys)
        return self.layout.build(self.totals)


def _worker_ids(state_dir: str) -> list[str]:
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return []
    return sorted(n[2:-5] for n in names if n.startswith("w-") and n.endswith(".keys"))


def _is_dead(keys_path: str) -> bool:
    """Whether no live process holds the worker's lock (it exited or was killed)."""
    try:
        fd = os.open(keys_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)  # closing drops the probe lock we may have taken
    return True


_archive_cache: dict[str, tuple[bytes, set[str], list[tuple[tuple[Any, ...], int]]]] = {}


def _read_archive(state_dir: str) -> tuple[set[str], list[tuple[tuple[Any, ...], int]]]:
    """The archive's absorbed worker ids and pairs; parsed again only when its bytes changed.

    Compared by content, not by inode, size and mtime: file times are coarse (a jiffy) and
    inodes are reused, so two quick sweeps can leave a different file that looks the same.
    """
    path = os.path.join(state_dir, _ARCHIVE)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        cached = _archive_cache.get(path)
        if cached is not None and cached[0] == raw:
            return cached[1], cached[2]
        data = orjson.loads(raw)
        merged = set(data.get("merged", []))
        pairs = [(_tuple_key(item[0]), int(item[1])) for item in data.get("pairs", [])]
    except FileNotFoundError:
        return set(), []
    except (OSError, ValueError, TypeError, AttributeError, IndexError) as error:
        _log.warning("wsgi_observe: unreadable archive in %s: %s", state_dir, error)
        return set(), []
    _archive_cache[path] = (raw, merged, pairs)
    return merged, pairs


def sweep(state_dir: str) -> int:
    """Fold every dead worker's counts into the archive and delete its files.

    Exactly once per worker, even with several processes sweeping at the same time (the
    archive lock serialises them; the archive lists the ids it holds). Returns how many
    workers were absorbed.
    """
    ids = _worker_ids(state_dir)
    own = _state["table"].id if _state["table"] is not None else None
    dead = [i for i in ids if i != own and _is_dead(os.path.join(state_dir, f"w-{i}.keys"))]
    if not dead:
        return 0
    lock_fd = os.open(os.path.join(state_dir, _ARCHIVE_LOCK), os.O_WRONLY | os.O_CREAT, 0o600)
    absorbed = 0
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        merged, pairs = _read_archive(state_dir)
        totals: dict[tuple[Any, ...], int] = {}
        for key, value in pairs:
            totals[key] = totals.get(key, 0) + value
        done = []
        for worker_id in dead:
            reader = _Reader(state_dir, worker_id)
            if worker_id not in merged:
                try:
                    reader.refresh()
                    for key, value in reader.pairs():
                        if key[0] == "g":
                            continue  # gauges of a dead worker (in-flight) mean nothing
                        totals[key] = totals.get(key, 0) + value
                except FileNotFoundError:
                    continue  # another sweeper absorbed and removed it just now
                except OSError as error:
                    _log.warning("wsgi_observe: cannot read worker state %s: %s", worker_id, error)
                finally:
                    reader.close()
                merged.add(worker_id)
                absorbed += 1
            done.append(worker_id)
        keep = list(merged)[-_MERGED_KEEP:]
        document = {"merged": keep, "pairs": [[list(k), v] for k, v in totals.items()]}
        tmp = os.path.join(state_dir, f".archive-{os.getpid()}-{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(document))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, os.path.join(state_dir, _ARCHIVE))
        # Only now, with the archive holding them, do the worker files go.
        for worker_id in done:
            for suffix in (".keys", ".vals"):
                try:
                    os.unlink(os.path.join(state_dir, f"w-{worker_id}{suffix}"))
                except FileNotFoundError:
                    pass
            with _merge_lock:  # a scrape in another thread may be reading it right now
                reader = _state["readers"].pop(worker_id, None)
                if reader is not None:
                    reader.close()
    finally:
        os.close(lock_fd)
    return absorbed


def collect_snapshot(state_dir: str, own: Optional[MetricsStore] = None) -> Snapshot:
    """Every worker's numbers merged: live workers' mappings, plus the archive of the dead."""
    try:
        sweep(state_dir)
    except OSError as error:
        _log.warning("wsgi_observe: sweep of %s failed: %s", state_dir, error)
    with _merge_lock:  # the running totals are shared by every thread that scrapes
        own_id = _state["table"].id if (own is not None and _state["table"] is not None) else None
        readers: dict[str, _Reader] = _state["readers"]
        live: list[tuple[str, _Reader]] = []
        for worker_id in _worker_ids(state_dir):
            if worker_id == own_id:
                continue
            reader = readers.get(worker_id)
            if reader is None:
                reader = readers[worker_id] = _Reader(state_dir, worker_id)
            try:
                reader.refresh()
                reader.values()
                live.append((worker_id, reader))
            except FileNotFoundError:
                readers.pop(worker_id, None)
                reader.close()
            except (OSError, ValueError) as error:
                reader._warn(f"unreadable state ({error})")
        merged_ids, archived = _read_archive(state_dir)
        merges: dict[str, _Merge] = _state["merges"]
        merge = merges.get(state_dir)
        if merge is None:
            merge = merges[state_dir] = _Merge()
        processes: list[dict[str, Any]] = []
        current = {"archive"}
        if merge.archive is not archived:  # the same parsed archive as last time: nothing new
            merge.update_pairs("archive", archived)
            merge.archive = archived
        for worker_id, reader in live:
            if worker_id in merged_ids:
                continue  # absorbed while we read: the archive we just read holds it
            reader.fold(merge)
            current.add("w-" + worker_id)
            if "pid" in reader.header:
                info = process_info(int(reader.header["pid"]), "worker")
                if info is not None:
                    processes.append(info)
        for worker_id in list(readers):
            if worker_id in merged_ids:
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
        master = _state["master_pid"] or os.getppid()
        info = process_info(master, "master")
        if info is not None:
            processes.append(info)
        endpoints, functions, inflight = merge.build()
        processes.sort(key=lambda p: (p["role"] != "master", p["pid"]))
        started_at = min(
            [started_at, *(p["started_at"] for p in processes if p["role"] == "master")]
        )
        snapshot = Snapshot(endpoints, functions, inflight, started_at, time.time(), processes)
        totals = list(merge.totals)  # a copy: the next scrape updates the running totals
        layout = merge.layout
        snapshot.overall_fn = lambda: layout.overall_hist(totals)  # summed only if asked for
        return snapshot


# Activation (gunicorn hooks) and the middleware's view ------------------------------------


def attach(middleware: ObservabilityMiddleware) -> None:
    """Remember ``middleware`` so a gunicorn fork can move its store to shared state."""
    _middlewares.add(middleware)
    table = _state["table"]
    if table is not None and middleware.store.table is not table:
        middleware.store.use_table(table)


def activate(state_dir: str, *, master_pid: Optional[int] = None) -> WorkerTable:
    """In a freshly forked worker: record into a new state file under ``state_dir``."""
    with _state_lock:
        for reader in _state["readers"].values():
            reader.close()
        _state["readers"] = {}
        table = WorkerTable(state_dir)
        _state["dir"] = state_dir
        _state["table"] = table
        _state["master_pid"] = master_pid
        stores = {id(process_store()): process_store()}
        for middleware in list(_middlewares):
            stores[id(middleware.store)] = middleware.store
        for store in stores.values():
            store.use_table(table)
    return table


def is_active() -> bool:
    return _state["table"] is not None


def snapshot(store: MetricsStore) -> Snapshot:
    """What ``/metrics`` shows: this process's numbers, or every worker's when active."""
    state_dir = _state["dir"]
    if state_dir is None or _state["table"] is None:
        return store.snapshot()
    return collect_snapshot(state_dir, own=store)
